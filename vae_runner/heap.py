"""The cycle collector in a `vae-train` process: off while it imports, then told once that the
imported world is permanent.

Python's cycle collector walks every tracked object at each full collection. Importing torch
triggered four of them (0.19 s on this project's 2 cores), and once torch, Hydra and the data
are loaded, a few hundred thousand objects live until the process ends, walked again by every
later full collection and once more at interpreter exit. So the console script turns the
collector off first thing (imports make next to no garbage); the first freeze_long_lived(),
once torch is imported, collects what garbage there is, moves the objects alive then out of the
collector's reach (`gc.freeze()`) and turns it back on: later collections walk only what the
command makes since.

Only the console script turns this on (`enable()`): a process that imports vae-runner as a
library (the test suite) keeps the collector as it was.
"""

from __future__ import annotations

import gc

_state = {"enabled": False, "frozen": False}


def enable() -> None:
    """For this process: the collector off until freeze_long_lived(), which (and at_exit())
    then take effect."""
    _state["enabled"] = True
    gc.disable()


def freeze_long_lived() -> None:
    """Once per process, as soon as torch is imported (the checks, or else the start of
    training): collect what is garbage now, freeze the rest, and turn the collector back on.
    Later calls do nothing, so that a sweep's later jobs never freeze what an earlier job
    left."""
    if _state["enabled"] and not _state["frozen"]:
        _state["frozen"] = True
        gc.collect()
        gc.freeze()
        gc.enable()


def at_exit() -> None:
    """The command is over: the interpreter's last collection at exit would walk everything to
    free what the end of the process frees anyway."""
    if _state["enabled"]:
        gc.freeze()
