"""Experiment trackers, read back with each library's own reader: MLflow's database through
``mlflow.search_runs``, W&B's offline transaction log (``run-ID.wandb``) record by record,
TensorBoard's event files through its ``EventAccumulator``. W&B stays offline: nothing here
reaches a network.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from tacfn.cli import main
from tacfn.errors import ConfigError
from tacfn.search import parse_plan, parse_space
from tacfn.search._space_schema import SearchSettings
from tacfn.store import ExperimentStore
from tacfn.trackers import best_epoch, check_installed, end_metrics, with_destinations
from tacfn.trackers._schema import parse_trackers

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(autouse=True)
def _offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B offline, quiet and without error reports (which would go to the network), its
    settings and caches in the test's folder."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))


# --- readers ------------------------------------------------------------------------------


def mlflow_runs(uri: str, experiment: str) -> dict[str, dict]:
    """Run name -> {params, tags, metrics (last value), history (metric -> [(step, value)]), status}."""
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(uri)
    frame = mlflow.search_runs(experiment_names=[experiment])
    runs = {}
    for row in frame.to_dict("records"):
        metrics = {k.removeprefix("metrics."): v for k, v in row.items() if k.startswith("metrics.")}
        runs[row["tags.mlflow.runName"]] = {
            "params": {k.removeprefix("params."): v for k, v in row.items() if k.startswith("params.")},
            # search_runs gives every run every tag column: a tag another run has is NaN here
            "tags": {k.removeprefix("tags."): v for k, v in row.items()
                     if k.startswith("tags.") and not k.startswith("tags.mlflow.") and isinstance(v, str)},
            "metrics": metrics,
            "history": {
                name: [(m.step, m.value) for m in client.get_metric_history(row["run_id"], name)] for name in ("val_score", "best_epoch")
            },
            "status": row["status"],
        }
    return runs


def wandb_records(run_file: Path) -> list[dict]:
    """The records of a W&B transaction log (``run-ID.wandb``), each as a dict.

    The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version), then
    32 KiB blocks of chunks, each with a 7-byte header (CRC32, length, type: 1 whole, 2 first,
    3 middle, 4 last); a record is a protobuf ``wandb_internal_pb2.Record``.
    """
    from google.protobuf.json_format import MessageToDict
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", run_file
    records, chunk, pos = [], b"", 7
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(MessageToDict(record))
            chunk = b""
    return records


def wandb_runs(folder: Path) -> dict[str, dict]:
    """Offline W&B runs under ``folder/wandb``: run name -> {config, tags, group, history (step -> metrics)}."""
    runs = {}
    for run_file in sorted(folder.glob("wandb/offline-run-*/run-*.wandb")):
        records = wandb_records(run_file)
        run = next(r["run"] for r in records if "run" in r)
        history: dict[int, dict] = {}
        for record in records:
            if "history" in record:
                items = {"/".join(i.get("nestedKey", [i.get("key")])): json.loads(i["valueJson"]) for i in record["history"]["item"]}
                history.setdefault(int(record["history"]["step"]["num"]), {}).update(items)
        config = {u["key"]: json.loads(u["valueJson"]) for u in run["config"]["update"]}
        runs[run["displayName"]] = {"config": config, "tags": run.get("tags", []), "group": run.get("runGroup"), "history": history}
    return runs


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of the event files in ``folder``: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def same_series(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> bool:
    """The same steps, and values equal up to float32 (TensorBoard keeps float32)."""
    return [step for step, _ in got] == [step for step, _ in want] and [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)


# --- the setting ----------------------------------------------------------------------------


def _space(**search) -> dict:
    return {"name": "tiny", "space": {"train.lr": {"float": [1.0e-4, 1.0e-2], "log": True}}, "search": search}


def test_loggers_read_as_written_and_a_spec_without_them_is_unchanged():
    spec = parse_space(_space(loggers=["mlflow", {"wandb": {"project": "p", "mode": "online"}}, {"tensorboard": None}]))
    assert [t.name for t in spec.search.loggers] == ["mlflow", "wandb", "tensorboard"]
    dumped = spec.search.model_dump(mode="json", exclude_none=True)
    assert dumped["loggers"] == ["mlflow", {"wandb": {"project": "p", "mode": "online"}}, "tensorboard"]
    assert SearchSettings.model_validate(dumped) == spec.search  # a resumed search reads experiment.json back
    # No loggers (or an empty list): the spec a search or plan records is the one from before loggers existed.
    for search in ({}, {"loggers": []}):
        assert "loggers" not in parse_space(_space(**search)).search.model_dump(mode="json", exclude_none=True)
    plan = {"name": "abl", "baseline": "tacfn", "variants": {"tacfn": {}, "concat": {"model.fusion.name": "concat"}}, "seeds": [0]}
    assert parse_plan(plan).loggers is None and parse_plan({**plan, "loggers": ["tensorboard"]}).loggers[0].name == "tensorboard"
    assert parse_trackers("mlflow", "run.yaml")[0].name == "mlflow"  # one name alone is a list of one


@pytest.mark.parametrize(
    ("loggers", "message"),
    [
        (["mlfow"], "search.loggers: unknown logger 'mlfow'; known: mlflow, wandb, tensorboard"),
        (["mlflow", {"mlflow": {"experiment": "x"}}], "search.loggers: each logger may be given once, but mlflow repeats"),
        ([{"mlflow": {"uri": "x"}}], "search.loggers.0.mlflow.uri: unknown key"),
        ([{"wandb": {"mode": "cloud"}}], "search.loggers.0.wandb.mode: Input should be 'offline' or 'online'"),
        ([{"mlflow": None, "wandb": None}], "each logger is a name (mlflow, wandb, tensorboard) or one name mapped to its options"),
    ],
)
def test_a_bad_logger_names_the_rule(loggers, message):
    with pytest.raises(ConfigError) as err:
        parse_space(_space(loggers=loggers), "space.yaml")
    assert message in str(err.value)


@pytest.mark.parametrize(("name", "module"), [("mlflow", "mlflow"), ("wandb", "wandb"), ("tensorboard", "tensorboardX")])
def test_a_missing_extra_is_one_line_naming_the_pip_install(name, module, monkeypatch):
    trackers = parse_trackers([name], "run.yaml")
    check_installed(trackers, "search.loggers")  # installed here: the test extra brings them
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails, as without the extra
    with pytest.raises(ConfigError) as err:
        check_installed(trackers, "search.loggers")
    assert str(err.value) == f"search.loggers: {name} needs the {name} extra: pip install 'tacfn[{name}]'"


def test_destinations_default_into_the_experiment_folder(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    trackers = parse_trackers(["mlflow", "wandb", "tensorboard"], "x")
    mlflow, wandb, tensorboard = with_destinations(trackers, tmp_path, "tiny", "search.loggers")
    assert (mlflow.tracking_uri, mlflow.experiment) == (f"sqlite:///{tmp_path}/mlflow.db", "tiny")
    assert (wandb.project, wandb.mode, wandb.dir) == ("tiny", "offline", str(tmp_path))
    assert tensorboard.logdir == str(tmp_path / "tensorboard")
    monkeypatch.setenv("WANDB_MODE", "online")  # W&B's own setting, where the space says nothing
    assert with_destinations(trackers, tmp_path, "tiny", "x")[1].mode == "online"

    given = parse_trackers([{"mlflow": {"tracking_uri": "http://mlflow:5000", "experiment": "e"}}, {"wandb": {"dir": "w"}},
                            {"tensorboard": {"logdir": "tb"}}], "x")
    monkeypatch.chdir(tmp_path)
    mlflow, wandb, tensorboard = with_destinations(given, "s3://bucket/exp", "tiny", "search.loggers")
    assert (mlflow.tracking_uri, mlflow.experiment, wandb.dir, tensorboard.logdir) == ("http://mlflow:5000", "e", str(tmp_path / "w"), str(tmp_path / "tb"))
    with pytest.raises(ConfigError, match=r"search.loggers: tensorboard writes into the --out folder by default, but s3://bucket/exp is not a local folder; give \{tensorboard: \{logdir: ...\}\}"):
        with_destinations(trackers[2:], "s3://bucket/exp", "tiny", "search.loggers")


def test_the_best_epoch_is_the_first_of_the_highest_val_score():
    epochs = [{"epoch": e, "val_score": s, "val_weighted_f1": s / 2} for e, s in [(1, 0.2), (2, 0.5), (3, 0.5), (4, 0.1)]]
    assert best_epoch(epochs)["epoch"] == 2
    assert end_metrics(epochs, {"test_score": 0.4, "error": "x"}) == {
        "epochs_run": 4, "best_epoch": 2, "best_val_score": 0.5, "best_val_weighted_f1": 0.25, "test_score": 0.4,
    }
    assert end_metrics([]) == {"epochs_run": 0}


# --- `tacfn train` --------------------------------------------------------------------------


def test_train_logs_its_run_to_every_tracker(prepared_lite: Path, tmp_path: Path):
    config = {
        "model": {"preset": "lite"},
        "data": {"path": str(prepared_lite), "cache_dir": str(tmp_path / "cache")},
        "train": {"epochs": 2, "batch_size": 8},
        "loggers": ["mlflow", "wandb", "tensorboard"],
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "one"
    assert main(["train", str(path), "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    val_scores = [(r["epoch"], r["val_score"]) for r in result["history"]]
    tags = {"config_hash", "seed", "fold"}

    run = mlflow_runs(f"sqlite:///{out}/mlflow.db", "tacfn-train")["one"]
    assert run["status"] == "FINISHED" and set(run["tags"]) == tags and run["tags"]["seed"] == "0"
    assert run["params"]["train.epochs"] == "2" and run["params"]["model.fusion.name"] == "tacfn"
    assert same_series(run["history"]["val_score"], val_scores)
    assert run["metrics"]["best_epoch"] == result["best_epoch"]
    assert run["metrics"]["test_score"] == pytest.approx(result["test"]["score"])
    assert run["metrics"]["test_missing_audio"] == pytest.approx(result["test_missing_modality"]["audio"])

    run = wandb_runs(out)["one"]
    assert run["config"]["train.epochs"] == 2 and "seed=0" in run["tags"]
    assert same_series([(step, metrics["val_score"]) for step, metrics in sorted(run["history"].items())], val_scores)
    assert run["history"][2]["test_score"] == pytest.approx(result["test"]["score"])

    scalars = tensorboard_scalars(out / "tensorboard" / "one")
    assert same_series(scalars["val_score"], val_scores)
    assert same_series(scalars["test_score"], [(2, result["test"]["score"])])


# --- searches and ablations, on a real local Ray runtime -----------------------------------


def _tacfn(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "tacfn.cli", *args], capture_output=True, text=True, timeout=500, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_a_search_logs_every_trial_to_every_tracker(prepared_lite: Path, tmp_path: Path):
    space = {
        "name": "tiny",
        "base": {"model": {"preset": "lite", "backbone": "frozen"}, "data": {"path": str(prepared_lite), "cache_dir": str(tmp_path / "cache")},
                 "train": {"epochs": 2, "batch_size": 8}},
        "space": {"model.fusion.name": {"choice": ["tacfn", "concat"]}, "train.lr": {"float": [1.0e-4, 1.0e-2], "log": True}},
        "search": {"trials": 2, "concurrency": 2, "scheduler": "none", "seed": 0, "loggers": ["mlflow", "wandb", "tensorboard"]},
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    out = tmp_path / "exp"
    _tacfn("search", "space.yaml", "--out", str(out), cwd=tmp_path)
    store = ExperimentStore.open(out)
    assert store.experiment["spec"]["search"]["loggers"] == ["mlflow", "wandb", "tensorboard"]
    trials = pl.from_arrow(store.trials())
    epochs = pl.from_arrow(store.epochs())
    assert trials.height == 2

    mlflow = mlflow_runs(f"sqlite:///{out}/mlflow.db", "tiny")
    wandb = wandb_runs(out)
    chosen = trials.filter(pl.col("chosen")).row(0, named=True)
    name = f"chosen-{chosen['trial_id']}"
    assert set(mlflow) == set(wandb) == {*trials["trial_id"], name}  # a run per trial, named by its id, and the chosen one's test run

    run, step = mlflow.pop(name), chosen["best_epoch"]  # the chosen config's test metrics, scored after every trial ended
    assert run["tags"] == {"trial_id": chosen["trial_id"], "config_hash": chosen["config_hash"], "seed": "0", "fold": "0", "chosen": "true"}
    assert run["params"]["model.fusion.name"] == chosen["param.model.fusion.name"]
    for key in ("test_score", "test_weighted_f1", "test_missing_audio", "test_missing_video", "test_ms_per_sample"):
        assert run["metrics"][key] == pytest.approx(chosen[key]), key
    assert wandb.pop(name)["history"][step]["test_score"] == pytest.approx(chosen["test_score"])
    assert same_series(tensorboard_scalars(out / "tensorboard" / name)["test_score"], [(step, chosen["test_score"])])
    for row in trials.iter_rows(named=True):
        trial_id = row["trial_id"]
        val_scores = [(r["epoch"], r["val_score"]) for r in epochs.filter(pl.col("trial_id") == trial_id).sort("epoch").iter_rows(named=True)]
        assert len(val_scores) == 2

        run = mlflow[trial_id]  # the sampled config among the whole config's params; id and hash as tags
        assert run["status"] == "FINISHED"
        assert run["params"]["model.fusion.name"] == row["param.model.fusion.name"]
        assert float(run["params"]["train.lr"]) == pytest.approx(row["param.train.lr"])
        assert run["params"]["train.epochs"] == "2" and run["params"]["model.backbone"] == "frozen"
        assert run["tags"] == {"trial_id": trial_id, "config_hash": row["config_hash"], "seed": "0", "fold": "0"}
        assert same_series(run["history"]["val_score"], val_scores)  # each epoch once, step = epoch
        assert run["history"]["best_epoch"] == [(2, row["best_epoch"])]
        assert run["metrics"]["best_val_score"] == pytest.approx(row["val_score"])

        run = wandb[trial_id]
        assert run["group"] == "tiny" and f"trial_id={trial_id}" in run["tags"] and f"config_hash={row['config_hash']}" in run["tags"]
        assert run["config"]["model.fusion.name"] == row["param.model.fusion.name"]
        assert run["config"]["train.lr"] == pytest.approx(row["param.train.lr"])
        assert same_series([(step, m["val_score"]) for step, m in sorted(run["history"].items())], val_scores)
        assert run["history"][2]["best_val_score"] == pytest.approx(row["val_score"])

        scalars = tensorboard_scalars(out / "tensorboard" / trial_id)
        assert same_series(scalars["val_score"], val_scores)
        assert same_series(scalars["best_val_score"], [(2, row["val_score"])])


@pytest.mark.slow
def test_an_ablation_tags_each_run_with_its_variant_seed_and_fold(prepared_lite: Path, tmp_path: Path):
    plan = {
        "name": "abl",
        "base": {"model": {"preset": "lite", "backbone": "frozen"}, "data": {"path": str(prepared_lite), "cache_dir": str(tmp_path / "cache")},
                 "train": {"epochs": 1, "batch_size": 8}},
        "baseline": "tacfn",
        "variants": {"tacfn": {}, "no_cross_modal": {"model.fusion.name": "concat"}},
        "seeds": [3],
        "folds": [1],
        "concurrency": 2,
        "loggers": ["mlflow", "tensorboard"],
    }
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    out = tmp_path / "exp"
    _tacfn("ablate", "plan.yaml", "--out", str(out), cwd=tmp_path)
    trials = pl.from_arrow(ExperimentStore.open(out).trials())

    runs = mlflow_runs(f"sqlite:///{out}/mlflow.db", "abl")
    assert set(runs) == {"tacfn-seed3-fold1", "no_cross_modal-seed3-fold1"}
    for row in trials.iter_rows(named=True):
        run = runs[f"{row['variant']}-seed3-fold1"]
        assert run["tags"] == {"variant": row["variant"], "seed": "3", "fold": "1", "trial_id": row["trial_id"], "config_hash": row["config_hash"]}
        assert run["params"]["model.fusion.name"] == row["config.model.fusion.name"]
        assert run["metrics"]["test_score"] == pytest.approx(row["test_score"])  # an ablation's run scores its test fold itself
        assert run["metrics"]["best_val_score"] == pytest.approx(row["val_score"])
        assert same_series(tensorboard_scalars(out / "tensorboard" / f"{row['variant']}-seed3-fold1")["test_score"], [(1, row["test_score"])])
