"""Ablation plans: validation, and paired runs on a real local Ray runtime."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from _drivers import wait_for_trials
from tacfn.errors import ConfigError
from tacfn.search import load_plan, parse_plan
from tacfn.store import ExperimentStore

pytestmark = pytest.mark.timeout(600)


def _plan(data: Path, tmp: Path) -> dict:
    return {
        "name": "abl",
        "base": {"model": {"preset": "lite", "backbone": "frozen"}, "data": {"path": str(data), "cache_dir": str(tmp / "cache")}, "train": {"epochs": 2, "batch_size": 8}},
        "baseline": "tacfn",
        "variants": {"tacfn": {}, "no_cross_modal": {"model.fusion.name": "concat"}, "no_residual": {"model.fusion.residual": False}},
        "seeds": [0, 1],
        "folds": [0],
        "concurrency": 2,
    }


@pytest.fixture(scope="module")
def ablated(prepared_lite: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The tiny plan run once by `tacfn ablate`: its experiment folder and what it printed."""
    tmp = tmp_path_factory.mktemp("ablate")
    plan = tmp / "plan.yaml"
    plan.write_text(yaml.safe_dump(_plan(prepared_lite, tmp)))
    out = tmp / "exp"
    proc = subprocess.run([sys.executable, "-m", "tacfn.cli", "ablate", str(plan), "--out", str(out)], capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc.stdout


@pytest.mark.slow
def test_every_variant_runs_on_the_same_seeds_and_folds(ablated: tuple[Path, str]):
    out, stdout = ablated
    # 2 pairs cannot pass Holm over the 2 variants, whatever the scores: the verdict says so
    assert stdout.count(" of 2 pairs") == 2 and stdout.count("inconclusive") == 2
    assert "with 2 pairs no outcome can reach p < 0.05 after Holm over 2 comparisons; at least 7 pairs are needed" in stdout
    store = ExperimentStore.open(out)
    assert store.kind == "ablation"
    trials = pl.from_arrow(store.trials())
    assert trials.height == 6 and set(trials["status"]) == {"completed"}
    pairs = trials.group_by("variant").agg(pl.struct("seed", "fold").sort_by("seed").alias("runs"))
    assert len({tuple((r["seed"], r["fold"]) for r in runs) for runs in pairs["runs"]}) == 1, "paired seeds and folds"
    assert trials.group_by("variant").agg(pl.col("config_hash").n_unique())["config_hash"].to_list() == [1, 1, 1]
    assert trials["config_hash"].n_unique() == 3
    blocks = trials.group_by("variant").agg(pl.col("config.model.fusion.name").first())
    assert dict(blocks.iter_rows()) == {"tacfn": "tacfn", "no_cross_modal": "concat", "no_residual": "tacfn"}
    assert trials["test_score"].null_count() == 0
    assert {"test_missing_audio", "test_missing_video"} <= set(trials.columns)
    for column in ("num_parameters", "trainable_parameters", "test_ms_per_sample"):  # the comparison table's columns
        assert trials[column].null_count() == 0 and (trials[column] > 0).all(), column
    predictions = pl.from_arrow(store.predictions())
    assert predictions["trial_id"].n_unique() == 6


# The printed table's headers -> the page's (the page has two more: p (sign-flip), and pattern
# and why / flags, which the printout puts on lines of their own).
PRINTED_AS = {
    "variant": "variant",
    "n pairs": "n pairs",
    "mean ± std": "test_score mean ± std",
    "baseline": "baseline mean",
    "Δ [95% CI]": "Δ vs baseline [95% CI]",
    "P(Δ > 0)": "P(Δ > 0)",
    "p (Holm)": "p (Holm)",
    "verdict": "verdict",
}


@pytest.mark.slow
def test_ablate_prints_the_numbers_the_dashboard_shows(ablated: tuple[Path, str], tmp_path: Path):
    """What `tacfn ablate` prints is the ablation table of the page `tacfn dashboard` writes:
    the same variants, pairs, means, differences, intervals, verdicts, patterns and reasons."""
    out, stdout = ablated
    page = tmp_path / "d.html"
    proc = subprocess.run([sys.executable, "-m", "tacfn.cli", "dashboard", str(out), "--out", str(page)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = re.search(r"<script type='application/json' id='dashboard-data'>(.*?)</script>", page.read_text(), re.S)
    (figure,) = [f["figure"] for f in json.loads(data.group(1))["figures"] if f["id"] == "exp0-ablation-table"]
    table = figure["data"][0]
    shown = {header: [str(cell) for cell in cells] for header, cells in zip(table["header"]["values"], table["cells"]["values"])}
    assert shown["variant"] == ["tacfn", "no_cross_modal", "no_residual"]

    lines = stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("test_score per variant against baseline 'tacfn'"))
    header = lines[first + 1]
    columns = [(m.group(), m.start()) for m in re.finditer(r"\S+(?: \S+)*", header)]  # cells are 2+ spaces apart
    assert [name for name, _ in columns] == list(PRINTED_AS)
    bounds = [start for _, start in columns] + [None]
    printed: dict[str, list[str]] = {name: [] for name in PRINTED_AS}
    below: dict[str, list[str]] = {}  # a variant's lines under its row: pattern, why / flags
    for line in lines[first + 2 :]:
        if line.startswith("P(Δ > 0): "):
            break
        if line.startswith(" "):
            below[printed["variant"][-1]].append(line.strip())
            continue
        for (name, _), start, end in zip(columns, bounds, bounds[1:]):
            printed[name].append(line[start:end].strip())
        below[printed["variant"][-1]] = []
    for name, page_header in PRINTED_AS.items():
        assert printed[name] == shown[page_header], name
    assert below["tacfn"] == []
    for i, variant in enumerate(shown["variant"][1:], 1):
        assert below[variant] == [shown["pattern"][i], shown["why / flags"][i]]
    assert printed["n pairs"] == ["2", "2", "2"] and all(cell.count(".") == 3 for cell in printed["Δ [95% CI]"][1:])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"baseline": "nope"}, r"baseline 'nope' is not a variant"),
        ({"variants": {"tacfn": {}}}, r"at least one other variant"),
        ({"variants": {"tacfn": {}, "bad": {"model.fusion.name": "transfusion"}}}, r"variant bad: model: unknown fusion block"),
        ({"folds": [7]}, r"fold 7: data\.fold: protocol '6fold' has 6 folds \(0\.\.5\), but got fold=7"),
        ({"seeds": [1, 1]}, r"all distinct"),
        ({"colour": 1}, r"colour: unknown key"),
        ({"variants": {"tacfn": {}, "default_lr": {"train.lr": 0.001}}},
         r"variant 'default_lr' \{'train.lr': 0.001\} makes the same run as the baseline 'tacfn' \{\}"),
        ({"variants": {"tacfn": {}, "seeded": {"train.seed": 5}}}, r"variant 'seeded' .* same run as the baseline"),  # the plan's seeds rule
        ({"variants": {"tacfn": {}, "a": {"model.fusion.name": "concat"}, "b": {"model.fusion.name": "concat"}}},
         r"variant 'b' .* makes the same run as variant 'a'"),
    ],
)
def test_bad_plans_name_the_problem(tmp_path: Path, change, match):
    data = {**_plan(tmp_path, tmp_path), **change}
    with pytest.raises(ConfigError, match=match):
        parse_plan(data, "plan.yaml")


