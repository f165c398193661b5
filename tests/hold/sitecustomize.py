"""Test-only: hold a vae-train run at a chosen batch boundary until a stop is requested.

A test that signals a run must know where the signal lands. Waiting for epoch 2 and then
killing does not say it: on a busy machine the run may be in epoch 3, or done. With this folder
on PYTHONPATH and VAE_TEST_HOLD="E:B" in the environment (`helpers.start_cli(hold=(E, B))`), a
run stops at the B-th batch boundary after its history.json records E epochs, writes a marker
`<pid>.json` ({"pid", "run_dir"}) into VAE_TEST_HOLD_DIR, and waits there until a stop is
requested: a signal, or its sweep's stop file. It then does what the real check does (raise
Interrupted). SIGKILL and SIGSTOP find it held.

Every process of a sweep (joblib's workers, submitit's jobs) inherits the environment and holds
each of its runs. A run directory holds once: a requeued or resumed job runs through.
"""

from __future__ import annotations

import os


def _install(spec: str, marks: str) -> None:
    import json
    import time
    from pathlib import Path

    from vae_runner.training import history, signals

    epochs, boundary = (int(part) for part in spec.split(":"))
    held_dir = Path(marks)
    state = {"run_dir": None, "epochs": -1, "seen": 0}
    held: set[str] = {json.loads(p.read_text())["run_dir"] for p in held_dir.glob("*.json")}

    save_history = history.save_history
    check = signals.StopRequest.check

    def recording_save_history(run_dir, record, *args, **kwargs):
        save_history(run_dir, record, *args, **kwargs)
        now = {"run_dir": str(Path(run_dir).absolute()), "epochs": len(record["epoch"])}
        if now != {key: state[key] for key in now}:
            state.update(now, seen=0)  # boundaries are counted from this record on

    def holding_check(self) -> None:
        check(self)
        run_dir = state["run_dir"]
        if run_dir is None or run_dir in held or state["epochs"] != epochs:
            return
        state["seen"] += 1
        if state["seen"] < boundary:
            return
        held.add(run_dir)
        marker = held_dir / f"{os.getpid()}.json"
        partial = marker.with_suffix(".part")
        partial.write_text(json.dumps({"pid": os.getpid(), "run_dir": run_dir}))
        partial.rename(marker)  # whole or absent: the test reads it as soon as it appears
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            check(self)  # raises Interrupted once a stop is requested
            time.sleep(0.02)
        raise RuntimeError(f"held {run_dir} for 900 s and no stop came")

    # runner.py imports save_history by name: this runs before it is imported
    history.save_history = recording_save_history
    signals.StopRequest.check = holding_check


if os.environ.get("VAE_TEST_HOLD"):
    _install(os.environ["VAE_TEST_HOLD"], os.environ["VAE_TEST_HOLD_DIR"])
