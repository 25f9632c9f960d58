"""A seed-aware search's configurations: its replicate rows summed up, one row per configuration.

A search is seed-aware when ``search.seeds`` and ``search.folds`` plan more than one (seed,
fold) replicate per configuration (:func:`planned_replicates`): ``trials.parquet`` then holds
one row per replicate, and a configuration's replicates share its ``config_hash``. Its views
(leaderboard, replicates, history, parallel coordinates) draw configurations, as summed up here
with the arithmetic the search itself uses (:mod:`tacfn.replicates`):

- aggregate: ``aggregate(scores, search.aggregate)`` (mean or lcb) over the scores of its
  completed and pruned replicates, with ``DIVERGED_SCORE`` for each diverged one;
- status: ``completed`` when every planned replicate completed or diverged (a diverged one
  counts as a failure on its seed, not of the configuration) and one completed, ``failed``
  when one failed or all diverged, ``running`` while one runs, else ``pruned after k`` (k
  replicates recorded: racing stopped it, or ASHA stopped a replicate);
- rank: as the trials' leaderboard ranks trials, the chosen configuration (scored on test)
  first, then completed ones by aggregate, best first, then the others the same way; a tie
  goes to the configuration started first, then the lower hash.

A search without ``seeds`` or ``folds`` (every search from before them) plans one replicate:
it is not seed-aware, and its views draw trials as they always did.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any, NamedTuple

import polars as pl

from tacfn.replicates import DIVERGED_SCORE, Aggregate, aggregate, ended_as, interval95, spread

from ._loading import Experiment
from ._params import space_axes

SCORED = ("completed", "pruned", "diverged")  # the replicates a configuration's aggregate counts
SUMMARY = {  # what configurations() works out for each configuration from its replicates
    "aggregate": pl.Float64,
    "std": pl.Float64,
    "scored": pl.Int64,
    "status": pl.Utf8,
    "test_mean": pl.Float64,
    "test_low": pl.Float64,
    "test_high": pl.Float64,
}


class Configurations(NamedTuple):
    """A seed-aware search's configurations, ranked (``rank`` from 1), and their scored replicates.

    ``table``: ``rank``, ``config_hash``, the ``param.*`` columns of the space's axes (what
    the search sampled, the same in every replicate), ``aggregate``, ``std``, ``scored``
    (replicates in the aggregate), ``status``, ``test_mean``, ``test_low``, ``test_high`` (the
    95% interval of the chosen replicates' test scores), ``chosen``, ``started_at`` (its first
    replicate's start) and ``trial_ids`` (its replicates', in replicate order).
    ``replicates``: one row per scored replicate, ``config_hash``, ``trial_id``, ``replicate``,
    ``seed``, ``fold``, ``status`` and ``value``, the score the aggregate counts.
    """

    table: pl.DataFrame
    replicates: pl.DataFrame
    metric: str
    how: Aggregate
    planned: int  # replicates per configuration


def planned_replicates(spec: Mapping[str, Any]) -> int:
    """Replicates per configuration: ``len(search.seeds) * len(search.folds)``, each 1 when unset."""
    search = spec.get("search")
    if not isinstance(search, Mapping):
        return 1
    return _count(search.get("seeds")) * _count(search.get("folds"))


def _count(values: Any) -> int:
    return len(values) if isinstance(values, list) and values else 1


def is_seed_aware(exp: Experiment) -> bool:
    """Whether the experiment is a search that plans more than one replicate per configuration."""
    return exp.kind == "search" and planned_replicates(exp.spec) > 1


def aggregate_how(spec: Mapping[str, Any]) -> Aggregate:
    """``search.aggregate``: how a configuration's replicates are summed up, ``mean`` unless ``lcb``."""
    search = spec.get("search")
    return "lcb" if isinstance(search, Mapping) and search.get("aggregate") == "lcb" else "mean"


