"""The results store: one folder per experiment, Parquet tables written with pyarrow.

An experiment folder holds:

- ``experiment.json``: schema version, kind (``search`` or ``ablation``), name, the
  validated spec, creation time (UTC), the folder's absolute path or URI when it was
  created (``location``), package versions, git commit and hardware;
- ``trials.parquet``: one row per trial: ``trial_id``, ``status``, ``seed``, ``fold``,
  ``config_hash``, the metrics at the chosen epoch, test metrics, time, parameter
  counts, ``node`` and ``error``, plus the flattened config as ``config.<dotted key>``
  columns and any other flat metric the caller passes (``test_missing_audio``, ...);
- ``epochs.parquet``: one row per (trial, epoch): the learning curves;
- ``predictions.parquet``: one row per (trial, split, sample[, task]): labels and
  predictions, for confusion matrices. ``task`` is null for single-task datasets.

Columns keep their types from trial to trial: a value missing in some rows is null, an
int in one trial and a float in another makes the column float64, bools stay bools, and
lists or dicts are stored as JSON strings. Values of one column that mix strings with
numbers or bools with numbers are stored as strings. A column that holds only nulls so
far is typed string for ``config.`` columns and float64 otherwise.

The folder is a local path or a pyarrow filesystem URI (``s3://bucket/prefix``; see
:class:`Location`). Writes are atomic, so a dashboard reading while a search runs always
sees whole files: locally a temp file in the same folder, fsync and ``os.replace``; on an
object store the file is built in memory and sent as one whole object, which becomes
visible only once complete. A failed write raises :class:`~tacfn.errors.DataError` and
leaves the previous file in place. One process (the Ray driver) writes; readers may be
many. A reader during a search must read each file through one open handle (one GET on
an object store): :func:`read_table` does, as does ``pl.read_parquet`` given an open file,
whereas ``pq.read_table(path)`` and ``pl.read_parquet(path)`` open the path more than once
and can pair one version's footer with the next version's pages.

:meth:`ExperimentStore.record_trial` rewrites each table in full: fine up to about 5,000
trials of 50 epochs (with 240 test predictions each, about 1 s per trial on 2 CPU cores).
``epochs`` and ``predictions`` are written before ``trials``, so a trial listed in
``trials.parquet`` has its curves and predictions on disk.
"""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import platform
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .. import __version__
from ..errors import ConfigError, DataError
from ..outputs import check_output_folder

SCHEMA_VERSION = 1
KINDS: tuple[str, ...] = ("search", "ablation")
STATUSES: tuple[str, ...] = ("completed", "pruned", "failed", "diverged", "running")
EXPERIMENT_FILE = "experiment.json"
CONFIG_PREFIX = "config."

_TIMESTAMP = pa.timestamp("us", tz="UTC")
_VERSIONED_PACKAGES = ("torch", "ray", "optuna", "pyarrow")


@dataclass(frozen=True)
class _TableSpec:
    """One Parquet table: its file, fixed columns (in order) and columns never null."""

    file: str
    columns: dict[str, pa.DataType]
    required: tuple[str, ...]

    def empty(self) -> pa.Table:
        return pa.schema(list(self.columns.items())).empty_table()


TRIALS = _TableSpec(
    file="trials.parquet",
    columns={
        "trial_id": pa.string(),
        "status": pa.string(),
        "seed": pa.int64(),
        "fold": pa.int64(),
        "config_hash": pa.string(),
        "val_score": pa.float64(),
        "val_weighted_f1": pa.float64(),
        "best_epoch": pa.int64(),
        "epochs_run": pa.int64(),
        "test_score": pa.float64(),
        "test_weighted_f1": pa.float64(),
        "seconds": pa.float64(),
        "started_at": _TIMESTAMP,
        "finished_at": _TIMESTAMP,
        "num_parameters": pa.int64(),
        "trainable_parameters": pa.int64(),
        "node": pa.string(),
        "error": pa.string(),
    },
    required=("trial_id", "status"),
)
EPOCHS = _TableSpec(
    file="epochs.parquet",
    columns={
        "trial_id": pa.string(),
        "epoch": pa.int64(),
        "train_loss": pa.float64(),
        "train_score": pa.float64(),
        "val_loss": pa.float64(),
        "val_score": pa.float64(),
        "val_weighted_f1": pa.float64(),
        "seconds": pa.float64(),
    },
    required=("trial_id", "epoch"),
)
PREDICTIONS = _TableSpec(
    file="predictions.parquet",
    columns={
        "trial_id": pa.string(),
        "split": pa.string(),
        "sample_id": pa.string(),
        "task": pa.string(),
        "label": pa.int64(),
        "pred": pa.int64(),
    },
    required=("trial_id", "split", "sample_id", "label", "pred"),
)


