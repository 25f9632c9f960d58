"""The Tune function trainable: one trial is one training run.

A trial on one worker (or a fraction of a GPU) runs :func:`tacfn.training.train` directly
in the trial's process; every epoch is reported to Tune with a checkpoint, so a restored
trial continues from its last epoch. A trial on several workers launches a Ray Train
TorchTrainer from the trial's process instead (:func:`._distributed.fit_trial`); its Train
run keeps its own checkpoints, and a restored trial resumes that run. Data shared by every
trial (the prepared dataset, or the frozen encoders' features) arrives once through Ray's
object store.
"""

from __future__ import annotations

import shutil
import time
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from ..config import RunConfig, parse_run_config
from ..model import TACFN
from ..tasks import TaskData
from ..training import EpochRecord, train
from ._distributed import SharedTask, TrialWorkers, fit_trial
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


def inference_latency_ms(cfg: RunConfig, input_lengths: dict[str, int] | None, repeats: int = 5) -> float:
    """Median time of one sample's forward pass through the whole model (encoders
    included), on the trial's CPU: the latency objective of multi-objective searches."""
    model = TACFN(cfg.architecture(input_lengths)).eval()
    inputs = {m.name: torch.randn(1, *m.input_shape) for m in model.cfg.modalities}
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            model(inputs)
            times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]) * 1e3)  # the first call warms up


def run_trial(
    params: dict[str, Any],
    *,
    base: dict[str, Any],
    shared: TaskData | SharedTask | None,
    shared_identity: str | None,
    workers: TrialWorkers | None = None,
    measure_latency: bool = False,
) -> None:
    """Train the trial's configuration, reporting each epoch (and the final status) to Tune.

    With ``workers`` (several Ray Train workers per trial), ``shared`` is a SharedTask.
    """
    cfg = trial_run_config(base, params)
    task = shared if shared is not None and encoder_identity(cfg) == shared_identity else None
    total, trainable = count_parameters(cfg, shared.input_lengths if shared else None)
    static = {
        "num_parameters": total,
        "trainable_parameters": trainable,
        "target_epochs": cfg.train.epochs,
        "node_id": ray.get_runtime_context().get_node_id(),
    }
    if measure_latency:
        static["latency_ms"] = inference_latency_ms(cfg, shared.input_lengths if shared else None)
    if workers is not None:
        fit_trial(cfg, task=task, workers=workers, name=tune.get_context().get_trial_id(), extra=static)
        return
    workdir = Path(tempfile.mkdtemp(prefix="tacfn-trial-"))
    ckpt_dir = workdir / "checkpoints"
    resume = False
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as path:
            shutil.copytree(path, ckpt_dir)
        resume = True

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
