"""Search and ablation drivers run as their own processes in tests, to be stopped midway."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tacfn.store import ExperimentStore


def wait_for_trials(driver: subprocess.Popen, out: Path, rows: int, timeout: float = 300) -> None:
    """Return once the experiment in ``out`` has recorded ``rows`` trials while ``driver`` runs."""
    deadline = time.time() + timeout
    while time.time() < deadline and driver.poll() is None:
        if (out / "trials.parquet").exists() and ExperimentStore.open(out).trials().num_rows >= rows:
            return
        time.sleep(0.5)
    raise AssertionError(f"{out} did not record {rows} trial(s) while its driver ran (exit status {driver.poll()})")
