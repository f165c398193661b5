"""A stack's parts in forked processes (training/engine_process.py): the same numbers as in
threads, a stop passed on at a batch boundary, a part's failure as its records' one line, and
no process left behind, whatever ended the stack."""

from __future__ import annotations

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
    not engine_process.available(), reason="a stack's parts train in processes only on Linux"
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


def test_the_progress_bar_counts_every_parts_batches(tmp_path, monkeypatch):
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
    assert totals and sum(advanced) == 2 * totals[0]  # two epochs
    assert len(advanced) == sum(advanced)  # one report per batch


def test_a_stop_reaches_every_part_at_a_batch_boundary_and_leaves_each_run_resumable(
    tmp_path, monkeypatch, forks
):
    """The sweep's stop file appears during epoch 2 (as `kill -TERM <sweep>` writes it): every
    member records `interrupted` at the same last whole epoch, with last.pt and history.json
    at it, and both parts have ended."""
    from vae_runner.training import run_record, runner

    monkeypatch.setattr(runner, "parts_for", lambda *args: 2)
    monkeypatch.setitem(signals._process, "signum", None)  # this process's stop, put back
    stop_file = tmp_path / signals.STOP_FILE
    real = run_record.RunRecord.after_epoch

    def stop_after_epoch_2(self, record, model_of, data):
        real(self, record, model_of, data)
        if record["epoch"] == 2:
            stop_file.write_text("SIGTERM\n")

    monkeypatch.setattr(run_record.RunRecord, "after_epoch", stop_after_epoch_2)
    results = run_stack(_members(tmp_path, "epochs=40"), quiet_console()[0], stop_file=stop_file)
    epochs = {len(r["epoch"]) for r in results}
    assert len(epochs) == 1 and 2 <= epochs.pop() < 40
    for i, result in enumerate(results):
        assert result["status"] == "interrupted" and result["interrupted_by"] == "SIGTERM"
        on_disk = _history(tmp_path / str(i))
        last = load_checkpoint(tmp_path / str(i) / CHECKPOINT_DIR / LAST)
        assert on_disk["status"] == "interrupted" and last["epoch"] == on_disk["epoch"][-1]
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
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"a training process of the stack \(pid \d+\) ended"):
        run_stack(_members(tmp_path, "epochs=2"), quiet_console()[0])
    assert time.monotonic() - started < 60  # the other part was not waited on for ever
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
    nothing writes into the runs, once `kill -9` has ended it."""
    script = tmp_path / "stack.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from vae_runner.training import runner
            from vae_runner.training.runner import MemberRun, run_stack
            from helpers import typed_config
            runner.parts_for = lambda *args: 2
            cfgs = [typed_config(*{TINY!r}, "epochs=500", f"seed={{s}}") for s in range(4)]
            run_stack([MemberRun(c, {str(tmp_path)!r} + f"/{{i}}") for i, c in enumerate(cfgs)])
            """
        )
    )
    stack = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "0" / "history.json").exists():  # its first epoch is written
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

    def endless_epoch(self, kl_weights, active, progress=None, stop=None):
        while True:  # an epoch that only a stop ends
            stop.check()
            time.sleep(0.01)

    monkeypatch.setattr(engine.Engine, "train_epoch", endless_epoch)
    cfgs = [member.cfg for member in _members(tmp_path)]
    data = load_data(cfgs[0].data, cfgs[0].likelihood)
    engines = Engines([build_engine(part, data, torch.device("cpu")) for part in split(cfgs, 2)])
    before = engines.engines[1].member_state(1)  # member 3: the second part's second
    engines.start()
    try:
        assert engines.in_processes and len(forks) == 2
        state = engines.member_state(3)
        for key, value in before["model"].items():
            assert torch.equal(state["model"][key], value), key
        assert torch.equal(state["rng"]["shuffle"], before["rng"]["shuffle"])
        for part in forks:
            part.ask("train_epoch", [1.0, 1.0], [True, True])
    finally:
        engines.close()
    assert [part._status for part in forks] == [0, 0]
    with pytest.raises(RuntimeError, match="a training process of the stack"):
        engines.lr(0)  # ended: nothing is answered from the stale copy here
