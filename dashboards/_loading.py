"""Loading an experiment folder into Polars frames, and saying what state it is in.

Every table is read through :func:`tacfn.store.read_results` (one open handle, or one GET,
per file; the table and the record log of a running search merged), ``trials.parquet``
first: the writer saves a trial's epochs and predictions before its row, so every trial read
here has its curves on disk. A table
that cannot be read is reported in :attr:`Experiment.problems` and replaced by an empty
one, so the page still says what is wrong instead of failing; a table that is not there
is empty too, and :func:`table_gap` gives the views that need it the reason for either.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import polars as pl
import pyarrow as pa

from tacfn.errors import DataError
from tacfn.store import EPOCHS, EXPERIMENT_FILE, PREDICTIONS, TRIALS, ExperimentStore, Location, read_results, results_version

from ._common import Unavailable

if TYPE_CHECKING:
    from tacfn.store import TableSpec

FINISHED_BAD = ("failed", "diverged")


@dataclass(frozen=True)
class Experiment:
    """One experiment folder as Polars frames: what every view reads."""

    root: Path | str  # a local folder, or a URI such as s3://bucket/prefix
    name: str
    kind: str | None  # "search" or "ablation"; None when experiment.json is unreadable
    spec: dict[str, Any]
    created_at: str | None
    git_commit: str | None
    trials: pl.DataFrame
    epochs: pl.DataFrame
    predictions: pl.DataFrame
    problems: tuple[str, ...] = ()
    dataset: dict[str, Any] = field(default_factory=dict)  # experiment.json's record of the data (planted effects, ceilings)
    missing: tuple[str, ...] = ()  # tables not in the folder (file names): usual before the first trial
    unreadable: Mapping[str, str] = field(default_factory=dict)  # table file -> why it could not be read (in problems too)

    @property
    def metric(self) -> str:
        """The maximised validation metric the search ranked trials by."""
        search = self.spec.get("search")
        metric = search.get("metric") if isinstance(search, dict) else None
        return metric if isinstance(metric, str) and metric in self.trials.columns else "val_score"

    @property
    def objectives(self) -> list[str]:
        """Extra objectives a multi-objective search minimised (``num_parameters``, ``latency_ms``)."""
        search = self.spec.get("search")
        objectives = search.get("objectives") if isinstance(search, dict) else None
        if not isinstance(objectives, list):
            return []
        return [o for o in objectives if isinstance(o, str) and o in self.trials.columns]

    @property
    def completed(self) -> pl.DataFrame:
        """Completed trials that have a validation score."""
        return self.trials.filter((pl.col("status") == "completed") & pl.col(self.metric).is_not_null())

    @property
    def title(self) -> str:
        return f"{self.name} ({self.kind})" if self.kind else self.name


class Notice(NamedTuple):
    """A message for the top of an experiment's section: ``level`` is info, warning or error."""

    level: str
    text: str


def load_experiment(exp_dir: str | Path) -> Experiment:
    """Read an experiment folder (a path or a URI); raises DataError only when it is not an
    experiment folder at all."""
    location = Location(exp_dir)
    if not location.exists(EXPERIMENT_FILE):
        raise DataError(f"{location.root} is not a tacfn experiment folder (no {EXPERIMENT_FILE})")
    problems: list[str] = []
    missing: list[str] = []
    unreadable: dict[str, str] = {}
    try:
        experiment = ExperimentStore.open(location.root).experiment
    except DataError as exc:
        problems.append(f"{exc}; the views below use the tables only")
        experiment = {"name": location.name, "kind": None, "spec": {}}
    tables = {}
    for table in (TRIALS, EPOCHS, PREDICTIONS):  # trials first: see the module docstring
        read = _read(location, table)
        if read is None:
            missing.append(table.file)
        elif isinstance(read, str):
            unreadable[table.file] = read
            problems.append(read)
        tables[table.file] = read if isinstance(read, pl.DataFrame) else _frame(table.empty())
    return Experiment(
        root=location.root,
        name=experiment["name"],
        kind=experiment["kind"],
        spec=experiment["spec"],
        created_at=experiment.get("created_at"),
        git_commit=experiment.get("git_commit"),
        trials=tables[TRIALS.file],
        epochs=tables[EPOCHS.file],
        predictions=tables[PREDICTIONS.file],
        problems=tuple(problems),
        dataset=dataset if isinstance(dataset := experiment.get("dataset"), dict) else {},
        missing=tuple(missing),
        unreadable=unreadable,
    )


