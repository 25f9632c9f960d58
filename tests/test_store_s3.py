"""The results store, searches, ablations and dashboards on S3: a moto server on loopback
speaks the real S3 protocol to pyarrow (the store), Ray (its experiment and checkpoints)
and boto3 (what the tests look at)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import optuna
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from moto.server import ThreadedMotoServer

from dashboards._loading import state_version
from tacfn.cli import main
from tacfn.errors import ConfigError, DataError
from tacfn.store import ExperimentStore, Location, read_table

BUCKET = "tacfn-results"
SPEC = {"space": {"train.lr": {"float": [1e-4, 1e-2]}}, "trials": 3}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with the bucket ``tacfn-results``; the environment points
    pyarrow, Ray and boto3 (and the subprocesses they start) at it."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            mp.delenv(name, raising=False)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server: str) -> str:
    """A fresh ``s3://tacfn-results/<unique>`` prefix."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


def _objects(uri: str) -> dict[str, bytes]:
    """Every object under ``uri``: key relative to it -> content."""
    prefix = uri.removeprefix(f"s3://{BUCKET}/") + "/"
    client = boto3.client("s3")
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix) for o in page.get("Contents", [])]
    return {k.removeprefix(prefix): client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def _put(uri: str, data: bytes) -> None:
    boto3.client("s3").put_object(Bucket=BUCKET, Key=uri.removeprefix(f"s3://{BUCKET}/"), Body=data)


def _epochs(n: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0 / e, "val_score": 0.1 * e} for e in range(1, n + 1)]


# --- the store --------------------------------------------------------------------------------


def test_store_round_trip_on_s3(s3: str) -> None:
    store = ExperimentStore.create(s3 + "/", "search", "demo", SPEC, hardware={"gpus": 0.25})
    assert store.root == s3 and repr(store) == f"ExperimentStore({s3!r}, kind='search', name='demo')"
    assert store.trials().num_rows == 0
    empty = state_version(s3)
    store.record_trial({"trial_id": "t1", "status": "running", "config.train.lr": 1e-3}, _epochs(1))
    assert state_version(s3) != empty, "the live dashboard sees the new trials.parquet"
    store.record_trial({"trial_id": "t2", "status": "completed", "val_score": 0.4, "config.train.lr": 2e-3}, _epochs(3))
    store.record_trial(  # t1 again: its rows are replaced, not added
        {"trial_id": "t1", "status": "completed", "val_score": 0.6, "config.train.lr": 1e-3},
        _epochs(2),
        [{"split": "test", "sample_id": "a", "label": 1, "pred": 1}],
    )

    again = ExperimentStore.open(s3)
    assert again.experiment["hardware"]["gpus"] == 0.25
    trials = {r["trial_id"]: r for r in again.trials().to_pylist()}
    assert {k: (r["status"], r["val_score"]) for k, r in trials.items()} == {"t1": ("completed", 0.6), "t2": ("completed", 0.4)}
    assert sorted(again.epochs()["trial_id"].to_pylist()) == ["t1", "t1", "t2", "t2", "t2"]
    assert again.predictions().to_pylist()[0]["sample_id"] == "a"
    assert again.completed_trial_ids() == {"t1", "t2"}

    # One object per table a record changes, in the record log: nothing is re-uploaded.
    logged = sorted(name.split(".")[1] for name in _objects(s3) if name.startswith("log/0"))
    assert logged == ["epochs"] * 3 + ["predictions"] + ["trials"] * 3
    assert again.compact()  # as a finished search does
    files = _objects(s3)
    assert set(files) - {"", "log/"} == {"experiment.json", "trials.parquet", "epochs.parquet", "predictions.parquet"}
    assert json.loads(files["experiment.json"])["name"] == "demo"
    # Plain Parquet objects: any reader opens them, and read_table takes the URI itself.
    assert pq.read_table(pa.BufferReader(files["trials.parquet"])).num_rows == 2
    assert read_table(f"{s3}/trials.parquet").num_rows == 2

    assert ExperimentStore.create(s3, "search", "demo", SPEC).experiment == again.experiment  # resume
    with pytest.raises(ConfigError, match=rf"{s3} already holds search 'demo' with a different spec"):
        ExperimentStore.create(s3, "search", "demo", {**SPEC, "trials": 4})


def test_update_trials_on_s3_changes_trials_alone(s3: str) -> None:
    store = ExperimentStore.create(s3, "search", "demo", SPEC)
    store.record_trial({"trial_id": "t1", "status": "completed", "val_score": 0.6}, _epochs(2), [{"split": "test", "sample_id": "a", "label": 1, "pred": 1}])
    before = _objects(s3)
    store.update_trials({"t1": {"pareto": True}})
    after = _objects(s3)
    assert all(after[k] == v for k, v in before.items()), "no object is rewritten"
    assert [k.split(".")[1] for k in after.keys() - before.keys()] == ["trials"], "one new object, of the trial's row"
    assert ExperimentStore.open(s3).trials()["pareto"].to_pylist() == [True]
    assert store.trial_epochs("t1")["epoch"].to_pylist() == [1, 2]


