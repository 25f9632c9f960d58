"""Turn a run config's data section into train / validation / test splits.

A split is a set of rows and a function that fetches a batch of them as tensors, so the
training loop is the same for RAVDESS, IEMOCAP, and cached encoder features. Without a
data path the embedded synthetic RAVDESS dataset is written (once) under the cache folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .config import RunConfig, SyntheticSection
from .data.feature_cache import FeatureCache, cache_key, encode_to_cache
from .data.iemocap import IEMOCAP_EMOTIONS, IemocapDataset, convert_iemocap, is_converted_from, write_synthetic_iemocap
from .data.prepare import prepare_ravdess
from .data.prepared import PreparedDataset
from .data.preprocessing import PreprocessConfig
from .data.ravdess import EMOTIONS
from .data.splits import get_fold
from .data.synth import EFFECTS, write_synthetic_ravdess
from .errors import ConfigError
from .model import TACFN, TACFNConfig

Batch = dict[str, Tensor]


@dataclass(frozen=True)
class SplitData:
    """One split: its sample ids, labels, and ``batch(positions)`` giving inputs plus ``label``.

    Positions run over the split (0..len-1); labels are (N,) for RAVDESS, (N, tasks) for IEMOCAP.
    """

    ids: tuple[str, ...]
    labels: np.ndarray
    batch: Callable[[np.ndarray], Batch]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class TaskData:
    """The three splits of one run, with what the metrics need to know.

    ``content_digest`` identifies the data the splits come from (a digest of the dataset
    files' bytes): features cached per clip id are keyed on it too.
    """

    dataset: str
    train: SplitData
    val: SplitData
    test: SplitData
    class_names: tuple[str, ...]
    content_digest: str
    task_names: tuple[str, ...] = ()
    input_lengths: dict[str, int] | None = None
    features: bool = False
    description: str = ""
    planted_effects: tuple[str, ...] | None = None  # a synthetic dataset's planted effects; None for real data

    def dataset_record(self) -> dict[str, object]:
        """What an experiment records of its data: the description and, for synthetic data, the
        planted effects and the ceiling each model family can reach on them."""
        record: dict[str, object] = {"dataset": self.dataset, "description": self.description}
        if self.planted_effects is not None:
            from .data.synth import planted_ceilings

            record["planted_effects"] = list(self.planted_effects)
            record["ceilings"] = planted_ceilings(self.planted_effects)
        return record


def default_cache_dir() -> Path:
    """``$TACFN_HOME`` or ``~/.cache/tacfn``: synthetic datasets and feature caches."""
    return Path(os.environ.get("TACFN_HOME") or Path.home() / ".cache" / "tacfn")


def ensure_synthetic_ravdess(synth: SyntheticSection, prep: PreprocessConfig, root: Path, *, progress: bool = False) -> Path:
    """Write and prepare the synthetic RAVDESS tree once; returns the prepared folder.

    The folder is named by size, seed and, unless all are planted, the effects (so trees
    written before effects existed are still found)."""
    effects = "" if tuple(synth.effects) == EFFECTS else f"-effects-{'-'.join(synth.effects)}"
    base = root / "synthetic" / f"seed{synth.seed}-actors{synth.actors}-clips{synth.clips_per_actor}{effects}"
    prepared = base / f"prepared-{prep.key()}"
    if (prepared / "manifest.json").exists():
        return prepared
    raw = base / "raw"
    if not raw.exists():
        tmp = base / f"raw.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        write_synthetic_ravdess(
            tmp,
            actors=synth.actors,
            clips_per_actor=synth.clips_per_actor,
            seed=synth.seed,
            effects=synth.effects,
            progress=progress,
        )
        try:
            tmp.rename(raw)
        except OSError:  # another process finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    prepare_ravdess(raw, prepared, prep, progress=progress)
    return prepared


def _ravdess_task(cfg: RunConfig, arch: TACFNConfig, cache_dir: Path, progress: bool) -> TaskData:
    prep = arch.preprocess
    assert prep is not None, "RAVDESS presets carry their preprocessing"
    if cfg.data.path is None:
        path = ensure_synthetic_ravdess(cfg.data.synthetic, prep, cache_dir, progress=progress)
        synth = cfg.data.synthetic
        effects = "" if tuple(synth.effects) == EFFECTS else f", effects {'+'.join(synth.effects)} only"
        description = f"synthetic RAVDESS ({synth.actors} actors, seed {synth.seed}{effects})"
    else:
        path = Path(cfg.data.path)
        if path.is_dir() and not (path / "manifest.json").exists() and any(path.glob("Actor_*")):
            raise ConfigError(
                f"data.path {path} is a raw RAVDESS folder; run `tacfn data prepare {path} OUT` and set data.path to OUT"
            )
        description = str(path)
    dataset = PreparedDataset(path)
    if dataset.preprocess != prep:
        raise ConfigError(
            f"data.path {path} was prepared with {dataset.preprocess}, but preset "
            f"{cfg.model.preset!r} needs {prep}; prepare it again with that preset"
        )
    fold = get_fold(sorted(set(dataset.actors.tolist())), cfg.data.protocol, cfg.data.fold)
    modalities = arch.modality_names

    def split(actors: tuple[int, ...] | list[int]) -> SplitData:
        rows = dataset.subset(actors)

        def batch(positions: np.ndarray) -> Batch:
            fetched = dataset.batch(rows[positions])
            return {k: v for k, v in fetched.items() if k in modalities or k == "label"}

        return SplitData(tuple(dataset.clip_ids[i] for i in rows), dataset.labels[rows], batch)

    return TaskData(
        dataset="ravdess",
        train=split(fold.train_actors),
        val=split(fold.val_actors),
        test=split(fold.test_actors),
        class_names=EMOTIONS,
        content_digest=dataset.content_digest,
        description=f"{description}, {cfg.data.protocol} fold {cfg.data.fold}",
        # The embedded dataset was written with the config's effects, also before trees recorded them.
        planted_effects=dataset.planted_effects or (tuple(cfg.data.synthetic.effects) if cfg.data.path is None else None),
    )


def _iemocap_task(cfg: RunConfig, cache_dir: Path) -> TaskData:
    if cfg.data.path is None:
        root = cache_dir / "synthetic" / f"iemocap-seed{cfg.data.synthetic.seed}"
        if not (root / "arrow" / "manifest.json").exists():
            root.mkdir(parents=True, exist_ok=True)
            pkl = root / "iemocap_synthetic.pkl"
            write_synthetic_iemocap(pkl, n_train=256, n_valid=64, n_test=64, seed=cfg.data.synthetic.seed)
            convert_iemocap(pkl, root / "arrow", allow_pickle=True)
        path = root / "arrow"
        description = "synthetic IEMOCAP (MulT format)"
    else:
        path = Path(cfg.data.path)
        description = str(path)
        if path.suffix == ".pkl":  # the user named a pickle explicitly: convert it, again when it changes
            out = path.with_name(path.stem + "-arrow")
            if not is_converted_from(out, path):
                convert_iemocap(path, out, allow_pickle=True)
            path = out
    splits = {name: IemocapDataset(path, name) for name in ("train", "valid", "test")}

    def split(ds: IemocapDataset, name: str) -> SplitData:
        def batch(positions: np.ndarray) -> Batch:
            return {k: v for k, v in ds.batch(positions).items() if k != "index"}

        ids = tuple(f"{name}/{i}" for i in range(len(ds)))  # unique even where source ids repeat
        return SplitData(ids, ds.labels, batch)

    lengths = {m: shape[0] for m, shape in splits["train"].input_shapes.items()}
    return TaskData(
        dataset="iemocap",
        train=split(splits["train"], "train"),
        val=split(splits["valid"], "valid"),
        test=split(splits["test"], "test"),
        class_names=("no", "yes"),
        content_digest=hashlib.sha256("".join(splits[name].content_digest for name in sorted(splits)).encode()).hexdigest(),
        task_names=IEMOCAP_EMOTIONS,
        input_lengths=lengths,
        description=description,
    )


def load_task(cfg: RunConfig, *, progress: bool = False) -> TaskData:
    """The splits a run trains, selects and tests on."""
    arch = cfg.architecture()
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir()
    if arch.dataset == "iemocap":
        return _iemocap_task(cfg, cache_dir)
    return _ravdess_task(cfg, arch, cache_dir, progress)


def with_cached_features(task: TaskData, model: TACFN, cache_root: Path, *, batch_size: int = 32) -> TaskData:
    """Replace raw inputs by the frozen encoders' outputs, computed once and cached.

    The cache key covers each encoder's name and weights hash, the preprocessing and the
    dataset's content digest, so a different checkpoint, preprocessing or dataset (even one
    with the same clip ids) never reuses stale features.
    """
    from .model.checkpoints import weights_hash

    arch = model.cfg
    # Constructor arguments change outputs without changing weights (e.g. stem_relu): key on both.
    names = "+".join(f"{m.name}:{m.encoder}{sorted(m.encoder_kwargs.items())}" for m in arch.modalities)
    prep_key = arch.preprocess.key() if arch.preprocess else "seq"
    key = cache_key(names, weights_hash(model.encoders), f"{prep_key}-{task.dataset}-{task.content_digest}")
    cache = FeatureCache(cache_root)
    device = next(model.parameters()).device
    splits = {"train": task.train, "val": task.val, "test": task.test}

    def batches():
        for split in splits.values():
            for start in range(0, len(split), batch_size):
                positions = np.arange(start, min(start + batch_size, len(split)))
                batch = split.batch(positions)
                ids = [split.ids[p] for p in positions]
                yield ids, {k: v.to(device) for k, v in batch.items() if k in model.modalities}

    def encode(inputs: Batch) -> Batch:
        return {k: v.float().cpu() for k, v in model.forward_features(inputs).items()}

    all_ids = [i for split in splits.values() for i in split.ids]
    # A full cache hit must not read a single raw batch (paper-size clips are heavy).
    cached = cache.load(key) if cache.has(key, all_ids) else encode_to_cache(encode, batches(), cache, key)

    def cached_split(split: SplitData) -> SplitData:
        cache_rows = cached.rows_for(list(split.ids))
        labels = torch.from_numpy(np.ascontiguousarray(split.labels, dtype=np.int64))

        def batch(positions: np.ndarray) -> Batch:
            return {**cached.batch(cache_rows[positions]), "label": labels[positions]}

        return replace(split, batch=batch)

    return replace(
        task,
        train=cached_split(task.train),
        val=cached_split(task.val),
        test=cached_split(task.test),
        features=True,
    )