def configurations(exp: Experiment) -> Configurations | None:
    """The experiment's configurations as the module docstring sums them up; None when it is not seed-aware."""
    if not is_seed_aware(exp):
        return None
    metric, how, planned = exp.metric, aggregate_how(exp.spec), planned_replicates(exp.spec)
    order = [c for c in ("replicate", "started_at") if c in exp.trials.columns]
    trials = exp.trials.sort([*order, "trial_id"], nulls_last=True)
    replicates = _replicate_scores(trials, metric)
    values = dict(replicates.group_by("config_hash").agg(pl.col("value")).iter_rows())
    chosen = pl.col("chosen").cast(pl.Boolean, strict=False).fill_null(False) if "chosen" in trials.columns else pl.lit(False)
    params = [a.param_column for a in space_axes(exp.spec) if a.param_column in trials.columns]
    grouped = trials.group_by("config_hash", maintain_order=True).agg(
        *(pl.col(c).first() for c in params),
        pl.col("status"),
        chosen.any().alias("chosen"),
        pl.col("test_score").filter(chosen).drop_nulls().alias("tests"),
        pl.col("started_at").min(),
        pl.col("trial_id").alias("trial_ids"),
    )
    summaries = [
        _summary(values.get(h, []), statuses, tests, planned, how)
        for h, statuses, tests in grouped.select("config_hash", "status", "tests").iter_rows()
    ]
    summary = pl.DataFrame(summaries, schema=SUMMARY, orient="row")
    table = pl.concat([grouped.drop("status", "tests"), summary], how="horizontal")
    ranked = table.sort(_rank_keys(), nulls_last=True).with_row_index("rank", offset=1)
    columns = ["rank", "config_hash", *params, *SUMMARY, "chosen", "started_at", "trial_ids"]
    return Configurations(ranked.select(columns), replicates, metric, how, planned)


def _replicate_scores(trials: pl.DataFrame, metric: str) -> pl.DataFrame:
    """The replicates an aggregate counts, with the score it counts (DIVERGED_SCORE for a diverged one)."""
    value = pl.when(pl.col("status") == "diverged").then(pl.lit(DIVERGED_SCORE)).otherwise(pl.col(metric))
    ids = [c for c in ("replicate", "seed", "fold") if c in trials.columns]
    return (
        trials.filter(pl.col("status").is_in(SCORED))
        .select("config_hash", "trial_id", *ids, "status", value.cast(pl.Float64).alias("value"))
        .drop_nulls("value")
    )


def _summary(scores: list[float], statuses: list[str], tests: list[float], planned: int, how: Aggregate) -> tuple[Any, ...]:
    """One configuration's SUMMARY columns."""
    low, high = interval95(tests) if tests else (None, None)
    test_mean = statistics.fmean(tests) if tests else None
    return (
        _finite(aggregate(scores, how)),
        _finite(spread(scores)),
        len(scores),
        config_status(statuses, planned),
        test_mean,
        low,
        high,
    )


def config_status(statuses: list[str], planned: int) -> str:
    """A configuration's status from its replicates' (see the module docstring)."""
    if "running" in statuses and "failed" not in statuses:
        return "running"
    ended = ended_as(statuses, planned)  # as the search judges it
    return ended if ended in ("completed", "failed") else f"pruned after {len(statuses)}"


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def _rank_keys() -> list[pl.Expr]:
    """Sort keys, ascending: chosen first, then completed with an aggregate, best first (module docstring)."""
    candidate = (pl.col("status") == "completed") & pl.col("aggregate").is_not_null()
    return [
        ~pl.col("chosen"),
        ~candidate,
        pl.col("aggregate").is_null(),
        -pl.col("aggregate"),
        pl.col("started_at").is_null(),
        pl.col("started_at"),
        pl.col("config_hash"),
    ]


def members(confs: Configurations, hashes: list[str]) -> dict[str, list[str]]:
    """Each configuration's replicate trial ids: a figure's ``meta.members``, by which the page's
    cross-filter links a selected configuration to its trials and a trial to its configuration."""
    by_hash = dict(confs.table.select("config_hash", "trial_ids").iter_rows())
    return {h: by_hash[h] for h in hashes}
