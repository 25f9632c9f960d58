"""The GPU path: bf16 autocast in one process, four trials sharing one GPU, and Ray Train
workers on NCCL.

Needs a CUDA GPU; skipped without one (CI has none). Reads results with pyarrow alone, so
it runs where polars is not installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from tacfn.config import parse_run_config
from tacfn.search._distributed import run_distributed
from tacfn.search._ray import init_ray
from tacfn.search._runner import run_search, shared_task
from tacfn.search._space import parse_space
from tacfn.store import ExperimentStore
from tacfn.tasks import load_task
from tacfn.training import Trainer, train

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.timeout(600),
]


def _config(data: Path, tmp_path: Path, **train_settings) -> dict:
    return {
        "model": {"preset": "lite", "backbone": "frozen"},
        "data": {"path": str(data), "cache_dir": str(tmp_path / "cache")},
        "train": {"epochs": 3, "batch_size": 8, "seed": 0, "device": "cuda", **train_settings},
    }


def test_amp_trains_in_bf16_on_the_gpu(prepared_lite: Path, tmp_path: Path):
    cfg = parse_run_config(_config(prepared_lite, tmp_path, amp=True))
    trainer = Trainer(cfg, load_task(cfg))
    assert trainer.device.type == "cuda" and trainer.amp
    logits = trainer._logits(trainer.network, trainer.task.train.batch(np.arange(4)))
    assert logits.dtype == torch.bfloat16 and next(trainer.model.parameters()).dtype == torch.float32
    result = train(cfg)
    assert result.status == "completed" and all(np.isfinite(r.train_loss) for r in result.history)


def test_search_driver_hands_back_the_gpu_memory_encoding_used(prepared_lite: Path, tmp_path: Path):
    # The driver encodes the frozen features on the GPU, then shares it with the trials for
    # the whole search: nothing of the encoding may stay reserved in PyTorch's cache.
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    reserved = torch.cuda.memory_reserved()
    task, _ = shared_task(_config(prepared_lite, tmp_path), progress=False)
    assert task.features and torch.cuda.max_memory_reserved() > reserved, "the encoders ran on the GPU"
    assert torch.cuda.memory_reserved() <= reserved


def test_four_trials_share_one_gpu(prepared_lite: Path, tmp_path: Path):
    spec = parse_space(
        {
            "name": "gpu-quarter",
            "base": _config(prepared_lite, tmp_path, epochs=6),
            "space": {"train.lr": {"choice": [1e-3, 2e-3, 3e-3, 4e-3]}},
            "search": {"trials": 4, "concurrency": 4, "scheduler": "none", "resources": {"cpu": 1, "gpu": 0.25}},
        },
        "gpu-quarter",
    )
    init_ray(None, num_cpus=4)
    try:
        assert ray.cluster_resources().get("GPU", 0) >= 1
        run_search(spec, tmp_path / "exp", quiet=True)
    finally:
        ray.shutdown()
    trials = ExperimentStore.open(tmp_path / "exp").trials().to_pylist()
    assert [t["status"] for t in trials] == ["completed"] * 4
    # all four ran at once: each started before the first one finished
    assert max(t["started_at"] for t in trials) < min(t["finished_at"] for t in trials)


def test_gpu_workers_train_with_amp(prepared_lite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """As many Ray Train workers as GPUs, up to 2 (NCCL allows one rank per GPU), in bf16."""
    devices = tmp_path / "devices"
    devices.mkdir()

    def log_device(trainer, record):
        (devices / f"rank{trainer.shard[0]}").write_text(f"{trainer.device.type} {trainer.amp}")

    workers = min(2, torch.cuda.device_count())
    cfg = parse_run_config(_config(prepared_lite, tmp_path, epochs=2, amp=True))
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    init_ray(None, dashboard=True, num_cpus=4)  # as `tacfn train --workers N --gpu` starts it
    try:
        result = run_distributed(cfg, workers=workers, use_gpu=True, out_dir=tmp_path / "run", callbacks=[log_device])
    finally:
        ray.shutdown()
    assert result.status == "completed" and [r.epoch for r in result.history] == [1, 2]
    assert sorted(p.read_text() for p in devices.iterdir()) == ["cuda True"] * workers
