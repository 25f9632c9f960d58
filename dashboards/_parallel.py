"""Parallel coordinates: one line per completed trial across the searched axes and the score;
in a seed-aware search, one per completed configuration, coloured by its aggregate.

Log axes are drawn on log10 values with ticks at the original values; choice axes become
category ticks in spec order. A trial that did not sample an axis (a ``when`` condition, or
heads for a block without attention) sits on an extra ``n/a`` tick below the axis.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import plotly.graph_objects as go
import polars as pl

from ._common import MAX_POINTS, Unavailable, sample_best, showing
from ._configurations import Configurations, configurations, members
from ._loading import Experiment
from ._params import Axis, categories, param_frame, space_axes

NOT_SAMPLED = "n/a"


class Dimension(NamedTuple):
    label: str
    values: list[float]
    tickvals: list[float] | None
    ticktext: list[str] | None
    range: tuple[float, float]


class ParallelInfo(NamedTuple):
    dimensions: list[Dimension]  # the searched axes, then the metric
    trial_ids: list[str]  # one per line: trial ids, or config hashes for configurations
    scores: list[float]
    metric: str  # the score axis: the metric, or its aggregate ("val_score mean")
    total: int
    unsampled: list[str]  # axes of the space no completed trial sampled: left out
    what: str = "completed trials"  # or "completed configurations"
    members: dict[str, list[str]] | None = None  # configurations: each one's replicate trial ids


def _get_parallel_info(exp: Experiment, limit: int = MAX_POINTS) -> ParallelInfo | Unavailable:
    """Unavailable when the search has no completed trial (configuration, in a seed-aware
    search) or no axis with sampled values."""
    confs = configurations(exp)
    lines, ids, metric, what = _lines(exp) if confs is None else _configuration_lines(confs)
    searched = space_axes(exp.spec)
    params = param_frame(lines, searched, ids)
    axes = [a for a in searched if params[a.key].null_count() < params.height]
    if not lines.height:
        return Unavailable(f"no completed {what} with a {exp.metric} yet")
    if not axes:
        return _no_axes(searched)
    shown = sample_best(params.with_columns(lines["score"]), limit, "score")
    dimensions = [_dimension(lines, axis, shown[axis.key]) for axis in axes]
    scores = shown["score"].to_list()
    pad = 0.0 if max(scores) > min(scores) else 0.01
    dimensions.append(Dimension(metric, scores, None, None, (min(scores) - pad, max(scores) + pad)))
    unsampled = [a.key for a in searched if a not in axes]
    shown_ids = shown[ids].to_list()
    found = members(confs, shown_ids) if confs is not None else None
    return ParallelInfo(dimensions, shown_ids, scores, metric, lines.height, unsampled, f"completed {what}s", found)


def _lines(exp: Experiment) -> tuple[pl.DataFrame, str, str, str]:
    """Completed trials with their metric as ``score``, their id column, the score's name, what a line is."""
    return exp.completed.rename({exp.metric: "score"}), "trial_id", exp.metric, "trial"


def _configuration_lines(confs: Configurations) -> tuple[pl.DataFrame, str, str, str]:
    """:func:`_lines` for a seed-aware search: its completed configurations, scored by their aggregate."""
    completed = confs.table.filter((pl.col("status") == "completed") & pl.col("aggregate").is_not_null())
    return completed.rename({"aggregate": "score"}), "config_hash", f"{confs.metric} {confs.how}", "configuration"


def unsampled_note(keys: list[str]) -> str:
    """A title's note of the searched axes left out because no completed trial sampled them."""
    return f"; not sampled by a completed trial: {', '.join(keys)}" if keys else ""


def _no_axes(searched: list[Axis]) -> Unavailable:
    """Why no axis can be drawn: the spec has none, or no completed trial sampled one."""
    if not searched:
        return Unavailable("the experiment's spec has no search space (space) to draw")
    keys = ", ".join(a.key for a in searched)
    return Unavailable(f"no completed trial has a sampled value of {keys} (param.<key> columns of trials.parquet, config.<key> in older experiments)")


def _dimension(trials: pl.DataFrame, axis: Axis, values: pl.Series) -> Dimension:
    if axis.kind == "choice":
        names = categories(trials, axis)
        codes = {name: float(i) for i, name in enumerate(names)}
        coded = [codes.get(v, float(len(names))) for v in values.to_list()]
        if values.null_count():
            names = [*names, NOT_SAMPLED]
        return Dimension(axis.label, coded, list(range(len(names))), names, (0.0, max(len(names) - 1, 1)))
    low, high = (math.log10(axis.low), math.log10(axis.high)) if axis.log else (axis.low, axis.high)
    ticks = _log_ticks(axis.low, axis.high) if axis.log else None
    below = low - 0.25 * (high - low or 1.0)  # where trials that did not sample the axis are drawn
    coded = [(math.log10(v) if axis.log else v) if v is not None else below for v in values.to_list()]
    if values.null_count():
        ticks = ticks or [(v, f"{v:.3g}") for v in (low, (low + high) / 2, high)]
        ticks = [(below, NOT_SAMPLED), *ticks]
        low = below
    tickvals = [t for t, _ in ticks] if ticks else None
    ticktext = [s for _, s in ticks] if ticks else None
    return Dimension(axis.label + (" (log)" if axis.log else ""), coded, tickvals, ticktext, (low, high))


def _log_ticks(low: float, high: float) -> list[tuple[float, str]]:
    """Ticks at both ends and every power of ten between, as (log10 value, label)."""
    powers = range(math.ceil(math.log10(low)), math.floor(math.log10(high)) + 1)
    values = sorted({low, high, *(10.0**p for p in powers)})
    return [(math.log10(v), f"{v:.3g}") for v in values]


def _get_parallel_plot(info: ParallelInfo) -> go.Figure:
    dims = [
        {"label": d.label, "values": d.values, "range": list(d.range)}
        | ({"tickvals": d.tickvals, "ticktext": d.ticktext} if d.tickvals is not None else {})
        for d in info.dimensions
    ]
    fig = go.Figure(
        go.Parcoords(
            dimensions=dims,
            line={"color": info.scores, "colorscale": "Viridis", "showscale": True, "colorbar": {"title": info.metric}},
        )
    )
    fig.update_layout(
        title=f"Parallel coordinates: {showing(len(info.trial_ids), info.total, info.what)} "
        f"(drag along an axis to filter{unsampled_note(info.unsampled)})",
        height=460,
        margin={"l": 80, "r": 80, "t": 110},
        meta={"trial_ids": info.trial_ids}
        | ({"members": info.members, "unit": "configurations"} if info.members is not None else {}),
    )
    return fig


def plot_parallel_coordinate(exp: Experiment, limit: int = MAX_POINTS) -> go.Figure | None:
    """Completed trials (configurations, in a seed-aware search) across the searched axes and
    the score; None without searched axes."""
    info = _get_parallel_info(exp, limit)
    return _get_parallel_plot(info) if isinstance(info, ParallelInfo) else None
