"""IEMOCAP in the MulT benchmark's format, converted once to memory-mapped Arrow.

The MulT benchmark (Tsai et al., 2019) ships unaligned CMU-MultimodalSDK features of
IEMOCAP as ``iemocap_data_noalign.pkl``: a pickled dict ``{"train" | "valid" | "test":
{"text": (N, L_t, 300), "audio": (N, L_a, 74), "vision": (N, L_v, 35), "labels": (N, 4,
2)[, "id": (N, ...)]}}``. The four emotions (neutral, happy, sad, angry) are each scored
as their own binary task; the target class of an emotion is the argmax over the last
label axis (MulT's ``torch.argmax(Y, dim=-1)``). COVAREP audio features hold ``-inf``
values that MulT sets to zero; so do we.

Pickle can run arbitrary code when loaded, so :func:`convert_iemocap` opens a ``.pkl``
only when the caller says so, and writes Arrow IPC files that every later run
memory-maps instead.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import torch

from ..errors import DataError
from ..files import write_atomic, write_json_atomic
from ..outputs import check_output_folder
from .digest import file_sha256

IEMOCAP_EMOTIONS = ("neutral", "happy", "sad", "angry")
IEMOCAP_SPLITS = ("train", "valid", "test")
IEMOCAP_DIMS = {"text": 300, "audio": 74, "vision": 35}
MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "tacfn-iemocap-mult"
FORMAT_VERSION = 1

_LABEL_SHAPE = (len(IEMOCAP_EMOTIONS), 2)


def convert_iemocap(src: Path, out_dir: Path, *, allow_pickle: bool = False) -> Path:
    """Convert MulT's ``iemocap_data_noalign.pkl`` to Arrow files in ``out_dir``.

    Writes ``train.arrow``, ``valid.arrow``, ``test.arrow`` (one row per utterance:
    float32 features, int64 labels of shape (4,) after the argmax, ids when the source
    has them) and then ``manifest.json``, each under a temporary name renamed into
    place, so a folder with a manifest is always complete. The manifest records the
    source's size and mtime (see :func:`is_converted_from`). An existing conversion in
    ``out_dir`` is replaced; a folder holding anything else tacfn wrote (another dataset, an
    experiment, a run) is refused before the pickle is read. Returns ``out_dir``.

    ``allow_pickle`` must be True: unpickling runs code from the file, so only do it
    for a file you trust (the CLI passes it when you name the ``.pkl`` explicitly).
    """
    src, out_dir = Path(src), Path(out_dir)
    if not allow_pickle:
        raise DataError(
            f"refusing to unpickle {src}: a pickle file can run arbitrary code when loaded; "
            "pass allow_pickle=True (on the command line: name the .pkl file explicitly) "
            "only for a file you trust"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir} exists and is not a folder; name a new or existing folder for the conversion")
    check_output_folder(out_dir, "OUT", own="dataset")
    _check_replaceable(out_dir)
    source_stat = _source_stat(src)  # before reading: a change during the read shows next time
    splits, lengths = _load_splits(src, _read_pickle(src))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)  # the folder is incomplete until the end
    counts = {}
    for split in IEMOCAP_SPLITS:
        table = _split_table(splits[split])
        counts[split] = table.num_rows
        write_atomic(out_dir / f"{split}.arrow", partial(_write_table, table=table))
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "emotions": list(IEMOCAP_EMOTIONS),
        "modalities": {m: [lengths[m], dim] for m, dim in IEMOCAP_DIMS.items()},
        "splits": counts,
        "has_ids": all("id" in arrays for arrays in splits.values()),
        "source": src.name,
        "source_stat": source_stat,
        "sha256": {split: file_sha256(out_dir / f"{split}.arrow") for split in IEMOCAP_SPLITS},
    }
    write_json_atomic(out_dir / MANIFEST_NAME, manifest, indent=2)
    return out_dir


class IemocapDataset:
    """One split of a converted IEMOCAP folder, memory-mapped.

    ``batch(indices)`` gathers rows with one ``numpy.take`` per modality on the mapped
    buffers, so only the requested rows are read and copied. The object holds numpy
    views of the mapping (no open file handles), so it pickles by value, e.g. into
    Ray's object store. ``ids`` holds the source's per-row id fields, or None when the
    source had no ids.
    """

    def __init__(self, path: Path, split: str) -> None:
        if split not in IEMOCAP_SPLITS:
            raise ValueError(f"unknown IEMOCAP split {split!r}; valid: {list(IEMOCAP_SPLITS)}")
        self.path = Path(path)
        self.split = split
        manifest = read_manifest(self.path)
        shapes = {m: tuple(manifest["modalities"][m]) for m in IEMOCAP_DIMS}
        file = self.path / f"{split}.arrow"
        table = _read_table(file)
        expected_rows = manifest["splits"][split]
        if table.num_rows != expected_rows:
            raise DataError(
                f"{file} has {table.num_rows} rows but its manifest says {expected_rows}; "
                "convert the dataset again"
            )
        self._features = {m: _column_view(file, table, m, shape, pa.float32()) for m, shape in shapes.items()}
        self._labels = _column_view(file, table, "label", (len(IEMOCAP_EMOTIONS),), pa.int64())
        self.ids = _ids(table) if "id" in table.column_names else None
        # What feature caches key on: recorded at conversion, or hashed now for an older folder.
        self.content_digest: str = manifest.get("sha256", {}).get(split) or file_sha256(file)

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> np.ndarray:
        """Target class per emotion, (N, 4) int64 (1 = the emotion is present); read-only."""
        return self._labels

    @property
    def input_shapes(self) -> dict[str, tuple[int, int]]:
        """(sequence length, feature dim) per modality."""
        return {m: tuple(v.shape[1:]) for m, v in self._features.items()}

    def batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows ``indices`` as tensors: ``text``/``audio``/``vision`` (B, L, dim) float32,
        ``label`` (B, 4) int64 and ``index`` (B,) int64."""
        rows = np.array(indices, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            bad = rows[(rows < 0) | (rows >= len(self))][0]
            raise IndexError(f"`0 <= index < {len(self)}` must hold, but got index={bad}")
        out = {m: torch.from_numpy(np.take(v, rows, axis=0)) for m, v in self._features.items()}
        out["label"] = torch.from_numpy(np.take(self._labels, rows, axis=0))
        out["index"] = torch.from_numpy(rows)
        return out


def is_converted_from(out_dir: Path, src: Path) -> bool:
    """Whether ``out_dir`` holds a conversion of ``src`` as it is now (same size and mtime).

    False for a missing, unreadable or older conversion that recorded no source, so the
    caller converts again.
    """
    try:
        recorded = read_manifest(out_dir).get("source_stat")
    except DataError:
        return False
    return recorded is not None and recorded == _source_stat(src)


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a converted folder; DataError when it is missing or not ours."""
    file = Path(path) / MANIFEST_NAME
    if not file.is_file():
        raise DataError(
            f"{path} is not a converted IEMOCAP folder (no {MANIFEST_NAME}); "
            "convert MulT's iemocap_data_noalign.pkl first: tacfn data iemocap PKL OUT_DIR"
        )
    try:
        manifest = json.loads(file.read_text())
        if isinstance(manifest, dict) and "preprocess_key" in manifest:  # what `tacfn data prepare` writes
            raise DataError(f"{path} holds a prepared RAVDESS dataset, not a converted IEMOCAP one; use it with the paper or lite preset")
        valid = (
            manifest["format"] == FORMAT_NAME
            and set(manifest["modalities"]) == set(IEMOCAP_DIMS)
            and set(manifest["splits"]) == set(IEMOCAP_SPLITS)
            and manifest["version"] == FORMAT_VERSION
        )
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{file} is unreadable ({err}); convert the dataset again") from None
    if not valid:
        raise DataError(
            f"{file} is not a {FORMAT_NAME} manifest of version {FORMAT_VERSION}; convert the dataset again"
        )
    return manifest


def write_synthetic_iemocap(
    path: Path,
    *,
    n_train: int,
    n_valid: int,
    n_test: int,
    lengths: tuple[int, int, int] = (20, 40, 50),
    seed: int = 0,
) -> Path:
    """Write a small file in the exact format of MulT's ``iemocap_data_noalign.pkl``.

    For tests, and for trying the IEMOCAP preset without the real data. ``lengths``
    are the (text, audio, vision) sequence lengths. Each utterance carries exactly one
    of the four emotions (drawn uniformly), labelled as one-hot pairs like the real
    file. The emotion is planted in every modality: a fixed pattern per (emotion,
    modality) is added, at unit strength, to a random half of the time steps of
    standard-normal noise, so attention over time helps and any modality alone can
    learn it. About 1% of audio values are ``-inf``, as in the real COVAREP features.
    Ids are (N, 3) strings like MulT's ``id`` arrays. Deterministic per ``seed``.
    """
    for name, n in (("n_train", n_train), ("n_valid", n_valid), ("n_test", n_test)):
        if n < 1:
            raise ValueError(f"`{name} >= 1` must hold, but got {name}={n}")
    if len(lengths) != 3 or min(lengths) < 1:
        raise ValueError(f"`lengths` must be 3 positive ints (text, audio, vision), but got {lengths}")
    rng = np.random.default_rng(seed)
    patterns = {m: rng.normal(size=(len(IEMOCAP_EMOTIONS), dim)) for m, dim in IEMOCAP_DIMS.items()}
    data = {}
    for split, n in zip(IEMOCAP_SPLITS, (n_train, n_valid, n_test), strict=True):
        emotion = rng.integers(0, len(IEMOCAP_EMOTIONS), size=n)
        split_data: dict[str, np.ndarray] = {}
        for (modality, dim), length in zip(IEMOCAP_DIMS.items(), lengths, strict=True):
            planted = rng.random((n, length, 1)) < 0.5
            noise = rng.normal(size=(n, length, dim))
            signal = planted * patterns[modality][emotion][:, None, :]
            split_data[modality] = (noise + signal).astype(np.float32)
        split_data["audio"][rng.random(split_data["audio"].shape) < 0.01] = -np.inf
        labels = np.zeros((n, *_LABEL_SHAPE), dtype=np.float32)
        labels[:, :, 0] = 1.0
        labels[np.arange(n), emotion] = (0.0, 1.0)
        split_data["labels"] = labels
        split_data["id"] = np.array([(f"synthetic_{split}_{i:05d}", "0", str(lengths[0])) for i in range(n)])
        data[split] = split_data
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: pickle.dump(data, f, protocol=4))
    return path


def _check_replaceable(out_dir: Path) -> None:
    """Refuse a folder whose manifest is not an IEMOCAP conversion's (a prepared RAVDESS
    dataset, say): converting removes the manifest first and would leave that dataset broken."""
    file = out_dir / MANIFEST_NAME
    if not file.is_file():
        return
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError):  # ValueError: not UTF-8, or not JSON
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise DataError(f"{out_dir} holds another dataset ({file} is not an IEMOCAP conversion's); choose another OUT or delete it")


def _source_stat(src: Path) -> dict[str, int] | None:
    """The source file's size and modification time, or None when it cannot be read."""
    try:
        stat = src.stat()
    except OSError:
        return None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_pickle(src: Path) -> Mapping[str, Any]:
    if not src.is_file():
        raise DataError(f"IEMOCAP file {src} {'is not a file' if src.exists() else 'does not exist'}")
    try:
        with src.open("rb") as f:
            # latin1 lets Python 3 read numpy arrays pickled by Python 2.
            data = pickle.load(f, encoding="latin1")  # noqa: S301 (the file the user names, MulT's format)
    except Exception as err:  # unpickling raises almost anything on a bad file
        raise DataError(f"{src} is not a readable pickle ({type(err).__name__}: {err})") from None
    if not isinstance(data, Mapping):
        raise DataError(
            f"{src} must hold a dict of splits {list(IEMOCAP_SPLITS)}, but holds {type(data).__name__}"
        )
    return data


