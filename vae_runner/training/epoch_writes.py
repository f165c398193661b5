"""A stack's epoch files: each kept run's last.pt then history.json, for many runs at once.

A single run's are written in the thread that trains it. For a stack, the thread that calls
`write_epochs` makes one run's files after another (pickling a checkpoint holds the GIL: threads
would only take turns at it) while `pool`'s threads write those already made (their fsyncs wait
on the disk together). A stack's training process does this for its own members
(training/engine_process.py); a stack trained in threads, its main thread.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vae_runner.training.run_record import epoch_files, write_epoch_files

WRITERS = 4  # threads that write a stack's files after each epoch
IN_FLIGHT = 2 * WRITERS  # runs' files made and not yet written, at most


@dataclass
class EpochRun:
    """One run's kept epoch, as its record says it (RunRecord.epoch_history): what its files
    hold besides the member's state, which the engine adds."""

    member: int  # in the stack (Engines), or in its part (EngineProcess)
    run_dir: Path
    history: dict[str, Any]  # the record with the epoch
    text: str  # history.json's text
    kl_weight: float
    config: dict[str, Any]
    state: dict[str, Any] | None = None  # Engine.member_state, taken before any write starts


def writer_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(WRITERS, thread_name_prefix="epoch-writer")


def write_epochs(
    runs: list[EpochRun], pool: ThreadPoolExecutor | None
) -> list[BaseException | None]:
    """Write each run's files (its `state` taken already); per run, None or what failed. Returns
    once every write has ended; a run's failure never stops the others' writes. Without `pool`
    (a single run) each is written in this thread."""
    outcomes: list[BaseException | None] = [None] * len(runs)
    if pool is None:
        for i, run in enumerate(runs):
            try:
                write_epoch_files(run.run_dir, _files(run))
            except Exception as err:
                outcomes[i] = err
        return outcomes
    writes: list[tuple[int, Future]] = []
    try:
        for i, run in enumerate(runs):
            if len(writes) >= IN_FLIGHT:  # a large stack's bytes are not all held at once
                writes[-IN_FLIGHT][1].exception()
            try:
                files = _files(run)
            except Exception as err:
                outcomes[i] = err
                continue
            writes.append((i, pool.submit(write_epoch_files, run.run_dir, files)))
    finally:
        wait([write for _, write in writes])
    for i, write in writes:
        outcomes[i] = write.exception()
    return outcomes


def _files(run: EpochRun):
    """The run's files, made now; its state is in them (freed once they are written)."""
    files = epoch_files(run.history, run.text, run.state, run.kl_weight, run.config)
    run.state = None
    return files
