"""How torch's CPU threads wait between pieces of work: asleep, not spinning.

torch's OpenMP runtime (GNU libgomp in the Linux wheels, LLVM's libomp on macOS) lets an idle
thread spin for a while before it sleeps, so the next parallel region starts at once. On a
machine that something else keeps busy, that spinning is what makes a run collapse: a thread
that spins holds a core the other program needs, and then waits on the thread that program
pushed aside. On this project's 2-core machine, while a second 2-thread torch training ran, the
spinning default took 7-88 s per 20000-image epoch, sleeping threads 2.7-3.7 s; alone, the
epoch costs about a quarter more with sleeping threads (benchmarks/RESULTS.md).

The runtime reads its settings once, when torch is imported: `vae-train` calls
`wait_passively()` first thing. Whoever chose a policy of their own keeps it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

# Any of these set by the user: their choice stands (OMP_WAIT_POLICY=ACTIVE brings back the
# spinning; the other two are libgomp's and LLVM/Intel OpenMP's own spin settings).
USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def wait_passively(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set OMP_WAIT_POLICY=PASSIVE unless the user set a policy or torch is already imported
    (its runtime has read its settings then). Returns whether it set it. Child processes (a
    parallel sweep's workers, submitit's jobs) inherit it."""
    if any(name in environ for name in USER_SETTINGS) or "torch" in sys.modules:
        return False
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True
