"""Ablation statistics: hand-computed cases, scipy cross-checks, and planted effects in a real store."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from _stores import write_ablation_store, write_search_store
from scipy import stats

import dashboards
from tacfn.store import ExperimentStore
from dashboards._ablation import _get_ablation_info
from dashboards._ablation_stats import PairedComparison, _sign_flip_pvalues

BIMODAL = [0.3, 0.3, 0.0, 0.0, 0.0]  # learns on 2 of 5 seeds
UNIMODAL = [0.10, 0.11, 0.12, 0.13, 0.14]  # the same mean, +0.12, on every seed


@pytest.fixture(scope="module")
def ablation_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 5 seeds x 2 folds: 10 pairs, enough for p < 0.05 after Holm over the 3 variants
    return write_ablation_store(tmp_path_factory.mktemp("ablation") / "fusion_ablation", seeds=range(5))


@pytest.fixture(scope="module")
def ablation_table(ablation_dir: Path) -> pl.DataFrame:
    return dashboards.ablation_table(dashboards.load_experiment(ablation_dir))


def _row(table: pl.DataFrame, variant: str) -> dict:
    return table.filter(pl.col("variant") == variant).to_dicts()[0]


def _enumerated_pvalue(diffs: list[float]) -> float:
    """Share of all 2**n sign patterns whose |mean| is at least the observed |mean|."""
    observed = abs(np.mean(diffs))
    means = [abs(np.mean(np.multiply(signs, diffs))) for signs in itertools.product((1, -1), repeat=len(diffs))]
    return sum(m >= observed - 1e-12 for m in means) / len(means)


# --- pure statistics ---------------------------------------------------------------------------


def test_paired_comparison_recovers_a_known_difference() -> None:
    baseline = np.array([0.60, 0.62, 0.58, 0.61, 0.59, 0.63])
    diffs = np.array([0.05, 0.04, 0.06, 0.05, 0.05, 0.05])
    c = dashboards.paired_comparison(baseline, baseline + diffs)
    assert c.n == 6
    assert c.mean_diff == pytest.approx(0.05)
    assert c.std_diff == pytest.approx(math.sqrt(0.0002 / 5))  # deviations 0, -.01, .01, 0, 0, 0
    assert c.p_value == pytest.approx(2 / 2**6)  # only all-positive signs reach the observed mean
    assert c.diffs == pytest.approx(tuple(diffs))
    assert 0.04 <= c.ci_low < 0.05 < c.ci_high <= 0.06
    assert c.prob_improvement == 1.0


@pytest.mark.parametrize(
    "diffs",
    [
        [0.05, -0.02, 0.03, 0.01, -0.04, 0.06, 0.02],
        [0.3, 0.3, 0.0, 0.0, 0.0, 0.1],  # ties and zero differences
        [0.02, -0.02, 0.02, -0.02, 0.02],
        [0.0, 0.0, 0.0],
    ],
)
def test_sign_flip_pvalue_is_the_exact_enumeration(diffs: list[float]) -> None:
    assert dashboards.sign_flip_pvalue(diffs) == pytest.approx(_enumerated_pvalue(diffs))
    assert dashboards.sign_flip_pvalue(diffs) == dashboards.paired_comparison([0.5] * len(diffs), 0.5 + np.array(diffs)).p_value


def test_zero_differences_give_p_one_and_ties_keep_their_value_under_a_flip() -> None:
    c = dashboards.paired_comparison([0.6] * 6, [0.6] * 6)
    assert c.p_value == 1.0 and c.mean_diff == 0 and (c.ci_low, c.ci_high) == (0.0, 0.0)
    assert dashboards.sign_flip_pvalue([0.3, 0.3, 0, 0, 0]) == pytest.approx(0.5)  # 8 of 32 patterns per tail


def test_the_batched_test_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    for n in (2, 5, 8, 11):  # exact: identical p-values
        samples = rng.choice([0.3, 0.0, 0.1, -0.1, 0.02], size=(20, n))
        expected = [dashboards.sign_flip_pvalue(row) for row in samples]
        assert _sign_flip_pvalues(samples, 2048, rng).tolist() == expected
    samples = rng.normal(0.01, 0.03, size=(20, 30))  # random sign patterns: the same p-values up to noise
    expected = np.array([dashboards.sign_flip_pvalue(row) for row in samples])
    assert np.abs(_sign_flip_pvalues(samples, 20_000, rng) - expected).max() < 0.03


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
    with pytest.raises(ValueError, match="at least one difference"):
        dashboards.describe_differences([])
    with pytest.raises(ValueError, match="`comparisons >= 1` must hold, but got comparisons=0"):
        dashboards.pairs_needed([0.1, 0.2], comparisons=0)


def test_holm_adjusts_hand_computed_cases() -> None:
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06.
    assert dashboards.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = dashboards.holm([0.02, float("nan"), 0.04])  # nan is not counted: m = 2
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)
    assert dashboards.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])
    assert dashboards.holm([]).size == 0


def test_fewest_pairs_is_where_the_smallest_p_times_the_comparisons_passes() -> None:
    # 2 / 2**n * m < 0.05: n = 6 for one comparison (2/64 = 0.031), 8 for four (4 * 2/256 = 0.031)
    assert [dashboards.fewest_pairs(m) for m in (1, 2, 3, 4, 10)] == [6, 7, 7, 8, 9]
    assert 2 / 2**7 * 4 >= 0.05 > 2 / 2**8 * 4


def test_pairs_needed_resamples_the_differences() -> None:
    assert np.mean(BIMODAL) == pytest.approx(np.mean(UNIMODAL))
    unimodal = dashboards.pairs_needed(UNIMODAL)
    bimodal = dashboards.pairs_needed(BIMODAL)
    assert unimodal == 6  # every resample is all positive: 2/2**6 < 0.05
    assert bimodal is not None and bimodal > 2 * unimodal
    assert dashboards.pairs_needed(UNIMODAL, comparisons=4) == 8  # tested at 0.05 / 4
    assert dashboards.pairs_needed(BIMODAL, comparisons=4) > bimodal
    assert dashboards.pairs_needed(BIMODAL) == bimodal  # seeded
    assert dashboards.pairs_needed([0.0] * 5) is None
    assert dashboards.pairs_needed([0.05, -0.05, 0.02, -0.02, 0.01, -0.01]) is None  # symmetric around 0


def test_describe_differences_counts_wins_losses_and_ties() -> None:
    assert dashboards.describe_differences(BIMODAL) == "won in 2 of 5 pairs (by 0.300), tied (|diff| <= 0.02) in 3"
    bimodal = [0.31, 0.25, 0.28, 0.01, 0.0, -0.01, 0.0, 0.02, 0.0, 0.0]
    assert dashboards.describe_differences(bimodal) == (
        "won in 3 of 10 pairs (by 0.250 to 0.310), tied (|diff| <= 0.02) in 7"
    )
    lopsided = [0.01, 0.03, 0.05, 0.04, 0.03, 0.03, 0.04, 0.05, 0.03, -0.3]
    assert dashboards.describe_differences(lopsided) == (
        "won in 8 of 10 pairs (by 0.030 to 0.050), lost in 1 (by 0.300), tied (|diff| <= 0.02) in 1"
    )
    assert dashboards.describe_differences([0.0]) == "tied (|diff| <= 0.02) in 1 of 1 pair"
    assert dashboards.describe_differences([-0.05, -0.04], tie=0.1) == "tied (|diff| <= 0.1) in 2 of 2 pairs"


def test_verdict_needs_enough_pairs_an_interval_clear_of_zero_and_holm() -> None:
    diffs = (0.05, 0.04, 0.06, 0.05, 0.05, 0.05)
    clear = PairedComparison(6, 0.05, 0.006, 0.045, 0.055, 1.0, 2 / 2**6, diffs)
    assert dashboards.verdict(clear, 2 / 2**6) == ("better", "6 pairs, Holm-adjusted p = 0.0312")
    worse = clear._replace(mean_diff=-0.05, ci_low=-0.055, ci_high=-0.045, prob_improvement=0.0)
    assert dashboards.verdict(worse, 2 / 2**6)[0] == "worse"
    verdict, reason = dashboards.verdict(clear, 2 / 2**6, min_pairs=8)
    assert verdict == "inconclusive" and "only 6 pairs (at least 8 needed)" in reason
    crossing = PairedComparison(6, 0.01, 0.017, -0.003, 0.022, 0.9, 0.34, (0.03, -0.01, 0.02, -0.01, 0.02, 0.01))
    verdict, reason = dashboards.verdict(crossing, 0.34)
    assert verdict == "inconclusive" and "the 95% interval crosses 0" in reason
    assert "Holm-adjusted p = 0.34 is not below 0.05" in reason
    needed = dashboards.pairs_needed(crossing.diffs)
    assert needed is not None and f"about {needed} pairs would detect differences like these with 80% power" in reason
    ten = clear._replace(n=10, p_value=0.03, diffs=(0.1, -0.02, 0.08, 0.07, 0.1, -0.03, 0.09, 0.04, 0.02, 0.05))
    verdict, reason = dashboards.verdict(ten, 0.09, comparisons=3)  # significant alone, not after Holm
    assert verdict == "inconclusive" and "Holm-adjusted p = 0.09 is not below 0.05" in reason
    zeros = PairedComparison(6, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, (0.0,) * 6)
    assert dashboards.verdict(zeros, 1.0)[1].endswith("every difference is 0: nothing to size a rerun on")


def test_five_pairs_cannot_pass_holm_over_four_comparisons_and_say_so() -> None:
    c = dashboards.paired_comparison([0.6] * 5, [0.65, 0.66, 0.64, 0.65, 0.67])
    assert c.p_value == pytest.approx(0.0625)  # the smallest two-sided p with 5 pairs
    verdict, reason = dashboards.verdict(c, dashboards.holm([c.p_value, 0.5, 0.6, 0.7])[0], comparisons=4)
    assert verdict == "inconclusive"
    assert reason.startswith(
        "with 5 pairs no outcome can reach p < 0.05 after Holm over 4 comparisons; at least 8 pairs are needed"
    )
    assert "is not below" not in reason  # the resolution limit, not the data, is what failed
    assert "about 8 pairs would detect differences like these" in reason
    one = dashboards.verdict(c, 0.0625)[1]
    assert one.startswith("with 5 pairs no outcome can reach p < 0.05; at least 6 pairs are needed")


def test_eight_clear_pairs_pass_holm_over_four_and_a_planted_null_does_not() -> None:
    rng = np.random.default_rng(0)
    baseline = rng.uniform(0.55, 0.65, size=8)
    better = dashboards.paired_comparison(baseline, baseline + rng.uniform(0.03, 0.06, size=8))
    null_diffs = np.array([0.04, -0.04, 0.02, -0.02, 0.03, -0.03, 0.01, -0.01])  # symmetric around 0
    null = dashboards.paired_comparison(baseline, baseline + null_diffs)
    p_holm = dashboards.holm([better.p_value, null.p_value, 0.4, 0.8])
    assert better.p_value == pytest.approx(2 / 2**8) and p_holm[0] == pytest.approx(4 * 2 / 2**8)
    assert dashboards.verdict(better, p_holm[0], comparisons=4) == ("better", "8 pairs, Holm-adjusted p = 0.0312")
    assert null.p_value == pytest.approx(1.0)
    verdict, reason = dashboards.verdict(null, p_holm[1], comparisons=4)
    assert verdict == "inconclusive" and "the 95% interval crosses 0" in reason
    assert reason.endswith("no n up to 200 reaches 80% power with differences like these")


# --- the ablation table from a store -----------------------------------------------------------


def test_ablation_table_recovers_the_planted_effects(ablation_table: pl.DataFrame) -> None:
    assert ablation_table["variant"].to_list() == ["tacfn", "no_selection", "modality_dropout", "late_average"]
    base = _row(ablation_table, "tacfn")
    assert base["verdict"] == "baseline" and base["n"] == 10 and base["pattern"] == ""
    better = _row(ablation_table, "modality_dropout")
    assert better["verdict"] == "better" and better["diff"] == pytest.approx(0.05, abs=0.01)
    assert better["ci_low"] > 0 and better["prob_improvement"] == 1.0 and better["n"] == 10
    assert better["p_value"] == pytest.approx(2 / 2**10) and better["pattern"].startswith("won in 10 of 10 pairs (by 0.0")
    worse = _row(ablation_table, "late_average")
    assert worse["verdict"] == "worse" and worse["diff"] == pytest.approx(-0.05, abs=0.01)
    assert worse["pattern"].startswith("lost in 10 of 10 pairs")
    same = _row(ablation_table, "no_selection")
    assert same["verdict"] == "inconclusive" and same["ci_low"] < 0 < same["ci_high"]
    assert same["pattern"] == "tied (|diff| <= 0.02) in 10 of 10 pairs"
    assert "pairs would detect differences like these with 80% power (resampling the 10 observed)" in same["reason"]
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
    assert late["n"] == 4 and late["verdict"] == "inconclusive"
    assert late["reason"].startswith("with 4 pairs no outcome can reach p < 0.05 after Holm over 3 comparisons")
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
    reason = _row(table, "modality_dropout")["reason"]
    assert reason.startswith("with 2 pairs no outcome can reach p < 0.05 after Holm over 3 comparisons; at least 7")


def test_one_pair_gives_a_difference_but_no_interval(tmp_path: Path) -> None:
    c = dashboards.paired_comparison([0.50], [0.55])
    assert c.n == 1 and c.mean_diff == pytest.approx(0.05)
    assert all(math.isnan(v) for v in (c.std_diff, c.ci_low, c.ci_high, c.prob_improvement, c.p_value))
    assert c.diffs == pytest.approx((0.05,))
    verdict, reason = dashboards.verdict(c, float("nan"))
    assert verdict == "inconclusive" and "no 95% interval from a single pair" in reason
    assert reason.endswith("at least 2 differences are needed to resample")
    root = write_ablation_store(tmp_path / "abl", seeds=(0,), folds=(0,))
    exp = dashboards.load_experiment(root)
    row = _row(dashboards.ablation_table(exp), "modality_dropout")
    assert math.isnan(row["ci_low"]) and math.isnan(row["prob_improvement"])
    cells = [str(v) for column in dashboards.plot_ablation_table(exp).data[0].cells.values for v in column]
    assert not any("nan" in v for v in cells) and "+0.0" in " ".join(cells)
    assert "won in 1 of 1 pair (by 0.0" in " ".join(cells)  # the pattern column


def test_the_printed_table_is_the_pages_table(tmp_path: Path) -> None:
    """`tacfn ablate` and `tacfn demo` print format_ablation_table: the page's cells, aligned, with
    each variant's pattern and why / flags under its row (flags here: unpaired runs left out)."""
    root = write_ablation_store(tmp_path / "abl", skip=[("late_average", 0, 1), ("tacfn", 2, 0)])
    exp = dashboards.load_experiment(root)
    table = dashboards.plot_ablation_table(exp).data[0]
    shown = dict(zip(table.header.values, (list(map(str, c)) for c in table.cells.values)))
    text = dashboards.format_ablation_table(exp, indent="  ")
    title, header, *lines, legend = text.splitlines()
    assert title == "  test_score per variant against baseline 'tacfn', paired on (seed, fold):"
    assert header.split()[:3] == ["variant", "n", "pairs"] and legend.startswith("  P(Δ > 0): the share of 10,000")
    rows = [line for line in lines if not line.startswith("   ")]
    assert [row.split()[0] for row in rows] == shown["variant"] == ["tacfn", "no_selection", "modality_dropout", "late_average"]
    late = rows[3]
    for column in ("n pairs", "test_score mean ± std", "baseline mean", "Δ vs baseline [95% CI]", "P(Δ > 0)", "p (Holm)", "verdict"):
        assert shown[column][3] in late, column
    under = lines[lines.index(late) + 1 :]
    assert [line.strip() for line in under] == [shown["pattern"][3], shown["why / flags"][3]]
    assert "⚠ unpaired: 1 (seed, fold) only in the variant, 1 only in the baseline (left out)" in under[1]
    late_baseline = _row(dashboards.ablation_table(exp), "late_average")["baseline_mean"]  # over its own 4 pairs
    assert shown["baseline mean"] == ["", *shown["baseline mean"][1:3], f"{late_baseline:.3f}"]
    assert dashboards.format_ablation_table(dashboards.load_experiment(write_search_store(tmp_path / "s", trials=6))) is None
    failed = ExperimentStore.create(tmp_path / "none", "ablation", "none", {"baseline": "tacfn"})
    assert dashboards.format_ablation_table(dashboards.load_experiment(failed.root)) == "Ablation table: trials.parquet has no variant column (0 trials)"


def test_ablation_views_are_none_for_a_search_and_metric_is_checked(tmp_path: Path) -> None:
    search = dashboards.load_experiment(write_search_store(tmp_path / "s", trials=6))
    assert dashboards.ablation_table(search) is None and dashboards.plot_ablation_forest(search) is None
    ablation = dashboards.load_experiment(write_ablation_store(tmp_path / "a", seeds=(0,), folds=(0,)))
    with pytest.raises(ValueError, match="`metric` must be a column of trials.parquet, but got 'accuracy'"):
        dashboards.ablation_table(ablation, metric="accuracy")
    assert _get_ablation_info(ablation, "val_score").metric == "val_score"
