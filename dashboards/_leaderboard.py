"""Leaderboard: the best trials by the validation metric, with test score, budget and size.

Rows are ranked as the search picks its config (``tacfn.search._choosing._rank``): completed
trials with a score first, best score first; on a tie the trial that started first (one
without a start time after those with one), then the lower id. Pruned and other trials
follow, ranked the same way. A search's chosen trial (``chosen``, the one scored on test)
is the first row even while a resumed search has not yet re-chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import plotly.graph_objects as go
import polars as pl

from tacfn.store import CONFIG_PREFIX, PARAM_PREFIX, STATUSES

from ._loading import Experiment
from ._params import space_axes

TOP_K = 20
ROW_HEIGHT = 25  # pixels per table row; the page shrinks a filtered table by this much per hidden row
FUSION = "config.model.fusion.name"


class LeaderboardInfo(NamedTuple):
    table: pl.DataFrame  # rank first, then the columns shown
    total: int  # trials that passed the filters
    metric: str
    kind: str | None


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    return [value] if isinstance(value, str) else (list(value) if value is not None else None)


def _get_leaderboard_info(
    exp: Experiment,
    top_k: int = TOP_K,
    *,
    fusion: str | Sequence[str] | None = None,
    dataset: str | Sequence[str] | None = None,
    status: str | Sequence[str] | None = None,
) -> LeaderboardInfo:
    """The ``top_k`` trials among those passing the filters, ranked as the module docstring says."""
    if top_k < 1:
        raise ValueError(f"`top_k >= 1` must hold, but got top_k={top_k}")
    statuses = _as_list(status)
    unknown = sorted(set(statuses or ()) - set(STATUSES))
    if unknown:
        raise ValueError(f"`status` must be among {list(STATUSES)}, but got {unknown}")
    trials, metric = exp.trials, exp.metric
    filters = {FUSION: _as_list(fusion), "dataset": _as_list(dataset), "status": statuses}
    for column, allowed in filters.items():
        if allowed is not None:
            if column not in trials.columns:
                raise ValueError(f"cannot filter on {column!r}: this experiment's trials have no such column")
            trials = trials.filter(pl.col(column).cast(pl.Utf8).is_in(allowed))
    ranked = trials.sort(_rank_keys(trials, metric)).head(top_k)
    params = [a.column for a in space_axes(exp.spec) if a.column in ranked.columns and a.column != FUSION]
    columns = [
        "trial_id",
        *(c for c in ("variant", "seed", "fold") if c in ranked.columns and exp.kind == "ablation"),
        "status",
        *(c for c in (FUSION, "dataset") if c in ranked.columns),
        metric,
        "test_score",
        "best_epoch",
        "epochs_run",
        "seconds",
        "num_parameters",
        *params,
    ]
    table = ranked.select(columns).with_row_index("rank", offset=1)
    return LeaderboardInfo(table, trials.height, metric, exp.kind)


def _rank_keys(trials: pl.DataFrame, metric: str) -> list[pl.Expr]:
    """Sort keys, ascending: the search's ``_rank`` over its candidates (completed with a
    score), with the chosen trial before them and every other trial after them."""
    keys = []
    if "chosen" in trials.columns:
        keys.append(~pl.col("chosen").cast(pl.Boolean, strict=False).fill_null(False))
    keys += [~((pl.col("status") == "completed") & pl.col(metric).is_not_null()), pl.col(metric).is_null(), -pl.col(metric)]
    if "started_at" in trials.columns:
        keys += [pl.col("started_at").is_null(), pl.col("started_at")]
    return [*keys, pl.col("trial_id")]


HEADERS = {FUSION: "fusion", "best_epoch": "best epoch", "epochs_run": "epochs", "num_parameters": "parameters"}


def _header(column: str) -> str:
    """A short column title: ``config.train.lr`` -> ``lr``,
    ``config.model.modality_dropout.audio`` -> ``modality_dropout.audio``; ``param.*`` alike."""
    if column.startswith(PARAM_PREFIX):
        column = CONFIG_PREFIX + column.removeprefix(PARAM_PREFIX)
    if column in HEADERS:
        return HEADERS[column]
    parts = column.removeprefix("config.").split(".")
    return ".".join(parts[-2:]) if len(parts) > 2 and parts[-2] not in ("fusion", "train", "data") else parts[-1]


def _cell(column: str, value: object) -> str:
    if value is None:
        return ""
    if column == "seconds":
        return f"{value:,.1f}"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.3f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def table_figure(headers: list[str], values: list[list[str]]) -> go.Figure:
    """A leaderboard's table: one column per header, each as wide as its longest text."""
    widths = [max(len(h), *(len(v) for v in column), 4) for h, column in zip(headers, values)]
    return go.Figure(
        go.Table(
            columnwidth=widths,
            header={"values": headers, "fill_color": "#e8eef7", "align": "left", "font": {"size": 12}},
            cells={"values": values, "align": "left", "height": ROW_HEIGHT - 1},
        )
    )


def _get_leaderboard_plot(info: LeaderboardInfo) -> go.Figure:
    table = info.table
    headers = [_header(c) for c in table.columns]
    fig = table_figure(headers, [[_cell(c, v) for v in table[c].to_list()] for c in table.columns])
    note = " (test score: the chosen config only)" if info.kind == "search" else ""
    fig.update_layout(
        title=f"Leaderboard: top {table.height} of {info.total} trials by {info.metric}, completed first{note}",
        height=110 + ROW_HEIGHT * max(table.height, 1),
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        meta={"trial_ids": table["trial_id"].to_list(), "row_height": ROW_HEIGHT},
    )
    return fig


def leaderboard(
    exp: Experiment,
    top_k: int = TOP_K,
    *,
    fusion: str | Sequence[str] | None = None,
    dataset: str | Sequence[str] | None = None,
    status: str | Sequence[str] | None = None,
) -> pl.DataFrame:
    """The best ``top_k`` trials by the validation metric, optionally filtered, as a DataFrame."""
    return _get_leaderboard_info(exp, top_k, fusion=fusion, dataset=dataset, status=status).table


def plot_leaderboard(
    exp: Experiment,
    top_k: int = TOP_K,
    *,
    fusion: str | Sequence[str] | None = None,
    dataset: str | Sequence[str] | None = None,
    status: str | Sequence[str] | None = None,
) -> go.Figure:
    """:func:`leaderboard` as a table figure."""
    return _get_leaderboard_plot(_get_leaderboard_info(exp, top_k, fusion=fusion, dataset=dataset, status=status))
