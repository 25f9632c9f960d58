"""The ablation table and forest plot: each variant against the baseline, paired on (seed, fold).

Statistics come from :mod:`dashboards._ablation_stats`; this module pairs the runs with
Polars, applies Holm's correction across the variants, and flags what weakens a comparison:
(seed, fold) pairs that ran for one side only (left out of the statistics) and pairs whose
training budgets differ (``epochs_run`` or ``train.epochs``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import plotly.graph_objects as go
import polars as pl

from ._ablation_stats import N_RESAMPLES, describe_differences, holm, paired_comparison, verdict
from ._common import Unavailable
from ._loading import Experiment

KEYS = ["seed", "fold"]
BUDGET = "config.train.epochs"
VERDICT_COLORS = {"better": "#2ca02c", "worse": "#d62728", "inconclusive": "#7f7f7f", "baseline": "#1f77b4"}


class AblationInfo(NamedTuple):
    """``table`` has one row per variant, the baseline first: ``n`` (pairs), ``mean`` and ``std``
    over the paired runs, ``baseline_mean``, ``diff`` (variant - baseline) with its bootstrap
    interval ``ci_low``..``ci_high``, ``prob_improvement``, ``p_value`` (two-sided sign-flip
    permutation test of the mean difference), ``p_holm``, ``pattern`` (the wins, losses and ties
    of the paired differences, :func:`~dashboards._ablation_stats.describe_differences`),
    ``verdict``, ``reason`` and ``flags``."""

    table: pl.DataFrame
    metric: str
    baseline: str
    n_resamples: int


def _get_ablation_info(
    exp: Experiment, metric: str | None = None, *, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> AblationInfo | Unavailable | None:
    """None unless this is an ablation; Unavailable until it has completed, scored runs."""
    if exp.kind != "ablation":
        return None
    if "variant" not in exp.trials.columns:
        return Unavailable(f"trials.parquet has no variant column ({exp.trials.height} trials)")
    trials = exp.completed
    if not trials.height:
        return Unavailable(f"no completed run with a {exp.metric} yet")
    if metric is None:
        metric = "test_score" if trials["test_score"].null_count() < trials.height else exp.metric
    if metric not in trials.columns:
        raise ValueError(f"`metric` must be a column of trials.parquet, but got {metric!r}")
    runs = _runs(trials, metric)
    if not runs.height:
        return Unavailable(f"no completed run has a {metric}")
    baseline, *order = variant_order(exp, runs["variant"])
    base = runs.filter(pl.col("variant") == baseline)
    rows = [_baseline_row(baseline, base)]
    comparisons = []
    for i, name in enumerate(order):
        own = runs.filter(pl.col("variant") == name)
        paired = own.join(base, on=KEYS, suffix="_base")
        comparison = paired_comparison(paired["score_base"], paired["score"], n_resamples=n_resamples, seed=seed + i)
        comparisons.append(comparison)
        rows.append(
            {
                "variant": name,
                "n": comparison.n,
                "mean": paired["score"].mean(),
                "std": paired["score"].std(),
                "baseline_mean": paired["score_base"].mean(),
                "diff": comparison.mean_diff,
                "ci_low": comparison.ci_low,
                "ci_high": comparison.ci_high,
                "prob_improvement": comparison.prob_improvement,
                "p_value": comparison.p_value,
                "pattern": describe_differences(comparison.diffs) if comparison.n else "",
                "flags": _flags(own, base, paired),
            }
        )
    adjusted = holm([c.p_value for c in comparisons])
    tested = max(1, sum(not math.isnan(c.p_value) for c in comparisons))  # the p-values Holm ran over
    for row, comparison, p_holm in zip(rows[1:], comparisons, adjusted):
        row["p_holm"] = float(p_holm)
        row["verdict"], row["reason"] = verdict(comparison, float(p_holm), comparisons=tested)
    return AblationInfo(pl.DataFrame(rows, schema=_SCHEMA), metric, baseline, n_resamples)


_SCHEMA = {
    "variant": pl.Utf8,
    "n": pl.Int64,
    "mean": pl.Float64,
    "std": pl.Float64,
    "baseline_mean": pl.Float64,
    "diff": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "prob_improvement": pl.Float64,
    "p_value": pl.Float64,
    "p_holm": pl.Float64,
    "pattern": pl.Utf8,
    "verdict": pl.Utf8,
    "reason": pl.Utf8,
    "flags": pl.Utf8,
}


def variant_order(exp: Experiment, ran: Iterable[str]) -> list[str]:
    """The baseline first (the plan's, else the first variant that ran), then the plan's other
    variants in its order, then any other variant in ``ran``, sorted."""
    ran = list(ran)
    baseline = exp.spec.get("baseline") or ran[0]
    planned = [v for v in (exp.spec.get("variants") or {}) if v != baseline]
    return [baseline, *planned, *sorted(set(ran) - set(planned) - {baseline})]


def _runs(trials: pl.DataFrame, metric: str) -> pl.DataFrame:
    """One row per (variant, seed, fold): the score (mean of repeats) and the training budget."""
    budget = pl.col(BUDGET).cast(pl.Float64, strict=False) if BUDGET in trials.columns else pl.lit(None, pl.Float64)
    return (
        trials.filter(pl.col(metric).is_not_null())
        .with_columns(pl.col(KEYS).fill_null(-1))  # a dataset without folds still pairs on seed
        .group_by("variant", *KEYS, maintain_order=True)
        .agg(
            pl.col(metric).mean().alias("score"),
            pl.col("epochs_run").max().alias("epochs_run"),
            budget.max().alias("budget"),
        )
    )


def _baseline_row(name: str, base: pl.DataFrame) -> dict[str, object]:
    return {
        "variant": name,
        "n": base.height,
        "mean": base["score"].mean(),
        "std": base["score"].std(),
        "pattern": "",
        "verdict": "baseline",
        "reason": "the reference every variant is paired with",
        "flags": "",
    }


def _flags(own: pl.DataFrame, base: pl.DataFrame, paired: pl.DataFrame) -> str:
    """Unpaired runs (left out) and pairs trained on different budgets."""
    flags = []
    only_variant = own.join(base, on=KEYS, how="anti").height
    only_base = base.join(own, on=KEYS, how="anti").height
    if only_variant or only_base:
        flags.append(
            f"unpaired: {only_variant} (seed, fold) only in the variant, {only_base} only in the baseline (left out)"
        )
    unequal = paired.filter(
        (pl.col("epochs_run") != pl.col("epochs_run_base")).fill_null(False)
        | (pl.col("budget") != pl.col("budget_base")).fill_null(False)
    ).height
    if unequal:
        flags.append(f"unequal budgets: {unequal} of {paired.height} pairs differ in epochs run or train.epochs")
    return "; ".join(flags)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "" if value is None or value != value else format(value, spec)


def _get_ablation_cells(info: AblationInfo) -> dict[str, list[str]]:
    """Every column of the table as the reader sees it, one string per variant: what the page
    draws (:func:`_get_ablation_table_plot`) and what ``tacfn ablate`` prints
    (:func:`_get_ablation_text`), so the two can never show different numbers."""
    t = info.table
    return {
        "variant": t["variant"].to_list(),
        "n": [str(n) for n in t["n"]],
        "mean": [f"{_fmt(m)} ± {_fmt(s)}" if _fmt(s) else _fmt(m) for m, s in zip(t["mean"], t["std"])],
        "baseline_mean": [_fmt(m) for m in t["baseline_mean"]],
        "diff": [
            _fmt(d, "+.3f") + ("" if _fmt(lo) == "" else f" [{lo:+.3f}, {hi:+.3f}]")
            for d, lo, hi in zip(t["diff"], t["ci_low"], t["ci_high"])
        ],
        "prob_improvement": [_fmt(p, ".0%") for p in t["prob_improvement"]],
        "p_value": [_fmt(p, ".3g") for p in t["p_value"]],
        "p_holm": [_fmt(p, ".3g") for p in t["p_holm"]],
        "pattern": t["pattern"].to_list(),
        "verdict": t["verdict"].to_list(),
        "reason": [r if not f else f"{r}. ⚠ {f}" for r, f in zip(t["reason"], t["flags"])],
    }


# The page's columns: cell key -> header, width.
_PAGE_COLUMNS = {
    "variant": ("variant", 90),
    "n": ("n pairs", 50),
    "mean": ("{metric} mean ± std", 110),
    "baseline_mean": ("baseline mean", 70),
    "diff": ("Δ vs baseline [95% CI]", 150),
    "prob_improvement": ("P(Δ > 0)", 60),
    "p_value": ("p (sign-flip)", 70),
    "p_holm": ("p (Holm)", 60),
    "pattern": ("pattern", 200),
    "verdict": ("verdict", 80),
    "reason": ("why / flags", 300),
}


def _get_ablation_table_plot(info: AblationInfo) -> go.Figure:
    t = info.table
    cells = _get_ablation_cells(info)
    plain, black = ["white"] * t.height, ["black"] * t.height
    verdict_colors = [VERDICT_COLORS.get(v, "#7f7f7f") for v in t["verdict"]]
    fig = go.Figure(
        go.Table(
            columnwidth=[width for _, width in _PAGE_COLUMNS.values()],
            header={
                "values": [header.format(metric=info.metric) for header, _ in _PAGE_COLUMNS.values()],
                "fill_color": "#e8eef7",
                "align": "left",
                "font": {"size": 12},
            },
            cells={
                "values": [cells[key] for key in _PAGE_COLUMNS],
                "fill_color": [verdict_colors if key == "verdict" else plain for key in _PAGE_COLUMNS],
                "font": {"color": [plain if key == "verdict" else black for key in _PAGE_COLUMNS]},
                "align": "left",
                "height": 36,
            },
        )
    )
    fig.update_layout(
        title=f"Ablation: each variant vs baseline {info.baseline!r} on {info.metric}, paired on (seed, fold); "
        f"P(Δ > 0) is the share of {info.n_resamples:,} bootstrap means above 0",
        height=110 + 40 * t.height,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
    )
    return fig


# The printed table's columns (cell key -> header); pattern and why follow each variant's row.
_TEXT_COLUMNS = {
    "variant": "variant",
    "n": "n pairs",
    "mean": "mean ± std",
    "baseline_mean": "baseline",
    "diff": "Δ [95% CI]",
    "prob_improvement": "P(Δ > 0)",
    "p_holm": "p (Holm)",
    "verdict": "verdict",
}


def _get_ablation_text(info: AblationInfo, indent: str = "") -> str:
    """The table as plain text for a terminal: the page's cells, aligned, one row per variant,
    then each variant's pattern and why (with any flags) on lines of their own."""
    cells = _get_ablation_cells(info)
    columns = [[header, *cells[key]] for key, header in _TEXT_COLUMNS.items()]
    widths = [max(map(len, column)) for column in columns]
    under = indent + " " * (widths[0] + 2)  # the continuation lines start under the second column

    def line(values: list[str]) -> str:
        return (indent + "  ".join(v.ljust(w) for v, w in zip(values, widths))).rstrip()

    lines = [
        f"{indent}{info.metric} per variant against baseline {info.baseline!r}, paired on (seed, fold):",
        line([column[0] for column in columns]),
    ]
    for i in range(info.table.height):
        lines.append(line([column[i + 1] for column in columns]))
        if cells["verdict"][i] != "baseline":
            lines += [under + text for text in (cells["pattern"][i], cells["reason"][i]) if text]
    lines.append(
        f"{indent}P(Δ > 0): the share of {info.n_resamples:,} bootstrap means above 0; "
        "p (Holm): sign-flip test of the mean difference, Holm over the variants"
    )
    return "\n".join(lines)


def _get_ablation_forest_plot(info: AblationInfo) -> go.Figure:
    rows = info.table.filter(pl.col("verdict") != "baseline").filter(pl.col("n") > 0).reverse()
    fig = go.Figure()
    for name, color in VERDICT_COLORS.items():
        part = rows.filter(pl.col("verdict") == name)
        if not part.height:
            continue
        fig.add_trace(
            go.Scatter(
                x=part["diff"].to_list(),
                y=part["variant"].to_list(),
                mode="markers",
                name=name,
                marker={"color": color, "size": 11, "symbol": "diamond"},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": (part["ci_high"] - part["diff"]).to_list(),
                    "arrayminus": (part["diff"] - part["ci_low"]).to_list(),
                    "color": color,
                    "thickness": 2,
                },
                customdata=list(zip(part["n"], part["prob_improvement"], part["p_holm"], part["pattern"])),
                hovertemplate="%{y}: Δ %{x:+.4f}<br>n=%{customdata[0]}, P(Δ>0)=%{customdata[1]:.2f}, "
                "Holm p=%{customdata[2]:.3g}<br>%{customdata[3]}<extra></extra>",
            )
        )
    fig.add_vline(x=0, line_dash="dash", line_color="#444")
    fig.update_layout(
        title=f"Difference to baseline {info.baseline!r} in {info.metric} "
        "(mean of paired differences, 95% bootstrap CI)",
        xaxis_title=f"Δ {info.metric} (variant − baseline)",
        yaxis={"type": "category", "categoryorder": "array", "categoryarray": rows["variant"].to_list()},
        height=160 + 50 * max(rows.height, 1),
    )
    return fig


