"""Optimisation history: each trial's score in start order, and the best so far."""

from __future__ import annotations

from typing import NamedTuple

import plotly.graph_objects as go
import polars as pl

from ._common import STATUS_COLORS, Unavailable, trial_numbers
from ._loading import Experiment


class HistoryInfo(NamedTuple):
    """Scored trials (``number``, ``trial_id``, ``status``, ``value``, ``best``) and the metric."""

    points: pl.DataFrame
    metric: str


def _get_history_info(exp: Experiment) -> HistoryInfo:
    """Completed and pruned trials with a score (none, perhaps); ``best`` is the best completed score so far."""
    metric = exp.metric
    numbered = trial_numbers(exp.trials)
    points = (
        numbered.filter(pl.col("status").is_in(["completed", "pruned"]) & pl.col(metric).is_not_null())
        .select("number", "trial_id", "status", pl.col(metric).alias("value"))
        .with_columns(
            pl.when(pl.col("status") == "completed").then(pl.col("value")).cum_max().forward_fill().alias("best")
        )
    )
    return HistoryInfo(points, metric)


def _get_history_plot(info: HistoryInfo) -> go.Figure:
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
                    customdata=rows["trial_id"].to_list(),
                    hovertemplate="trial %{customdata}<br>%{y:.4f}<extra>" + status + "</extra>",
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
    fig.update_layout(
        title=f"Optimisation history: {info.metric} (maximised), {info.points.height} scored trials",
        xaxis_title="trial (in start order)",
        yaxis_title=info.metric,
        dragmode="select",
        height=420,
    )
    return fig


def _get_history_view(exp: Experiment) -> HistoryInfo | Unavailable:
    """The history, or why there is none to draw yet."""
    info = _get_history_info(exp)
    return info if info.points.height else Unavailable(f"no completed or pruned trial with a {info.metric} yet")


def plot_optimization_history(exp: Experiment) -> go.Figure | None:
    """Each trial's validation score in start order, with the best completed score so far; None before any."""
    info = _get_history_view(exp)
    return _get_history_plot(info) if isinstance(info, HistoryInfo) else None
