"""Optimisation history: each trial's score in start order, and the best so far.

A seed-aware search's history is by configuration: each configuration's aggregate (the mean
or lcb of its replicates, :mod:`dashboards._configurations`) in the order configurations were
first started, and the best aggregate of a completed configuration so far.
"""

from __future__ import annotations

from typing import NamedTuple

import plotly.graph_objects as go
import polars as pl

from ._common import STATUS_COLORS, Unavailable, trial_numbers
from ._configurations import Configurations, configurations, members
from ._loading import Experiment


class HistoryInfo(NamedTuple):
    """Scored points (``number``, the :attr:`ids` column, ``status``, ``value``, ``best``) and
    the metric: trials, or a seed-aware search's configurations (``how`` set)."""

    points: pl.DataFrame
    metric: str
    how: str | None = None  # a seed-aware search's aggregate, "mean" or "lcb": the points are configurations
    members: dict[str, list[str]] | None = None  # configurations: each one's replicate trial ids

    @property
    def what(self) -> str:
        return "trial" if self.how is None else "configuration"

    @property
    def ids(self) -> str:
        """The points' id column: ``trial_id``, or ``config_hash`` for configurations."""
        return "trial_id" if self.how is None else "config_hash"


def _get_history_info(exp: Experiment) -> HistoryInfo:
    """Completed and pruned trials (configurations of a seed-aware search) with a score, none
    perhaps; ``best`` is the best completed score so far."""
    confs = configurations(exp)
    if confs is not None:
        return _configuration_history(confs)
    metric = exp.metric
    numbered = trial_numbers(exp.trials)
    points = numbered.filter(pl.col("status").is_in(["completed", "pruned"]) & pl.col(metric).is_not_null()).select(
        "number", "trial_id", "status", pl.col(metric).alias("value")
    )
    return HistoryInfo(_with_best(points), metric)


def _configuration_history(confs: Configurations) -> HistoryInfo:
    """Completed and pruned configurations (``pruned after k``) with an aggregate, numbered in first-start order."""
    pruned = pl.col("status").str.starts_with("pruned")
    points = (
        confs.table.sort("started_at", "config_hash", nulls_last=True)
        .with_row_index("number")
        .filter(((pl.col("status") == "completed") | pruned) & pl.col("aggregate").is_not_null())
        .select(
            "number",
            "config_hash",
            pl.when(pruned).then(pl.lit("pruned")).otherwise(pl.col("status")).alias("status"),
            pl.col("aggregate").alias("value"),
        )
    )
    return HistoryInfo(_with_best(points), confs.metric, confs.how, members(confs, points["config_hash"].to_list()))


def _with_best(points: pl.DataFrame) -> pl.DataFrame:
    """``points`` with ``best``: the best ``value`` of a completed point so far."""
    best = pl.when(pl.col("status") == "completed").then(pl.col("value")).cum_max().forward_fill()
    return points.with_columns(best.alias("best"))


def _get_history_plot(info: HistoryInfo) -> go.Figure:
    what = info.what
    score = info.metric if info.how is None else f"{info.metric} {info.how}"
    fig = go.Figure()
    for status in ("completed", "pruned"):
        rows = info.points.filter(pl.col("status") == status)
        if rows.height:
            fig.add_trace(
                go.Scatter(
                    x=rows["number"].to_list(),
                    y=rows["value"].to_list(),
                    mode="markers",
                    name=status,
                    marker={"color": STATUS_COLORS[status], "size": 7},
                    customdata=rows[info.ids].to_list(),
                    hovertemplate=f"{what} %{{customdata}}<br>%{{y:.4f}}<extra>{status}</extra>",
                )
            )
    best = info.points.filter(pl.col("best").is_not_null())
    fig.add_trace(
        go.Scatter(
            x=best["number"].to_list(),
            y=best["best"].to_list(),
            mode="lines",
            line={"color": "#d62728", "shape": "hv"},
            name="best so far",
            hoverinfo="skip",
        )
    )
    of = "" if info.how is None else " of the replicates"
    fig.update_layout(
        title=f"Optimisation history: {score}{of} (maximised), {info.points.height} scored {what}s",
        xaxis_title=f"{what} (in start order)",
        yaxis_title=score,
        dragmode="select",
        height=420,
    )
    if info.members is not None:  # the page's cross-filter: a configuration selects its trials
        fig.update_layout(meta={"members": info.members, "unit": "configurations"})
    return fig


def _get_history_view(exp: Experiment) -> HistoryInfo | Unavailable:
    """The history, or why there is none to draw yet."""
    info = _get_history_info(exp)
    return info if info.points.height else Unavailable(f"no completed or pruned {info.what} with a {info.metric} yet")


def plot_optimization_history(exp: Experiment) -> go.Figure | None:
    """Each trial's validation score in start order (each configuration's aggregate, in a
    seed-aware search), with the best completed score so far; None before any."""
    info = _get_history_view(exp)
    return _get_history_plot(info) if isinstance(info, HistoryInfo) else None
