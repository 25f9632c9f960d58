"""Two or more experiments side by side: best-so-far histories and score distributions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import plotly.graph_objects as go
import polars as pl
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ._history import _get_history_info
from ._loading import Experiment


class CompareInfo(NamedTuple):
    names: list[str]  # unique display names, one per experiment
    histories: list[pl.DataFrame]  # number, best (best completed score so far)
    scores: list[pl.Series]  # completed trials' metric
    metrics: list[str]


def display_names(exps: Sequence[Experiment]) -> list[str]:
    """Experiment names, with the folder added where two experiments share a name."""
    names = [e.name for e in exps]
    return [f"{e.name} ({e.root})" if names.count(e.name) > 1 else e.name for e in exps]


def _get_compare_info(exps: Sequence[Experiment]) -> CompareInfo:
    histories = [_get_history_info(e).points.drop_nulls("best").select("number", "best") for e in exps]
    scores = [e.completed[e.metric] for e in exps]
    return CompareInfo(display_names(exps), histories, scores, [e.metric for e in exps])


def _get_compare_plot(info: CompareInfo) -> go.Figure:
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("best score so far", "scores of completed trials"), column_widths=[0.6, 0.4]
    )
    colors = qualitative.Plotly
    for i, (name, history, scores) in enumerate(zip(info.names, info.histories, info.scores)):
        color = colors[i % len(colors)]
        fig.add_trace(
            go.Scatter(
                x=history["number"].to_list(),
                y=history["best"].to_list(),
                mode="lines",
                line={"shape": "hv", "color": color},
                name=name,
                legendgroup=name,
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Box(
                y=scores.to_list(),
                name=name,
                boxpoints="all",
                jitter=0.4,
                marker={"color": color, "size": 4},
                legendgroup=name,
                showlegend=False,
            ),
            row=1,
            col=2,
        )
    metrics = sorted(set(info.metrics))
    fig.update_xaxes(title_text="trial (in start order)", row=1, col=1)
    fig.update_yaxes(title_text=" / ".join(metrics), row=1, col=1)
    fig.update_layout(title=f"Comparing {len(info.names)} experiments on {' / '.join(metrics)}", height=440)
    return fig


def plot_compare(exps: Sequence[Experiment]) -> go.Figure:
    """Best-so-far histories and score distributions of several experiments, side by side."""
    if len(exps) < 2:
        raise ValueError(f"comparing needs at least 2 experiments, but got {len(exps)}")
    return _get_compare_plot(_get_compare_info(exps))
