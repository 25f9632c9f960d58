"""A prepared RAVDESS dataset on disk, memory-mapped, served as training batches.

:func:`tacfn.data.prepare.prepare_ravdess` writes a folder with:

- ``clips.arrow``: Arrow IPC file format, uncompressed (so it memory-maps), one row per
  clip: ``clip_id`` string; ``actor``, ``emotion``, ``label``, ``intensity``,
  ``statement``, ``repetition`` int8; ``video`` fixed_size_list<uint8>[T*S*S*3] in
  (T, S, S, 3) layout; ``mfcc`` fixed_size_list<float32>[n_mfcc*L] in (n_mfcc, L) layout;
- ``manifest.json``: format version, the preprocessing settings and their key, the
  number of clips, the source folder, the tacfn version and the SHA-256 of
  ``clips.arrow``, and for a synthetic source its ``synthetic.json`` record (seed, size
  and planted effects) under ``synthetic``; written last, so a folder without it is not
  a dataset;
- ``skipped.json``: every file that was rejected or could not be decoded, with why.

:class:`PreparedDataset` reads it back without copying: :meth:`PreparedDataset.batch`
gathers rows straight from the memory-mapped buffers and converts them in one step.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import torch

from ..errors import DataError
from .digest import file_sha256
from .iemocap import FORMAT_NAME as IEMOCAP_FORMAT
from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig
from .ravdess import EMOTIONS
from .synth import check_effects

FORMAT_VERSION = 1
CLIPS_FILE = "clips.arrow"
MANIFEST_FILE = "manifest.json"
SKIPPED_FILE = "skipped.json"
INT_COLUMNS = ("actor", "emotion", "label", "intensity", "statement", "repetition")


def clips_schema(cfg: PreprocessConfig) -> pa.Schema:
    """The columns of ``clips.arrow`` for clips prepared with ``cfg``."""
    num_frames, size = cfg.num_frames, cfg.crop_size
    return pa.schema(
        [pa.field("clip_id", pa.string(), nullable=False)]
        + [pa.field(name, pa.int8(), nullable=False) for name in INT_COLUMNS]
        + [
            pa.field("video", pa.list_(pa.uint8(), num_frames * size * size * 3), nullable=False),
            pa.field("mfcc", pa.list_(pa.float32(), cfg.n_mfcc * cfg.mfcc_frames), nullable=False),
        ]
    )


class PreparedDataset:
    """A prepared dataset folder: labels and actors in memory, media memory-mapped.

    ``batch(indices)`` is the training path; ``dataset[i]`` returns the same tensors for
    one clip, plus its ``clip_id`` and ``actor``.
    """

    class_names = EMOTIONS

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest, self.preprocess = _read_manifest(self.root / MANIFEST_FILE)
        self._table = _open_clips(self.root / CLIPS_FILE, self.preprocess, self.manifest["num_clips"])
        self.clip_ids: list[str] = self._table.column("clip_id").to_pylist()
        self.labels = self._int_column("label")
        self.actors = self._int_column("actor")
        self._video = _row_views(self._table.column("video"))
        self._mfcc = _row_views(self._table.column("mfcc"))
        self._chunk_starts = np.cumsum([0] + [len(chunk) for chunk in self._video])

    def __len__(self) -> int:
        return self._table.num_rows

    @functools.cached_property
    def content_digest(self) -> str:
        """SHA-256 of ``clips.arrow``, which feature caches key on: recorded in the manifest
        when the folder was prepared, or hashed now for a folder prepared before that."""
        return self.manifest.get("clips_sha256") or file_sha256(self.root / CLIPS_FILE)

    @property
    def planted_effects(self) -> tuple[str, ...] | None:
        """The effects a synthetic source planted (see :func:`tacfn.data.synth.planted_ceilings`
        for what each model family can then score), or None for a real dataset."""
        record = self.manifest.get("synthetic")
        return None if record is None else tuple(record["effects"])

    def __repr__(self) -> str:
        return f"PreparedDataset({str(self.root)!r}, clips={len(self)}, preprocess={self.preprocess.key()})"

    def __reduce__(self) -> tuple[type[PreparedDataset], tuple[Path]]:
        # Memory maps do not pickle; a copy in another process opens the folder again.
        return type(self), (self.root,)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One clip: ``video`` (3, T, S, S), ``audio`` (n_mfcc, L), ``label``, ``index``,
        ``clip_id``, ``actor``."""
        i = operator.index(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"`-{len(self)} <= index < {len(self)}` must hold, but got index={index}")
        i %= len(self)
        video = self._table.column("video")[i].values.to_numpy().copy()
        mfcc = self._table.column("mfcc")[i].values.to_numpy().copy()
        return {
            "video": _normalise_video(video[None], self.preprocess)[0],
            "audio": torch.from_numpy(mfcc.reshape(self.preprocess.audio_shape)),
            "label": torch.tensor(self.labels[i]),
            "index": torch.tensor(i),
            "clip_id": self.clip_ids[i],
            "actor": int(self.actors[i]),
        }

    def batch(self, indices: np.ndarray | Iterable[int]) -> dict[str, torch.Tensor]:
        """Rows ``indices`` as model inputs, gathered from the memory map in one pass.

        ``video`` float32 (B, 3, T, S, S) in [0, 1] then ImageNet-normalised, ``audio``
        float32 (B, n_mfcc, L), ``label`` and ``index`` int64 (B,).
        """
        idx = np.array(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            bad = idx[(idx < 0) | (idx >= len(self))][0]
            raise IndexError(f"`0 <= index < {len(self)}` must hold for every index, but got {bad}")
        video = self._gather(self._video, idx)
        mfcc = self._gather(self._mfcc, idx)
        return {
            "video": _normalise_video(video, self.preprocess),
            "audio": torch.from_numpy(mfcc).view(len(idx), *self.preprocess.audio_shape),
            "label": torch.from_numpy(self.labels[idx]),
            "index": torch.from_numpy(idx),
        }

    def subset(self, actors: Iterable[int]) -> np.ndarray:
        """Row indices (ascending) of the clips of ``actors``."""
        wanted = np.array(sorted({int(actor) for actor in actors}), dtype=np.int64)
        unknown = np.setdiff1d(wanted, self.actors)
        if unknown.size:
            present = np.unique(self.actors).tolist()
            raise ValueError(f"actors {unknown.tolist()} are not in this dataset; it has actors {present}")
        return np.flatnonzero(np.isin(self.actors, wanted))

    def _int_column(self, name: str) -> np.ndarray:
        return self._table.column(name).to_numpy().astype(np.int64)

    def _gather(self, chunks: list[np.ndarray], idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` of the (rows, row_len) chunk views, one ``np.take`` per chunk touched."""
        if len(chunks) == 1:
            return np.take(chunks[0], idx, axis=0)
        out = np.empty((len(idx), chunks[0].shape[1]), dtype=chunks[0].dtype)
        chunk_of = np.searchsorted(self._chunk_starts, idx, side="right") - 1
        for c in np.unique(chunk_of):
            rows = chunk_of == c
            out[rows] = np.take(chunks[c], idx[rows] - self._chunk_starts[c], axis=0)
        return out


def _normalise_video(rows: np.ndarray, cfg: PreprocessConfig) -> torch.Tensor:
    """uint8 rows (B, T*S*S*3) -> float32 (B, 3, T, S, S), scaled to [0, 1], ImageNet-normalised."""
    num_frames, size = cfg.num_frames, cfg.crop_size
    video = torch.from_numpy(rows).view(len(rows), num_frames, size, size, 3).permute(0, 4, 1, 2, 3)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1) * 255
    return video.contiguous().float().sub_(mean).div_(std)


def _row_views(column: pa.ChunkedArray) -> list[np.ndarray]:
    """Zero-copy (rows, row_len) numpy views of a fixed-size-list column, one per chunk."""
    width = column.type.list_size
    return [chunk.flatten().to_numpy().reshape(len(chunk), width) for chunk in column.chunks]


def _read_manifest(path: Path) -> tuple[dict[str, Any], PreprocessConfig]:
    """The manifest and its preprocessing settings; any problem raises DataError."""
    if not path.is_file():
        raise DataError(f"no prepared dataset at {path.parent}: {path} is missing; run `tacfn data prepare`")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: a manifest must be a JSON object")
    if manifest.get("format") == IEMOCAP_FORMAT:
        raise DataError(f"{path.parent} holds a converted IEMOCAP dataset, not a prepared RAVDESS one; use it with the iemocap preset")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(
            f"{path}: format_version {version!r} is not supported; this tacfn reads "
            f"version {FORMAT_VERSION} (prepare the dataset again)"
        )
    try:
        cfg = PreprocessConfig(**manifest["preprocess"])
        key = manifest["preprocess_key"]
        if not isinstance(manifest["num_clips"], int):
            raise TypeError(f"num_clips must be an integer, but got {manifest['num_clips']!r}")
        if "synthetic" in manifest:
            check_effects(manifest["synthetic"]["effects"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: malformed manifest ({exc!r})") from exc
    if key != cfg.key():
        raise DataError(
            f"{path}: preprocess_key {key!r} does not match its preprocess settings "
            f"({cfg.key()!r}); the manifest was edited or written by another version"
        )
    return manifest, cfg


def _open_clips(path: Path, cfg: PreprocessConfig, num_clips: int) -> pa.Table:
    """Memory-map ``clips.arrow`` and check it against the manifest."""
    try:
        table = ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"{path}: not a readable Arrow IPC file ({exc})") from exc
    expected = clips_schema(cfg)
    if not table.schema.equals(expected):
        raise DataError(
            f"{path}: columns do not match the manifest's preprocessing; "
            f"expected {expected.to_string(show_schema_metadata=False)!r}"
        )
    if table.num_rows != num_clips:
        raise DataError(f"{path}: {table.num_rows} clips, but the manifest says {num_clips}")
    return table
