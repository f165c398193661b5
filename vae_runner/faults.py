"""Faults of the machine rather than of the code, said in one line without a traceback.

Imports no torch: the job's error path uses it before torch may have been imported.
"""

from __future__ import annotations

import re

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
