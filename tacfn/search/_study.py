"""The search's Optuna study file: where it lives while the search runs, and how a resumed
search recovers when the file is damaged or gone.

The study is kept in an SQLite file, ``optuna.db`` in the experiment folder, so that
optuna-dashboard (or ``optuna.load_study``) can open it. SQLite needs a local file: a search
whose folder is a URI works on a staged copy and uploads it when it ends or stops.

The results store, not this file, is the record of a search. A resumed search whose file
is unreadable, truncated or missing gets the study rebuilt from ``trials.parquet``
(:func:`recover_study`) before Ray starts; a damaged file is renamed, never deleted.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import warnings
from collections.abc import Sequence
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna

from ..errors import DataError, brief
from ..store import CONFIG_PREFIX, PARAM_PREFIX, TRIALS, ExperimentStore, Location, read_results
from ..tasks import default_cache_dir
from ._racing import Race
from ._space_compile import SpaceInfo, optuna_distributions

OPTUNA_FILE = "optuna.db"
TUNE_TRIAL_ID = "tune_trial_id"  # a trial's user attribute: the Tune trial (the store's trial_id) it stands for
REBUILT = "rebuilt_from_store"  # the study's user attribute: when and why it was rebuilt from trials.parquet
SQLITE_SIDECARS = ("-journal", "-wal", "-shm")  # files SQLite keeps beside a database

_MAXIMIZE, _MINIMIZE = optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE
_STATES = {
    "completed": optuna.trial.TrialState.COMPLETE,
    "pruned": optuna.trial.TrialState.PRUNED,
    "diverged": optuna.trial.TrialState.FAIL,
    "failed": optuna.trial.TrialState.FAIL,
}


class StudyRebuiltWarning(UserWarning):
    """A resumed search rebuilt its Optuna study from the results store."""


def optuna_file(out: Path | str, resume: bool) -> Path:
    """Where the search's Optuna SQLite file lives while it runs: SQLite needs a local file.

    In a local ``out``, ``out/optuna.db``. For a URI, a staging copy under
    ``$TACFN_HOME/staging`` named by the URI (a resumed search's unpickled searcher finds it
    at the same path), fetched from ``out`` to resume on another machine, and copied back to
    ``out`` by :func:`upload_optuna_file` when the search ends or stops.
    """
    if isinstance(out, Path):
        return out / OPTUNA_FILE
    staged = default_cache_dir() / "staging" / hashlib.sha256(out.encode()).hexdigest()[:16] / OPTUNA_FILE
    staged.parent.mkdir(parents=True, exist_ok=True)
    location = Location(out)
    if not resume:
        staged.unlink(missing_ok=True)  # an earlier experiment's study at the same URI
    elif not staged.exists() and location.exists(OPTUNA_FILE):
        staged.write_bytes(location.read_bytes(OPTUNA_FILE))
    return staged


def upload_optuna_file(staged: Path, out: Path | str) -> None:
    """Copy a staged Optuna file to the URI ``out`` (a local ``out`` holds it already)."""
    if isinstance(out, str) and staged.exists():
        Location(out).write(OPTUNA_FILE, lambda f: f.write(staged.read_bytes()))


# --- recovery -------------------------------------------------------------------------------


def study_problem(path: Path, name: str) -> str | None:
    """What keeps the study ``name`` in the SQLite file ``path`` from being resumed, or None.

    Opening the file as SQLite does rolls back what a killed driver left half-written (a
    hot journal), as Optuna itself would; Optuna then reads it read-only, so a file that
    is not a study is never turned into one.
    """
    if not path.exists():
        return "is missing"
    if not path.is_file():
        return "is not a file"
    try:
        with closing(sqlite3.connect(path)) as db:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as err:
        return f"is not a readable SQLite database ({brief(err)})"
    if check != "ok":
        return f"is damaged (SQLite: {check})"
    if not {"studies", "trials"} <= tables:
        return "holds no Optuna study"
    storage = None
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{path.resolve().as_uri()}?mode=ro&uri=true")
        optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return f"holds no study named {name!r}"
    except Exception as err:  # noqa: BLE001 (whatever stops Optuna reading it, the search cannot go on from it)
        return f"cannot be read by Optuna ({brief(err)})"
    finally:
        if storage is not None:
            storage.engine.dispose()
    return None


def recover_study(
    path: Path, out: Path | str, name: str, info: SpaceInfo, metric: str, objectives: Sequence[str], race: Race | None = None
) -> None:
    """Make the Optuna file ``path`` of the search in ``out`` resumable, before Ray starts.

    A file that :func:`study_problem` finds wrong is replaced by the study rebuilt from the
    store's ``trials.parquet`` (see :func:`study_trials`): the damaged file (and any SQLite
    journal beside it) is renamed ``optuna.db.damaged-TIME``, and one warning says so. The
    resumed searcher then finds its trials in the new study by their Tune trial ids (see
    ``PrunableOptunaSearch.restore``). When the store cannot say what the study held (no
    ``trials.parquet``, or a trial the space cannot have sampled): DataError, and nothing
    is changed. A seed-aware search (``race``) gets one trial per configuration.
    """
    problem = study_problem(path, name)
    if problem is None:
        return
    location = Location(out)
    refused = f"--resume {out}: {OPTUNA_FILE} {problem}, and"
    if read_results(out, TRIALS) is None:  # neither trials.parquet nor a record in the log
        raise DataError(f"{refused} {TRIALS.file}, which it is rebuilt from, is missing too; nothing was changed")
    try:
        rows = ExperimentStore.open(out).trials().to_pylist()
        trials = study_trials(rows, info, [metric, *objectives]) if race is None else configuration_trials(rows, info, race)
    except DataError as err:
        raise DataError(f"{refused} it cannot be rebuilt from {TRIALS.file}: {err}; nothing was changed") from None
    fresh = path.with_name(f"{OPTUNA_FILE}.rebuilding")
    try:
        _write_study(fresh, name, trials, directions=[_MAXIMIZE, *[_MINIMIZE] * len(objectives)], reason=f"{OPTUNA_FILE} {problem}")
    except BaseException:
        for partial in _with_sidecars(fresh):
            partial.unlink(missing_ok=True)
        raise
    moved = _move_aside(path, location)
    fresh.rename(path)
    shown = location.child(OPTUNA_FILE) if isinstance(location.root, str) else path  # a URI's, not its staged copy
    kept = f"moved it to {moved} and " if moved else ""
    count = f"{len(trials)} trial{'' if len(trials) == 1 else 's'}"
    warnings.warn(f"{shown} {problem}; {kept}rebuilt the Optuna study from {TRIALS.file} ({count})", StudyRebuiltWarning, stacklevel=2)


def study_trials(rows: list[dict[str, Any]], info: SpaceInfo, metrics: list[str]) -> list[optuna.trial.FrozenTrial]:
    """The Optuna trials that the store's ``rows`` (trials.parquet) record, in the order they started.

    Each ended trial becomes one with the parameters the space sampled for it (its
    ``param.*`` columns; in a folder from before them, its ``config.*`` columns, for the
    axes active with them), its state (completed, pruned, or
    failed for a diverged or crashed trial), and when completed the values the searcher
    told (``metrics``: the search's metric at the kept epoch, then each objective), tagged
    with its Tune trial id. A row the space cannot have sampled raises DataError.
    """
    ended = sorted((row for row in rows if row.get("status") in _STATES), key=_start_order)
    return [_frozen_trial(row, info, metrics) for row in ended]


def configuration_trials(rows: list[dict[str, Any]], info: SpaceInfo, race: Race) -> list[optuna.trial.FrozenTrial]:
    """A seed-aware search's Optuna trials: one per configuration of the store's ``rows``, in
    the order their first replicates started, as the searcher told them (see
    ``SeedAwareOptunaSearch``): COMPLETE with the aggregate, PRUNED or FAIL, or RUNNING while
    its replicates were still racing; the aggregate so far as its intermediate value, and the
    first replicate's Tune trial id as its ``tune_trial_id``."""
    states = {"completed": optuna.trial.TrialState.COMPLETE, "failed": optuna.trial.TrialState.FAIL,
              "pruned": optuna.trial.TrialState.PRUNED, "raced_out": optuna.trial.TrialState.PRUNED, None: optuna.trial.TrialState.RUNNING}
    confs = race.configurations(sorted(rows, key=_start_order))
    distributions = optuna_distributions(info)
    trials = []
    for key, conf in confs.items():
        first = conf.replicates[min(conf.replicates)]
        params = _sampled_params(first, info)
        state, value = states[race.verdict(confs, key)], race.value(conf)
        trials.append(optuna.trial.create_trial(
            state=state,
            value=value if state == optuna.trial.TrialState.COMPLETE else None,
            params=params,
            distributions={k: distributions[k] for k in params},
            user_attrs={TUNE_TRIAL_ID: first["trial_id"]},
            intermediate_values={} if math.isnan(value) else {len(conf.replicates): value},
        ))
    return trials


def _start_order(row: dict[str, Any]) -> tuple:
    started = row.get("started_at")
    return started is None, started.timestamp() if started is not None else 0.0, row["trial_id"]


def _write_study(
    path: Path, name: str, trials: list[optuna.trial.FrozenTrial], directions: list[optuna.study.StudyDirection], reason: str
) -> None:
    """Write a new study ``name`` of ``trials`` to the SQLite file ``path``, marked as rebuilt."""
    for stale in _with_sidecars(path):
        stale.unlink(missing_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its "new study created" is not news here
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=directions)
        study.add_trials(trials)
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        study.set_user_attr(REBUILT, f"{stamp}: {reason}")
    finally:
        optuna.logging.set_verbosity(verbosity)
        storage.engine.dispose()


def _frozen_trial(row: dict[str, Any], info: SpaceInfo, metrics: list[str]) -> optuna.trial.FrozenTrial:
    params = _sampled_params(row, info)
    distributions = optuna_distributions(info)
    state = _STATES[row["status"]]
    values: list[float] | None = None
    if state == optuna.trial.TrialState.COMPLETE:
        told = [float(v) if v is not None else math.nan for v in (row.get(m) for m in metrics)]
        if any(math.isnan(v) for v in told):
            state = optuna.trial.TrialState.FAIL  # as Optuna records a trial told NaN
        else:
            values = told
    trial = optuna.trial.create_trial(
        state=state,
        values=values,
        params=params,
        distributions={key: distributions[key] for key in params},
        user_attrs={TUNE_TRIAL_ID: row["trial_id"]},
    )
    for attr, column in (("datetime_start", "started_at"), ("datetime_complete", "finished_at")):
        if row.get(column) is not None:  # Optuna keeps local times without a zone
            setattr(trial, attr, row[column].astimezone().replace(tzinfo=None))
    return trial


def _sampled_params(row: dict[str, Any], info: SpaceInfo) -> dict[str, Any]:
    """The values of the axes the space sampled for the trial ``row``: its ``param.*`` columns
    where it has them, else its config."""
    params: dict[str, Any] = {}
    for axis in info.axes:
        if not axis.active(params):
            continue
        column = PARAM_PREFIX + axis.key if PARAM_PREFIX + axis.key in row else CONFIG_PREFIX + axis.key
        value = row.get(column)
        if value is None:
            raise DataError(f"trial {row['trial_id']} records no {column}")
        if axis.kind == "choice":
            same = [c for c in axis.choices if type(c) is type(value) and c == value]
            equal = same or [c for c in axis.choices if c == value]
            if not equal:
                raise DataError(f"trial {row['trial_id']} has {axis.key}={value!r}, none of the space's {list(axis.choices)}")
            params[axis.key] = equal[0]
        elif not axis.low <= value <= axis.high:
            raise DataError(f"trial {row['trial_id']} has {axis.key}={value!r}, outside the space's [{axis.low}, {axis.high}]")
        else:
            params[axis.key] = int(value) if axis.kind == "int" else float(value)
    return params


def _with_sidecars(path: Path) -> list[Path]:
    return [path, *(path.with_name(path.name + suffix) for suffix in SQLITE_SIDECARS)]


def _move_aside(path: Path, location: Location) -> str | None:
    """Rename the damaged ``path`` and the SQLite files beside it (a journal would be replayed
    into the new file) to ``optuna.db.damaged-TIME...``; for a URI, also keep a copy of it
    there. Returns the new name of ``path``, None if it was not there."""
    present = [p for p in _with_sidecars(path) if p.exists() or p.is_symlink()]
    if not present:
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{OPTUNA_FILE}.damaged-{stamp}")
    n = 1
    while any(p.exists() for p in _with_sidecars(aside)):
        n += 1
        aside = path.with_name(f"{OPTUNA_FILE}.damaged-{stamp}-{n}")
    if isinstance(location.root, str) and path.is_file():  # the copy at the URI is overwritten when the search ends
        data = path.read_bytes()
        location.write(aside.name, lambda f: f.write(data))
    for source, target in zip(_with_sidecars(path), _with_sidecars(aside)):
        if source in present:
            source.rename(target)
    return aside.name if path in present else None
