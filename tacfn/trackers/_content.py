"""What a run logs to a tracker: the numbers the results store records, in one place.

Every tracker, on every path (a search's or an ablation's trials through Ray Tune, a
``tacfn train`` run in its own process), gets the same:

- params: the run's whole config, flattened to dotted keys, as the store's ``config.*``
  columns hold it (:func:`run_params`);
- tags: ``config_hash``, ``seed``, ``fold``, and ``trial_id`` for a trial, ``variant`` for an
  ablation's run (:func:`run_info`);
- per epoch, at step = epoch: :data:`EPOCH_METRICS`;
- at the run's end, at the step of its last epoch: the best epoch and its validation metrics,
  the epochs run, and the test metrics where the run computed them (:func:`end_metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ..store import flatten_config

if TYPE_CHECKING:
    from ..config import RunConfig

EPOCH_METRICS = ("train_loss", "train_score", "val_loss", "val_score", "val_weighted_f1", "seconds")
"""Logged after every epoch, at step = epoch."""


class RunInfo(NamedTuple):
    """What names a run in a tracker: its name, params, tags and (W&B) group."""

    name: str
    params: dict[str, Any]
    tags: dict[str, str]
    group: str | None = None


def run_params(cfg: RunConfig, prefix: str = "") -> dict[str, Any]:
    """The run config as flat ``prefix + dotted key`` columns (lists as JSON). The preset's
    fusion block is named when the config names none, so every run says which block it ran."""
    columns = flatten_config(cfg.model_dump(mode="json"), prefix)
    columns.setdefault(f"{prefix}model.fusion.name", cfg.architecture().fusion.name)
    return columns


def run_info(cfg: RunConfig, name: str, *, trial_id: str | None = None, variant: str | None = None, group: str | None = None) -> RunInfo:
    """A run's name, params and tags (see the module docstring)."""
    from ..search._space_compile import config_hash  # light: no Ray, no torch

    tags = {"config_hash": config_hash(cfg.model_dump(mode="json")), "seed": str(cfg.train.seed), "fold": str(cfg.data.fold)}
    if trial_id is not None:
        tags["trial_id"] = trial_id
    if variant is not None:
        tags["variant"] = variant
    return RunInfo(name, run_params(cfg), tags, group)


def epoch_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """An epoch's metrics (an EpochRecord as a mapping, or a Tune report that holds one)."""
    return {key: float(record[key]) for key in EPOCH_METRICS if key in record}


def best_epoch(epochs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The epoch whose weights a run keeps: the highest ``val_score``, the earliest on a tie."""
    return max(epochs, key=lambda e: (e["val_score"], -e["epoch"])) if epochs else None


def end_metrics(epochs: Sequence[Mapping[str, Any]], test: Mapping[str, Any] | None = None) -> dict[str, float]:
    """What a run knows when it ends: its best epoch, that epoch's validation metrics, the
    epochs run, and ``test`` (``test_*`` metrics) where the run scored the test split."""
    metrics: dict[str, float] = {"epochs_run": len(epochs)}
    best = best_epoch(epochs)
    if best is not None:
        metrics |= {"best_epoch": best["epoch"], "best_val_score": best["val_score"], "best_val_weighted_f1": best["val_weighted_f1"]}
    for key, value in (test or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            metrics[key] = float(value)
    return metrics


def scores_on_test(test: Mapping[str, Any], missing: Mapping[str, float], ms_per_sample: float | None) -> dict[str, Any]:
    """A test scoring as ``test_*`` metrics: score, weighted F1, milliseconds per test sample,
    the score with each modality missing, and IEMOCAP's per-emotion accuracy and F1 (the
    results store's test columns)."""
    return {
        "test_score": test["score"],
        "test_weighted_f1": test["weighted_f1"],
        "test_ms_per_sample": ms_per_sample,
        **{f"test_missing_{m}": s for m, s in missing.items()},
        **{f"test_{k}": v for k, v in test.items() if k.endswith(("_accuracy", "_weighted_f1")) and k != "weighted_f1"},
    }
