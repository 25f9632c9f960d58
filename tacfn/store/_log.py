"""The record log: recording a trial appends small Parquet files, whatever the experiment's size.

An experiment folder holds its tables twice over: ``trials.parquet``, ``epochs.parquet`` and
``predictions.parquet`` (the *base*, what any Parquet reader opens) and ``log/``, the records
made since the base was last compacted. Each record (:meth:`Log.append`) writes one file per
table it changes, named by its record number: ``log/000000000042-000000000042.epochs.parquet``,
then ``...predictions.parquet``, then ``...trials.parquet``. Cost and object writes per record
are constant: nothing already written is read or rewritten.

Rows carry bookkeeping columns. ``_record`` is the record that wrote the row. A trials row
also says which record's epochs and predictions are the trial's (``_epochs``,
``_predictions``: an update of a trial's columns keeps them), where the trial sorts
(``_position``: the record that last recorded it whole), and ``_deleted`` marks a trial a
later attempt replaced. Readers (:meth:`Log.read`) keep each trial's latest trials row and
the epoch and prediction rows it points at, so a re-recorded trial is never seen twice and a
record cut short before its trials file (the commit) is never seen at all: its other files
are orphans no row points at.

Files are merged as they accumulate, as in a log-structured merge tree: when :data:`FANOUT`
files of one size exist, they become one file covering their records (``log/a-b.*``), and the
merged records' superseded rows go. A file whose records another file covers is shadowed
(left over from a merge cut short) and ignored, then removed. So a reader opens at most
``FANOUT - 1`` files per size and table, and each row is rewritten about log(N)/log(FANOUT)
times. :meth:`Log.compact` folds the log into the base: the three Parquet files alone, as a
finished experiment leaves them. Each step writes its new files before it removes old ones,
and every file appears whole (:meth:`Location.write`), so a crash at any point loses at most
the record being written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import DataError
from ._location import Location
from ._schema import EPOCHS, PREDICTIONS, TRIALS, TableSpec, concat

LOG_DIR = "log"
FANOUT = 16  # files of one size merged into one; readers open < FANOUT per size and table

RECORD, EPOCHS_OF, PREDICTIONS_OF, POSITION, DELETED = "_record", "_epochs", "_predictions", "_position", "_deleted"
BOOKKEEPING = (RECORD, EPOCHS_OF, PREDICTIONS_OF, POSITION, DELETED)
_TABLES = {"trials": TRIALS, "epochs": EPOCHS, "predictions": PREDICTIONS}
_BY_FILE = {spec.file: spec for spec in _TABLES.values()}
_NAME = re.compile(r"^(\d{12})-(\d{12})\.(trials|epochs|predictions)\.parquet$")
_READ_TRIES = 5  # a merge may remove a listed file before it is read: list again


@dataclass(frozen=True, order=True)
class _Part:
    """One log file: records ``first`` to ``last`` of one table."""

    first: int
    last: int
    table: str

    @property
    def name(self) -> str:
        return f"{LOG_DIR}/{self.first:012d}-{self.last:012d}.{self.table}.parquet"

    @property
    def size(self) -> int:
        """log(records covered) in base FANOUT: 0 for one record, 1 for FANOUT, ..."""
        span, size = self.last - self.first + 1, 0
        while span >= FANOUT:
            span //= FANOUT
            size += 1
        return size


class Log:
    """The record log of the experiment folder ``location`` (see the module docstring).

    One process writes at a time; any number read while it does.
    """

    def __init__(self, location: Location) -> None:
        self.location = location
        self._made = False  # log/ created by this object

    # --- reading -------------------------------------------------------------------------------

    def read(self, tables: Sequence[TableSpec]) -> dict[str, pa.Table]:
        """The current rows of ``tables``: base and log merged, one row per trial, with the
        bookkeeping columns (the base alone, as written, when the log is empty). Epochs and
        predictions are read with the trials that point at them. A file that cannot be read
        raises DataError naming it."""
        for attempt in range(_READ_TRIES):
            parts = self._live(self._parts())
            try:
                return self._read(parts, tables)
            except DataError:
                if attempt == _READ_TRIES - 1 or all(self.location.exists(p.name) for p in parts):
                    raise  # not a merge's removal: the file is damaged
        raise AssertionError("unreachable")

    def _read(self, parts: list[_Part], tables: Sequence[TableSpec]) -> dict[str, pa.Table]:
        if not parts:  # a compacted experiment: the base alone, as written
            return {spec.file: self._base(spec) for spec in tables}
        trials = latest_rows(self._table(TRIALS, parts))
        out = {TRIALS.file: trials}
        for spec in tables:
            if spec is not TRIALS:
                column = EPOCHS_OF if spec is EPOCHS else PREDICTIONS_OF
                out[spec.file] = _pointed_at(self._table(spec, parts), trials, column)
        return out

    def _table(self, spec: TableSpec, parts: list[_Part]) -> pa.Table:
        """The base (as record 0) and every live log file of ``spec``, in record order."""
        pieces = [_as_record_zero(self._base(spec), spec)]
        pieces += [self._read_file(p.name) for p in parts if _TABLES[p.table] is spec]
        return concat(pieces, spec, self.location.child(spec.file))

    def _base(self, spec: TableSpec) -> pa.Table:
        return self._read_file(spec.file) if self.location.exists(spec.file) else spec.empty()

    def _read_file(self, name: str) -> pa.Table:
        table = self.location.read_table(name)
        spec = _BY_FILE[name] if name in _BY_FILE else _TABLES[name.rsplit(".", 2)[-2]]
        missing = [c for c in spec.required if c not in table.column_names]
        if missing:
            raise DataError(f"{self.location.child(name)}: not a tacfn results table (no {', '.join(missing)} columns)")
        return table

    def _parts(self) -> list[_Part]:
        parts = []
        for name in self.location.list(LOG_DIR):
            found = _NAME.match(name)
            if found:  # anything else (a temp file being written) is not a record
                parts.append(_Part(int(found[1]), int(found[2]), found[3]))
        return sorted(parts)

    @staticmethod
    def _live(parts: list[_Part]) -> list[_Part]:
        """``parts`` without those another file of the same table covers, in record order."""
        live = []
        for table in _TABLES:
            reach = 0  # the last record a file seen so far covers; wider files first at each start
            for part in sorted((p for p in parts if p.table == table), key=lambda p: (p.first, -p.last)):
                if part.last > reach:
                    live.append(part)
                    reach = part.last
        return sorted(live)

    def version(self) -> str:
        """Changes whenever a record is committed or the log compacted (for live views)."""
        committed = ",".join(p.name for p in self._parts() if p.table == "trials")
        return f"{self.location.stamp(TRIALS.file)}|{committed}"

    # --- writing -------------------------------------------------------------------------------

    def empty(self) -> bool:
        """Whether no record waits in the log (a compacted or new experiment)."""
        return not self._parts()

    def append(self, make: Callable[[int], dict[str, pa.Table]]) -> None:
        """Write one record: ``make(record number)`` gives its tables by name (``trials``, and
        ``epochs`` or ``predictions`` when it changes them), written epochs and predictions
        first and trials, the commit, last; then merge files that have piled up. One listing
        of the log and one write per table (on an object store: one LIST, at most three PUTs)."""
        if not self._made:
            self.location.makedirs(LOG_DIR)
            self._made = True
        parts = self._parts()
        record = max((p.last for p in parts), default=0) + 1
        tables = make(record)
        for table in ("epochs", "predictions", "trials"):
            if table in tables:
                self._write(_Part(record, record, table).name, tables[table])
                parts.append(_Part(record, record, table))
        self._merge(parts)

    def _write(self, name: str, table: pa.Table) -> None:
        self.location.write(name, lambda f: pq.write_table(table, f))

    def _merge(self, parts: list[_Part]) -> None:
        """Merge FANOUT trials files of one size (and the other tables' files in their range)
        into one, smallest first, until no size has FANOUT files; remove shadowed files.
        ``parts`` is the log as it stands."""
        while True:
            live = self._live(parts)
            for stale in set(parts) - set(live):
                self.location.delete(stale.name)
            by_size: dict[int, list[_Part]] = {}
            for part in live:
                if part.table == "trials":
                    by_size.setdefault(part.size, []).append(part)
            full = [group for _, group in sorted(by_size.items()) if len(group) >= FANOUT]
            if not full:
                return
            batch = full[0][:FANOUT]  # files of one size are consecutive records, oldest first
            self._merge_range(batch[0].first, batch[-1].last, live)
            parts = self._parts()

    def _merge_range(self, first: int, last: int, live: list[_Part]) -> None:
        inside = [p for p in live if first <= p.first and p.last <= last]
        read = {name: [self._read_file(p.name) for p in inside if p.table == name] for name in _TABLES}
        trials = concat(read["trials"], TRIALS, self.location.child(LOG_DIR))
        kept = _latest_versions(trials)  # the rows the merged records' later readers can reach
        merged = {"trials": kept}
        for name, column in (("epochs", EPOCHS_OF), ("predictions", PREDICTIONS_OF)):
            if read[name]:
                rows = concat(read[name], _TABLES[name], self.location.child(LOG_DIR))
                merged[name] = _pointed_at(rows, kept, column)
        for name in ("epochs", "predictions", "trials"):  # trials last, as in a record
            if name in merged:
                self._write(_Part(first, last, name).name, merged[name])
        for part in inside:
            self.location.delete(part.name)

    def compact(self) -> bool:
        """Fold the log into the base; False when the log is empty.

        The merged tables are written as the base, epochs and predictions first, trials (the
        base's commit) next; then the log files read are removed, trials files first, so
        every reader at every step sees one whole experiment. A record a writer appends
        meanwhile stays in the log, as it is not among the files read.
        """
        every = self._parts()
        if not every:
            return False
        tables = self._read(self._live(every), [TRIALS, EPOCHS, PREDICTIONS])
        for spec in (EPOCHS, PREDICTIONS, TRIALS):
            table = tables[spec.file]
            if spec is TRIALS:
                table = table.filter(pc.invert(table[DELETED])).sort_by(POSITION)
            self._write(spec.file, table.drop_columns([c for c in BOOKKEEPING if c in table.column_names]))
        for part in sorted(every, key=lambda p: p.table != "trials"):
            self.location.delete(part.name)
        return True


def read_results(root: str | Path, spec: TableSpec) -> pa.Table | None:
    """The table ``spec`` of the experiment folder ``root`` (a path or a URI) as a reader sees it:
    its file and the record log merged, one row per trial, without bookkeeping columns. None
    when the table is not there (no file, and nothing in the log). A file that cannot be read,
    or is not a results table, raises DataError naming it."""
    log = Log(Location(root))
    if not log.location.exists(spec.file) and log.empty():
        return None
    table = log.read([spec])[spec.file]
    return table.drop_columns([c for c in BOOKKEEPING if c in table.column_names])


def results_version(root: str | Path) -> str:
    """A token that changes whenever the folder ``root`` records a trial or is compacted."""
    return Log(Location(root)).version()


def latest_rows(trials: pa.Table) -> pa.Table:
    """Each trial's latest trials row, without deleted trials, in :data:`POSITION` order."""
    latest = _latest_versions(trials)
    return latest.filter(pc.invert(latest[DELETED])).sort_by(POSITION)


def with_bookkeeping(table: pa.Table, spec: TableSpec, record: int) -> pa.Table:
    """``table``, rows of one record of ``spec``, with their bookkeeping columns."""
    n = table.num_rows
    table = table.append_column(RECORD, pa.array([record] * n, pa.int64()))
    if spec is TRIALS:
        for name in (EPOCHS_OF, PREDICTIONS_OF, POSITION):
            table = table.append_column(name, pa.array([record] * n, pa.int64()))
        table = table.append_column(DELETED, pa.array([False] * n, pa.bool_()))
    return table


def tombstones(trial_ids: Iterable[str], record: int) -> pa.Table:
    """Trials rows that delete ``trial_ids`` as of record ``record``."""
    ids = sorted(set(trial_ids))
    rows = pa.table({"trial_id": pa.array(ids, pa.string()), "status": pa.array(["failed"] * len(ids), pa.string())})
    return _set(with_bookkeeping(rows, TRIALS, record), DELETED, pa.array([True] * len(ids), pa.bool_()))


def _latest_versions(trials: pa.Table) -> pa.Table:
    """The row of each trial with the highest record number (deleted ones included)."""
    if trials.num_rows == 0:
        return trials
    ordered = trials.take(pc.sort_indices(trials, [("trial_id", "ascending"), (RECORD, "ascending")]))
    ids = ordered["trial_id"].combine_chunks()
    last_of_trial = pc.not_equal(ids.slice(0, len(ids) - 1), ids.slice(1))
    return ordered.filter(pa.concat_arrays([last_of_trial, pa.array([True])]))


def _pointed_at(rows: pa.Table, trials: pa.Table, column: str) -> pa.Table:
    """The epoch or prediction ``rows`` that ``trials``' ``column`` points at, in their order."""
    keys = pa.table({"trial_id": trials["trial_id"], RECORD: trials[column]})
    numbered = rows.append_column("__row", pa.array(range(rows.num_rows), pa.int64()))
    kept = numbered.join(keys, keys=["trial_id", RECORD], join_type="left semi")
    return kept.sort_by("__row").drop_columns(["__row"])


def _as_record_zero(table: pa.Table, spec: TableSpec) -> pa.Table:
    """A base table as record 0, its trials in file order before any logged trial."""
    table = with_bookkeeping(table.drop_columns([c for c in BOOKKEEPING if c in table.column_names]), spec, 0)
    if spec is TRIALS:
        table = _set(table, POSITION, pa.array(range(-table.num_rows, 0), pa.int64()))
    return table


def _set(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, values)