def load_whole_experiment(exp_dir: str | Path, consequence: str) -> Experiment:
    """:func:`load_experiment` for a command that writes from the experiment's trials: a
    DataError (one line ending in ``consequence``, e.g. "no dashboard written") also when its
    ``experiment.json`` is corrupt or of a newer schema, or its ``trials.parquet`` cannot be
    read, where a page would show the problem in place of the data."""
    ExperimentStore.open(exp_dir)  # not an experiment, corrupt, or a newer schema
    exp = load_experiment(exp_dir)
    unreadable = exp.unreadable
    if TRIALS.file in unreadable:
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise DataError(f"{unreadable[TRIALS.file]}{more}; {consequence}")
    return exp


def _read(location: Location, table: TableSpec) -> pl.DataFrame | str | None:
    """A table as a DataFrame, why it cannot be read, or None when it is not there."""
    try:
        read = read_results(location.root, table)
    except DataError as exc:
        return str(exc)
    return None if read is None else _frame(read)


def _frame(table: pa.Table) -> pl.DataFrame:
    """An Arrow table as a DataFrame (``pl.from_arrow`` types a table's result as a frame or a series)."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def table_gap(exp: Experiment, table: str) -> Unavailable | None:
    """Why the table ``table`` (a file name) gave no rows: it is missing or unreadable; None when it was read."""
    if table in exp.unreadable:
        return Unavailable(f"{table} could not be read ({exp.unreadable[table]})", "warning")
    if table in exp.missing:
        return Unavailable(f"{table} is missing ({Location(exp.root).child(table)})", "warning")
    return None


def planned_trials(exp: Experiment) -> int | None:
    """How many trials the spec asks for: ``search.trials`` (configurations, in a seed-aware
    search), or variants x seeds x folds."""
    spec = exp.spec
    if exp.kind == "search":
        planned = (spec.get("search") or {}).get("trials")
        return planned if isinstance(planned, int) else None
    if exp.kind == "ablation":
        variants = set(spec.get("variants") or {})
        if spec.get("baseline") is not None:
            variants.add(spec["baseline"])
        seeds, folds = spec.get("seeds") or [None], spec.get("folds") or [None]
        return len(variants) * len(seeds) * len(folds)
    return None


def _seed_aware(exp: Experiment) -> bool:
    from ._configurations import is_seed_aware  # it reads Experiment from here

    return is_seed_aware(exp)


def notices(exp: Experiment) -> list[Notice]:
    """What the reader must know before reading the views: unreadable files, progress, failures."""
    found = [Notice("error", problem) for problem in exp.problems]
    counts = dict(exp.trials.group_by("status").len().iter_rows())
    total, running = exp.trials.height, counts.get("running", 0)
    planned = planned_trials(exp)
    of_planned = f" of {planned} planned" if planned else ""
    if total == 0:  # nothing read: the problems above say why, or no trial has finished
        if not exp.problems:
            planned_note = f" (0 of {planned} planned)" if planned else ""
            text = f"No trials recorded yet{planned_note}: the experiment has started, no trial has finished."
            found.append(Notice("info", text))
    elif _seed_aware(exp):  # search.trials counts configurations, each of several replicate rows
        configurations = exp.trials["config_hash"].n_unique()
        if running or (planned and configurations < planned):
            found.append(
                Notice(
                    "info",
                    f"In progress: {configurations} configurations started{of_planned}, {running} replicates running. "
                    "The views show finished replicates only.",
                )
            )
    elif running or (planned and total < planned):
        found.append(
            Notice(
                "info",
                f"In progress: {total - running} trials finished{of_planned}, {running} running. "
                "The views show finished trials only.",
            )
        )
    bad = exp.trials.filter(pl.col("status").is_in(FINISHED_BAD))
    if bad.height:
        first = bad.filter(pl.col("error").is_not_null())["error"].head(1).to_list()
        reason = f"; first error: {first[0]}" if first else ""
        what = "trial failed or diverged and has" if bad.height == 1 else "trials failed or diverged and have"
        found.append(Notice("warning", f"{bad.height} {what} no score{reason}"))
    return found


def state_version(exp_dir: str | Path) -> str:
    """A token that changes whenever the experiment's files change (their modification times and sizes)."""
    return json.dumps([Location(exp_dir).stamp(EXPERIMENT_FILE), results_version(exp_dir)])
