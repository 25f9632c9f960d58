"""Ray Train: one configuration trained on several workers with DistributedDataParallel.

Every worker builds the same :class:`~tacfn.training.Trainer` on its own device, trains its
share of each epoch's batches (``shard=(rank, world size)``) under DDP (gloo on CPU, NCCL on
GPU; bf16 autocast on GPU when ``train.amp``) and calls ``ray.train.report`` once per epoch;
rank 0 attaches a checkpoint. A worker that dies restarts the whole group from the last
checkpoint, up to ``max_failures`` times, and the epochs it had done are not run again.

- :func:`run_distributed` is ``tacfn train --workers N``: the test split is scored once, at
  the end, with the best validation epoch's weights, and ``result.json`` is written as in
  the single-process run.
- :func:`fit_trial` is a search trial with several workers. Ray Train V2 cannot run a
  trainer as a Tune trainable, so the trial's function launches a TorchTrainer and
  forwards rank 0's reports to Tune with ``TuneReportCallback``.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train.v2.api.callback import UserCallback
from ray.util.queue import Empty, Queue

from ..config import RunConfig, parse_run_config
from ..errors import ConfigError
from ..files import write_atomic
from ..tasks import TaskData, load_task
from ..run_folder import BEST_CHECKPOINT, CHECKPOINTS_DIR, LAST_CHECKPOINT, RESULT_FILE, TRAIN_DIR
from ..training import (
    CHECKPOINT_VERSION,
    EpochRecord,
    RunResult,
    RunState,
    Trainer,
    check_resumable_config,
    conclude,
    record_run_config,
    run_epochs,
    write_result,
)

WorkerCallback = Callable[[Trainer, EpochRecord], None]
"""Called in every worker after each epoch's report, with the worker's trainer."""


@dataclass(frozen=True)
class SharedTask:
    """A :class:`TaskData` held once in Ray's object store, handed to workers by reference."""

    ref: ray.ObjectRef
    input_lengths: dict[str, int] | None = None

    @classmethod
    def put(cls, task: TaskData) -> SharedTask:
        return cls(ray.put(task), task.input_lengths)


# --- the worker -------------------------------------------------------------------------


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: build the trainer, resume, wrap it in DDP, train, report.

    ``config`` holds ``cfg`` (the run config as a mapping), ``task`` (a SharedTask or None:
    load the data here), ``extra`` (constant metrics added to every report),
    ``evaluate_test`` (score the test split at the end) and ``callbacks``.
    """
    cfg = parse_run_config(config["cfg"], "run config", check_model=False)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    shared: SharedTask | None = config["task"]
    device = ray.train.torch.get_device()

    # The first worker on each node prepares what the node lacks (the dataset, the frozen
    # encoders' feature cache); the others wait for it, then find it ready.
    first_on_node = context.get_local_rank() == 0
    if not first_on_node:
        _barrier(device)
    task = ray.get(shared.ref) if shared is not None else load_task(cfg)
    trainer = Trainer(cfg, task, device=device, shard=(rank, world))
    if first_on_node:
        _barrier(device)

    state = RunState()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as path:
            state = trainer.restore(Path(path) / LAST_CHECKPOINT)
    trainer.network = ray.train.torch.prepare_model(trainer.model)

    for record in run_epochs(trainer, state):
        metrics = {
            **asdict(record),
            **config["extra"],
            "node_id": ray.get_runtime_context().get_node_id(),  # where rank 0 trained
            **best_epoch_scores(state),  # what model selection (and Optuna) sees
            "status": "running",
            "finished": record.epoch == cfg.train.epochs,
        }
        _report(trainer, state, metrics, rank == 0)
        for callback in config["callbacks"]:
            callback(trainer, record)

    if config["evaluate_test"]:
        # Rank 0 alone scores the best epoch on test; the result rides on a last checkpoint.
        result = conclude(trainer, state) if rank == 0 else None
        _report(trainer, state, {"final": True}, rank == 0, result=result)
    elif state.status != "completed":
        last = asdict(state.history[-1]) if state.history else {"epoch": 0, "val_score": 0.0}
        ending = {"status": state.status, "error": state.error, "finished": True}
        ray.train.report({**last, **config["extra"], **best_epoch_scores(state), **ending})


def _barrier(device: torch.device) -> None:
    dist.barrier(device_ids=[device.index]) if device.type == "cuda" else dist.barrier()


def _report(trainer: Trainer, state: RunState, metrics: dict[str, Any], attach: bool, result: RunResult | None = None) -> None:
    """Every rank reports; the one that ``attach``-es adds the checkpoint (and the result)."""
    if not attach:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="tacfn-ckpt-") as tmp:
        trainer.save_checkpoint(Path(tmp) / LAST_CHECKPOINT, trainer.checkpoint_state(state))
        if result is not None:
            write_result(result, Path(tmp))
            if state.best_model is not None:
                best = {"version": CHECKPOINT_VERSION, "epoch": state.best_epoch, "model": state.best_model}
                trainer.save_checkpoint(Path(tmp) / BEST_CHECKPOINT, best)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


# --- one run: tacfn train --workers N ---------------------------------------------------


class _EpochForwarder(UserCallback):
    """Runs in the Train controller: passes rank 0's epoch reports to the driver's queue."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        if metrics and "epoch" in metrics[0] and metrics[0].get("status") == "running":
            self.queue.put({k: metrics[0][k] for k in EpochRecord.__dataclass_fields__})


