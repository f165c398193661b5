"""Shared fixtures of the whole suite."""

from __future__ import annotations

import contextlib
import os
import signal

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
