"""The fusion blocks of an ablation side by side: one row per variant with its block, its size,
its test accuracy, its accuracy with each modality missing, and its per-sample latency.

The ablation table (:mod:`dashboards._ablation`) compares each variant with the baseline on
paired runs; this one sets what each variant costs beside what it scores, over its own runs
(one per seed and fold, repeats averaged as there). Accuracy is the mean of ``test_score``
with a 95% percentile bootstrap interval of that mean
(:func:`~dashboards._ablation_stats.bootstrap_mean`); the missing-modality scores are means
of ``test_missing_<modality>``; the latency is the median of ``test_ms_per_sample``, the
forward passes' wall time per test sample (:func:`tacfn.training.score_test`: with a frozen
backbone only the fusion block and head run, so blocks compare fairly within an experiment,
not across machines). Parameter counts are the largest a variant's runs record (its
architecture fixes them). A column that the runs predate (a folder written before latency
was timed) is left blank and named in :func:`_get_blocks_caveat`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import plotly.graph_objects as go
import polars as pl

from ._ablation import KEYS, variant_order
from ._ablation_stats import N_RESAMPLES, bootstrap_mean
from ._best import MISSING_PREFIX
from ._common import Unavailable
from ._loading import Experiment

METRIC = "test_score"
BLOCK = "config.model.fusion.name"
BACKBONE = "config.model.backbone"
LATENCY = "test_ms_per_sample"
SIZES = ("num_parameters", "trainable_parameters")
# What a run records for this table beyond its score: column -> what it is, for the caveat.
RECORDED = {
    BLOCK: "fusion block",
    "num_parameters": "parameter count",
    "trainable_parameters": "trainable parameter count",
    LATENCY: "per-sample test latency",
}


class BlocksInfo(NamedTuple):
    """``table`` has one row per variant that has a scored run, the baseline first: ``variant``,
    ``block``, ``runs`` (scored (seed, fold) runs), ``num_parameters``,
    ``trainable_parameters``, ``mean`` of ``test_score`` and its interval ``ci_low``..``ci_high``
    (nan below 2 runs), ``missing_<modality>`` for each of ``modalities``, and
    ``ms_per_sample``. ``gaps`` maps a recorded column (:data:`RECORDED`) to the number of
    scored runs without it; ``backbone`` is the runs' backbone mode, "mixed" when they differ."""

    table: pl.DataFrame
    modalities: list[str]
    runs: int
    gaps: dict[str, int]
    backbone: str | None
    n_resamples: int


def _get_blocks_info(exp: Experiment, *, n_resamples: int = N_RESAMPLES, seed: int = 0) -> BlocksInfo | Unavailable | None:
    """None unless this is an ablation; Unavailable until a completed run has a test score."""
    if exp.kind != "ablation":
        return None
    if "variant" not in exp.trials.columns:
        return Unavailable(f"trials.parquet has no variant column ({exp.trials.height} trials)")
    trials = exp.completed
    if METRIC not in trials.columns or not trials[METRIC].is_not_null().any():
        return Unavailable(f"no completed run has a {METRIC} yet")
    modalities = sorted(c.removeprefix(MISSING_PREFIX) for c in trials.columns if c.startswith(MISSING_PREFIX))
    runs = _runs(trials.filter(pl.col(METRIC).is_not_null()), modalities)
    rows = []
    for i, name in enumerate(variant_order(exp, runs["variant"].unique(maintain_order=True))):
        own = runs.filter(pl.col("variant") == name)
        if own.height:
            rows.append(_row(name, own, modalities, n_resamples=n_resamples, seed=seed + i))
    schema = {**_SCHEMA, **{f"missing_{m}": pl.Float64 for m in modalities}, "ms_per_sample": pl.Float64}
    backbones = runs["backbone"].drop_nulls().unique().to_list()
    return BlocksInfo(
        table=pl.DataFrame(rows, schema=schema),
        modalities=modalities,
        runs=runs.height,
        gaps={column: int(runs[column].null_count()) for column in RECORDED},
        backbone=backbones[0] if len(backbones) == 1 else ("mixed" if backbones else None),
        n_resamples=n_resamples,
    )


_SCHEMA = {
    "variant": pl.Utf8,
    "block": pl.Utf8,
    "runs": pl.Int64,
    "num_parameters": pl.Int64,
    "trainable_parameters": pl.Int64,
    "mean": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
}


def _column(trials: pl.DataFrame, name: str, dtype: type[pl.DataType]) -> pl.Expr:
    """``name`` cast to ``dtype``, or nulls where trials.parquet lacks it (an older folder)."""
    return pl.col(name).cast(dtype, strict=False) if name in trials.columns else pl.lit(None, dtype)


def _runs(trials: pl.DataFrame, modalities: list[str]) -> pl.DataFrame:
    """One row per (variant, seed, fold): scores and latency averaged over repeats, sizes and
    block as recorded; a column trials.parquet lacks is null."""
    return (
        trials.with_columns(pl.col(KEYS).fill_null(-1))  # a dataset without folds still groups by seed
        .group_by("variant", *KEYS, maintain_order=True)
        .agg(
            pl.col(METRIC).mean().alias("score"),
            *[_column(trials, MISSING_PREFIX + m, pl.Float64).mean().alias(f"missing_{m}") for m in modalities],
            _column(trials, LATENCY, pl.Float64).mean().alias(LATENCY),
            *[_column(trials, size, pl.Int64).max().alias(size) for size in SIZES],
            _column(trials, BLOCK, pl.Utf8).drop_nulls().first().alias(BLOCK),
            _column(trials, BACKBONE, pl.Utf8).drop_nulls().first().alias("backbone"),
        )
    )


