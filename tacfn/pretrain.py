"""Unimodal pretraining per fold: each encoder learns the labels alone, on the fold's training actors.

The paper's encoders start from MSAF's per-fold unimodal checkpoints. This does the same on
any dataset: for each modality, the preset's encoder with its own classifier (the model
restricted to that modality, ``concat`` head) trains on the fold's training split for a fixed
number of epochs and is saved in MSAF's format (the trunk's keys plus ``fc.*``) beside a
``pretrain.json`` that records where it came from. Validation and test actors never reach it.

``model.pretrain`` in a run config makes a run pretrain (or reuse) its encoders before it
trains; with ``backbone: frozen`` the fusion block then trains on features that carry each
modality's information, cheaply. Pretrained encoders are cached per (dataset, fold, modality,
settings) under the cache folder, so the trials of a search or ablation on one fold share one
pretraining. Checkpoints that record another dataset or fold than the run's are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig, parse_run_config
from .errors import ConfigError
from .files import write_atomic, write_json_atomic
from .model.fusion.concat import ConcatFusion
from .tasks import TaskData
from .training import RunState, Trainer, run_epochs

__all__ = ["PRETRAIN_RECORD", "check_provenance", "ensure_pretrained", "pretrain_encoder"]

PRETRAIN_RECORD = "pretrain.json"
_VERSION = 1  # bump when pretraining changes what it writes for the same settings


def _unimodal_config(cfg: RunConfig, modality: str) -> RunConfig:
    """The run config that pretrains ``modality``: the preset restricted to it, concat head,
    fine-tuned, with the ``model.pretrain`` settings as its training settings."""
    p = cfg.model.pretrain
    assert p is not None
    data = cfg.model_dump(mode="json")
    data["model"] = {"preset": cfg.model.preset, "modalities": [modality], "fusion": {"name": "concat"}, "backbone": "finetune"}
    data["train"] = {**data["train"], "epochs": p.epochs, "lr": p.lr, "batch_size": p.batch_size, "seed": p.seed,
                     "optimizer": "adam", "weight_decay": 0.0, "label_smoothing": 0.0}
    return parse_run_config(data, f"model.pretrain ({modality})", check_model=False)


def _provenance(cfg: RunConfig, task: TaskData, modality: str) -> dict[str, Any]:
    """What a pretrained encoder depends on: the data, the fold, the encoder, the settings."""
    arch = cfg.architecture(task.input_lengths)
    spec = next(m for m in arch.modalities if m.name == modality)
    return {
        "version": _VERSION,
        "dataset": task.dataset,
        "content_digest": task.content_digest,
        "protocol": cfg.data.protocol,
        "fold": cfg.data.fold,
        "preset": cfg.model.preset,
        "modality": modality,
        "encoder": spec.encoder,
        "encoder_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(spec.encoder_kwargs.items())},
        "preprocess": arch.preprocess.key() if arch.preprocess else None,
        "settings": cfg.model.pretrain.model_dump(mode="json") if cfg.model.pretrain else None,
    }


def pretrain_encoder(cfg: RunConfig, task: TaskData, modality: str, out_dir: Path, *, progress: bool = False) -> Path:
    """Pretrain ``modality``'s encoder on ``task``'s training split for ``model.pretrain.epochs``;
    write ``out_dir/<modality>.pt`` (MSAF format) and ``out_dir/pretrain.json`` recording it.

    The validation and test actors never reach it, not even to pick an epoch: they are kept for
    choosing and scoring the fused model, so the last epoch's weights are kept. Returns the path.
    """
    training_only = replace(task, val=task.train, test=task.train)
    trainer = Trainer(_unimodal_config(cfg, modality), training_only, progress=progress)
    state = RunState()
    for _ in run_epochs(trainer, state):
        pass
    if state.status != "completed":
        raise ConfigError(f"model.pretrain: the {modality} encoder's pretraining diverged ({state.error}); lower model.pretrain.lr")
    fusion = trainer.model.fusion
    assert isinstance(fusion, ConcatFusion)  # _unimodal_config's block
    weights = {
        **trainer.model.encoders[modality].state_dict(),
        **{f"fc.{k}": v for k, v in fusion.head.fc.state_dict().items()},  # MSAF's classifier key
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{modality}.pt"
    write_atomic(path, lambda f: torch.save(weights, f))  # synced: the folder is renamed into the cache whole
    last = state.history[-1]
    record = {**_provenance(cfg, task, modality), "epochs": last.epoch, "train_loss": last.train_loss,
              "train_score": last.train_score, "file": path.name}
    write_json_atomic(out_dir / PRETRAIN_RECORD, {modality: record}, indent=2, sort_keys=True)
    return path


def ensure_pretrained(cfg: RunConfig, task: TaskData, cache_root: Path, *, progress: bool = False) -> dict[str, Path]:
    """Each modality's pretrained encoder for this run's fold, trained once and cached.

    The cache folder is keyed on :func:`_provenance`; a folder appears whole (written under a
    temporary name, then renamed), so concurrent trials never read a half-written one.
    """
    paths = {}
    for modality in cfg.architecture(task.input_lengths).modality_names:
        if modality in cfg.model.checkpoints:
            continue
        key = hashlib.sha256(json.dumps(_provenance(cfg, task, modality), sort_keys=True).encode()).hexdigest()[:16]
        folder = cache_root / f"{modality}-{key}"
        if not (folder / PRETRAIN_RECORD).exists():
            if task.features:
                raise RuntimeError(f"the {modality} encoder must be pretrained on raw inputs, but this task holds cached features")
            tmp = cache_root / f".{folder.name}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            if progress:
                print(f"pretraining the {modality} encoder on fold {cfg.data.fold}'s training actors", flush=True)
            pretrain_encoder(cfg, task, modality, tmp, progress=progress)
            try:
                tmp.rename(folder)
            except OSError:  # another process finished first: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
        paths[modality] = folder / f"{modality}.pt"
    return paths


def check_provenance(path: Path, modality: str, cfg: RunConfig, task: TaskData) -> None:
    """Refuse a checkpoint whose ``pretrain.json`` records another dataset or fold than the run's.

    A checkpoint without that record (MSAF's own files) is taken as the user gives it.
    """
    record_path = Path(path).parent / PRETRAIN_RECORD
    if not record_path.exists():
        return
    try:
        record = json.loads(record_path.read_text()).get(modality)
    except (OSError, ValueError, AttributeError):
        raise ConfigError(f"{record_path}: unreadable pretraining record; pretrain again with model.pretrain") from None
    if not isinstance(record, Mapping):
        return
    if record.get("content_digest") != task.content_digest:
        raise ConfigError(
            f"model.checkpoints.{modality}: {path} was pretrained on another dataset "
            f"({record.get('dataset')}, digest {str(record.get('content_digest'))[:12]}) than this run's "
            f"(digest {task.content_digest[:12]}); pretrain on this dataset"
        )
    if (record.get("protocol"), record.get("fold")) != (cfg.data.protocol, cfg.data.fold):
        raise ConfigError(
            f"model.checkpoints.{modality}: {path} was pretrained on {record.get('protocol')} fold "
            f"{record.get('fold')}, but this run tests on {cfg.data.protocol} fold {cfg.data.fold}: its "
            f"test actors may have trained the encoder; pretrain on fold {cfg.data.fold}"
        )
