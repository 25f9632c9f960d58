"""Multi-objective searches: the score against each minimised objective, with the Pareto front."""

from __future__ import annotations

from typing import NamedTuple

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from ._common import Unavailable
from ._loading import Experiment

LOG_OBJECTIVES = ("num_parameters",)


class ParetoPanel(NamedTuple):
    objective: str
    points: pl.DataFrame  # trial_id, x (objective, minimised), score (maximised), front (bool)


class ParetoInfo(NamedTuple):
    panels: list[ParetoPanel]
    metric: str
    left_out: list[str]  # why an objective of the search has no panel


def pareto_front(x: pl.Series, score: pl.Series) -> pl.Series:
    """True where no other point has ``x`` as low or lower and ``score`` strictly higher (or the
    same score at a strictly lower ``x``); ties on both keep every copy on the front."""
    frame = pl.DataFrame({"x": x, "score": score}).with_row_index("i")
    # The best score among points with a strictly lower x, then among those with an equal x.
    lower = frame.group_by("x").agg(pl.col("score").max().alias("best_here")).sort("x")
    lower = lower.with_columns(pl.col("best_here").cum_max().shift(1).alias("best_before"))
    marked = frame.join(lower, on="x", how="left").sort("i")
    dominated = (pl.col("score") < pl.col("best_here")) | (pl.col("score") <= pl.col("best_before")).fill_null(False)
    return marked.select((~dominated).alias("front"))["front"]


def _get_pareto_info(exp: Experiment) -> ParetoInfo | Unavailable | None:
    """One panel per objective of a multi-objective search; None for single-objective ones."""
    search = exp.spec.get("search")
    declared = search.get("objectives") if isinstance(search, dict) else None
    if not declared or not isinstance(declared, list):
        return None
    completed = exp.completed
    panels, left_out = [], []
    for objective in map(str, declared):
        if objective not in completed.columns:
            left_out.append(f"{objective} is not a column of trials.parquet")
            continue
        points = completed.select(
            "trial_id", pl.col(objective).cast(pl.Float64).alias("x"), pl.col(exp.metric).alias("score")
        ).drop_nulls()
        if points.height:
            front = pareto_front(points["x"], points["score"]).alias("front")
            panels.append(ParetoPanel(objective, points.with_columns(front)))
        else:
            left_out.append(f"no completed trial has both {exp.metric} and {objective}")
    if not panels:
        return Unavailable("; ".join(left_out))
    return ParetoInfo(panels, exp.metric, left_out)


def _get_pareto_plot(info: ParetoInfo) -> go.Figure:
    titles = [f"{info.metric} vs {p.objective}" for p in info.panels]
    fig = make_subplots(rows=1, cols=len(info.panels), subplot_titles=titles)
    for i, panel in enumerate(info.panels, start=1):
        for front, (name, color) in ((False, ("dominated", "#9e9e9e")), (True, ("Pareto front", "#d62728"))):
            rows = panel.points.filter(pl.col("front") == front).sort("x")
            fig.add_trace(
                go.Scatter(
                    x=rows["x"].to_list(),
                    y=rows["score"].to_list(),
                    mode="lines+markers" if front else "markers",
                    line={"shape": "hv", "color": color},
                    marker={"color": color, "size": 8 if front else 6},
                    name=name,
                    legendgroup=name,
                    showlegend=i == 1,
                    customdata=rows["trial_id"].to_list(),
                    hovertemplate="trial %{customdata}<br>%{x:,}<br>%{y:.4f}<extra>" + name + "</extra>",
                ),
                row=1,
                col=i,
            )
        fig.update_xaxes(
            title_text=f"{panel.objective} (lower is better)",
            type="log" if panel.objective in LOG_OBJECTIVES else "linear",
            row=1,
            col=i,
        )
    fig.update_yaxes(title_text=info.metric, col=1)
    left_out = f" (left out: {'; '.join(info.left_out)})" if info.left_out else ""
    fig.update_layout(
        title=f"Pareto front: higher score for fewer parameters or lower latency{left_out}", height=440, dragmode="select"
    )
    return fig


def plot_pareto_front(exp: Experiment) -> go.Figure | None:
    """Score against each extra objective with the front marked; None for single-objective searches."""
    info = _get_pareto_info(exp)
    return _get_pareto_plot(info) if isinstance(info, ParetoInfo) else None
