"""Searches on a real local Ray runtime: Optuna + ASHA, the results store, resume after a kill."""

from __future__ import annotations

import contextlib
import json
import math
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
from _drivers import pausing_driver, wait_for_file, wait_for_trials
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


@pytest.mark.slow
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

    # Ray's own results tell the story the store tells: each trial's best epoch so far (what
    # it keeps), not its last epoch, and Tune's best result is the store's best trial.
    from tacfn.search._trainable import run_trial

    results = tune.Tuner.restore(str(out / "ray"), trainable=run_trial).get_results()
    by_id = {r.metrics["trial_id"]: r.metrics for r in results}
    assert set(by_id) == set(trials["trial_id"])
    for row in trials.iter_rows(named=True):
        assert by_id[row["trial_id"]]["best_val_score"] == pytest.approx(row["val_score"])
        assert by_id[row["trial_id"]]["best_val_weighted_f1"] == pytest.approx(row["val_weighted_f1"])
    best = results.get_best_result()  # ranked on the TuneConfig's metric
    assert best.metrics["best_val_score"] == pytest.approx(trials["val_score"].max())
    assert trials.filter(pl.col("trial_id") == best.metrics["trial_id"])["val_score"][0] == trials["val_score"].max()

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")
    states = {t.state.name for t in study.trials}
    assert len(study.trials) == 6
    n_pruned = trials.filter(pl.col("status") == "pruned").height
    assert sum(t.state.name == "PRUNED" for t in study.trials) == n_pruned, states
    completed = trials.filter(pl.col("status") == "completed")
    assert sorted(t.value for t in study.trials if t.state.name == "COMPLETE") == pytest.approx(sorted(completed["val_score"]))
    # Each row's param.* columns are what Optuna sampled for its trial: heads only with attention.
    sampled = {t.user_attrs["tune_trial_id"]: t.params for t in study.trials}
    for row in trials.iter_rows(named=True):
        params = {k.removeprefix("param."): v for k, v in row.items() if k.startswith("param.")}
        assert set(params) == {"model.fusion.name", "model.fusion.heads", "train.lr"}
        assert {k: v for k, v in params.items() if v is not None} == sampled[row["trial_id"]]


@pytest.mark.slow
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


def test_every_report_names_the_best_epoch_so_far():
    """Tune checks that every report holds its metric (best_val_score or best_val_weighted_f1),
    the last report of a trial that diverged before its first epoch too."""
    from tacfn.search._distributed import best_epoch_scores
    from tacfn.training import EpochRecord, RunState

    assert all(math.isnan(v) for v in best_epoch_scores(RunState(status="diverged")).values())
    epochs = [EpochRecord(epoch=e, train_loss=1.0, train_score=0.5, val_loss=1.0, val_score=s, val_weighted_f1=f, seconds=0.1)
              for e, s, f in ((1, 0.6, 0.55), (2, 0.5, 0.45))]
    assert best_epoch_scores(RunState(history=epochs, best_epoch=1, best_score=0.6)) == {"best_val_score": 0.6, "best_val_weighted_f1": 0.55}


def _kill_after(space: Path, out: Path, rows: int) -> list[dict]:
    """Start a search of ``space`` into ``out``, kill its driver (and its Ray) once it has
    recorded ``rows`` trials, and return those trials' rows."""
    paused = out.parent / f"{out.name}.paused"
    argv = pausing_driver(["search", str(space), "--out", str(out)], rows, paused)
    driver = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_file(driver, paused)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the driver and its Ray, if any is left
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    return pl.from_arrow(ExperimentStore.open(out).trials()).to_dicts()


@pytest.mark.slow
def test_resume_after_the_driver_is_killed(prepared_lite: Path, tmp_path: Path):
    space = _space_file(tmp_path, prepared_lite, trials=8, epochs=4, name="killed")
    out = tmp_path / "exp"
    recorded = _kill_after(space, out, 3)
    assert len(recorded) == 3

    proc = subprocess.run(_tacfn("search", "--out", str(out), "--resume"), capture_output=True, text=True, timeout=500)
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

    again = subprocess.run(_tacfn("search", "--out", str(out), "--resume"), capture_output=True, text=True, timeout=500)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-2000:]
    assert pl.from_arrow(ExperimentStore.open(out).trials()).sort("trial_id").equals(trials.sort("trial_id")), "nothing rerun or rescored"


