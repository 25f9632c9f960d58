"""Ablation statistics: hand-computed cases, scipy cross-checks, and planted effects in a real store."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from _stores import write_ablation_store, write_search_store
from scipy import stats

import dashboards
from dashboards._ablation import _get_ablation_info
from dashboards._ablation_stats import PairedComparison


@pytest.fixture(scope="module")
def ablation_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ablation_store(tmp_path_factory.mktemp("ablation") / "fusion_ablation")


@pytest.fixture(scope="module")
def ablation_table(ablation_dir: Path) -> pl.DataFrame:
    return dashboards.ablation_table(dashboards.load_experiment(ablation_dir))


def _row(table: pl.DataFrame, variant: str) -> dict:
    return table.filter(pl.col("variant") == variant).to_dicts()[0]


# --- pure statistics ---------------------------------------------------------------------------


def test_paired_comparison_recovers_a_known_difference() -> None:
    baseline = np.array([0.60, 0.62, 0.58, 0.61, 0.59, 0.63])
    diffs = np.array([0.05, 0.04, 0.06, 0.05, 0.05, 0.05])
    c = dashboards.paired_comparison(baseline, baseline + diffs)
    assert c.n == 6
    assert c.mean_diff == pytest.approx(0.05)
    assert c.std_diff == pytest.approx(math.sqrt(0.0002 / 5))  # deviations 0, -.01, .01, 0, 0, 0
    t = 0.05 / (math.sqrt(0.0002 / 5) / math.sqrt(6))
    assert c.p_value == pytest.approx(2 * stats.t.sf(t, df=5))
    assert c.p_value == pytest.approx(stats.ttest_rel(baseline + diffs, baseline).pvalue)
    assert 0.04 <= c.ci_low < 0.05 < c.ci_high <= 0.06
    assert c.prob_improvement == 1.0


def test_bootstrap_of_two_opposite_differences_matches_its_exact_distribution() -> None:
    # Resampled means of [1, -1] are -1, 0, 1 with probability 1/4, 1/2, 1/4.
    low, high, positive = dashboards.bootstrap_mean([1.0, -1.0], seed=3)
    assert (low, high) == (-1.0, 1.0)
    assert positive == pytest.approx(0.25, abs=0.02)
    assert dashboards.bootstrap_mean([0.05] * 5) == (pytest.approx(0.05), pytest.approx(0.05), 1.0)


def test_bootstrap_interval_agrees_with_scipy_percentile_bootstrap() -> None:
    diffs = np.random.default_rng(7).normal(0.02, 0.03, size=12)
    low, high, _ = dashboards.bootstrap_mean(diffs, seed=0)
    ref = stats.bootstrap((diffs,), np.mean, n_resamples=10_000, method="percentile", rng=np.random.default_rng(1))
    ref = ref.confidence_interval
    assert low == pytest.approx(ref.low, abs=0.003) and high == pytest.approx(ref.high, abs=0.003)
    assert dashboards.bootstrap_mean(diffs, seed=0) == dashboards.bootstrap_mean(diffs, seed=0)  # seeded


def test_bootstrap_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one difference"):
        dashboards.bootstrap_mean([])
    with pytest.raises(ValueError, match=r"`0 < confidence < 1` must hold, but got confidence=1.5"):
        dashboards.bootstrap_mean([0.1], confidence=1.5)
    with pytest.raises(ValueError, match="equal length"):
        dashboards.paired_comparison([0.1, 0.2], [0.1])


def test_holm_adjusts_hand_computed_cases() -> None:
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06.
    assert dashboards.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = dashboards.holm([0.02, float("nan"), 0.04])  # nan is not counted: m = 2
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)
    assert dashboards.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])
    assert dashboards.holm([]).size == 0


def test_pairs_needed_uses_the_normal_approximation() -> None:
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert dashboards.pairs_needed(0.01, 0.02) == math.ceil((z * 2) ** 2) == 32
    assert dashboards.pairs_needed(-0.01, 0.02) == 32
    assert dashboards.pairs_needed(0.0, 0.02) is None and dashboards.pairs_needed(0.01, float("nan")) is None


def test_verdict_needs_five_pairs_an_interval_clear_of_zero_and_holm() -> None:
    clear = PairedComparison(6, 0.05, 0.01, 0.04, 0.06, 1.0, 1e-4)
    assert dashboards.verdict(clear, 3e-4) == ("better", "6 pairs, Holm-adjusted p = 0.0003")
    worse = clear._replace(mean_diff=-0.05, ci_low=-0.06, ci_high=-0.04, prob_improvement=0.0)
    assert dashboards.verdict(worse, 3e-4)[0] == "worse"
    small = clear._replace(n=4)
    verdict, reason = dashboards.verdict(small, 3e-4)
    assert verdict == "inconclusive" and "only 4 pairs (at least 5 needed)" in reason and "about 5 pairs" in reason
    crossing = PairedComparison(6, 0.002, 0.02, -0.01, 0.015, 0.6, 0.8)
    verdict, reason = dashboards.verdict(crossing, 0.8)
    assert verdict == "inconclusive" and "the 95% interval crosses 0" in reason
    assert f"about {dashboards.pairs_needed(0.002, 0.02)} pairs would detect a difference of +0.002" in reason
    verdict, reason = dashboards.verdict(clear, 0.09)  # significant alone, not after Holm
    assert verdict == "inconclusive" and "Holm-adjusted p = 0.09 is not below 0.05" in reason


# --- the ablation table from a store -----------------------------------------------------------


def test_ablation_table_recovers_the_planted_effects(ablation_table: pl.DataFrame) -> None:
    assert ablation_table["variant"].to_list() == ["tacfn", "no_selection", "modality_dropout", "late_average"]
    base = _row(ablation_table, "tacfn")
    assert base["verdict"] == "baseline" and base["n"] == 6
    better = _row(ablation_table, "modality_dropout")
    assert better["verdict"] == "better" and better["diff"] == pytest.approx(0.05, abs=0.01)
    assert better["ci_low"] > 0 and better["prob_improvement"] == 1.0 and better["n"] == 6
    worse = _row(ablation_table, "late_average")
    assert worse["verdict"] == "worse" and worse["diff"] == pytest.approx(-0.05, abs=0.01)
    same = _row(ablation_table, "no_selection")
    assert same["verdict"] == "inconclusive" and same["ci_low"] < 0 < same["ci_high"]
    assert "pairs would detect" in same["reason"]
    assert all(r["flags"] == "" for r in ablation_table.to_dicts())


def test_ablation_table_applies_holm_across_the_variants(ablation_table: pl.DataFrame) -> None:
    variants = ablation_table.filter(pl.col("verdict") != "baseline")
    assert variants["p_holm"].to_list() == pytest.approx(list(dashboards.holm(variants["p_value"].to_list())))
    assert (variants["p_holm"] >= variants["p_value"]).all()


def test_ablation_means_are_over_the_paired_runs(ablation_dir: Path) -> None:
    exp = dashboards.load_experiment(ablation_dir)
    info = _get_ablation_info(exp)
    runs = exp.trials.filter(pl.col("variant").is_in(["tacfn", "modality_dropout"]))
    pivot = runs.pivot("variant", index=["seed", "fold"], values="test_score").sort("seed", "fold")
    row = _row(info.table, "modality_dropout")
    assert row["mean"] == pytest.approx(pivot["modality_dropout"].mean())
    assert row["baseline_mean"] == pytest.approx(pivot["tacfn"].mean())
    assert row["diff"] == pytest.approx((pivot["modality_dropout"] - pivot["tacfn"]).mean())
    assert info.metric == "test_score" and info.baseline == "tacfn"


def test_unpaired_runs_are_left_out_and_flagged(tmp_path: Path) -> None:
    root = write_ablation_store(tmp_path / "abl", skip=[("late_average", 0, 1), ("tacfn", 2, 0)])
    table = dashboards.ablation_table(dashboards.load_experiment(root))
    late = _row(table, "late_average")
    assert late["n"] == 4 and late["verdict"] == "inconclusive" and "only 4 pairs" in late["reason"]
    assert late["flags"] == "unpaired: 1 (seed, fold) only in the variant, 1 only in the baseline (left out)"
    assert _row(table, "modality_dropout")["flags"].startswith("unpaired: 1 (seed, fold) only in the variant, 0 only")


def test_unequal_budgets_are_flagged(tmp_path: Path) -> None:
    root = write_ablation_store(tmp_path / "abl", seeds=(0, 1, 2, 3, 4), folds=(0,), budgets={"no_selection": 8})
    table = dashboards.ablation_table(dashboards.load_experiment(root))
    assert _row(table, "no_selection")["flags"] == "unequal budgets: 5 of 5 pairs differ in epochs run or train.epochs"
    assert _row(table, "modality_dropout")["flags"] == ""


def test_too_few_pairs_are_inconclusive_whatever_the_effect(tmp_path: Path) -> None:
    root = write_ablation_store(tmp_path / "abl", seeds=(0, 1), folds=(0,))
    table = dashboards.ablation_table(dashboards.load_experiment(root))
    assert set(table["verdict"]) == {"baseline", "inconclusive"}
    assert "only 2 pairs (at least 5 needed)" in _row(table, "modality_dropout")["reason"]


def test_one_pair_gives_a_difference_but_no_interval(tmp_path: Path) -> None:
    c = dashboards.paired_comparison([0.50], [0.55])
    assert c.n == 1 and c.mean_diff == pytest.approx(0.05)
    assert all(math.isnan(v) for v in (c.std_diff, c.ci_low, c.ci_high, c.prob_improvement, c.p_value))
    verdict, reason = dashboards.verdict(c, float("nan"))
    assert verdict == "inconclusive" and "no 95% interval from a single pair" in reason
    root = write_ablation_store(tmp_path / "abl", seeds=(0,), folds=(0,))
    exp = dashboards.load_experiment(root)
    row = _row(dashboards.ablation_table(exp), "modality_dropout")
    assert math.isnan(row["ci_low"]) and math.isnan(row["prob_improvement"])
    cells = [str(v) for column in dashboards.plot_ablation_table(exp).data[0].cells.values for v in column]
    assert not any("nan" in v for v in cells) and "+0.0" in " ".join(cells)


def test_ablation_views_are_none_for_a_search_and_metric_is_checked(tmp_path: Path) -> None:
    search = dashboards.load_experiment(write_search_store(tmp_path / "s", trials=6))
    assert dashboards.ablation_table(search) is None and dashboards.plot_ablation_forest(search) is None
    ablation = dashboards.load_experiment(write_ablation_store(tmp_path / "a", seeds=(0,), folds=(0,)))
    with pytest.raises(ValueError, match="`metric` must be a column of trials.parquet, but got 'accuracy'"):
        dashboards.ablation_table(ablation, metric="accuracy")
    assert _get_ablation_info(ablation, "val_score").metric == "val_score"
