"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The one implementation for the whole codebase. :func:`write_atomic` writes through a temp
file in the target's folder, flushes it to disk (``fsync``), renames it over the target
(``os.replace``) and syncs the folder, so that after a crash the target is the old file or
the new one, whole. A failed write leaves the old file in place and no temp file behind,
and raises what failed (``OSError``, or the writer's own error).

Writers that cannot hand over a callback (a stream kept open across calls, or several
files that appear together) write their own temp file and finish with :func:`commit`.

Temp files are named ``.NAME.PID.tmp``: one process writes one file at a time, while
processes writing the same file (workers filling one cache) keep apart.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["commit", "temp_path", "write_atomic", "write_bytes_atomic", "write_json_atomic"]


def temp_path(path: str | Path) -> Path:
    """Where :func:`write_atomic` stages ``path``: ``.NAME.PID.tmp`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Replace ``path`` with what ``write(file)`` writes to the binary file it is given.

    The folder must exist. On any failure the previous ``path`` is unchanged, the temp file
    is removed and the error propagates.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the write's own error is the one to report
            tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` with ``data``."""
    return write_atomic(path, lambda f: f.write(data))


def write_json_atomic(path: str | Path, data: Any, **dumps: Any) -> Path:
    """Replace ``path`` with ``data`` as UTF-8 JSON (``dumps`` go to :func:`json.dumps`).

    The text is made before the temp file opens: data that cannot be serialised raises
    and nothing is written.
    """
    return write_bytes_atomic(path, json.dumps(data, **dumps).encode("utf-8"))


def commit(tmp: str | Path, path: str | Path) -> None:
    """Move a finished temp file ``tmp`` over ``path``: sync ``tmp`` to disk, rename it
    (atomic when both are in one folder) and sync the folder. ``tmp`` is left for the
    caller to remove if this raises."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _replace(Path(tmp), Path(path))


def _replace(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable. Best effort: some platforms (Windows) and
    filesystems cannot open or sync a folder, and the rename has happened either way."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
