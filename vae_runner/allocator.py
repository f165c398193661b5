"""Let the CPU training loop reuse its freed buffers instead of returning them to the OS.

glibc's malloc serves blocks above its mmap threshold with fresh mmap()s and gives freed memory
at the top of the heap back to the OS beyond its trim threshold. A training step frees and
re-allocates the same few-hundred-KiB to MiB tensors (activations, gradients) every batch, so
with the defaults every step page-faults them in again: on this project's benchmark
(benchmarks/bench.py, Fashion-MNIST, 2 threads) that was 15-30% of a CPU epoch, and 40% of
the final importance-weighted estimate, which runs in its own block.

Inside `reused_freed_blocks()` both thresholds are raised, so malloc reuses the blocks. On
leaving, the trim threshold goes back to glibc's default and the freed memory is returned
(malloc_trim), so what comes after training (evaluation, plots) does not keep the loop's
buffers resident. The mmap threshold stays raised for the rest of the process: once set, glibc
never goes back to adjusting it itself, and a fixed 128 KiB would page-fault every later large
tensor. Nested or concurrent uses (runs in threads of one process) share one setting: the last
to leave restores it.

Set MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or GLIBC_TUNABLES yourself and malloc is
left alone.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from contextlib import contextmanager

from vae_runner.shared_change import SharedChange

# mallopt parameter numbers, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# glibc's largest allowed mmap threshold on 64-bit (man mallopt): above any batch tensor here
MMAP_THRESHOLD = 4 * 2**20 * ctypes.sizeof(ctypes.c_long)
TRAINING_TRIM_THRESHOLD = 256 * 2**20  # how much freed memory the heap may keep at its top
DEFAULT_TRIM_THRESHOLD = 128 * 2**10  # glibc's default

USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def _libc():
    """glibc's functions, or None (not Linux, another libc, or the user tuned malloc)."""
    if not sys.platform.startswith("linux") or any(k in os.environ for k in USER_SETTINGS):
        return None
    return _glibc()


@functools.cache
def _glibc():
    libc = ctypes.CDLL(None)  # the process's own symbols: libc's, on Linux
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):  # musl has neither
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def _raise_thresholds() -> bool:
    libc = _glibc()
    trim_set = bool(libc.mallopt(M_TRIM_THRESHOLD, TRAINING_TRIM_THRESHOLD))
    mmap_set = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return trim_set and mmap_set


def _restore_trimming() -> None:
    libc = _glibc()
    libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
    libc.malloc_trim(0)


_RAISED = SharedChange(_raise_thresholds, _restore_trimming)


@contextmanager
def reused_freed_blocks(device_type: str = "cpu"):
    """Raise glibc's thresholds for the block; yields whether they are raised.

    Only for the CPU: other devices' tensors do not come from malloc, so it does nothing there.
    """
    if device_type != "cpu" or _libc() is None:
        yield False
        return
    with _RAISED.block() as raised:
        yield raised
