"""Replicates: a seed-aware search's best configurations, each with its replicates' scores as points.

Configurations stand in leaderboard order along x (:mod:`dashboards._configurations`), so
the figure reads beside the leaderboard by configuration: each replicate is a point at the
score its configuration's aggregate counts (0 for a diverged one), coloured by how it ended,
and the aggregate itself a bar across them. What the table's aggregate and std sum up, this
shows: two configurations of one mean, one steady and one far apart.
"""

from __future__ import annotations

from typing import NamedTuple

import plotly.graph_objects as go
import polars as pl

from ._common import STATUS_COLORS, Unavailable
from ._configurations import configurations, members
from ._leaderboard import TOP_K
from ._loading import Experiment

SPREAD = 0.25  # how far apart along x a configuration's replicates are drawn, in configurations


class ReplicatesInfo(NamedTuple):
    configs: pl.DataFrame  # rank, config_hash, aggregate, status: the top configurations, best first
    points: pl.DataFrame  # rank, config_hash, trial_id, replicate, seed, fold, status, value: their scored replicates
    members: dict[str, list[str]]  # config_hash -> its replicates' trial ids
    metric: str
    how: str
    planned: int
    total: int  # configurations


def _get_replicates_info(exp: Experiment, top_k: int = TOP_K) -> ReplicatesInfo | Unavailable | None:
    """The ``top_k`` best configurations and their scored replicates; None when the experiment
    is not a seed-aware search, Unavailable before a replicate has a score."""
    confs = configurations(exp)
    if confs is None:
        return None
    if not confs.replicates.height:
        return Unavailable(f"no replicate with a {confs.metric} yet")
    top = confs.table.head(top_k).select("rank", "config_hash", "aggregate", "status")
    points = top.select("rank", "config_hash").join(confs.replicates, on="config_hash").sort("rank", "replicate")
    found = members(confs, top["config_hash"].to_list())
    return ReplicatesInfo(top, points, found, confs.metric, confs.how, confs.planned, confs.table.height)


def _get_replicates_plot(info: ReplicatesInfo) -> go.Figure:
    fig = go.Figure()
    offset = (pl.col("replicate") / max(info.planned - 1, 1) - 0.5) * SPREAD
    for status in ("completed", "pruned", "diverged"):
        rows = info.points.filter(pl.col("status") == status)
        if not rows.height:
            continue
        fig.add_trace(
            go.Scatter(
                x=rows.select(pl.col("rank") + offset)["rank"].to_list(),
                y=rows["value"].to_list(),
                mode="markers",
                name=f"replicate, {status}",
                marker={"color": STATUS_COLORS[status], "size": 8, "opacity": 0.8},
                customdata=rows["trial_id"].to_list(),
                text=[f"seed {s}, fold {f}" for s, f in rows.select("seed", "fold").iter_rows()],
                hovertemplate="trial %{customdata} (%{text})<br>%{y:.4f}<extra>" + status + "</extra>",
            )
        )
    configs = info.configs.filter(pl.col("aggregate").is_not_null())
    fig.add_trace(
        go.Scatter(
            x=configs["rank"].to_list(),
            y=configs["aggregate"].to_list(),
            mode="markers",
            name=f"configuration's {info.how}",
            marker={"symbol": "line-ew-open", "size": 28, "color": "#1d2330", "line": {"width": 3}},
            customdata=configs["config_hash"].to_list(),
            text=configs["status"].to_list(),
            hovertemplate=f"configuration %{{customdata}} (%{{text}})<br>{info.how} %{{y:.4f}}<extra></extra>",
        )
    )
    shown = info.configs.height
    fig.update_layout(
        title=f"Replicates of the top {shown} of {info.total} configurations: each replicate's {info.metric} "
        f"(a diverged one counts 0) and the configuration's {info.how}",
        xaxis={"title": "configuration (leaderboard rank)", "tickmode": "array", "tickvals": list(range(1, shown + 1))},
        yaxis_title=info.metric,
        dragmode="select",
        height=420,
        meta={"members": info.members},
    )
    return fig


def plot_replicates(exp: Experiment, top_k: int = TOP_K) -> go.Figure | None:
    """Each of the ``top_k`` best configurations' replicate scores and aggregate; None when the
    experiment is not a seed-aware search or no replicate has a score."""
    info = _get_replicates_info(exp, top_k)
    return _get_replicates_plot(info) if isinstance(info, ReplicatesInfo) else None
