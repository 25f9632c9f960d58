"""Searches on a real local Ray runtime: Optuna + ASHA, the results store, resume after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import optuna
import polars as pl
import pytest
import yaml
from ray import tune

from _cluster import tune_results
from _drivers import wait_for_trials
from tacfn.search import load_space
from tacfn.store import ExperimentStore

pytestmark = pytest.mark.timeout(600)


def _space_file(tmp_path: Path, data: Path, *, trials: int, epochs: int = 3, name: str = "tiny", **search) -> Path:
    space = {
        "name": name,
        "base": {
            "model": {"preset": "lite", "backbone": "frozen"},
            "data": {"path": str(data), "cache_dir": str(tmp_path / "cache")},
            "train": {"epochs": epochs, "batch_size": 8},
        },
        "space": {
            "model.fusion.name": {"choice": ["tacfn", "concat", "late_average"]},
            "model.fusion.heads": {"choice": [2, 4]},
            "train.lr": {"float": [1.0e-4, 1.0e-2], "log": True},
        },
        "search": {"trials": trials, "concurrency": 2, "scheduler": "asha", "asha": {"grace_period": 1, "reduction_factor": 2}, "seed": 0, **search},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def _tacfn(*args: str) -> list[str]:
    return [sys.executable, "-m", "tacfn.cli", *args]


def test_search_with_optuna_and_asha_writes_the_store(prepared_lite: Path, tmp_path: Path):
    space = _space_file(tmp_path, prepared_lite, trials=6, checkpoint_interval_s=3600)
    out = tmp_path / "exp"
    proc = subprocess.run(_tacfn("search", str(space), "--out", str(out)), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "best trial" in proc.stdout and "(scored once)" in proc.stdout

    store = ExperimentStore.open(out)
    trials = pl.from_arrow(store.trials())
    assert trials.height == 6 and trials["trial_id"].n_unique() == 6
    assert set(trials["status"]) <= {"completed", "pruned"}
    assert "completed" in set(trials["status"])
    chosen = trials.filter(pl.col("chosen"))
    assert chosen.height == 1
    best_val = trials.filter(pl.col("status") == "completed")["val_score"].max()
    assert chosen["val_score"][0] == best_val
    assert trials.filter(~pl.col("chosen"))["test_score"].null_count() == 5, "only the chosen config is tested"
    assert 0.0 <= chosen["test_score"][0] <= 1.0
    epochs = pl.from_arrow(store.epochs())
    per_trial = epochs.group_by("trial_id").len()
    assert per_trial.height == 6
    for row in trials.iter_rows(named=True):
        n = per_trial.filter(pl.col("trial_id") == row["trial_id"])["len"][0]
        assert n == row["epochs_run"]
        assert (row["status"] == "completed") == (n == 3)
    assert pl.from_arrow(store.predictions()).filter(pl.col("trial_id") == chosen["trial_id"][0]).height > 0
    no_attention = trials.filter(pl.col("config.model.fusion.name") != "tacfn")
    assert no_attention["config.model.fusion.heads"].null_count() == no_attention.height, "heads only for attention blocks"

    # An hour between checkpoints: a completed trial saves one only after its last epoch (the
    # chosen trial's is what got scored), a pruned trial none.
    completed_ids = set(trials.filter(pl.col("status") == "completed")["trial_id"])
    saved = {(r["trial_id"], r["epoch"]) for r in tune_results(out) if r["checkpoint_dir_name"]}
    assert saved == {(t, 3) for t in completed_ids}

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")
    states = {t.state.name for t in study.trials}
    assert len(study.trials) == 6
    n_pruned = trials.filter(pl.col("status") == "pruned").height
    assert sum(t.state.name == "PRUNED" for t in study.trials) == n_pruned, states
    completed = trials.filter(pl.col("status") == "completed")
    assert sorted(t.value for t in study.trials if t.state.name == "COMPLETE") == pytest.approx(sorted(completed["val_score"]))


def test_a_weighted_f1_search_tells_optuna_and_chooses_on_the_best_epochs_f1(prepared_lite: Path, tmp_path: Path):
    space = _space_file(tmp_path, prepared_lite, trials=3, epochs=3, name="f1", scheduler="none", metric="val_weighted_f1")
    out = tmp_path / "exp"
    proc = subprocess.run(_tacfn("search", str(space), "--out", str(out)), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    store = ExperimentStore.open(out)
    trials = pl.from_arrow(store.trials()).filter(pl.col("status") == "completed")
    epochs = pl.from_arrow(store.epochs())
    study = optuna.load_study(study_name="f1", storage=f"sqlite:///{out / 'optuna.db'}")
    told = sorted(t.value for t in study.trials if t.state.name == "COMPLETE")
    assert told == pytest.approx(sorted(trials["val_weighted_f1"])), "Optuna gets the kept (best) epoch's F1"
    for row in trials.iter_rows(named=True):  # and that is the F1 of the epoch chosen on val_score
        best = epochs.filter((pl.col("trial_id") == row["trial_id"]) & (pl.col("epoch") == row["best_epoch"]))
        assert best["val_weighted_f1"][0] == pytest.approx(row["val_weighted_f1"])
    chosen = trials.filter(pl.col("chosen"))
    assert chosen["val_weighted_f1"][0] == trials["val_weighted_f1"].max()
    assert f"validation val_weighted_f1 {chosen['val_weighted_f1'][0]:.3f}, score " in proc.stdout


def test_resume_after_the_driver_is_killed(prepared_lite: Path, tmp_path: Path):
    space = _space_file(tmp_path, prepared_lite, trials=8, epochs=4, name="killed")
    out = tmp_path / "exp"
    driver = subprocess.Popen(_tacfn("search", str(space), "--out", str(out)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for_trials(driver, out, 3)
    assert driver.poll() is None, "the search finished before it could be killed"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    recorded = pl.from_arrow(ExperimentStore.open(out).trials()).to_dicts()
    assert 3 <= len(recorded) < 8

    proc = subprocess.run(_tacfn("search", "--resume", str(out)), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, "a rerun trial whose outcome Optuna had is not an error"
    trials = pl.from_arrow(ExperimentStore.open(out).trials())
    assert trials.height == 8 and trials["trial_id"].n_unique() == 8, "no trial lost, none duplicated"
    for before in recorded:
        after = trials.filter(pl.col("trial_id") == before["trial_id"])
        assert after.height == 1
        assert after["val_score"][0] == pytest.approx(before["val_score"])
    assert trials.filter(pl.col("chosen")).height == 1
    epochs = pl.from_arrow(ExperimentStore.open(out).epochs())
    assert epochs.group_by(["trial_id", "epoch"]).len()["len"].max() == 1
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{out / 'optuna.db'}")
    assert not [t.number for t in study.trials if t.state.name == "RUNNING"], "no Optuna trial left running"

    again = subprocess.run(_tacfn("search", "--resume", str(out)), capture_output=True, text=True, timeout=500)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-2000:]
    assert pl.from_arrow(ExperimentStore.open(out).trials()).sort("trial_id").equals(trials.sort("trial_id")), "nothing rerun or rescored"


def test_a_search_stopped_before_tune_saved_anything_can_be_resumed(prepared_lite: Path, tmp_path: Path):
    """A search stopped before Tune's first snapshot (Ctrl-C while Ray starts) leaves its
    experiment.json, maybe an Optuna study, and no Ray state: --resume starts it over in that
    folder instead of refusing it, and drops the study's trials that no store row records."""
    space = _space_file(tmp_path, prepared_lite, trials=2, epochs=1, name="early", scheduler="none")
    done = tmp_path / "done"
    assert subprocess.run(_tacfn("search", str(space), "--out", str(done)), capture_output=True, timeout=500).returncode == 0
    out = tmp_path / "exp"  # that state, made without racing a signal against Ray's start-up
    out.mkdir()
    experiment = json.loads((done / "experiment.json").read_text())
    (out / "experiment.json").write_text(json.dumps({**experiment, "location": str(out)}))
    shutil.copy(done / "optuna.db", out / "optuna.db")

    proc = subprocess.run(_tacfn("search", "--resume", str(out)), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "the search stopped before its first trial; starting it over" in proc.stdout
    assert ExperimentStore.open(out).trials().num_rows == 2
    study = optuna.load_study(study_name="early", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(study.trials) == 2


def test_ctrl_c_stops_the_search_resumably(prepared_lite: Path, tmp_path: Path):
    """Ctrl-C ends with status 130 and how to go on, before the test split is scored;
    --resume finishes the search and tests one trial; resuming it again tests nothing."""
    space = _space_file(tmp_path, prepared_lite, trials=6, epochs=3, name="ctrlc", scheduler="none")
    out = tmp_path / "exp"
    with (tmp_path / "stderr").open("w") as err:
        driver = subprocess.Popen(_tacfn("search", str(space), "--out", str(out)), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    wait_for_trials(driver, out, 1)
    assert driver.poll() is None, "the search finished before it could be interrupted"
    os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C signals the terminal's whole process group
    assert driver.wait(timeout=120) == 130
    assert (tmp_path / "stderr").read_text().splitlines()[-1] == f"tacfn: interrupted; continue with tacfn search --resume {out}"
    store = ExperimentStore.open(out)
    assert store.trials().num_rows < 6 and not any(store.trials()["chosen"].to_pylist())
    assert store.predictions().num_rows == 0, "nothing scored on the test split"

    proc = subprocess.run(_tacfn("search", "--resume", str(out)), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trials = pl.from_arrow(store.trials())
    assert trials.height == 6 and trials.filter(pl.col("chosen")).height == 1
    tested = store.location.stamp("predictions.parquet")
    again = subprocess.run(_tacfn("search", "--resume", str(out)), capture_output=True, text=True, timeout=500)
    assert again.returncode == 0, again.stderr[-2000:]
    best = [line for line in proc.stdout.splitlines() if line.startswith("best trial")]
    assert best and best == [line for line in again.stdout.splitlines() if line.startswith("best trial")]
    assert store.location.stamp("predictions.parquet") == tested, "the test split is not scored again"
    assert pl.from_arrow(store.trials()).filter(pl.col("chosen")).height == 1


def test_asha_lets_a_trial_run_the_epochs_it_sampled(prepared_lite: Path, tmp_path: Path):
    """ASHA's last rung is the most epochs any trial can have, not the base config's."""
    path = _space_file(tmp_path, prepared_lite, trials=1, epochs=2, name="longer", concurrency=1)
    space = yaml.safe_load(path.read_text())
    space["space"]["train.epochs"] = {"int": [3, 3]}
    path.write_text(yaml.safe_dump(space))
    out = tmp_path / "exp"
    proc = subprocess.run(_tacfn("search", str(path), "--out", str(out)), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trial = ExperimentStore.open(out).trials().to_pylist()[0]
    assert (trial["status"], trial["epochs_run"]) == ("completed", 3)


def _searcher(tmp_path: Path):
    """A PrunableOptunaSearch over one float, with its study in ``tmp_path/optuna.db``, built
    as Tune builds a resumed search's (no Ray)."""
    from tacfn.search._runner import PrunableOptunaSearch
    from tacfn.search._space import SearchSpace, compile_space, parse_space

    spec = parse_space({
        "name": "lost",
        "base": {"model": {"preset": "lite"}},
        "space": {"train.lr": {"float": [1e-4, 1e-2], "log": True}},
        "search": {"trials": 6},
    }, "lost.yaml")
    store = ExperimentStore.create(tmp_path / "exp", "search", "lost", {"name": "lost"})
    return PrunableOptunaSearch(
        space=SearchSpace(compile_space(spec)), metric="val_score", mode="max",
        sampler=optuna.samplers.TPESampler(seed=0), storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}"),
        study_name="lost", budget=6, store=store,
    )


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="lost", storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def test_resume_fails_the_optuna_trials_tunes_snapshot_lost(tmp_path: Path):
    """An Optuna trial started after Tune's last searcher snapshot and still running when the
    driver died is marked FAIL on restore; the snapshot's running trials stay RUNNING, for
    Tune reruns them and tells their outcome."""
    before = _searcher(tmp_path)
    for trial_id in ("done", "running"):
        assert isinstance(before.suggest(trial_id), dict)
    before.on_trial_complete("done", {"val_score": 0.5, "best_val_score": 0.5, "finished": True, "status": "completed"})
    before.save(str(tmp_path / "snapshot.pkl"))
    assert isinstance(before.suggest("after-snapshot"), dict)  # then the driver dies

    after = _searcher(tmp_path)
    after.restore(str(tmp_path / "snapshot.pkl"))
    assert [t.state.name for t in _study(tmp_path).trials] == ["COMPLETE", "RUNNING", "FAIL"]
    after.on_trial_complete("running", {"val_score": 0.7, "best_val_score": 0.7, "finished": True, "status": "completed"})
    assert _study(tmp_path).trials[1].value == 0.7


@pytest.mark.parametrize("first", [
    {"val_score": 0.5, "best_val_score": 0.5, "finished": True, "status": "completed"},
    {"val_score": 0.2, "best_val_score": 0.2, "finished": False, "status": "running"},
])
def test_a_rerun_of_a_trial_optuna_already_knows_keeps_its_first_outcome(tmp_path: Path, first: dict):
    """A trial that ended after Tune's last snapshot is rerun by the resumed search: telling
    its outcome again raises nothing, and Optuna keeps the first one."""
    before = _searcher(tmp_path)
    assert isinstance(before.suggest("late"), dict)
    before.save(str(tmp_path / "snapshot.pkl"))
    before.on_trial_complete("late", first)  # then the driver dies
    told = _study(tmp_path).trials[0]

    after = _searcher(tmp_path)
    after.restore(str(tmp_path / "snapshot.pkl"))
    after.on_trial_complete("late", {"val_score": 0.9, "best_val_score": 0.9, "finished": True, "status": "completed"})
    again = _study(tmp_path).trials[0]
    assert (again.state, again.value) == (told.state, told.value)
    assert told.state.name == ("COMPLETE" if first["finished"] else "PRUNED")


def test_one_trial_is_chosen_and_tested_whatever_the_resumes(tmp_path: Path, monkeypatch):
    """Ties on validation go to the trial that started first, whatever the store's row order;
    a pick already tested is not tested again; a better trial found by a resumed search is
    then the only chosen one, and the only one with test metrics and predictions."""
    from tacfn.search import _runner
    from tacfn.search._trainable import encoder_identity, trial_run_config

    store = ExperimentStore.create(tmp_path / "exp", "search", "ties", {"name": "ties", "search": {}})
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for trial_id, minute in (("later", 5), ("first", 0)):  # the upsert moves a rewritten row last
        store.record_trial({"trial_id": trial_id, "status": "completed", "val_score": 0.8, "started_at": start + timedelta(minutes=minute), "chosen": False})
    tested: list[str] = []

    def score(cfg, task, weights):
        tested.append(cfg.train.lr)
        return {"score": 0.6, "weighted_f1": 0.5}, {"audio": 0.4}, {"id": ["s1"], "label": [0], "pred": [0]}

    monkeypatch.setattr(_runner, "score_checkpoint", score)
    base = {"model": {"preset": "lite"}}
    lrs = {"first": 1e-3, "later": 2e-3, "better": 3e-3}
    grid = [SimpleNamespace(metrics={"trial_id": t}, config={"train.lr": lr}, checkpoint=tune.Checkpoint(str(tmp_path))) for t, lr in lrs.items()]
    identity = encoder_identity(trial_run_config(base, {}, check_model=False))

    def finish() -> tuple[str, list[str]]:
        summary = _runner._finish(store, grid, base, object(), identity, 0, 0.0, quiet=True)
        chosen = pl.from_arrow(store.trials()).filter(pl.col("chosen"))
        assert chosen["trial_id"].to_list() == [summary.best_trial] and summary.test_score == chosen["test_score"][0]
        tested_rows = pl.from_arrow(store.trials()).filter(pl.col("test_score").is_not_null() | pl.col("test_missing_audio").is_not_null())
        assert tested_rows["trial_id"].to_list() == [summary.best_trial]
        return summary.best_trial, pl.from_arrow(store.predictions())["trial_id"].unique().to_list()

    assert finish() == ("first", ["first"]) and tested == [1e-3]
    assert finish() == ("first", ["first"]) and tested == [1e-3], "a resume does not test the pick again"
    store.record_trial({"trial_id": "better", "status": "completed", "val_score": 0.9, "started_at": start + timedelta(minutes=9), "chosen": False})
    assert finish() == ("better", ["better"]) and tested == [1e-3, 3e-3]


def test_multi_objective_search_marks_the_pareto_front(prepared_lite: Path, tmp_path: Path):
    space = _space_file(tmp_path, prepared_lite, trials=5, epochs=2, name="pareto", scheduler="none", objectives=["num_parameters", "latency_ms"])
    out = tmp_path / "exp"
    proc = subprocess.run(_tacfn("search", str(space), "--out", str(out)), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trials = pl.from_arrow(ExperimentStore.open(out).trials()).filter(pl.col("status") == "completed")
    assert trials.height == 5 and trials["latency_ms"].null_count() == 0 and (trials["latency_ms"] > 0).all()
    rows = trials.to_dicts()

    def dominates(a: dict, b: dict) -> bool:
        ka = (-a["val_score"], a["num_parameters"], a["latency_ms"])
        kb = (-b["val_score"], b["num_parameters"], b["latency_ms"])
        return all(x <= y for x, y in zip(ka, kb)) and ka != kb

    for row in rows:
        assert row["pareto"] == (not any(dominates(o, row) for o in rows if o is not row))
    assert any(r["pareto"] for r in rows)
    study = optuna.load_study(study_name="pareto", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(study.directions) == 3 and len(study.best_trials) >= 1


def test_multi_objective_refuses_asha(prepared_lite: Path, tmp_path: Path):
    space = _space_file(tmp_path, prepared_lite, trials=2, name="bad", objectives=["num_parameters"])
    proc = subprocess.run(_tacfn("search", str(space), "--out", str(tmp_path / "x")), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "use scheduler: none" in proc.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "--resume", "/nonexistent/exp"], "is not a tacfn experiment folder"),
        (["search", "no_such_space"], "no_such_space"),
    ],
)
def test_search_bad_input(argv, message):
    proc = subprocess.run(_tacfn(*argv), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stderr.count("\n") == 1


def test_shipped_spaces_load():
    for name in ("quickstart", "ravdess_tacfn", "iemocap_tacfn", "modality_dropout"):
        from tacfn.search import find_space

        assert load_space(find_space(name)).name


def test_a_configuration_is_not_trained_twice(prepared_lite: Path, tmp_path: Path):
    """Two possible configs and six trials: TPE's repeats are told the earlier result, and the
    search ends once it proposes nothing new."""
    space = tmp_path / "two.yaml"
    space.write_text(yaml.safe_dump({
        "name": "two",
        "base": {
            "model": {"preset": "lite", "backbone": "frozen"},
            "data": {"path": str(prepared_lite), "cache_dir": str(tmp_path / "cache")},
            "train": {"epochs": 2, "batch_size": 8},
        },
        "space": {"model.fusion.name": {"choice": ["concat", "late_average"]}},
        "search": {"trials": 6, "concurrency": 1, "scheduler": "none", "seed": 0},
    }))
    out = tmp_path / "exp"
    proc = subprocess.run(_tacfn("search", str(space), "--out", str(out)), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TPE proposed only configurations already run" in proc.stdout
    trials = pl.from_arrow(ExperimentStore.open(out).trials())
    assert sorted(trials["config.model.fusion.name"]) == ["concat", "late_average"]
    study = optuna.load_study(study_name="two", storage=f"sqlite:///{out / 'optuna.db'}")
    repeats = [t for t in study.trials if "repeat_of" in t.user_attrs]
    assert repeats and len(study.trials) == 2 + len(repeats)
    by_number = {t.number: t for t in study.trials}
    for t in repeats:
        original = by_number[t.user_attrs["repeat_of"]]
        assert t.params == original.params and t.value == original.value
