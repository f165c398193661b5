"""vae_runner.heap: the console script freezes the long-lived objects once; a library user's
process (this test suite's) keeps the cycle collector as it was. Each case runs in a fresh
interpreter, so that nothing is frozen in the test session."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_only_an_enabled_process_freezes_and_only_once_until_it_exits():
    before, on, off, first, back_on, again, at_exit = python(
        """
        import gc
        from vae_runner import heap
        heap.freeze_long_lived()
        heap.at_exit()
        print(gc.get_freeze_count(), gc.isenabled())
        heap.enable()
        print(gc.isenabled())  # off while the command imports
        heap.freeze_long_lived()
        print(gc.get_freeze_count(), gc.isenabled())
        made = [[i] for i in range(1000)]
        heap.freeze_long_lived()  # a sweep's later job: what it made stays collectable
        print(gc.get_freeze_count())
        heap.at_exit()
        print(gc.get_freeze_count())
        """
    )
    assert (int(before), on, off) == (0, "True", "False")
    assert int(first) > 1000 and back_on == "True"
    assert int(again) == int(first)
    assert int(at_exit) >= int(first) + 1000


def test_the_console_script_enables_it_and_freezes_when_its_command_ends():
    enabled, frozen = python(
        """
        import gc
        import vae_runner.cli.train as train
        from vae_runner import heap
        from vae_runner.cli import start

        train.entry = lambda: print(heap._state["enabled"])
        start.entry()
        print(gc.get_freeze_count() > 0)
        """
    )
    assert (enabled, frozen) == ("True", "True")


def test_a_run_in_a_library_users_process_freezes_nothing(tmp_path):
    (count,) = python(
        f"""
        import gc, os, sys
        sys.path.insert(0, {str(__file__.rsplit("/", 1)[0])!r})
        from helpers import typed_config
        from vae_runner.training.runner import run
        from rich.console import Console

        cfg = typed_config("epochs=1", "eval.iw_samples=0", "pictures=false", "data.limit=256")
        run(cfg, {str(tmp_path / "run")!r}, Console(file=open(os.devnull, "w")))
        print(gc.get_freeze_count())
        """
    )
    assert int(count) == 0
