"""The Tune function trainable: one trial is one training run.

A trial on one worker (or a fraction of a GPU) runs :func:`tacfn.training.run_epochs`
directly in the trial's process; every epoch is reported to Tune, with a checkpoint at most every
``search.checkpoint_interval_s`` and after the last epoch, so a restored trial continues from
its last checkpoint. A trial on several workers launches a Ray Train
TorchTrainer from the trial's process instead (:func:`._distributed.fit_trial`); its Train
run keeps its own checkpoints, and a restored trial resumes that run. Data shared by every
trial (the prepared dataset, or the frozen encoders' features) arrives once through Ray's
object store.

Each report carries the epoch's own metrics (``val_score``, ...) and those of the best epoch
so far (``best_val_score``, ``best_val_weighted_f1``), the last report of an unfinished or
diverged trial too. A trial keeps the best epoch's weights, so the best epoch's scores are
what Tune ranks trials on (and ASHA compares), what Optuna is told and what the results store
records: Ray's results and the store tell one story.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from ..config import RunConfig, parse_run_config
from ..model import TACFN
from ..nested import apply_overrides
from ..tasks import TaskData, load_task
from ..run_folder import LAST_CHECKPOINT
from ..training import RunState, Trainer, run_epochs
from ._distributed import SharedTask, TrialWorkers, best_epoch_scores, fit_trial


def encoder_identity(cfg: RunConfig) -> str:
    """What fixes the frozen encoders' outputs: trials that agree on it can share features.

    The training seed counts only where it initialises an encoder that no weights replace:
    with ``model.pretrain`` every encoder is loaded from this fold's pretrained weights, so the
    replicates of a seed-aware search on one fold share one copy of the features.
    """
    m = cfg.model
    seed = None if m.pretrain is not None else cfg.train.seed
    return repr((m.preset, m.modalities, m.backbone, sorted(m.checkpoints.items()), m.pretrain, seed, cfg.data.model_dump(mode="json")))


SharedTasks = Mapping[str, TaskData | SharedTask]  # encoder identity -> the data its trials share


def trial_run_config(base: dict[str, Any], params: dict[str, Any], *, check_model: bool = True) -> RunConfig:
    """The run config of a trial: the base mapping with the sampled dotted keys applied
    (``check_model``: see :func:`tacfn.config.parse_run_config`)."""
    return parse_run_config(apply_overrides(base, params), "trial config", check_model=check_model)


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
    shared: SharedTasks,
    workers: TrialWorkers | None = None,
    measure_latency: bool = False,
    checkpoint_interval_s: float = 0.0,
) -> None:
    """Train the trial's configuration, reporting each epoch (and the final status) to Tune.

    A report carries a checkpoint when ``checkpoint_interval_s`` have passed since the
    trial's last one (0: every epoch) and after the last epoch, whose checkpoint holds the
    weights the search scores if it chooses this trial. Saving and persisting a checkpoint
    costs tens of milliseconds, more than a lite epoch on cached features; a restarted trial
    repeats at most the epochs since its last checkpoint. ``shared`` holds the data prepared
    in the driver, by encoder identity; a trial whose identity has none loads its own. With
    ``workers`` (several Ray Train workers per trial), ``shared`` holds SharedTasks and Ray
    Train checkpoints each epoch.
    """
    cfg = trial_run_config(base, params, check_model=False)  # a bad combination fails building the model
    task = shared.get(encoder_identity(cfg))
    lengths = next(iter(shared.values())).input_lengths if shared else None  # the same for every fold of a dataset
    static: dict[str, Any] = {"target_epochs": cfg.train.epochs, "node_id": ray.get_runtime_context().get_node_id()}
    if measure_latency:
        static["latency_ms"] = inference_latency_ms(cfg, lengths)
    if workers is not None:
        assert not isinstance(task, TaskData)  # workers get the task from Ray's object store, as a SharedTask
        total, trainable = count_parameters(cfg, lengths)
        extra = {**static, "num_parameters": total, "trainable_parameters": trainable}
        fit_trial(cfg, task=task, workers=workers, name=tune.get_context().get_trial_id(), extra=extra)
        return
    assert not isinstance(task, SharedTask)  # one process: the task itself
    trainer = Trainer(cfg, task or load_task(cfg))
    static["num_parameters"], static["trainable_parameters"] = trainer.model.num_parameters()
    state = RunState()
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as path:
            state = trainer.restore(Path(path) / LAST_CHECKPOINT)
    ckpt_dir = Path(tempfile.mkdtemp(prefix="tacfn-trial-"))
    saved_at = time.monotonic()
    try:
        for record in run_epochs(trainer, state):
            metrics = {
                **asdict(record),
                **static,
                **best_epoch_scores(state),  # what model selection (and Optuna) sees
                "status": "running",
                "finished": record.epoch == cfg.train.epochs,
            }
            checkpoint = None
            if metrics["finished"]:
                metrics["history_json"] = _history_json(state)
            if metrics["finished"] or time.monotonic() - saved_at >= checkpoint_interval_s:
                trainer.save_checkpoint(ckpt_dir / LAST_CHECKPOINT, trainer.checkpoint_state(state))
                checkpoint = tune.Checkpoint.from_directory(ckpt_dir)
                saved_at = time.monotonic()
            tune.report(metrics, checkpoint=checkpoint)
        if state.status != "completed":
            last = asdict(state.history[-1]) if state.history else {"epoch": 0, "val_score": 0.0}
            ending = {"status": state.status, "error": state.error, "finished": True, "history_json": _history_json(state)}
            tune.report({**last, **static, **best_epoch_scores(state), **ending})
    finally:
        shutil.rmtree(ckpt_dir, ignore_errors=True)


def _history_json(state: RunState) -> str:
    """Every epoch of the run, restored ones included, as JSON (Tune's loggers would try to
    plot a list)."""
    return json.dumps([asdict(record) for record in state.history])