def test_shipped_plan_loads():
    """The shipped plans list the baseline as a variant with no overrides (or, in the demo's
    ground truth, with its own): that is the baseline itself, not a variant that repeats it."""
    plan = load_plan("ablation_fusion")
    assert plan.baseline == "tacfn" and plan.variants["tacfn"] == {} and {"no_cross_modal", "no_residual"} <= set(plan.variants)
    truth = load_plan("ablation_ground_truth")
    assert truth.baseline == "concat" and {"tacfn", "paper_pool", "audio_only", "video_only"} <= set(truth.variants)


def test_an_ablation_run_reports_its_sizes_and_test_latency(prepared_lite: Path, tmp_path: Path, monkeypatch):
    """What one (variant, seed, fold) reports for its trials.parquet row, without Ray: the
    parameter counts, the test scores and the per-sample test latency its run measured."""
    from tacfn.search import _ablation

    reports: list[dict] = []
    monkeypatch.setattr(_ablation.tune, "report", reports.append)
    plan = _plan(prepared_lite, tmp_path)
    run = {"variant": "no_cross_modal", "train.seed": 0, "data.fold": 0}
    _ablation.run_ablation_trial({"run": run}, base=plan["base"], variants=plan["variants"])
    final = reports[-1]
    assert final["finished"] and final["status"] == "completed"
    assert 0 < final["trainable_parameters"] < final["num_parameters"]  # frozen encoders: only fusion and head train
    summary = final["summary"]
    assert {"test_score", "test_missing_audio", "test_missing_video", "test_ms_per_sample"} <= set(summary)
    assert summary["test_ms_per_sample"] > 0


