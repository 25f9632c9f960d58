"""Where a result came from, as ``experiment.json`` records it: package versions, the git
commit, the machine."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import __version__

_VERSIONED_PACKAGES = ("torch", "ray", "optuna", "pyarrow")


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


def detected_hardware() -> dict[str, Any]:
    """The CPU count and platform of this machine; ``gpus`` is left for the caller (None)."""
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "gpus": None}
