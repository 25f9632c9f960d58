"""The results tables: their columns, how a Python value becomes a typed cell, and how rows
become (or join) a table.

``trials.parquet`` holds one row per trial: ``trial_id``, ``status``, ``seed``, ``fold``,
``config_hash``, the metrics at the chosen epoch, test metrics, time, parameter counts,
``node`` and ``error``, plus the flattened config as ``config.<dotted key>`` columns, a
search's sampled parameters as ``param.<dotted key>`` columns (since schema version 2, see
:func:`param_columns`) and any other flat metric the caller passes (``test_missing_audio``, ...). ``epochs.parquet`` holds
one row per (trial, epoch): the learning curves. ``predictions.parquet`` holds one row per
(trial, split, sample[, task]): labels and predictions, for confusion matrices; ``task`` is
null for single-task datasets.

Columns keep their types from trial to trial: a value missing in some rows is null, an
int in one trial and a float in another makes the column float64, bools stay bools, and
lists or dicts are stored as JSON strings. Values of one column that mix strings with
numbers or bools with numbers are stored as strings. A column that holds only nulls so
far is typed string for ``config.`` columns and float64 otherwise.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import DataError
from ..nested import flatten

# Of experiment.json; a folder of a newer version is refused, older ones read and resumed.
# 3: records go to the record log (tacfn.store._log) until compacted; 2: param.* columns.
SCHEMA_VERSION = 3
PARAMS_SINCE = 2  # the first schema version whose search trials record param.* columns
STATUSES: tuple[str, ...] = ("completed", "pruned", "failed", "diverged", "running")
CONFIG_PREFIX = "config."
PARAM_PREFIX = "param."

_TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class TableSpec:
    """One Parquet table: its file, fixed columns (in order) and columns never null."""

    file: str
    columns: dict[str, pa.DataType]
    required: tuple[str, ...]

    def empty(self) -> pa.Table:
        return pa.schema(list(self.columns.items())).empty_table()


TRIALS = TableSpec(
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
EPOCHS = TableSpec(
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
PREDICTIONS = TableSpec(
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


def flatten_config(cfg: Mapping[str, Any], prefix: str = CONFIG_PREFIX) -> dict[str, Any]:
    """Nested mappings become ``prefix + dotted key`` columns; lists become JSON strings, and an
    empty mapping (no setting, see :mod:`tacfn.nested`) no column.

    ``{"train": {"lr": 0.001}, "model": {"modalities": ["audio"]}}`` gives
    ``{"config.train.lr": 0.001, "config.model.modalities": '["audio"]'}``.
    """
    return {name: _cell(value, name) for name, value in flatten(cfg, prefix).items()}


def param_columns(sampled: Mapping[str, Any], axes: Iterable[str]) -> dict[str, Any]:
    """A search trial's ``param.<dotted key>`` columns, one per axis of its space: the value
    it sampled, None where a ``when`` condition left the axis out (Optuna's ``params_<key>``).

    Unlike ``config.*`` they tell a sampled value from one the space's ``base`` set.
    ``sampled`` keys other than ``axes`` are left out.
    """
    return {PARAM_PREFIX + key: _cell(sampled.get(key), PARAM_PREFIX + key) for key in axes}


def with_trial_id(rows: Iterable[Mapping[str, Any]], trial_id: str, what: str) -> list[dict[str, Any]]:
    """``rows`` (named ``what`` in errors) with the trial's ``trial_id``; a row naming another trial is a ValueError."""
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
        return json.dumps(value, default=json_default, sort_keys=True)
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


def build_table(spec: TableSpec, rows: list[dict[str, Any]], context: str) -> pa.Table:
    """Rows as a table with the fixed columns typed and the other columns inferred.

    ``context`` names the rows in error messages: ``epochs`` and ``predictions`` are indexed
    (``epochs[3]``), any other name (``row``, ``updates['t2']``) names a single row.
    """
    extra = sorted({k for row in rows for k in row} - spec.columns.keys(), key=_extra_order)
    arrays: dict[str, pa.Array] = {}
    for column in [*spec.columns, *extra]:
        dtype = spec.columns.get(column)
        values = [row.get(column) for row in rows]
        if not _already_typed(values, dtype, column in spec.required):
            values = [
                _typed_cell(spec, column, value, f"{context}[{i}]" if context in ("epochs", "predictions") else context)
                for i, value in enumerate(values)
            ]
        if dtype is None:
            dtype = _common_type(map(_cell_type, values), column)
            if dtype == pa.string():
                values = [_as_string(v) for v in values]
        arrays[column] = pa.array(values, type=dtype)
    return pa.table(arrays)


_EXACT = {pa.string(): (str,), pa.int64(): (int,), pa.float64(): (float,)}


def _already_typed(values: list[Any], dtype: pa.DataType | None, required: bool) -> bool:
    """Whether ``values`` are cells of a fixed column ``dtype`` as they are (the common case,
    checked at C speed), so the per-cell checks of :func:`_typed_cell` can be skipped."""
    exact = _EXACT.get(dtype) if dtype is not None else None
    if exact is None:
        return False
    allowed = set(exact) if required else {*exact, type(None)}
    return set(map(type, values)) <= allowed


def _typed_cell(spec: TableSpec, column: str, value: Any, where: str) -> Any:
    """``value`` as a cell of ``column``: a fixed column's type is checked, another's inferred later."""
    dtype = spec.columns.get(column)
    try:
        cell = _cell(value, column) if dtype is None else _fixed_cell(value, column, dtype)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if column in spec.required and cell is None:
        raise ValueError(f"{where}: `{column}` is required, but is missing or None")
    return cell


def _as_string(value: Any) -> str | None:
    """A cell as a string formatted as Arrow casts it, so old and new cells of a column agree."""
    if value is None or isinstance(value, str):
        return value
    return pa.array([value], type=_cell_type(value)).cast(pa.string())[0].as_py()


def _extra_order(column: str) -> tuple[bool, bool, bool, str]:
    """Config columns first, then sampled parameters, then other metrics, each alphabetically;
    the record log's bookkeeping (``_record``, ...) last."""
    return (column.startswith("_"), not column.startswith(CONFIG_PREFIX), not column.startswith(PARAM_PREFIX), column)


def _effective_type(column: pa.ChunkedArray) -> pa.DataType:
    """A column's type, or null when it holds only nulls (so it takes the next value's type);
    a column of no rows keeps its type."""
    return pa.null() if len(column) and column.null_count == len(column) else column.type


def concat(tables: Sequence[pa.Table], spec: TableSpec, path: Path | str) -> pa.Table:
    """``tables`` (one table's files, or a file and new rows) as one, each column with one type
    for all of them by the module docstring's rules; ``path`` names the table in errors."""
    held = [set(table.column_names) for table in tables]
    extra = sorted(set().union(*held) - spec.columns.keys(), key=_extra_order)
    columns = {}
    for name in [*spec.columns, *extra]:
        if name in spec.columns:
            dtype = spec.columns[name]
        else:
            dtype = _common_type([_effective_type(t[name]) for t, has in zip(tables, held) if name in has], name)
        pieces: list[pa.Array] = []
        for table, has in zip(tables, held):
            if name not in has:
                pieces.append(pa.nulls(table.num_rows, dtype))
                continue
            try:
                pieces.extend(table[name].cast(dtype).chunks)
            except pa.ArrowException as exc:
                raise DataError(f"{path}: column {name!r} cannot be stored as {dtype} ({exc})") from exc
        columns[name] = pa.chunked_array(pieces, type=dtype)
    return pa.table(columns)


def json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
