"""Experiment trackers, opt in: MLflow, Weights & Biases and TensorBoard.

The ``loggers`` setting (:mod:`._schema`), what a run logs (:mod:`._content`) and the runs
``tacfn train`` writes with each library's own API (:mod:`._writers`); a search's and an
ablation's trials log through Ray Tune's logger callbacks (:mod:`tacfn.search._trackers`).
Everything loads when first used: a search space's schema imports this package, and neither
the trackers' libraries nor torch load with it.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "EXTRAS": "_schema",
    "MLflowTracker": "_schema",
    "TensorBoardTracker": "_schema",
    "Tracker": "_schema",
    "Trackers": "_schema",
    "WandbTracker": "_schema",
    "check_installed": "_schema",
    "with_destinations": "_schema",
    "EPOCH_METRICS": "_content",
    "RunInfo": "_content",
    "best_epoch": "_content",
    "end_metrics": "_content",
    "epoch_metrics": "_content",
    "run_info": "_content",
    "run_params": "_content",
    "scores_on_test": "_content",
    "RunTrackers": "_writers",
    "TensorBoardRun": "_writers",
    "open_run": "_writers",
    "wandb_tags": "_writers",
}

__all__ = [*_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
