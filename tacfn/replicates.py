"""Replicates of one configuration: how a seed-aware search sums them up and races them.

A seed-aware search (``search.seeds`` / ``search.folds``) trains each configuration on every
(seed, fold) replicate. This module is the arithmetic every part of it shares (the searcher,
the pick, the dashboards), so each computes the same number:

- :func:`replicate_plan`: the replicates, in the order they run, seed-major;
- :func:`aggregate`: a configuration's value, the mean of its replicates' scores or a lower
  confidence bound (``lcb``, one-sided 95%: mean - t(0.95, n-1) * std / sqrt(n));
- :func:`interval95`: the two-sided 95% t interval of the mean, for the chosen configuration's test scores;
- :func:`clearly_worse`: the racing test, one-sided and paired on the replicates both have;
- :func:`ended_as`: how a configuration has ended, from its replicates' statuses.

A replicate that diverged counts as the configuration's failure on that seed: its score in the
aggregate is :data:`DIVERGED_SCORE` (0, the worst a validation score can be), so a configuration
that diverges on some seeds ranks below one that trains on all of them, and races as such.

Light on purpose (numpy and scipy only): the dashboards import it without torch or Ray.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import stats

Aggregate = Literal["mean", "lcb"]
RacingTest = Literal["t", "wilcoxon", "none"]
AGGREGATES: tuple[str, ...] = ("mean", "lcb")
DIVERGED_SCORE = 0.0
LCB_LEVEL = 0.95  # one-sided


def replicate_plan(seeds: Sequence[int], folds: Sequence[int]) -> list[tuple[int, int]]:
    """The (seed, fold) replicates of every configuration; a replicate's index is its place here."""
    return [(seed, fold) for seed in seeds for fold in folds]


def aggregate(scores: Sequence[float], how: Aggregate = "mean") -> float:
    """The value of a configuration with these replicate ``scores`` (NaN for none).

    ``lcb`` of one score is that score: a partial aggregate (a configuration stopped after its
    first replicate) has no spread to discount.
    """
    values = np.asarray(scores, dtype=float)
    if values.size == 0:
        return math.nan
    mean = float(values.mean())
    if how == "mean" or values.size == 1:
        return mean
    sem = float(values.std(ddof=1)) / math.sqrt(values.size)
    return mean - float(stats.t.ppf(LCB_LEVEL, values.size - 1)) * sem


def spread(scores: Sequence[float]) -> float:
    """The sample standard deviation of the scores (0 for one, NaN for none)."""
    values = np.asarray(scores, dtype=float)
    if values.size == 0:
        return math.nan
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


def interval95(scores: Sequence[float]) -> tuple[float, float]:
    """The two-sided 95% t interval of the mean of ``scores`` (the mean twice for one score)."""
    values = np.asarray(scores, dtype=float)
    mean = float(values.mean())
    if values.size < 2:
        return mean, mean
    half = float(stats.t.ppf(0.975, values.size - 1)) * float(values.std(ddof=1)) / math.sqrt(values.size)
    return mean - half, mean + half


def racing_p_value(candidate: Sequence[float], incumbent: Sequence[float], test: RacingTest = "t") -> float:
    """One-sided p-value that ``candidate`` scores lower than ``incumbent``, paired replicate by replicate.

    ``t``: the paired t-test (it can decide from 2 pairs); ``wilcoxon``: the exact signed-rank
    test, as Optuna's WilcoxonPruner (it cannot reach p < 0.125 with fewer than 4 pairs).
    Differences that are all equal have no spread to test against, so they decide nothing
    (p = 1): validation scores move in steps of one clip, and two seeds each one or two clips
    below the incumbent are not clearly worse.
    """
    diffs = np.asarray(candidate, dtype=float) - np.asarray(incumbent, dtype=float)
    if diffs.size < 2 or test == "none":
        return 1.0
    if np.all(diffs == diffs[0]):
        return 1.0
    if test == "wilcoxon":
        return float(stats.wilcoxon(diffs, alternative="less", zero_method="zsplit").pvalue)
    return float(stats.ttest_1samp(diffs, 0.0, alternative="less").pvalue)


def ended_as(statuses: Sequence[str], planned: int) -> Literal["completed", "failed", "pruned"] | None:
    """How a configuration whose ``planned`` replicates ended with ``statuses`` (so far) has ended;
    None while it may go on (racing may still stop it).

    A failed replicate (its process died for good) fails it: that says nothing of the
    configuration, and a rerun would not be the same replicate. One that ASHA stopped prunes
    it. With every replicate in, it is completed, a diverged one counting as a failure on its
    seed, unless every one diverged (failed).
    """
    if "failed" in statuses:
        return "failed"
    if len(statuses) >= planned and set(statuses) <= {"completed", "diverged"}:
        return "completed" if "completed" in statuses else "failed"
    return "pruned" if "pruned" in statuses else None


def clearly_worse(candidate: Sequence[float], incumbent: Sequence[float], *, level: float, test: RacingTest = "t") -> bool:
    """Whether the racing test finds ``candidate`` worse than ``incumbent`` at ``level``."""
    return racing_p_value(candidate, incumbent, test) < level
