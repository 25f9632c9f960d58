"""Cache of frozen-encoder features: encode every clip once, memory-map it for every trial.

With ``backbone="frozen"`` the encoders do not change during a search, so their outputs
are computed once and stored in one Arrow IPC file per key. The key names the encoder,
a hash of its weights and what it reads: the preprocessing settings
(``PreprocessConfig.key()``) and the dataset's content digest. Changing any of them gives
another file, so stale features are never reused.

A file has a ``clip_id`` string column and one fixed-size-list column per modality
(float16 or float32), with the per-sample shapes in the schema metadata. Features of
shape (C, *positions) are stored channels last, (*positions, C): a fusion block reads
them as positions x channels, and a batch in that layout reaches its projection without
a transposing copy (for the paper's video, 16 x 2048 x 98 floats per batch). Readers
still see (B, C, *positions), as channels-last strided tensors. Files are
written under a temporary name and renamed into place, so the file at a key's path is
always complete. Reading maps the file and gathers rows with numpy on the mapped
buffers; nothing is copied until a batch is asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import torch
from numpy.typing import DTypeLike

from ..errors import DataError
from ..files import commit

CACHE_FORMAT_VERSION = 2  # 2: channels-last storage
_METADATA_KEY = b"tacfn.feature_cache"
_KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_STORED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)
_COPY_ROWS = 256  # rows per record batch when carrying old rows into a rebuilt file


def cache_key(encoder: str, weights_hash: str, inputs_key: str) -> str:
    """A file-name-safe key, unique per (encoder, weights hash, inputs key).

    ``inputs_key`` says what the encoder reads: the preprocessing key and the dataset's
    content digest. The key reads as ``<encoder>-<digest>``: the name for people, the
    digest of all three parts for uniqueness.
    """
    parts = {"encoder": encoder, "weights_hash": weights_hash, "inputs_key": inputs_key}
    for name, value in parts.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"`{name}` must be a non-empty string, but got {value!r}")
    digest = hashlib.sha256("\0".join(parts.values()).encode()).hexdigest()[:20]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder).strip("._-")[:40] or "encoder"
    return f"{slug}-{digest}"


class CachedFeatures:
    """The features of one cache file, memory-mapped.

    ``clip_ids`` lists the rows in file order; ``shapes`` gives the per-sample shape of
    each modality. The object holds numpy views of the mapping (no open file handles),
    so it pickles by value, e.g. once into Ray's object store for a whole search.
    """

    def __init__(self, path: Path, key: str | None = None) -> None:
        self.path = Path(path)
        table = _read_table(self.path)
        self.key, self.shapes = _read_metadata(self.path, table.schema, key)
        _check_columns(self.path, table.schema, self.shapes)
        self.clip_ids: list[str] = table.column("clip_id").to_pylist()
        self._rows = {clip_id: row for row, clip_id in enumerate(self.clip_ids)}
        if len(self._rows) != len(self.clip_ids):
            raise DataError(
                f"feature cache file {self.path} lists a clip id twice; delete it and encode again"
            )
        batches = [b for b in table.to_batches() if b.num_rows]
        self._starts = np.cumsum([0] + [b.num_rows for b in batches[:-1]], dtype=np.int64)
        self._views = {
            name: [_fixed_shape_view(b.column(name), _stored_shape(shape)) for b in batches]
            for name, shape in self.shapes.items()
        }

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __contains__(self, clip_id: object) -> bool:
        return clip_id in self._rows

    def rows_for(self, clip_ids: Sequence[str]) -> np.ndarray:
        """Row index of each clip id, int64; DataError when one is not cached."""
        missing = [c for c in clip_ids if c not in self._rows]
        if missing:
            raise DataError(
                f"{len(missing)} clip id(s) are not in feature cache {self.path}, e.g. {missing[:5]}; "
                "encode them with encode_to_cache"
            )
        return np.fromiter((self._rows[c] for c in clip_ids), dtype=np.int64, count=len(clip_ids))

    def batch(self, rows: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """Rows ``rows`` as float32 tensors (B, *shape) per modality, channels-last strided.

        Rows are gathered in the stored dtype and converted by torch, several times
        faster than numpy's float16 conversion.
        """
        return {
            name: _channels_first(torch.from_numpy(array).float())
            for name, array in self._gather(rows).items()
        }

    def arrays(
        self, rows: Sequence[int] | np.ndarray, dtype: DTypeLike = np.float32
    ) -> dict[str, np.ndarray]:
        """Rows ``rows`` as numpy arrays (B, *shape) of ``dtype`` per modality, channels-last strided."""
        return {
            name: _channels_first(array.astype(dtype, copy=False)) for name, array in self._gather(rows).items()
        }

    def _gather(self, rows: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Rows ``rows`` in the stored dtype and layout, (B, *positions, C) per modality.

        One fancy-index per modality and record batch (a file holds a few batches, one
        per encoded batch), so the cost does not grow with a Python loop over rows.
        """
        rows = np.array(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            bad = rows[(rows < 0) | (rows >= len(self))][0]
            raise IndexError(f"`0 <= row < {len(self)}` must hold, but got row={bad}")
        batch_of = np.searchsorted(self._starts, rows, side="right") - 1
        out = {}
        for name, shape in self.shapes.items():
            views = self._views[name]
            target = np.empty((len(rows), *_stored_shape(shape)), dtype=views[0].dtype)
            for b in np.unique(batch_of):
                mask = batch_of == b
                target[mask] = views[b][rows[mask] - self._starts[b]]
            out[name] = target
        return out


class FeatureCache:
    """A folder of feature files, one per key (see :func:`cache_key`).

    Reading a file that is not a complete cache file raises DataError naming it.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        existing = next(p for p in (self.root, *self.root.parents) if p.exists())
        if not existing.is_dir():
            raise DataError(f"the feature cache folder {self.root} cannot be made: {existing} is a file")
        try:  # here, not after minutes of encoding
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(
                f"the feature cache folder {self.root} cannot be made ({exc.strerror or exc}); set data.cache_dir to a folder you can write"
            ) from None

    def path_for(self, key: str) -> Path:
        if not _KEY_PATTERN.fullmatch(key):
            raise ValueError(
                f"a cache key must match {_KEY_PATTERN.pattern!r} (make one with cache_key), but got {key!r}"
            )
        return self.root / f"{key}.arrow"

    def has(self, key: str, clip_ids: Iterable[str]) -> bool:
        """Whether ``key`` is cached for every clip in ``clip_ids``.

        False when the file does not exist, is unreadable or has another format version:
        :func:`encode_to_cache` then rebuilds it, with a warning naming it.
        """
        if not self.path_for(key).is_file():
            return False
        try:
            cached = self.load(key)
        except DataError:
            return False
        return all(c in cached for c in clip_ids)

    def write(self, key: str, clip_ids: Sequence[str], features: Mapping[str, np.ndarray]) -> Path:
        """Store ``features`` (N, *shape) per modality, float16 or float32, for ``clip_ids``.

        Replaces the file of ``key`` as a whole; returns its path.
        """
        with _CacheWriter(self.path_for(key), key) as writer:
            writer.write(clip_ids, features)
            return writer.commit()

    def load(self, key: str) -> CachedFeatures:
        return CachedFeatures(self.path_for(key), key=key)


def encode_to_cache(
    encode: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    batches: Iterable[tuple[list[str], dict[str, torch.Tensor]]],
    cache: FeatureCache,
    key: str,
    *,
    dtype: DTypeLike = np.float16,
) -> CachedFeatures:
    """Encode ``batches`` of (clip ids, inputs) into the cache file of ``key``; return it.

    ``encode`` runs under ``torch.inference_mode`` and returns (B, ...) tensors per
    modality on any device and in any float dtype; each result is written to disk before
    the next batch, so memory holds one batch. A batch whose clips are all cached
    already is not encoded; when no batch needs encoding, the existing file is returned
    untouched. Otherwise the new file gets the encoded batches, then every other clip
    of the existing file, so one key accumulates every clip encoded under it.

    An existing file that cannot be read is rebuilt, with a RuntimeWarning naming it.
    To skip even loading the inputs of a cached dataset, check ``cache.has`` first.
    """
    dtype = np.dtype(dtype)
    if dtype not in _STORED_DTYPES:
        raise ValueError(f"unsupported cache dtype {dtype}; valid: {[str(d) for d in _STORED_DTYPES]}")
    previous = _load_existing(cache, key)
    with _CacheWriter(cache.path_for(key), key, dtype) as writer:
        for clip_ids, inputs in batches:
            if previous is not None and all(c in previous for c in clip_ids):
                continue  # copied from the existing file below, if anything changes
            with torch.inference_mode():
                outputs = encode(inputs)
            features = {name: t.detach().to("cpu", torch.float32).numpy() for name, t in outputs.items()}
            writer.write(clip_ids, features)
        if previous is not None:
            if not writer.clip_ids:
                return previous
            rest = np.array(
                [i for i, c in enumerate(previous.clip_ids) if c not in writer.clip_ids], dtype=np.int64
            )
            for start in range(0, len(rest), _COPY_ROWS):
                rows = rest[start : start + _COPY_ROWS]
                writer.write([previous.clip_ids[i] for i in rows], previous.arrays(rows, dtype))
        writer.commit()
    return cache.load(key)


def _load_existing(cache: FeatureCache, key: str) -> CachedFeatures | None:
    path = cache.path_for(key)
    if not path.exists():
        return None
    try:
        return cache.load(key)
    except DataError as err:
        warnings.warn(f"rebuilding the feature cache file {path}: {err}", RuntimeWarning, stacklevel=3)
        return None


class _CacheWriter:
    """Streams record batches to a temporary file; ``commit`` renames it into place.

    Leaving the ``with`` block without a commit (an error, or nothing to write)
    deletes the temporary file, so the file at ``path`` is never partial.
    """

    def __init__(self, path: Path, key: str, dtype: np.dtype | None = None) -> None:
        self.path = path
        self.clip_ids: set[str] = set()
        self._key = key
        self._dtype = dtype
        self._tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._schema: pa.Schema | None = None
        self._sink: pa.NativeFile | None = None
        self._writer: pa.ipc.RecordBatchFileWriter | None = None

    def __enter__(self) -> _CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()
        with contextlib.suppress(OSError):  # a failed write's own error is the one to report
            self._tmp.unlink(missing_ok=True)

    def write(self, clip_ids: Sequence[str], features: Mapping[str, np.ndarray]) -> None:
        clip_ids = list(clip_ids)
        arrays = self._check(clip_ids, features)
        if self._writer is None:
            self._open(arrays)
        assert self._writer is not None
        columns = [pa.array(clip_ids, type=pa.string())]
        columns += [_fixed_size_list(arrays[name]) for name in self._shapes]
        self._writer.write_batch(pa.record_batch(columns, schema=self._schema))
        self.clip_ids.update(clip_ids)

    def commit(self) -> Path:
        if self._writer is None:
            raise ValueError(f"no clips to cache under {self._key!r}: the batches were empty")
        self._close()
        commit(self._tmp, self.path)
        return self.path

    def _check(self, clip_ids: list[str], features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not features or "clip_id" in features:
            raise ValueError(
                f"features must name one or more modalities other than 'clip_id', but got {list(features)}"
            )
        if self._shapes and set(features) != set(self._shapes):
            raise ValueError(
                f"every batch must have modalities {list(self._shapes)}, but got {list(features)}"
            )
        arrays = {}
        for name, value in features.items():
            array = np.asarray(value)
            if self._dtype is not None:
                array = array.astype(self._dtype, copy=False)
            elif array.dtype not in _STORED_DTYPES:
                raise ValueError(
                    f"features {name!r} have dtype {array.dtype}; valid: {[str(d) for d in _STORED_DTYPES]}"
                )
            if array.ndim < 1 or len(array) != len(clip_ids):
                raise ValueError(
                    f"features {name!r} must have one row per clip id ({len(clip_ids)}), "
                    f"but have shape {array.shape}"
                )
            if self._shapes and array.shape[1:] != self._shapes[name]:
                raise ValueError(
                    f"every batch must give {name!r} the per-sample shape {self._shapes[name]}, "
                    f"but got {array.shape[1:]}"
                )
            arrays[name] = array
        _check_finite(clip_ids, arrays)
        if not all(isinstance(c, str) for c in clip_ids):
            raise ValueError(f"clip ids must be strings, but got {clip_ids[:5]}")
        repeated = {c for c, n in Counter(clip_ids).items() if n > 1} | (self.clip_ids & set(clip_ids))
        if repeated:
            raise ValueError(f"each clip is cached once, but clip id(s) {sorted(repeated)[:5]} repeat")
        return arrays

    def _open(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._shapes = {name: array.shape[1:] for name, array in arrays.items()}
        metadata = {"version": CACHE_FORMAT_VERSION, "key": self._key, "shapes": self._shapes}
        fields = [pa.field("clip_id", pa.string(), nullable=False)]
        fields += [
            pa.field(name, pa.list_(pa.from_numpy_dtype(a.dtype), int(np.prod(a.shape[1:]))), nullable=False)
            for name, a in arrays.items()
        ]
        self._schema = pa.schema(fields, metadata={_METADATA_KEY: json.dumps(metadata).encode()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._sink = pa.OSFile(str(self._tmp), "wb")
        self._writer = pa.ipc.new_file(self._sink, self._schema)

    def _close(self) -> None:
        if self._writer is not None and self._sink is not None and not self._sink.closed:  # _open sets the sink first
            self._writer.close()
            self._sink.close()


def _stored_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The on-disk per-sample shape: (C, *positions) stored as (*positions, C)."""
    return (*shape[1:], shape[0]) if len(shape) > 1 else shape


def _channels_first(batch: ArrayOrTensor) -> ArrayOrTensor:
    """A stored (B, *positions, C) batch as a (B, C, *positions) view (numpy or torch)."""
    if batch.ndim <= 2:
        return batch
    return batch.movedim(-1, 1) if isinstance(batch, torch.Tensor) else np.moveaxis(batch, -1, 1)


def _fixed_size_list(array: np.ndarray) -> pa.FixedSizeListArray:
    """Rows of (C, *positions) as a fixed-size-list column, stored channels last."""
    if array.ndim > 2:
        array = np.moveaxis(array, 1, -1)
    flat = np.ascontiguousarray(array).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), int(np.prod(array.shape[1:])))


