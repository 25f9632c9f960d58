"""The results store: experiment.json, typed Parquet tables, upserts and atomic writes."""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tacfn.errors import ConfigError, DataError
from tacfn.files import temp_path
from tacfn.store._log import FANOUT
from tacfn.store import (
    EXPERIMENT_FILE,
    SCHEMA_VERSION,
    ExperimentStore,
    Location,
    flatten_config,
    git_commit,
    TRIALS,
    param_columns,
    read_results,
    read_table,
)

SPEC = {
    "space": {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
    "num_samples": 3,
    "data": Path("/data/ravdess"),
}
_OK = {"trial_id": "t", "status": "completed"}
REPO = Path(__file__).resolve().parents[1]


def _store(tmp_path: Path) -> ExperimentStore:
    return ExperimentStore.create(tmp_path / "exp", "search", "demo", SPEC, hardware={"gpus": 2})


def _epochs(n: int, loss: float = 1.0) -> list[dict]:
    return [
        {
            "epoch": e,
            "train_loss": loss / e,
            "train_score": 0.1 * e,
            "val_loss": loss,
            "val_score": 0.1 * e,
            "val_weighted_f1": 0.05 * e,
            "seconds": 0.5,
        }
        for e in range(1, n + 1)
    ]


def _predictions(ids: list[str]) -> list[dict]:
    return [{"split": "test", "sample_id": s, "label": i % 8, "pred": (i + 1) % 8} for i, s in enumerate(ids)]


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (the record log's too) by its path in the folder."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- experiment.json --------------------------------------------------------------------------


def test_create_writes_experiment_json_and_open_reads_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # not a git repository
    store = _store(tmp_path)
    on_disk = json.loads((tmp_path / "exp" / EXPERIMENT_FILE).read_text())
    assert on_disk == store.experiment
    assert on_disk["schema_version"] == SCHEMA_VERSION == 3 and on_disk["kind"] == "search" and on_disk["name"] == "demo"
    assert on_disk["spec"] == {**SPEC, "data": "/data/ravdess"}
    created = datetime.fromisoformat(on_disk["created_at"])
    assert created.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - created).total_seconds()) < 3600
    assert set(on_disk["versions"]) == {"python", "tacfn", "torch", "ray", "optuna", "pyarrow"}
    assert on_disk["versions"]["python"] == platform.python_version()
    assert on_disk["versions"]["pyarrow"] == pa.__version__
    assert on_disk["git_commit"] is None
    assert on_disk["hardware"] == {"cpu_count": os.cpu_count(), "platform": platform.platform(), "gpus": 2}

    reopened = ExperimentStore.open(tmp_path / "exp")
    assert reopened.experiment == store.experiment
    assert (reopened.kind, reopened.name) == ("search", "demo")
    assert reopened.trials().num_rows == 0 and "val_score" in reopened.trials().column_names


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_commit_is_the_head_of_the_repository(tmp_path: Path) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "a.txt").write_text("a")
    subprocess.run([*git, "add", "a.txt"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], cwd=tmp_path, check=True)
    log = subprocess.run(["git", "log", "-1", "--format=%H"], cwd=tmp_path, capture_output=True, text=True)
    head = log.stdout.strip()
    assert len(head) == 40
    assert git_commit(tmp_path) == head
    (tmp_path / "not_a_repo").mkdir()
    subprocess.run([*git, "init", "-q"], cwd=tmp_path / "not_a_repo", check=True)  # a repository with no commit
    assert git_commit(tmp_path / "not_a_repo") is None


