"""Graceful stop on SIGINT (Ctrl-C), SIGTERM (SLURM, CI) and SIGUSR2 (submitit, before a time
limit): finish nothing half-way.

The first signal only sets a flag that the run reads at each batch boundary (also during the
final evaluation); the run then keeps its last finished epoch (already checkpointed), records
`interrupted` and exits with 128 + the signal number. A second signal stops at once, except
inside a critical section (an epoch's checkpoint and history being written): there it waits for
the section's end, so that history.json never runs ahead of last.pt.

A sweep's jobs may run in other processes (joblib, submitit): the sweep's own process writes
its stop request into a file of the sweep directory (`STOP_FILE`), which every job polls.

A handler that was installed before (submitit's SIGUSR2 handler, which requeues the job) is
called once the run has recorded its stop: `StopRequest.chain()`.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
STOP_FILE = ".vae-train.stop"
POLL_SECONDS = 0.5  # how often a job looks for its sweep's stop file

# The first stop signal this process received (any run, or the sweep): later jobs do not start.
_process: dict[str, int | None] = {"signum": None}


def requested() -> int | None:
    """The signal that asked this process to stop, if one did."""
    return _process["signum"]


def _note(signum: int) -> None:
    if _process["signum"] is None:
        _process["signum"] = signum


def request_stop(signum: int) -> None:
    """Stop this process's runs as `signum` would, without a signal (from any thread): a joblib
    worker whose sweep process is gone (cli.orphan). Each run reads it at its next batch."""
    _note(signum)


class Interrupted(Exception):
    """Raised by the run at a batch boundary after a stop was requested."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopNow(BaseException):
    """The second signal: unwind at once (not an Exception, so nothing swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def read_stop_file(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        name = path.read_text().strip()
    except OSError:
        return None
    return getattr(signal, name, signal.SIGTERM)


class StopRequest:
    def __init__(self, stop_file: Path | None = None) -> None:
        self.signum: int | None = None
        self.urgent = False  # a second signal arrived inside a critical section
        self._depth = 0
        self._stop_file = stop_file
        self._next_poll = 0.0
        self._chained: dict[int, Callable] = {}

    def check(self) -> None:
        """At a batch boundary: raise Interrupted once a stop was requested."""
        if self.pending() is not None:
            raise Interrupted(self.signum)

    def pending(self) -> int | None:
        """The signal that asked this run to stop (or its sweep's stop file's), if one did."""
        if self.signum is None:
            self.signum = requested()  # a signal to this process, or request_stop()
        if self.signum is None and self._stop_file is not None:
            now = time.monotonic()
            if now >= self._next_poll:
                self._next_poll = now + POLL_SECONDS
                from_sweep = read_stop_file(self._stop_file)
                if from_sweep is not None:
                    self.signum = from_sweep
                    _note(from_sweep)
        return self.signum

    @contextmanager
    def critical(self) -> Iterator[None]:
        """Writes that must finish together: a second signal waits for the end of them."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0 and self.urgent:
            raise StopNow(self.signum or signal.SIGINT)

    def chain(self) -> None:
        """Hand the stop to the handler that was there before ours (submitit's requeue)."""
        handler = self._chained.get(self.signum) if self.signum is not None else None
        if handler is not None:
            handler(self.signum, None)

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            _note(signum)
            print(
                f"\n{name}: stopping after the current batch; the last finished epoch is kept "
                "(send it again to stop at once)",
                file=sys.stderr,
                flush=True,
            )
        elif self._depth:
            self.urgent = True
            print(f"\n{name}: stopping once this epoch's checkpoint is written", file=sys.stderr)
        else:
            raise StopNow(signum)


class SharedStop:
    """The stop request of a stack's training process (training/engine_process.py): a byte of
    memory it shares with the stack's process, which sets it to the signal that stops it."""

    def __init__(self, flag) -> None:
        self._flag = flag

    def check(self) -> None:
        """At a batch boundary, as StopRequest.check."""
        if self._flag[0]:
            raise Interrupted(self._flag[0])


@contextmanager
def graceful_stop(stop_file: Path | None = None) -> Iterator[StopRequest]:
    """Install the handlers for the duration of a run (only the main thread can)."""
    request = StopRequest(stop_file)
    if requested() is not None:
        request.signum = requested()  # a stop arrived before the run began
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.getsignal(s) for s in HANDLED}
    for s in HANDLED:
        signal.signal(s, request._handle)
    # A handler that was there before (submitit's for SIGUSR2, a sweep's) runs after the stop
    # is recorded; Python's default SIGINT handler and start-up's only raise KeyboardInterrupt.
    request._chained = {s: h for s, h in previous.items() if callable(h) and h not in STARTING}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def interrupt_once(signum, frame) -> None:
    """SIGINT while vae-train starts (cli.start), before a run or sweep installs its own: a
    stop request, never an exception. A KeyboardInterrupt raised wherever the signal lands
    cannot always be caught: inside torch's C++ import code it aborts the process (SIGABRT),
    inside a callback of the import system Python only prints it ("Exception ignored in ...")
    and start-up goes on. So start-up stops at its next safe point instead (after the imports,
    before the run's folder, before each job is checked or started), in one line; a second
    Ctrl-C changes nothing."""
    signal.signal(signal.SIGINT, _after_the_first)
    _note(signum)


def _after_the_first(signum, frame) -> None:
    """Nothing: the first SIGINT is already stopping vae-train (a Python handler rather than
    SIG_IGN, which a process started now would inherit)."""


def take_over_sigint() -> None:
    """`interrupt_once` in place of Python's default SIGINT handler (a process started with
    SIGINT ignored, in the background of a script, keeps ignoring it)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, interrupt_once)


# What a Ctrl-C while vae-train starts ends in (cli.start, and the checks' safe points).
INTERRUPTED_WHILE_STARTING = "interrupted while starting; nothing was run"


def interrupted_at_start() -> bool:
    """Whether a SIGINT reached `interrupt_once` in this process."""
    return signal.getsignal(signal.SIGINT) is _after_the_first


STARTING = (signal.default_int_handler, interrupt_once, _after_the_first)  # never chained


def exit_status(signum: int) -> int:
    """As shells report a process ended by `signum`."""
    return 128 + int(signum)


class SweepStopped(BaseException):
    """Raised by the first job a stopped sweep would start in the sweep's own process (the
    basic launcher): it ends the launcher's loop at once, so the jobs left are never composed,
    logged or started (1000 of them once took two minutes), and cli.train then writes the
    summary, which lists them as not started. A BaseException, so that Hydra's job runner,
    which records an Exception as a failed job and goes on, lets it through."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def install_sweep_stop(stop_file: Path) -> None:
    """In a sweep's own process: the first SIGINT or SIGTERM asks every job to stop at its next
    batch (in this process, or through `stop_file` in others); jobs not started do not start."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(signum, frame) -> None:
        first = requested() is None
        _note(signum)
        name = signal.Signals(signum).name
        # If it cannot be written, jobs in this process still stop; others run on.
        with contextlib.suppress(OSError):
            stop_file.write_text(signal.Signals(requested()).name + "\n")
        if first:
            print(
                f"\n{name}: stopping the sweep: running jobs stop after their current batch "
                "and keep their last finished epoch; jobs not started will not start",
                file=sys.stderr,
                flush=True,
            )

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, handle)
