"""Faults of the machine rather than of the code, said in one line without a traceback.

Imports no torch: the job's error path uses it before torch may have been imported.
"""

from __future__ import annotations

import re
import sys

# torch's CPU allocator says "can't allocate memory: you tried to allocate N bytes" (a plain
# RuntimeError); CUDA's is torch.OutOfMemoryError, "CUDA out of memory. Tried to allocate ...".
_ALLOCATION = re.compile(r"allocate (\d+) bytes|Tried to allocate ([\d.]+ [KMGT]iB)")


def out_of_memory_line(err: BaseException) -> str | None:
    """One line for an allocation that failed, naming the settings that size it; None for
    anything else."""
    text = str(err)
    if not (
        isinstance(err, MemoryError)
        or type(err).__name__ == "OutOfMemoryError"
        or "can't allocate memory" in text
    ):
        return None
    found = _ALLOCATION.search(text)
    size = ""
    if found and found.group(1):
        size = f" ({int(found.group(1)) / 2**30:.1f} GiB in one piece)"
    elif found:
        size = f" ({found.group(2)} in one piece)"
    return (
        f"out of memory{size}: choose smaller model sizes (model.hidden_dim, model.latent_dim, "
        "model.channels) or a smaller batch_size"
    )


def worker_died_line(err: BaseException) -> str | None:
    """One line for a joblib worker process that died mid-job (SIGKILL, the out-of-memory
    killer); None for anything else. loky then ends the whole pool: the jobs of the other
    workers are killed too (docs/reliability.md, Known limits), each with its finished epochs
    checkpointed. Told by loky's exception type, which only a loaded joblib can raise."""
    loky = sys.modules.get("joblib.externals.loky.process_executor")
    if loky is None or not isinstance(err, loky.TerminatedWorkerError):
        return None
    return (
        "a joblib worker process died (killed, or out of memory): its job and those running "
        "beside it stopped; every finished epoch is kept; run the same command again to carry "
        "the sweep on"
    )
