"""The GPU path: bf16 autocast in one process and four trials sharing one GPU.

Needs a CUDA GPU; skipped without one (CI has none). 2-worker DDP with NCCL is in
tests/test_distributed.py (``test_gpu_workers_train_with_amp``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import ray
import torch

from tacfn.config import parse_run_config
from tacfn.search import ExperimentStore
from tacfn.search._runner import init_ray, run_search
from tacfn.search._space import parse_space
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
    trials = pl.from_arrow(ExperimentStore.open(tmp_path / "exp").trials()).sort("started_at")
    assert trials["status"].to_list() == ["completed"] * 4
    # all four ran at once: each started before the first one finished
    assert trials["started_at"].max() < trials["finished_at"].min()
