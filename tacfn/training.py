"""One training run: epochs, validation, a single test, checkpoints (PyTorch only).

The best epoch is chosen on the validation split alone; the test split is scored once,
with the best epoch's weights, and again with each modality missing; that first test pass
also times the model (:func:`score_test`: milliseconds per test sample). A non-finite loss
stops the run with status ``diverged``. The same seed gives the same metrics on a CPU:
shuffling uses a generator seeded by (seed, epoch), so a resumed run shuffles as an
uninterrupted one would.

:func:`train` is :func:`run_epochs` then :func:`conclude` in one process; Ray Train's
workers (``tacfn.search._distributed``) run the same two, each rank on its share of every
epoch with the model wrapped in DistributedDataParallel.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .allocator import keep_freed_memory
from .config import RunConfig, parse_run_config
from .errors import ConfigError, DataError, brief
from .files import write_atomic, write_json_atomic
from .metrics import classification_metrics, multitask_metrics
from .model import TACFN
from .nested import flatten
from .outputs import check_output_folder
from .run_folder import BEST_CHECKPOINT, CHECKPOINTS_DIR, LAST_CHECKPOINT, RESULT_FILE, RUN_CONFIG, RUN_MARKERS
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
    test_ms_per_sample: float | None = None  # see score_test; None when test was not scored (or predates it)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        return cls(**{**data, "history": [EpochRecord(**r) for r in data["history"]]})


@dataclass
class RunState:
    """Where a run stands: the epochs done and the best validation epoch so far.

    This is what a checkpoint holds besides the weights, so a restarted run continues
    from the epoch after ``last_epoch`` with the same choice of best epoch.
    """

    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    best_score: float = -math.inf
    best_model: dict[str, Tensor] | None = None
    status: str = "completed"  # completed | diverged
    error: str | None = None

    @property
    def last_epoch(self) -> int:
        return self.history[-1].epoch if self.history else 0


class Diverged(Exception):
    """The loss became NaN or infinite."""


class Evaluation(NamedTuple):
    """A split scored by :meth:`Trainer.evaluate`."""

    metrics: dict[str, Any]
    pred: np.ndarray
    loss: float
    forward_seconds: float  # wall time of the model's forward passes over the split


class ScoredTest(NamedTuple):
    """What :func:`score_test` measures on the test split."""

    metrics: dict[str, Any]
    missing: dict[str, float]  # modality -> score with it missing (none for a one-modality model)
    predictions: dict[str, list]
    ms_per_sample: float | None  # milliseconds of forward pass per test sample; None for an empty split


def _device(name: str) -> torch.device:
    """The device ``train.device`` names, on this machine (a search's driver may have no GPU
    while its trials do, so this is checked where a run starts, not when a config is read)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda', but this machine has no CUDA device; use 'auto' or 'cpu'")
    return torch.device(name)


def _build_model(cfg: RunConfig, task: TaskData, device: torch.device) -> TACFN:
    """The run's model on ``device``; one too large for its memory (an absurd ``model.fusion.d``)
    is a ConfigError giving its size, not the allocator's traceback."""
    arch = cfg.architecture(task.input_lengths)
    try:
        return TACFN(arch).to(device)
    except RuntimeError as exc:  # torch.OutOfMemoryError on CUDA; the CPU allocator's is a plain RuntimeError
        if not isinstance(exc, torch.OutOfMemoryError) and "can't allocate memory" not in str(exc):
            raise
    with torch.device("meta"):
        count = sum(p.numel() for p in TACFN(arch).parameters())
    raise ConfigError(
        f"model: {count:,} parameters ({4 * count / 2**30:,.1f} GiB) do not fit in the memory of {device}; "
        "make model.fusion.d or model.fusion.layers smaller"
    )


