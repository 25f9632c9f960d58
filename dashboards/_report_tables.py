"""The report's tables: an ablation's table and a search's chosen configuration, each as
Markdown, LaTeX (booktabs) and CSV.

Two steps, as every view: an info step builds a :class:`ReportTable` (the cells as the
reader sees them, and the same numbers unrounded for the CSV) from what the dashboard
computes, and the format functions only lay it out. The ablation table is the dashboard's
own: :func:`~dashboards._ablation._get_ablation_info` computes it and
:func:`~dashboards._ablation._get_ablation_cells` formats its cells, the ones the page draws
and ``tacfn ablate`` prints, so the report can never show other numbers.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import polars as pl

from ._ablation import _TEXT_COLUMNS, AblationInfo, _get_ablation_cells, _get_ablation_info
from ._best import best_trials
from ._common import Unavailable
from ._loading import Experiment
from ._params import Axis, param_frame, space_axes

_NUMERIC = {"n", "mean", "baseline_mean", "diff", "prob_improvement", "p_holm"}  # right-aligned ablation columns


class ReportTable(NamedTuple):
    """One table of the report.

    ``rows`` hold the cells as shown (Markdown and LaTeX), ``csv`` the same rows with the
    numbers unrounded; ``sections`` are the row indices a LaTeX ``\\midrule`` goes before;
    ``notes`` are lines that follow the table (a list in Markdown, comments in LaTeX)."""

    kind: str  # "ablation" or "chosen": the files' suffix
    title: str
    caption: str
    headers: list[str]
    align: str  # one letter per column: l or r
    rows: list[list[str]]
    csv: pl.DataFrame
    sections: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()


# --- the ablation table -----------------------------------------------------------------------------


def _get_ablation_report_info(exp: Experiment) -> ReportTable | Unavailable | None:
    """The dashboard's ablation table; None unless ``exp`` is an ablation."""
    info = _get_ablation_info(exp)
    if not isinstance(info, AblationInfo):
        return info
    cells = _get_ablation_cells(info)
    keys = list(_TEXT_COLUMNS)
    headers = [_TEXT_COLUMNS[key] for key in keys]
    rows = [[cells[key][i] for key in keys] for i in range(info.table.height)]
    notes = tuple(
        f"{variant}: {'; '.join(part for part in (pattern, reason) if part)}"
        for variant, pattern, reason, verdict in zip(cells["variant"], cells["pattern"], cells["reason"], cells["verdict"])
        if verdict != "baseline"
    )
    caption = (
        f"{info.metric} of each variant of {exp.name} against the baseline {info.baseline}, paired on (seed, fold): "
        "mean ± std over the variant's paired runs, the baseline's mean over the same pairs, the mean paired "
        f"difference Δ with its 95% bootstrap interval ({info.n_resamples:,} resamples), P(Δ > 0) the share of "
        "bootstrap means above 0, p (Holm) a two-sided sign-flip permutation test of the mean difference, "
        "Holm-corrected over the variants, and the verdict."
    )
    csv = info.table.select(pl.lit(info.metric).alias("metric"), pl.lit(info.baseline).alias("baseline"), pl.all())
    align = "".join("r" if key in _NUMERIC else "l" for key in keys)
    return ReportTable("ablation", f"{exp.name}: ablation table", caption, headers, align, rows, csv, notes=notes)


# --- the chosen configuration ------------------------------------------------------------------------


def _get_chosen_report_info(exp: Experiment) -> ReportTable | Unavailable | None:
    """A search's chosen configuration: its sampled parameters and its scores; None unless ``exp`` is a search."""
    if exp.kind != "search":
        return None
    best = best_trials(exp)
    if best is None:
        return Unavailable(f"no completed trial with a {exp.metric} yet")
    if not best.tested:
        return Unavailable("no configuration is chosen yet (the search chooses and tests one once every trial has finished)")
    chosen = exp.trials.filter(pl.col("trial_id").is_in(best.trial_ids))
    axes = space_axes(exp.spec)
    sampled = param_frame(chosen, axes)
    ids = chosen["trial_id"].to_list()
    shown: list[list[str]] = []
    raw: list[list[Any]] = []
    for axis in axes:
        values = [int(v) if axis.kind == "int" and v is not None else v for v in sampled[axis.key].to_list()]
        shown.append([axis.key, _searched(axis), *(_param(v) for v in values)])
        raw.append(["parameter", axis.key, _searched(axis), *values])
    sections = (len(shown),) if shown else ()
    for name, column, spec in _result_rows(exp, chosen):
        values = chosen[column].to_list()
        shown.append([name, "", *(_cell(v, spec) for v in values)])
        raw.append(["result", name, "", *values])
    headers = ["setting", "searched", *ids]
    csv = pl.DataFrame(
        [[_csv(v) for v in row] for row in raw],
        schema=["section", "name", "searched", *ids],
        orient="row",
    )
    completed = exp.completed.height
    caption = (
        f"The configuration search {exp.name} chose on validation {exp.metric} "
        f"({completed} of {exp.trials.height} trials completed) and scored once on the test split: "
        "the value it sampled for each searched parameter (a dash where a condition left the parameter out), "
        "then its scores."
    )
    return ReportTable(
        "chosen", f"{exp.name}: chosen configuration", caption, headers, "ll" + "r" * len(ids), shown, csv, sections
    )


