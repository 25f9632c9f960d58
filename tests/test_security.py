"""Security: servers bind 127.0.0.1, checkpoints load weights only, YAML is safe-loaded,
results hold no pickles, and a name in a space or plan cannot send files outside ``runs/``."""

from __future__ import annotations

import inspect
import json
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from tacfn.cli import build_parser, main
from tacfn.errors import DataError
from tacfn.search._space_schema import check_folder_name
from tacfn.store import ExperimentStore
from tacfn.training import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
PICKLE_MAGIC = 0x80  # the first byte of a pickle of protocol 2 or later


class Payload:
    """Unpickled, it writes ``marker``: what a malicious file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tacfn: error: ") and "Traceback" not in err, err
    return lines[0]


def _config(tmp_path: Path, data: Path, **model) -> Path:
    path = tmp_path / "run.yaml"
    cfg = {"model": {"preset": "lite", **model}, "data": {"path": str(data), "cache_dir": str(tmp_path / "cache")},
           "train": {"epochs": 1, "batch_size": 8}}
    path.write_text(yaml.safe_dump(cfg))
    return path


# --- servers -------------------------------------------------------------------------------------


def test_servers_bind_127_0_0_1_by_default(tmp_path: Path, monkeypatch):
    from dashboards import make_server, serve

    assert build_parser().parse_args(["dashboard", "x", "--serve"]).host == "127.0.0.1"
    for function in (serve, make_server):
        assert inspect.signature(function).parameters["host"].default == "127.0.0.1"
    ExperimentStore.create(tmp_path / "exp", "search", "exp", {})
    with make_server(tmp_path / "exp", port=0) as server:
        assert server.server_address[0] == "127.0.0.1"

    # the local Ray runtime's dashboard (started for Ray Train) binds 127.0.0.1 too
    from tacfn.search import _ray

    calls: list[dict] = []
    monkeypatch.setattr(_ray.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(_ray.ray, "init", lambda **kwargs: calls.append(kwargs))
    _ray.init_ray(None, dashboard=True)
    assert len(calls) == 1 and calls[0]["include_dashboard"] and calls[0]["dashboard_host"] == "127.0.0.1"


# --- checkpoints -----------------------------------------------------------------------------------


def test_the_payload_runs_when_loaded_without_weights_only(tmp_path: Path):
    """The payload the next tests refuse is live: a plain unpickling runs it."""
    marker = tmp_path / "ran"
    torch.save({"model": Payload(marker)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.read_text() == "code ran"


def test_a_checkpoint_holding_an_object_is_refused(tmp_path: Path, prepared_lite: Path, capsys):
    marker = tmp_path / "ran"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"version": 1, "model": Payload(marker)}, run / "checkpoints" / "last.pt")

    with pytest.raises(DataError, match="holds objects other than tensors"):
        load_checkpoint(run / "checkpoints" / "last.pt")
    code = main(["train", str(_config(tmp_path, prepared_lite)), "--out", str(run), "--resume"])
    assert code == 2 and "last.pt: refused: the checkpoint holds objects other than tensors" in _error(capsys)

    torch.save({"conv1.weight": Payload(marker)}, tmp_path / "unimodal.pt")  # model.checkpoints: MSAF format
    code = main(["train", str(_config(tmp_path, prepared_lite, checkpoints={"audio": str(tmp_path / "unimodal.pt")}))])
    assert code == 2 and "cannot read checkpoint" in _error(capsys)
    assert not marker.exists(), "unpickling ran the payload"


def test_every_torch_load_is_weights_only():
    calls = [
        (path, line)
        for path in [*(REPO / "tacfn").rglob("*.py"), *(REPO / "dashboards").rglob("*.py")]
        for line in path.read_text().splitlines()
        if "torch.load(" in line
    ]
    assert calls, "the scan finds the loaders"
    for path, line in calls:
        assert "weights_only=True" in line, f"{path}: {line.strip()}"


# --- YAML --------------------------------------------------------------------------------------------


def test_yaml_tags_that_run_code_are_refused(tmp_path: Path, capsys):
    marker = tmp_path / "ran"
    tag = f'!!python/object/apply:os.system ["touch {marker}"]'
    files = {
        "config": ("train", f"train: {{epochs: {tag}}}\n"),
        "space": ("search", f"name: {tag}\nspace: {{train.lr: {{float: [0.001, 0.01]}}}}\n"),
        "plan": ("ablate", f"name: p\nbaseline: a\nvariants: {{a: {{}}, b: {tag}}}\n"),
    }
    for kind, (command, text) in files.items():
        path = tmp_path / f"{kind}.yaml"
        path.write_text(text)
        assert main([command, str(path), "--out", str(tmp_path / "out")]) == 2
        assert "could not determine a constructor for the tag" in _error(capsys), kind
    (tmp_path / "ok.yaml").write_text("train: {epochs: 1}\n")
    assert main(["train", str(tmp_path / "ok.yaml"), "--set", f"train.epochs={tag}"]) == 2
    assert "is not a plain YAML value" in _error(capsys)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_tacfns_yaml_loader_is_a_safe_loader():
    """config.py's one yaml.load (the linter's S506 is silenced there) uses a SafeLoader."""
    from tacfn.config import _UniqueKeyLoader

    assert issubclass(_UniqueKeyLoader, yaml.SafeLoader)


# --- results -----------------------------------------------------------------------------------------


def _is_pickle(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(1) == bytes([PICKLE_MAGIC]) or path.suffix in (".pkl", ".pickle")


@pytest.mark.slow
def test_a_search_store_holds_no_pickles(prepared_lite: Path, tmp_path: Path):
    """The store of a real (tiny) search is JSON, Parquet and SQLite only; Ray's own
    experiment state (``ray/``, for ``--resume``) is where its pickles stay."""
    space = {
        "name": "nopickle",
        "base": {"model": {"preset": "lite"}, "data": {"path": str(prepared_lite), "cache_dir": str(tmp_path / "cache")},
                 "train": {"epochs": 1, "batch_size": 16}},
        "space": {"train.lr": {"float": [1.0e-3, 1.0e-2], "log": True}},
        "search": {"trials": 1, "scheduler": "none"},
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    out = tmp_path / "exp"
    proc = subprocess.run([sys.executable, "-m", "tacfn.cli", "search", str(tmp_path / "space.yaml"), "--out", str(out)],
                          capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]

    store = {p.name for p in out.iterdir()} - {"ray"}
    assert store == {"experiment.json", "trials.parquet", "epochs.parquet", "predictions.parquet", "optuna.db", "log"}
    assert list((out / "log").iterdir()) == [], "the finished search folded its record log into the tables"
    json.loads((out / "experiment.json").read_text())
    for table in out.glob("*.parquet"):
        data = table.read_bytes()
        assert data[:4] == data[-4:] == b"PAR1", table
    assert (out / "optuna.db").read_bytes()[:16] == b"SQLite format 3\x00"
    with sqlite3.connect(out / "optuna.db") as db:
        assert db.execute("select count(*) from trials").fetchone()[0] == 1
    pickles = [p.relative_to(out) for p in out.rglob("*") if p.is_file() and _is_pickle(p)]
    assert all(p.parts[0] == "ray" for p in pickles), pickles


def test_a_training_run_holds_no_pickles(prepared_lite: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(_config(tmp_path, prepared_lite)), "--out", str(out)]) == 0
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.relative_to(out).as_posix() for p in files} == {"config.json", "result.json", "checkpoints/last.pt", "checkpoints/best.pt"}
    json.loads((out / "result.json").read_text())
    for checkpoint in out.glob("checkpoints/*.pt"):
        assert zipfile.is_zipfile(checkpoint) and not _is_pickle(checkpoint)
        assert isinstance(load_checkpoint(checkpoint)["model"], dict)  # tensors and containers: weights_only loads it


# --- paths --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../evil", "..", ".", "/tmp/evil", "a/b", "a\\b", "", ".hidden", "~", "runs/../x"])
def test_a_name_that_is_a_path_is_refused(name: str):
    with pytest.raises(ValueError, match="`name` must be a folder name"):
        check_folder_name(name)


def test_names_that_are_folder_names_pass():
    for name in ("quickstart", "ablation_fusion", "run-2.b"):
        assert check_folder_name(name) == name


@pytest.mark.parametrize("command", ["search", "ablate"])
@pytest.mark.parametrize("escape", ["../../evil", "ABSOLUTE"])
def test_a_space_or_plan_cannot_write_outside_runs(command: str, escape: str, tmp_path: Path, monkeypatch, capsys):
    """``name`` picks the default folder ``runs/NAME``: a path there is refused before anything is written."""
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    target = tmp_path / "evil"
    name = str(target) if escape == "ABSOLUTE" else escape
    if command == "search":
        data = {"name": name, "space": {"train.lr": {"float": [1.0e-3, 1.0e-2]}}}
    else:
        data = {"name": name, "baseline": "a", "variants": {"a": {}, "b": {"model.fusion.name": "concat"}}}
    (tmp_path / "file.yaml").write_text(yaml.safe_dump(data))
    assert main([command, str(tmp_path / "file.yaml")]) == 2
    assert "`name` must be a folder name" in _error(capsys)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a", "a/b", "file.yaml"]
