"""Trial timeline: one bar per trial from start to finish, one row per worker process."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import NamedTuple

import plotly.graph_objects as go
import polars as pl

from ._common import STATUS_COLORS
from ._loading import Experiment


class TimelineInfo(NamedTuple):
    bars: pl.DataFrame  # trial_id, worker, status, start, finish, running (finish is "now" while running)
    total: int  # all trials, including those without a start time


def _get_timeline_info(exp: Experiment, now: datetime | None = None) -> TimelineInfo | None:
    """Every trial with a start time (not capped); None when no trial has one."""
    trials = exp.trials
    if "started_at" not in trials.columns or trials["started_at"].null_count() == trials.height:
        return None
    now = now or datetime.now(timezone.utc)
    worker = next((c for c in ("worker", "node") if c in trials.columns), None)
    bars = (
        trials.filter(pl.col("started_at").is_not_null())
        .select(
            "trial_id",
            (pl.col(worker).fill_null("unknown") if worker else pl.lit("unknown")).alias("worker"),
            "status",
            pl.col("started_at").alias("start"),
            pl.col("finished_at").fill_null(pl.lit(now, dtype=trials.schema["started_at"])).alias("finish"),
            pl.col("finished_at").is_null().alias("running"),
        )
        .sort("worker", "start")
    )
    return TimelineInfo(bars, trials.height)


def _get_timeline_plot(info: TimelineInfo) -> go.Figure:
    fig = go.Figure()
    for status, color in STATUS_COLORS.items():
        rows = info.bars.filter(pl.col("status") == status)
        if not rows.height:
            continue
        duration_ms = (rows["finish"] - rows["start"]).dt.total_milliseconds()
        fig.add_trace(
            go.Bar(
                base=rows["start"].dt.replace_time_zone(None).dt.strftime("%Y-%m-%d %H:%M:%S%.3f").to_list(),
                x=duration_ms.to_list(),
                y=rows["worker"].to_list(),
                orientation="h",
                name=status,
                marker={"color": color, "line": {"color": "white", "width": 1}},
                customdata=rows["trial_id"].to_list(),
                hovertemplate="trial %{customdata}<br>%{base|%H:%M:%S} + %{x:,.0f} ms<extra>" + status + "</extra>",
            )
        )
    workers = info.bars["worker"].n_unique()
    missing = info.total - info.bars.height
    note = f", {missing} without a start time" if missing else ""
    fig.update_layout(
        title=f"Trial timeline by worker: {info.bars.height} trials on {workers} workers{note}",
        barmode="overlay",
        xaxis={"type": "date", "title": "time (UTC)"},
        yaxis={"title": "worker", "type": "category"},
        height=200 + 30 * workers,
        dragmode="select",
    )
    return fig


def plot_timeline(exp: Experiment) -> go.Figure | None:
    """When each trial ran, on which worker, and how it ended; None without start times."""
    info = _get_timeline_info(exp)
    return _get_timeline_plot(info) if info else None