class ExperimentStore:
    """An experiment folder: ``experiment.json`` plus the trials, epochs and predictions tables.

    ``ExperimentStore(root)`` (or :meth:`open`) opens an existing folder;
    :meth:`create` starts one. ``root`` is a local path or a URI such as
    ``s3://bucket/prefix``; :attr:`root` is then a :class:`~pathlib.Path` or that URI.
    Only one process may write to a folder at a time.
    """

    def __init__(self, root: str | Path) -> None:
        self.location = Location(root)
        self.root: Path | str = self.location.root
        self.experiment: dict[str, Any] = _read_experiment(self.location)

    def __repr__(self) -> str:
        return f"ExperimentStore({str(self.root)!r}, kind={self.kind!r}, name={self.name!r})"

    @property
    def kind(self) -> str:
        return self.experiment["kind"]

    @property
    def name(self) -> str:
        return self.experiment["name"]

    @classmethod
    def open(cls, root: str | Path) -> ExperimentStore:
        """Open an existing experiment folder; a missing or invalid ``experiment.json`` raises DataError."""
        return cls(root)

    @classmethod
    def create(
        cls,
        root: str | Path,
        kind: str,
        name: str,
        spec: Mapping[str, Any],
        hardware: Mapping[str, Any] | None = None,
        dataset: Mapping[str, Any] | None = None,
    ) -> ExperimentStore:
        """Make the folder and its ``experiment.json``, or reopen it to resume the same experiment.

        A folder that already holds an experiment of another kind, name or spec raises
        ConfigError, so one search never writes into another's results, and so does a local
        folder that holds a dataset, a training run or media (see
        :func:`~tacfn.outputs.check_output_folder`). ``hardware``
        (e.g. ``{"gpus": 2}``) is merged over the detected CPU count and platform; ``dataset``
        (:meth:`tacfn.tasks.TaskData.dataset_record`) says what the data plant, for the dashboard.
        """
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {list(KINDS)}, but got {kind!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"`name` must be a non-empty string, but got {name!r}")
        location = Location(root)
        spec_json = _json_roundtrip(spec, "spec")
        if location.exists(EXPERIMENT_FILE):
            store = cls(root)
            _check_same_experiment(store, kind, name, spec_json)
            return store
        if isinstance(location.root, Path):
            check_output_folder(location.root, "the experiment folder", own="experiment")
        experiment = {
            "schema_version": SCHEMA_VERSION,
            "kind": kind,
            "name": name,
            "spec": spec_json,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "location": str(absolute_root(root)),
            "versions": package_versions(),
            "git_commit": git_commit(),
            "hardware": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "gpus": None}
            | _json_roundtrip(hardware or {}, "hardware"),
            "dataset": _json_roundtrip(dataset or {}, "dataset"),
        }
        location.makedirs()
        text = json.dumps(experiment, indent=2, allow_nan=False) + "\n"
        location.write(EXPERIMENT_FILE, lambda f: f.write(text.encode()))
        return cls(root)

    # --- reading -----------------------------------------------------------------------

    def trials(self) -> pa.Table:
        """One row per trial (an empty table with the fixed columns before the first trial)."""
        return self._read(TRIALS)

    def epochs(self) -> pa.Table:
        """One row per (trial, epoch)."""
        return self._read(EPOCHS)

    def predictions(self) -> pa.Table:
        """One row per (trial, split, sample, task)."""
        return self._read(PREDICTIONS)

    def completed_trial_ids(self) -> set[str]:
        """Ids of the trials whose status is ``completed`` (what a resumed search skips)."""
        table = self.trials()
        done = table.filter(pc.equal(table["status"], "completed"))
        return set(done["trial_id"].to_pylist())

    def _read(self, spec: _TableSpec) -> pa.Table:
        return self.location.read_table(spec.file) if self.location.exists(spec.file) else spec.empty()

    # --- writing -----------------------------------------------------------------------

    def record_trial(
        self,
        row: Mapping[str, Any],
        epochs: Iterable[Mapping[str, Any]] = (),
        predictions: Iterable[Mapping[str, Any]] = (),
        replaces: Iterable[str] = (),
    ) -> None:
        """Write one trial's row, epochs and predictions, replacing any earlier record of it.

        ``row`` is flat: the fixed columns of ``trials.parquet``, config columns made by
        :func:`flatten_config`, and any other flat metric. ``epochs`` and ``predictions``
        rows get the trial's ``trial_id``. Recording a trial again (after a resume, or
        once ``running`` and again when finished) replaces its rows in all three tables,
        as it does those of the trials ``replaces`` names (earlier attempts of the same run).
        Bad values raise ValueError before anything is written; an existing table that
        cannot be read raises DataError and is left as it is.
        """
        trial_id = row.get("trial_id")
        if not isinstance(trial_id, str) or not trial_id:
            raise ValueError(f"`trial_id` must be a non-empty string, but got {trial_id!r}")
        if row.get("status") not in STATUSES:
            raise ValueError(f"`status` must be one of {list(STATUSES)}, but got {row.get('status')!r}")
        # Check every row before writing anything, then write the trial's row last.
        new_tables = [
            (EPOCHS, _build_table(EPOCHS, _with_trial_id(epochs, trial_id, "epochs"), "epochs")),
            (
                PREDICTIONS,
                _build_table(PREDICTIONS, _with_trial_id(predictions, trial_id, "predictions"), "predictions"),
            ),
            (TRIALS, _build_table(TRIALS, [dict(row)], "row")),
        ]
        dropped = {trial_id, *replaces}
        for spec, new in new_tables:
            table = _upsert(self._read(spec), new, dropped, spec, self.location.child(spec.file))
            self.location.write(spec.file, lambda f, table=table: pq.write_table(table, f))


