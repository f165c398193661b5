"""A stack's parts in forked processes (training/engine_process.py): the same numbers as in
threads, a stop passed on at a batch boundary, a part's failure as its records' one line, and
no process left behind, whatever ended the stack."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from test_runner import quiet_console

from vae_runner.training import engine_process, signals
from vae_runner.training.checkpoint import CHECKPOINT_DIR, LAST, load_checkpoint
from vae_runner.training.runner import MemberRun, run_stack

from helpers import typed_config

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="a stack's parts train in processes on Linux"
)

TINY = ("data=digits", "eval.iw_samples=0", "pictures=false", "device.threads=1")


def _members(tmp_path: Path, *extra: str, n: int = 4) -> list[MemberRun]:
    cfgs = [
        typed_config(*TINY, *extra, f"lr={lr}", f"seed={s}")
        for s, lr in zip(range(n), (1e-2, 1e-3, 3e-3, 3e-4, 1e-4), strict=False)
    ]
    return [MemberRun(cfg, tmp_path / str(i)) for i, cfg in enumerate(cfgs)]


@pytest.fixture
def forks(monkeypatch) -> list[engine_process.EngineProcess]:
    """Every part forked, in order (and, from it, each one's pid)."""
    made: list[engine_process.EngineProcess] = []
    original = engine_process.EngineProcess.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(engine_process.EngineProcess, "__init__", recording)
    return made


def _gone(pid: int) -> bool:
    """The process has ended and was reaped by its parent (no zombie either)."""
    return not Path(f"/proc/{pid}").exists()


def _history(run_dir: Path) -> dict:
    return json.loads((run_dir / "history.json").read_text())


CURVES = ("train_loss", "test_loss", "test_kl", "grad_norm", "lr", "kl_by_dim", "active_units")


def test_a_stack_in_processes_trains_and_writes_what_it_does_in_threads(
    tmp_path, monkeypatch, forks
):
    """The same arithmetic on one torch thread each: equal curves and equal checkpoints."""
    monkeypatch.setattr("vae_runner.training.runner.parts_for", lambda *args: 2)
    in_processes = run_stack(_members(tmp_path / "p", "epochs=3"), quiet_console()[0])
    assert len(forks) == 2 and all(_gone(part.pid) for part in forks)
    monkeypatch.setattr(engine_process, "available", lambda: False)
    in_threads = run_stack(_members(tmp_path / "t", "epochs=3"), quiet_console()[0])
    assert len(forks) == 2  # no process this time
    for i, (p, t) in enumerate(zip(in_processes, in_threads, strict=True)):
        assert p["status"] == t["status"] == "completed" and p["epoch"] == [1, 2, 3]
        for curve in CURVES:
            assert p[curve] == t[curve], (i, curve)
        assert p["final"]["test_loss"] == t["final"]["test_loss"]
        ours = load_checkpoint(tmp_path / "p" / str(i) / CHECKPOINT_DIR / LAST)
        theirs = load_checkpoint(tmp_path / "t" / str(i) / CHECKPOINT_DIR / LAST)
        assert ours["epoch"] == theirs["epoch"] == 3
        for key, value in ours["model"].items():
            assert torch.equal(value, theirs["model"][key]), key
        for n, state in ours["optimizer"]["state"].items():
            assert torch.equal(state["exp_avg_sq"], theirs["optimizer"]["state"][n]["exp_avg_sq"])
        assert ours["scheduler"] == theirs["scheduler"]
        assert torch.equal(ours["rng"]["shuffle"], theirs["rng"]["shuffle"])
        assert ours["history"]["test_loss"] == p["test_loss"]


def test_the_progress_bar_counts_every_parts_batches(tmp_path, monkeypatch, forks):
    """Each part says its batches (at most every PROGRESS_SECONDS, the rest at its epoch's
    end): an epoch advances the stack's bar by exactly Engines.batches."""
    from vae_runner.report import console
    from vae_runner.training import runner

    monkeypatch.setattr(runner, "parts_for", lambda *args: 2)
    monkeypatch.setattr(engine_process, "PROGRESS_SECONDS", 0.0)  # a report per batch
    advanced: list[int] = []
    totals: list[int] = []
    real_init = console.BatchProgress.__init__

    def recording_init(self, console_, total_batches):
        totals.append(total_batches)
        real_init(self, console_, total_batches)

    monkeypatch.setattr(console.BatchProgress, "__init__", recording_init)
    monkeypatch.setattr(console.BatchProgress, "advance", lambda self, n=1: advanced.append(n))
    results = run_stack(_members(tmp_path, "epochs=2", n=3), quiet_console()[0])
    assert all(r["status"] == "completed" for r in results)
    assert len(forks) == 2 and totals and sum(advanced) == 2 * totals[0]  # two epochs
    assert len(advanced) == sum(advanced)  # one report per batch


class StopMidEpoch:
    """A part's stop request that, at the 3rd batch boundary of its epoch, writes the sweep's
    stop file (as `kill -TERM <sweep>` does) and then waits there until the stack's process has
    passed the stop on (the part then raises it), at most a minute."""

    def __init__(self, stop, stop_file: Path) -> None:
        self.stop, self.stop_file, self.batches = stop, stop_file, 0

    def check(self) -> None:
        self.batches += 1
        if self.batches == 3:
            self.stop_file.write_text("SIGTERM\n")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                self.stop.check()
                time.sleep(0.01)
            raise AssertionError("the stop never reached the part")
        self.stop.check()


def test_a_stop_reaches_a_part_inside_its_epoch_and_leaves_each_run_resumable(
    tmp_path, monkeypatch, forks
):
    """The sweep's stop file appears while part 0 is at the 3rd batch of epoch 3: the stop
    reaches it there (it waits for nothing else), epoch 3 is kept for nobody, every member
    records `interrupted` at epoch 2 with last.pt and history.json at it, and both parts end."""
    from vae_runner.training import engine, runner

    monkeypatch.setattr(runner, "parts_for", lambda *args: 2)
    monkeypatch.setitem(signals._process, "signum", None)  # this process's stop, put back
    stop_file = tmp_path / signals.STOP_FILE
    parent, epochs = os.getpid(), []
    real = engine.Engine.train_epoch

    def stopped_in_epoch_3_of_part_0(self, kl_weights, active, progress=None, stop=None):
        if os.getpid() != parent and self.cfgs[0].seed == 0:  # in part 0's process
            epochs.append(len(epochs) + 1)
            if epochs[-1] == 3:
                stop = StopMidEpoch(stop, stop_file)
        return real(self, kl_weights, active, progress, stop)

    monkeypatch.setattr(engine.Engine, "train_epoch", stopped_in_epoch_3_of_part_0)
    results = run_stack(_members(tmp_path, "epochs=40"), quiet_console()[0], stop_file=stop_file)
    for i, result in enumerate(results):
        assert result["status"] == "interrupted" and result["interrupted_by"] == "SIGTERM"
        assert result["epoch"] == [1, 2]
        on_disk = _history(tmp_path / str(i))
        last = load_checkpoint(tmp_path / str(i) / CHECKPOINT_DIR / LAST)
        assert on_disk["status"] == "interrupted" and on_disk["epoch"] == [1, 2]
        assert last["epoch"] == 2
    assert len(forks) == 2 and all(_gone(part.pid) for part in forks)


class Unpicklable(Exception):
    def __init__(self, what: str, code: int) -> None:  # pickling passes one argument: fails
        super().__init__(f"{what} ({code})")


@pytest.mark.parametrize(
    "error, line",
    [
        (ValueError("a bad batch"), "ValueError: a bad batch"),
        (Unpicklable("odd", 7), "RuntimeError: Unpicklable: odd (7)"),
    ],
)
def test_a_failure_in_a_part_is_every_records_one_line(tmp_path, monkeypatch, forks, error, line):
    """What a part raises (as itself when it can cross to the stack's process, else as a
    RuntimeError naming it, with the part's traceback as a note) fails the stack: every record
    says it, and no process is left."""
    from vae_runner.training import engine, runner

    monkeypatch.setattr(runner, "parts_for", lambda *args: 2)
    real = engine.Engine.train_epoch

    def fails_in_epoch_2_of_part_1(self, kl_weights, active, progress=None, stop=None):
        if os.getpid() != parent and self.cfgs[0].seed == 2:  # in part 1's process
            calls.append(epoch := len(calls) + 1)
            if epoch == 2:
                raise error
        return real(self, kl_weights, active, progress, stop)

    parent, calls = os.getpid(), []
    monkeypatch.setattr(engine.Engine, "train_epoch", fails_in_epoch_2_of_part_1)
    results = run_stack(_members(tmp_path, "epochs=4"), quiet_console()[0])
    for i, result in enumerate(results):
        assert isinstance(result, BaseException)
        record = _history(tmp_path / str(i))
        assert record["status"] == "failed" and record["error"]["message"] == line
        assert record["epoch"] == [1]
    notes = getattr(results[0], "__notes__", [])
    assert sys.version_info < (3, 11) or "in the stack's training process" in notes[0]
    assert all(_gone(part.pid) for part in forks)


def test_a_part_that_dies_fails_the_stack_in_one_line(tmp_path, monkeypatch, forks):
    from vae_runner.training import engine, runner

    monkeypatch.setattr(runner, "parts_for", lambda *args: 2)
    parent = os.getpid()
    real = engine.Engine.evaluate

    def dies_in_part_1(self, active, split="test"):
        if os.getpid() != parent and self.cfgs[0].seed == 2:
            os._exit(3)
        return real(self, active, split)

    monkeypatch.setattr(engine.Engine, "evaluate", dies_in_part_1)
    with pytest.raises(RuntimeError, match=r"a training process of the stack \(pid \d+\) ended"):
        run_stack(_members(tmp_path, "epochs=2"), quiet_console()[0])
    assert all(_gone(part.pid) for part in forks)


def test_a_part_that_dies_while_writing_leaves_no_record_running(tmp_path, monkeypatch, forks):
    """Part 1 dies as it is asked to write epoch 2's files; part 0 writes its members' whole.
    The stack fails once part 0 has answered (not before: its writes would race the failed
    records), every record says `failed` with the line naming the dead process, and no
    history.json is ahead of its last.pt."""
    from vae_runner.training import runner

    monkeypatch.setattr(runner, "parts_for", lambda *args: 2)
    real = engine_process._Part.write_epochs

    def dies_at_epoch_2_in_part_1(self, runs):
        if self.engine.cfgs[0].seed == 2 and runs[0].history["epoch"][-1] == 2:
            os._exit(3)
        return real(self, runs)

    monkeypatch.setattr(engine_process._Part, "write_epochs", dies_at_epoch_2_in_part_1)
    results = run_stack(_members(tmp_path, "epochs=3"), quiet_console()[0])
    for i, result in enumerate(results):
        assert isinstance(result, RuntimeError)
        record = _history(tmp_path / str(i))
        assert record["status"] == "failed"
        assert record["error"]["message"].startswith("RuntimeError: a training process of the")
        assert "exit status 3" in record["error"]["message"]
        saved = load_checkpoint(tmp_path / str(i) / CHECKPOINT_DIR / LAST)["epoch"]
        assert record["epoch"] == list(range(1, saved + 1))  # at its last.pt: part 0's at 2
        assert saved == (2 if i < 2 else 1)
    assert all(_gone(part.pid) for part in forks)


def test_an_exception_crosses_as_itself_or_as_a_runtime_error_naming_it():
    from vae_runner.files import WriteError

    full = engine_process.portable(WriteError(28, "cannot write x/last.pt: No space left"))
    copy = pickle.loads(pickle.dumps(full))
    assert type(copy) is WriteError and copy.errno == 28 and "x/last.pt" in copy.strerror
    odd = engine_process.portable(Unpicklable("odd", 7))
    assert type(odd) is RuntimeError and str(odd) == "Unpicklable: odd (7)"


@pytest.mark.e2e
def test_a_sigkilled_stack_process_leaves_no_part_behind(tmp_path):
    """The parts die with the stack's process (PR_SET_PDEATHSIG): nothing trains on, and
    nothing writes into the runs, once `kill -9` has ended it, even a part that would not
    notice its pipe is gone (here asleep inside epoch 2)."""
    script = tmp_path / "stack.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from vae_runner.training import runner
            from vae_runner.training.runner import MemberRun, run_stack
            from helpers import typed_config
            import time
            from vae_runner.training import engine
            real = engine.Engine.train_epoch
            def asleep_in_epoch_2(self, *args, **kwargs):
                if getattr(self, "trained", False):
                    time.sleep(3600)  # sends nothing, reads nothing: only a signal ends it
                self.trained = True
                return real(self, *args, **kwargs)
            engine.Engine.train_epoch = asleep_in_epoch_2
            runner.parts_for = lambda *args: 2
            cfgs = [typed_config(*{TINY!r}, "epochs=3", f"seed={{s}}") for s in range(4)]
            run_stack([MemberRun(c, {str(tmp_path)!r} + f"/{{i}}") for i, c in enumerate(cfgs)])
            """
        )
    )
    stack = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    children: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "0" / CHECKPOINT_DIR / LAST).exists():  # epoch 1 is written
            assert stack.poll() is None, stack.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        children = Path(f"/proc/{stack.pid}/task/{stack.pid}/children").read_text().split()
        assert len(children) == 2
        os.kill(stack.pid, signal.SIGKILL)
        stack.wait()
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in children):
            status = [Path(f"/proc/{pid}/stat").read_text().split()[2] for pid in children]
            if all(s == "Z" for s in status):  # dead, waiting for init to reap them
                break
            assert time.monotonic() < deadline, f"parts still alive: {children} {status}"
            time.sleep(0.05)
    finally:
        if stack.poll() is None:
            stack.kill()
            stack.wait()
        for pid in children:  # what a failure of this test would leave asleep
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def test_closing_a_stack_whose_parts_still_train_stops_them_at_their_next_batch(
    tmp_path, monkeypatch, forks
):
    """A stack that ends while its parts train (a failure, a second Ctrl-C) sets their stop
    flag before it asks them to end: each leaves its epoch at the next batch boundary and exits
    of itself (status 0), instead of being killed after EXIT_SECONDS. Before that, a member's
    state comes from the part that trains it."""
    from vae_runner.data.images import load_data
    from vae_runner.training import engine
    from vae_runner.training.engine import build_engine
    from vae_runner.training.engines import Engines, split

    real, parent = engine.Engine.train_epoch, os.getpid()

    def endless_after_the_first(self, kl_weights, active, progress=None, stop=None):
        if os.getpid() == parent or not hasattr(self, "trained"):
            self.trained = True
            return real(self, kl_weights, active, progress, stop)
        while True:  # an epoch that only a stop ends
            stop.check()
            time.sleep(0.01)

    monkeypatch.setattr(engine.Engine, "train_epoch", endless_after_the_first)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a stack's parts train (engine_process.available)
    try:
        cfgs = [member.cfg for member in _members(tmp_path)]
        data = load_data(cfgs[0].data, cfgs[0].likelihood)

        def stack() -> Engines:
            return Engines([build_engine(p, data, torch.device("cpu")) for p in split(cfgs, 2)])

        here = stack()  # never started: trained here, one engine after the other
        here.train_epoch([1.0] * 4, [True] * 4)
        engines = stack()
        engines.start()
        try:
            assert engines.in_processes and len(forks) == 2
            engines.train_epoch([1.0] * 4, [True] * 4)
            state, want = engines.member_state(3), here.member_state(3)  # part 1's second
            for key, value in want["model"].items():
                assert torch.equal(state["model"][key], value), key
                assert not torch.equal(value, engines.engines[1].member_state(1)["model"][key])
            assert torch.equal(state["rng"]["shuffle"], want["rng"]["shuffle"])
            for part in forks:
                part.ask("train_epoch", [1.0, 1.0], [True, True])
        finally:
            engines.close()
    finally:
        torch.set_num_threads(threads)
    assert [part._status for part in forks] == [0, 0]
    with pytest.raises(RuntimeError, match="a training process of the stack"):
        engines.lr(0)  # ended: nothing is answered from the stale copy here


@pytest.fixture
def one_thread():
    """torch's thread count as vae-train sets it on 2 cores (put back afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _engines(tmp_path: Path):
    """The engines of a 4-member digits stack in 2 parts, not started."""
    from vae_runner.data.images import load_data
    from vae_runner.training.engine import build_engine
    from vae_runner.training.engines import Engines, split

    cfgs = [member.cfg for member in _members(tmp_path)]
    data = load_data(cfgs[0].data, cfgs[0].likelihood)
    return Engines([build_engine(part, data, torch.device("cpu")) for part in split(cfgs, 2)])


def test_parts_train_in_threads_where_torch_has_more_than_one_thread(tmp_path, forks):
    """GNU OpenMP does not support a parallel region after a fork: a part forks only with one
    torch thread, so that it never enters one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        engines = _engines(tmp_path)
        engines.start()
        assert not engines.in_processes and engines._pool is not None and forks == []
        engines.close()
    finally:
        torch.set_num_threads(threads)


def test_signals_are_blocked_in_a_part_and_left_as_they_were_here(tmp_path, one_thread, forks):
    """A part never runs the stack's handlers (the stack's process decides, and passes its stop
    on): what the stack's process handles is blocked in it from its first instruction (blocked
    across the fork), and this process's mask is as it was."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    engines = _engines(tmp_path)
    engines.start()
    try:
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
        for part in forks:
            status = Path(f"/proc/{part.pid}/status").read_text()
            blocked = int(
                next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1],
                16,
            )
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
                assert blocked & (1 << (signum - 1)), signal.Signals(signum).name
    finally:
        engines.close()


