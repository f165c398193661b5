"""A part of a stack trained in a process of its own, and the stack's handle on it.

On the CPU a stack is split into one part per free core (training/engines.py). In threads of
one process the parts took turns at the GIL: every call into torch is one (two parts of 6 digits
members: 89 ms an epoch in threads, 77 in processes), and each kept epoch's checkpoints were
pickled in one thread (torch.save's Python, about 1.5 ms a member) while the other cores waited.
In a forked process each part trains, and makes and writes its members' files, on its own core.

The records stay in the stack's process (training/runner.py). It says what each epoch's files
hold (epoch_writes.EpochRun); the part's process adds its members' state and writes them,
checkpoint then history, as a single run does, and answers what failed. A part decides nothing
by itself: signals are blocked in it, it stops at a batch boundary when the stack's process sets
the shared stop flag, and it dies with the stack's process (PR_SET_PDEATHSIG), so a SIGKILLed
sweep leaves no trainer behind.

Linux only, from the main thread, with one torch thread per part (the default on a machine of
1-2 cores, where parts pay most): a part then never enters an OpenMP parallel region, which GNU
OpenMP does not support after a fork in a process that used one; torch's own DataLoader workers
rely on the same. Elsewhere the parts train in threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import mmap
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import warnings
from multiprocessing import Pipe
from multiprocessing.connection import wait as wait_for
from typing import Any

import torch

from vae_runner.training.engine import Engine
from vae_runner.training.epoch_writes import EpochRun, write_epochs, writer_pool
from vae_runner.training.signals import Interrupted, SharedStop
from vae_runner.training.stacked_model import member_state_dict

PROGRESS_SECONDS = 0.1  # how often a part says how many batches it has trained
PICKLE = pickle.HIGHEST_PROTOCOL
POLL_SECONDS = 0.05  # how often the stack's process looks at its stop request while parts train
EXIT_SECONDS = 5.0  # how long a part may take to end once asked, before it is killed
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# What the stack's process handles (training/signals.py; submitit's requeue): a part ignores them
BLOCKED = {
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)  # all of them on Linux, where parts are processes
}


def available() -> bool:
    """Whether a stack's parts train in processes here (else in threads)."""
    return (
        sys.platform.startswith("linux")
        and threading.current_thread() is threading.main_thread()
        and torch.get_num_threads() == 1
    )


