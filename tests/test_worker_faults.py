"""A joblib sweep whose processes die: a worker (one line, the summary, the same command carries
on), or the sweep's own process (its workers stop their jobs as a SIGTERM would, then end)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vae_runner.cli.orphan import in_joblib_worker
from vae_runner.faults import worker_died_line
from vae_runner.sweep import finish
from vae_runner.training import signals

from helpers import run_cli, start_cli, wait_for_hold

JOBLIB = ("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "lr=1e-3,1e-2")
RUN = ("epochs=2", "batch_size=16", "seed=3", "eval.iw_samples=0", "pictures=false")
HANG_GUARD_S = 600  # only a guard against a hang, never a measure of speed
# An idle loky worker ends by itself after joblib's idle_worker_timeout (300 s): an orphaned
# worker must end well before it, once its job stopped (a second or two).
IDLE_GUARD_S = 240


def history(run_dir: Path) -> dict:
    return json.loads((run_dir / "history.json").read_text())


def _alive(pid: int) -> bool:
    """Whether `pid` still runs; a zombie (ended, never reaped by its new parent) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: only whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"  # the state follows the command's name


@pytest.fixture
def fresh_process_state():
    """This test's stop request and sweep must not reach the next test (one process)."""
    yield
    signals._process["signum"] = None
    finish.reset()


def test_only_a_joblib_worker_that_died_is_said_in_one_line():
    from joblib.externals.loky.process_executor import BrokenProcessPool, TerminatedWorkerError

    died = worker_died_line(TerminatedWorkerError("The exit codes of the workers are {...}"))
    assert died.startswith("a joblib worker process died (killed, or out of memory)")
    # a result that cannot be unpickled breaks the pool too, but it is a bug: its traceback
    assert worker_died_line(BrokenProcessPool("A task has failed to un-serialize")) is None
    assert worker_died_line(RuntimeError("The exit codes of the workers are")) is None


def test_a_stop_requested_without_a_signal_stops_a_run_at_its_next_check(fresh_process_state):
    request = signals.StopRequest()
    request.check()  # nothing requested: the run goes on
    signals.request_stop(signal.SIGTERM)  # from another thread: cli.orphan's watch
    with pytest.raises(signals.Interrupted, match="SIGTERM"):
        request.check()


@pytest.mark.parametrize(
    "target, sweep_here, watched",
    [
        ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", False, True),
        # n_jobs=1 or backend=threading: the job runs in the sweep's own process
        ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", True, False),
        ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", True, False),
        ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", False, False),
    ],
)
def test_only_a_job_in_a_joblib_worker_watches_its_parent(
    target, sweep_here, watched, fresh_process_state, tmp_path
):
    finish.state.sweep_dir = tmp_path if sweep_here else None  # as on_multirun_start sets it
    hydra_cfg = OmegaConf.create({"launcher": {"_target_": target}})
    assert in_joblib_worker(hydra_cfg) is watched


@pytest.mark.e2e
def test_a_killed_joblib_worker_is_one_line_and_the_same_command_carries_on(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    args = (*JOBLIB, *RUN, f"hydra.sweep.dir={sweep}")
    log = tmp_path / "log"
    process = start_cli(*args, cwd=tmp_path, log=log, hold="batch:1:3")
    held = wait_for_hold(process, runs=2)  # both jobs in epoch 2, each in its own worker
    os.kill(held[0]["pid"], signal.SIGKILL)  # loky then ends the other worker too
    assert process.wait(timeout=HANG_GUARD_S) == 1, log.read_text()  # killed jobs: 1
    said = log.read_text()
    assert "Traceback" not in said and "TerminatedWorkerError" not in said, said
    [error] = [line for line in said.splitlines() if line.startswith("Error:")]
    assert error.startswith("Error: a joblib worker process died (killed, or out of memory)")
    assert "run the same command again to carry the sweep on" in error
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [job["status"] for job in summary["jobs"]] == ["killed", "killed"]
    assert [history(sweep / job)["epoch"] for job in ("0", "1")] == [[1], [1]]

    again = run_cli(*args, cwd=tmp_path, timeout=HANG_GUARD_S)
    assert again.returncode == 0, again.stderr
    for job in ("0", "1"):
        carried_on = history(sweep / job)
        assert carried_on["status"] == "completed" and carried_on["epoch"] == [1, 2]
        assert [r["after_epoch"] for r in carried_on["resumed"]] == [1]  # epoch 1 kept


@pytest.mark.e2e
def test_workers_whose_sweep_process_is_killed_stop_their_jobs_and_end(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    log = tmp_path / "log"
    args = (*JOBLIB, *RUN, f"hydra.sweep.dir={sweep}")
    process = start_cli(*args, cwd=tmp_path, log=log, hold="batch:1:3")
    workers = [h["pid"] for h in wait_for_hold(process, runs=2)]
    process.send_signal(signal.SIGKILL)  # the sweep's own process: no stop file, no summary
    assert process.wait(timeout=HANG_GUARD_S) == -signal.SIGKILL
    guard = time.monotonic() + IDLE_GUARD_S
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < guard, f"workers {workers} still run: {log.read_text()}"
        time.sleep(0.1)
    said = log.read_text()
    assert said.count(f"the sweep's process (pid {process.pid}) is gone") == 2, (
        said
    )  # one line from each worker
    for job in ("0", "1"):
        stopped = history(sweep / job)
        assert stopped["status"] == "interrupted" and stopped["interrupted_by"] == "SIGTERM"
        assert stopped["epoch"] == [1]  # the finished epoch, kept
        assert stopped["process"]["pid"] in workers
