"""An experiment folder: ``experiment.json`` and the trials, epochs and predictions tables.

``experiment.json`` holds the schema version, kind (``search`` or ``ablation``), name, the
validated spec, creation time (UTC), the folder's absolute path or URI when it was created
(``location``), package versions, git commit, hardware and what the dataset plants. The
tables are described in :mod:`tacfn.store._schema`; the folder is a local path or a URI
(:class:`~tacfn.store.Location`), and every file is replaced atomically.

Recording appends: :meth:`ExperimentStore.record_trial` writes the trial's rows as small
files in the folder's record log (:mod:`tacfn.store._log`), so its cost does not grow with
the experiment, and readers merge the log with the three tables. A finished search or plan
folds the log into the tables (:meth:`ExperimentStore.compact`, also ``tacfn store compact``),
which any Parquet reader then reads whole. To change a recorded trial's columns (a Pareto
flag, the chosen trial's test metrics) use :meth:`ExperimentStore.update_trials`, and
:meth:`ExperimentStore.record_predictions` for its predictions: neither rewrites the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ConfigError, DataError
from ..outputs import check_output_folder
from ._location import Location, absolute_root
from ._provenance import detected_hardware, git_commit, package_versions
from ._log import BOOKKEEPING, EPOCHS_OF, POSITION, PREDICTIONS_OF, Log, read_results, tombstones, with_bookkeeping
from ._schema import (
    EPOCHS,
    PARAMS_SINCE,
    PREDICTIONS,
    SCHEMA_VERSION,
    STATUSES,
    TRIALS,
    TableSpec,
    build_table,
    concat,
    json_default,
    with_trial_id,
)

KINDS: tuple[str, ...] = ("search", "ablation")
EXPERIMENT_FILE = "experiment.json"


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
        self._log = Log(self.location)

    def __repr__(self) -> str:
        return f"ExperimentStore({str(self.root)!r}, kind={self.kind!r}, name={self.name!r})"

    @property
    def kind(self) -> str:
        return self.experiment["kind"]

    @property
    def name(self) -> str:
        return self.experiment["name"]

    @property
    def records_params(self) -> bool:
        """Whether this search's trials record their sampled parameters (``param.*`` columns).

        A folder created before schema version 2 keeps its version when resumed, and its new
        trials get no ``param.*`` columns either: every row of one experiment is read alike.
        """
        return self.experiment["schema_version"] >= PARAMS_SINCE

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
            "hardware": detected_hardware() | _json_roundtrip(hardware or {}, "hardware"),
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

    def _read(self, spec: TableSpec) -> pa.Table:
        table = read_results(self.location.root, spec)
        return spec.empty() if table is None else table

    def completed_trial_ids(self) -> set[str]:
        """Ids of the trials whose status is ``completed`` (what a resumed search skips)."""
        table = self.trials()
        done = table.filter(pc.equal(table["status"], "completed"))
        return set(done["trial_id"].to_pylist())

    def trial_epochs(self, trial_id: str) -> pa.Table:
        """One trial's rows of ``epochs.parquet`` by epoch (no rows for a trial without any)."""
        table = self.epochs()
        return table.filter(pc.equal(table["trial_id"], trial_id)).sort_by("epoch")

    # --- writing -----------------------------------------------------------------------

    def record_trial(
        self,
        row: Mapping[str, Any],
        epochs: Iterable[Mapping[str, Any]] = (),
        predictions: Iterable[Mapping[str, Any]] = (),
        replaces: Iterable[str] = (),
    ) -> None:
        """Record one trial's row, epochs and predictions, replacing any earlier record of it.

        ``row`` is flat: the fixed columns of ``trials.parquet``, config columns made by
        :func:`~tacfn.store.flatten_config`, and any other flat metric. ``epochs`` and ``predictions``
        rows get the trial's ``trial_id``. Recording a trial again (after a resume, or
        once ``running`` and again when finished) replaces its rows in all three tables,
        as it does those of the trials ``replaces`` names (earlier attempts of the same run).
        Bad values raise ValueError before anything is written. The record is appended to
        the log (:mod:`tacfn.store._log`): its cost does not grow with the experiment.
        """
        trial_id = row.get("trial_id")
        if not isinstance(trial_id, str) or not trial_id:
            raise ValueError(f"`trial_id` must be a non-empty string, but got {trial_id!r}")
        if row.get("status") not in STATUSES:
            raise ValueError(f"`status` must be one of {list(STATUSES)}, but got {row.get('status')!r}")
        # Check every row before writing anything.
        epochs_table = build_table(EPOCHS, with_trial_id(epochs, trial_id, "epochs"), "epochs")
        predictions_table = build_table(PREDICTIONS, with_trial_id(predictions, trial_id, "predictions"), "predictions")
        trial = build_table(TRIALS, [dict(row)], "row")
        gone = set(replaces) - {trial_id}

        def tables(record: int) -> dict[str, pa.Table]:
            rows = [with_bookkeeping(trial, TRIALS, record), tombstones(gone, record)]
            out = {"trials": concat(rows, TRIALS, self.location.child(TRIALS.file))}
            if epochs_table.num_rows:
                out["epochs"] = with_bookkeeping(epochs_table, EPOCHS, record)
            if predictions_table.num_rows:
                out["predictions"] = with_bookkeeping(predictions_table, PREDICTIONS, record)
            return out

        self._log.append(tables)

    def update_trials(self, updates: Mapping[str, Mapping[str, Any]]) -> None:
        """Set some columns of some recorded trials, in one record of their trials rows alone.

        ``updates`` maps a trial id to the columns to set, e.g. ``{"t3": {"pareto": True}}``;
        all of them are written at once. The trials' other columns, the other trials and
        their epochs and predictions are left as they are, and rows keep their order. A
        column new to the table is null in the other rows; values are typed as in
        :meth:`record_trial`, and an updated column keeps one type for old and new cells.
        A trial that is not recorded, a change of ``trial_id``, a bad ``status`` or value
        raises ValueError before anything is written.
        """
        if not updates:
            return
        current = self._recorded(list(updates), lambda unknown: f"`updates` must name recorded trials, but {unknown} are not in {TRIALS.file}")
        for trial_id, columns in updates.items():
            if "trial_id" in columns:
                raise ValueError(f"updates[{trial_id!r}]: a trial's `trial_id` cannot change")
            if "status" in columns and columns["status"] not in STATUSES:
                raise ValueError(
                    f"updates[{trial_id!r}]: `status` must be one of {list(STATUSES)}, but got {columns['status']!r}"
                )
        rows = [build_table(TRIALS, [{**_public_row(row), **updates[row["trial_id"]]}], f"updates[{row['trial_id']!r}]") for row in current]
        self._append_trials(rows, current)

    def record_predictions(self, trial_id: str, predictions: Iterable[Mapping[str, Any]]) -> None:
        """Replace a recorded trial's test predictions alone; no rows drops them.

        The rows are checked as in :meth:`record_trial`; a trial that is not recorded raises
        ValueError before anything is written.
        """
        current = self._recorded([trial_id], lambda unknown: f"`trial_id` must name a recorded trial, but {unknown[0]!r} is not in {TRIALS.file}")
        new = build_table(PREDICTIONS, with_trial_id(predictions, trial_id, "predictions"), "predictions")
        rows = [build_table(TRIALS, [_public_row(current[0])], "row")]
        self._append_trials(rows, current, with_predictions=new)

    def compact(self) -> bool:
        """Fold the record log into ``trials.parquet``, ``epochs.parquet`` and ``predictions.parquet``,
        as a finished search or plan does: then any Parquet reader reads them whole, with one row
        per trial. Returns whether there was anything to fold. Safe while another process
        records (what it appends meanwhile stays in the log), and after a crash at any step."""
        return self._log.compact()

    def _recorded(self, trial_ids: list[str], missing: Callable[[list[str]], str]) -> list[dict[str, Any]]:
        """The current trials rows (with bookkeeping) of ``trial_ids``; ValueError naming those not recorded."""
        table = self._log.read([TRIALS])[TRIALS.file]
        rows = {row["trial_id"]: row for row in table.filter(pc.is_in(table["trial_id"], pa.array(trial_ids, pa.string()))).to_pylist()}
        unknown = sorted(str(t) for t in trial_ids if t not in rows)
        if unknown:
            raise ValueError(missing(unknown))
        return [rows[t] for t in trial_ids]

    def _append_trials(self, rows: list[pa.Table], current: list[dict[str, Any]], with_predictions: pa.Table | None = None) -> None:
        """Record new versions of the trials ``current``: their rows ``rows``, pointing at the
        epochs and predictions they had (or at ``with_predictions``, then written too)."""
        kept = (EPOCHS_OF, POSITION) + (() if with_predictions is not None else (PREDICTIONS_OF,))

        def tables(record: int) -> dict[str, pa.Table]:
            marked = []
            for table, old in zip(rows, current):
                table = with_bookkeeping(table, TRIALS, record)
                for column in kept:
                    table = table.set_column(table.column_names.index(column), column, pa.array([old[column]], pa.int64()))
                marked.append(table)
            out = {"trials": concat(marked, TRIALS, self.location.child(TRIALS.file))}
            if with_predictions is not None and with_predictions.num_rows:
                out["predictions"] = with_bookkeeping(with_predictions, PREDICTIONS, record)
            return out

        self._log.append(tables)


def _public_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in BOOKKEEPING}


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


def _json_roundtrip(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``value`` as plain JSON types, as it will read back from ``experiment.json``."""
    try:
        return json.loads(json.dumps(dict(value), default=json_default, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`{what}` must be JSON-serialisable (finite numbers, no objects), but {exc}") from exc
