"""A sweep's end: its summary and its exit status, once, however the sweep ended.

Hydra runs `on_multirun_end` only when every job returned; when a job or the launcher raised, it
skips the callback. So the summary is written by the callback when Hydra calls it, and otherwise
by `finish_multirun`, which cli.train.main calls once Hydra has returned or raised.

The exit status is read from the job directories' history.json records, never from this process:
with joblib, submitit or SLURM the jobs ran in other processes.

Imports no torch.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path

from vae_runner.exit_codes import ExitCode, exit_code, sweep_exit_code
from vae_runner.files import WriteError
from vae_runner.report.console import log, make_console, print_error
from vae_runner.rundir import release_held
from vae_runner.sweep.resume import carry_on_command
from vae_runner.sweep.rundirs import KILLED, NOT_STARTED, collect_jobs, planned_overrides
from vae_runner.sweep.summary import CURVES_PNG, SUMMARY_CSV, SUMMARY_JSON, summarize
from vae_runner.training import signals


@dataclass
class SweepState:
    """This process's multirun, if one started: where, and whether its summary was attempted."""

    sweep_dir: Path | None = None
    summary_attempted: bool = False


state = SweepState()


def reset() -> None:
    """No multirun has started in this process yet (each vae-train command starts here: a
    program or a test that runs several in one process must not see an earlier one's sweep)."""
    state.sweep_dir, state.summary_attempted = None, False


UNFINISHED = ("interrupted", KILLED, NOT_STARTED)  # what resume=<sweep dir> carries on


def _stop_file() -> Path | None:
    return state.sweep_dir / signals.STOP_FILE if state.sweep_dir is not None else None


def start_stop_handling() -> None:
    """A stop request left by an earlier, killed run of this sweep must not stop this one; a
    signal to this process now stops every job (training.signals.install_sweep_stop)."""
    stop_file = _stop_file()
    stop_file.unlink(missing_ok=True)
    signals.install_sweep_stop(stop_file)


def sweep_started() -> bool:
    return state.sweep_dir is not None


def write_sweep_summary() -> None:
    """Write the sweep's summary files and print its table, once; never raise."""
    if state.sweep_dir is None or state.summary_attempted or not state.sweep_dir.is_dir():
        return
    state.summary_attempted = True
    summary = None
    try:
        summary = summarize(
            [state.sweep_dir], state.sweep_dir, sweep_over=True, console=make_console()
        )
    except WriteError as err:  # a full disk: the jobs' own records are intact
        print_error(f"the sweep summary could not be written: {err.strerror}")
    except Exception as err:  # the jobs' own records are intact: say so and carry on
        traceback.print_exc()
        print_error(f"the sweep summary could not be written: {type(err).__name__}: {err}")
    _finish_tracking(summary)


def discard_tracking() -> None:
    """A sweep refused before its jobs ran (the checked sweeper's checks): no parent run."""
    from vae_runner.report.tracking import PARENT_FILE

    if state.sweep_dir is None or not (state.sweep_dir / PARENT_FILE).is_file():
        return
    from vae_runner.report.tracking import discard_sweep

    discard_sweep(state.sweep_dir)


def _finish_tracking(summary: dict | None) -> None:
    """logger=mlflow: the summary on the sweep's parent run, and its end; never raises."""
    from vae_runner.report.tracking import PARENT_FILE

    if not (state.sweep_dir / PARENT_FILE).is_file():
        return
    from vae_runner.report.tracking import finish_sweep, first_line

    try:
        finish_sweep(
            state.sweep_dir,
            summary,
            stopped=signals.requested() is not None,
            files=(SUMMARY_JSON, SUMMARY_CSV, CURVES_PNG),
        )
    except Exception as err:  # the sweep's own files are written: say so and carry on
        print_error(f"MLflow could not record the sweep's end: {first_line(err)}")


def _print_carry_on(jobs: list) -> None:
    """A sweep with jobs stopped, killed or never started: the one command that carries all of
    them on (a grid sweep's; an Optuna search has no plan to carry on)."""
    if not any(job.status(sweep_over=True) in UNFINISHED for job in jobs):
        return
    if planned_overrides(state.sweep_dir) is not None:
        log.info(f"To carry the whole sweep on: {carry_on_command(state.sweep_dir)}")


def finish_multirun(hydra_failed: bool) -> int | None:
    """After Hydra returns (or raises) in a multirun: its summary, then the sweep's exit code.
    None when no multirun started in this process."""
    if state.sweep_dir is None:
        return None
    write_sweep_summary()
    _stop_file().unlink(missing_ok=True)
    release_held()  # the sweep directory's claim
    jobs = collect_jobs([state.sweep_dir]) if state.sweep_dir.is_dir() else []
    _print_carry_on(jobs)
    if signals.requested() is not None:  # stopped by a signal: as a shell reports it
        return signals.exit_status(signals.requested())
    if not jobs:
        return int(ExitCode.FAILED if hydra_failed else ExitCode.COMPLETED)
    code = sweep_exit_code([exit_code(job.record(sweep_over=True)) for job in jobs])
    # Every job completed but Hydra failed after them (the sweeper, a launcher): not a success.
    return int(ExitCode.FAILED) if code == ExitCode.COMPLETED and hydra_failed else code