def _prctl():
    """libc's prctl, looked up before a fork (never in the part's process)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def stop_flag() -> mmap.mmap:
    """A byte shared with the parts forked after it: 0, or the signal that stops them."""
    return mmap.mmap(-1, 1)


class EngineProcess:
    """The stack's handle on one part (an Engine) trained in a forked process: made first,
    then `fork`ed, so that whoever holds the handle can always end the process (`close`)."""

    def __init__(self, members: int) -> None:
        self.members = members
        self.pid: int | None = None
        self.conn = None  # our end of the pipe, once forked
        self._ended = False  # reaped
        self._status: int | None = None  # its exit status, when known

    def fork(self, engine: Engine, flag: mmap.mmap, others: list[EngineProcess]) -> None:
        """Start the part's process, which trains `engine` from here on. `others`: the parts
        forked before it, whose ends of their pipes the new process closes."""
        ours, theirs = Pipe()
        parent, prctl = os.getpid(), _prctl()
        for stream in (sys.stdout, sys.stderr):  # or the part would write their buffers again
            with contextlib.suppress(OSError, ValueError, AttributeError):
                stream.flush()
        # Blocked across the fork: a signal then waits for this process's handlers (which run
        # as the mask is restored, once the handle knows its process), and the part keeps
        # them blocked (the stack's process decides: `flag`).
        unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: threads and fork
                pid = os.fork()
            if pid == 0:  # the part's process: it never returns from here
                code = 1
                try:
                    ours.close()
                    for other in others:
                        if other.conn is not None:
                            other.conn.close()
                    _become_part(parent, prctl)
                    _Part(engine, theirs, flag).serve()
                    code = 0
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(code)
            self.pid, self.conn = pid, ours
            theirs.close()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)  # the part never gets here

    def ask(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Ask the part to do `method`; `answer` (or gather) reads what it answers."""
        try:
            self.conn.send_bytes(pickle.dumps(("ask", method, args, kwargs), PICKLE))
        except OSError as err:
            raise self._gone() from err

    def answer(self) -> Any:
        """The answer to the last question (progress reports skipped)."""
        while True:
            kind, value = self.receive()
            if kind != "advance":
                return settled(kind, value)

    def receive(self) -> tuple[str, Any]:
        try:
            return pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError) as err:
            raise self._gone() from err

    def close(self) -> None:
        """Ask the part to end, and wait for it (killed if it does not end in EXIT_SECONDS, or
        if this wait is itself cut short: a second signal). Safe to call again."""
        if self.pid is None:
            return
        try:
            with contextlib.suppress(OSError):
                if not self.conn.closed:
                    self.conn.send_bytes(pickle.dumps(("exit", None, (), {})))
            self.conn.close()
            deadline = time.monotonic() + EXIT_SECONDS
            while not self._reap() and time.monotonic() < deadline:
                time.sleep(0.005)
        finally:
            if not self._ended:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self._reap(block=True)

    def _reap(self, block: bool = False) -> bool:
        """Whether the part has ended (reaped here, its exit status kept)."""
        if not self._ended:
            try:
                pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its status is not known
                pid, status = self.pid, None
            if pid:
                self._ended = True
                self._status = None if status is None else os.waitstatus_to_exitcode(status)
        return self._ended

    def _gone(self) -> RuntimeError:
        """What to say of a part whose pipe broke: its process has ended (or is ending: its
        exit status is waited for, a second at most)."""
        deadline = time.monotonic() + 1.0
        while not self._reap() and time.monotonic() < deadline:
            time.sleep(0.01)
        how = "" if self._status is None else f", exit status {self._status}"
        return RuntimeError(f"a training process of the stack (pid {self.pid}) ended{how}")


def gather(
    questions: list[tuple[EngineProcess, str, tuple, dict]],
    progress=None,
    stop=None,
    flag=None,
    settle: bool = True,
) -> list[Any]:
    """Ask each part its question (part, method, args, kwargs), then every answer, in order,
    once all have answered; a part that died answers the RuntimeError that says so, and the
    others are still waited for (they may be writing their runs' files). The first failure
    then rises, or with `settle` false each answer is returned as (kind, value). While they
    train: their batches advance `progress`, and a stop requested of this process (`stop`:
    training/signals.StopRequest) is passed on to them through `flag`."""
    pass_stop_on(stop, flag)  # a stop already requested: not a batch trained
    parts = [part for part, *_ in questions]
    answers: dict[int, tuple[str, Any]] = {}
    waiting = {}
    for part, method, args, kwargs in questions:
        try:
            part.ask(method, *args, **kwargs)
        except RuntimeError as gone:  # died since its last answer
            answers[id(part)] = ("error", gone)
        else:
            waiting[part.conn] = part
    while waiting:
        pass_stop_on(stop, flag)
        ready = wait_for(list(waiting), POLL_SECONDS if stop is not None else None)
        for conn in ready:
            part = waiting[conn]
            try:
                kind, value = part.receive()
            except RuntimeError as gone:  # the part died: its answer (the others still work)
                kind, value = "error", gone
            if kind == "advance":
                if progress is not None:
                    progress.advance(value)
                continue
            answers[id(part)] = (kind, value)
            del waiting[conn]
    if not settle:
        return [answers[id(part)] for part in parts]
    return [settled(*answers[id(part)]) for part in parts]


def pass_stop_on(stop, flag) -> None:
    """A stop requested of this process (`stop`: a training/signals.StopRequest) goes to the
    parts: each raises it at its next batch boundary."""
    if stop is not None and not flag[0] and stop.pending() is not None:
        flag[0] = stop.pending()


def settled(kind: str, value: Any) -> Any:
    """An answer's value, or what the part raised."""
    if kind == "ok":
        return value
    if kind == "interrupted":
        raise Interrupted(value)
    raise value


