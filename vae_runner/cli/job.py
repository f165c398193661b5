"""The Hydra job: composed config -> typed Config -> training.runner.run, failures -> statuses.

A job never raises and never calls sys.exit: an exception would make Hydra skip its end-of-sweep
callbacks, and sys.exit would abort the other jobs of a sweep. It returns its exit code (for a
single run) and its objective (for a search sweeper); a sweep job's outcome is its history.json.
"""

from __future__ import annotations

import contextlib
import shutil
import traceback
from pathlib import Path

from hydra.types import RunMode
from omegaconf import DictConfig

from vae_runner.cli.checks import check_job, job_config
from vae_runner.config.explain import explain
from vae_runner.exit_codes import ExitCode, exit_code
from vae_runner.files import WriteError, write_json_atomic
from vae_runner.report.console import print_error
from vae_runner.training.history import HISTORY_FILE, failure_record

# A job of this process was stopped by a signal: later jobs of its sweep do not start.
_stopped = {"by_signal": False}


def run_job(cfg: DictConfig, hydra_cfg: DictConfig) -> tuple[int, float]:
    """Run one job; returns (exit code, best test loss or inf). Never raises."""
    run_dir = Path(hydra_cfg.runtime.output_dir)
    start_dir = Path(hydra_cfg.runtime.cwd)
    single = hydra_cfg.mode == RunMode.RUN
    if _stopped["by_signal"]:  # Ctrl-C in an earlier job of this sweep: start nothing more
        return int(ExitCode.INTERRUPTED), float("inf")
    typed = None
    try:
        checkpoint = None
        if cfg.resume is not None:
            from vae_runner.training.resume import load_for_resume  # imports torch

            typed, checkpoint = load_for_resume(run_dir, list(hydra_cfg.overrides.task), cfg)
        elif single:
            typed = job_config(cfg)  # checked by on_run_start already
        else:
            # A sweep's jobs were checked by the `checked` sweeper, but not by another sweeper
            # (Optuna's): check here, where the job's own record says why it was refused.
            typed = job_config(cfg)
            check_job(typed, start_dir)
        from vae_runner.training.runner import run  # imports torch: only once a job really runs

        history = run(typed, run_dir, checkpoint=checkpoint, start_dir=start_dir)
    except KeyboardInterrupt:  # Ctrl-C before training started (imports, data loading)
        print_error("interrupted before the first epoch; nothing to resume")
        _stopped["by_signal"] = True
        _discard_or_record(run_dir, single, typed, "interrupted before the first epoch", "error")
        return int(ExitCode.INTERRUPTED), float("inf")
    except WriteError as err:  # a full disk, a folder that became read-only
        print_error(f"{err.strerror}; the run directory keeps every finished epoch")
        return int(ExitCode.FAILED), float("inf")
    except Exception as err:
        line = explain(err)
        if line is None:  # a bug or an environment fault: keep the traceback
            traceback.print_exc()
        message = line or f"{type(err).__name__}: {err} (run directory: {run_dir})"
        print_error(message)
        kind = "config" if line is not None else "error"
        _discard_or_record(run_dir, single, typed, message, kind)
        return int(ExitCode.CONFIG if line is not None else ExitCode.FAILED), float("inf")
    code = exit_code(history)
    if code in (ExitCode.INTERRUPTED, ExitCode.TERMINATED):
        _stopped["by_signal"] = True
    completed = history["status"] == "completed" and history["best_test_loss"] is not None
    return int(code), history["best_test_loss"] if completed else float("inf")


def _has_history(run_dir: Path) -> bool:
    return (run_dir / HISTORY_FILE).exists()


def _discard_or_record(run_dir: Path, single: bool, typed, message: str, kind: str) -> None:
    """A job that failed before it wrote its own record: a single run leaves nothing behind
    (only what Hydra wrote for it is removed); a sweep's job records why, for the summary."""
    if _has_history(run_dir):
        return  # the runner's own record says what happened
    if single:
        shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
        for log in run_dir.glob("*.log"):
            log.unlink(missing_ok=True)
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        return
    from dataclasses import asdict

    config = asdict(typed) if typed is not None else None
    # If nothing more can be written there, the summary counts it as failed anyway.
    with contextlib.suppress(WriteError):
        write_json_atomic(run_dir / HISTORY_FILE, failure_record(config, message, kind))
