"""Output folders: a command writes only into a new folder or one of its own kind.

Each command leaves a file that says what its folder holds: an experiment its
``experiment.json`` (:mod:`tacfn.store`), a dataset its ``manifest.json``
(:mod:`tacfn.data.prepare`, :mod:`tacfn.data.iemocap`), a training run its ``config.json``,
``result.json`` and ``checkpoints`` (:mod:`tacfn.run_folder`), a paper-ready report its
``report.json`` (:mod:`dashboards.report`); RAVDESS media sit in ``Actor_NN`` folders. An
output path that names a folder of another kind, or a file, is refused before anything is
written: a mistyped ``--out`` must never mix new files into, or write over, results,
datasets or media.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from .errors import ConfigError
from .run_folder import RUN_MARKERS

REPORT_MARKER = "report.json"  # what `tacfn report` leaves in its folder: the files it wrote there
Kind = Literal["experiment", "dataset", "run", "report", "media"]

_DESCRIPTIONS: dict[Kind, str] = {
    "experiment": "an experiment",
    "dataset": "a dataset",
    "run": "a training run",
    "report": "a tacfn report",
    "media": "RAVDESS media",
}
_MARKERS: tuple[tuple[str, Kind], ...] = (
    ("experiment.json", "experiment"),
    ("manifest.json", "dataset"),
    *((name, "run") for name in RUN_MARKERS),
    (REPORT_MARKER, "report"),
)
_ACTOR_DIR = re.compile(r"Actor_\d\d")


def folder_kind(folder: Path) -> tuple[Kind, str] | None:
    """What ``folder`` holds and the file or folder that shows it; None for a missing, empty
    or other folder."""
    if not folder.is_dir():
        return None
    for name, kind in _MARKERS:
        if (folder / name).exists():
            return kind, name
    actors = sorted(p.name for p in folder.iterdir() if _ACTOR_DIR.fullmatch(p.name) and p.is_dir())
    return ("media", f"{actors[0]}/") if actors else None


def check_output_folder(folder: str | Path, option: str, own: Kind | None = None) -> None:
    """Refuse ``folder`` as the output ``option`` when it is a file or holds what another
    command wrote; a folder of the ``own`` kind (what this command writes) is left to the
    command's own checks (resume, refresh, or refuse)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder} exists and is not a folder; name a new folder")
    found = folder_kind(folder)
    if found is not None and found[0] != own:
        kind, marker = found
        wanted = f", not {_DESCRIPTIONS[own]}" if own else ""
        raise ConfigError(
            f"{option} {folder} holds {_DESCRIPTIONS[kind]} ({marker}){wanted}; "
            "nothing is written there: name a new folder"
        )