def _load_splits(
    src: Path, data: Mapping[str, Any]
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, int]]:
    """Validate every split; returns its arrays and the sequence length per modality."""
    splits: dict[str, dict[str, np.ndarray]] = {}
    lengths: dict[str, int] = {}
    for split in IEMOCAP_SPLITS:
        if not isinstance(data.get(split), Mapping):
            raise DataError(
                f"{src}: missing split {split!r}; a MulT IEMOCAP file has splits {list(IEMOCAP_SPLITS)}"
            )
        splits[split] = arrays = _load_split(src, split, data[split])
        for modality in IEMOCAP_DIMS:
            length = arrays[modality].shape[1]
            if lengths.setdefault(modality, length) != length:
                raise DataError(
                    f"{src}: split {split!r}, key {modality!r} has sequence length {length}, but split "
                    f"{IEMOCAP_SPLITS[0]!r} has {lengths[modality]}; every split must share one length"
                )
    return splits, lengths


def _load_split(src: Path, split: str, raw: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """One split as float32 features with audio ``-inf`` zeroed, int64 labels (argmax), ids."""
    arrays: dict[str, np.ndarray] = {}
    for key in (*IEMOCAP_DIMS, "labels"):
        if key not in raw:
            raise DataError(
                f"{src}: split {split!r} has no key {key!r}; required: {[*IEMOCAP_DIMS, 'labels']}"
            )
        value = np.asarray(raw[key])
        if value.dtype.kind not in "fiub":
            raise DataError(
                f"{src}: split {split!r}, key {key!r} must be numeric, but has dtype {value.dtype}"
            )
        arrays[key] = value.astype(np.float32)
    n = len(arrays["labels"]) if arrays["labels"].ndim else 0  # a scalar fails the shape check below
    for key in ("labels", *IEMOCAP_DIMS):  # labels first: they define N
        array = arrays[key]
        expected = (n, *_LABEL_SHAPE) if key == "labels" else (n, None, IEMOCAP_DIMS[key])
        if array.ndim != 3 or any(
            e is not None and e != got for e, got in zip(expected, array.shape, strict=True)
        ):
            shape = "(N, 4, 2)" if key == "labels" else f"(N, L, {IEMOCAP_DIMS[key]})"
            raise DataError(
                f"{src}: split {split!r}, key {key!r} must have shape {shape} with N={n} "
                f"(the number of labels), but got {array.shape}"
            )
    if n == 0:
        raise DataError(f"{src}: split {split!r} has no rows; every split needs at least one utterance")
    arrays["audio"][arrays["audio"] == -np.inf] = 0.0  # MulT's rule for COVAREP's log(0)
    for key, array in arrays.items():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise DataError(f"{src}: split {split!r}, key {key!r} has {bad} non-finite values (NaN or inf)")
    labels = arrays.pop("labels")
    # Each emotion's pair is one-hot; anything else would pass argmax as a silent class 0.
    one_hot = (np.isin(labels, (0.0, 1.0)) & (labels.sum(axis=-1, keepdims=True) == 1)).all(axis=(1, 2))
    if not one_hot.all():
        raise DataError(
            f"{src}: split {split!r}, key 'labels' has {int(np.count_nonzero(~one_hot))} of {n} rows that "
            f"are not one-hot per emotion (each of the 4 pairs must be (1, 0) or (0, 1)), "
            f"e.g. row {int(np.argmin(one_hot))}"
        )
    arrays["label"] = labels.argmax(axis=-1).astype(np.int64)
    if "id" in raw:
        ids = np.asarray(raw["id"], dtype=object)
        if len(ids) != n:
            raise DataError(f"{src}: split {split!r}, key 'id' has {len(ids)} rows, but there are {n} labels")
        arrays["id"] = ids.reshape(n, -1)
    return arrays


def _split_table(arrays: Mapping[str, np.ndarray]) -> pa.Table:
    columns = {key: _fixed_size_list(arrays[key]) for key in (*IEMOCAP_DIMS, "label")}
    if "id" in arrays:
        columns["id"] = pa.array(
            [[_as_text(x) for x in row] for row in arrays["id"]], type=pa.list_(pa.string())
        )
    return pa.table(columns)


def _fixed_size_list(array: np.ndarray) -> pa.FixedSizeListArray:
    flat = np.ascontiguousarray(array).reshape(len(array), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])


