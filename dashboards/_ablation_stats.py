"""Paired statistics for ablations: a variant against the baseline on the same (seed, fold) pairs.

The paired test is an exact sign-flip permutation test of the mean difference
(:func:`scipy.stats.permutation_test`, ``permutation_type="samples"``), not Student's t-test.
Measured ablations are often bimodal (a method learns on some seeds and not on others: +0.3
on two of five seeds, 0 on the rest), which breaks the t-test's normal differences. Under
the null hypothesis each difference is as likely to have either sign, so the test compares
the observed mean with the means of all 2**n sign patterns: it assumes nothing about the
shape, handles ties and zero differences, and tests the same statistic as the bootstrap
interval. Its price is a resolution limit: the smallest two-sided p-value is 2 / 2**n
(0.0625 at n = 5), so at least 6 pairs are needed to reach p < 0.05, and more after Holm's
correction over several variants; :func:`verdict` says so when that is what failed.

:func:`pairs_needed` sizes a rerun by resampling the observed differences and running the
same test on each resample, not from a normal formula, and :func:`describe_differences`
puts the shape of the differences (wins, losses and ties) in one plain line.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

ALPHA = 0.05
POWER = 0.8
MIN_PAIRS = 6  # the first n whose smallest two-sided sign-flip p-value, 2 / 2**n, is below 0.05
N_RESAMPLES = 10_000  # bootstrap resamples, and sign patterns of the test (all 2**n up to n = 13)
CONFIDENCE = 0.95
# pairs_needed: candidate numbers of pairs, resamples of the differences per candidate, and
# sign patterns per resample (all 2**n up to n = 11, a seeded random 2,048 beyond).
PAIRS_GRID = (6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 25, 30, 35, 40, 50, 60, 70, 80, 100, 120, 150, 200)
POWER_RESAMPLES = 400
POWER_FLIPS = 2048
# describe_differences: a difference within TIE of 0 (in the metric's units) is a tie.
TIE = 0.02


class PairedComparison(NamedTuple):
    """A variant against the baseline over ``n`` paired runs; differences are variant - baseline."""

    n: int
    mean_diff: float
    std_diff: float  # sample standard deviation (ddof=1) of the differences; nan below 2 pairs
    ci_low: float  # 95% percentile bootstrap interval of the mean difference
    ci_high: float
    prob_improvement: float  # fraction of bootstrap resampled mean differences that are > 0
    p_value: float  # two-sided sign-flip permutation test of the mean difference; nan below 2 pairs
    diffs: tuple[float, ...]  # the paired differences, in the order given


def bootstrap_mean(
    diffs: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile bootstrap of the mean: ``(low, high, fraction of resampled means > 0)``.

    :func:`scipy.stats.bootstrap` resamples the differences with a seeded
    :class:`numpy.random.Generator`, so the same data always give the same interval. The
    percentile method, not scipy's default BCa: BCa's jackknife is undefined for the few
    identical differences small ablations often produce.
    """
    diffs = _nonempty(diffs)
    if not 0 < confidence < 1:
        raise ValueError(f"`0 < confidence < 1` must hold, but got confidence={confidence}")
    result = stats.bootstrap(
        (diffs,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
        method="percentile", rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return float(interval.low), float(interval.high), float(np.mean(result.bootstrap_distribution > 0))


def sign_flip_pvalue(diffs: Sequence[float] | np.ndarray, *, n_resamples: int = N_RESAMPLES, seed: int = 0) -> float:
    """Two-sided paired permutation test of the mean difference (the null: each sign equally likely).

    Exact, over all 2**n sign patterns, when 2**n <= ``n_resamples``; otherwise over
    ``n_resamples`` seeded random patterns. A zero difference keeps its value under every
    sign, and all-zero differences give p = 1.
    """
    result = stats.permutation_test(
        (_nonempty(diffs),), np.mean, permutation_type="samples", vectorized=True,
        n_resamples=n_resamples, alternative="two-sided", rng=np.random.default_rng(seed),
    )
    return float(result.pvalue)


def paired_comparison(
    baseline: ArrayLike,
    variant: ArrayLike,
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> PairedComparison:
    """Compare paired scores (``baseline[i]`` and ``variant[i]`` share a seed and fold)."""
    baseline, variant = np.asarray(baseline, dtype=float), np.asarray(variant, dtype=float)
    if baseline.shape != variant.shape or baseline.ndim != 1:
        raise ValueError(
            "`baseline` and `variant` must be 1-D and of equal length, "
            f"but got shapes {baseline.shape} and {variant.shape}"
        )
    nan = float("nan")
    diffs = variant - baseline
    if diffs.size < 2:  # one difference: no spread, no interval, no test
        mean = float(diffs[0]) if diffs.size else nan
        return PairedComparison(diffs.size, mean, nan, nan, nan, nan, nan, tuple(diffs.tolist()))
    low, high, prob = bootstrap_mean(diffs, n_resamples=n_resamples, seed=seed)
    return PairedComparison(
        diffs.size, float(diffs.mean()), float(diffs.std(ddof=1)), low, high, prob,
        sign_flip_pvalue(diffs, n_resamples=n_resamples, seed=seed), tuple(diffs.tolist()),
    )


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given; nan stays nan and is not counted).

    The i-th smallest of m p-values is multiplied by (m - i), i from 0, then made monotone
    with a running maximum and capped at 1. Controls the family-wise error rate.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    order = present[np.argsort(p[present], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (order.size - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def fewest_pairs(comparisons: int = 1, *, alpha: float = ALPHA) -> int:
    """The fewest pairs at which some outcome can pass Holm's correction over ``comparisons``
    tests: the smallest p-value times their number, ``2 / 2**n * comparisons``, is below ``alpha``."""
    if comparisons < 1:
        raise ValueError(f"`comparisons >= 1` must hold, but got comparisons={comparisons}")
    return next(n for n in itertools.count(1) if 2 / 2**n * comparisons < alpha)


def pairs_needed(
    diffs: Sequence[float] | np.ndarray,
    *,
    comparisons: int = 1,
    alpha: float = ALPHA,
    power: float = POWER,
    n_resamples: int = POWER_RESAMPLES,
    seed: int = 0,
) -> int | None:
    """Pairs at which the test finds differences like ``diffs`` with probability ``power``.

    For a candidate n of :data:`PAIRS_GRID`, ``n_resamples`` seeded samples of n differences
    are drawn with replacement from ``diffs``, and each is tested with the sign-flip test
    (over all 2**n sign patterns up to n = 11, :data:`POWER_FLIPS` random ones beyond) at
    the level ``alpha / comparisons``, a conservative stand-in for Holm's correction (the
    smallest of ``comparisons`` p-values is multiplied by their number); the power is the
    share that is significant. Returns the smallest candidate whose power reaches ``power``
    (searched by bisection, as power grows with n), or None when none up to the grid's end
    does (or every difference is 0).
    """
    diffs = _nonempty(diffs)
    if comparisons < 1:
        raise ValueError(f"`comparisons >= 1` must hold, but got comparisons={comparisons}")
    level = alpha / comparisons
    if not diffs.any():
        return None

    def reaches(n: int) -> bool:
        rng = np.random.default_rng([seed, n])  # a candidate's power is the same whatever the search visits
        samples = rng.choice(diffs, size=(n_resamples, n))
        return float(np.mean(_sign_flip_pvalues(samples, POWER_FLIPS, rng) < level)) >= power

    index = bisect.bisect_left(PAIRS_GRID, True, key=reaches)  # the first candidate that reaches
    return PAIRS_GRID[index] if index < len(PAIRS_GRID) else None


def verdict(
    comparison: PairedComparison,
    p_holm: float,
    *,
    comparisons: int = 1,
    alpha: float = ALPHA,
    min_pairs: int = MIN_PAIRS,
) -> tuple[str, str]:
    """``("better" | "worse" | "inconclusive", reason)``; ``comparisons`` is the number of
    p-values Holm's correction ran over.

    Better or worse needs at least ``min_pairs`` pairs, a bootstrap interval that excludes 0
    and a Holm-adjusted p-value below ``alpha``; otherwise the reason says what failed, first
    of all when no outcome of this many pairs could pass the correction, and about how many
    pairs would settle it (:func:`pairs_needed`).
    """
    c = comparison
    if c.n == 0:
        return "inconclusive", "no (seed, fold) pair ran for both the variant and the baseline"
    failed = []
    fewest = fewest_pairs(comparisons, alpha=alpha)
    resolvable = c.n >= fewest
    if not resolvable:
        after = f" after Holm over {comparisons} comparisons" if comparisons > 1 else ""
        failed.append(
            f"with {c.n} pair{'s' if c.n > 1 else ''} no outcome can reach p < {alpha:g}{after}; "
            f"at least {fewest} pairs are needed"
        )
    elif c.n < min_pairs:
        failed.append(f"only {c.n} pairs (at least {min_pairs} needed)")
    if not math.isfinite(c.ci_low):
        failed.append("no 95% interval from a single pair")
    elif c.ci_low <= 0 <= c.ci_high:
        failed.append("the 95% interval crosses 0")
    if resolvable and not math.isfinite(p_holm):
        failed.append("no Holm-adjusted p-value")
    elif resolvable and not p_holm < alpha:
        failed.append(f"Holm-adjusted p = {p_holm:.3g} is not below {alpha:g}")
    if not failed:
        return ("better" if c.mean_diff > 0 else "worse"), f"{c.n} pairs, Holm-adjusted p = {p_holm:.3g}"
    return "inconclusive", "; ".join([*failed, _rerun_size(c, comparisons, alpha)])


def _rerun_size(c: PairedComparison, comparisons: int, alpha: float) -> str:
    if c.n < 2:
        return "at least 2 differences are needed to resample"
    needed = pairs_needed(c.diffs, comparisons=comparisons, alpha=alpha)
    if needed is not None:
        return f"about {needed} pairs would detect differences like these with {POWER:.0%} power (resampling the {c.n} observed)"
    if not any(c.diffs):
        return "every difference is 0: nothing to size a rerun on"
    return f"no n up to {PAIRS_GRID[-1]} reaches {POWER:.0%} power with differences like these"


def _sign_flip_pvalues(samples: np.ndarray, n_flips: int, rng: np.random.Generator) -> np.ndarray:
    """:func:`sign_flip_pvalue` of each row of ``samples`` at once, computed as scipy does.

    :func:`scipy.stats.permutation_test` on a batch of rows builds every sign-flipped copy of
    the batch (rows x patterns x n values): 4.4 s for 400 rows of 13 at n_resamples=10,000, and
    0.4-1 s for 50-200 values with only 1,000 patterns. Here the null means of all rows are one
    matrix product with the sign patterns (shared by the rows), compared with the observed
    mean under scipy's tolerance and with its +1 correction for random patterns.
    """
    n = samples.shape[1]
    exact = 2**n <= n_flips
    if exact:
        signs = 1.0 - 2.0 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
    else:
        signs = rng.choice([-1.0, 1.0], size=(n_flips, n))
    null = samples @ signs.T / n
    observed = samples.mean(axis=1, keepdims=True)
    gamma = np.abs(100 * np.finfo(float).eps * observed)
    adjustment = 0 if exact else 1
    less = np.count_nonzero(null <= observed + gamma, axis=1) + adjustment
    greater = np.count_nonzero(null >= observed - gamma, axis=1) + adjustment
    return np.minimum(1.0, 2 * np.minimum(less, greater) / (len(signs) + adjustment))


def describe_differences(diffs: Sequence[float] | np.ndarray, *, tie: float = TIE) -> str:
    """The differences in one plain line: in how many pairs the variant won, lost or tied, and by how much.

    ``won in 2 of 5 pairs (by 0.280 to 0.310), tied (|diff| <= 0.02) in 3`` shows a bimodal
    result that its mean, near +0.12, hides; ``won in 9 of 10 pairs (by 0.010 to 0.050), lost in 1
    (by 0.300)`` a lopsided one.
    """
    diffs = _nonempty(diffs)
    won, lost = diffs[diffs > tie], -diffs[diffs < -tie]
    groups = [("won", won), ("lost", lost), (f"tied (|diff| <= {tie:g})", diffs[np.abs(diffs) <= tie])]
    parts: list[str] = []
    for what, sizes in groups:
        if not sizes.size:
            continue
        of = "" if parts else f" of {diffs.size} pair{'s' if diffs.size > 1 else ''}"
        low, high = f"{sizes.min():.3f}", f"{sizes.max():.3f}"
        by = "" if what.startswith("tied") else f" (by {low})" if low == high else f" (by {low} to {high})"
        parts.append(f"{what} in {sizes.size}{of}{by}")
    return ", ".join(parts)


def _nonempty(diffs: Sequence[float] | np.ndarray) -> np.ndarray:
    diffs = np.asarray(diffs, dtype=float)
    if diffs.size == 0:
        raise ValueError("`diffs` must hold at least one difference, but got none")
    return diffs