def ablation_table(exp: Experiment, metric: str | None = None, *, seed: int = 0) -> pl.DataFrame | None:
    """The ablation table as a DataFrame (see :class:`AblationInfo`); None for searches.

    ``metric`` defaults to ``test_score`` when the runs have one, else the validation metric.
    """
    info = _get_ablation_info(exp, metric, seed=seed)
    return info.table if isinstance(info, AblationInfo) else None


def format_ablation_table(exp: Experiment, metric: str | None = None, *, indent: str = "") -> str | None:
    """The ablation table as plain text, the numbers the page shows, as ``tacfn ablate`` and
    ``tacfn demo`` print it; the reason when there is nothing to tabulate yet; None for searches."""
    info = _get_ablation_info(exp, metric)
    if isinstance(info, Unavailable):
        return f"{indent}Ablation table: {info.reason}"
    return _get_ablation_text(info, indent) if info is not None else None


def plot_ablation_table(exp: Experiment, metric: str | None = None) -> go.Figure | None:
    """The ablation table as a figure, verdicts coloured; None for searches."""
    info = _get_ablation_info(exp, metric)
    return _get_ablation_table_plot(info) if isinstance(info, AblationInfo) else None


def plot_ablation_forest(exp: Experiment, metric: str | None = None) -> go.Figure | None:
    """A forest plot of each variant's paired difference to the baseline; None for searches."""
    info = _get_ablation_info(exp, metric)
    return _get_ablation_forest_plot(info) if isinstance(info, AblationInfo) else None