def _fixed_shape_view(column: pa.FixedSizeListArray, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-copy (N, *shape) view of one record batch's fixed-size-list column."""
    return column.flatten().to_numpy(zero_copy_only=True).reshape(len(column), *shape)


def _read_table(path: Path) -> pa.Table:
    if not path.is_file():
        raise DataError(f"no feature cache file at {path}; encode it with encode_to_cache")
    try:
        return pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    except (pa.ArrowException, OSError) as err:
        raise DataError(
            f"feature cache file {path} is unreadable ({err}); delete it or let encode_to_cache rebuild it"
        ) from None


def _read_metadata(path: Path, schema: pa.Schema, key: str | None) -> tuple[str, dict[str, tuple[int, ...]]]:
    raw = (schema.metadata or {}).get(_METADATA_KEY, b"")  # absent: b"" fails to parse, as a bad value does
    try:
        metadata = json.loads(raw)
        version, stored_key = metadata["version"], metadata["key"]
        shapes = {str(name): tuple(int(n) for n in shape) for name, shape in metadata["shapes"].items()}
    except (TypeError, ValueError, KeyError, AttributeError):
        raise DataError(
            f"{path} is not a tacfn feature cache file (no valid {_METADATA_KEY.decode()} metadata)"
        ) from None
    if version != CACHE_FORMAT_VERSION:
        raise DataError(
            f"feature cache file {path} has format version {version}, but this tacfn reads "
            f"{CACHE_FORMAT_VERSION}; delete it or let encode_to_cache rebuild it"
        )
    if key is not None and stored_key != key:
        raise DataError(f"feature cache file {path} holds key {stored_key!r}, not {key!r}; delete it")
    return stored_key, shapes


def _check_finite(clip_ids: list[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Refuse NaN or inf features: every trial trained on them would diverge, far from the cause.

    float16 holds at most 65504, so an encoder output beyond that turns to inf on storing.
    """
    for name, array in arrays.items():
        rows = array.reshape(len(array), -1)
        bad = ~np.isfinite(rows).all(axis=1)
        if bad.any():
            clips = [c for c, b in zip(clip_ids, bad) if b]
            what = "NaN" if np.isnan(rows[bad]).any() else f"infinite as {array.dtype} (largest {np.finfo(array.dtype).max:g})"
            raise DataError(
                f"the {name} features of {len(clips)} clip(s), e.g. {clips[:3]}, are {what}; "
                "check the encoder and these clips' media"
            )


def _check_columns(path: Path, schema: pa.Schema, shapes: Mapping[str, tuple[int, ...]]) -> None:
    expected = {"clip_id": [pa.string()]}
    for name, shape in shapes.items():
        expected[name] = [pa.list_(pa.from_numpy_dtype(d), int(np.prod(shape))) for d in _STORED_DTYPES]
    for name, types in expected.items():
        found = schema.field(name).type if name in schema.names else None
        if found not in types:
            raise DataError(
                f"feature cache file {path}: column {name!r} must be one of {[str(t) for t in types]}, "
                f"but is {found or 'missing'}; delete it or let encode_to_cache rebuild it"
            )