def _optimizer(cfg: RunConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The configured optimizer; Adam and AdamW run fused (one kernel per parameter on CPU
    and CUDA instead of a dozen small ops each: the paper preset trains 69 parameter tensors)."""
    t = cfg.train
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay, fused=True)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay, fused=True)
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
        progress: bool = False,
    ) -> None:
        keep_freed_memory()  # every step would page-fault its batch and activations in again
        self.cfg = cfg
        self.shard = shard  # (rank, world size): each rank trains on its share of every epoch
        self.progress = progress  # a bar over an epoch's batches, once it takes a few seconds
        self.device = device or _device(cfg.train.device)
        torch.manual_seed(cfg.train.seed)
        self.model = _build_model(cfg, task, self.device)
        self._load_unimodal_checkpoints(task)
        if self.model.cfg.backbone == "frozen" and not task.features:
            cache_root = Path(cfg.data.cache_dir or default_cache_dir()) / "features"
            task = with_cached_features(task, self.model, cache_root)
        self.task = task
        # What training steps call: the model, or its DistributedDataParallel wrapper.
        # Evaluation calls the model itself, so one rank can evaluate without the others.
        self.network: torch.nn.Module = self.model
        self.optimizer = _optimizer(cfg, self.model.trainable_parameters())
        self.amp = cfg.train.amp and self.device.type == "cuda"

    def _load_unimodal_checkpoints(self, task: TaskData) -> None:
        """Start the encoders from ``model.checkpoints`` and, with ``model.pretrain``, from this
        fold's pretrained encoders for the other modalities (pretrained once, then cached)."""
        checkpoints = dict(self.cfg.model.checkpoints)
        if not checkpoints and self.cfg.model.pretrain is None:
            return
        from .model.checkpoints import load_msaf_checkpoint
        from .pretrain import check_provenance, ensure_pretrained

        for name, path in checkpoints.items():
            if name not in self.model.encoders:
                raise ValueError(f"model.checkpoints names unknown modality {name!r}; this model has {list(self.model.modalities)}")
            check_provenance(path, name, self.cfg, task)
        if self.cfg.model.pretrain is not None:
            cache_root = Path(self.cfg.data.cache_dir or default_cache_dir()) / "pretrained"
            with torch.random.fork_rng(devices=[]):  # the same run draws the same numbers, pretrained now or cached
                checkpoints.update(ensure_pretrained(self.cfg, task, cache_root, progress=self.progress))
        for name, path in checkpoints.items():
            load_msaf_checkpoint(self.model.encoders[name], path)

    def _logits(self, network: torch.nn.Module, batch: dict[str, Tensor], missing: tuple[str, ...] = ()) -> Tensor:
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if k != "label"}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return network(inputs, missing, features=self.task.features)

    def _batches(self, starts: range, desc: str) -> Iterable[int]:
        """``starts`` with a progress bar when ``self.progress``: shown only once the loop has
        run for 2 s (a paper-preset finetune step on a CPU takes minutes), gone when it ends."""
        return tqdm(starts, desc=desc, unit="batch", leave=False, delay=2, disable=not self.progress)

    def _sum_over_ranks(self, value: Tensor) -> Tensor:
        """``value`` summed over the ranks of a distributed run (itself in one process)."""
        if self.shard[1] > 1 and dist.is_available() and dist.is_initialized():
            value = value.clone()
            dist.all_reduce(value)
        return value

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training split; returns (mean loss, accuracy on its batches).

        In a distributed run both are over every rank's batches, and a non-finite loss on
        any rank stops every rank at the same step (the others would wait for it forever).
        """
        self.model.train()
        split = self.task.train
        order = np.random.default_rng([self.cfg.train.seed, epoch]).permutation(len(split))
        rank, world = self.shard
        if world > 1:  # equal shares, so every rank takes the same number of steps
            order = order[: len(order) // world * world][rank::world]
        bs = self.cfg.train.batch_size
        total_loss, correct, seen = 0.0, 0, 0
        for step, start in enumerate(self._batches(range(0, len(order), bs), f"epoch {epoch}")):
            batch = split.batch(order[start : start + bs])
            labels = batch["label"].to(self.device)
            logits = self._logits(self.network, batch)
            loss = _loss(logits, labels, self.cfg.train.label_smoothing)
            summed = self._sum_over_ranks(loss.detach())
            if not torch.isfinite(summed):
                raise Diverged(f"non-finite loss ({summed.item()}) at epoch {epoch}, step {step}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            n = labels.numel()
            total_loss += loss.item() * n
            correct += int((logits.argmax(-1) == labels).sum())
            seen += n
        totals = torch.tensor([total_loss, correct, seen], dtype=torch.float64, device=self.device)
        total_loss, correct, seen = self._sum_over_ranks(totals).tolist()
        return total_loss / max(seen, 1), correct / max(seen, 1)

    @torch.inference_mode()
    def predict(self, split: SplitData, missing: tuple[str, ...] = ()) -> tuple[np.ndarray, float, float]:
        """Predicted classes of a split, its mean loss, and the wall time of the forward passes.

        The time covers each batch's copy to the device and the model's forward pass (under
        autocast when AMP is on), up to the logits being computed (CUDA is synchronised
        first); not assembling the batches from the split, the loss or the argmax.
        """
        self.model.eval()
        bs = max(self.cfg.train.batch_size, 64)
        preds, total_loss, forward = [], 0.0, 0.0
        for start in self._batches(range(0, len(split), bs), "evaluating"):
            batch = split.batch(np.arange(start, min(start + bs, len(split))))
            labels = batch["label"].to(self.device)
            self._synchronize()
            t0 = time.perf_counter()
            logits = self._logits(self.model, batch, missing)
            self._synchronize()
            forward += time.perf_counter() - t0
            total_loss += _loss(logits, labels).item() * labels.numel()
            preds.append(logits.argmax(-1).cpu().numpy())
        pred = np.concatenate(preds) if preds else np.empty((0,), dtype=np.int64)
        return pred, total_loss / max(split.labels.size, 1), forward

    def _synchronize(self) -> None:
        """Wait for the device's queued work (CUDA runs asynchronously; a CPU needs no wait)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def metrics(self, split: SplitData, pred: np.ndarray) -> dict[str, Any]:
        if self.task.task_names:
            return multitask_metrics(split.labels, pred, self.task.task_names)
        return classification_metrics(split.labels, pred, len(self.task.class_names))

    def evaluate(self, split: SplitData, missing: tuple[str, ...] = ()) -> Evaluation:
        pred, loss, forward_seconds = self.predict(split, missing)
        return Evaluation(self.metrics(split, pred), pred, loss, forward_seconds)

    # --- checkpoints -------------------------------------------------------------------

    def save_checkpoint(self, path: Path, state: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda f: torch.save(state, f))

    def checkpoint_state(self, state: RunState) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "epoch": state.last_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "history": [asdict(r) for r in state.history],
            "best_epoch": state.best_epoch,
            "best_score": state.best_score,
            "best_model": state.best_model,
        }

    def restore(self, path: Path) -> RunState:
        """Load a checkpoint saved by this class (``weights_only``: no pickled code runs)."""
        state = load_checkpoint(path, self.device)
        if state.get("version") != CHECKPOINT_VERSION:
            raise DataError(f"{path}: checkpoint version {state.get('version')} is not {CHECKPOINT_VERSION}")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise DataError(f"{path}: the checkpoint does not fit this config's model ({brief(exc)})") from exc
        torch.set_rng_state(state["torch_rng"].cpu())
        history = [EpochRecord(**r) for r in state["history"]]
        return RunState(history, state["best_epoch"], state["best_score"], state["best_model"])


