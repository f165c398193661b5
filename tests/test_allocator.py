"""allocator.reused_freed_blocks: glibc's thresholds raised inside, and a user's settings win."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "from vae_runner.allocator import reused_freed_blocks\n"
    "with reused_freed_blocks() as raised:\n"
    "    print(raised)\n"
    "with reused_freed_blocks(enabled=False) as raised:\n"
    "    print(raised)\n"
)


def probe(env_extra: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    env.update(env_extra)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_thresholds_are_raised_on_linux_unless_disabled():
    assert probe({}) == ["True", "False"]


@pytest.mark.parametrize(
    "setting",
    [
        {"MALLOC_MMAP_THRESHOLD_": "131072"},
        {"MALLOC_TRIM_THRESHOLD_": "131072"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"},
    ],
)
def test_a_users_own_malloc_settings_are_left_alone(setting):
    assert probe(setting) == ["False", "False"]
