"""The search's Optuna study file: where it lives while the search runs.

The study is kept in an SQLite file, ``optuna.db`` in the experiment folder, so that
optuna-dashboard (or ``optuna.load_study``) can open it. SQLite needs a local file: a search
whose folder is a URI works on a staged copy and uploads it when it ends or stops.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..tasks import default_cache_dir
from ._store import Location

OPTUNA_FILE = "optuna.db"


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