def _scaling(workers: int, use_gpu: bool, resources_per_worker: dict[str, float] | None) -> ray.train.ScalingConfig:
    if workers < 1:
        raise ConfigError(f"`workers >= 1` must hold, but got workers={workers}")
    return ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources_per_worker)


def _torch_trainer(
    loop_config: dict[str, Any],
    scaling: ray.train.ScalingConfig,
    *,
    storage: str,
    name: str,
    max_failures: int,
    callback: UserCallback,
) -> ray.train.torch.TorchTrainer:
    """A TorchTrainer of :func:`train_loop_per_worker` whose run lives in ``storage/name``.

    A run found there is resumed from its last checkpoint (Ray Train's own restoration).
    """
    return ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=scaling,
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[callback],  # type: ignore[list-item]  # ray: ray.train.RunConfig is Train v2's at run time; mypy sees v1's
        ),
    )


def run_distributed(
    cfg: RunConfig,
    *,
    workers: int,
    use_gpu: bool,
    out_dir: Path,
    max_failures: int = 2,
    resources_per_worker: dict[str, float] | None = None,
    resume: bool = False,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    callbacks: Sequence[WorkerCallback] = (),
    progress: bool = False,
) -> RunResult:
    """Train ``cfg`` on ``workers`` Ray Train workers; ``result.json`` goes to ``out_dir``.

    Ray must be initialised (see ``init_ray``). Checkpoints and Ray Train's run state live
    in ``out_dir/ray-train``: ``resume`` continues that run from its last checkpoint, with
    the config ``out_dir/config.json`` records (only ``train.epochs`` may change), otherwise
    a new run replaces it (as ``tacfn train`` without ``--resume`` does).
    ``on_epoch`` is called in this process with rank 0's record of each epoch;
    ``callbacks`` run inside every worker after each epoch; ``progress`` shows data
    preparation, which happens once, here, before any worker starts. On a multi-node cluster
    ``out_dir`` must be storage that every node reaches (NFS, or an object store path).
    """
    if cfg.train.device == "cuda" and not use_gpu:
        raise ConfigError("train.device is 'cuda' but the workers get no GPU; pass --gpu (use_gpu=True)")
    scaling = _scaling(workers, use_gpu, resources_per_worker)
    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    if resume:
        check_resumable_config(cfg, out_dir)
    load_task(cfg, progress=progress)  # fails here on bad data, not in every worker
    if not resume:
        shutil.rmtree(out_dir / TRAIN_DIR, ignore_errors=True)
    record_run_config(cfg, out_dir)

    queue = Queue(actor_options={"num_cpus": 0})
    trainer = _torch_trainer(
        {"cfg": cfg.model_dump(mode="json"), "task": None, "extra": {}, "evaluate_test": True, "callbacks": list(callbacks)},
        scaling,
        storage=str(out_dir),
        name=TRAIN_DIR,
        max_failures=max_failures,
        callback=_EpochForwarder(queue),
    )
    done = threading.Event()
    printer = threading.Thread(target=_forward_epochs, args=(queue, on_epoch, done), daemon=True)
    printer.start()
    try:
        fitted = trainer.fit()
    finally:
        done.set()
        printer.join()
        queue.shutdown()

    assert fitted.checkpoint is not None  # the last epoch's report carries one
    with fitted.checkpoint.as_directory() as path:
        result = RunResult.from_json(json.loads((Path(path) / RESULT_FILE).read_text()))
        if (Path(path) / BEST_CHECKPOINT).exists():
            (out_dir / CHECKPOINTS_DIR).mkdir(parents=True, exist_ok=True)
            with (Path(path) / BEST_CHECKPOINT).open("rb") as best:
                write_atomic(out_dir / CHECKPOINTS_DIR / BEST_CHECKPOINT, lambda f: shutil.copyfileobj(best, f))
    result = replace(result, seconds=time.perf_counter() - started)
    write_result(result, out_dir)
    return result