def test_create_resumes_the_same_experiment_and_refuses_another(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.record_trial({"trial_id": "t1", "status": "completed"})
    before = _snapshot(store.root)
    again = _store(tmp_path)
    assert again.experiment == store.experiment and _snapshot(store.root) == before
    assert again.completed_trial_ids() == {"t1"}

    different_spec = r"already holds search 'demo' with a different spec \(differs in \['num_samples'\]\)"
    with pytest.raises(ConfigError, match=different_spec):
        ExperimentStore.create(store.root, "search", "demo", {**SPEC, "num_samples": 4})
    with pytest.raises(ConfigError, match="already holds search 'demo', not ablation 'demo'"):
        ExperimentStore.create(store.root, "ablation", "demo", SPEC)
    assert _snapshot(store.root) == before


@pytest.mark.parametrize(
    ("kind", "name", "spec", "message"),
    [
        ("sweep", "x", {}, r"`kind` must be one of \['search', 'ablation'\], but got 'sweep'"),
        ("search", "", {}, "`name` must be a non-empty string"),
        ("search", "x", {"lr": float("nan")}, "`spec` must be JSON-serialisable"),
        ("search", "x", {"f": object()}, "`spec` must be JSON-serialisable"),
    ],
)
def test_create_rejects_bad_arguments(tmp_path: Path, kind: str, name: str, spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExperimentStore.create(tmp_path / "exp", kind, name, spec)
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"is not a tacfn experiment folder \(no experiment.json\)"),
        ('{"schema_version": 1, "kind": "search", "name"', r"experiment.json: unreadable experiment file"),
        (
            '{"schema_version": 4, "kind": "search", "name": "x", "spec": {}}',
            r"schema_version 4 is newer than this tacfn reads \(version 3\)",
        ),
        (
            '{"schema_version": 1, "kind": "grid", "name": "x", "spec": {}}',
            r"`kind` must be one of \['search', 'ablation'\]",
        ),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_open_rejects_what_is_not_an_experiment(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / EXPERIMENT_FILE).write_text(content)
    with pytest.raises(DataError, match=message) as info:
        ExperimentStore.open(tmp_path)
    assert str(tmp_path) in str(info.value)


# --- tables -----------------------------------------------------------------------------------


def _three_trials(store: ExperimentStore) -> None:
    config = {
        "train": {"lr": 0.001, "epochs": 3},
        "model": {"fusion": {"heads": 8, "causal": True}, "modalities": ["audio", "video"], "backbone": None},
    }
    store.record_trial(
        {
            "trial_id": "t1",
            "status": "completed",
            "seed": 0,
            "fold": 1,
            "config_hash": "abc",
            **flatten_config(config),
            "val_score": 0.5,
            "val_weighted_f1": 0.45,
            "best_epoch": 2,
            "epochs_run": 3,
            "test_score": 0.4,
            "test_weighted_f1": 0.35,
            "test_missing_audio": 0.25,
            "seconds": 12.5,
            "started_at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
            "finished_at": datetime(2025, 1, 2, 3, 4, 17, tzinfo=timezone.utc).timestamp(),
            "num_parameters": 1000,
            "trainable_parameters": 900,
            "node": "node-a",
            "error": None,
        },
        _epochs(3),
        _predictions(["c1", "c2"]),
    )
    store.record_trial(
        {
            "trial_id": "t2",
            "status": "pruned",
            "seed": 1,
            "fold": 1,
            "config_hash": "def",
            **flatten_config({"train": {"lr": 1, "epochs": 2.5}, "model": {"fusion": {"causal": False}}}),
            "val_score": 0.3,
            "best_epoch": 1,
            "epochs_run": 1,
            "node": "node-b",
            "started_at": "2025-01-02T03:05:00+00:00",
        },
        _epochs(1),
    )
    store.record_trial(
        {
            "trial_id": "t3",
            "status": "failed",
            "seed": 2,
            "fold": 2,
            **flatten_config({"train": {"lr": 0.01}, "model": {"fusion": {"heads": 4}}}),
            "error": "RuntimeError: CUDA out of memory",
        },
        predictions=[
            {"split": "test", "sample_id": "s1", "task": task, "label": 1, "pred": pred}
            for task, pred in (("happy", 1), ("sad", 0))
        ],
    )


def test_three_trials_have_the_specified_schema_in_pyarrow_and_polars(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _three_trials(store)
    trials = store.trials()
    assert trials.column_names[:5] == ["trial_id", "status", "seed", "fold", "config_hash"]
    assert dict(zip(trials.column_names, trials.schema.types)) == {
        "trial_id": pa.string(),
        "status": pa.string(),
        "seed": pa.int64(),
        "fold": pa.int64(),
        "config_hash": pa.string(),
        "val_score": pa.float64(),
        "val_weighted_f1": pa.float64(),
        "best_epoch": pa.int64(),
        "epochs_run": pa.int64(),
        "test_score": pa.float64(),
        "test_weighted_f1": pa.float64(),
        "seconds": pa.float64(),
        "started_at": pa.timestamp("us", tz="UTC"),
        "finished_at": pa.timestamp("us", tz="UTC"),
        "num_parameters": pa.int64(),
        "trainable_parameters": pa.int64(),
        "node": pa.string(),
        "error": pa.string(),
        "config.train.lr": pa.float64(),
        "config.train.epochs": pa.float64(),
        "config.model.fusion.heads": pa.int64(),
        "config.model.fusion.causal": pa.bool_(),
        "config.model.modalities": pa.string(),
        "config.model.backbone": pa.string(),
        "test_missing_audio": pa.float64(),
    }

    rows = {r["trial_id"]: r for r in trials.to_pylist()}

    def column(name: str) -> list:
        return [rows[t][name] for t in ("t1", "t2", "t3")]

    assert column("config.train.lr") == [0.001, 1.0, 0.01]
    assert column("config.train.epochs") == [3.0, 2.5, None]
    assert column("config.model.fusion.heads") == [8, None, 4]
    assert column("config.model.fusion.causal") == [True, False, None]
    assert column("config.model.backbone") == [None, None, None]
    assert column("test_missing_audio") == [0.25, None, None]
    assert column("error") == [None, None, "RuntimeError: CUDA out of memory"]
    assert json.loads(rows["t1"]["config.model.modalities"]) == ["audio", "video"]
    assert (rows["t1"]["finished_at"] - rows["t1"]["started_at"]).total_seconds() == 12
    assert rows["t2"]["started_at"] == datetime(2025, 1, 2, 3, 5, tzinfo=timezone.utc)
    assert store.completed_trial_ids() == {"t1"}

    assert store.compact(), "the log held three records"
    assert not (store.root / "log").exists() or not any((store.root / "log").iterdir())
    assert store.trials().equals(trials), "compacting changes no row"
    polars = pl.read_parquet(store.root / "trials.parquet")
    assert polars.schema["seed"] == pl.Int64 and polars.schema["config.model.fusion.causal"] == pl.Boolean
    assert polars.schema["config.train.epochs"] == pl.Float64 and polars.schema["node"] == pl.String
    assert polars.schema["started_at"] == pl.Datetime("us", "UTC")
    assert polars.to_dicts() == pq.read_table(store.root / "trials.parquet").to_pylist()

    epochs = pl.read_parquet(store.root / "epochs.parquet")
    assert epochs.columns == [
        "trial_id", "epoch", "train_loss", "train_score", "val_loss", "val_score", "val_weighted_f1", "seconds"
    ]
    assert epochs.schema["epoch"] == pl.Int64 and epochs.schema["val_score"] == pl.Float64
    assert epochs.group_by("trial_id").len().sort("trial_id").rows() == [("t1", 3), ("t2", 1)]

    predictions = pl.read_parquet(store.root / "predictions.parquet")
    assert dict(predictions.schema) == {
        "trial_id": pl.String,
        "split": pl.String,
        "sample_id": pl.String,
        "task": pl.String,
        "label": pl.Int64,
        "pred": pl.Int64,
    }
    assert predictions.select("trial_id", "sample_id", "task", "pred").rows() == [
        ("t1", "c1", None, 1),
        ("t1", "c2", None, 2),
        ("t3", "s1", "happy", 1),
        ("t3", "s1", "sad", 0),
    ]


def test_mixed_config_types_fall_back_to_strings(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.record_trial({**_OK, "trial_id": "a", "config.heads": 8, "config.flag": True, "extra": 1})
    assert store.trials().schema.field("extra").type == pa.int64()
    store.record_trial({**_OK, "trial_id": "b", "config.heads": "auto", "config.flag": 1, "extra": 0.5})
    trials = store.trials()
    assert trials["config.heads"].to_pylist() == ["8", "auto"]
    assert trials["config.flag"].to_pylist() == ["true", "1"]
    assert trials["extra"].to_pylist() == [1.0, 0.5]


def test_sampled_params_round_trip_as_typed_param_columns(tmp_path: Path) -> None:
    """One column per axis, after the config columns; null where an axis was not sampled,
    whatever the config holds; keys that are no axis are left out."""
    store = _store(tmp_path)
    assert store.records_params
    axes = ["model.fusion.name", "model.fusion.heads", "train.lr"]
    sampled = {
        "a": {"model.fusion.name": "tacfn", "model.fusion.heads": 8, "train.lr": 1e-3, "not.an.axis": 1},
        "b": {"model.fusion.name": "concat", "train.lr": 0.01},  # no heads: the block has no attention
    }
    for trial_id, params in sampled.items():
        config = flatten_config({"model": {"fusion": {"name": params["model.fusion.name"], "heads": 4}}})
        store.record_trial({**_OK, "trial_id": trial_id, **config, "latency_ms": 2.0, **param_columns(params, axes)})
    trials = store.trials()
    assert trials.column_names[-6:] == [
        "config.model.fusion.heads", "config.model.fusion.name",
        "param.model.fusion.heads", "param.model.fusion.name", "param.train.lr", "latency_ms",
    ]
    assert [trials.schema.field(f"param.{k}").type for k in axes] == [pa.string(), pa.int64(), pa.float64()]
    assert trials.select([f"param.{k}" for k in axes]).to_pylist() == [
        {"param.model.fusion.name": "tacfn", "param.model.fusion.heads": 8, "param.train.lr": 1e-3},
        {"param.model.fusion.name": "concat", "param.model.fusion.heads": None, "param.train.lr": 0.01},
    ]
    assert trials["config.model.fusion.heads"].to_pylist() == [4, 4]


def test_a_version_1_experiment_opens_and_records_no_params(tmp_path: Path) -> None:
    root = _store(tmp_path).root
    experiment = json.loads((root / EXPERIMENT_FILE).read_text())
    (root / EXPERIMENT_FILE).write_text(json.dumps({**experiment, "schema_version": 1}))
    old = ExperimentStore.create(root, "search", "demo", SPEC)  # as a resumed search reopens it
    assert old.experiment["schema_version"] == 1 and not old.records_params


def test_recording_a_trial_again_replaces_its_rows_in_every_table(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.record_trial({"trial_id": "t1", "status": "running"}, _epochs(3), _predictions(["a", "b", "c"]))
    store.record_trial({"trial_id": "t2", "status": "completed", "val_score": 0.9}, _epochs(2), _predictions(["a"]))
    assert store.completed_trial_ids() == {"t2"}

    resumed = {"trial_id": "t1", "status": "completed", "val_score": 0.7}
    store.record_trial(resumed, _epochs(2, loss=5.0), _predictions(["z"]))

    trials = sorted((r["trial_id"], r["status"], r["val_score"]) for r in store.trials().to_pylist())
    assert trials == [("t1", "completed", 0.7), ("t2", "completed", 0.9)]
    epochs = store.epochs()
    assert epochs.num_rows == 4
    assert [(r["epoch"], r["val_loss"]) for r in epochs.to_pylist() if r["trial_id"] == "t1"] == [(1, 5.0), (2, 5.0)]
    predictions = sorted((r["trial_id"], r["sample_id"]) for r in store.predictions().to_pylist())
    assert predictions == [("t1", "z"), ("t2", "a")]
    assert store.completed_trial_ids() == {"t1", "t2"}


@pytest.mark.parametrize(
    ("row", "epochs", "predictions", "message"),
    [
        (
            {**_OK, "status": "done"},
            [],
            [],
            r"`status` must be one of \['completed', 'pruned', 'failed', 'diverged', 'running'\], but got 'done'",
        ),
        ({**_OK, "trial_id": ""}, [], [], "`trial_id` must be a non-empty string"),
        ({**_OK, "seed": 1.5}, [], [], r"row: `seed` must be an integer or None, but got 1.5"),
        ({**_OK, "best_epoch": True}, [], [], "`best_epoch` must be an integer"),
        ({**_OK, "started_at": "yesterday"}, [], [], "`started_at` must be an ISO 8601 time"),
        ({**_OK, "config.x": object()}, [], [], "`config.x` must be None, a bool, a number"),
        (_OK, [{"epoch": 1}, {"train_loss": 1.0}], [], r"epochs\[1\]: `epoch` is required"),
        (_OK, [], [{"trial_id": "u", "split": "test"}], r"predictions\[0\] has trial_id 'u', but the trial is 't'"),
        (
            _OK,
            [],
            [{"split": "test", "sample_id": "a", "label": "happy", "pred": 1}],
            r"predictions\[0\]: `label` must be an integer",
        ),
    ],
)
def test_record_trial_rejects_bad_values_before_writing(
    tmp_path: Path, row: dict, epochs: list, predictions: list, message: str
) -> None:
    store = _store(tmp_path)
    with pytest.raises(ValueError, match=message):
        store.record_trial(row, epochs, predictions)
    assert sorted(p.name for p in store.root.iterdir()) == [EXPERIMENT_FILE]


def test_flatten_config_makes_dotted_columns_and_json_strings() -> None:
    """An empty mapping holds no setting, at any depth, so it gives no column."""
    cfg = {
        "train": {"lr": 0.001, "amp": False},
        "model": {"modalities": ["audio", "video"], "fusion": {}, "encoder": {"video": {}}, "dropout": {"audio": 0.1}},
        "seed": 3,
    }
    assert flatten_config(cfg) == {
        "config.train.lr": 0.001,
        "config.train.amp": False,
        "config.model.modalities": '["audio", "video"]',
        "config.model.dropout.audio": 0.1,
        "config.seed": 3,
    }
    assert flatten_config({"a": {"b": 1}}, prefix="") == {"a.b": 1}


# --- changing recorded trials ------------------------------------------------------------------


def _files(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Each file's bytes, inode and modification time, by its path in the folder: a file
    rewritten even with the same bytes gets a new inode (the atomic write renames a new file
    over it)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def _written(before: dict, after: dict) -> list[str]:
    """The tables of the files written between two :func:`_files`; an earlier file changed or
    removed is an assertion error (recording appends)."""
    assert all(after.get(name) == kept for name, kept in before.items()), "an earlier file was rewritten or removed"
    return sorted(name.rsplit(".", 2)[-2] for name in after.keys() - before.keys())


def _scored_search(tmp_path: Path) -> ExperimentStore:
    """t1 and t2 completed, t3 failed; t2 is the chosen trial, with its test predictions."""
    store = _store(tmp_path)
    store.record_trial({**_OK, "trial_id": "t1", "val_score": 0.6, "seed": 0, "config.lr": 0.1, "extra": 1.5}, _epochs(3))
    store.record_trial(
        {**_OK, "trial_id": "t2", "val_score": 0.8, "seed": 1, "config.lr": 0.01, "chosen": True, "test_score": 0.7},
        _epochs(2),
        _predictions(["a"]),
    )
    store.record_trial({"trial_id": "t3", "status": "failed", "seed": 2, "config.lr": 1.0, "error": "boom"}, _epochs(1))
    return store


def test_update_trials_rewrites_trials_alone(tmp_path: Path) -> None:
    store = _scored_search(tmp_path)
    before, files = store.trials(), _files(store.root)

    # What a search's Pareto marking does: one flag on every completed trial, in one write.
    store.update_trials({"t1": {"pareto": False}, "t2": {"pareto": True}})

    assert _written(files, _files(store.root)) == ["trials"], "one file, of the two trials' rows"
    trials = store.trials()
    assert trials.column_names == [*before.column_names, "pareto"]
    assert trials.select(before.column_names).equals(before), "every other cell is as it was"
    assert trials["pareto"].type == pa.bool_() and trials["pareto"].to_pylist() == [False, True, None]
    assert store.predictions()["trial_id"].to_pylist() == ["t2"], "the chosen trial keeps its predictions"


def test_a_search_marking_its_pareto_front_keeps_the_chosen_trials_predictions(tmp_path: Path) -> None:
    """Marking re-recorded every trial with its epochs but not its predictions, so a resumed
    multi-objective search lost its chosen trial's predictions (its confusion matrix)."""
    from tacfn.search._choosing import _mark_pareto, _unchoose

    store = _scored_search(tmp_path)
    completed = [{**t, "latency_ms": cost} for t, cost in zip(store.trials().to_pylist()[:2], (1.0, 2.0))]
    files = _files(store.root)

    _mark_pareto(store, completed, ["latency_ms"])

    assert store.predictions()["trial_id"].to_pylist() == ["t2"]
    assert store.trials()["pareto"].to_pylist() == [True, True, None], "t1 is cheaper, t2 scores better"
    assert _written(files, _files(store.root)) == ["trials"]

    # A resumed search that found a better trial un-chooses t2: its test metrics and
    # predictions go, its epochs stay.
    _unchoose(store, store.trials().to_pylist()[1])
    t2 = store.trials().to_pylist()[1]
    assert (t2["chosen"], t2["test_score"], t2["pareto"]) == (False, None, True)
    assert store.predictions().num_rows == 0
    assert store.trial_epochs("t2").num_rows == 2 and _written(files, _files(store.root)) == ["trials"] * 3


def test_update_trials_types_cells_as_record_trial_does(tmp_path: Path) -> None:
    store = _scored_search(tmp_path)
    store.update_trials(
        {
            "t1": {"seed": 7.0, "extra": "high", "started_at": "2024-05-01T12:00:00+02:00", "node": "n1"},
            "t3": {"status": "completed", "error": None, "extra": 2},
        }
    )
    trials = store.trials()
    rows = {r["trial_id"]: r for r in trials.to_pylist()}
    assert rows["t1"]["seed"] == 7 and trials["seed"].type == pa.int64()
    assert rows["t1"]["started_at"] == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    # One column, one type: a string among numbers makes it strings, formatted as Arrow casts.
    assert trials["extra"].type == pa.string() and [rows[t]["extra"] for t in ("t1", "t2", "t3")] == ["high", None, "2"]
    assert (rows["t3"]["status"], rows["t3"]["error"]) == ("completed", None)
    assert store.completed_trial_ids() == {"t1", "t2", "t3"}
    assert [r["trial_id"] for r in trials.to_pylist()] == ["t1", "t2", "t3"], "rows keep their order"


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ({"t9": {"pareto": True}}, r"`updates` must name recorded trials, but \['t9'\] are not in trials.parquet"),
        ({"t1": {"trial_id": "t0"}}, r"updates\['t1'\]: a trial's `trial_id` cannot change"),
        ({"t1": {"status": "done"}}, r"updates\['t1'\]: `status` must be one of"),
        ({"t1": {"pareto": True}, "t2": {"seed": 1.5}}, r"updates\['t2'\]: `seed` must be an integer or None, but got 1.5"),
        ({"t1": {"config.x": object()}}, r"updates\['t1'\]: `config.x` must be None, a bool, a number"),
    ],
)
def test_update_trials_rejects_bad_updates_before_writing(tmp_path: Path, updates: dict, message: str) -> None:
    store = _scored_search(tmp_path)
    files = _files(store.root)
    with pytest.raises(ValueError, match=message):
        store.update_trials(updates)
    assert _files(store.root) == files


def test_trial_epochs_reads_one_trials_curve(tmp_path: Path) -> None:
    store = _scored_search(tmp_path)
    epochs = store.trial_epochs("t1")
    assert epochs.schema == store.epochs().schema
    assert epochs["epoch"].to_pylist() == [1, 2, 3] and set(epochs["trial_id"].to_pylist()) == {"t1"}
    assert epochs.to_pylist() == [r for r in store.epochs().to_pylist() if r["trial_id"] == "t1"]
    assert store.trial_epochs("t9").num_rows == 0


def test_scoring_and_unchoosing_leave_the_epochs_alone(tmp_path: Path) -> None:
    """What a search does when a resumed run picks another trial: the new pick gets its test
    metrics and predictions, the earlier one loses both; no curve is rewritten."""
    store = _scored_search(tmp_path)
    files = _files(store.root)

    store.record_predictions("t1", _predictions(["a", "b"]))
    store.update_trials({"t1": {"chosen": True, "test_score": 0.75, "test_missing_audio": 0.5}})
    store.update_trials({"t2": {"chosen": False, "test_score": None, "test_weighted_f1": None}})
    store.record_predictions("t2", [])

    assert "epochs" not in _written(files, _files(store.root))
    rows = {r["trial_id"]: r for r in store.trials().to_pylist()}
    assert [(rows[t]["chosen"], rows[t]["test_score"]) for t in ("t1", "t2", "t3")] == [(True, 0.75), (False, None), (None, None)]
    assert rows["t1"]["test_missing_audio"] == 0.5 and rows["t2"]["test_missing_audio"] is None
    assert [(r["trial_id"], r["sample_id"]) for r in store.predictions().to_pylist()] == [("t1", "a"), ("t1", "b")]


def test_record_predictions_rewrites_predictions_alone(tmp_path: Path) -> None:
    store = _scored_search(tmp_path)
    files = _files(store.root)
    store.record_predictions("t3", _predictions(["x"]))
    after = _files(store.root)
    assert _written(files, after) == ["predictions", "trials"], "the trial's predictions, and its row pointing at them"
    assert sorted(store.predictions()["trial_id"].to_pylist()) == ["t2", "t3"]
    with pytest.raises(ValueError, match=r"`trial_id` must name a recorded trial, but 't9' is not in trials.parquet"):
        store.record_predictions("t9", _predictions(["x"]))
    with pytest.raises(ValueError, match=r"predictions\[0\]: `label` must be an integer"):
        store.record_predictions("t1", [{"split": "test", "sample_id": "a", "label": "happy", "pred": 1}])
    assert _files(store.root) == after


# --- the record log: appends, merges, compaction ------------------------------------------------


def test_recording_appends_and_reads_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record writes its own rows and touches no earlier file: its cost does not grow with
    the experiment (below a merge, it reads nothing at all)."""
    store = _store(tmp_path)

    def no_reads(self, name):
        raise AssertionError(f"recording read {name}")

    monkeypatch.setattr(Location, "read_table", no_reads)
    for i in range(FANOUT - 1):
        before = _files(store.root)
        store.record_trial({**_OK, "trial_id": f"t{i}"}, _epochs(2), _predictions(["a"]) if i % 2 else [])
        assert _written(before, _files(store.root)) == ["epochs", "predictions", "trials"] if i % 2 else ["epochs", "trials"]
    monkeypatch.undo()
    assert store.trials()["trial_id"].to_pylist() == [f"t{i}" for i in range(FANOUT - 1)]


def test_merges_keep_the_log_small_and_every_reader_sees_each_trial_once(tmp_path: Path) -> None:
    store = _store(tmp_path)
    n = 3 * FANOUT * FANOUT // 4  # past merges of merges
    for i in range(n):
        store.record_trial({**_OK, "trial_id": f"t{i}", "seed": i}, _epochs(2), _predictions([f"s{i}"]))
        if i % 7 == 3:  # a re-record: the trial again, its rows replaced, the row in its first place
            store.record_trial({**_OK, "trial_id": f"t{i - 1}", "seed": -i}, _epochs(1), [])
        if i % 11 == 5:  # a rerun that replaces an earlier attempt of the same run
            store.record_trial({**_OK, "trial_id": f"r{i}", "seed": i}, _epochs(1), [], replaces=[f"t{i - 2}"])
        log = [p.name for p in (store.root / "log").iterdir()]
        assert len(log) <= 3 * (FANOUT - 1) * 3, "fewer than FANOUT files of each size per table"
    trials = store.trials()
    ids = trials["trial_id"].to_pylist()
    assert len(ids) == len(set(ids)) and "t3" not in ids and "r16" in ids
    rows = {r["trial_id"]: r for r in trials.to_pylist()}
    assert rows["t2"]["seed"] == -3 and rows["t4"]["seed"] == 4
    epochs = store.epochs().to_pylist()
    assert sum(r["trial_id"] == "t2" for r in epochs) == 1 and sum(r["trial_id"] == "t4" for r in epochs) == 2
    assert {r["trial_id"] for r in store.predictions().to_pylist()} <= set(ids)
    merged = store.trials(), store.epochs(), store.predictions()

    assert store.compact() and not store.compact(), "once compacted, nothing is left to fold"
    assert [p.name for p in store.root.iterdir() if p.is_file()] == sorted(
        [EXPERIMENT_FILE, "epochs.parquet", "predictions.parquet", "trials.parquet"]
    ) or not list((store.root / "log").iterdir())
    assert (store.trials(), store.epochs(), store.predictions()) == merged
    # What any Parquet reader sees in the folder now: each trial once.
    for read in (pl.read_parquet, lambda p: pl.from_pandas(pd.read_parquet(p)), lambda p: pl.from_arrow(pq.read_table(p))):
        frame = read(store.root / "trials.parquet")
        assert frame.height == len(ids) and frame["trial_id"].n_unique() == len(ids)
        assert "_record" not in frame.columns


def test_the_readmes_one_line_reads_see_each_trial_once(tmp_path: Path) -> None:
    """The README's reads of a finished experiment, in polars, pandas and duckdb."""
    import duckdb

    store = _store(tmp_path)
    for i in range(3):
        store.record_trial({**_OK, "trial_id": f"t{i}", "val_score": 0.1 * i}, _epochs(2))
    store.record_trial({**_OK, "trial_id": "t1", "val_score": 0.9}, _epochs(1))  # recorded again
    store.compact()
    path = str(store.root / "trials.parquet")
    expected = [("t0", 0.0), ("t2", 0.2), ("t1", 0.9)]
    assert pl.read_parquet(path).select("trial_id", "val_score").rows() == expected
    assert list(pd.read_parquet(path)[["trial_id", "val_score"]].itertuples(index=False, name=None)) == expected
    assert duckdb.sql(f"SELECT trial_id, val_score FROM '{path}'").fetchall() == expected
    assert read_results(store.root, TRIALS).select(["trial_id", "val_score"]).to_pylist() == [dict(zip(("trial_id", "val_score"), r)) for r in expected]


def test_a_record_cut_short_before_its_commit_is_not_seen(tmp_path: Path) -> None:
    """A driver killed between a record's epochs file and its trials file (the commit): the
    earlier records stay, the cut record is not seen, and the next one is recorded."""
    store = _store(tmp_path)
    script = f"""
import os, signal
from tacfn.store import ExperimentStore
from tacfn.store._log import Log
store = ExperimentStore({str(store.root)!r})
epochs = [dict(epoch=1, val_score=0.5)]
store.record_trial(dict(trial_id="t1", status="completed"), epochs)
store.record_trial(dict(trial_id="t2", status="completed"), epochs)
write = Log._write
def killed_at_the_commit(self, name, table):
    if name.endswith(".trials.parquet"):
        os.kill(os.getpid(), signal.SIGKILL)
    write(self, name, table)
Log._write = killed_at_the_commit
store.record_trial(dict(trial_id="t3", status="completed"), epochs * 2, [dict(split="test", sample_id="a", label=1, pred=1)])
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == -9, proc.stderr[-2000:]
    cut = sorted(p.name.split(".")[1] for p in (store.root / "log").iterdir() if p.name.startswith("000000000003-"))
    assert cut == ["epochs", "predictions"], "killed before its trials file"
    store = ExperimentStore(store.root)
    assert store.trials()["trial_id"].to_pylist() == ["t1", "t2"]
    assert store.epochs()["trial_id"].to_pylist() == ["t1", "t2"] and store.predictions().num_rows == 0
    store.record_trial({**_OK, "trial_id": "t4"}, _epochs(1))
    assert store.trials()["trial_id"].to_pylist() == ["t1", "t2", "t4"]
    store.compact()
    assert pq.read_table(store.root / "epochs.parquet")["trial_id"].to_pylist() == ["t1", "t2", "t4"]


def test_an_experiment_from_before_the_log_opens_records_and_compacts(tmp_path: Path) -> None:
    """A schema-2 folder (whole tables, no log) reads as before; a resumed search appends to
    the log, and compacting folds its trials into the old tables."""
    store = _store(tmp_path)
    store.record_trial({**_OK, "trial_id": "old", "val_score": 0.5}, _epochs(2), _predictions(["a"]))
    store.compact()
    experiment = json.loads((store.root / EXPERIMENT_FILE).read_text())
    (store.root / EXPERIMENT_FILE).write_text(json.dumps({**experiment, "schema_version": 2}))
    old = ExperimentStore.open(store.root)
    assert old.experiment["schema_version"] == 2 and old.trials()["trial_id"].to_pylist() == ["old"]
    old.record_trial({**_OK, "trial_id": "new", "val_score": 0.7}, _epochs(1))
    assert old.trials()["trial_id"].to_pylist() == ["old", "new"]
    assert old.predictions()["trial_id"].to_pylist() == ["old"] and old.epochs().num_rows == 3
    old.compact()
    assert pl.read_parquet(store.root / "trials.parquet")["trial_id"].to_list() == ["old", "new"]
    assert json.loads((store.root / EXPERIMENT_FILE).read_text())["schema_version"] == 2


# --- failures and concurrency -------------------------------------------------------------------


def test_truncated_parquet_raises_data_error_naming_it(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.record_trial(_OK, _epochs(2))
    store.compact()
    path = store.root / "trials.parquet"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match="trials.parquet: not a readable Parquet file") as info:
        read_table(path)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match="trials.parquet"):
        store.trials()
    assert store.epochs().num_rows == 2
    with pytest.raises(DataError, match="missing.parquet does not exist"):
        read_table(tmp_path / "missing.parquet")


def test_write_into_a_read_only_folder_keeps_the_previous_files(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.record_trial({**_OK, "trial_id": "t1", "val_score": 0.5}, _epochs(2), _predictions(["a"]))
    before = _snapshot(store.root)
    store.root.chmod(0o555)
    try:
        if os.access(store.root, os.W_OK):
            # Running as root: permissions do not stop writes, so block the temp file's path instead.
            store.root.chmod(0o755)
            temp_path(store.root / "log" / "000000000002-000000000002.epochs.parquet").mkdir()
        with pytest.raises(DataError, match=r"could not write .*epochs.parquet .*nothing already written was changed"):
            store.record_trial({**_OK, "trial_id": "t2", "val_score": 0.9}, _epochs(3), _predictions(["b"]))
    finally:
        store.root.chmod(0o755)
    assert {k: v for k, v in _snapshot(store.root).items() if not k.endswith(".tmp")} == before
    assert [p.name for p in store.root.rglob("*.tmp") if p.is_file()] == []
    assert store.trials()["trial_id"].to_pylist() == ["t1"]


def test_a_failed_replace_removes_the_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path)
    store.record_trial({**_OK, "trial_id": "t1"}, _epochs(1))
    before = _snapshot(store.root)

    def disk_full(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(DataError, match="No space left on device"):
        store.record_trial({**_OK, "trial_id": "t2"}, _epochs(1))
    monkeypatch.undo()
    assert _snapshot(store.root) == before
    assert list(store.root.rglob("*.tmp")) == []


def test_a_concurrent_reader_always_sees_whole_files(tmp_path: Path) -> None:
    """50 records: past the log's merges (16 files of one size become one) and a compaction."""
    store = _store(tmp_path)
    done = threading.Event()
    counts: list[int] = []
    errors: list[BaseException] = []

    def read_until_done() -> None:
        while True:
            finished = done.is_set()
            try:
                table = ExperimentStore(store.root).trials()
                assert table.column_names[:2] == ["trial_id", "status"]
                assert table.num_rows == len(set(table["trial_id"].to_pylist())), "a trial twice"
                counts.append(table.num_rows)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
                return
            if finished:
                return

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        for i in range(50):
            row = {"trial_id": f"t{i:02d}", "status": "completed", "seed": i, "config.lr": 10.0**-i}
            store.record_trial(row, _epochs(2))
            if i == 40:
                store.compact()
    finally:
        done.set()
        reader.join()
    assert errors == []
    assert counts == sorted(counts) and counts[-1] == 50
    assert store.trials()["seed"].to_pylist() == list(range(50))


def test_the_store_imports_neither_the_search_nor_training_nor_torch() -> None:
    """Dependency direction: model <- training <- search -> store <- dashboards."""
    code = (
        "import sys, tacfn.store\n"
        "print([m for m in sys.modules if m.split('.')[0] in ('torch', 'ray')\n"
        "       or m.startswith(('tacfn.search', 'tacfn.training', 'tacfn.model'))])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