@pytest.mark.slow
def test_a_rerun_keeps_one_row_per_run(prepared_lite: Path, tmp_path: Path):
    """A run that fails is run again by the next `tacfn ablate`, whose record replaces the
    failed one's: one row per (variant, seed, fold)."""
    plan = tmp_path / "plan.yaml"
    data = {**_plan(prepared_lite, tmp_path), "variants": {"tacfn": {}, "no_data": {"data.path": str(tmp_path / "absent")}}, "seeds": [0]}
    data["base"]["train"]["epochs"] = 1
    plan.write_text(yaml.safe_dump(data))
    out = tmp_path / "exp"
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "tacfn.cli", "ablate", str(plan), "--out", str(out)], capture_output=True, text=True, timeout=500)
        assert proc.returncode == 0, proc.stderr[-2000:]
    store = ExperimentStore.open(out)
    trials = pl.from_arrow(store.trials())
    assert sorted(zip(trials["variant"], trials["status"])) == [("no_data", "failed"), ("tacfn", "completed")]
    assert store.experiment["dataset"]["planted_effects"] == ["audio", "video", "cross"]  # the fixture's tree, for the dashboard


@pytest.mark.slow
def test_ctrl_c_stops_the_plan_and_resume_finishes_it(prepared_lite: Path, tmp_path: Path):
    plan = tmp_path / "plan.yaml"
    data = {**_plan(prepared_lite, tmp_path), "variants": {"tacfn": {}, "no_cross_modal": {"model.fusion.name": "concat"}}, "concurrency": 1}
    data["base"]["train"]["epochs"] = 3
    plan.write_text(yaml.safe_dump(data))
    out = tmp_path / "exp"
    command = [sys.executable, "-m", "tacfn.cli", "ablate", str(plan), "--out", str(out)]
    with (tmp_path / "stdout").open("w") as stdout, (tmp_path / "stderr").open("w") as stderr:
        driver = subprocess.Popen(command, stdout=stdout, stderr=stderr, start_new_session=True)
    wait_for_trials(driver, out, 1)
    assert driver.poll() is None, "the plan finished before it could be interrupted"
    os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C signals the terminal's whole process group
    assert driver.wait(timeout=120) == 130
    assert (tmp_path / "stderr").read_text().splitlines()[-1] == f"tacfn: interrupted; add --resume to the same command to finish the plan in {out}"
    assert "ablation finished" not in (tmp_path / "stdout").read_text()

    proc = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trials = pl.from_arrow(ExperimentStore.open(out).trials())
    assert trials.height == 4 and set(trials["status"]) == {"completed"}
    assert trials.select("variant", "seed", "fold").n_unique() == 4
