"""One training run: epochs, validation, a single test, checkpoints (PyTorch only).

The best epoch is chosen on the validation split alone; the test split is scored once,
with the best epoch's weights, and again with each modality missing. A non-finite loss
stops the run with status ``diverged``. The same seed gives the same metrics on a CPU:
shuffling uses a generator seeded by (seed, epoch), so a resumed run shuffles as an
uninterrupted one would.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import RunConfig
from .metrics import classification_metrics, multitask_metrics
from .model import TACFN
from .tasks import SplitData, TaskData, default_cache_dir, load_task, with_cached_features

CHECKPOINT_VERSION = 1


@dataclass
class EpochRecord:
    """What one epoch measured; ``val_score`` is what model selection maximises."""

    epoch: int
    train_loss: float
    train_score: float
    val_loss: float
    val_score: float
    val_weighted_f1: float
    seconds: float


@dataclass
class RunResult:
    """Outcome of a run: status, the chosen epoch's validation and test metrics, curves."""

    status: str  # completed | diverged
    error: str | None
    best_epoch: int | None
    epochs_run: int
    val: dict[str, Any]
    test: dict[str, Any]
    test_missing_modality: dict[str, float]
    history: list[EpochRecord]
    num_parameters: int
    trainable_parameters: int
    seconds: float
    predictions: dict[str, list] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Diverged(Exception):
    """The loss became NaN or infinite."""


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def _optimizer(cfg: RunConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.lr, weight_decay=t.weight_decay, momentum=0.9)


def _loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), label_smoothing=label_smoothing)


