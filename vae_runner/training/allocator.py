"""Let CPU training reuse its freed buffers instead of returning them to the OS.

A training step frees and re-allocates the same few-hundred-KiB to MiB tensors every batch.
With glibc's defaults those above its mmap threshold come from fresh mmap()s, and freed memory at
the top of the heap goes back to the OS, so every step page-faults them in again. Raising both
thresholds once, at the start of CPU training, lets malloc keep and reuse them; the
cross-process A/B that keeps this module is in benchmarks/RESULTS.md.

A user's own MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or GLIBC_TUNABLES leave malloc alone,
and so do other platforms and C libraries.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's <malloc.h>
MMAP_THRESHOLD = 4 * 2**20 * ctypes.sizeof(ctypes.c_long)  # glibc's largest allowed (man mallopt)
TRIM_THRESHOLD = 256 * 2**20  # freed memory the heap may keep at its top
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def reuse_freed_blocks() -> bool:
    """Raise glibc's thresholds for the rest of the process; True when they were raised."""
    if not sys.platform.startswith("linux") or any(k in os.environ for k in USER_SETTINGS):
        return False
    libc = ctypes.CDLL(None)  # the process's own symbols: libc's, on Linux
    if not hasattr(libc, "mallopt"):  # musl
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    trim = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return bool(trim) and bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