def _result_rows(exp: Experiment, chosen: pl.DataFrame) -> list[tuple[str, str, str]]:
    """(name, column, format) of the chosen trials' scores and facts, those the store holds."""
    rows = [
        ("seed", "seed", "d"),
        ("fold", "fold", "d"),
        ("best epoch (validation)", "best_epoch", "d"),
        (f"validation {exp.metric}", exp.metric, ".3f"),
    ]
    if exp.metric != "val_score":
        rows.append(("validation val_score", "val_score", ".3f"))
    rows += [("test score", "test_score", ".3f"), ("test weighted F1", "test_weighted_f1", ".3f")]
    rows += [(f"test score without {c.removeprefix('test_missing_')}", c, ".3f") for c in chosen.columns if c.startswith("test_missing_")]
    rows.append(("parameters", "num_parameters", ",d"))
    return [row for row in rows if row[1] in chosen.columns and chosen[row[1]].null_count() < chosen.height]


def _searched(axis: Axis) -> str:
    """The axis as the space states it: ``{tacfn, concat}`` or ``[0.0001, 0.01], log``."""
    if axis.kind == "choice":
        return "{" + ", ".join(map(str, axis.choices)) + "}"
    low, high = (_param(int(v) if axis.kind == "int" else v) for v in (axis.low, axis.high))
    extras = [f"step {axis.step:g}"] if axis.step else []
    extras += ["log"] if axis.log else []
    return ", ".join([f"[{low}, {high}]", *extras])


def _param(value: Any) -> str:
    """A sampled value: 4 significant digits for a float, a dash where none was sampled."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e6 else f"{value:.4g}"
    return str(value)


def _cell(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(int(value) if spec.endswith("d") else value, spec)


def _csv(value: Any) -> str | None:
    """A CSV cell: a float unrounded (the shortest text that reads back as the same float)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return repr(value) if isinstance(value, float) else str(value)


# --- formats ------------------------------------------------------------------------------------


def to_markdown(table: ReportTable) -> str:
    """A heading, the caption, the table (GitHub-flavoured, ``|`` escaped) and the notes."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    rule = "|" + "|".join("---:" if a == "r" else "---" for a in table.align) + "|"
    lines = [f"## {table.title}", "", table.caption, "", line(table.headers), rule, *map(line, table.rows)]
    if table.notes:
        lines += ["", *(f"- {note}" for note in table.notes)]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "|": r"\textbar{}",
    "<": r"$<$",
    ">": r"$>$",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "−": r"$-$",
    "–": "--",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "×": r"$\times$",
    "⚠": "(!)",
}
_MINUS = r"(?<![\w.])-(?=\d)"  # a hyphen that starts a number is a minus sign (not the one in no-selection)
_LATEX_PATTERN = re.compile("|".join([*map(re.escape, _LATEX_SPECIAL), _MINUS]))


def latex_escape(text: str) -> str:
    """``text`` as LaTeX text: its special characters escaped, and the symbols the tables use
    (±, Δ, <, >, a minus sign, ...) as math, so any variant or parameter name typesets as written."""
    return _LATEX_PATTERN.sub(lambda m: _LATEX_SPECIAL.get(m.group(0), "$-$"), text)


def to_latex(table: ReportTable, label: str, source: str = "") -> str:
    """A ``table`` float with a booktabs ``tabular`` (``\\toprule``, ``\\midrule``,
    ``\\bottomrule``), its caption and ``\\label{label}``, to ``\\input`` into a paper whose
    preamble loads booktabs and graphicx (a table wider than the text is scaled down to it);
    the notes follow as comments."""

    def line(cells: list[str]) -> str:
        return "    " + " & ".join(latex_escape(c) for c in cells) + r" \\"

    body = []
    for i, row in enumerate(table.rows):
        if i in table.sections:
            body.append(r"    \midrule")
        body.append(line(row))
    head = f"% {table.title}, written by tacfn report" + (f" from {source}" if source else "")
    lines = [
        head.replace("\n", " "),
        r"% Needs \usepackage{booktabs} and \usepackage{graphicx} in the preamble.",
        r"\begin{table}[htbp]",
        r"  \centering",
        r"  \small",
        rf"  \caption{{{latex_escape(table.caption)}}}",
        rf"  \label{{{label}}}",
        r"  \resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",  # shrunk only if wider than the text
        rf"  \begin{{tabular}}{{{table.align}}}",
        r"    \toprule",
        line(table.headers),
        r"    \midrule",
        *body,
        r"    \bottomrule",
        r"  \end{tabular}}",
        r"\end{table}",
    ]
    lines += [f"% {note}".replace("\n", " ") for note in table.notes]
    return "\n".join(lines) + "\n"


def to_csv(table: ReportTable) -> str:
    """The table's numbers, unrounded, with a header row."""
    return table.csv.write_csv()
