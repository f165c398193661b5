"""How many CPU threads torch gets, and how they wait between pieces of work: asleep, not
spinning.

torch's OpenMP runtime (GNU libgomp in the Linux wheels, LLVM's libomp on macOS) lets an idle
thread spin for a while before it sleeps, so the next parallel region starts at once. On a
machine that something else keeps busy, that spinning is what makes a run collapse: a thread
that spins holds a core the other program needs, and then waits on the thread that program
pushed aside. On this project's 2-core machine, while a second 2-thread torch training ran, the
spinning default took 7-88 s per 20000-image epoch, sleeping threads 2.7-3.7 s
(benchmarks/RESULTS.md).

Sleeping has its own price: each parallel region wakes the other thread again, and on a
virtual machine a wake-up can cost more than the region's work. On a 2-core machine the second
thread buys little (the model's matrix products are small) and its waking or spinning is all
cost, so a run there gets one thread unless `device.threads` says otherwise: on two hosts of
the same 2-vCPU type, one thread was as fast as two sleeping ones on an idle machine on the
first and 1.34x faster on the second, and within 0-20% of them beside a second training.

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


def cpu_count() -> int:
    """The cores this process may run on (its affinity, as a SLURM or container limit sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


SMALL_MACHINE_CORES = 2  # up to this many cores a run gets one torch thread (see above)


def default_threads(cpus: int) -> int | None:
    """Torch threads for a run whose `device.threads` is unset: 1 on a machine of up to
    SMALL_MACHINE_CORES cores, else None (torch's default: every core; a parallel launcher's
    job keeps its share, set in cli/callbacks.py)."""
    return 1 if cpus <= SMALL_MACHINE_CORES else None
