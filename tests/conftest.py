"""Shared fixtures: a small synthetic RAVDESS tree, written once, and its lite preparation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tacfn.data.prepare import prepare_ravdess
from tacfn.data.preprocessing import LITE_PREPROCESS
from tacfn.data.synth import write_synthetic_ravdess


@pytest.fixture(scope="session")
def synthetic_ravdess(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 actors x 8 full-AV clips (one per emotion) + 1 video-only clip each, seed 0."""
    return write_synthetic_ravdess(tmp_path_factory.mktemp("ravdess"), actors=6, clips_per_actor=8, seed=0)


@pytest.fixture(scope="session")
def prepared_lite(synthetic_ravdess: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``synthetic_ravdess`` prepared with LITE_PREPROCESS (8 frames of 64x64, 13 x 106 MFCCs)."""
    out = tmp_path_factory.mktemp("prepared_lite")
    prepare_ravdess(synthetic_ravdess, out, LITE_PREPROCESS, workers=2)
    return out
