"""Let the CPU training loop reuse its freed buffers instead of returning them to the OS.

glibc's malloc serves blocks above its mmap threshold with fresh mmap()s and gives freed memory
at the top of the heap back to the OS beyond its trim threshold. A training step frees and
re-allocates the same few-hundred-KiB to MiB tensors (activations, gradients) every batch, so
with the defaults every step page-faults them in again: on this project's benchmark
(benchmarks/bench.py, Fashion-MNIST, 2 threads) that was 15-30% of a CPU epoch. Inside
`reused_freed_blocks()` both thresholds are raised so malloc reuses the blocks; on leaving,
glibc's default thresholds come back and the freed memory is returned (malloc_trim), so what
comes after training (evaluation, plots) does not keep the loop's buffers resident.

Set MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or GLIBC_TUNABLES yourself and malloc is
left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys
from contextlib import contextmanager

# mallopt parameter numbers, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

TRAINING = {M_MMAP_THRESHOLD: 64 * 2**20, M_TRIM_THRESHOLD: 256 * 2**20}
GLIBC_DEFAULTS = {M_MMAP_THRESHOLD: 128 * 2**10, M_TRIM_THRESHOLD: 128 * 2**10}

USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def _libc():
    """glibc's functions, or None (not Linux, another libc, or the user tuned malloc)."""
    if not sys.platform.startswith("linux") or any(k in os.environ for k in USER_SETTINGS):
        return None
    libc = ctypes.CDLL(None)  # the process's own symbols: libc's, on Linux
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):  # musl has neither
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def _set(libc, settings: dict[int, int]) -> bool:
    return all([libc.mallopt(param, value) for param, value in settings.items()])


@contextmanager
def reused_freed_blocks(enabled: bool = True):
    """Raise glibc's thresholds for the block; yields whether they were raised."""
    libc = _libc() if enabled else None
    raised = libc is not None and _set(libc, TRAINING)
    try:
        yield raised
    finally:
        if raised:
            _set(libc, GLIBC_DEFAULTS)
            libc.malloc_trim(0)