def run_epochs(trainer: Trainer, state: RunState) -> Iterator[EpochRecord]:
    """Train the epochs after ``state.last_epoch``, yielding each one's record.

    ``state`` is updated before each yield (history, best epoch and its weights), so a
    caller can checkpoint or report it there. A non-finite training loss, or a non-finite
    validation loss after an epoch (a last step that left the weights non-finite), ends the
    epochs with ``state.status`` set to ``diverged``; such an epoch is never the best.
    """
    for epoch in range(state.last_epoch + 1, trainer.cfg.train.epochs + 1):
        t0 = time.perf_counter()
        try:
            train_loss, train_score = trainer.train_epoch(epoch)
        except Diverged as err:
            state.status, state.error = "diverged", str(err)
            return
        val_metrics, _, val_loss, _ = trainer.evaluate(trainer.task.val)
        if not math.isfinite(val_loss):  # the epoch's last steps left non-finite weights
            state.status = "diverged"
            state.error = f"non-finite validation loss ({val_loss}) after epoch {epoch}"
            return
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            train_score=train_score,
            val_loss=val_loss,
            val_score=val_metrics["score"],
            val_weighted_f1=val_metrics["weighted_f1"],
            seconds=time.perf_counter() - t0,
        )
        state.history.append(record)
        if record.val_score > state.best_score:
            state.best_epoch, state.best_score = epoch, record.val_score
            state.best_model = copy.deepcopy(trainer.model.state_dict())
        yield record


