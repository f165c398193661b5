"""The Hydra job: composed config -> typed Config -> training.runner.run, failures -> statuses.

A job never raises and never calls sys.exit: an exception would make Hydra skip its end-of-sweep
callbacks, and sys.exit would abort the other jobs of a sweep. It returns its exit code (for a
single run) and its objective (for a search sweeper); a sweep job's outcome is its history.json.

A job holds its directory's claim (vae_runner.rundir) from start to end. Started again in its
own directory (a requeue, a retry, the same sweep run again), it carries on from the earlier
attempt: from checkpoints/last.pt, from scratch when no epoch finished, or not at all when the
run already finished.
"""

from __future__ import annotations

import contextlib
import signal
import traceback
from pathlib import Path

from hydra.types import RunMode
from omegaconf import DictConfig

from vae_runner.cli.checks import (
    carry_on,
    check_job,
    extended,
    finished_line,
    is_finished,
    job_config,
    repair,
)
from vae_runner.config.errors import ConfigError
from vae_runner.config.explain import explain
from vae_runner.exit_codes import ExitCode, exit_code
from vae_runner.faults import out_of_memory_line
from vae_runner.files import WriteError, write_json_atomic
from vae_runner.record import HISTORY_FILE
from vae_runner.report.console import log, print_error
from vae_runner.rundir import (
    Busy,
    claim,
    never_trained,
    remove_hydra_record,
    remove_temporary_files,
    take_held,
)
from vae_runner.sweep import finish
from vae_runner.training import signals
from vae_runner.training.history import failure_record
from vae_runner.training.provenance import check_checkpoint, missing_checkpoint_line

NOTHING = float("inf")  # the objective of a job that has no best loss


def run_job(cfg: DictConfig, hydra_cfg: DictConfig) -> tuple[int, float]:
    """Run one job; returns (exit code, best validation loss, else best test loss, or inf).
    Never raises."""
    run_dir = Path(hydra_cfg.runtime.output_dir)
    single = hydra_cfg.mode == RunMode.RUN
    stop_file = None if single else Path(str(hydra_cfg.sweep.dir)).absolute() / signals.STOP_FILE
    stopped = signals.requested() or signals.read_stop_file(stop_file)
    if stopped:  # the sweep was asked to stop before this job began
        _leave_not_started(run_dir)
        if single:  # a Ctrl-C while starting that Python could not raise where it landed
            held = take_held(run_dir)  # its checks' claim: given back, the empty folder too
            if held is not None:
                held.release(remove_empty_dir=True)
            print_error(signals.INTERRUPTED_WHILE_STARTING)
        if not single and signals.requested() and finish.sweep_started():
            raise signals.SweepStopped(stopped)  # the sweep's own process: skip the rest at once
        return signals.exit_status(stopped), NOTHING
    lock = take_held(run_dir)  # a single run's checks claimed its directory already
    if lock is None:
        try:
            lock = claim(run_dir, "hydra.sweep.dir")
        except Busy as err:  # that directory is another process's: nothing is written there
            print_error(str(err))
            return int(ExitCode.CONFIG), NOTHING
        except WriteError as err:  # a full disk: the summary lists the job as not started
            print_error(f"{err.strerror}; this job was not run")
            remove_hydra_record(run_dir)
            return int(ExitCode.FAILED), NOTHING
    try:
        return _run_claimed(cfg, hydra_cfg, run_dir, single, stop_file)
    finally:
        lock.release(remove_empty_dir=True)  # a single run that left nothing: no folder


