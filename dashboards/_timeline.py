"""Trial timeline: one bar per trial from start to finish, one row per concurrent slot.

Rows are lanes, not processes: Ray starts a fresh worker process for many trials, so a row
per process says nothing about how many trials ran at once. Each trial takes the lowest
lane free at its start (interval partitioning, in start order), so the number of rows is
the most trials that ran at the same time. A trial ending when another starts frees its lane.
"""

from __future__ import annotations

import heapq
from datetime import datetime, timezone
from typing import NamedTuple

import plotly.graph_objects as go
import polars as pl

from ._common import STATUS_COLORS, Unavailable
from ._loading import Experiment


class TimelineInfo(NamedTuple):
    bars: pl.DataFrame  # trial_id, worker, status, start, finish, running (finish is "now" while running), lane (0-based)
    total: int  # all trials, including those without a start time
    lanes: int  # the most trials running at once


def _lanes(starts: list[datetime], finishes: list[datetime]) -> list[int]:
    """The lowest lane free at each interval's start, taking intervals in start order; the
    number of lanes used equals the most intervals open at once."""
    order = sorted(range(len(starts)), key=lambda i: (starts[i], finishes[i], i))
    busy: list[tuple[datetime, int]] = []  # (finish, lane) of the intervals still open
    free: list[int] = []
    assigned = [0] * len(starts)
    for i in order:
        while busy and busy[0][0] <= starts[i]:
            heapq.heappush(free, heapq.heappop(busy)[1])
        lane = heapq.heappop(free) if free else len(busy)
        heapq.heappush(busy, (max(finishes[i], starts[i]), lane))
        assigned[i] = lane
    return assigned


def _get_timeline_info(exp: Experiment, now: datetime | None = None) -> TimelineInfo | Unavailable:
    """Every trial with a start time (not capped); Unavailable when no trial has one."""
    trials = exp.trials
    if "started_at" not in trials.columns or trials["started_at"].null_count() == trials.height:
        return Unavailable(f"none of the {trials.height} trials has a start time (started_at in trials.parquet)")
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
        .sort("start", "trial_id")
    )
    lanes = _lanes(bars["start"].to_list(), bars["finish"].to_list())
    bars = bars.with_columns(pl.Series("lane", lanes, pl.Int64))
    return TimelineInfo(bars, trials.height, max(lanes) + 1)


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
                y=(rows["lane"] + 1).to_list(),
                orientation="h",
                name=status,
                marker={"color": color, "line": {"color": "white", "width": 1}},
                customdata=rows["trial_id"].to_list(),
                hovertext=rows["worker"].to_list(),
                hovertemplate="trial %{customdata} on %{hovertext}<br>%{base|%H:%M:%S} + %{x:,.0f} ms"
                "<extra>" + status + "</extra>",
            )
        )
    missing = info.total - info.bars.height
    note = f", {missing} without a start time" if missing else ""
    fig.update_layout(
        title=f"Trial timeline: {info.bars.height} trials, at most {info.lanes} at once{note}",
        barmode="overlay",
        xaxis={"type": "date", "title": "time (UTC)"},
        yaxis={"title": "slot", "tickmode": "array", "tickvals": list(range(1, info.lanes + 1)), "autorange": "reversed"},
        height=200 + 30 * info.lanes,
        dragmode="select",
    )
    return fig


def plot_timeline(exp: Experiment) -> go.Figure | None:
    """When each trial ran, how many ran at once, and how each ended; None without start times."""
    info = _get_timeline_info(exp)
    return _get_timeline_plot(info) if isinstance(info, TimelineInfo) else None
