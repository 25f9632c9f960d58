"""Search and ablation drivers run as their own processes in tests, to be stopped midway."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tacfn.store import TRIALS, read_results


def wait_for_trials(driver: subprocess.Popen, out: Path, rows: int, timeout: float = 300) -> None:
    """Return once the experiment in ``out`` has recorded ``rows`` trials while ``driver`` runs."""
    deadline = time.time() + timeout
    while time.time() < deadline and driver.poll() is None:
        trials = read_results(out, TRIALS)  # the log a running search appends to, merged
        if trials is not None and trials.num_rows >= rows:
            return
        time.sleep(0.5)
    raise AssertionError(f"{out} did not record {rows} trial(s) while its driver ran (exit status {driver.poll()})")


def pausing_driver(argv: list[str], rows: int, paused: Path) -> list[str]:
    """The command line of a ``tacfn`` driver (``argv``: its arguments) that stops for good
    once it has recorded ``rows`` trials, and creates the file ``paused`` then.

    However fast its trials, such a driver killed after ``paused`` appears has recorded
    exactly ``rows`` trials and died just after the last: nothing more was recorded,
    though its trials may have run on.
    """
    code = f"""
import sys, time
from pathlib import Path

from tacfn.search import _recording

record = _recording.StoreCallback._record


def record_then_pause(self, trial, error):
    record(self, trial, error)
    if len(self.recorded) >= {rows}:
        Path({str(paused)!r}).touch()
        time.sleep(3600)


_recording.StoreCallback._record = record_then_pause
from tacfn.cli import main

sys.exit(main({list(argv)!r}))
"""
    return [sys.executable, "-c", code]


def wait_for_file(driver: subprocess.Popen, path: Path, timeout: float = 300) -> None:
    """Return once ``path`` exists, while ``driver`` runs."""
    deadline = time.time() + timeout
    while time.time() < deadline and driver.poll() is None:
        if path.exists():
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} did not appear while its driver ran (exit status {driver.poll()})")
