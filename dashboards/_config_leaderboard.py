"""Leaderboard by configuration: a seed-aware search's configurations, ranked by their aggregate.

One row per configuration, ranked as :mod:`dashboards._configurations` ranks them (completed
ones first, best aggregate first): what the search sampled, the aggregate and spread of its
replicates' scores, how many of the planned replicates the aggregate counts, its status
(``pruned after 1``: racing stopped it after one replicate) and, for the chosen
configuration, the mean of its replicates' test scores with their 95% interval. A search that
plans one replicate per configuration has no such table: :func:`dashboards.leaderboard` ranks
its trials.
"""

from __future__ import annotations

from typing import NamedTuple

import plotly.graph_objects as go
import polars as pl

from tacfn.store import PARAM_PREFIX

from ._configurations import Configurations, configurations, members
from ._leaderboard import ROW_HEIGHT, TOP_K, _cell, _header, table_figure
from ._loading import Experiment

TESTS = ("test_mean", "test_low", "test_high")


class ConfigLeaderboardInfo(NamedTuple):
    table: pl.DataFrame  # what configuration_leaderboard returns
    members: dict[str, list[str]]  # each row's config_hash -> its replicates' trial ids
    total: int  # configurations
    metric: str
    how: str  # "mean" or "lcb"
    planned: int  # replicates per configuration


def _get_config_leaderboard_info(exp: Experiment, top_k: int = TOP_K) -> ConfigLeaderboardInfo | None:
    """The ``top_k`` best configurations; None when the experiment is not a seed-aware search."""
    if top_k < 1:
        raise ValueError(f"`top_k >= 1` must hold, but got top_k={top_k}")
    confs = configurations(exp)
    return None if confs is None else _board(confs, top_k)


def _board(confs: Configurations, top_k: int) -> ConfigLeaderboardInfo:
    metric, how = confs.metric, confs.how
    top = confs.table.head(top_k)
    params = [c for c in top.columns if c.startswith(PARAM_PREFIX)]
    table = top.select(
        "rank",
        "config_hash",
        *params,
        pl.col("aggregate").alias(f"{metric}_{how}"),
        pl.col("std").alias(f"{metric}_std"),
        pl.format("{}/{}", "scored", pl.lit(confs.planned)).alias("replicates"),
        "status",
        *TESTS,
    )
    hashes = table["config_hash"].to_list()
    return ConfigLeaderboardInfo(table, members(confs, hashes), confs.table.height, metric, how, confs.planned)


def _get_config_leaderboard_plot(info: ConfigLeaderboardInfo) -> go.Figure:
    table = info.table
    shown = [c for c in table.columns if c not in TESTS]
    headers = [_header(c) for c in shown] + ["test (chosen): mean [95% interval]"]
    values = [[_cell(c, v) for v in table[c].to_list()] for c in shown]
    values.append([_test_cell(*row) for row in table.select(TESTS).iter_rows()])
    headers[shown.index(f"{info.metric}_{info.how}")] = f"{info.metric} {info.how}"
    headers[shown.index(f"{info.metric}_std")] = "std"
    fig = table_figure(headers, values)
    fig.update_layout(
        title=f"Leaderboard by configuration: top {table.height} of {info.total} configurations by the {info.how} "
        f"{info.metric} of their {info.planned} replicates, completed first",
        height=110 + ROW_HEIGHT * max(table.height, 1),
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        meta={"trial_ids": table["config_hash"].to_list(), "members": info.members, "unit": "configurations", "row_height": ROW_HEIGHT},
    )
    return fig


def _test_cell(mean: float | None, low: float | None, high: float | None) -> str:
    return "" if mean is None else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def configuration_leaderboard(exp: Experiment, top_k: int = TOP_K) -> pl.DataFrame:
    """A seed-aware search's best ``top_k`` configurations, one row each, best first.

    Columns: ``rank``, ``config_hash``, the sampled ``param.*``, ``<metric>_<mean|lcb>`` (the
    aggregate), ``<metric>_std``, ``replicates`` (``"3/3"``: in the aggregate / planned),
    ``status`` (``completed``, ``pruned after k``, ``failed``, ``running``) and, for the chosen
    configuration, ``test_mean``, ``test_low`` and ``test_high`` (a 95% t interval).
    Raises ValueError for an experiment that is not a seed-aware search.
    """
    info = _get_config_leaderboard_info(exp, top_k)
    if info is None:
        raise ValueError(
            "a leaderboard by configuration needs a seed-aware search (search.seeds or search.folds listing more "
            f"than one replicate per configuration), but {exp.title} is not one; `leaderboard` ranks its trials"
        )
    return info.table


def plot_configuration_leaderboard(exp: Experiment, top_k: int = TOP_K) -> go.Figure | None:
    """:func:`configuration_leaderboard` as a table figure; None when the experiment is not a seed-aware search."""
    info = _get_config_leaderboard_info(exp, top_k)
    return _get_config_leaderboard_plot(info) if info is not None else None