def test_a_truncated_parquet_object_gives_the_one_line_error(s3: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = ExperimentStore.create(s3, "search", "demo", SPEC)
    store.record_trial({"trial_id": "t1", "status": "completed"}, _epochs(2))
    store.compact()
    whole = _objects(s3)["trials.parquet"]
    _put(f"{s3}/trials.parquet", whole[:-20])
    with pytest.raises(DataError, match=rf"^{s3}/trials.parquet: not a readable Parquet file \("):
        store.trials()
    assert store.epochs().num_rows == 2  # the other tables still read
    with pytest.raises(DataError, match=rf"^{s3}/missing.parquet does not exist$"):
        read_table(f"{s3}/missing.parquet")

    _put(f"{s3}/experiment.json", b'{"schema_version": 1, "kind"')
    assert main(["search", "--out", s3, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tacfn: error: {s3}/experiment.json: unreadable experiment file (") and err.count("\n") == 1


def test_a_failed_write_leaves_the_previous_object(s3: str) -> None:
    store = ExperimentStore.create(s3, "search", "demo", SPEC)
    store.record_trial({"trial_id": "t1", "status": "completed"})
    before = _objects(s3)

    def fails_halfway(f) -> None:
        f.write(b"PAR1 half a file")
        raise pa.ArrowIOError("disk on fire")

    with pytest.raises(DataError, match=rf"could not write {s3}/trials.parquet \(disk on fire\); nothing already written was changed"):
        Location(s3).write("trials.parquet", fails_halfway)
    assert _objects(s3) == before
    assert store.trials()["trial_id"].to_pylist() == ["t1"]


def test_a_missing_bucket_and_uri_options_are_one_line_errors(s3_server: str) -> None:
    with pytest.raises(DataError, match=r"cannot create the experiment folder s3://no-such-bucket/exp \(.*no-such-bucket"):
        ExperimentStore.create("s3://no-such-bucket/exp", "search", "demo", SPEC)
    with pytest.raises(ConfigError, match=r"options in the URI are not supported"):
        ExperimentStore.create(f"s3://{BUCKET}/exp?region=eu-west-1", "search", "demo", SPEC)


# --- the command line on S3 ---------------------------------------------------------------------


def _tacfn(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tacfn.cli", *args], capture_output=True, text=True, timeout=500, cwd=cwd)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_search_and_dashboard_on_s3(s3: str, prepared_lite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TACFN_HOME", str(tmp_path / "home"))  # where the Optuna file is staged
    space = {
        "name": "tiny_s3",
        "base": {
            "model": {"preset": "lite", "backbone": "frozen"},
            "data": {"path": str(prepared_lite), "cache_dir": str(tmp_path / "cache")},
            "train": {"epochs": 2, "batch_size": 8},
        },
        "space": {"model.fusion.name": {"choice": ["tacfn", "concat"]}, "train.lr": {"float": [1.0e-4, 1.0e-2], "log": True}},
        "search": {"trials": 3, "concurrency": 2, "scheduler": "none", "seed": 0},
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    proc = _tacfn("search", "space.yaml", "--out", s3, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"results: {s3}" in proc.stdout

    store = ExperimentStore.open(s3)
    trials = pl.from_arrow(store.trials())
    assert trials.height == 3 and set(trials["status"]) == {"completed"}
    assert trials.filter(pl.col("chosen")).height == 1 and trials["test_score"].null_count() == 2
    assert pl.from_arrow(store.epochs()).height == 6

    files = _objects(s3)
    assert any(k.startswith("ray/") for k in files), "Ray keeps its experiment (and checkpoints) under the URI too"
    db = tmp_path / "downloaded.db"
    db.write_bytes(files["optuna.db"])
    study = optuna.load_study(study_name="tiny_s3", storage=f"sqlite:///{db}")
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)

    proc = _tacfn("search", "space.yaml", "--out", s3, cwd=tmp_path)
    assert proc.returncode == 2 and f"{s3} already holds an experiment" in proc.stderr

    proc = _tacfn("dashboard", s3, "--out", "local.html", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (tmp_path / "local.html").read_text()
    assert "tiny_s3 (search)" in page and s3 in page
    proc = _tacfn("dashboard", s3, cwd=tmp_path)  # a URI's page defaults to this folder
    assert proc.returncode == 0 and (tmp_path / "dashboard.html").is_file(), proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ablation_on_s3(s3: str, prepared_lite: Path, tmp_path: Path) -> None:
    plan = {
        "name": "abl_s3",
        "base": {"model": {"preset": "lite", "backbone": "frozen"}, "data": {"path": str(prepared_lite), "cache_dir": str(tmp_path / "cache")}, "train": {"epochs": 1, "batch_size": 8}},
        "baseline": "tacfn",
        "variants": {"tacfn": {}, "no_cross_modal": {"model.fusion.name": "concat"}},
        "seeds": [0],
        "folds": [0],
        "concurrency": 2,
    }
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    proc = _tacfn("ablate", "plan.yaml", "--out", s3, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"results: {s3}" in proc.stdout
    trials = pl.from_arrow(ExperimentStore.open(s3).trials())
    assert sorted(trials["variant"]) == ["no_cross_modal", "tacfn"] and set(trials["status"]) == {"completed"}