def test_a_members_failure_in_a_part_rises_where_it_happens(tmp_path, one_thread, monkeypatch):
    """As in threads: a part's failure to set a member's lr rises from set_lr itself, and the
    part still answers what it is asked next."""
    real = engine_process._Part.set_lr

    def refused_above_1(self, member, lr):
        if lr > 1:
            raise ValueError(f"lr {lr} refused")
        real(self, member, lr)

    monkeypatch.setattr(engine_process._Part, "set_lr", refused_above_1)
    engines = _engines(tmp_path)
    engines.start()
    try:
        assert engines.in_processes
        with pytest.raises(ValueError, match="lr 5 refused"):
            engines.set_lr(3, 5)
        engines.set_lr(3, 0.5)
        assert engines.lr(3) == 0.5 and engines.lr(2) == 3e-3
    finally:
        engines.close()


def test_a_second_signal_while_the_parts_end_still_ends_and_reaps_every_part(
    tmp_path, one_thread, monkeypatch, forks
):
    """A StopNow (a second Ctrl-C) that lands while the stack waits for its first part to end:
    that part is killed and reaped, the second is still ended, and the StopNow rises."""
    from vae_runner.training import engine

    def endless_deaf_epoch(self, kl_weights, active, progress=None, stop=None):
        while True:  # neither a stop nor the pipe ends it: only a kill
            time.sleep(0.01)

    monkeypatch.setattr(engine.Engine, "train_epoch", endless_deaf_epoch)
    engines = _engines(tmp_path)
    engines.start()
    for part in forks:
        part.ask("train_epoch", [1.0, 1.0], [True, True])
    real_sleep, calls = time.sleep, []

    def second_signal_once(seconds):  # in this process only: the parts were forked already
        calls.append(seconds)
        if len(calls) == 1:
            raise signals.StopNow(signal.SIGINT)
        real_sleep(seconds)

    monkeypatch.setattr(engine_process.time, "sleep", second_signal_once)
    monkeypatch.setattr(engine_process, "EXIT_SECONDS", 0.2)
    with pytest.raises(signals.StopNow):
        engines.close()
    monkeypatch.setattr(engine_process.time, "sleep", real_sleep)
    assert len(forks) == 2
    for part in forks:
        assert part._ended and part._status == -signal.SIGKILL and _gone(part.pid)
