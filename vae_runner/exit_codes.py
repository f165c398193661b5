"""vae-train's exit codes, and the one function that maps a run's record to its code.

A sweep's jobs may run in other processes (joblib, submitit, SLURM), so a run's exit code is read
from its history.json record: the same rule for a single run, a sweep and `vae-summary`.
"""

from __future__ import annotations

import signal
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    COMPLETED = 0
    FAILED = 1  # an unexpected error: a bug, a full disk, a crash in a job
    CONFIG = 2  # bad command line or config: nothing was trained
    DIVERGED = 3  # the loss or gradient became non-finite
    INTERRUPTED = 130  # SIGINT (Ctrl-C); 128 + 2, as shells report it
    TERMINATED = 143  # SIGTERM (SLURM, CI); 128 + 15


def exit_code(history: dict[str, Any] | None) -> int:
    """The exit code of a run that left `history` (None: it left no record, so it failed)."""
    history = history or {}
    match history.get("status"):
        case "completed":
            return ExitCode.COMPLETED
        case "diverged":
            stop = (history.get("config") or {}).get("on_divergence") == "stop"
            return ExitCode.COMPLETED if stop else ExitCode.DIVERGED
        case "interrupted":
            # 128 + the signal's number, as shells report it: 130 SIGINT, 143 SIGTERM, ...
            signum = getattr(signal, str(history.get("interrupted_by")), signal.SIGINT)
            return 128 + int(signum)
        case "failed" if (history.get("error") or {}).get("kind") == "config":
            return ExitCode.CONFIG
    return ExitCode.FAILED  # failed, killed (`running` with its process gone), or no record


def sweep_exit_code(codes: list[int]) -> int:
    """0 when every job completed, else the highest code among the jobs that did not."""
    return max((c for c in codes if c != ExitCode.COMPLETED), default=int(ExitCode.COMPLETED))