def _row(name: str, own: pl.DataFrame, modalities: list[str], *, n_resamples: int, seed: int) -> dict[str, object]:
    scores = own["score"].to_numpy()
    nan = float("nan")
    low, high = bootstrap_mean(scores, n_resamples=n_resamples, seed=seed)[:2] if scores.size > 1 else (nan, nan)
    blocks = own[BLOCK].drop_nulls().unique(maintain_order=True).to_list()
    return {
        "variant": name,
        "block": " / ".join(blocks) or None,
        "runs": own.height,
        "num_parameters": own["num_parameters"].max(),
        "trainable_parameters": own["trainable_parameters"].max(),
        "mean": float(scores.mean()),
        "ci_low": low,
        "ci_high": high,
        **{f"missing_{m}": own[f"missing_{m}"].mean() for m in modalities},
        "ms_per_sample": own[LATENCY].median(),
    }


def _get_blocks_caveat(info: BlocksInfo) -> str | None:
    """What the table leaves blank because the runs do not record it (a folder from before it
    was recorded, or a run that could not measure it); None when every run records everything."""
    parts = []
    for column, missing in info.gaps.items():
        if missing == info.runs:
            parts.append(f"no run records its {RECORDED[column]} ({column} in trials.parquet): that column is blank")
        elif missing:
            parts.append(
                f"{missing} of {info.runs} runs do not record their {RECORDED[column]} ({column}): "
                "that column summarises the others"
            )
    return "; ".join(parts) or None


def _fmt(value: float | int | None, spec: str = ".3f") -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _get_blocks_cells(info: BlocksInfo) -> dict[str, list[str]]:
    """Every column of the table as the reader sees it, one string per variant."""
    t = info.table
    cells = {
        "variant": t["variant"].to_list(),
        "block": [b or "" for b in t["block"]],
        "parameters": [
            _fmt(total, ",") + (f" ({trainable:,} trainable)" if trainable is not None else "")
            for total, trainable in zip(t["num_parameters"], t["trainable_parameters"])
        ],
        "runs": [str(n) for n in t["runs"]],
        "accuracy": [
            _fmt(m) + ("" if _fmt(lo) == "" else f" [{lo:.3f}, {hi:.3f}]")
            for m, lo, hi in zip(t["mean"], t["ci_low"], t["ci_high"])
        ],
    }
    cells |= {f"missing_{m}": [_fmt(v) for v in t[f"missing_{m}"]] for m in info.modalities}
    cells["ms_per_sample"] = [_fmt(v) for v in t["ms_per_sample"]]
    return cells


def _headers(info: BlocksInfo) -> dict[str, tuple[str, int]]:
    """Cell key -> header, width."""
    return {
        "variant": ("variant", 100),
        "block": ("fusion block", 90),
        "parameters": ("parameters", 150),
        "runs": ("runs", 40),
        "accuracy": (f"{METRIC} mean [95% CI]", 150),
        **{f"missing_{m}": (f"without {m} (mean)", 80) for m in info.modalities},
        "ms_per_sample": ("ms per sample (median)", 90),
    }


def _get_blocks_plot(info: BlocksInfo) -> go.Figure:
    headers = _headers(info)
    cells = _get_blocks_cells(info)
    ran = {
        "frozen": "fusion block and head only (frozen backbone)",
        "mixed": "backbone modes differ between runs",
        None: "backbone mode not recorded",
    }
    latency = ran.get(info.backbone, "encoders included")
    fig = go.Figure(
        go.Table(
            columnwidth=[width for _, width in headers.values()],
            header={"values": [h for h, _ in headers.values()], "fill_color": "#e8eef7", "align": "left", "font": {"size": 12}},
            cells={"values": [cells[key] for key in headers], "align": "left", "height": 30},
        )
    )
    fig.update_layout(
        title="Fusion blocks side by side, each variant over its (seed, fold) runs"
        f"<br><span style='font-size:12px'>{METRIC}: mean and 95% bootstrap interval ({info.n_resamples:,} resamples); "
        f"latency: the forward passes' time per test sample, {latency}; blank: not measured</span>",
        height=130 + 34 * info.table.height,
        margin={"l": 10, "r": 10, "t": 80, "b": 10},
    )
    return fig


def ablation_blocks_table(exp: Experiment) -> pl.DataFrame | None:
    """The side-by-side table as a DataFrame (see :class:`BlocksInfo`); None for searches and
    while no run has a test score."""
    info = _get_blocks_info(exp)
    return info.table if isinstance(info, BlocksInfo) else None


def plot_ablation_blocks(exp: Experiment) -> go.Figure | None:
    """The side-by-side table as a figure; None for searches and while no run has a test score."""
    info = _get_blocks_info(exp)
    return _get_blocks_plot(info) if isinstance(info, BlocksInfo) else None
