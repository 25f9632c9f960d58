"""The fusion zoo's truth table, checked by training (``search_spaces/ablation_zoo.yaml``,
seed 0, fold 0): blocks that attend over the video's positions read the cross-modal bit;
blocks that fuse the modalities after pooling each to a vector, or gate its channels, stay
near the additive ceiling: from the video's mean over positions the bit cannot be learnt
from these 640 training clips, even by an MLP given both modalities (the probe below);
late fusion is additive. TACFN and concat are trained by
tests/test_ground_truth.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tacfn.config import parse_run_config
from tacfn.data.synth import planted_bits
from tacfn.nested import apply_overrides
from tacfn.search import load_plan
from tacfn.tasks import load_task
from tacfn.training import Trainer, train

pytestmark = pytest.mark.slow
PLAN = load_plan("ablation_zoo")
READS_POSITIONS = ["mult"]  # attends over every video position, as tacfn does
POOLS_FIRST = ["tfn", "lmf", "mcbp"]  # multiplicative, but of the pooled vectors
GATES_CHANNELS = ["mmtm", "msaf"]  # re-weight channels, then the mean-pooling classifier
ADDITIVE = ["late_average", "late_product"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo")


def _config(cache: Path, variant: str):
    overrides = {"data.cache_dir": str(cache), **PLAN.variants[variant], "train.seed": 0, "data.fold": 0}
    return parse_run_config(apply_overrides(PLAN.base, overrides), variant)


def _cross_bit(labels, preds) -> float:
    return float(np.mean([planted_bits(int(y))[2] == planted_bits(int(p))[2] for y, p in zip(labels, preds)]))


@pytest.mark.parametrize("variant", READS_POSITIONS + POOLS_FIRST + GATES_CHANNELS + ADDITIVE)
def test_each_block_sits_at_its_familys_ceiling(cache: Path, variant: str) -> None:
    result = train(_config(cache, variant))
    assert result.status == "completed", result.error
    cross = _cross_bit(result.predictions["label"], result.predictions["pred"])
    if variant in READS_POSITIONS:
        assert cross >= 0.85 and result.test["score"] >= 0.8
    else:  # the additive ceiling is 0.5 (cross bit at chance)
        assert cross <= 0.7 and result.test["score"] <= 0.7


def _b2(labels: torch.Tensor) -> torch.Tensor:
    return torch.tensor([planted_bits(int(y))[2] for y in labels])


def _mlp_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor) -> float:
    """Test accuracy of a one-hidden-layer MLP trained to read the cross-modal bit."""
    torch.manual_seed(0)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    net = nn.Sequential(nn.Linear(train_x.shape[1], 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 2))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(100):
        for batch in torch.randperm(len(train_x)).split(32):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(train_x[batch]), train_y[batch]).backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        return float((net(test_x).argmax(1) == test_y).float().mean())


def test_an_mlp_learns_the_cross_modal_bit_from_every_video_position_but_not_from_their_mean(cache: Path) -> None:
    """Why the pool-first and channel-gating blocks fail: on the frozen features, an MLP learns
    the bit from audio and every video position, but not from audio and the video's mean."""
    task = Trainer(_config(cache, "concat"), load_task(_config(cache, "concat"))).task
    splits = {name: getattr(task, name).batch(np.arange(len(getattr(task, name)))) for name in ("train", "test")}
    audio = {name: batch["audio"].float().flatten(1) for name, batch in splits.items()}
    labels = {name: _b2(batch["label"]) for name, batch in splits.items()}
    video = {
        "positions": {name: batch["video"].float().flatten(1) for name, batch in splits.items()},
        "mean": {name: batch["video"].float().flatten(2).mean(2) for name, batch in splits.items()},
    }
    read = {
        kind: _mlp_probe(torch.cat([v["train"], audio["train"]], 1), labels["train"],
                         torch.cat([v["test"], audio["test"]], 1), labels["test"])
        for kind, v in video.items()
    }
    assert read["positions"] >= 0.9 and read["mean"] <= 0.65, read
