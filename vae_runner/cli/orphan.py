"""A joblib worker whose sweep process is gone stops its job as a SIGTERM would, then ends.

loky's workers are children of the sweep's own process. When that process is SIGKILLed (or
lost with its terminal), nothing writes the stop file and nobody waits for the workers: they
used to train their jobs to the end and then wait for more work for loky's idle timeout
(minutes), each holding torch's memory (about 700 MB). Here a daemon thread of each worker
looks at its parent every WATCH_SECONDS; once the parent is gone, the job stops at its next
batch boundary through the same stop check a signal uses (`interrupted`, by SIGTERM, its
finished epochs kept), and the worker exits as soon as no job runs in it.

Only joblib's worker processes are watched: a single run, the basic launcher's jobs and a joblib
job that runs in the sweep's own process (n_jobs=1, the threading backend) have no such parent.
submitit's jobs are not watched either: each is a process of its own that ends with its job (no
idle pool), and submitit lets a job outlive the process that submitted it (on SLURM that one is
a login node's), so an orphaned submitit job trains to its end and records it.

Imports no torch.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from omegaconf import DictConfig

from vae_runner.sweep import finish
from vae_runner.training import signals

WATCH_SECONDS = 1.0  # how often a worker looks whether its parent is still there
STOP_SIGNAL = signal.SIGTERM  # what the job records: stopped as a SIGTERM would stop it

_lock = threading.Lock()
_state: dict = {"parent": None, "running": False}


def in_joblib_worker(hydra_cfg: DictConfig) -> bool:
    """Whether this job runs in a joblib worker process (not in the sweep's own process, which
    is the only one where the sweep started: callbacks.on_multirun_start)."""
    target = str(hydra_cfg.launcher.get("_target_", ""))
    return target.endswith("JoblibLauncher") and not finish.sweep_started()


@contextmanager
def watched_job(hydra_cfg: DictConfig) -> Iterator[None]:
    """Around a job: in a joblib worker, watch for the parent's end (from the first job on;
    a worker's later jobs share the watch), and let the worker exit only between jobs."""
    if not in_joblib_worker(hydra_cfg):
        yield
        return
    with _lock:
        if _state["parent"] is None:
            _state["parent"] = os.getppid()  # the sweep's process, while it lives
            threading.Thread(target=_watch, name="vae-train parent watch", daemon=True).start()
        _state["running"] = True
    try:
        yield
    finally:
        with _lock:
            _state["running"] = False


def _watch() -> None:
    parent = _state["parent"]
    while os.getppid() == parent:  # a reparented worker has a new parent (init, a subreaper)
        time.sleep(WATCH_SECONDS)
    signals.request_stop(STOP_SIGNAL)  # the running job's next stop check raises Interrupted
    print(
        f"\nthe sweep's process (pid {parent}) is gone: this worker's job stops after its "
        "current batch and keeps its last finished epoch; run the same command again to carry "
        "the sweep on",
        file=sys.stderr,
        flush=True,
    )
    while True:
        with _lock:
            if not _state["running"]:  # the job's record is written and its claim released
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(signals.exit_status(STOP_SIGNAL))  # the only way out from a thread
        time.sleep(WATCH_SECONDS)
