"""Graceful stop on SIGINT (Ctrl-C) and SIGTERM (SLURM, CI): finish nothing half-way.

The first signal only sets a flag that the training loop reads at each batch boundary; the run
then keeps its last finished epoch (already checkpointed), records `interrupted` and exits with
128 + the signal number. A second signal stops at once.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Raised by the training loop at a batch boundary after a stop was requested."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopNow(BaseException):
    """The second signal: unwind at once (not an Exception, so nothing swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise StopNow(signum)
        self.signum = signum
        name = signal.Signals(signum).name
        print(
            f"\n{name}: stopping after the current batch; the last finished epoch is kept "
            "(send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )


@contextmanager
def graceful_stop():
    """Install the handlers for the duration of a run (only the main thread can)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.getsignal(s) for s in HANDLED}
    for s in HANDLED:
        signal.signal(s, request._handle)
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