@pytest.mark.slow
def test_a_seed_aware_search_killed_and_resumed_counts_each_replicate_once(prepared_lite: Path, tmp_path: Path):
    """Every configuration trains on seeds 0, 1, 2; the driver dies after 4 replicates are
    recorded (others ran on), and --resume finishes: the store holds each (configuration,
    replicate) once, Optuna one trial per configuration valued at the mean of the store's
    replicates, and the chosen configuration is tested on each of its replicates."""
    from tacfn.search._recording import configuration_hash

    space = _space_file(tmp_path, prepared_lite, trials=4, epochs=3, name="seeds", scheduler="none", seeds=[0, 1, 2])
    out = tmp_path / "exp"
    recorded = _kill_after(space, out, 4)
    proc = subprocess.run(_tacfn("search", "--out", str(out), "--resume"), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trials = pl.from_arrow(ExperimentStore.open(out).trials())
    assert trials.group_by("config_hash", "replicate").len()["len"].max() == 1, "no replicate twice"
    assert trials["replicate"].to_list() == trials["seed"].to_list(), "replicate i is seed i (seeds [0, 1, 2], one fold)"
    for before in recorded:
        assert trials.filter(pl.col("trial_id") == before["trial_id"])["val_score"].to_list() == [before["val_score"]]
    per_config = trials.group_by("config_hash").agg(pl.col("val_score").mean().alias("mean"), pl.len().alias("n"), pl.col("raced_out").any())
    assert per_config.height == 4 and per_config["n"].to_list().count(3) + per_config["raced_out"].sum() == 4

    base = ExperimentStore.open(out).experiment["spec"]["base"]
    study = optuna.load_study(study_name="seeds", storage=f"sqlite:///{out / 'optuna.db'}")
    configurations = [t for t in study.trials if "repeat_of" not in t.user_attrs]
    assert len(configurations) == 4 and all(t.state.name in ("COMPLETE", "PRUNED") for t in configurations)
    means = dict(zip(per_config["config_hash"], per_config["mean"]))
    for trial in configurations:
        mean = means[configuration_hash(base, trial.params)]
        value = trial.value if trial.state.name == "COMPLETE" else trial.intermediate_values[max(trial.intermediate_values)]
        assert value == pytest.approx(mean)

    chosen = trials.filter(pl.col("chosen"))
    assert chosen["config_hash"].n_unique() == 1 and chosen.height == 3 and chosen["test_score"].null_count() == 0
    line = next(line for line in proc.stdout.splitlines() if line.startswith("best configuration"))
    assert f"test mean {chosen['test_score'].mean():.3f} [" in line and "over 3 replicates" in line
    assert f"mean {per_config.filter(pl.col('config_hash') == chosen['config_hash'][0])['mean'][0]:.3f}" in line


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tacfn: warning: ")]


@pytest.mark.slow
def test_resume_rebuilds_a_damaged_or_deleted_optuna_file_from_the_store(prepared_lite: Path, tmp_path: Path):
    """The store is the record: a resumed search whose optuna.db is garbage gets the study
    rebuilt from trials.parquet (the garbage kept aside) and runs the trials it lacks; one
    whose optuna.db is gone gets it rebuilt and reruns nothing."""
    space = _space_file(tmp_path, prepared_lite, trials=5, epochs=2, name="rebuilt", scheduler="none")
    out = tmp_path / "exp"
    recorded = _kill_after(space, out, 2)
    assert len(recorded) == 2
    db = out / "optuna.db"
    garbage = bytes(range(256)) * (db.stat().st_size // 256 + 1)
    db.write_bytes(garbage)

    proc = subprocess.run(_tacfn("search", "--out", str(out), "--resume"), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert _warnings(proc.stderr) == [
        f"tacfn: warning: {db} is not a readable SQLite database (file is not a database); "
        f"moved it to {next(out.glob('optuna.db.damaged-*')).name} and rebuilt the Optuna study from trials.parquet (2 trials)"
    ]
    assert next(out.glob("optuna.db.damaged-*")).read_bytes() == garbage, "the damaged file is kept as it was"
    trials = pl.from_arrow(ExperimentStore.open(out).trials())
    assert trials.height == 5 and trials["trial_id"].n_unique() == 5, "the budget is kept: no trial lost, none added"
    for before in recorded:
        after = trials.filter(pl.col("trial_id") == before["trial_id"]).to_dicts()[0]
        assert (after["val_score"], after["finished_at"]) == (before["val_score"], before["finished_at"]), "kept, not rerun"
    study = optuna.load_study(study_name="rebuilt", storage=f"sqlite:///{db}")
    told = {t.user_attrs["tune_trial_id"]: t for t in study.trials if "repeat_of" not in t.user_attrs}
    assert set(told) == set(trials["trial_id"]) and {t.state.name for t in told.values()} == {"COMPLETE"}
    for row in trials.iter_rows(named=True):
        assert told[row["trial_id"]].value == pytest.approx(row["val_score"])

    db.unlink()
    again = subprocess.run(_tacfn("search", "--out", str(out), "--resume"), capture_output=True, text=True, timeout=500)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _warnings(again.stderr) == [f"tacfn: warning: {db} is missing; rebuilt the Optuna study from trials.parquet (5 trials)"]
    assert pl.from_arrow(ExperimentStore.open(out).trials()).sort("trial_id").equals(trials.sort("trial_id")), "nothing rerun or rescored"
    study = optuna.load_study(study_name="rebuilt", storage=f"sqlite:///{db}")
    assert sorted(t.user_attrs["tune_trial_id"] for t in study.trials) == sorted(trials["trial_id"])


@pytest.mark.slow
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

    proc = subprocess.run(_tacfn("search", "--out", str(out), "--resume"), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "the search stopped before its first trial; starting it over" in proc.stdout
    assert ExperimentStore.open(out).trials().num_rows == 2
    study = optuna.load_study(study_name="early", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(study.trials) == 2


@pytest.mark.slow
def test_ctrl_c_stops_the_search_resumably(prepared_lite: Path, tmp_path: Path):
    """Ctrl-C ends with status 130 and how to go on, before the test split is scored;
    --resume finishes the search and tests one trial; resuming it again tests nothing."""
    # Long enough that Ctrl-C lands while trials run: with 6 trials of 3 epochs the rest could
    # all end between the first being recorded and the signal (seen in CI), and the search finish.
    space = _space_file(tmp_path, prepared_lite, trials=10, epochs=6, name="ctrlc", scheduler="none")
    out = tmp_path / "exp"
    with (tmp_path / "stderr").open("w") as err:
        driver = subprocess.Popen(_tacfn("search", str(space), "--out", str(out)), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    wait_for_trials(driver, out, 1)
    assert driver.poll() is None, "the search finished before it could be interrupted"
    os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C signals the terminal's whole process group
    assert driver.wait(timeout=120) == 130
    assert (tmp_path / "stderr").read_text().splitlines()[-1] == f"tacfn: interrupted; continue with tacfn search --out {out} --resume"
    store = ExperimentStore.open(out)
    assert store.trials().num_rows < 10 and not any(store.trials()["chosen"].to_pylist())
    assert store.predictions().num_rows == 0, "nothing scored on the test split"

    proc = subprocess.run(_tacfn("search", "--out", str(out), "--resume"), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trials = pl.from_arrow(store.trials())
    assert trials.height == 10 and trials.filter(pl.col("chosen")).height == 1
    tested = store.location.stamp("predictions.parquet")
    again = subprocess.run(_tacfn("search", "--out", str(out), "--resume"), capture_output=True, text=True, timeout=500)
    assert again.returncode == 0, again.stderr[-2000:]
    best = [line for line in proc.stdout.splitlines() if line.startswith("best trial")]
    assert best and best == [line for line in again.stdout.splitlines() if line.startswith("best trial")]
    assert store.location.stamp("predictions.parquet") == tested, "the test split is not scored again"
    assert pl.from_arrow(store.trials()).filter(pl.col("chosen")).height == 1


@pytest.mark.slow
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
    from tacfn.search._searcher import PrunableOptunaSearch
    from tacfn.search._space import parse_space
    from tacfn.search._space_compile import SearchSpace, compile_space

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


@pytest.mark.parametrize("sampler", ["tpe", "gp", "cmaes", "random", "qmc", "nsga2"])
def test_the_searcher_pickles_with_each_sampler_and_a_resume_keeps_it(tmp_path: Path, sampler: str):
    """Tune pickles its searcher, sampler and all, when the search starts (cloudpickle, in
    tuner.pkl) and at every snapshot (``save``); a resumed search restores that sampler."""
    from ray import cloudpickle

    from tacfn.search._samplers import create_sampler
    from tacfn.search._searcher import PrunableOptunaSearch
    from tacfn.search._space import parse_space
    from tacfn.search._space_compile import SearchSpace, compile_space

    objectives = ["num_parameters"] if sampler == "nsga2" else []
    spec = parse_space({
        "name": "pickled",
        "base": {"model": {"preset": "lite"}},
        "space": {"train.lr": {"float": [1e-4, 1e-2], "log": True}, "train.batch_size": {"int": [8, 32], "step": 8}},
        "search": {"trials": 6, "sampler": sampler, "objectives": objectives, "scheduler": "none"},
    }, "pickled.yaml")
    store = ExperimentStore.create(tmp_path / "exp", "search", "pickled", {"name": "pickled"})

    def searcher() -> PrunableOptunaSearch:
        return PrunableOptunaSearch(
            space=SearchSpace(compile_space(spec)), metric=["val_score", *objectives] if objectives else "val_score",
            mode=["max", "min"] if objectives else "max", sampler=create_sampler(spec.search),
            storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}"), study_name="pickled", budget=6, store=store,
        )

    before = searcher()
    cloudpickle.dumps(before)
    assert isinstance(before.suggest("t0"), dict)
    before.on_trial_complete("t0", {"val_score": 0.5, "best_val_score": 0.5, "num_parameters": 10, "finished": True, "status": "completed"})
    assert isinstance(before.suggest("t1"), dict)
    cloudpickle.dumps(before)
    before.save(str(tmp_path / "snapshot.pkl"))
    after = searcher()
    after._ot_study.sampler = optuna.samplers.RandomSampler()  # what the snapshot must replace
    after.restore(str(tmp_path / "snapshot.pkl"))
    assert type(after._ot_study.sampler) is type(before._ot_study.sampler)
    assert isinstance(after.suggest("t2"), dict)


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


def _lost_info():
    from tacfn.search._space import parse_space
    from tacfn.search._space_compile import compile_space

    return compile_space(parse_space({
        "name": "lost",
        "base": {"model": {"preset": "lite"}},
        "space": {"train.lr": {"float": [1e-4, 1e-2], "log": True}},
        "search": {"trials": 6},
    }, "lost.yaml"))


def test_a_study_rebuilt_from_the_store_takes_up_tunes_snapshot(tmp_path: Path):
    """After optuna.db is lost, the study is rebuilt from the store and the restored searcher
    finds its trials in it by Tune trial id: a finished one is the rebuilt trial, one still
    running gets a new running trial with its parameters, which Tune's rerun then tells; one
    that ended after the snapshot counts against the budget as the store recorded it."""
    from tacfn.search._study import StudyRebuiltWarning, recover_study

    before = _searcher(tmp_path)
    store = before.store
    lrs = {trial_id: before.suggest(trial_id)["train.lr"] for trial_id in ("done", "running")}
    before.on_trial_complete("done", {"val_score": 0.5, "best_val_score": 0.5, "finished": True, "status": "completed"})
    store.record_trial({"trial_id": "done", "status": "completed", "val_score": 0.5, "config.train.lr": lrs["done"]})
    before.save(str(tmp_path / "snapshot.pkl"))
    lrs["late"] = before.suggest("late")["train.lr"]  # then the driver records it and dies
    store.record_trial({"trial_id": "late", "status": "pruned", "val_score": 0.4, "config.train.lr": lrs["late"]})
    (tmp_path / "optuna.db").unlink()

    with pytest.warns(StudyRebuiltWarning, match=r"optuna\.db is missing; rebuilt the Optuna study from trials\.parquet \(2 trials\)"):
        recover_study(tmp_path / "optuna.db", store.root, "lost", _lost_info(), "val_score", [])
    after = _searcher(tmp_path)
    after.restore(str(tmp_path / "snapshot.pkl"))
    trials = {t.user_attrs["tune_trial_id"]: t for t in _study(tmp_path).trials}
    assert {k: (t.state.name, t.value, t.params["train.lr"]) for k, t in trials.items()} == {
        "done": ("COMPLETE", 0.5, lrs["done"]),
        "late": ("PRUNED", None, lrs["late"]),
        "running": ("RUNNING", None, lrs["running"]),
    }
    after.on_trial_complete("running", {"val_score": 0.7, "best_val_score": 0.7, "finished": True, "status": "completed"})
    assert [t.value for t in _study(tmp_path).trials if t.user_attrs.get("tune_trial_id") == "running"] == [0.7]
    for trial_id in ("next", "n5", "n6"):  # the budget of 6 counts the 3 the store recorded or Tune knows
        assert isinstance(after.suggest(trial_id), dict)
    assert after.suggest("n7") == after.FINISHED
    assert {"next", "n5", "n6"} <= {t.user_attrs.get("tune_trial_id") for t in _study(tmp_path).trials}


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "another study"])
def test_a_damaged_optuna_file_is_kept_aside_and_the_study_rebuilt(tmp_path: Path, damage: str):
    from tacfn.search._study import StudyRebuiltWarning, recover_study

    searcher = _searcher(tmp_path)
    lr = searcher.suggest("t0")["train.lr"]
    searcher.on_trial_complete("t0", {"val_score": 0.5, "best_val_score": 0.5, "finished": True, "status": "completed"})
    searcher.store.record_trial({"trial_id": "t0", "status": "completed", "val_score": 0.5, "config.train.lr": lr})
    db = tmp_path / "optuna.db"
    good = db.read_bytes()
    damaged = {
        "garbage": b"not a database" * 100,
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "another study": None,
    }[damage]
    if damaged is None:
        db.unlink()
        optuna.create_study(study_name="other", storage=f"sqlite:///{db}")
        damaged = db.read_bytes()
    else:
        db.write_bytes(damaged)
    reason = {
        "garbage": "is not a readable SQLite database (file is not a database)",
        "truncated": "is not a readable SQLite database (database disk image is malformed)",
        "empty": "holds no Optuna study",
        "another study": "holds no study named 'lost'",
    }[damage]

    with pytest.warns(StudyRebuiltWarning) as warned:
        recover_study(db, searcher.store.root, "lost", _lost_info(), "val_score", [])
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("optuna.db.damaged-")]
    assert len(aside) == 1 and aside[0].read_bytes() == damaged
    assert str(warned[0].message) == f"{db} {reason}; moved it to {aside[0].name} and rebuilt the Optuna study from trials.parquet (1 trial)"
    assert [(t.state.name, t.value, t.params) for t in _study(tmp_path).trials] == [("COMPLETE", 0.5, {"train.lr": lr})]
    recover_study(db, searcher.store.root, "lost", _lost_info(), "val_score", [])  # a sound file is left alone
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("optuna.db")]) == 2


def test_a_resumed_search_from_before_param_columns_records_none(tmp_path: Path):
    """The recording callback writes a trial's sampled params as param.* columns, except into
    an experiment of schema version 1, whose rows all keep to config.* (read alike)."""
    from tacfn.search._recording import StoreCallback

    def record(store: ExperimentStore) -> dict:
        trial = SimpleNamespace(trial_id="t0", config={"model.fusion.name": "concat", "train.lr": 1e-3}, last_result={"finished": True})
        base = {"model": {"preset": "lite", "fusion": {"heads": 4}}}
        StoreCallback(store, base, 1, quiet=True, axes=["model.fusion.name", "model.fusion.heads", "train.lr"]).on_trial_complete(0, [], trial)
        return store.trials().to_pylist()[0]

    row = record(ExperimentStore.create(tmp_path / "new", "search", "s", {}))
    assert row["config.model.fusion.heads"] == 4
    assert {k: v for k, v in row.items() if k.startswith("param.")} == {
        "param.model.fusion.heads": None, "param.model.fusion.name": "concat", "param.train.lr": 1e-3,
    }
    old = ExperimentStore.create(tmp_path / "old", "search", "s", {})
    (old.root / "experiment.json").write_text(json.dumps({**old.experiment, "schema_version": 1}))
    assert not [k for k in record(ExperimentStore.open(old.root)) if k.startswith("param.")]


def test_a_rebuilt_study_takes_the_sampled_params_from_param_columns_else_config():
    """param.* says what was sampled, even where config.* holds another value; a row from
    before param.* columns (schema version 1) is read from its config, active axes only."""
    from tacfn.errors import DataError
    from tacfn.search._space import parse_space
    from tacfn.search._space_compile import compile_space
    from tacfn.search._study import study_trials

    info = compile_space(parse_space({
        "name": "cond",
        "base": {"model": {"preset": "lite"}, "train": {"lr": 5e-3}},
        "space": {
            "train.batch_size": {"choice": [8, 16]},
            "train.lr": {"float": [1e-4, 1e-2], "log": True, "when": {"train.batch_size": [16]}},
        },
        "search": {"trials": 3},
    }, "cond.yaml"))
    ended = {"status": "completed", "val_score": 0.5}
    rows = [
        {**ended, "trial_id": "a", "param.train.batch_size": 8, "param.train.lr": None, "config.train.batch_size": 8, "config.train.lr": 5e-3},
        {**ended, "trial_id": "b", "param.train.batch_size": 16, "param.train.lr": 2e-3, "config.train.batch_size": 16, "config.train.lr": 9e-3},
        {**ended, "trial_id": "c", "config.train.batch_size": 16, "config.train.lr": 3e-3},
    ]
    assert [t.params for t in study_trials(rows, info, ["val_score"])] == [
        {"train.batch_size": 8},
        {"train.batch_size": 16, "train.lr": 2e-3},
        {"train.batch_size": 16, "train.lr": 3e-3},
    ]
    unsampled = {**rows[1], "param.train.lr": None}
    with pytest.raises(DataError, match="trial b records no param.train.lr"):
        study_trials([unsampled], info, ["val_score"])


def test_one_trial_is_chosen_and_tested_whatever_the_resumes(tmp_path: Path, monkeypatch):
    """Ties on validation go to the trial that started first, whatever the store's row order;
    a pick already tested is not tested again; a better trial found by a resumed search is
    then the only chosen one, and the only one with test metrics and predictions."""
    from tacfn.search import _choosing
    from tacfn.search._trainable import encoder_identity, trial_run_config
    from tacfn.training import ScoredTest

    store = ExperimentStore.create(tmp_path / "exp", "search", "ties", {"name": "ties", "search": {}})
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for trial_id, minute in (("later", 5), ("first", 0)):  # the upsert moves a rewritten row last
        store.record_trial({"trial_id": trial_id, "status": "completed", "val_score": 0.8, "started_at": start + timedelta(minutes=minute), "chosen": False})
    tested: list[str] = []

    def score(cfg, task, weights):
        tested.append(cfg.train.lr)
        return ScoredTest({"score": 0.6, "weighted_f1": 0.5}, {"audio": 0.4}, {"id": ["s1"], "label": [0], "pred": [0]}, 0.5)

    monkeypatch.setattr(_choosing, "score_checkpoint", score)
    base = {"model": {"preset": "lite"}}
    lrs = {"first": 1e-3, "later": 2e-3, "better": 3e-3}
    grid = [SimpleNamespace(metrics={"trial_id": t}, config={"train.lr": lr}, checkpoint=tune.Checkpoint(str(tmp_path))) for t, lr in lrs.items()]
    identity = encoder_identity(trial_run_config(base, {}, check_model=False))

    def finish() -> tuple[str, list[str]]:
        summary = _choosing.choose_and_test(store, grid, base, {identity: object()}, 0, 0.0, quiet=True)
        chosen = pl.from_arrow(store.trials()).filter(pl.col("chosen"))
        assert chosen["trial_id"].to_list() == [summary.best_trial] and summary.test_score == chosen["test_score"][0]
        assert chosen["test_ms_per_sample"].to_list() == [0.5]  # the chosen trial's latency, timed when it was tested
        tested_rows = pl.from_arrow(store.trials()).filter(pl.col("test_score").is_not_null() | pl.col("test_missing_audio").is_not_null())
        assert tested_rows["trial_id"].to_list() == [summary.best_trial]
        return summary.best_trial, pl.from_arrow(store.predictions())["trial_id"].unique().to_list()

    assert finish() == ("first", ["first"]) and tested == [1e-3]
    assert finish() == ("first", ["first"]) and tested == [1e-3], "a resume does not test the pick again"
    store.record_trial({"trial_id": "better", "status": "completed", "val_score": 0.9, "started_at": start + timedelta(minutes=9), "chosen": False})
    assert finish() == ("better", ["better"]) and tested == [1e-3, 3e-3]


@pytest.mark.slow
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
        (["search", "--out", "/nonexistent/exp", "--resume"], "is not a tacfn experiment folder"),
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


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_a_configuration_is_not_trained_twice(prepared_lite: Path, tmp_path: Path, sampler: str):
    """Two possible configs and six trials: the sampler's repeats are told the earlier result,
    and the search ends once it proposes nothing new. The search samples with, records and
    names the sampler its space names."""
    space = tmp_path / "two.yaml"
    space.write_text(yaml.safe_dump({
        "name": "two",
        "base": {
            "model": {"preset": "lite", "backbone": "frozen"},
            "data": {"path": str(prepared_lite), "cache_dir": str(tmp_path / "cache")},
            "train": {"epochs": 2, "batch_size": 8},
        },
        "space": {"model.fusion.name": {"choice": ["concat", "late_average"]}},
        "search": {"trials": 6, "concurrency": 1, "scheduler": "none", "seed": 0, "sampler": sampler},
    }))
    out = tmp_path / "exp"
    proc = subprocess.run(_tacfn("search", str(space), "--out", str(out)), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"the {sampler} sampler proposed only configurations already run" in proc.stdout
    assert f"({sampler} sampler, seed 0): 2 of 2 trials completed" in proc.stdout
    assert ExperimentStore.open(out).experiment["spec"]["search"]["sampler"] == sampler
    trials = pl.from_arrow(ExperimentStore.open(out).trials())
    assert sorted(trials["config.model.fusion.name"]) == ["concat", "late_average"]
    study = optuna.load_study(study_name="two", storage=f"sqlite:///{out / 'optuna.db'}")
    repeats = [t for t in study.trials if "repeat_of" in t.user_attrs]
    assert repeats and len(study.trials) == 2 + len(repeats)
    by_number = {t.number: t for t in study.trials}
    for t in repeats:
        original = by_number[t.user_attrs["repeat_of"]]
        assert t.params == original.params and t.value == original.value
    if sampler == "random":  # every proposal, repeats too, is RandomSampler(seed=0)'s (TPE's differ after its 10 start-up trials)
        assert len(study.trials) > 10
        alone = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        proposed = [alone.ask().suggest_categorical("model.fusion.name", ["concat", "late_average"]) for _ in study.trials]
        assert [t.params["model.fusion.name"] for t in study.trials] == proposed
