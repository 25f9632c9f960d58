"""Faults injected for real into running searches: a trial's process killed, a node of a
multi-node cluster lost, a loss that becomes NaN, and the results folder's disk full.

(The driver itself killed and the search resumed: ``test_search.py``,
``test_resume_after_the_driver_is_killed``.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import polars as pl
import pytest

from _cluster import ray_env, space_file, start_cluster, stop_cluster, tacfn, tune_results
from tacfn.store import ExperimentStore

pytestmark = pytest.mark.slow


def _wait_for(what: str, found: Callable[[], object], driver: subprocess.Popen, timeout: float = 300) -> object:
    """Poll ``found()`` until it returns something truthy, while the driver runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert driver.poll() is None, f"the search ended before {what}"
        value = found()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def _driver(args: list[str], log: Path, **env: str) -> Iterator[subprocess.Popen]:
    """``tacfn ARGS`` running with its stderr in ``log`` (a pipe left unread could fill and
    stall it); killed with its process group (its local Ray too) if the test ends first."""
    with log.open("w") as err:
        driver = subprocess.Popen(tacfn(*args), env=ray_env(**env), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        yield driver
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()


def _every_trial_once(out: Path, trials: int, epochs: int) -> pl.DataFrame:
    """All trials completed, each recorded once with each of its epochs once."""
    store = ExperimentStore.open(out)
    table = pl.from_arrow(store.trials())
    assert table.height == trials and table["trial_id"].n_unique() == trials, "every trial once"
    assert set(table["status"]) == {"completed"} and set(table["epochs_run"]) == {epochs}
    per_epoch = pl.from_arrow(store.epochs()).group_by(["trial_id", "epoch"]).len()
    assert per_epoch.height == trials * epochs and per_epoch["len"].max() == 1, "no epoch counted twice"
    return table


@pytest.mark.timeout(420)
def test_a_killed_trial_process_restarts_from_its_checkpoint(prepared_lite: Path, tmp_path: Path):
    epochs = 8
    space = space_file(tmp_path, prepared_lite, trials=2, epochs=epochs, backbone="finetune", name="killed_trial", checkpoint_interval_s=0)
    out = tmp_path / "exp"
    log = tmp_path / "driver.log"

    def running_trial() -> dict | None:
        return next((r for r in tune_results(out) if 2 <= r["epoch"] < epochs - 2), None)

    with _driver(["search", str(space), "--out", str(out)], log) as driver:
        victim = _wait_for("a trial reached epoch 2", running_trial, driver)
        os.kill(victim["pid"], signal.SIGKILL)
        assert driver.wait(timeout=400) == 0, log.read_text()[-3000:]

    trials = _every_trial_once(out, trials=2, epochs=epochs)
    row = trials.filter(pl.col("trial_id") == victim["trial_id"]).row(0, named=True)
    assert not row["worker"].endswith(f":{victim['pid']}"), "the trial finished in a new process"
    after = [r["epoch"] for r in tune_results(out) if r["trial_id"] == victim["trial_id"] and r["pid"] != victim["pid"]]
    assert after and after[0] > victim["epoch"], f"resumed after epoch {victim['epoch']}, not from scratch: {after}"
    assert after == list(range(after[0], epochs + 1))
    # The restarted process's model selection remembers the epochs before the kill.
    scores = pl.from_arrow(ExperimentStore.open(out).epochs()).filter(pl.col("trial_id") == victim["trial_id"]).sort("epoch")
    best_so_far = scores["val_score"].cum_max().to_list()
    for r in tune_results(out):
        if r["trial_id"] == victim["trial_id"] and r["pid"] != victim["pid"]:
            assert r["best_val_score"] == best_so_far[r["epoch"] - 1]


@pytest.mark.timeout(420)
def test_a_diverging_trial_is_recorded_and_the_search_goes_on(prepared_lite: Path, tmp_path: Path):
    # Adam with lr 1e30: the first step sends the weights to ~1e30 and the loss to NaN.
    lr = {"train.lr": {"choice": [1.0e-3, 1.0e30]}}
    space = space_file(tmp_path, prepared_lite, trials=4, name="diverging", space=lr)
    out = tmp_path / "exp"
    proc = subprocess.run(tacfn("search", str(space), "--out", str(out)), env=ray_env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]

    trials = pl.from_arrow(ExperimentStore.open(out).trials())
    assert trials.height == 4
    diverged = trials.filter(pl.col("config.train.lr") == 1.0e30)
    completed = trials.filter(pl.col("config.train.lr") == 1.0e-3)
    assert diverged.height >= 1 and completed.height >= 1, "seed 0 samples both rates"
    assert set(diverged["status"]) == {"diverged"} and set(completed["status"]) == {"completed"}
    assert all(e.startswith("non-finite loss (nan) at epoch 1") for e in diverged["error"])
    assert completed["error"].null_count() == completed.height
    assert trials.filter(pl.col("chosen"))["config.train.lr"].to_list() == [1.0e-3]
    study = optuna.load_study(study_name="diverging", storage=f"sqlite:///{out / 'optuna.db'}")
    # Proposals that repeated a running trial are told FAIL too, marked repeat_of (see PrunableOptunaSearch).
    assert sum(t.state.name == "FAIL" and "repeat_of" not in t.user_attrs for t in study.trials) == diverged.height


@pytest.mark.timeout(420)
def test_a_configuration_that_diverges_on_every_seed_fails_and_the_other_is_chosen(prepared_lite: Path, tmp_path: Path):
    """Seed-aware: each replicate of the diverging rate is recorded diverged (it counts 0 in
    the aggregate; on every seed, the configuration fails), the other is chosen and tested
    on both seeds."""
    lr = {"train.lr": {"choice": [1.0e-3, 1.0e30]}}
    space = space_file(tmp_path, prepared_lite, trials=2, name="diverging_seeds", space=lr, seeds=[0, 1], racing={"test": "none"})
    out = tmp_path / "exp"
    proc = subprocess.run(tacfn("search", str(space), "--out", str(out)), env=ray_env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]

    trials = pl.from_arrow(ExperimentStore.open(out).trials())
    assert trials.sort("config.train.lr", "replicate").select("config.train.lr", "replicate", "status").rows() == [
        (1.0e-3, 0, "completed"), (1.0e-3, 1, "completed"), (1.0e30, 0, "diverged"), (1.0e30, 1, "diverged")
    ]
    chosen = trials.filter(pl.col("chosen"))
    assert chosen["config.train.lr"].to_list() == [1.0e-3, 1.0e-3] and chosen["test_score"].null_count() == 0
    study = optuna.load_study(study_name="diverging_seeds", storage=f"sqlite:///{out / 'optuna.db'}")
    told = {t.params["train.lr"]: t.state.name for t in study.trials if "repeat_of" not in t.user_attrs}
    assert told == {1.0e-3: "COMPLETE", 1.0e30: "FAIL"}


@pytest.mark.timeout(420)
def test_the_results_disk_full_is_one_line_and_keeps_the_last_store(prepared_lite: Path, tmp_path: Path):
    space = space_file(tmp_path, prepared_lite, trials=6, epochs=3, name="disk_full", concurrency=1)
    out = tmp_path / "exp"
    log = tmp_path / "driver.log"
    with _driver(["search", str(space), "--out", str(out)], log) as driver:
        _wait_for("a trial was recorded", lambda: (out / "log").is_dir() and any((out / "log").glob("*.trials.parquet")), driver)
        # A record writes each of its log files to .NAME.PID.tmp (the driver's pid), then renames
        # it to NAME. With those of the next records links to /dev/full, the next record fails as
        # on a full disk: ENOSPC, even for root.
        for record in range(2, 8):
            for name in ("epochs", "predictions", "trials"):
                part = f"{record:012d}-{record:012d}.{name}.parquet"
                (out / "log" / f".{part}.{driver.pid}.tmp").symlink_to("/dev/full")
        before = ExperimentStore.open(out).trials(), ExperimentStore.open(out).epochs()
        code = driver.wait(timeout=400)

    err = log.read_text()
    assert code == 2, err[-3000:]
    last = err.strip().splitlines()[-1]
    record = before[0].num_rows + 1
    part = out / "log" / f"{record:012d}-{record:012d}.epochs.parquet"
    assert last == f"tacfn: error: could not write {part} ([Errno 28] No space left on device); nothing already written was changed"
    assert "Traceback" not in err, "Tune did not log the error as a failed trial"
    after = ExperimentStore.open(out)
    assert after.trials().equals(before[0]) and after.epochs().equals(before[1]), "every earlier record is kept"
    assert 1 <= before[0].num_rows < 6
    assert not (out / "log" / f".{part.name}.{driver.pid}.tmp").is_symlink(), "the failed write's temp file is removed"


@pytest.mark.timeout(480)
def test_a_lost_node_s_trials_are_retried_on_the_others(prepared_lite: Path, tmp_path: Path):
    # The head notices a dead node after 3 missed health checks, 0.5 s apart.
    health = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "3"}
    cluster = start_cluster(workers=1, cpus=1, state_dir=tmp_path, **health)
    try:
        epochs = 20
        space = space_file(tmp_path, prepared_lite, trials=2, epochs=epochs, backbone="finetune", name="lost_node", checkpoint_interval_s=0)
        out, log = tmp_path / "exp", tmp_path / "driver.log"

        def two_nodes_busy() -> set[str]:
            running = {r["node_id"] for r in tune_results(out) if 1 <= r["epoch"] < epochs - 5}
            return running if len(running) == 2 else set()

        # Both trial processes start at once, one on each node.
        with _driver(["search", str(space), "--out", str(out), "--address", cluster.address], log, TUNE_MAX_PENDING_TRIALS_PG="2") as driver:
            _wait_for("trials ran on both nodes", two_nodes_busy, driver)
            lost = cluster.process_groups()["node_1"]
            os.killpg(lost, signal.SIGKILL)  # the worker node's raylet, its agents and its trial processes
            assert driver.wait(timeout=400) == 0, log.read_text()[-3000:]
    finally:
        stop_cluster(cluster)

    trials = _every_trial_once(out, trials=2, epochs=epochs)
    assert trials["node_id"].n_unique() == 1, "every trial ended on the remaining node"
    survivor = trials["node_id"][0]
    reported = tune_results(out)
    moved = {r["trial_id"] for r in reported if r["node_id"] != survivor}
    assert moved, "a trial was running on the lost node"
    for trial_id in moved:
        resumed = [r["epoch"] for r in reported if r["trial_id"] == trial_id and r["node_id"] == survivor]
        assert resumed[0] > 1 and resumed == list(range(resumed[0], epochs + 1)), "resumed from its checkpoint"