def _as_text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _write_table(f: BinaryIO, table: pa.Table) -> None:
    with pa.ipc.new_file(f, table.schema) as writer:
        writer.write_table(table)  # one record batch: the reader maps it without copying


def _read_table(file: Path) -> pa.Table:
    if not file.is_file():
        raise DataError(f"{file} is missing; convert the dataset again")
    try:
        return pa.ipc.open_file(pa.memory_map(str(file))).read_all()
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{file} is not a readable Arrow file ({err}); convert the dataset again") from None


def _column_view(
    file: Path, table: pa.Table, name: str, shape: tuple[int, ...], value_type: pa.DataType
) -> np.ndarray:
    """Zero-copy (N, *shape) numpy view of a fixed-size-list column."""
    size = int(np.prod(shape))
    expected = pa.list_(value_type, size)
    if name not in table.column_names or table.schema.field(name).type != expected:
        found = table.schema.field(name).type if name in table.column_names else "no such column"
        raise DataError(
            f"{file}: column {name!r} must be {expected}, but is {found}; convert the dataset again"
        )
    column = table.column(name)
    # The converter writes one record batch, which maps without a copy; combining copies.
    array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if array.null_count:
        raise DataError(f"{file}: column {name!r} has missing values; convert the dataset again")
    return array.flatten().to_numpy(zero_copy_only=True).reshape(len(array), *shape)


def _ids(table: pa.Table) -> list[tuple[str, ...]]:
    return [tuple(row) for row in table.column("id").to_pylist()]
