"""Keep memory that a training step frees in the process, for the next step (glibc only).

A training step allocates and frees tensors of the same sizes every step: a batch of the
paper's cached video features is 12.8 MB, and attention and feed-forward activations are
hundreds of kB each. By default glibc serves large blocks with ``mmap`` (over 128 kB at
first, a threshold it raises as such blocks are freed) and gives free memory at the top
of its heap back to the operating system, so a step page-faults memory that the step
before freed: 3,300 to 4,800 minor faults per frozen epoch of the paper preset, about 130
with the thresholds raised. Raising them keeps those blocks in the process, as PyTorch's
CUDA caching allocator keeps device memory; the cost is that a process's resident memory
stays at its peak.
"""

from __future__ import annotations

import ctypes
import functools
import platform

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD_BYTES = 2**30


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks up to 32 MB for reuse; once per process.

    Returns whether the thresholds were set: False where the C library is not glibc
    (macOS, musl), whose allocators keep their own defaults.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
