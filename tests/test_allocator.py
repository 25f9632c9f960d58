"""keep_freed_memory: memory a step frees is reused by the next step, not faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)

# Allocate, fill and free a batch of the paper's cached video features (float32, 12.8 MB)
# twice; print the minor page faults of the second time.
_TWO_STEPS = """
import resource, sys, numpy as np
from tacfn.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
np.ones((16, 2, 7, 7, 2048), np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
np.ones((16, 2, 7, 7, 2048), np.float32)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _second_step_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _TWO_STEPS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_a_freed_batch_is_reused_instead_of_faulted_in_again():
    assert _second_step_faults("default") > 0  # glibc gave the first batch back to the OS
    assert _second_step_faults("keep") == 0