class Trainer:
    """Runs the epochs of one configuration on one task (one process, one device)."""

    def __init__(
        self,
        cfg: RunConfig,
        task: TaskData,
        *,
        device: torch.device | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.cfg = cfg
        self.shard = shard  # (rank, world size): each rank trains on its share of every epoch
        self.device = device or _device(cfg.train.device)
        torch.manual_seed(cfg.train.seed)
        self.model = TACFN(cfg.architecture(task.input_lengths)).to(self.device)
        self._load_unimodal_checkpoints()
        if self.model.cfg.backbone == "frozen" and not task.features:
            cache_root = Path(cfg.data.cache_dir or default_cache_dir()) / "features"
            task = with_cached_features(task, self.model, cache_root)
        self.task = task
        self.network: torch.nn.Module = self.model  # what steps call: the model, or its DDP wrapper
        self.optimizer = _optimizer(cfg, self.model.trainable_parameters())
        self.amp = cfg.train.amp and self.device.type == "cuda"

    def _load_unimodal_checkpoints(self) -> None:
        if not self.cfg.model.checkpoints:
            return
        from .model.checkpoints import load_msaf_checkpoint

        for name, path in self.cfg.model.checkpoints.items():
            if name not in self.model.encoders:
                raise ValueError(f"model.checkpoints names unknown modality {name!r}; this model has {list(self.model.modalities)}")
            load_msaf_checkpoint(self.model.encoders[name], path)

    def _logits(self, batch: dict[str, Tensor], missing: tuple[str, ...] = ()) -> Tensor:
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if k != "label"}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.network(inputs, missing, features=self.task.features)

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training split; returns (mean loss, accuracy on its batches)."""
        self.model.train()
        split = self.task.train
        order = np.random.default_rng([self.cfg.train.seed, epoch]).permutation(len(split))
        rank, world = self.shard
        if world > 1:  # equal shares, so every rank takes the same number of steps
            order = order[: len(order) // world * world][rank::world]
        bs = self.cfg.train.batch_size
        total_loss, correct, seen = 0.0, 0, 0
        for step, start in enumerate(range(0, len(order), bs)):
            batch = split.batch(order[start : start + bs])
            labels = batch["label"].to(self.device)
            logits = self._logits(batch)
            loss = _loss(logits, labels, self.cfg.train.label_smoothing)
            if not torch.isfinite(loss):
                raise Diverged(f"non-finite loss ({loss.item()}) at epoch {epoch}, step {step}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            n = labels.numel()
            total_loss += loss.item() * n
            correct += int((logits.argmax(-1) == labels).sum())
            seen += n
        return total_loss / max(seen, 1), correct / max(seen, 1)

    @torch.inference_mode()
    def predict(self, split: SplitData, missing: tuple[str, ...] = ()) -> tuple[np.ndarray, float]:
        """Predicted classes of a split and its mean loss."""
        self.model.eval()
        bs = max(self.cfg.train.batch_size, 64)
        preds, total_loss = [], 0.0
        for start in range(0, len(split), bs):
            batch = split.batch(np.arange(start, min(start + bs, len(split))))
            labels = batch["label"].to(self.device)
            logits = self._logits(batch, missing)
            total_loss += _loss(logits, labels).item() * labels.numel()
            preds.append(logits.argmax(-1).cpu().numpy())
        pred = np.concatenate(preds) if preds else np.empty((0,), dtype=np.int64)
        return pred, total_loss / max(split.labels.size, 1)

    def metrics(self, split: SplitData, pred: np.ndarray) -> dict[str, Any]:
        if self.task.task_names:
            return multitask_metrics(split.labels, pred, self.task.task_names)
        return classification_metrics(split.labels, pred, len(self.task.class_names))

    def evaluate(self, split: SplitData, missing: tuple[str, ...] = ()) -> tuple[dict[str, Any], np.ndarray, float]:
        pred, loss = self.predict(split, missing)
        return self.metrics(split, pred), pred, loss

    # --- checkpoints -------------------------------------------------------------------

    def save_checkpoint(self, path: Path, state: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)

    def checkpoint_state(self, epoch: int, history: list[EpochRecord], best: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "history": [asdict(r) for r in history],
            "best_epoch": best["epoch"],
            "best_score": best["score"],
            "best_model": best["state"],
        }

    def restore(self, path: Path) -> tuple[int, list[EpochRecord], dict[str, Any]]:
        """Load a checkpoint saved by this class (``weights_only``: no pickled code runs)."""
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path}: checkpoint version {state.get('version')} is not {CHECKPOINT_VERSION}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"].cpu())
        history = [EpochRecord(**r) for r in state["history"]]
        best = {"epoch": state["best_epoch"], "score": state["best_score"], "state": state["best_model"]}
        return int(state["epoch"]), history, best


def train(
    cfg: RunConfig,
    *,
    task: TaskData | None = None,
    out_dir: Path | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    resume: bool = False,
    progress: bool = False,
    evaluate_test: bool = True,
) -> RunResult:
    """Train one configuration; checkpoints and ``result.json`` go to ``out_dir`` if given.

    ``resume`` continues from ``out_dir/checkpoints/last.pt`` when it exists.
    ``evaluate_test=False`` leaves the test split untouched (search trials: only the
    configuration the search chooses is scored on test, once).
    """
    started = time.perf_counter()
    task = task or load_task(cfg, progress=progress)
    trainer = Trainer(cfg, task)
    task = trainer.task  # cached encoder features in frozen mode
    ckpt_dir = Path(out_dir) / "checkpoints" if out_dir else None
    history: list[EpochRecord] = []
    best: dict[str, Any] = {"epoch": None, "score": -math.inf, "state": None}
    first_epoch = 1
    if resume and ckpt_dir and (ckpt_dir / "last.pt").exists():
        last, history, best = trainer.restore(ckpt_dir / "last.pt")
        first_epoch = last + 1

    status, error = "completed", None
    for epoch in range(first_epoch, cfg.train.epochs + 1):
        t0 = time.perf_counter()
        try:
            train_loss, train_score = trainer.train_epoch(epoch)
        except Diverged as err:
            status, error = "diverged", str(err)
            break
        val_metrics, _, val_loss = trainer.evaluate(task.val)
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            train_score=train_score,
            val_loss=val_loss,
            val_score=val_metrics["score"],
            val_weighted_f1=val_metrics["weighted_f1"],
            seconds=time.perf_counter() - t0,
        )
        history.append(record)
        if record.val_score > best["score"]:
            best = {"epoch": epoch, "score": record.val_score, "state": copy.deepcopy(trainer.model.state_dict())}
        if ckpt_dir:
            trainer.save_checkpoint(ckpt_dir / "last.pt", trainer.checkpoint_state(epoch, history, best))
        if on_epoch:
            on_epoch(record)

    val: dict[str, Any] = {}
    test: dict[str, Any] = {}
    missing_scores: dict[str, float] = {}
    predictions: dict[str, list] = {}
    if best["state"] is not None:
        trainer.model.load_state_dict(best["state"])
        val, _, _ = trainer.evaluate(task.val)
        if evaluate_test:
            test, missing_scores, predictions = score_test(trainer)
        if ckpt_dir:
            trainer.save_checkpoint(ckpt_dir / "best.pt", {"version": CHECKPOINT_VERSION, "epoch": best["epoch"], "model": best["state"]})
    total, trainable = trainer.model.num_parameters()
    result = RunResult(
        status=status,
        error=error,
        best_epoch=best["epoch"],
        epochs_run=len(history),
        val=val,
        test=test,
        test_missing_modality=missing_scores,
        history=history,
        num_parameters=total,
        trainable_parameters=trainable,
        seconds=time.perf_counter() - started,
        predictions=predictions,
    )
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        path = Path(out_dir) / "result.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result.to_json(), indent=2))
        tmp.replace(path)
    return result


def score_test(trainer: Trainer) -> tuple[dict[str, Any], dict[str, float], dict[str, list]]:
    """Test metrics of the trainer's current weights, the score with each modality missing,
    and the predictions."""
    task = trainer.task
    test, pred, _ = trainer.evaluate(task.test)
    predictions = {"id": list(task.test.ids), "label": task.test.labels.tolist(), "pred": pred.tolist()}
    missing: dict[str, float] = {}
    if len(trainer.model.modalities) > 1:
        for name in trainer.model.modalities:
            missing[name] = trainer.evaluate(task.test, missing=(name,))[0]["score"]
    return test, missing, predictions


def score_checkpoint(cfg: RunConfig, task: TaskData, checkpoint: Path) -> tuple[dict[str, Any], dict[str, float], dict[str, list]]:
    """Score the best epoch's weights of a checkpoint (``last.pt`` or ``best.pt``) on the
    test split: how a search's chosen configuration is tested, once."""
    trainer = Trainer(cfg, task)
    state = torch.load(checkpoint, map_location=trainer.device, weights_only=True)
    trainer.model.load_state_dict(state["best_model"] if "best_model" in state else state["model"])
    return score_test(trainer)
