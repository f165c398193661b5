"""Helpers shared by the tests: compose configs as `vae-train` does; run the installed CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from vae_runner.config.explain import explain
from vae_runner.config.resolvers import register
from vae_runner.config.schema import Config
from vae_runner.config.typed import to_typed


def compose_config(*overrides: str, hydra: bool = False) -> DictConfig:
    """The composed DictConfig for `vae-train <overrides>` (with its `hydra` node if asked)."""
    register()
    with initialize_config_module("vae_runner.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def typed_config(*overrides: str) -> Config:
    return to_typed(compose_config(*overrides))


def one_line(*overrides: str) -> str | None:
    """What vae-train says about these settings (composed and typed as a run's are), or None
    when they are good."""
    try:
        typed_config(*overrides)
    except Exception as err:
        return explain(err)
    return None


def vae_train_in_process(monkeypatch, *args: str) -> int:
    """`vae-train <args>` in this process (so a test can patch what it calls); its exit code.
    torch's thread count, which the run sets (cli/callbacks.py), is put back for later tests."""
    import torch

    from vae_runner.cli.train import main

    monkeypatch.setattr(sys, "argv", ["vae-train", *args])
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as ended:
            main()
    finally:
        torch.set_num_threads(threads)
    return ended.value.code


def help_text(*args: str) -> str:
    """`vae-train --help <args>`, as a user sees it."""
    done = run_cli("--help", *args, cwd=Path.cwd())
    assert done.returncode == 0, done.stderr
    return done.stdout


def vae_train_executable() -> str:
    """The installed console script (next to this Python, or on PATH)."""
    beside = Path(sys.executable).with_name("vae-train")
    found = str(beside) if beside.exists() else shutil.which("vae-train")
    if not found:
        pytest.fail("vae-train is not installed: run the README's set-up (pip install -e '.[dev]')")
    return found


def run_cli(
    *args: str,
    cwd: Path,
    timeout: float | None = None,
    program: str = "vae-train",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run an installed console script (`vae-train`, `vae-summary`) as a user would; output is
    captured (not a terminal). `env` adds variables to the environment. No timeout by default:
    a busy machine may take many minutes, and CI's own limit catches a hang."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | (env or {})
    executable = vae_train_executable()
    if program != "vae-train":
        executable = str(Path(executable).with_name(program))
    return subprocess.run(
        [executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


HOLD_HOOK = Path(__file__).parent / "hold"  # its sitecustomize.py holds runs (see there)
STARTED: list[subprocess.Popen] = []  # conftest.py kills what a test leaves running


def start_cli(*args: str, cwd: Path, log: Path, hold: str | None = None) -> subprocess.Popen:
    """Start `vae-train` in the background, in its own session (a signal sent to its pid
    reaches only it; the test's end kills its whole group).

    `hold`: where each run waits for the test (tests/hold/sitecustomize.py), e.g.
    "batch:2:5" (the 5th batch of epoch 3, until a stop is requested); `wait_for_hold` sees it
    held, so a signal sent then lands at a known place however busy the machine is."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    hold_dir = log.with_name(log.name + ".held")
    if hold is not None:
        hold_dir.mkdir()
        path = os.pathsep.join(p for p in (str(HOLD_HOOK), env.get("PYTHONPATH")) if p)
        env |= {"PYTHONPATH": path, "VAE_TEST_HOLD": hold, "VAE_TEST_HOLD_DIR": str(hold_dir)}
    process = subprocess.Popen(
        [vae_train_executable(), *args],
        cwd=cwd,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    process.hold_dir = hold_dir
    STARTED.append(process)
    return process


def wait_for_hold(process: subprocess.Popen, runs: int = 1, at: str = "batch") -> list[dict]:
    """Block until `runs` runs of a `start_cli(hold=...)` are held at `at` (batch, write,
    stop); returns their markers ({"pid": the run's process, "run_dir", "at"}). Fails if
    vae-train ends first."""
    import json
    import time

    while True:
        ended = process.poll() is not None  # read before the markers: the last one is seen
        markers = [json.loads(p.read_text()) for p in sorted(process.hold_dir.glob("*.json"))]
        markers = [marker for marker in markers if marker["at"] == at]
        if len(markers) >= runs:
            return markers
        if ended:
            raise AssertionError(
                f"vae-train ended (exit code {process.returncode}) with {len(markers)} of "
                f"{runs} runs held at {at}"
            )
        time.sleep(0.05)


def engine_of_one(cfg, start_dir=None):
    """The training engine of one run of `cfg` (training/engine.py), on `cfg`'s data, on the CPU."""
    import torch

    from vae_runner.data.images import load_data
    from vae_runner.training.engine import build_engine

    data = load_data(cfg.data, cfg.likelihood, start_dir)
    return build_engine([cfg], data, torch.device("cpu"))
