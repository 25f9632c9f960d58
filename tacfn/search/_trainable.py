"""The Tune function trainable: one trial is one training run.

A trial on one worker (or a fraction of a GPU) runs :func:`tacfn.training.train` directly
in the trial's process; every epoch is reported to Tune with a checkpoint, so a restored
trial continues from its last epoch. Data shared by every trial (the prepared dataset, or
the frozen encoders' features) arrives once through Ray's object store.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from ray import tune

from ..config import RunConfig, parse_run_config
from ..model import TACFN
from ..tasks import TaskData
from ..training import EpochRecord, train
from ._space import apply_overrides


def encoder_identity(cfg: RunConfig) -> str:
    """What fixes the frozen encoders' outputs: trials that agree on it can share features."""
    m = cfg.model
    return repr((m.preset, m.modalities, m.backbone, sorted(m.checkpoints.items()), cfg.train.seed, cfg.data.model_dump(mode="json")))


def trial_run_config(base: dict[str, Any], params: dict[str, Any]) -> RunConfig:
    """The run config of a trial: the base mapping with the sampled dotted keys applied."""
    return parse_run_config(apply_overrides(base, params), "trial config")


def count_parameters(cfg: RunConfig, input_lengths: dict[str, int] | None) -> tuple[int, int]:
    with torch.device("meta"):
        return TACFN(cfg.architecture(input_lengths)).num_parameters()


def run_trial(params: dict[str, Any], *, base: dict[str, Any], shared: TaskData | None, shared_identity: str | None) -> None:
    """Train the trial's configuration, reporting each epoch (and the final status) to Tune."""
    cfg = trial_run_config(base, params)
    task = shared if shared is not None and encoder_identity(cfg) == shared_identity else None
    total, trainable = count_parameters(cfg, shared.input_lengths if shared else None)
    workdir = Path(tempfile.mkdtemp(prefix="tacfn-trial-"))
    ckpt_dir = workdir / "checkpoints"
    resume = False
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as path:
            shutil.copytree(path, ckpt_dir)
        resume = True
    static = {"num_parameters": total, "trainable_parameters": trainable, "target_epochs": cfg.train.epochs}

    best = {"val_score": -float("inf")}

    def report(record: EpochRecord) -> None:
        best["val_score"] = max(best["val_score"], record.val_score)
        metrics = {
            **asdict(record),
            **static,
            "best_val_score": best["val_score"],  # what model selection (and Optuna) sees
            "status": "running",
            "finished": record.epoch == cfg.train.epochs,
        }
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(ckpt_dir))

    try:
        result = train(cfg, task=task, out_dir=workdir, on_epoch=report, resume=resume, evaluate_test=False)
        if result.status != "completed":
            last = result.history[-1] if result.history else None
            tune.report(
                {
                    **(asdict(last) if last else {"epoch": 0, "val_score": 0.0}),
                    **static,
                    "status": result.status,
                    "error": result.error,
                    "finished": True,
                }
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