def conclude(trainer: Trainer, state: RunState, *, evaluate_test: bool = True, seconds: float = 0.0) -> RunResult:
    """The run's result: the best epoch's weights scored on validation and, once, on test
    (timed there, :func:`score_test`: the validation pass just before it has warmed the model).

    Leaves the trainer's model holding the best epoch's weights.
    """
    val: dict[str, Any] = {}
    scores = ScoredTest({}, {}, {}, None)
    if state.best_model is not None:
        trainer.model.load_state_dict(state.best_model)
        val = trainer.evaluate(trainer.task.val).metrics
        if evaluate_test:
            scores = score_test(trainer)
    total, trainable = trainer.model.num_parameters()
    return RunResult(
        status=state.status,
        error=state.error,
        best_epoch=state.best_epoch,
        epochs_run=len(state.history),
        val=val,
        test=scores.metrics,
        test_missing_modality=scores.missing,
        history=state.history,
        num_parameters=total,
        trainable_parameters=trainable,
        seconds=seconds,
        predictions=scores.predictions,
        test_ms_per_sample=scores.ms_per_sample,
    )


def write_result(result: RunResult, out_dir: Path) -> Path:
    """Write ``out_dir/result.json`` atomically (a reader never sees half a file)."""
    return _write_json(Path(out_dir) / RESULT_FILE, result.to_json())


