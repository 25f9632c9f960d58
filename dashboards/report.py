"""Paper-ready output of experiments (``tacfn report EXP... --out DIR``): each experiment's
tables as Markdown, LaTeX (booktabs) and CSV, and its key figures as SVG and PNG, in one folder.

For an experiment whose name gives the stem ``NAME`` (with ``-2``, ``-3`` for a name given
again), ``DIR`` gets:

- an ablation: ``NAME-ablation.md``, ``.tex`` and ``.csv``, the dashboard's ablation table
  (mean ± std, the paired difference with its bootstrap interval, P(Δ > 0), the Holm-adjusted
  sign-flip p, the verdict; the CSV unrounded, with every column of
  :func:`~dashboards.ablation_table`), and ``NAME-forest``, ``NAME-curves`` and
  ``NAME-confusion`` as ``.svg`` and ``.png``;
- a search: ``NAME-chosen.md``, ``.tex`` and ``.csv``, the chosen configuration (the value
  sampled for each searched parameter, then its validation and test scores), and
  ``NAME-curves`` and ``NAME-confusion`` as ``.svg`` and ``.png``;
- ``report.json``: the experiments and every file tacfn report wrote in ``DIR``.

``DIR`` is a new folder, a folder tacfn report wrote (its files are replaced), or any other
folder without a results store, a dataset or a training run, where no file the report did
not write is ever replaced: a name already taken refuses the whole report before anything
is written. What cannot be written (a table or figure with nothing to show, or the figures
when Kaleido or a browser is missing) is said to ``on_note``, and the rest is written; an
earlier report's version of a figure that could not be drawn again is removed, so that no
figure in ``DIR`` is older than the tables beside it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from tacfn.errors import ConfigError, DataError
from tacfn.files import write_bytes_atomic, write_json_atomic
from tacfn.outputs import REPORT_MARKER, check_output_folder
from tacfn.store import Location

from ._common import Unavailable
from ._loading import Experiment, load_whole_experiment, notices
from ._report_figures import FIGURES, StaticFigure, render_figures, static_figure
from ._report_tables import ReportTable, _get_ablation_report_info, _get_chosen_report_info, to_csv, to_latex, to_markdown

__all__ = ["Report", "write_report"]

_TABLES: dict[str, Callable[[Experiment], ReportTable | Unavailable | None]] = {
    "ablation table": _get_ablation_report_info,
    "chosen configuration": _get_chosen_report_info,
}


class Report(NamedTuple):
    """What :func:`write_report` wrote: the folder and the files in it, in the order written."""

    folder: Path
    files: list[str]


class _Plan(NamedTuple):
    """Everything a report will write, made before anything is: texts and figures by file name."""

    texts: dict[str, str]
    figures: dict[str, StaticFigure]  # file stem (NAME-curves) -> figure
    figure_titles: dict[str, list[str]]  # experiment name -> its figures' titles ("learning curves")
    notes: list[str]
    experiments: list[dict[str, Any]]


def write_report(
    exp_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    figures: bool = True,
    on_note: Callable[[str], Any] | None = None,
) -> Report:
    """Write the report of the experiments ``exp_dirs`` into the folder ``out`` (see the
    module docstring); ``figures=False`` writes the tables only, without starting a browser.

    Raises ConfigError for an ``out`` that is a URI, a file, a folder of another kind, or
    holds a file of a name the report would write that it did not write; DataError when a
    folder is not an experiment, its ``experiment.json`` or ``trials.parquet`` cannot be read,
    or no experiment has anything to report. Nothing is written then. ``on_note`` gets one
    line per thing not written, and why.
    """
    if not exp_dirs:
        raise ValueError("`exp_dirs` must name at least one experiment folder, but got none")
    folder = _check_out(out)
    roots = [Location(d).root for d in exp_dirs]
    twice = next((str(r) for i, r in enumerate(roots) if r in roots[:i]), None)
    if twice:
        raise ConfigError(f"{twice} is named twice; name each experiment once")
    exps = [load_whole_experiment(root, "no report written") for root in roots]
    plan = _plan(exps, figures)
    if not plan.texts and not plan.figures:
        raise DataError(f"nothing to report: {'; '.join(plan.notes) or 'no experiment has a table or figure to show'}")
    owned = _owned_files(folder)
    names = [*plan.texts, *(f"{stem}.{fmt}" for stem in plan.figures for fmt in ("svg", "png"))]
    taken = [name for name in names if (folder / name).exists() and name not in owned]
    if taken:
        raise ConfigError(
            f"--out {folder}: {taken[0]} exists and tacfn report did not write it"
            f"{f' (and {len(taken) - 1} more)' if len(taken) > 1 else ''}; nothing is written: name another folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    marker = {"written_by": "tacfn report", "experiments": plan.experiments}
    _write_marker(folder, marker, owned | set(names))  # first: the files about to be written are the report's
    written = []
    for name, text in plan.texts.items():
        write_bytes_atomic(folder / name, text.encode("utf-8"))
        written.append(name)
    notes = list(plan.notes)
    if plan.figures:
        images = render_figures(list(plan.figures.values()))
        if isinstance(images, Unavailable):
            skipped = "; ".join(f"{name}: {', '.join(titles)}" for name, titles in plan.figure_titles.items())
            notes.append(f"figures not written ({skipped}): {images.reason}")
            for name in owned & (set(names) - set(plan.texts)):  # an earlier report's: older than the tables now
                (folder / name).unlink(missing_ok=True)
        else:
            for stem, formats in zip(plan.figures, images):
                for fmt, data in formats.items():
                    write_bytes_atomic(folder / f"{stem}.{fmt}", data)
                    written.append(f"{stem}.{fmt}")
    _write_marker(folder, marker, {name for name in owned if (folder / name).exists()} | set(written))
    for line in notes:
        if on_note:
            on_note(line)
    return Report(folder, [*written, REPORT_MARKER])


def _check_out(out: str | Path) -> Path:
    root = Location(out).root
    if not isinstance(root, Path):
        raise ConfigError(f"--out {out}: a report is written to a local folder, not a URI")
    check_output_folder(root, "--out", own="report")
    return root


def _plan(exps: Sequence[Experiment], figures: bool) -> _Plan:
    plan = _Plan({}, {}, {}, [], [])
    for exp, stem in zip(exps, _stems(exps)):
        # Progress and failed trials; an unreadable table is said by the views that need it.
        plan.notes.extend(f"{exp.name}: {n.text}" for n in notices(exp) if n.level != "error")
        made = []
        for title, info_step in _TABLES.items():
            table = info_step(exp)
            if isinstance(table, Unavailable):
                plan.notes.append(f"{exp.name}: {title}: {table.reason}")
            elif table is not None:
                source = str(exp.root)
                label = f"tab:{stem}-{table.kind}"
                plan.texts[f"{stem}-{table.kind}.md"] = to_markdown(table)
                plan.texts[f"{stem}-{table.kind}.tex"] = to_latex(table, label, source)
                plan.texts[f"{stem}-{table.kind}.csv"] = to_csv(table)
                made.append(f"{stem}-{table.kind}")
        for spec in FIGURES.get(exp.kind, []) if figures else []:
            info = spec.info(exp)
            if isinstance(info, Unavailable):
                plan.notes.append(f"{exp.name}: {spec.title}: {info.reason}")
            elif info is not None:
                plan.figures[f"{stem}-{spec.name}"] = static_figure(spec, info)
                plan.figure_titles.setdefault(exp.name, []).append(spec.title)
                made.append(f"{stem}-{spec.name}")
        plan.experiments.append({"name": exp.name, "kind": exp.kind, "folder": str(exp.root), "files": made})
    return plan


def _stems(exps: Sequence[Experiment]) -> list[str]:
    """File name stems from the experiments' names: safe characters only, ``-2``, ``-3`` for a repeat."""
    stems: list[str] = []
    for exp in exps:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", exp.name).strip("-.") or "experiment"
        stem, n = base, 1
        while stem in stems:
            n += 1
            stem = f"{base}-{n}"
        stems.append(stem)
    return stems


def _owned_files(folder: Path) -> set[str]:
    """The files an earlier report wrote in ``folder`` (its ``report.json``); none for a new folder."""
    marker = folder / REPORT_MARKER
    if not marker.exists():
        return set()
    try:
        files = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"--out {folder}: {REPORT_MARKER} is unreadable ({err}); nothing is written: name another folder") from None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ConfigError(f"--out {folder}: {REPORT_MARKER} does not list the files it wrote; nothing is written: name another folder")
    return set(files) - {REPORT_MARKER}


def _write_marker(folder: Path, marker: dict[str, Any], files: set[str]) -> None:
    """``report.json``: the experiments of the last report and the ``files`` tacfn report owns in ``folder``."""
    written_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(folder / REPORT_MARKER, {**marker, "written_at": written_at, "files": sorted(files)}, indent=2)
