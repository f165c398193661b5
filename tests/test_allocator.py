"""allocator.reuse_freed_blocks: what glibc's malloc does after it, and a user's own settings
win. Each probe runs in a fresh process (malloc settings are process-wide)."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

# mallinfo2(): hblks counts live mmapped blocks, fordblks the free bytes kept in the heap
PROBE = """
import ctypes
from vae_runner.training.allocator import reuse_freed_blocks

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 16 * 2**20

def mmapped():  # is a fresh 16 MiB block served by mmap?
    before = libc.mallinfo2().hblks
    block = libc.malloc(SIZE)
    answer = libc.mallinfo2().hblks > before
    libc.free(block)
    return answer

print("before", mmapped())
print("raised", reuse_freed_blocks())
print("inside", mmapped())
blocks = [libc.malloc(SIZE) for _ in range(4)]
for block in blocks:
    libc.free(block)
print("kept_inside", libc.mallinfo2().fordblks >= 4 * SIZE)
"""


def probe(env_extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    env.update(env_extra)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True
    )
    return dict(line.split() for line in done.stdout.splitlines())


glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or "libc" not in (ctypes.util.find_library("c") or ""),
    reason="glibc's malloc",
)


@glibc
def test_after_it_large_blocks_come_from_the_heap_and_stay_after_they_are_freed():
    seen = probe({})
    assert seen["before"] == "True"  # glibc's default: a 16 MiB block is its own mmap
    assert seen["raised"] == "True"
    assert seen["inside"] == "False"  # served from the heap, reused by the next step
    assert seen["kept_inside"] == "True"  # freed memory kept for reuse, not page-faulted again


@glibc
@pytest.mark.parametrize(
    "setting",
    [
        {"MALLOC_MMAP_THRESHOLD_": "131072"},
        {"MALLOC_TRIM_THRESHOLD_": "131072"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"},
    ],
)
def test_a_users_own_malloc_settings_are_left_alone(setting):
    seen = probe(setting)
    assert seen["raised"] == "False"
    assert seen["inside"] == seen["before"] == "True"