def to_bytes(obj: Any) -> bytes:
    """Tensors between processes as a checkpoint holds them (plain pickle would hand torch's
    storages over as shared memory, through file descriptors)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


def portable(err: BaseException) -> BaseException:
    """`err` as the stack's process can read it: itself, if it survives pickling (OSError and
    WriteError do: errno and message), else a RuntimeError that names it. The part's traceback
    goes with it as a note."""
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    try:
        copy = pickle.loads(pickle.dumps(err))
        same = type(copy) is type(err) and str(copy) == str(err)
    except Exception:
        same = False
    sent = err if same else RuntimeError(f"{type(err).__name__}: {err}")
    if hasattr(sent, "add_note"):  # Python 3.11+
        sent.add_note(f"in the stack's training process {os.getpid()}:\n{text}")
    return sent


# -- in the part's process ---------------------------------------------------------------------


def _become_part(parent: int, prctl) -> None:
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the stack's process ended before prctl took
        os._exit(1)


class _Progress:
    """Batches trained, said to the stack's process at most every PROGRESS_SECONDS."""

    def __init__(self, send) -> None:
        self._send = send
        self._count = 0
        self._next = time.monotonic() + PROGRESS_SECONDS

    def advance(self) -> None:
        self._count += 1
        now = time.monotonic()
        if now >= self._next:
            self._next = now + PROGRESS_SECONDS
            self.flush()

    def flush(self) -> None:
        if self._count:
            self._send(("advance", self._count))
            self._count = 0


class _Part:
    """What a part's process does when the stack's process asks (its methods, by name)."""

    QUESTIONS = frozenset(
        {
            "train_epoch",
            "evaluate",
            "lr",
            "set_lr",
            "step_scheduler",
            "member_state",
            "member_weights",
            "write_epochs",
        }
    )

    def __init__(self, engine: Engine, conn, flag: mmap.mmap) -> None:
        self.engine = engine
        self.conn = conn
        self.stop = SharedStop(flag)
        self.pool = None

    def send(self, message: tuple) -> None:
        self.conn.send_bytes(pickle.dumps(message, PICKLE))

    def serve(self) -> None:
        while True:
            try:
                kind, method, args, kwargs = pickle.loads(self.conn.recv_bytes())
            except EOFError:  # the stack's process is gone
                return
            if kind == "exit":
                return
            try:
                if method not in self.QUESTIONS:
                    raise ValueError(f"a stack's part has no {method!r}")
                answer: tuple[str, Any] = ("ok", getattr(self, method)(*args, **kwargs))
            except Interrupted as stopped:
                answer = ("interrupted", stopped.signum)
            except BaseException as err:
                answer = ("error", portable(err))
            try:
                self.send(answer)
            except OSError:  # the stack's process no longer listens: it ended, or ends us
                return

    def train_epoch(self, kl_weights: list[float], active: list[bool]):
        progress = _Progress(self.send)
        try:
            return self.engine.train_epoch(kl_weights, active, progress, self.stop)
        finally:
            progress.flush()

    def evaluate(self, active: list[bool], split: str):
        return self.engine.evaluate(active, split)

    def lr(self, member: int) -> float:
        return self.engine.lr(member)

    def set_lr(self, member: int, lr: float) -> None:
        self.engine.set_lr(member, lr)

    def step_scheduler(self, member: int, watched_loss: float) -> None:
        self.engine.step_scheduler(member, watched_loss)

    def member_state(self, member: int) -> bytes:
        return to_bytes(self.engine.member_state(member))

    def member_weights(self, member: int) -> bytes:
        return to_bytes(member_state_dict(self.engine.model, member))

    def write_epochs(self, runs: list[EpochRun]) -> list[BaseException | None]:
        """Each run's last.pt then history.json (training/epoch_writes.py), its state taken
        first for every run; per run, None or what failed."""
        for run in runs:
            run.state = self.engine.member_state(run.member)
        if self.pool is None:
            self.pool = writer_pool()
        outcomes = write_epochs(runs, self.pool)
        return [None if outcome is None else portable(outcome) for outcome in outcomes]
