"""Shared fixtures of the whole suite."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest

from helpers import STARTED


@pytest.fixture(autouse=True)
def _no_run_left_behind():
    """A test that fails while a `start_cli` run is held (or running) leaves nothing behind:
    its whole session (a sweep's workers and jobs too) is killed at the test's end."""
    yield
    while STARTED:
        process = STARTED.pop()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
def stacks(monkeypatch) -> list[list]:
    """Each training.runner.run_stack call's members, in call order (hydra/launcher=stacked
    trains each stack with one call; the call itself is run_stack's own)."""
    from vae_runner.training import runner

    calls: list[list] = []
    original = runner.run_stack

    def recording(members, *args, **kwargs):
        calls.append(list(members))
        return original(members, *args, **kwargs)

    monkeypatch.setattr(runner, "run_stack", recording)
    return calls


@pytest.fixture(params=["processes", "threads"])
def split_stack(request, monkeypatch) -> Iterator[str]:
    """A stack trained in two parts, in forked processes (Linux) or in threads (elsewhere):
    training/engines.py. The fixture's value says which."""
    import torch

    from vae_runner.training import engine_process, runner

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # processes take one torch thread each (engine_process.available)
    if request.param == "processes" and not engine_process.available():
        torch.set_num_threads(threads)
        pytest.skip("a stack's parts train in processes only on Linux")
    monkeypatch.setattr(runner, "parts_for", lambda cfgs, device, fixed_noise: min(2, len(cfgs)))
    forked: list[int] = []
    if request.param == "threads":
        monkeypatch.setattr(engine_process, "available", lambda: False)
    else:
        fork = engine_process.EngineProcess.fork
        monkeypatch.setattr(
            engine_process.EngineProcess,
            "fork",
            lambda self, *args: forked.append(1) or fork(self, *args),
        )
    yield request.param
    torch.set_num_threads(threads)
    assert forked or request.param == "threads", "the stack's parts trained in threads"
