"""Exit codes of vae-train, documented in the README, and the per-process record of job outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class ExitCode(IntEnum):
    COMPLETED = 0
    FAILED = 1  # an unexpected error: a bug, a full disk, a crash in a job
    CONFIG = 2  # bad command line or config: nothing was trained
    DIVERGED = 3  # the loss or gradient became non-finite
    INTERRUPTED = 130  # SIGINT (Ctrl-C); 128 + 2, as shells report it
    TERMINATED = 143  # SIGTERM (SLURM, CI); 128 + 15


@dataclass
class Outcome:
    """What the jobs of this process ended with; read by cli.main after Hydra returns."""

    job_started: bool = False
    interrupted: bool = False  # a job was stopped by a signal: later jobs do not start
    codes: list[int] = field(default_factory=list)

    def exit_code(self) -> int:
        if not self.codes:
            return ExitCode.COMPLETED
        failed = [c for c in self.codes if c != ExitCode.COMPLETED]
        return max(failed) if failed else ExitCode.COMPLETED


outcome = Outcome()


# A job's exit code, read back from the status in its history.json. A sweep's jobs may run in other
# processes (joblib, submitit, SLURM), so the sweep's exit status is decided from these records.
STATUS_CODES = {
    "completed": ExitCode.COMPLETED,
    "diverged": ExitCode.DIVERGED,
    "interrupted": ExitCode.INTERRUPTED,
}


def status_exit_code(status: str | None) -> int:
    """The exit code of a job that recorded `status`; None (no record) or anything else: failed."""
    return int(STATUS_CODES.get(status or "", ExitCode.FAILED))


def sweep_exit_code(statuses: list[str | None]) -> int:
    """0 when every job completed, else the highest code among the jobs that did not."""
    codes = [status_exit_code(s) for s in statuses]
    failed = [c for c in codes if c != ExitCode.COMPLETED]
    return max(failed) if failed else int(ExitCode.COMPLETED)