def _forward_epochs(queue: Queue, on_epoch: Callable[[EpochRecord], None] | None, done: threading.Event) -> None:
    """Call ``on_epoch`` for each record in ``queue`` until ``done`` is set and it is empty."""
    while True:
        try:
            item = queue.get(timeout=0.2)
        except Empty:
            if done.is_set():
                return
            continue
        if on_epoch is not None:
            on_epoch(EpochRecord(**item))


# --- a search trial on several workers ----------------------------------------------------


@dataclass(frozen=True)
class TrialWorkers:
    """How each trial of a search runs on several Ray Train workers."""

    workers: int
    resources_per_worker: dict[str, float]  # e.g. {"CPU": 1, "GPU": 1}
    storage: str  # folder of the trials' Train runs, one per trial id
    max_failures: int = 2


def best_epoch_scores(state: RunState) -> dict[str, float]:
    """The validation metrics of the run's best epoch so far (chosen on ``val_score``), as
    ``best_<metric>``: the weights kept are that epoch's, so a search ranks trials on its
    scores, as the results store records them. NaN (no score) before the first epoch."""
    best = next((r for r in state.history if r.epoch == state.best_epoch), None)
    if best is None:
        return {"best_val_score": math.nan, "best_val_weighted_f1": math.nan}
    return {"best_val_score": best.val_score, "best_val_weighted_f1": best.val_weighted_f1}


def fit_trial(cfg: RunConfig, *, task: SharedTask | None, workers: TrialWorkers, name: str, extra: dict[str, Any]) -> None:
    """Run one search trial on Ray Train workers, from inside its Tune trial.

    Rank 0's reports reach Tune through ``TuneReportCallback`` (with ``checkpoint_path``,
    the checkpoint's folder, in place of a Tune checkpoint). The Train run lives in
    ``workers.storage/name``, so a trial that Tune restarts resumes the run from its last
    checkpoint. The trial's own process must reserve no CPU (see ``_runner``).
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = workers.resources_per_worker.get("GPU", 0) > 0
    trainer = _torch_trainer(
        {"cfg": cfg.model_dump(mode="json"), "task": task, "extra": extra, "evaluate_test": False, "callbacks": []},
        _scaling(workers.workers, use_gpu, workers.resources_per_worker),
        storage=workers.storage,
        name=name,
        max_failures=workers.max_failures,
        callback=TuneReportCallback(),
    )
    trainer.fit()


def checkpoint_dir(metrics: dict[str, Any]) -> str | None:
    """The checkpoint folder a multi-worker trial reported (``TuneReportCallback``'s key)."""
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

    return metrics.get(CHECKPOINT_PATH_KEY)

