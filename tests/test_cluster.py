"""Searches on a real multi-node Ray cluster: a head and a worker node on this machine,
started by ``platform/local_cluster.sh``; one search submitted as a Ray job, one driven
with ``--address``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from _cluster import REPO, Cluster, ray_env, space_file, start_cluster, stop_cluster, tacfn
from tacfn.store import ExperimentStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A head node and one worker node, 1 CPU each."""
    running = start_cluster(workers=1, cpus=1, state_dir=tmp_path_factory.mktemp("cluster"))
    try:
        yield running
    finally:
        stop_cluster(running)


def _check_store(out: Path, trials: int) -> pl.DataFrame:
    """The store holds every trial once, completed, with its epochs once; returns the trials."""
    store = ExperimentStore.open(out)
    table = pl.from_arrow(store.trials())
    assert table.height == trials and table["trial_id"].n_unique() == trials
    assert set(table["status"]) == {"completed"}
    assert table.filter(pl.col("chosen")).height == 1
    epochs = pl.from_arrow(store.epochs())
    assert epochs.group_by(["trial_id", "epoch"]).len()["len"].max() == 1
    assert epochs.height == table["epochs_run"].sum()
    return table


@pytest.mark.timeout(300)
def test_the_script_starts_a_head_and_a_worker_node(cluster: Cluster):
    groups = cluster.process_groups()
    assert set(groups) == {"head", "node_1"} and len(set(groups.values())) == 2
    show = "import json, ray; ray.init(); print(json.dumps(sorted(n['Resources'].get('node_1', 0) for n in ray.nodes() if n['Alive'])), ray.cluster_resources()['CPU'])"
    proc = subprocess.run([sys.executable, "-c", show], env=ray_env(RAY_ADDRESS=cluster.address), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["[0,", "1.0]", "2.0"], "two nodes of 1 CPU; the worker node carries node_1"


@pytest.mark.timeout(420)
def test_search_submitted_as_a_ray_job(cluster: Cluster, prepared_lite: Path, tmp_path: Path):
    space = space_file(tmp_path, prepared_lite, trials=4, name="job")
    out = tmp_path / "exp"
    submit = [
        "ray", "job", "submit", "--address", cluster.dashboard, "--working-dir", str(REPO), "--",
        "python", "-m", "tacfn.cli", "search", str(space), "--out", str(out),
    ]  # fmt: skip
    # The job's driver runs on the head node, with the PATH the cluster started with: this virtualenv first.
    proc = subprocess.run(submit, cwd=REPO, env=ray_env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "succeeded" in proc.stdout and "best trial" in proc.stdout
    _check_store(out, 4)


@pytest.mark.timeout(420)
def test_search_with_address_runs_trials_on_both_nodes(cluster: Cluster, prepared_lite: Path, tmp_path: Path):
    # Trials of about 10 s: Tune asks for the second trial's process once the first trial
    # runs, and that process (seconds to start) must be up before the first trial ends, or
    # the first process, reused, runs every trial.
    space = space_file(tmp_path, prepared_lite, trials=4, epochs=20, backbone="finetune", name="address")
    out = tmp_path / "exp"
    env = ray_env(TUNE_MAX_PENDING_TRIALS_PG="2")  # both trial processes start at once
    proc = subprocess.run(tacfn("search", str(space), "--out", str(out), "--address", cluster.address), env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _check_store(out, 4)
    assert trials["node_id"].null_count() == 0
    assert trials["node_id"].n_unique() == 2, "two trials at a time on two 1-CPU nodes: one on each"