def _write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as JSON to ``path`` atomically; a NaN or infinite float is written as null
    (bare ``NaN`` is not JSON, and strict readers refuse the whole file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(path, _finite_or_none(data), indent=2, allow_nan=False)


def _finite_or_none(data: Any) -> Any:
    """``data`` with every non-finite float in its dicts, lists and tuples replaced by None."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite_or_none(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite_or_none(value) for value in data]
    return data


def record_run_config(cfg: RunConfig, out_dir: Path) -> None:
    """Write the config a run folder trains to ``out_dir/config.json`` (see :func:`check_resumable_config`)."""
    _write_json(Path(out_dir) / RUN_CONFIG, cfg.model_dump(mode="json"))


def _read_run_config(path: Path) -> dict[str, Any]:
    """The mapping a run folder's ``config.json`` records; ConfigError naming the file if it is
    unreadable or not a mapping (a damaged folder must not end in a traceback)."""
    try:
        recorded = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a run config ({brief(exc)})") from exc
    if not isinstance(recorded, dict):
        kind = {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(recorded), "null")
        raise ConfigError(f"{path}: not a run config (a JSON {kind}, not a mapping of sections)")
    return recorded


def check_new_run_folder(out_dir: Path) -> None:
    """Refuse to start a run (not a resume) in a folder that holds one: its config, checkpoints
    and result would be overwritten one by one, and an interrupted run would leave a mix of
    both. A folder without them (new, empty, or holding other files) is fine; one that holds
    an experiment, a dataset or media is refused (see :func:`~tacfn.outputs.check_output_folder`)."""
    check_output_folder(out_dir, "--out", own="run")
    held = [name for name in RUN_MARKERS if (out_dir / name).exists()]
    if held:
        raise ConfigError(f"{out_dir} already holds a training run ({', '.join(held)}); use --resume to continue it, or another --out")


def check_resumable_config(cfg: RunConfig, out_dir: Path) -> None:
    """Refuse to resume ``out_dir`` with a config other than the one it trained with: the
    checkpoint's optimizer state would quietly keep the old learning rate, and the other
    epochs would mix two runs. Only ``train.epochs`` may change. A folder written before
    runs recorded their config has nothing to compare with, and resumes."""
    path = Path(out_dir) / RUN_CONFIG
    if not path.exists():
        return
    recorded_data = _read_run_config(path)
    try:  # settings added since the folder was written take their defaults, as they did then
        recorded_data = parse_run_config(recorded_data, str(path), check_model=False).model_dump(mode="json")
    except ConfigError:
        pass  # compared as written: the difference is then named below
    recorded, current = flatten(recorded_data), flatten(cfg.model_dump(mode="json"))
    missing = object()
    differ = sorted(
        key for key in recorded.keys() | current.keys()
        if key != "train.epochs" and recorded.get(key, missing) != current.get(key, missing)
    )
    if differ:
        raise ConfigError(
            f"--resume: {out_dir} trained with another config (differs in {', '.join(differ)}); "
            "resume with its config (only train.epochs may change) or train into a new --out"
        )


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

    ``out_dir`` records the config in ``config.json``; ``resume`` continues from
    ``out_dir/checkpoints/last.pt`` when it exists, with the config the folder records (see
    :func:`check_resumable_config`). Without ``resume``, an ``out_dir`` that already holds a
    run is refused (ConfigError) before anything is written. ``evaluate_test=False`` leaves
    the test split untouched (search trials: only the configuration the search chooses is
    scored on test, once).
    """
    started = time.perf_counter()
    if resume and out_dir:
        check_resumable_config(cfg, Path(out_dir))
    elif out_dir:  # before anything loads or is written: a refused run leaves the folder as it was
        check_new_run_folder(Path(out_dir))
    device = _device(cfg.train.device)  # before the data loads: a missing GPU fails at once
    task = task or load_task(cfg, progress=progress)
    trainer = Trainer(cfg, task, device=device, progress=progress)
    ckpt_dir = Path(out_dir) / CHECKPOINTS_DIR if out_dir else None
    state = RunState()
    if resume and ckpt_dir and (ckpt_dir / LAST_CHECKPOINT).exists():
        state = trainer.restore(ckpt_dir / LAST_CHECKPOINT)
        if state.last_epoch > cfg.train.epochs:
            raise ConfigError(
                f"{out_dir} already ran {state.last_epoch} epochs; resume it with train.epochs >= {state.last_epoch}, "
                f"not {cfg.train.epochs}"
            )
    if out_dir:  # once a resume's checkpoint has loaded: a refused resume leaves the folder as it was
        record_run_config(cfg, Path(out_dir))

    for record in run_epochs(trainer, state):
        if ckpt_dir:
            trainer.save_checkpoint(ckpt_dir / LAST_CHECKPOINT, trainer.checkpoint_state(state))
        if on_epoch:
            on_epoch(record)

    result = conclude(trainer, state, evaluate_test=evaluate_test)
    if ckpt_dir and state.best_model is not None:
        trainer.save_checkpoint(ckpt_dir / BEST_CHECKPOINT, {"version": CHECKPOINT_VERSION, "epoch": state.best_epoch, "model": state.best_model})
    result.seconds = time.perf_counter() - started
    if out_dir:
        write_result(result, Path(out_dir))
    return result


def score_test(trainer: Trainer) -> ScoredTest:
    """Test metrics of the trainer's current weights, the score with each modality missing,
    the predictions, and the per-sample latency.

    ``ms_per_sample`` is the wall time of the model's forward passes over the whole test split,
    all modalities present, in eval mode at the evaluation batch size (``max(batch_size, 64)``),
    divided by the number of test samples, in milliseconds; it is measured once, on that first
    test pass, on the run's device (see :meth:`Trainer.predict` for what the time covers).
    What runs depends on the backbone: with a frozen backbone and cached encoder features
    (``backbone: frozen``, the default for searches and ablations) only the fusion block and
    the head run, so it is the latency of the fusion block and head; otherwise the encoders
    run too. Latencies are therefore comparable between the runs of one experiment (same
    backbone mode, device and batch size), not between experiments or machines.
    """
    task = trainer.task
    test = trainer.evaluate(task.test)
    predictions = {"id": list(task.test.ids), "label": task.test.labels.tolist(), "pred": test.pred.tolist()}
    ms_per_sample = 1e3 * test.forward_seconds / len(task.test) if len(task.test) else None
    missing: dict[str, float] = {}
    if len(trainer.model.modalities) > 1:
        for name in trainer.model.modalities:
            missing[name] = trainer.evaluate(task.test, missing=(name,)).metrics["score"]
    return ScoredTest(test.metrics, missing, predictions, ms_per_sample)


def score_checkpoint(cfg: RunConfig, task: TaskData, checkpoint: Path) -> ScoredTest:
    """Score the best epoch's weights of a checkpoint (``last.pt`` or ``best.pt``) on the
    test split: how a search's chosen configuration is tested, once (its latency is timed on
    a model that has not run before in this process: a first call's set-up counts in it)."""
    trainer = Trainer(cfg, task)
    state = load_checkpoint(checkpoint, trainer.device)
    trainer.model.load_state_dict(state["best_model"] if "best_model" in state else state["model"])
    return score_test(trainer)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint saved by :class:`Trainer`, loaded with ``weights_only=True`` (tensors and
    plain containers only: no pickled code runs); any other file raises DataError naming it."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"{path}: refused: the checkpoint holds objects other than tensors, and loading them could run code"
        ) from exc
    except Exception as exc:  # a truncated or corrupt file makes torch.load raise any of a dozen types
        raise DataError(f"{path}: not a readable checkpoint, truncated or corrupt ({brief(exc)})") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise DataError(f"{path}: not a tacfn checkpoint (no model weights)")
    return state
