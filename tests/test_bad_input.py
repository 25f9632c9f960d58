"""Bad input, end to end: every case exits non-zero with one line on stderr that names the
problem, no traceback, and leaves what was on disk as it was.

Each case builds its input under ``tmp_path`` and names a guard folder (the output or results
folder, or the folder an output would go in); the guard's files (path -> sha256) must be the
same after the command, so nothing was changed, added or removed. The command line runs in
this process (``tacfn.cli.main``); a few cases run it as a subprocess for the exit status.
No case starts Ray.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import pytest
import torch
import yaml

from tacfn.cli import main
from tacfn.search._space import parse_space
from tacfn.store import ExperimentStore

ERROR = "tacfn: error: "


@dataclass
class Env:
    """What a case builds on: a scratch folder and the shared synthetic datasets."""

    tmp: Path
    raw: Path  # synthetic RAVDESS tree (read-only: copy before changing)
    prepared: Path  # its lite preparation (read-only)


@dataclass
class Case:
    """A command, the words its error line must hold, and the folder that must not change."""

    argv: list[str]
    needles: tuple[str, ...]
    guard: Path
    noisy: bool = False  # a progress bar may precede the error line on stderr
    missing: tuple[str, ...] = ()  # modules that cannot be imported during the command, as if not installed


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder``: relative path -> sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def error_line(err: str, noisy: bool = False) -> str:
    """The one ``tacfn: error:`` line of ``err``; fails on a traceback or any other line."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(ERROR)]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    if not noisy:
        assert lines == errors, f"stderr holds more than the error line: {err!r}"
    return errors[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- inputs -----------------------------------------------------------------------------------


def work(env: Env) -> Path:
    """A folder holding an earlier run's files: the guard of cases that must write nothing."""
    folder = env.tmp / "work"
    (folder / "earlier").mkdir(parents=True, exist_ok=True)
    (folder / "earlier" / "result.json").write_text('{"status": "completed"}\n')
    return folder


def empty(env: Env) -> Path:
    folder = env.tmp / "empty"
    folder.mkdir()
    return folder


def folder(env: Env, name: str) -> str:
    path = env.tmp / name
    path.mkdir()
    return str(path)


def text_file(env: Env, name: str, text: str) -> str:
    path = env.tmp / name
    path.write_text(text)
    return str(path)


def bytes_file(env: Env, name: str, data: bytes) -> str:
    path = env.tmp / name
    path.write_bytes(data)
    return str(path)


def config(env: Env, sections: dict | None = None, name: str = "run.yaml") -> str:
    """A valid lite run config on the prepared data, with ``sections`` merged in."""
    data = {"model": {"preset": "lite"}, "data": {"path": str(env.prepared), "cache_dir": str(env.tmp / "cache")},
            "train": {"epochs": 1, "batch_size": 8}}
    for key, value in (sections or {}).items():
        data[key] = {**data.get(key, {}), **value}
    return text_file(env, name, yaml.safe_dump(data))


def with_loggers(path: str, loggers: list) -> str:
    """The run config at ``path`` with ``loggers`` beside its sections."""
    data = yaml.safe_load(Path(path).read_text())
    Path(path).write_text(yaml.safe_dump({**data, "loggers": loggers}))
    return path


def space_map(env: Env, **changes) -> dict:
    """A valid small search space (finetune, so loading it encodes nothing), with ``changes``."""
    space = {
        "name": "tiny",
        "base": {"model": {"preset": "lite"}, "data": {"path": str(env.prepared), "cache_dir": str(env.tmp / "cache")},
                 "train": {"epochs": 1, "batch_size": 8}},
        "space": {"train.lr": {"float": [1.0e-4, 1.0e-2], "log": True}},
        "search": {"trials": 2, "scheduler": "none"},
    }
    return {**space, **changes}


def space(env: Env, axes: dict | None = None, name: str = "space.yaml", **changes) -> str:
    data = space_map(env, **changes)
    if axes is not None:
        data["space"] = axes
    return text_file(env, name, yaml.safe_dump(data))


def plan(env: Env, variants: dict, name: str = "plan.yaml", **changes) -> str:
    data = {"name": "abl", "base": {"model": {"preset": "lite"}, "train": {"epochs": 1}}, "baseline": "tacfn",
            "variants": variants, "seeds": [0], **changes}
    return text_file(env, name, yaml.safe_dump(data))


def ravdess_with(env: Env, name: str, make: Callable[[Path], None]) -> str:
    """A RAVDESS tree whose only clip, Actor_01/01-01-03-01-01-01-01.mp4, ``make`` writes."""
    clip = env.tmp / name / "Actor_01" / "01-01-03-01-01-01-01.mp4"
    clip.parent.mkdir(parents=True)
    make(clip)
    return str(clip.parents[1])


def audio_only(env: Env, clip: Path) -> None:
    """The audio stream of a synthetic clip, remuxed alone into ``clip``."""
    source = next((env.raw / "Actor_01").glob("01-01-*.mp4"))
    with av.open(str(source)) as src, av.open(str(clip), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.audio[0])
        for packet in src.demux(src.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)


def no_streams(clip: Path) -> None:
    """An MP4 with a movie header and no track at all (what PyAV opens with zero streams)."""

    def box(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + kind + payload

    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    mvhd = bytes(4) + struct.pack(">IIIIIH", 0, 0, 1000, 0, 0x10000, 0x100) + bytes(10) + matrix + bytes(24) + struct.pack(">I", 1)
    clip.write_bytes(box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2mp41") + box(b"moov", box(b"mvhd", mvhd)))


def prepared_copy(env: Env, source: str | None = None) -> Path:
    """A copy of the prepared dataset: an existing output a failed prepare must not touch.

    With ``source``, its manifest says it was prepared from there (with the same settings),
    so preparing ``source`` again into it is a refresh, not a refused replacement.
    """
    out = env.tmp / "prepared"
    shutil.copytree(env.prepared, out)
    if source is not None:
        manifest = json.loads((out / "manifest.json").read_text())
        (out / "manifest.json").write_text(json.dumps({**manifest, "source": str(Path(source).resolve())}))
    return out


def search_store(env: Env) -> Path:
    """A search folder as ``tacfn search`` writes it, with one recorded trial."""
    spec = parse_space(space_map(env))
    root = env.tmp / "exp"
    store = ExperimentStore.create(root, "search", spec.name, spec.model_dump(mode="json", by_alias=True, exclude_none=True))
    store.record_trial({"trial_id": "t0", "status": "completed", "val_score": 0.5}, [{"epoch": 1, "val_score": 0.5}])
    store.compact()
    return root


def interrupted_store(env: Env, optuna_db: bytes | None, trials: bool = True) -> Path:
    """``search_store`` as a search killed midway leaves it (Ray's experiment, restorable),
    with ``optuna_db`` as its Optuna file (None: no file), and without trials.parquet
    unless ``trials``."""
    root = search_store(env)
    (root / "ray").mkdir()
    (root / "ray" / "tuner.pkl").write_bytes(b"")  # all Tuner.can_restore looks for
    if optuna_db is not None:
        (root / "optuna.db").write_bytes(optuna_db)
    if not trials:
        (root / "trials.parquet").unlink()
    return root


def damaged_log_store(env: Env) -> Path:
    """``search_store`` with a second trial recorded (not yet compacted), its trials file cut short."""
    root = search_store(env)
    ExperimentStore(root).record_trial({"trial_id": "t1", "status": "completed", "val_score": 0.6})
    part = next((root / "log").glob("*.trials.parquet"))
    part.write_bytes(part.read_bytes()[:-20])
    return root


def truncated_store(env: Env) -> Path:
    root = search_store(env)
    table = root / "trials.parquet"
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    return root


def folder_table_store(env: Env) -> Path:
    root = search_store(env)
    (root / "trials.parquet").unlink()
    (root / "trials.parquet").mkdir()
    return root


def newer_store(env: Env) -> Path:
    root = search_store(env)
    experiment = json.loads((root / "experiment.json").read_text())
    (root / "experiment.json").write_text(json.dumps({**experiment, "schema_version": 99}))
    return root


def corrupt_store(env: Env) -> Path:
    root = search_store(env)
    (root / "experiment.json").write_text('{"schema_version": 1,')
    return root


def store_with_page(env: Env, text: str) -> Path:
    """A search folder whose ``dashboard.html`` (the default page name) holds ``text``."""
    root = search_store(env)
    (root / "dashboard.html").write_text(text)
    return root


def ablation_store(env: Env) -> Path:
    root = env.tmp / "abl"
    ExperimentStore.create(root, "ablation", "abl", {"baseline": "tacfn"})
    return root


def run_folder(env: Env, checkpoint: Callable[[Path], None] | None = None, result: str | None = None) -> Path:
    """A ``tacfn train --out`` folder with the given ``checkpoints/last.pt`` and ``result.json``."""
    root = env.tmp / "run"
    (root / "checkpoints").mkdir(parents=True)
    if checkpoint:
        checkpoint(root / "checkpoints" / "last.pt")
    if result is not None:
        (root / "result.json").write_text(result)
    return root


def iemocap_pickle(env: Env, name: str, obj: object) -> str:
    path = env.tmp / name
    path.write_bytes(pickle.dumps(obj))
    return str(path)


def iemocap_out(env: Env) -> Path:
    """An existing conversion folder a failed conversion must leave alone."""
    out = env.tmp / "iemocap"
    out.mkdir()
    (out / "manifest.json").write_text('{"format": "tacfn-iemocap-mult"}\n')
    return out


# --- the corpus ---------------------------------------------------------------------------------


def _cases() -> dict[str, Callable[[Env], Case]]:
    def out(env: Env) -> str:
        return str(work(env) / "new")

    return {
        # run configs (`tacfn train`)
        "malformed YAML": lambda e: Case(
            ["train", text_file(e, "bad.yaml", "model: {preset: lite\n"), "--out", out(e)],
            ("bad.yaml", "malformed YAML at line 2"), work(e)),
        "duplicate YAML key": lambda e: Case(
            ["train", text_file(e, "dup.yaml", "model: {preset: lite}\nmodel: {preset: paper}\n"), "--out", out(e)],
            ("dup.yaml", "duplicate key 'model'"), work(e)),
        "unknown key": lambda e: Case(
            ["train", config(e, {"model": {"presett": "lite"}}), "--out", out(e)],
            ("run.yaml", "model.presett: unknown key"), work(e)),
        "unknown fusion block": lambda e: Case(
            ["train", config(e, {"model": {"fusion": {"name": "nope"}}}), "--out", out(e)],
            ("unknown fusion block 'nope'", "valid: ["), work(e)),
        "heads not dividing d": lambda e: Case(
            ["train", config(e, {"model": {"fusion": {"heads": 3}}}), "--out", out(e)],
            ("`heads` must divide `d`",), work(e)),
        "negative epochs": lambda e: Case(
            ["train", config(e, {"train": {"epochs": -1}}), "--out", out(e)],
            ("train.epochs", "greater than or equal to 1"), work(e)),
        "fusion option of the wrong type": lambda e: Case(
            ["train", config(e), "--out", out(e), "--set", "model.fusion.d=64.5"],
            ("run.yaml", "model.fusion.d: Input should be a valid integer, got 64.5"), work(e)),
        "fusion heads as a float": lambda e: Case(
            ["train", config(e), "--out", out(e), "--set", "model.fusion.heads=4.0"],
            ("model.fusion.heads: Input should be a valid integer, got 4.0",), work(e)),
        "fusion switch as a string": lambda e: Case(
            ["train", config(e, {"model": {"fusion": {"residual": "false"}}}), "--out", out(e)],
            ("model.fusion.residual: Input should be a valid boolean, got 'false'",), work(e)),
        "unknown fusion option": lambda e: Case(
            ["train", config(e), "--out", out(e), "--set", "model.fusion.head=4"], ("model.fusion.head: unknown key",), work(e)),
        "fold the protocol lacks": lambda e: Case(
            ["train", config(e, {"data": {"protocol": "paper5", "fold": 5}}), "--out", out(e)],
            ("data.fold: protocol 'paper5' has 5 folds (0..4), but got fold=5",), work(e)),
        "negative seed": lambda e: Case(
            ["train", config(e), "--out", out(e), "--set", "train.seed=-1"], ("train.seed", "greater than or equal to 0"), work(e)),
        "tacfn block on one modality": lambda e: Case(
            ["train", config(e, {"model": {"modalities": ["audio"], "fusion": {"direction": "both"}}}), "--out", out(e)],
            ("the tacfn block needs at least two modalities", "model.fusion.name: concat"), work(e)),
        "fusion option a block does not read": lambda e: Case(
            ["train", config(e), "--out", out(e), "--set", "model.fusion.name=concat", "--set", "model.fusion.heads=2"],
            ("fusion block 'concat' does not read option 'heads' (got heads=2)",), work(e)),
        "fusion reduction that leaves no channels": lambda e: Case(
            ["train", config(e), "--out", out(e), "--set", "model.fusion.name=mmtm", "--set", "model.fusion.reduction=4096"],
            ("fusion block 'mmtm'", "reduction=4096"), work(e)),
        "fusion zoo block on one modality": lambda e: Case(
            ["train", config(e, {"model": {"modalities": ["audio"], "fusion": {"name": "msaf"}}}), "--out", out(e)],
            ("fusion block 'msaf' fuses two or more modalities", "model.fusion.name: concat"), work(e)),
        "plan: a base option a variant's block does not read": lambda e: Case(
            ["ablate", plan(e, {"tacfn": {}, "concat": {"model.fusion.name": "concat"}}), "--out", out(e),
             "--set", "model.fusion.attended_pool=separate"],
            ("variant concat", "fusion block 'concat' does not read option 'attended_pool'"), work(e)),
        "missing config file": lambda e: Case(
            ["train", str(e.tmp / "absent.yaml"), "--out", out(e)], ("absent.yaml", "cannot read"), work(e)),
        "config not a mapping": lambda e: Case(
            ["train", text_file(e, "list.yaml", "- model\n- train\n"), "--out", out(e)],
            ("list.yaml", "expected a mapping"), work(e)),
        "--set unknown key": lambda e: Case(
            ["train", config(e), "--out", out(e), "--set", "train.nope=3"], ("train.nope: unknown key",), work(e)),
        "--set bad value": lambda e: Case(
            ["train", config(e), "--out", out(e), "--set", "train.epochs=many"], ("train.epochs", "valid integer"), work(e)),
        "--set not YAML": lambda e: Case(
            ["train", config(e), "--out", out(e), "--set", "train.lr=["], ("--set train.lr", "not a plain YAML value"), work(e)),
        "--set through a value": lambda e: Case(
            ["train", config(e), "--out", out(e), "--set", "model.preset.x=1"],
            ("cannot set model.preset.x: model.preset is a str, not a mapping",), work(e)),
        "--set without =": lambda e: Case(
            ["train", config(e), "--out", out(e), "--set", "train.epochs"], ("--set expects KEY=VALUE",), work(e)),
        "--workers 0": lambda e: Case(
            ["train", config(e), "--out", out(e), "--workers", "0"], ("--workers >= 1", "--workers 0"), work(e)),
        "missing data folder": lambda e: Case(
            ["train", config(e, {"data": {"path": str(e.tmp / "nodata")}}), "--out", out(e)],
            ("no prepared dataset at", "nodata"), work(e)),
        "raw RAVDESS folder as data": lambda e: Case(
            ["train", config(e, {"data": {"path": str(e.raw)}}), "--out", out(e)],
            ("is a raw RAVDESS folder", "tacfn data prepare"), work(e)),
        "--resume without a checkpoint": lambda e: Case(
            ["train", config(e), "--out", str(run_folder(e)), "--resume"],
            ("checkpoints/last.pt does not exist", "drop --resume"), e.tmp / "run"),
        "Ray Train run into a folder holding a run": lambda e: Case(
            ["train", config(e), "--out", str(run_folder(e, result='{"status": "completed"}')), "--workers", "2"],
            ("already holds a training run", "use --resume"), e.tmp / "run"),
        "--resume without --out": lambda e: Case(
            ["train", config(e), "--resume"], ("--resume", "no --out was given"), work(e)),
        "corrupt checkpoint": lambda e: Case(
            ["train", config(e), "--out", str(run_folder(e, lambda p: p.write_bytes(b"PK\x03\x04 truncated"))), "--resume"],
            ("last.pt: not a readable checkpoint",), e.tmp / "run"),
        "checkpoint of another model": lambda e: Case(
            ["train", config(e), "--out", str(run_folder(e, lambda p: torch.save(
                {"version": 1, "model": {"w": torch.zeros(2)}, "optimizer": {}, "torch_rng": torch.get_rng_state(), "history": [],
                 "best_epoch": None, "best_score": 0.0, "best_model": None}, p))), "--resume"],
            ("last.pt: the checkpoint does not fit this config's model",), e.tmp / "run"),
        "--out under a file": lambda e: Case(
            ["train", config(e), "--out", str(work(e) / "earlier" / "result.json" / "run")],
            ("Not a directory", "result.json/run"), work(e)),
        "feature cache folder is a file": lambda e: Case(
            ["train", config(e, {"model": {"backbone": "frozen"}, "data": {"cache_dir": str(work(e) / "earlier" / "result.json")}}),
             "--out", out(e)],
            ("the feature cache folder", "cannot be made", "result.json is a file"), work(e)),
        # models
        "unknown preset": lambda e: Case(["model", "info", "huge"], ("unknown preset 'huge'", "valid:"), work(e)),
        "unknown fusion block (model info)": lambda e: Case(
            ["model", "info", "lite", "--fusion", "nope"], ("unknown fusion block 'nope'",), work(e)),
        # search spaces (`tacfn search`)
        "space: heads not dividing d": lambda e: Case(
            ["search", space(e, {"model.fusion.heads": {"choice": [3, 4]}}), "--out", out(e)],
            ("space.model.fusion.heads", "`heads` must divide `d`", "heads=3"), work(e)),
        "space: low > high": lambda e: Case(
            ["search", space(e, {"train.lr": {"float": [0.1, 0.01]}}), "--out", out(e)],
            ("space.train.lr", "`low <= high` must hold", "low=0.1, high=0.01"), work(e)),
        "space: a fold the protocol sampled with it lacks": lambda e: Case(
            ["search", space(e, {"data.protocol": {"choice": ["paper5", "6fold"]}, "data.fold": {"choice": [0, 5]}}), "--out", out(e)],
            ("space.data.fold", "(data.protocol='paper5', data.fold=5)", "has 5 folds (0..4)"), work(e)),
        "space: seed out of range": lambda e: Case(
            ["search", space(e, search={"trials": 2, "scheduler": "none", "seed": -1}), "--out", out(e)],
            ("space.yaml", "search.seed", "greater than or equal to 0"), work(e)),
        "space: a sampler that needs a fixed space": lambda e: Case(
            ["search", space(e, {"model.fusion.name": {"choice": ["tacfn", "concat"]}, "model.fusion.heads": {"choice": [2, 4]}},
                             search={"trials": 2, "scheduler": "none", "sampler": "qmc"}), "--out", out(e)],
            ("space.yaml", "search.sampler: qmc cannot sample conditional spaces", "use tpe, gp or random"), work(e)),
        "space: empty seeds": lambda e: Case(
            ["search", space(e, search={"trials": 2, "scheduler": "none", "seeds": []}), "--out", out(e)],
            ("space.yaml", "search.seeds", "at least one value, but got []"), work(e)),
        "space: repeated seeds": lambda e: Case(
            ["search", space(e, search={"trials": 2, "scheduler": "none", "seeds": [0, 1, 0]}), "--out", out(e)],
            ("space.yaml", "search.seeds", "[0] repeat", "count twice"), work(e)),
        "space: replicate folds the protocol lacks": lambda e: Case(
            ["search", space(e, search={"trials": 2, "scheduler": "none", "seeds": [0, 1], "folds": [0, 6]}), "--out", out(e)],
            ("search.folds: 6 is not a valid data.fold", "has 6 folds (0..5)"), work(e)),
        "space: seed sampled and replicated": lambda e: Case(
            ["search", space(e, {"train.lr": {"float": [1.0e-4, 1.0e-2]}, "train.seed": {"int": [0, 9]}},
                             search={"trials": 2, "scheduler": "none", "seeds": [0, 1]}), "--out", out(e)],
            ("space.train.seed", "search.seeds already trains every configuration on [0, 1]"), work(e)),
        "space: fold sampled and replicated": lambda e: Case(
            ["search", space(e, {"train.lr": {"float": [1.0e-4, 1.0e-2]}, "data.fold": {"choice": [0, 1]}},
                             search={"trials": 2, "scheduler": "none", "folds": [0, 1]}), "--out", out(e)],
            ("space.data.fold", "search.folds already trains every configuration on [0, 1]"), work(e)),
        "space: fold sampled in a search over seeds": lambda e: Case(
            ["search", space(e, {"train.lr": {"float": [1.0e-4, 1.0e-2]}, "data.fold": {"choice": [0, 1]}},
                             search={"trials": 2, "scheduler": "none", "seeds": [0, 1]}), "--out", out(e)],
            ("space.data.fold", "a seed-aware search trains every replicate on the base's data.fold", "search.folds"), work(e)),
        "space: seed sampled in a search over folds": lambda e: Case(
            ["search", space(e, {"train.lr": {"float": [1.0e-4, 1.0e-2]}, "train.seed": {"int": [0, 9]}},
                             search={"trials": 2, "scheduler": "none", "folds": [0, 1]}), "--out", out(e)],
            ("space.train.seed", "a seed-aware search trains every replicate on the base's train.seed", "search.seeds"), work(e)),
        "space: a lower bound over one replicate": lambda e: Case(
            ["search", space(e, search={"trials": 2, "scheduler": "none", "seeds": [3], "aggregate": "lcb"}), "--out", out(e)],
            ("space.yaml", "`aggregate: lcb` needs two or more replicates", "got 1"), work(e)),
        "space: ASHA in a seed-aware search": lambda e: Case(
            ["search", space(e, search={"trials": 2, "scheduler": "asha", "seeds": [0, 1]}), "--out", out(e)],
            ("space.yaml", "races whole replicates", "use scheduler: none"), work(e)),
        "space: an unknown racing test": lambda e: Case(
            ["search", space(e, search={"trials": 2, "scheduler": "none", "seeds": [0, 1], "racing": {"test": "anova"}}), "--out", out(e)],
            ("space.yaml", "search.racing.test"), work(e)),
        "space: empty choice list": lambda e: Case(
            ["search", space(e, {"train.lr": {"choice": []}}), "--out", out(e)], ("space.train.lr", "empty choice list"), work(e)),
        "space: fold the protocol lacks": lambda e: Case(
            ["search", space(e, {"data.fold": {"choice": [0, 6]}}), "--out", out(e)],
            ("space.data.fold", "choice 6", "protocol '6fold' has 6 folds"), work(e)),
        "space: unknown fusion block": lambda e: Case(
            ["search", space(e, {"model.fusion.name": {"choice": ["tacfn", "nope"]}}), "--out", out(e)],
            ("space.model.fusion.name", "unknown fusion block 'nope'"), work(e)),
        "space: when names an unknown key": lambda e: Case(
            ["search", space(e, {"train.lr": {"float": [1e-4, 1e-2]}, "train.batch_size": {"choice": [8, 16], "when": {"train.nope": [1]}}}),
             "--out", out(e)],
            ("space.train.batch_size.when.train.nope", "not an axis of this space"), work(e)),
        "space: choice of the wrong type": lambda e: Case(
            ["search", space(e, {"train.lr": {"choice": ["fast", 0.01]}}), "--out", out(e)],
            ("space.train.lr", "choice 'fast' is not a number"), work(e)),
        "space: unknown top-level key": lambda e: Case(
            ["search", space(e, serach={"trials": 3}), "--out", out(e)], ("serach: unknown key", "valid:"), work(e)),
        "space: negative epochs in base": lambda e: Case(
            ["search", space(e, base={"train": {"epochs": -2}}), "--out", out(e)], ("base.train.epochs",), work(e)),
        "space: duplicate key": lambda e: Case(
            ["search", text_file(e, "dup.yaml", "name: a\nname: b\nspace: {}\n"), "--out", out(e)],
            ("duplicate key 'name'",), work(e)),
        "space: unknown logger": lambda e: Case(
            ["search", space(e, search={"trials": 2, "loggers": ["mlfow"]}), "--out", out(e)],
            ("space.yaml: search.loggers: unknown logger 'mlfow'; known: mlflow, wandb, tensorboard",), work(e)),
        "space: a logger whose extra is not installed": lambda e: Case(
            ["search", space(e, search={"trials": 2, "scheduler": "none", "loggers": ["wandb", "mlflow"]}), "--out", out(e)],
            ("search.loggers: mlflow needs the mlflow extra: pip install 'tacfn[mlflow]'",), work(e), missing=("mlflow",)),
        "plan: a logger whose extra is not installed": lambda e: Case(
            ["ablate", plan(e, {"tacfn": {}, "concat": {"model.fusion.name": "concat"}}, loggers=["wandb"]), "--out", out(e)],
            ("loggers: wandb needs the wandb extra: pip install 'tacfn[wandb]'",), work(e), missing=("wandb",)),
        "train: a logger whose extra is not installed": lambda e: Case(
            ["train", with_loggers(config(e), ["tensorboard"]), "--out", out(e)],
            ("loggers: tensorboard needs the tensorboard extra: pip install 'tacfn[tensorboard]'",), work(e), missing=("tensorboardX",)),
        "train: a logger with nowhere to write": lambda e: Case(
            ["train", with_loggers(config(e), ["mlflow"])],
            ("loggers: mlflow writes into the --out folder by default, but no --out was given; give {mlflow: {tracking_uri: ...}}",), work(e)),
        "unknown space name": lambda e: Case(["search", "no_such_space"], ("unknown search space 'no_such_space'",), work(e)),
        "--trials 0": lambda e: Case(["search", space(e), "--out", out(e), "--trials", "0"], ("`--trials >= 1` must hold", "--trials 0"), work(e)),
        "search: missing data folder": lambda e: Case(
            ["search", space(e, base={"model": {"preset": "lite"}, "data": {"path": str(e.tmp / "nodata")}}), "--out", out(e)],
            ("no prepared dataset at", "nodata"), work(e)),
        "search: folder holds an experiment": lambda e: Case(
            ["search", space(e), "--out", str(search_store(e))], ("already holds an experiment", "--resume"), e.tmp / "exp"),
        "unreachable --address": lambda e: Case(
            ["search", space(e), "--out", out(e), "--address", f"127.0.0.1:{closed_port()}"],
            ("cannot reach the Ray cluster at '127.0.0.1:", "Connection refused"), work(e)),
        "malformed --address": lambda e: Case(
            ["search", space(e), "--out", out(e), "--address", "head-node"], ("Ray address 'head-node'", "HOST:PORT"), work(e)),
        # results folders
        "--resume on a folder that is no experiment": lambda e: Case(
            ["search", "--out", str(work(e)), "--resume"], ("is not a tacfn experiment folder",), work(e)),
        "--resume on an ablation": lambda e: Case(
            ["search", "--out", str(ablation_store(e)), "--resume"], ("kind 'ablation', not a search",), e.tmp / "abl"),
        "--resume on a newer schema": lambda e: Case(
            ["search", "--out", str(newer_store(e)), "--resume"], ("schema_version 99 is newer", "upgrade tacfn"), e.tmp / "exp"),
        "--resume: optuna.db garbage, trials.parquet missing": lambda e: Case(
            ["search", "--out", str(interrupted_store(e, b"\x00garbage" * 512, trials=False)), "--resume"],
            ("optuna.db is not a readable SQLite database (file is not a database)", "trials.parquet", "is missing too",
             "nothing was changed"), e.tmp / "exp"),
        "--resume: optuna.db deleted, trials.parquet missing": lambda e: Case(
            ["search", "--out", str(interrupted_store(e, None, trials=False)), "--resume"],
            ("optuna.db is missing, and trials.parquet, which it is rebuilt from, is missing too",), e.tmp / "exp"),
        "--resume: optuna.db truncated, trials.parquet without the sampled parameters": lambda e: Case(
            ["search", "--out", str(interrupted_store(e, b"SQLite format 3\x00" + b"\x00" * 84)), "--resume"],
            ("optuna.db is not a readable SQLite database", "cannot be rebuilt from trials.parquet",
             "trial t0 records no config.train.lr"), e.tmp / "exp"),
        "search --resume without --out or SPACE": lambda e: Case(
            ["search", "--resume"], ("--resume continues the search in --out DIR, but no --out was given",), work(e)),
        "search --resume with a --set it did not start with": lambda e: Case(
            ["search", "--out", str(search_store(e)), "--resume", "--set", "train.epochs=3"],
            ("--set train.epochs=3: the search in", "was started with another train.epochs", "drop --set"), e.tmp / "exp"),
        "search --resume with a SPACE that differs": lambda e: Case(
            ["search", space(e, search={"trials": 2, "scheduler": "asha"}), "--out", str(search_store(e)), "--resume"],
            ("space.yaml: differs from the search in", "(in ['search'])", "drop SPACE"), e.tmp / "exp"),
        "search --resume DIR with --out too": lambda e: Case(
            ["search", "--resume", str(search_store(e)), "--out", out(e)], ("name the folder once, as --out DIR --resume",), e.tmp / "exp"),
        "search --set of an unknown key": lambda e: Case(
            ["search", space(e), "--out", out(e), "--set", "train.epocs=2"], ("space.yaml", "train.epocs", "unknown key"), work(e)),
        "search --set of a bad value": lambda e: Case(
            ["search", space(e), "--out", out(e), "--set", "train.epochs=-2"], ("base.train.epochs",), work(e)),
        "ablate --resume on a folder with no plan": lambda e: Case(
            ["ablate", plan(e, {"tacfn": {}, "concat": {"model.fusion.name": "concat"}}), "--out", str(work(e)), "--resume"],
            ("--resume:", "holds no ablation to continue", "drop --resume"), work(e)),
        "ablate --resume on a search": lambda e: Case(
            ["ablate", plan(e, {"tacfn": {}, "concat": {"model.fusion.name": "concat"}}), "--out", str(search_store(e)), "--resume"],
            ("kind 'search', not an ablation",), e.tmp / "exp"),
        "ablate --set of an unknown key": lambda e: Case(
            ["ablate", plan(e, {"tacfn": {}, "concat": {"model.fusion.name": "concat"}}), "--out", out(e), "--set", "model.fusion.head=4"],
            ("plan.yaml", "model.fusion.head: unknown key"), work(e)),
        "ablate --set without KEY=VALUE": lambda e: Case(
            ["ablate", plan(e, {"tacfn": {}, "concat": {"model.fusion.name": "concat"}}), "--out", out(e), "--set", "train.epochs"],
            ("--set expects KEY=VALUE",), work(e)),
        "prepare --jobs 0": lambda e: Case(
            ["data", "prepare", str(e.raw), out(e), "--jobs", "0"], ("`--jobs >= 1` must hold", "--jobs 0"), work(e)),
        "--resume on a truncated Parquet table": lambda e: Case(
            ["search", "--out", str(truncated_store(e)), "--resume"], ("trials.parquet: not a readable Parquet file",), e.tmp / "exp"),
        "dashboard: truncated Parquet table": lambda e: Case(
            ["dashboard", str(truncated_store(e))], ("trials.parquet: not a readable Parquet file", "no dashboard written"), e.tmp / "exp"),
        "dashboard: a table that is a folder": lambda e: Case(
            ["dashboard", str(folder_table_store(e))], ("trials.parquet: not a file", "no dashboard written"), e.tmp / "exp"),
        "store compact: not an experiment folder": lambda e: Case(
            ["store", "compact", str(work(e))], ("is not a tacfn experiment folder (no experiment.json)",), e.tmp / "work"),
        "store compact: a damaged record in the log": lambda e: Case(
            ["store", "compact", str(damaged_log_store(e))], ("log/", "not a readable Parquet file"), e.tmp / "exp"),
        "dashboard: newer schema": lambda e: Case(
            ["dashboard", str(newer_store(e))], ("schema_version 99 is newer",), e.tmp / "exp"),
        "dashboard: corrupt experiment.json": lambda e: Case(
            ["dashboard", str(corrupt_store(e)), "--out", str(work(e) / "d.html")], ("unreadable experiment file",), e.tmp),
        "dashboard: folder without results": lambda e: Case(["dashboard", str(work(e))], ("is not a tacfn experiment folder",), work(e)),
        "dashboard: corrupt result.json": lambda e: Case(
            ["dashboard", str(run_folder(e, result='{"status"'))], ("result.json is unreadable or corrupt",), e.tmp / "run"),
        "dashboard: --serve on a training run": lambda e: Case(
            ["dashboard", str(run_folder(e, result="{}")), "--serve"], ("--serve shows a search or ablation folder",), e.tmp / "run"),
        "dashboard: result.json not a result": lambda e: Case(
            ["dashboard", str(run_folder(e, result="[]"))], ("result.json is not a training result",), e.tmp / "run"),
        # ablation plans (`tacfn ablate`)
        "plan: variant with an unknown block": lambda e: Case(
            ["ablate", plan(e, {"tacfn": {}, "odd": {"model.fusion.name": "nope"}}), "--out", out(e)],
            ("variant odd", "unknown fusion block 'nope'"), work(e)),
        "plan: no variant but the baseline": lambda e: Case(
            ["ablate", plan(e, {"tacfn": {}}), "--out", out(e)], ("variants", "at least one other variant"), work(e)),
        "plan: no variants": lambda e: Case(
            ["ablate", plan(e, {}), "--out", out(e)], ("variants", "at least one other variant"), work(e)),
        "plan: duplicate variant names": lambda e: Case(
            ["ablate", text_file(e, "dup.yaml", "name: p\nbaseline: a\nvariants:\n  a: {}\n  a: {train.lr: 0.1}\n"), "--out", out(e)],
            ("duplicate key 'a'",), work(e)),
        "plan: baseline not a variant": lambda e: Case(
            ["ablate", plan(e, {"a": {}, "b": {"model.fusion.name": "concat"}}), "--out", out(e)],
            ("baseline 'tacfn' is not a variant",), work(e)),
        "plan: fold that does not exist": lambda e: Case(
            ["ablate", plan(e, {"tacfn": {}, "concat": {"model.fusion.name": "concat"}}, folds=[7]), "--out", out(e)],
            ("fold 7: data.fold: protocol '6fold' has 6 folds (0..5)",), work(e)),
        "plan: folds of IEMOCAP's fixed split": lambda e: Case(
            ["ablate", text_file(e, "iem_plan.yaml", yaml.safe_dump({
                "name": "abl", "base": {"model": {"preset": "iemocap"}, "data": {"path": str(e.tmp / "iemocap")}},
                "baseline": "tacfn", "variants": {"tacfn": {}, "concat": {"model.fusion.name": "concat"}}, "folds": [0, 1]})),
             "--out", out(e)],
            ("fold 1: data: iemocap has one fixed train/valid/test split",), work(e)),
        "config: a RAVDESS preset on an IEMOCAP folder": lambda e: Case(
            ["train", config(e, {"data": {"path": str(iemocap_out(e))}}), "--out", out(e)],
            ("holds a converted IEMOCAP dataset", "use it with the iemocap preset"), work(e)),
        "config: the iemocap preset on a prepared RAVDESS folder": lambda e: Case(
            ["train", config(e, {"model": {"preset": "iemocap"}}), "--out", out(e)],
            ("holds a prepared RAVDESS dataset", "paper or lite preset"), work(e)),
        "config: a fold of IEMOCAP's fixed split": lambda e: Case(
            ["train", text_file(e, "iem.yaml", yaml.safe_dump({"model": {"preset": "iemocap"}, "data": {"path": str(e.tmp / "iemocap"), "fold": 1}})),
             "--out", out(e)],
            ("data: iemocap has one fixed train/valid/test split, so fold must be 0",), work(e)),
        "unknown plan name": lambda e: Case(["ablate", "no_such_plan"], ("ablation plan 'no_such_plan' not found",), work(e)),
        # data (`tacfn data prepare`, `tacfn data iemocap`)
        "prepare: missing folder": lambda e: Case(
            ["data", "prepare", str(e.tmp / "absent"), out(e)], ("RAVDESS folder", "absent does not exist"), work(e)),
        "prepare: output under a file": lambda e: Case(
            ["data", "prepare", str(e.raw), str(work(e) / "earlier" / "result.json" / "prepared")],
            ("Not a directory", "result.json/prepared"), work(e)),
        "prepare: empty folder": lambda e: Case(
            ["data", "prepare", str(empty(e)), out(e)], ("no Actor_NN folders",), work(e)),
        "prepare: wrong file names": lambda e: Case(
            ["data", "prepare", ravdess_with(e, "names", lambda p: shutil.copy(next((e.raw / "Actor_01").glob("*.mp4")), p.with_name("clip 1.mp4"))),
             str(prepared_copy(e))],
            ("rejected", "clip 1.mp4", "seven two-digit fields"), e.tmp / "prepared"),
        "prepare: zero-byte mp4": lambda e: (lambda tree: Case(
            ["data", "prepare", tree, str(prepared_copy(e, source=tree)), "--jobs", "1"],
            ("01-01-03-01-01-01-01.mp4: empty file (0 bytes)",), e.tmp / "prepared", noisy=True))(
            ravdess_with(e, "zero", lambda p: p.write_bytes(b""))),
        "prepare: into another dataset's folder": lambda e: Case(
            ["data", "prepare", ravdess_with(e, "other", lambda p: shutil.copy(next((e.raw / "Actor_01").glob("01-01-*.mp4")), p)),
             str(prepared_copy(e))],
            ("already holds a dataset prepared from", "choose another OUT or delete it"), e.tmp / "prepared"),
        "prepare: corrupt mp4": lambda e: Case(
            ["data", "prepare", ravdess_with(e, "corrupt", lambda p: p.write_bytes(next((e.raw / "Actor_01").glob("01-*.mp4")).read_bytes()[:400])),
             out(e), "--jobs", "1"],
            ("01-01-03-01-01-01-01.mp4", "no clip", "could be prepared"), work(e), noisy=True),
        "prepare: audio-only file where AV is expected": lambda e: Case(
            ["data", "prepare", ravdess_with(e, "audio", lambda p: audio_only(e, p)), out(e), "--jobs", "1"],
            ("no video stream (audio-only file)",), work(e), noisy=True),
        "prepare: preset without media": lambda e: Case(
            ["data", "prepare", str(e.raw), out(e), "--preset", "iemocap"], ("preset 'iemocap' does not read RAVDESS media",), work(e)),
        "iemocap: not a pickle": lambda e: Case(
            ["data", "iemocap", text_file(e, "f.pkl", "not a pickle\n"), str(iemocap_out(e))], ("f.pkl is not a readable pickle",),
            e.tmp / "iemocap"),
        "iemocap: not a dict of splits": lambda e: Case(
            ["data", "iemocap", iemocap_pickle(e, "l.pkl", [1, 2]), str(iemocap_out(e))], ("must hold a dict of splits",), e.tmp / "iemocap"),
        "iemocap: split without audio": lambda e: Case(
            ["data", "iemocap", iemocap_pickle(e, "s.pkl", {"train": {"text": [[[0.0] * 300]]}}), str(iemocap_out(e))],
            ("split 'train' has no key 'audio'",), e.tmp / "iemocap"),
        "iemocap: not a .pkl file": lambda e: Case(
            ["data", "iemocap", text_file(e, "f.csv", "a,b\n"), str(iemocap_out(e))], ("f.csv: expected MulT's feature file, a .pkl",), e.tmp / "iemocap"),
        # outputs: a command writes over nothing another command wrote
        "train: --out an experiment folder": lambda e: Case(
            ["train", config(e), "--out", str(search_store(e))],
            ("--out", "holds an experiment (experiment.json), not a training run", "name a new folder"), e.tmp / "exp"),
        "train: --out a dataset folder": lambda e: Case(
            ["train", config(e), "--out", str(prepared_copy(e))], ("holds a dataset (manifest.json), not a training run",), e.tmp / "prepared"),
        "train: --out a results table": lambda e: Case(
            ["train", config(e), "--out", str(search_store(e) / "trials.parquet")],
            ("--out", "trials.parquet exists and is not a folder"), e.tmp / "exp"),
        "search: --out a dataset folder": lambda e: Case(
            ["search", space(e), "--out", str(prepared_copy(e))],
            ("the experiment folder", "holds a dataset (manifest.json), not an experiment"), e.tmp / "prepared"),
        "ablate: --out a training run": lambda e: Case(
            ["ablate", plan(e, {"tacfn": {}, "concat": {"model.fusion.name": "concat"}},
                            base={"model": {"preset": "lite"}, "data": {"path": str(e.prepared)}, "train": {"epochs": 1}}),
             "--out", str(run_folder(e, result="{}"))],
            ("holds a training run (result.json), not an experiment",), e.tmp / "run"),
        "prepare: into an experiment folder": lambda e: Case(
            ["data", "prepare", str(e.raw), str(search_store(e))], ("OUT", "holds an experiment (experiment.json), not a dataset"), e.tmp / "exp"),
        "iemocap: into a prepared RAVDESS dataset": lambda e: Case(
            ["data", "iemocap", text_file(e, "f.pkl", "not read\n"), str(prepared_copy(e))],
            ("prepared holds another dataset", "manifest.json is not an IEMOCAP conversion's"), e.tmp / "prepared"),
        "demo: --out an experiment folder": lambda e: Case(
            ["demo", "--out", str(search_store(e))], ("--out", "holds an experiment (experiment.json)"), e.tmp / "exp"),
        # outputs inside inputs
        "prepare: OUT inside the RAVDESS folder": lambda e: (lambda tree: Case(
            ["data", "prepare", tree, str(Path(tree) / "prepared")], ("is inside the RAVDESS folder",), Path(tree)))(
            ravdess_with(e, "inside", lambda p: shutil.copy(next((e.raw / "Actor_01").glob("01-01-*.mp4")), p))),
        "prepare: OUT is the RAVDESS folder": lambda e: (lambda tree: Case(
            ["data", "prepare", tree, tree], ("is the RAVDESS folder itself",), Path(tree)))(
            ravdess_with(e, "same", lambda p: shutil.copy(next((e.raw / "Actor_01").glob("01-01-*.mp4")), p))),
        "prepare: RAVDESS folder inside OUT": lambda e: (lambda tree: Case(
            ["data", "prepare", tree, str(e.tmp / "outer")], ("raw is inside OUT",), e.tmp / "outer"))(
            ravdess_with(e, "outer/raw", lambda p: shutil.copy(next((e.raw / "Actor_01").glob("01-01-*.mp4")), p))),
        # dashboard pages: new, or one tacfn wrote
        "dashboard: --out a results table": lambda e: Case(
            ["dashboard", str(search_store(e)), "--out", str(e.tmp / "exp" / "trials.parquet")],
            ("trials.parquet: a dashboard is an HTML page", "name a file ending in .html"), e.tmp / "exp"),
        "dashboard: --out a page it did not write": lambda e: Case(
            ["dashboard", str(search_store(e)), "--out", text_file(e, "notes.html", "<p>my notes</p>\n")],
            ("notes.html exists and is not a page tacfn wrote",), e.tmp),
        "dashboard: the default page name taken": lambda e: Case(
            ["dashboard", str(store_with_page(e, "<p>my notes</p>\n"))],
            ("exp/dashboard.html exists and is not a page tacfn wrote",), e.tmp / "exp"),
        "dashboard: run report over result.json": lambda e: Case(
            ["dashboard", str(run_folder(e, result="{}")), "--out", str(e.tmp / "run" / "result.json")],
            ("result.json: a dashboard is an HTML page",), e.tmp / "run"),
        # paper-ready reports: of experiments only, into a new folder or one tacfn report wrote
        "report: folder that is not an experiment": lambda e: Case(
            ["report", str(work(e)), "--out", str(e.tmp / "paper")], ("is not a tacfn experiment folder (no experiment.json)",), e.tmp),
        "report: --out an experiment folder": lambda e: Case(
            ["report", str(search_store(e)), "--out", str(e.tmp / "exp")],
            ("--out", "holds an experiment (experiment.json), not a tacfn report", "nothing is written there"), e.tmp),
        # non-finite numbers, named by file and key
        "config: NaN": lambda e: Case(
            ["train", config(e, {"train": {"lr": float("nan")}}), "--out", out(e)],
            ("run.yaml", "train.lr: Input should be a finite number, got nan"), work(e)),
        "--set an infinity": lambda e: Case(
            ["train", config(e), "--out", out(e), "--set", "train.weight_decay=.inf"],
            ("train.weight_decay: Input should be a finite number, got inf",), work(e)),
        "--set a NaN fusion option": lambda e: Case(
            ["train", config(e), "--out", out(e), "--set", "model.fusion.attn_dropout=.nan"],
            ("model.fusion.attn_dropout: Input should be a finite number, got nan",), work(e)),
        "config: infinite modality dropout": lambda e: Case(
            ["train", config(e, {"model": {"modality_dropout": {"audio": float("-inf")}}}), "--out", out(e)],
            ("model.modality_dropout.audio: Input should be a finite number, got -inf",), work(e)),
        "space: infinite range end": lambda e: Case(
            ["search", space(e, {"train.lr": {"float": [1.0e-4, float("inf")]}}), "--out", out(e)],
            ("space.yaml", "space.train.lr: `float` holds inf, but every number must be finite"), work(e)),
        "space: NaN choice": lambda e: Case(
            ["search", space(e, {"train.lr": {"choice": [0.01, float("nan")]}}), "--out", out(e)],
            ("space.train.lr: `choice` holds nan",), work(e)),
        "space: infinite search setting": lambda e: Case(
            ["search", space(e, search={"trials": 2, "scheduler": "none", "checkpoint_interval_s": float("inf")}), "--out", out(e)],
            ("search.checkpoint_interval_s: Input should be a finite number, got inf",), work(e)),
        "space: NaN in base": lambda e: Case(
            ["search", space(e, base={"model": {"preset": "lite"}, "train": {"lr": float("nan")}}), "--out", out(e)],
            ("base.train.lr: Input should be a finite number, got nan",), work(e)),
        "plan: NaN in a variant": lambda e: Case(
            ["ablate", plan(e, {"tacfn": {}, "odd": {"train.lr": float("nan")}}), "--out", out(e)],
            ("plan.yaml", "variant odd: train.lr: Input should be a finite number, got nan"), work(e)),
        "plan: infinite resources": lambda e: Case(
            ["ablate", plan(e, {"tacfn": {}, "concat": {"model.fusion.name": "concat"}}, resources={"cpu": float("inf")}), "--out", out(e)],
            ("plan.yaml", "resources.cpu: Input should be a finite number"), work(e)),
        # messages that name the file and the problem
        "config: not UTF-8": lambda e: Case(
            ["train", bytes_file(e, "utf16.yaml", "train: {epochs: 1}\n".encode("utf-16")), "--out", out(e)],
            ("utf16.yaml: not UTF-8 text (byte 0xff at offset 0)",), work(e)),
        "plan: not UTF-8": lambda e: Case(
            ["ablate", bytes_file(e, "latin1.yaml", "name: caf\xe9\n".encode("latin-1")), "--out", out(e)],
            ("latin1.yaml: not UTF-8 text (byte 0xe9 at offset 9)",), work(e)),
        "prepare: file without audio or video": lambda e: Case(
            ["data", "prepare", ravdess_with(e, "nostreams", no_streams), out(e), "--jobs", "1"],
            ("01-01-03-01-01-01-01.mp4: no audio or video stream",), work(e), noisy=True),
        # plans that compare nothing
        "plan: variant identical to the baseline": lambda e: Case(
            ["ablate", plan(e, {"tacfn": {}, "same": {"train.epochs": 1}}), "--out", out(e)],
            ("plan.yaml", "variant 'same' {'train.epochs': 1} makes the same run as the baseline 'tacfn' {}"), work(e)),
        "plan: two identical variants": lambda e: Case(
            ["ablate", plan(e, {"tacfn": {}, "a": {"model.fusion.name": "concat"}, "b": {"model.fusion.name": "concat"}}), "--out", out(e)],
            ("variant 'b' {'model.fusion.name': 'concat'} makes the same run as variant 'a'",), work(e)),
        # absurd numbers and paths
        "seed beyond torch's range": lambda e: Case(
            ["train", config(e), "--out", out(e), "--set", "train.seed=99999999999999999999"],
            ("train.seed: Input should be less than or equal to 18446744073709551615",), work(e)),
        "synthetic clips beyond RAVDESS's": lambda e: Case(
            ["train", config(e, {"data": {"path": None, "synthetic": {"clips_per_actor": 100}}}), "--out", out(e)],
            ("data.synthetic.clips_per_actor: Input should be less than or equal to 60",), work(e)),
        "fusion layers beyond reason": lambda e: Case(
            ["train", config(e), "--out", out(e), "--set", "model.fusion.layers=100000"],
            ("`1 <= layers <= 64` must hold, but got layers=100000",), work(e)),
        "dashboard: --port out of range": lambda e: Case(
            ["dashboard", str(search_store(e)), "--serve", "--port", "99999"], ("`0 <= --port <= 65535` must hold",), e.tmp / "exp"),
        "feature cache folder that cannot be made": lambda e: Case(
            ["train", config(e, {"model": {"backbone": "frozen"}, "data": {"cache_dir": "/proc/tacfn-cache"}}), "--out", out(e)],
            ("the feature cache folder /proc/tacfn-cache/features cannot be made", "data.cache_dir"), work(e)),
        "prepare: source that is a file": lambda e: Case(
            ["data", "prepare", config(e), out(e)], ("RAVDESS folder", "run.yaml is a file"), work(e)),
        "iemocap: source that is a folder": lambda e: Case(
            ["data", "iemocap", folder(e, "d.pkl"), str(iemocap_out(e))],
            ("d.pkl is not a file",), e.tmp / "iemocap"),
    }


CASES = _cases()


@pytest.fixture
def env(tmp_path: Path, synthetic_ravdess: Path, prepared_lite: Path) -> Env:
    return Env(tmp_path, synthetic_ravdess, prepared_lite)


def test_the_corpus_is_large():
    assert len(CASES) >= 24


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, env: Env, capsys, monkeypatch):
    monkeypatch.chdir(env.tmp)  # default outputs (runs/NAME) land in the scratch folder
    monkeypatch.delenv("TACFN_DEBUG", raising=False)
    case = CASES[name](env)
    for module in case.missing:
        monkeypatch.setitem(sys.modules, module, None)  # `import module` fails, as without its extra
    shared = snapshot(env.prepared), snapshot(env.raw)
    before = snapshot(case.guard)
    code = main(case.argv)
    _, err = capsys.readouterr()
    assert code != 0
    line = error_line(err, case.noisy)
    for needle in case.needles:
        assert needle in line, line
    assert snapshot(case.guard) == before, "the command changed files it must leave alone"
    assert not (env.tmp / "runs").exists()
    assert (snapshot(env.prepared), snapshot(env.raw)) == shared


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        """Its own stderr lines would hide the one under test."""


def test_a_wrong_address_fails_in_seconds(env: Env, capsys):
    """Ray retries an address for minutes; tacfn checks it first, in a few seconds: nothing
    listens, a black hole (or, behind a proxy, anything that answers), an HTTP server."""
    import tacfn.search  # noqa: F401  (Ray's import time is not what is measured)

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        addresses = {
            f"127.0.0.1:{closed_port()}": "cannot reach the Ray cluster at",
            f"ray://127.0.0.1:{closed_port()}": "cannot reach the Ray cluster at",
            "10.255.255.1:6379": "",
            f"127.0.0.1:{web.server_address[1]}": "accepts connections but does not answer as a Ray cluster's head",
        }
        for address, message in addresses.items():
            started = time.perf_counter()
            code = main(["search", space(env), "--out", str(env.tmp / "exp"), "--address", address])
            seconds = time.perf_counter() - started
            line = error_line(capsys.readouterr().err)
            assert code == 2 and repr(address) in line and message in line
            assert seconds < 10, f"{address}: {seconds:.1f} s"
            assert not (env.tmp / "exp").exists()
        web.shutdown()


def _tacfn(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tacfn.cli", *argv], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_exit_status_end_to_end(env: Env):
    """The console entry point: status 2 and one stderr line, in a fresh interpreter."""
    bad = text_file(env, "bad.yaml", "train: {epochs: [\n")
    proc = _tacfn("train", bad, cwd=env.tmp)
    assert proc.returncode == 2 and "malformed YAML" in error_line(proc.stderr)

    root = newer_store(env)
    before = snapshot(root)
    proc = _tacfn("search", "--out", str(root), "--resume", cwd=env.tmp)
    assert proc.returncode == 2 and "schema_version 99 is newer" in error_line(proc.stderr)
    assert snapshot(root) == before

    started = time.perf_counter()
    proc = _tacfn("search", space(env), "--out", str(env.tmp / "new"), "--address", f"127.0.0.1:{closed_port()}", cwd=env.tmp)
    assert proc.returncode == 2 and "cannot reach the Ray cluster" in error_line(proc.stderr)
    assert time.perf_counter() - started < 60 and not (env.tmp / "new").exists()
