"""Slice plots: the score against each searched axis, one panel per axis."""

from __future__ import annotations

import math
from typing import NamedTuple

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from ._common import MAX_POINTS, Unavailable, sample_best, showing, trial_numbers
from ._loading import Experiment
from ._parallel import _no_axes, unsampled_note
from ._params import Axis, categories, param_frame, space_axes

COLUMNS = 3


class SlicePanel(NamedTuple):
    axis: Axis
    points: pl.DataFrame  # trial_id, number, value (the parameter), score
    categories: list[str] | None  # choice axes: categories in spec order


class SliceInfo(NamedTuple):
    panels: list[SlicePanel]
    metric: str
    shown: int
    total: int
    unsampled: list[str]  # axes with no sampled value among the trials shown: no panel


def _get_slice_info(exp: Experiment, limit: int = MAX_POINTS) -> SliceInfo | Unavailable:
    """One panel per axis with sampled values; Unavailable when there is none."""
    metric = exp.metric
    completed = trial_numbers(exp.completed)
    if not completed.height:
        return Unavailable(f"no completed trial with a {metric} yet")
    axes = space_axes(exp.spec)
    params = param_frame(completed, axes).with_columns(completed["number"], completed[metric].alias("score"))
    shown = sample_best(params, limit, "score")
    panels, unsampled = [], []
    for axis in axes:
        points = shown.select("trial_id", "number", pl.col(axis.key).alias("value"), "score").drop_nulls("value")
        if points.height:
            cats = categories(completed, axis) if axis.kind == "choice" else None
            panels.append(SlicePanel(axis, points.sort("number"), cats))
        else:
            unsampled.append(axis.key)
    if not panels:
        return _no_axes(axes)
    return SliceInfo(panels, metric, shown.height, completed.height, unsampled)


def _get_slice_plot(info: SliceInfo) -> go.Figure:
    rows = math.ceil(len(info.panels) / COLUMNS)
    fig = make_subplots(
        rows=rows,
        cols=COLUMNS,
        subplot_titles=[p.axis.label for p in info.panels],
        vertical_spacing=0.5 / rows if rows > 1 else 0.2,
        horizontal_spacing=0.06,
    )
    for i, panel in enumerate(info.panels):
        row, col = divmod(i, COLUMNS)
        fig.add_trace(
            go.Scatter(
                x=panel.points["value"].to_list(),
                y=panel.points["score"].to_list(),
                mode="markers",
                marker={
                    "color": panel.points["number"].to_list(),
                    "colorscale": "Blues",
                    "size": 6,
                    "line": {"width": 0.5, "color": "#555"},
                    "showscale": i == 0,
                    "colorbar": {"title": "trial"},
                },
                customdata=panel.points["trial_id"].to_list(),
                hovertemplate="trial %{customdata}<br>%{x}<br>%{y:.4f}<extra></extra>",
                showlegend=False,
            ),
            row=row + 1,
            col=col + 1,
        )
        if panel.categories is not None:
            fig.update_xaxes(
                type="category", categoryorder="array", categoryarray=panel.categories, row=row + 1, col=col + 1
            )
        elif panel.axis.log:
            fig.update_xaxes(type="log", row=row + 1, col=col + 1)
    fig.update_yaxes(title_text=info.metric, col=1)
    fig.update_layout(
        title=f"Slices: {info.metric} against each searched axis "
        f"({showing(info.shown, info.total, 'completed trials')}{unsampled_note(info.unsampled)})",
        height=300 * rows + 80,
        dragmode="select",
    )
    return fig


def plot_slice(exp: Experiment, limit: int = MAX_POINTS) -> go.Figure | None:
    """The score against each searched axis; None without searched axes."""
    info = _get_slice_info(exp, limit)
    return _get_slice_plot(info) if isinstance(info, SliceInfo) else None
