"""Test-only: hold a vae-train run at a chosen place until the test acts.

A test that signals a run must know where the signal lands. Waiting for epoch 2 and then
killing does not say it: on a busy machine the run may be in epoch 3, or done. With this folder
on PYTHONPATH and VAE_TEST_HOLD in the environment (`helpers.start_cli(hold=...)`), each run of
the process holds at the places it names (comma-separated), writes a marker
`<pid>-<n>.json` ({"pid", "run_dir", "at"}) into VAE_TEST_HOLD_DIR, and waits:

- `batch:E:B`: at the B-th batch boundary after history.json records E epochs, until a stop is
  requested (a signal, or its sweep's stop file); then it does what the real check does.
- `write:E`: inside epoch E's critical section, after last.pt holds epoch E and before
  history.json does, until the process is killed.
- `stop`: after the first stop, inside the critical section that writes the `interrupted`
  record, until a second signal arrives (which a critical section defers).
- `start`: not a hold, a marker once vae-train has taken over SIGINT and imports the command:
  a signal sent after it lands in vae-train's start-up, never in Python's own. With holds
  beside it (`start,batch:0:1`), a signal sent after the marker lands in the start-up or at
  the hold, never after the run ended.

SIGKILL and SIGSTOP find the run held. Every process of a sweep (joblib's workers, submitit's
jobs) inherits the environment; a stack's parts (training/engine_process.py) are forked
processes that train and write their members' files: they hold there, under their own pid,
once they have written a history.json (a part is forked before its runs' first record, so
`batch:0:B` holds none of them: use `batch:E:B` with E of 1 or more).
A run directory holds once at each place: a requeued or resumed job runs through. A hold has
no time limit of its own (it would be a guess at the machine's speed): the test's end kills
the run's whole session (tests/conftest.py).
"""

from __future__ import annotations

import os


def _install(spec: str, marks: str) -> None:
    import itertools
    import json
    import time
    from pathlib import Path

    from vae_runner.training import history, signals

    points = dict(point.partition(":")[::2] for point in spec.split(","))
    held_dir = Path(marks)
    numbers = itertools.count()
    earlier = [json.loads(path.read_text()) for path in held_dir.glob("*.json")]
    held = {(marker["run_dir"], marker["at"]) for marker in earlier}
    state = {"run_dir": None, "epochs": -1, "seen": 0, "request": None}

    save_history = history.save_history

    def hold(at: str, until) -> None:
        """Mark the run held at `at`, then wait until `until()` is true."""
        held.add((state["run_dir"], at))
        marker = held_dir / f"{os.getpid()}-{next(numbers)}.json"
        partial = marker.with_suffix(".part")
        partial.write_text(json.dumps(dict(pid=os.getpid(), run_dir=state["run_dir"], at=at)))
        partial.rename(marker)  # whole or absent: the test reads it as soon as it appears
        while not until():
            time.sleep(0.02)  # a signal's handler runs here; `until` reads what it recorded

    def recording_save_history(where, record, *args, **kwargs):
        run_dir = str(Path(where).absolute())
        if run_dir != state["run_dir"]:
            state.update(run_dir=run_dir, epochs=-1, seen=0)
        epochs = len(record["epoch"])
        if (
            "write" in points
            and record["status"] == "running"
            and epochs == int(points["write"]) > state["epochs"]
            and (run_dir, "write") not in held
        ):
            hold("write", lambda: False)  # last.pt is written, history.json not yet
        request = state["request"]
        if (
            "stop" in points
            and record["status"] == "interrupted"
            and request is not None
            and (run_dir, "stop") not in held
        ):
            hold("stop", lambda: request.urgent)  # set by a second signal in this section
        save_history(where, record, *args, **kwargs)
        if epochs != state["epochs"]:
            state.update(epochs=epochs, seen=0)  # boundaries are counted from this record on

    def holding(check):
        """`check` (a stop request's, at each batch boundary) that holds at `batch`."""

        def holding_check(self) -> None:
            check(self)
            if "batch" not in points or (state["run_dir"], "batch") in held:
                return
            epochs, boundary = (int(n) for n in points["batch"].split(":"))
            if state["run_dir"] is None or state["epochs"] != epochs:
                return
            state["seen"] += 1
            if state["seen"] == boundary:

                def stop_requested() -> bool:
                    check(self)  # raises Interrupted once a stop is requested
                    return False

                hold("batch", stop_requested)

        return holding_check

    pending = signals.StopRequest.pending

    def recording_pending(self):
        state["request"] = self  # the run's stop request (check asks it too)
        return pending(self)

    # runner.py imports save_history by name: this runs before it is imported
    history.save_history = recording_save_history
    signals.StopRequest.pending = recording_pending
    signals.StopRequest.check = holding(signals.StopRequest.check)
    # A stack's parts train in processes of their own, which save their members' history.json
    # and check this stop at their batch boundaries (training/engine_process.py)
    signals.SharedStop.check = holding(signals.SharedStop.check)


def _mark_start(marks: str) -> None:
    """`start`: a marker (at `start`, no run_dir) once vae-train's console script has taken over
    SIGINT and begins to import the command (vae_runner.cli.train); it does not hold, and
    imports nothing of vae-train's before it."""
    import json
    import sys
    from pathlib import Path

    class MarkStart:
        def find_spec(self, name, path=None, target=None):
            if name == "vae_runner.cli.train":
                marker = Path(marks) / f"{os.getpid()}-start.json"
                partial = marker.with_suffix(".part")
                partial.write_text(json.dumps(dict(pid=os.getpid(), run_dir=None, at="start")))
                partial.rename(marker)
            return None  # found as usual

    sys.meta_path.insert(0, MarkStart())


_places = [p for p in os.environ.get("VAE_TEST_HOLD", "").split(",") if p]
if "start" in _places:
    _mark_start(os.environ["VAE_TEST_HOLD_DIR"])
if [p for p in _places if p != "start"]:
    _install(",".join(p for p in _places if p != "start"), os.environ["VAE_TEST_HOLD_DIR"])
