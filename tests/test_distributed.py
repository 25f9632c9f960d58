"""Ray Train on a real local Ray runtime: DDP workers in lockstep, restart after a worker
dies, ``tacfn train --workers 2``, and a search whose trials each run on two workers."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import polars as pl
import pytest
import ray
import torch
import yaml

from tacfn.cli import main
from tacfn.config import parse_run_config
from tacfn.search import load_space
from tacfn.search._distributed import run_distributed
from tacfn.search._ray import init_ray
from tacfn.search._runner import run_search
from tacfn.store import ExperimentStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray runtime of 2 CPUs for the module, dashboard on (Ray Train needs it).

    Ray Train's controller takes in one round of reports per health check (2 s by default):
    epochs of a fraction of a second would wait on it, so the tests check every 0.2 s.
    """
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
        init_ray(None, dashboard=True, num_cpus=2)
        yield
        ray.shutdown()


def _config(data: Path, tmp_path: Path, *, epochs: int) -> dict:
    return {
        "model": {"preset": "lite"},
        "data": {"path": str(data), "cache_dir": str(tmp_path / "cache")},
        "train": {"epochs": epochs, "batch_size": 8, "seed": 0},
    }


def test_two_workers_train_in_lockstep_and_resume_after_one_dies(local_ray, prepared_lite: Path, tmp_path: Path):
    logs = tmp_path / "weights"
    logs.mkdir()
    killed = tmp_path / "killed-once"
    reported = tmp_path / "epoch-2-reported"

    def log_weights_and_die_once(trainer, record):
        # Runs inside each worker after each epoch (nested, so Ray ships it by value:
        # workers cannot import test modules). Rank 1 dies after epoch 2, once.
        digest = hashlib.sha256()
        for tensor in trainer.model.parameters():
            digest.update(tensor.detach().cpu().numpy().tobytes())
        rank, world = trainer.shard
        (logs / f"{os.getpid()}-epoch{record.epoch}-rank{rank}-of{world}").write_text(digest.hexdigest())
        if rank == 1 and record.epoch == 2 and not killed.exists():
            killed.touch()
            # Ray Train takes in reports on a 2 s poll: die once epoch 2's checkpoint is in.
            deadline = time.monotonic() + 120
            while not reported.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)

    seen = []

    def on_epoch(record):  # the driver hears of an epoch once its checkpoint is registered
        seen.append(record)
        if record.epoch == 2:
            reported.touch()

    cfg = parse_run_config(_config(prepared_lite, tmp_path, epochs=4))
    out = tmp_path / "run"
    result = run_distributed(cfg, workers=2, use_gpu=False, out_dir=out, max_failures=1, on_epoch=on_epoch, callbacks=[log_weights_and_die_once])

    assert killed.exists()
    runs: dict[tuple[str, str], dict[int, str]] = {}  # (pid, rank) -> {epoch: weights digest}
    for path in logs.iterdir():
        pid, epoch, rank, _ = path.name.split("-")
        runs.setdefault((pid, rank), {})[int(epoch.removeprefix("epoch"))] = path.read_text()
    rank0 = sorted((epochs for (_, rank), epochs in runs.items() if rank == "rank0"), key=min)
    rank1 = sorted((epochs for (_, rank), epochs in runs.items() if rank == "rank1"), key=min)
    assert [sorted(r) for r in rank0] == [[1, 2], [3, 4]], "a new worker group resumed after epoch 2"
    assert rank0 == rank1, "both ranks hold the same weights after every epoch"
    digests = [d for r in rank0 for d in r.values()]
    assert len(set(digests)) == 4, "the weights change every epoch"

    assert result.status == "completed"
    assert [r.epoch for r in result.history] == [1, 2, 3, 4], "every epoch once"
    assert [r.epoch for r in seen] == [1, 2, 3, 4] and seen == result.history
    scores = [r.val_score for r in result.history]
    assert result.best_epoch == 1 + scores.index(max(scores))
    assert result.val["score"] == pytest.approx(max(scores))
    assert 0.0 <= result.test["score"] <= 1.0 and set(result.test_missing_modality) == {"video", "audio"}
    assert len(result.predictions["pred"]) == len(result.predictions["label"]) > 0
    written = json.loads((out / "result.json").read_text())
    assert written["best_epoch"] == result.best_epoch and written["test"] == result.test
    assert torch.load(out / "checkpoints" / "best.pt", weights_only=True)["epoch"] == result.best_epoch


def test_cli_train_with_two_workers(local_ray, prepared_lite: Path, tmp_path: Path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_config(prepared_lite, tmp_path, epochs=2)))
    out = tmp_path / "run"
    assert main(["train", str(config), "--workers", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "on 2 Ray Train workers" in printed
    assert "epoch   1/2" in printed and "epoch   2/2" in printed
    assert "test score" in printed
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "completed" and [r["epoch"] for r in result["history"]] == [1, 2]
    best = torch.load(out / "checkpoints" / "best.pt", weights_only=False)  # copied from Train's last checkpoint
    assert best["epoch"] == result["best_epoch"] and not list((out / "checkpoints").glob(".*.tmp"))

    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({**_config(prepared_lite, tmp_path, epochs=3), "model": {"preset": "lite", "fusion": {"name": "concat"}}}))
    assert main(["train", str(changed), "--workers", "2", "--out", str(out), "--resume"]) == 2
    assert "differs in model.fusion.name" in capsys.readouterr().err
    assert json.loads((out / "result.json").read_text()) == result, "the refused resume changed nothing"


@pytest.mark.parametrize("argv", [["--gpu"], ["--workers", str((os.cpu_count() or 1) + 1)]])
def test_cli_worker_group_larger_than_the_machine_is_one_line(argv, prepared_lite: Path, tmp_path: Path, capsys):
    if "--gpu" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_config(prepared_lite, tmp_path, epochs=1)))
    assert main(["train", str(config), *argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "but this machine has" in err and err.count("\n") == 1


def test_search_with_two_workers_per_trial_does_not_deadlock(local_ray, prepared_lite: Path, tmp_path: Path):
    # Two trials at once, each needing both CPUs for its workers: only a trial process that
    # reserves no CPU lets them run one after the other instead of waiting on each other.
    space = {
        "name": "ddp",
        "base": {**_config(prepared_lite, tmp_path, epochs=2), "model": {"preset": "lite", "backbone": "frozen"}},
        "space": {"train.lr": {"float": [1.0e-3, 1.0e-2], "log": True}},
        "search": {"trials": 2, "concurrency": 2, "scheduler": "none", "workers": 2, "resources": {"cpu": 1}, "seed": 0},
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    summary = run_search(load_space(path), tmp_path / "exp", quiet=True)

    trials = pl.from_arrow(ExperimentStore.open(tmp_path / "exp").trials())
    assert trials.height == 2 and set(trials["status"]) == {"completed"}
    assert trials["epochs_run"].to_list() == [2, 2]
    train_runs = tmp_path / "exp" / "ray-train"  # one Ray Train run per trial
    assert sorted(p.name for p in train_runs.iterdir()) == sorted(trials["trial_id"])
    assert summary.completed == 2 and summary.test_score is not None
    chosen = trials.filter(pl.col("chosen"))
    assert chosen.height == 1 and chosen["val_score"][0] == trials["val_score"].max()

