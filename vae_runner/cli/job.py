"""The Hydra job: composed config -> typed Config -> training.runner, failures -> statuses.

A job's life is prepare_job -> train_jobs -> finish_job: `run_job` lives it alone; the
`stacked` launcher (hydra_plugins) prepares many, trains them together, and finishes each.

A job never raises and never calls sys.exit: an exception would make Hydra skip its end-of-sweep
callbacks, and sys.exit would abort the other jobs of a sweep. It returns its exit code (for a
single run) and its objective (for a search sweeper); a sweep job's outcome is its history.json.

A job trains under its directory's claim (vae_runner.rundir): a sweep's job takes its own in
prepare_job and gives it back in finish_job; a single run's was taken by its checks before
Hydra wrote anything (cli.checks.check_run), which leave on it what they found (the typed
config, the earlier attempt, the checkpoint resumed: none of it is made twice), and the command
gives it back when it ends.

Started again in its own directory (a requeue, a retry, the same sweep run again), a job
carries on from the earlier attempt: from checkpoints/last.pt, from scratch when no epoch
finished, or not at all when the run already finished.
"""

from __future__ import annotations

import contextlib
import signal
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

from hydra.types import RunMode
from omegaconf import DictConfig

from vae_runner.cli.checks import (
    Checked,
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
from vae_runner.config.overrides import task_overrides
from vae_runner.config.schema import Config
from vae_runner.exit_codes import ExitCode, exit_code
from vae_runner.faults import out_of_memory_line
from vae_runner.files import WriteError, write_json_atomic
from vae_runner.record import HISTORY_FILE
from vae_runner.report.console import log, print_error
from vae_runner.rundir import (
    Busy,
    Claim,
    claim,
    claimed_by_checks,
    never_trained,
    remove_hydra_record,
    remove_temporary_files,
)
from vae_runner.sweep import finish
from vae_runner.training import signals
from vae_runner.training.history import failure_record
from vae_runner.training.provenance import check_checkpoint, missing_checkpoint_line

NOTHING = float("inf")  # the objective of a job that has no best loss


@dataclass
class PreparedJob:
    """A job ready to train: all that `training.runner.run_stack` needs of it (`member()`), and
    its directory's claim, held until `finish_job`. Made by `prepare_job`."""

    run_dir: Path
    start_dir: Path  # where vae-train started: relative data paths are read from there
    single: bool  # a single run (hydra.run.dir), not a sweep's job
    stop_file: Path | None  # a sweep job's stop request (training.signals)
    claim: Claim | None  # its own; None: its command's checks hold the directory (rundir)
    cfg: Config | None = None  # typed (None only while prepare_job has not typed it yet)
    checkpoint: dict | None = None  # what it carries on from
    how: str = "resume"  # resume | restart: how the checkpoint is taken up
    job_label: str | None = None  # a sweep job's overrides
    fresh: bool = True  # nothing of an earlier attempt's training is in run_dir

    @property
    def sweep_dir(self) -> Path | None:
        return None if self.stop_file is None else self.stop_file.parent

    def member(self):
        from vae_runner.training.runner import MemberRun  # torch: only once jobs really train

        return MemberRun(self.cfg, self.run_dir, self.checkpoint, self.how, self.job_label)


def run_job(cfg: DictConfig, hydra_cfg: DictConfig) -> tuple[int, float]:
    """Run one job; returns (exit code, best validation loss, else best test loss, or inf).
    Never raises."""
    prepared = prepare_job(cfg, hydra_cfg)
    if not isinstance(prepared, PreparedJob):
        return prepared
    try:
        (result,) = train_jobs([prepared])
    except BaseException:  # SystemExit, SweepStopped: nothing of this job is left held
        _give_back(prepared)
        raise
    return finish_job(prepared, result)


def prepare_job(
    cfg: DictConfig, hydra_cfg: DictConfig, typed: Config | None = None
) -> PreparedJob | tuple[int, float]:
    """Everything of a job before training: the stop check, its directory's claim, whether and
    how it carries on an earlier attempt, its typed config (`typed`: the one a launcher's
    checks already made of `cfg`) and checkpoint. Returns the job,
    ready to train and holding its claim, or (exit code, objective) when it ends here (stopped,
    refused, already finished, failed), its claim given back. Never raises, except
    signals.SweepStopped in a stopped sweep's own process (the launcher's loop ends there)."""
    run_dir = Path(hydra_cfg.runtime.output_dir)
    single = hydra_cfg.mode == RunMode.RUN
    stop_file = None if single else Path(str(hydra_cfg.sweep.dir)).absolute() / signals.STOP_FILE
    stopped = signals.requested() or signals.read_stop_file(stop_file)
    if stopped:  # the sweep was asked to stop before this job began
        _leave_not_started(run_dir)
        if single:  # a Ctrl-C while starting that Python could not raise where it landed
            print_error(signals.INTERRUPTED_WHILE_STARTING)
        if not single and signals.requested() and finish.sweep_started():
            raise signals.SweepStopped(stopped)  # the sweep's own process: skip the rest at once
        return signals.exit_status(stopped), NOTHING
    held = claimed_by_checks(run_dir)  # a single run's: its checks claimed it, for its command
    lock = None
    if held is None:
        try:
            lock = claim(run_dir, "hydra.sweep.dir")
        except Busy as err:  # that directory is another process's: nothing is written there
            print_error(str(err))
            return int(ExitCode.CONFIG), NOTHING
        except WriteError as err:  # a full disk: the summary lists the job as not started
            print_error(f"{err.strerror}; this job was not run")
            remove_hydra_record(run_dir)
            return int(ExitCode.FAILED), NOTHING
    job = PreparedJob(run_dir, Path(hydra_cfg.runtime.cwd), single, stop_file, lock)
    if not single:
        job.job_label = " ".join(task_overrides(hydra_cfg)) or None
    try:
        found = held.found if held is not None else None
        ended = _prepare_claimed(job, cfg, task_overrides(hydra_cfg), typed, found)
    except BaseException as err:
        ended = err
    if ended is None:
        return job
    if isinstance(ended, BaseException):
        return finish_job(job, ended)  # its claim given back there
    _give_back(job)
    return ended


def train_jobs(jobs: list[PreparedJob]) -> list[dict | BaseException]:
    """Train prepared jobs together (one stack: training.runner.run_stack); per job, its history
    or the exception that ended it. Jobs of one call share where vae-train started, their
    sweep and its stop file."""
    first = jobs[0]
    try:
        from vae_runner.training.runner import run_stack  # imports torch

        return run_stack(
            [job.member() for job in jobs],
            start_dir=first.start_dir,
            stop_file=first.stop_file,
            sweep_dir=first.sweep_dir,
        )
    except (KeyboardInterrupt, signals.StopNow, Exception) as err:  # before any run's record
        return [err] * len(jobs)


def finish_job(job: PreparedJob, result: dict | BaseException) -> tuple[int, float]:
    """Everything of a job after training: its outcome from its history, or one line and the
    exit code for the exception that ended it; its directory's claim given back (and the
    directory itself when it stayed empty). Never raises, except what is no job's failure
    (SystemExit, signals.SweepStopped), after the claim is given back."""
    try:
        if isinstance(result, BaseException):
            return _ended_by(job, result)
        return _outcome(result)
    finally:
        _give_back(job)


def stopped_before_training(job: PreparedJob) -> int | None:
    """Before a launcher trains prepared jobs: the signal that asked their sweep to stop, if
    one did (then they are left not started). In the sweep's own process it raises
    signals.SweepStopped, as `prepare_job` does: the launcher skips the rest at once."""
    stopped = signals.requested() or signals.read_stop_file(job.stop_file)
    if stopped and signals.requested() and finish.sweep_started():
        raise signals.SweepStopped(stopped)
    return stopped


def leave_not_started(job: PreparedJob) -> None:
    """A prepared job that will not train (its sweep was stopped first): as a job that never
    began, the summary lists it as not started; its claim given back."""
    _leave_not_started(job.run_dir)
    _give_back(job)


def _give_back(job: PreparedJob) -> None:
    """The job's own claim, and its directory when the job left it empty."""
    if job.claim is not None:
        job.claim.release(remove_empty_dir=True)


def _prepare_claimed(
    job: PreparedJob,
    cfg: DictConfig,
    overrides: list[str],
    typed: Config | None = None,
    found: Checked | None = None,
):
    """Fill `job` in; returns None when it is to train, else how it ended: (code, objective)
    or the exception that ended it. `found`: what a single run's checks found (cli.checks),
    taken as it is."""
    run_dir, start_dir = job.run_dir, job.start_dir
    if cfg.resume is not None:
        from vae_runner.training.resume import RunFinished, load_for_resume  # torch

        job.fresh = False
        if found is not None and found.checkpoint is not None:
            # Recorded as the job's folder (Hydra's absolute output_dir), however resume= spelt it
            job.cfg = replace(found.typed, resume=str(run_dir))
            job.checkpoint = found.checkpoint
        else:
            try:
                job.cfg, job.checkpoint = load_for_resume(run_dir, overrides, cfg)
            except RunFinished as finished:  # refused, once what a kill left is repaired
                repair(run_dir, finished.history or {}, finished.cfg, start_dir)
                raise
        remove_temporary_files(run_dir)  # what kills left of interrupted writes
        return None
    if typed is None and found is not None:
        typed = found.typed
    job.cfg = typed if typed is not None else job_config(cfg)
    if not job.single and typed is None:
        # A sweep's jobs were checked by the `checked` sweeper (which typed them: `typed`,
        # or its launcher composes them again), but not by another sweeper (Optuna's):
        # check here, where the job's own record says why.
        check_job(job.cfg, start_dir)
    attempt = found.attempt if found is not None else None
    if attempt is None:
        try:
            attempt = carry_on(run_dir, job.cfg, overrides, _dir_key(job.single))
        except ConfigError as err:  # another run's record: never written into
            print_error(str(err))
            return int(ExitCode.CONFIG), NOTHING
    # Nothing of an earlier attempt's training is there (Hydra's .hydra/ of this one may be)
    job.fresh = attempt.history is None and not attempt.has_checkpoint
    if attempt.history and is_finished(attempt.history, job.cfg):
        repair(run_dir, attempt.history, job.cfg, start_dir)
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
        job.how = "resume" if extended(attempt.history, job.cfg) else "restart"
        job.checkpoint = _earlier_checkpoint(run_dir)
        check_checkpoint(run_dir, job.checkpoint, attempt.history)
    return None


def _ended_by(job: PreparedJob, err: BaseException) -> tuple[int, float]:
    """A job's end by `err` (before or while it trained), as one line and its exit code."""
    run_dir, single, typed, fresh = job.run_dir, job.single, job.cfg, job.fresh
    if isinstance(err, (KeyboardInterrupt, signals.StopNow)):
        # Ctrl-C before the run's handlers (imports), or a second signal before its record
        # existed (building the model); after that the run records its own stop.
        code = signals.exit_status(getattr(err, "signum", signal.SIGINT))
        if fresh and _has_history(run_dir):  # this attempt's own record says how it ended
            return code, NOTHING
        if not fresh:  # an earlier attempt's record and checkpoint are as they were
            print_error(f"interrupted before training went on; {run_dir} is as it was")
            return code, NOTHING
        print_error("interrupted before the first epoch; nothing to resume")
        _discard_or_record(run_dir, single, typed, "interrupted before the first epoch")
        return code, NOTHING
    if isinstance(err, WriteError):  # a full disk, a folder that became read-only
        print_error(f"{err.strerror}; the run directory keeps every finished epoch")
        return int(ExitCode.FAILED), NOTHING
    if not isinstance(err, Exception):  # SystemExit, SweepStopped: not a job's failure
        raise err
    line = explain(err)
    fault = out_of_memory_line(err)
    if line is None and fault is None:  # a bug or an environment fault: keep the traceback
        traceback.print_exception(err)
    message = line or fault or f"{type(err).__name__}: {err} (run directory: {run_dir})"
    print_error(message)
    kind = "config" if line is not None else "error"
    if fresh:
        _discard_or_record(run_dir, single, typed, message, kind)
    return int(ExitCode.CONFIG if line is not None else ExitCode.FAILED), NOTHING


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
