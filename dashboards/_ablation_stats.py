"""Paired statistics for ablations: a variant against the baseline on the same (seed, fold) pairs.

The paired test is Student's paired t-test (:func:`scipy.stats.ttest_rel`), not the Wilcoxon
signed-rank test. Ablations run few pairs (3 seeds x 2 folds is typical), and the exact
two-sided Wilcoxon test cannot reach p < 0.05 below 6 pairs (its smallest p-value is
2 / 2**n, 0.0625 at n = 5), so it would call every small ablation inconclusive whatever the
effect. The difference of two accuracies over a test fold of hundreds of clips is close to
normal, which is what the t-test assumes; the bootstrap interval, which assumes nothing
about the shape, is reported beside it, and a verdict needs both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8
MIN_PAIRS = 5
N_RESAMPLES = 10_000
CONFIDENCE = 0.95


class PairedComparison(NamedTuple):
    """A variant against the baseline over ``n`` paired runs; differences are variant - baseline."""

    n: int
    mean_diff: float
    std_diff: float  # sample standard deviation (ddof=1) of the differences; nan below 2 pairs
    ci_low: float  # 95% percentile bootstrap interval of the mean difference
    ci_high: float
    prob_improvement: float  # fraction of bootstrap resampled mean differences that are > 0
    p_value: float  # two-sided paired t-test; nan below 2 pairs


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
    diffs = np.asarray(diffs, dtype=float)
    if diffs.size == 0:
        raise ValueError("`diffs` must hold at least one difference, but got none")
    if not 0 < confidence < 1:
        raise ValueError(f"`0 < confidence < 1` must hold, but got confidence={confidence}")
    result = stats.bootstrap(
        (diffs,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
        method="percentile", rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return float(interval.low), float(interval.high), float(np.mean(result.bootstrap_distribution > 0))


def paired_comparison(
    baseline: Sequence[float] | np.ndarray,
    variant: Sequence[float] | np.ndarray,
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
    n = baseline.size
    if n == 0:
        nan = float("nan")
        return PairedComparison(0, nan, nan, nan, nan, nan, nan)
    diffs = variant - baseline
    mean = float(diffs.mean())
    if n == 1:  # a bootstrap of one difference is that difference: no interval, no share
        nan = float("nan")
        return PairedComparison(1, mean, nan, nan, nan, nan, nan)
    std = float(diffs.std(ddof=1))
    low, high, prob = bootstrap_mean(diffs, n_resamples=n_resamples, seed=seed)
    return PairedComparison(n, mean, std, low, high, prob, _paired_t_pvalue(baseline, variant, std, mean))


def _paired_t_pvalue(baseline: np.ndarray, variant: np.ndarray, std: float, mean: float) -> float:
    """Two-sided paired t-test p-value; with identical differences, 0 (if not all zero) or 1."""
    if baseline.size < 2:
        return float("nan")
    if std == 0:  # scipy divides by zero here
        return 0.0 if mean != 0 else 1.0
    return float(stats.ttest_rel(variant, baseline).pvalue)


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


def pairs_needed(effect: float, std: float, *, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Pairs a two-sided paired test needs to detect ``effect`` (normal approximation).

    ``n = ((z[1 - alpha/2] + z[power]) * std / effect) ** 2``, rounded up; None when there is
    no observed effect (or no spread estimate) to size a rerun on.
    """
    if not (math.isfinite(effect) and math.isfinite(std)) or effect == 0:
        return None
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return max(2, math.ceil((z * std / effect) ** 2))


def verdict(
    comparison: PairedComparison, p_holm: float, *, alpha: float = ALPHA, min_pairs: int = MIN_PAIRS
) -> tuple[str, str]:
    """``("better" | "worse" | "inconclusive", reason)``.

    Better or worse needs at least ``min_pairs`` pairs, a bootstrap interval that excludes 0
    and a Holm-adjusted p-value below ``alpha``; otherwise the reason says what failed and
    about how many pairs would settle it.
    """
    c = comparison
    if c.n == 0:
        return "inconclusive", "no (seed, fold) pair ran for both the variant and the baseline"
    failed = []
    if c.n < min_pairs:
        failed.append(f"only {c.n} pair{'s' if c.n > 1 else ''} (at least {min_pairs} needed)")
    if not math.isfinite(c.ci_low):
        failed.append("no 95% interval from a single pair")
    elif c.ci_low <= 0 <= c.ci_high:
        failed.append("the 95% interval crosses 0")
    if math.isfinite(p_holm) and not p_holm < alpha:
        failed.append(f"Holm-adjusted p = {p_holm:.3g} is not below {alpha}")
    elif not math.isfinite(p_holm) and c.n > 1:
        failed.append("no Holm-adjusted p-value")
    if not failed:
        return ("better" if c.mean_diff > 0 else "worse"), f"{c.n} pairs, Holm-adjusted p = {p_holm:.3g}"
    needed = pairs_needed(c.mean_diff, c.std_diff, alpha=alpha)
    if not math.isfinite(c.std_diff):
        size = "at least 2 pairs are needed to estimate the spread"
    elif needed is None:
        size = "no difference observed to size a rerun on"
    else:
        size = (
            f"about {max(needed, min_pairs)} pairs would detect a difference of {c.mean_diff:+.3f} "
            f"(normal approximation, {POWER:.0%} power)"
        )
    return "inconclusive", "; ".join(failed) + "; " + size