def _run_claimed(cfg, hydra_cfg, run_dir: Path, single: bool, stop_file) -> tuple[int, float]:
    start_dir = Path(hydra_cfg.runtime.cwd)
    typed, fresh = None, True
    try:
        checkpoint, how = None, "resume"
        if cfg.resume is not None:
            from vae_runner.training.resume import RunFinished, load_for_resume  # torch

            fresh = False
            try:
                typed, checkpoint = load_for_resume(run_dir, list(hydra_cfg.overrides.task), cfg)
            except RunFinished as finished:  # refused, once what a kill left is repaired
                repair(run_dir, finished.history or {}, finished.cfg, start_dir)
                raise
            remove_temporary_files(run_dir)  # what kills left of interrupted writes
        else:
            typed = job_config(cfg)
            if not single:
                # A sweep's jobs were checked by the `checked` sweeper, but not by another
                # sweeper (Optuna's): check here, where the job's own record says why.
                check_job(typed, start_dir)
            overrides = list(hydra_cfg.overrides.task)
            try:
                attempt = carry_on(run_dir, typed, overrides, _dir_key(single))
            except ConfigError as err:  # another run's record: never written into
                print_error(str(err))
                return int(ExitCode.CONFIG), NOTHING
            # Nothing of an earlier attempt's training is there (Hydra's .hydra/ of this one may be)
            fresh = attempt.history is None and not attempt.has_checkpoint
            if attempt.history and is_finished(attempt.history, typed):
                repair(run_dir, attempt.history, typed, start_dir)
                log.info(finished_line(run_dir, attempt.history))
                return _outcome(attempt.history)
            if not attempt.has_checkpoint:  # finished epochs are never trained over afresh
                refusal = missing_checkpoint_line(run_dir, attempt.history)
                if refusal:
                    raise ConfigError(refusal)
            remove_temporary_files(run_dir)  # what kills left of interrupted writes
            if attempt.has_checkpoint:
                # With more epochs it is what resume=<job dir> epochs=N does; else the same job
                # started again (a requeue, the same command run again).
                how = "resume" if extended(attempt.history, typed) else "restart"
                checkpoint = _earlier_checkpoint(run_dir)
                check_checkpoint(run_dir, checkpoint, attempt.history)
        from vae_runner.training.runner import run  # imports torch: only once a job really runs

        history = run(
            typed,
            run_dir,
            checkpoint=checkpoint,
            start_dir=start_dir,
            stop_file=stop_file,
            how=how,
            job_label=None if single else " ".join(hydra_cfg.overrides.task) or None,
            sweep_dir=None if single else stop_file.parent,
        )
    except (KeyboardInterrupt, signals.StopNow) as stopped:
        # Ctrl-C before the run's handlers (imports), or a second signal before its record
        # existed (building the model); after that the run records its own stop.
        code = signals.exit_status(getattr(stopped, "signum", signal.SIGINT))
        if fresh and _has_history(run_dir):  # this attempt's own record says how it ended
            return code, NOTHING
        if not fresh:  # an earlier attempt's record and checkpoint are as they were
            print_error(f"interrupted before training went on; {run_dir} is as it was")
            return code, NOTHING
        print_error("interrupted before the first epoch; nothing to resume")
        _discard_or_record(run_dir, single, typed, "interrupted before the first epoch")
        return code, NOTHING
    except WriteError as err:  # a full disk, a folder that became read-only
        print_error(f"{err.strerror}; the run directory keeps every finished epoch")
        return int(ExitCode.FAILED), NOTHING
    except Exception as err:
        line = explain(err)
        fault = out_of_memory_line(err)
        if line is None and fault is None:  # a bug or an environment fault: keep the traceback
            traceback.print_exc()
        message = line or fault or f"{type(err).__name__}: {err} (run directory: {run_dir})"
        print_error(message)
        kind = "config" if line is not None else "error"
        if fresh:
            _discard_or_record(run_dir, single, typed, message, kind)
        return int(ExitCode.CONFIG if line is not None else ExitCode.FAILED), NOTHING
    return _outcome(history)


def _dir_key(single: bool) -> str:
    return "hydra.run.dir" if single else "hydra.sweep.dir"


def _outcome(history: dict) -> tuple[int, float]:
    # Optuna's objective: the best loss on the split the run chose on (validation if any)
    best = history.get("best_val_loss", history.get("best_test_loss"))
    completed = history.get("status") == "completed" and best is not None
    return int(exit_code(history)), best if completed else NOTHING


def _earlier_checkpoint(run_dir: Path) -> dict:
    from vae_runner.training.checkpoint import CHECKPOINT_DIR, LAST, load_checkpoint

    return load_checkpoint(run_dir / CHECKPOINT_DIR / LAST)


def _has_history(run_dir: Path) -> bool:
    return (run_dir / HISTORY_FILE).exists()


def _leave_not_started(run_dir: Path) -> None:
    """A sweep job skipped after a stop: the summary lists it as not started."""
    if never_trained(run_dir):
        remove_hydra_record(run_dir)


def _discard_or_record(run_dir: Path, single: bool, typed, message: str, kind="error") -> None:
    """A new job that failed before it wrote its own record: a single run leaves nothing behind
    (only what Hydra wrote for it is removed); a sweep's job records why, for the summary."""
    if _has_history(run_dir):
        return  # the runner's own record says what happened
    if single:
        remove_hydra_record(run_dir)
        return
    from dataclasses import asdict

    config = asdict(typed) if typed is not None else None
    # If nothing more can be written there, the summary counts it as failed anyway.
    with contextlib.suppress(WriteError):
        write_json_atomic(run_dir / HISTORY_FILE, failure_record(config, message, kind))
