"""The ground truth closes the loop: trained on the planted-effect data with the shipped recipe
(``search_spaces/ablation_ground_truth.yaml``), TACFN reads the cross-modal bit while concat
and the paper's pooling cannot; on the planted null nobody reads it. Checked by training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tacfn.config import parse_run_config
from tacfn.data.synth import planted_bits
from tacfn.nested import apply_overrides
from tacfn.search import load_plan
from tacfn.training import train

pytestmark = pytest.mark.slow
PLAN = load_plan("ablation_ground_truth")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ground-truth")


def _bit_accuracy(result, bit: int) -> float:
    labels, preds = (np.array(result.predictions[k]) for k in ("label", "pred"))
    return float(np.mean([planted_bits(int(y))[bit] == planted_bits(int(p))[bit] for y, p in zip(labels, preds)]))


def _run(cache: Path, variant: str, seed: int, **data):
    base = apply_overrides(PLAN.base, {"data.cache_dir": str(cache), **{f"data.synthetic.{k}": v for k, v in data.items()}})
    cfg = parse_run_config(apply_overrides(base, {**PLAN.variants[variant], "train.seed": seed, "data.fold": 0}), variant)
    result = train(cfg)
    assert result.status == "completed", result.error
    return result


@pytest.mark.parametrize("seed", [0, 1])
def test_tacfn_reads_the_cross_modal_bit_and_concat_does_not(cache: Path, seed: int) -> None:
    tacfn = _run(cache, "tacfn", seed)
    concat = _run(cache, "concat", seed)
    assert _bit_accuracy(tacfn, 0) == _bit_accuracy(tacfn, 1) == 1.0  # the unimodal bits, from the pretrained encoders
    assert _bit_accuracy(tacfn, 2) >= 0.85 and tacfn.test["score"] >= 0.8
    assert _bit_accuracy(concat, 2) <= 0.65 and concat.test["score"] <= 0.6  # additive: its ceiling is 0.5


def test_the_papers_pooling_hides_the_cross_modal_bit(cache: Path) -> None:
    """The same block with the paper's pooling (v * alpha + v averaged over all positions)."""
    paper = _run(cache, "paper_pool", 0)
    assert _bit_accuracy(paper, 2) <= 0.65


def test_on_the_planted_null_tacfn_reads_no_more_than_concat(cache: Path) -> None:
    tacfn = _run(cache, "tacfn", 0, effects=["audio", "video"], clips_per_actor=24)
    assert _bit_accuracy(tacfn, 0) == _bit_accuracy(tacfn, 1) == 1.0
    assert _bit_accuracy(tacfn, 2) <= 0.65 and tacfn.test["score"] <= 0.6