def read_table(path: str | Path) -> pa.Table:
    """Read a whole Parquet file (a local path or a URI); a missing, truncated or corrupt file
    raises DataError naming it."""
    if is_uri(path):
        folder, _, name = str(path).rstrip("/").rpartition("/")
        return Location(folder).read_table(name)
    path = Path(path)
    return Location(path.parent).read_table(path.name)


def flatten_config(cfg: Mapping[str, Any], prefix: str = CONFIG_PREFIX) -> dict[str, Any]:
    """Nested mappings become ``prefix + dotted key`` columns; lists and empty mappings become JSON strings.

    ``{"train": {"lr": 0.001}, "model": {"modalities": ["audio"]}}`` gives
    ``{"config.train.lr": 0.001, "config.model.modalities": '["audio"]'}``.
    """
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, prefix=f"{name}."))
        else:
            flat[name] = _cell(value, name)
    return flat


def package_versions() -> dict[str, str | None]:
    """Python and package versions, read from installed metadata (nothing is imported)."""
    versions: dict[str, str | None] = {"python": platform.python_version(), "tacfn": __version__}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def git_commit(cwd: str | Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of the repository at ``cwd``, or None outside one (or without git)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


# --- experiment.json -----------------------------------------------------------------------


def _read_experiment(location: Location) -> dict[str, Any]:
    path = location.child(EXPERIMENT_FILE)
    if not location.exists(EXPERIMENT_FILE):
        raise DataError(f"{location.root} is not a tacfn experiment folder (no {EXPERIMENT_FILE})")
    try:
        experiment = json.loads(location.read_bytes(EXPERIMENT_FILE))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable experiment file ({exc})") from exc
    if not isinstance(experiment, dict):
        raise DataError(f"{path}: an experiment file must be a JSON object")
    version = experiment.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DataError(f"{path}: `schema_version` must be a positive integer, but got {version!r}")
    if version > SCHEMA_VERSION:
        raise DataError(
            f"{path}: schema_version {version} is newer than this tacfn reads "
            f"(version {SCHEMA_VERSION}); upgrade tacfn to open it"
        )
    if experiment.get("kind") not in KINDS:
        raise DataError(f"{path}: `kind` must be one of {list(KINDS)}, but got {experiment.get('kind')!r}")
    if not isinstance(experiment.get("name"), str) or not isinstance(experiment.get("spec"), dict):
        raise DataError(f"{path}: `name` must be a string and `spec` an object")
    return experiment


def _check_same_experiment(store: ExperimentStore, kind: str, name: str, spec: dict[str, Any]) -> None:
    """Refuse to resume into a folder that holds a different experiment."""
    old = store.experiment
    if old["kind"] == kind and old["name"] == name and old["spec"] == spec:
        return
    if old["kind"] != kind or old["name"] != name:
        what = f"{old['kind']} {old['name']!r}, not {kind} {name!r}"
    else:
        keys = sorted(k for k in old["spec"].keys() | spec.keys() if old["spec"].get(k) != spec.get(k))
        what = f"{kind} {name!r} with a different spec (differs in {keys})"
    raise ConfigError(
        f"{store.root} already holds {what}; use another folder, or the same spec to resume it"
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _json_roundtrip(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``value`` as plain JSON types, as it will read back from ``experiment.json``."""
    try:
        return json.loads(json.dumps(dict(value), default=_json_default, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`{what}` must be JSON-serialisable (finite numbers, no objects), but {exc}") from exc


# --- rows -> Arrow ---------------------------------------------------------------------------


def _with_trial_id(rows: Iterable[Mapping[str, Any]], trial_id: str, what: str) -> list[dict[str, Any]]:
    out = []
    for i, row in enumerate(rows):
        if row.get("trial_id", trial_id) != trial_id:
            raise ValueError(f"{what}[{i}] has trial_id {row['trial_id']!r}, but the trial is {trial_id!r}")
        out.append({**row, "trial_id": trial_id})
    return out


def _cell(value: Any, column: str) -> Any:
    """A value as a Parquet cell: None, bool, int, float or str (lists and dicts as JSON)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=_json_default, sort_keys=True)
    raise ValueError(
        f"`{column}` must be None, a bool, a number, a string, a list or a dict, "
        f"but got {type(value).__name__}"
    )


def _fixed_cell(value: Any, column: str, dtype: pa.DataType) -> Any:
    """Check a value against a fixed column's type (ints given as integral floats are accepted)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return None
    if dtype == pa.string() and isinstance(value, str):
        return value
    if dtype == pa.int64() and not isinstance(value, bool):
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if dtype == pa.float64() and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if dtype == _TIMESTAMP:
        return _timestamp(value, column)
    raise ValueError(f"`{column}` must be {_TYPE_NAMES[dtype]} or None, but got {value!r}")


_TYPE_NAMES = {
    pa.string(): "a string",
    pa.int64(): "an integer",
    pa.float64(): "a number",
    _TIMESTAMP: "a datetime, Unix seconds or an ISO 8601 string",
}


def _timestamp(value: Any, column: str) -> datetime:
    """A UTC datetime from a datetime (naive means UTC), Unix seconds or an ISO 8601 string."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"`{column}` must be an ISO 8601 time, but got {value!r}") from exc
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    raise ValueError(f"`{column}` must be {_TYPE_NAMES[_TIMESTAMP]} or None, but got {value!r}")


def _cell_type(value: Any) -> pa.DataType:
    if value is None:
        return pa.null()
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()


def _common_type(types: Iterable[pa.DataType], column: str) -> pa.DataType:
    """The type a column keeps for all of ``types``; see the module docstring for the rules."""
    known = {t for t in types if t != pa.null()}
    if not known:
        return pa.string() if column.startswith(CONFIG_PREFIX) else pa.float64()
    if len(known) == 1:
        return known.pop()
    if known == {pa.int64(), pa.float64()}:
        return pa.float64()
    return pa.string()


def _build_table(spec: _TableSpec, rows: list[dict[str, Any]], context: str) -> pa.Table:
    """Rows as a table with the fixed columns typed and the other columns inferred.

    ``context`` names the rows in error messages: ``row`` (the trial), or ``epochs`` and
    ``predictions`` (indexed).
    """
    extra = sorted({k for row in rows for k in row} - spec.columns.keys(), key=_extra_order)
    arrays: dict[str, pa.Array] = {}
    for column in [*spec.columns, *extra]:
        dtype = spec.columns.get(column)
        values = []
        for i, row in enumerate(rows):
            where = context if context == "row" else f"{context}[{i}]"
            try:
                value = row.get(column)
                values.append(_cell(value, column) if dtype is None else _fixed_cell(value, column, dtype))
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            if column in spec.required and values[-1] is None:
                raise ValueError(f"{where}: `{column}` is required, but is missing or None")
        if dtype is None:
            dtype = _common_type(map(_cell_type, values), column)
            if dtype == pa.string():
                values = [_as_string(v) for v in values]
        arrays[column] = pa.array(values, type=dtype)
    return pa.table(arrays)


def _as_string(value: Any) -> str | None:
    """A cell as a string formatted as Arrow casts it, so old and new cells of a column agree."""
    if value is None or isinstance(value, str):
        return value
    return pa.array([value], type=_cell_type(value)).cast(pa.string())[0].as_py()


def _extra_order(column: str) -> tuple[bool, str]:
    """Config columns first, then other metrics, each alphabetically."""
    return (not column.startswith(CONFIG_PREFIX), column)


def _effective_type(column: pa.ChunkedArray) -> pa.DataType:
    """A column's type, or null when it holds only nulls (so it takes the next value's type)."""
    return pa.null() if column.null_count == len(column) else column.type


def _upsert(old: pa.Table, new: pa.Table, trial_ids: set[str], spec: _TableSpec, path: Path | str) -> pa.Table:
    """``old`` without the rows of ``trial_ids``, plus ``new``; each column gets one type for both."""
    kept = old.filter(pc.invert(pc.is_in(old["trial_id"], pa.array(sorted(trial_ids), pa.string()))))
    extra = sorted((set(kept.column_names) | set(new.column_names)) - spec.columns.keys(), key=_extra_order)
    columns = {}
    for name in [*spec.columns, *extra]:
        if name in spec.columns:
            dtype = spec.columns[name]
        else:
            dtype = _common_type([_effective_type(t[name]) for t in (kept, new) if name in t.column_names], name)
        pieces: list[pa.Array] = []
        for table in (kept, new):
            if name not in table.column_names:
                pieces.append(pa.nulls(table.num_rows, dtype))
                continue
            try:
                pieces.extend(table[name].cast(dtype).chunks)
            except pa.ArrowException as exc:
                raise DataError(f"{path}: column {name!r} cannot be stored as {dtype} ({exc})") from exc
        columns[name] = pa.chunked_array(pieces, type=dtype)
    return pa.table(columns).combine_chunks()


# --- where the files live: a local folder or a filesystem URI ---------------------------------


def is_uri(location: str | Path) -> bool:
    """Whether ``location`` is a filesystem URI (``s3://bucket/prefix``) rather than a local path."""
    return isinstance(location, str) and "://" in location


def absolute_root(root: str | Path) -> Path | str:
    """An experiment folder as the runners hand it to Ray: an absolute local Path, or the URI."""
    location = Location(root).root
    return location.resolve() if isinstance(location, Path) else location


class Location:
    """An experiment folder's files: a local folder, or a folder under a URI that
    ``pyarrow.fs.FileSystem.from_uri`` opens (``s3://``, ``gs://``, ``abfs://``, ...).

    Object stores have no rename. A file is built in memory and sent as one object: on S3 a
    single PUT (a multipart upload for a file above pyarrow's part size), and either way
    readers see the new object only once it is whole. A file is read whole with one GET
    (ranged by the size just read: a read that raced a replacement fails to parse and is
    tried once more). Credentials, region and endpoint come from the environment
    (``AWS_ACCESS_KEY_ID``, ``AWS_REGION``, ``AWS_ENDPOINT_URL_S3``, ...), as for Ray's own
    storage; the URI itself takes no ``?options``.
    """

    def __init__(self, root: str | Path) -> None:
        if is_uri(root) and "?" in str(root):
            raise ConfigError(f"{root}: options in the URI are not supported; set them in the environment (AWS_REGION, ...)")
        self.root: Path | str = str(root).rstrip("/") if is_uri(root) else Path(root)
        self._remote: tuple[pafs.FileSystem, str] | None = None  # opened on first use

    @property
    def name(self) -> str:
        """The folder's last component."""
        return self.root.name if isinstance(self.root, Path) else self.root.rpartition("/")[2]

    def child(self, name: str) -> Path | str:
        """The path or URI of the file ``name`` in the folder (for messages and for Ray)."""
        return self.root / name if isinstance(self.root, Path) else f"{self.root}/{name}"

    def _fs(self) -> tuple[pafs.FileSystem, str]:
        if self._remote is None:
            uri = str(self.root)
            if uri.startswith("s3://"):  # open on the first write: a small file is then one PUT, not a multipart upload
                uri += "?allow_delayed_open=true"
            try:
                self._remote = pafs.FileSystem.from_uri(uri)
            except (OSError, pa.ArrowException) as exc:
                raise DataError(f"cannot open {self.root} ({exc})") from exc
        return self._remote

    def exists(self, name: str) -> bool:
        """Whether the file ``name`` exists; something else under that name is a DataError."""
        if isinstance(self.root, Path):
            is_file, present = (self.root / name).is_file(), (self.root / name).exists()
        else:
            fs, path = self._fs()
            try:
                kind = fs.get_file_info(f"{path}/{name}").type
            except (OSError, pa.ArrowException) as exc:
                raise DataError(f"cannot read {self.child(name)} ({exc})") from exc
            is_file, present = kind == pafs.FileType.File, kind != pafs.FileType.NotFound
        if present and not is_file:
            raise DataError(f"{self.child(name)}: not a file")
        return is_file

    def stamp(self, name: str) -> tuple[int, int]:
        """``(modification time in ns, size)`` of the file ``name``, ``(0, 0)`` when it is missing:
        changes whenever the file is replaced (object stores keep whole-second times)."""
        try:
            if isinstance(self.root, Path):
                stat = (self.root / name).stat()
                return stat.st_mtime_ns, stat.st_size
            fs, path = self._fs()
            info = fs.get_file_info(f"{path}/{name}")
        except (OSError, pa.ArrowException, DataError):
            return 0, 0
        return (info.mtime_ns or 0, info.size or 0) if info.type == pafs.FileType.File else (0, 0)

    def read_bytes(self, name: str) -> bytes:
        """The whole file ``name``, read at once; DataError naming it when it cannot be read."""
        try:
            if isinstance(self.root, Path):
                return (self.root / name).read_bytes()
            fs, path = self._fs()
            with fs.open_input_stream(f"{path}/{name}") as f:
                return f.readall()
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"cannot read {self.child(name)} ({exc})") from exc

    def read_table(self, name: str) -> pa.Table:
        """The whole Parquet file ``name``; a missing, truncated or corrupt file raises DataError naming it."""
        where = self.child(name)
        if not self.exists(name):
            raise DataError(f"{where} does not exist")
        try:
            if isinstance(self.root, Path):
                # One open file for footer and pages: pq.read_table(path) opens the path twice, and a
                # writer's os.replace in between pairs the old footer with the new file's pages.
                with pa.OSFile(str(where)) as f:
                    return pq.ParquetFile(f).read()
            try:
                return pq.ParquetFile(pa.BufferReader(self.read_bytes(name))).read()
            except pa.ArrowException:  # the object was replaced between its size and its GET
                return pq.ParquetFile(pa.BufferReader(self.read_bytes(name))).read()
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{where}: not a readable Parquet file ({exc})") from exc

    def makedirs(self) -> None:
        """Create the folder (and its parents); DataError when that is not possible."""
        try:
            if isinstance(self.root, Path):
                self.root.mkdir(parents=True, exist_ok=True)
            else:
                fs, path = self._fs()
                fs.create_dir(path, recursive=True)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"cannot create the experiment folder {self.root} ({exc})") from exc

    def write(self, name: str, write: Callable[[BinaryIO], Any]) -> None:
        """Replace the file ``name`` atomically with what ``write`` writes to the file object it gets;
        on failure DataError, and the previous version stays."""
        if isinstance(self.root, Path):
            _write_atomic(self.root / name, write)
            return
        try:
            # Build the whole file first, so a failing writer never reaches the store, then
            # send it in one upload: the new object appears only once it is complete.
            buffer = pa.BufferOutputStream()
            write(buffer)
            data = buffer.getvalue()
            fs, path = self._fs()
            with fs.open_output_stream(f"{path}/{name}") as f:
                f.write(data)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"could not write {self.child(name)} ({exc}); its previous version is unchanged") from exc


# --- atomic writes ---------------------------------------------------------------------------


def _write_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write ``path`` through a temp file in its folder; on failure the old file stays and no temp is left."""
    tmp = path.with_name(path.name + ".tmp")
    created = False
    try:
        with open(tmp, "wb") as f:
            created = True
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, pa.ArrowException) as exc:
        if created:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise DataError(f"could not write {path} ({exc}); its previous version is unchanged") from exc
