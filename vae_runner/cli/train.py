"""`vae-train`: Hydra's command line around cli.job.run_job, with exit codes Hydra does not give.

Hydra parses the command line, composes, sweeps and launches; vae-train adds its checks inside
that flow (cli.callbacks, the `checked` sweeper) and turns what ends it into one line and an
exit code: a refusal (exit 2), Hydra's own compose error about the user's input (exit 2), a job's
recorded outcome, or a sweep's (read from its jobs' records).

Imports no torch: `vae-train --help` and `vae-train --cfg job` answer at once.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vae_runner import __version__
from vae_runner.cli.checks import CarryOnSweep, Refused
from vae_runner.config.explain import explain
from vae_runner.config.hydra_private import run_hydra
from vae_runner.config.resolvers import register
from vae_runner.cpu_threads import wait_passively
from vae_runner.exit_codes import ExitCode
from vae_runner.faults import worker_died_line
from vae_runner.files import WriteError
from vae_runner.report.console import log, print_error
from vae_runner.rundir import release_held, undo_unstarted
from vae_runner.sweep import finish
from vae_runner.training import signals
from vae_runner.training.signals import take_over_sigint

# The single run's exit code, set by the job (run_job); a sweep's comes from its records.
_single_run: dict[str, int] = {}
CONFIG_PATH, CONFIG_NAME = "pkg://vae_runner.conf", "config"


def _task(cfg: DictConfig) -> float:
    from hydra.types import RunMode

    from vae_runner.cli.job import run_job
    from vae_runner.cli.orphan import watched_job

    with watched_job(HydraConfig.get()):  # a joblib worker: ends if the sweep's process does
        code, objective = run_job(cfg, HydraConfig.get())
    if HydraConfig.get().mode == RunMode.RUN:
        _single_run["code"] = code
    return objective


_hydra_main = hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)(
    _task
)


def _print_version() -> None:
    """Hydra's `--version` names only Hydra: say which vae-runner it is first. Only an exact
    `--version` (or Hydra's abbreviation of it) is looked for; Hydra parses everything."""
    args = sys.argv[1:]
    if any(len(a) >= 5 and "--version".startswith(a) for a in args):
        print(f"vae-runner {__version__}")


def main() -> None:
    wait_passively()  # before anything imports torch: its OpenMP runtime reads it once
    register()
    finish.reset()
    _single_run.clear()
    _print_version()
    # With HYDRA_FULL_ERROR set, Hydra raises its compose errors (lr=abc, optimizer=foo) to us
    # instead of printing them: explain() then says them in one line from the exception's fields.
    wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_failed, code = _launch(_hydra_main, wants_traceback)
        sweep_code = finish.finish_multirun(hydra_failed)  # a sweep's summary, in its claim
    finally:
        release_held()  # the command's claims: a single run's folder, a sweep's (rundir)
    if sweep_code is not None and code in (None, ExitCode.FAILED):
        code = sweep_code
    sys.exit(code if code is not None else _single_run.get("code", ExitCode.COMPLETED))


def _launch(launch, wants_traceback: bool) -> tuple[bool, int | None]:
    """Run Hydra (`launch`); returns whether it failed and the exit code it decided, if any."""
    hydra_failed, code = False, None
    try:
        launch()
    except CarryOnSweep as carry:  # resume=<sweep dir>: its own command, as Hydra's multirun
        arguments = carry.arguments
        log.info(f"{carry.message}: vae-train {shlex.join(arguments)}")
        again = functools.partial(run_hydra, _task, arguments, CONFIG_PATH, CONFIG_NAME)
        return _launch(again, wants_traceback)
    except SystemExit as exit_:
        if not finish.sweep_started():
            if exit_.code == ExitCode.CONFIG:  # argparse refused the command line: its usage
                print_error(_usage_hint(sys.argv[1:]))
            raise
        # Something inside the sweep (a user's callback, a plugin) ended it: its summary and
        # its exit status still come from the jobs' records.
        hydra_failed = True
    except Refused as refused:
        finish.discard_tracking()  # a refused sweep's MLflow parent run
        release_held()  # the folders its checks claimed, when they stayed empty
        if refused.code == ExitCode.FAILED and refused.__cause__ is not None:
            traceback.print_exception(refused.__cause__)
        if refused.error:
            print_error(refused.message)
        else:
            log.info(refused.message)
        sys.exit(refused.code)  # before any job or directory: no sweep summary either
    except signals.SweepStopped:  # a stopped sweep skipped its jobs not started
        hydra_failed = True
    except BrokenPipeError:
        raise  # entry() quiets it
    except Exception as err:
        hydra_failed = True
        line = explain(err)  # Hydra's MissingConfigException is an OSError too
        fault = worker_died_line(err)
        if fault is not None:  # the jobs' records say the rest: the summary, the exit code
            if wants_traceback:
                traceback.print_exc()
            print_error(fault)
            code = ExitCode.FAILED
        elif line is None and isinstance(err, OSError):
            code = _unwritable_record(err)  # Hydra could not write a run's .hydra/: a full disk
        else:
            if wants_traceback or line is None:
                traceback.print_exc()
            print_error(line or f"{type(err).__name__}: {err}")
            code = ExitCode.CONFIG if line is not None else ExitCode.FAILED
    return hydra_failed, code


# Hydra's own flags (`vae-train --help` lists them): argparse takes them anywhere, but the
# settings only in one run, so settings on both sides of one are refused.
HYDRA_FLAGS = {"-m", "--multirun", "-c", "--cfg", "-cd", "--config-dir", "-cp", "--config-path"}
HYDRA_FLAGS |= {"-cn", "--config-name", "-p", "--package", "-r", "--run", "--resolve", "--info"}


def _usage_hint(args: list[str]) -> str:
    """After argparse refused the command line (it has printed why): the likely fix. Read
    only to choose these words; Hydra alone parses the command line."""
    settings = [i for i, a in enumerate(args) if "=" in a and not a.startswith("-")]
    for i, arg in enumerate(args):
        if arg in HYDRA_FLAGS and settings and settings[0] < i < settings[-1]:
            return (
                f"{arg} comes between settings: put Hydra's flags first, then the settings "
                f"(vae-train {arg} ... lr=1e-3 epochs=20)"
            )
    return "settings are key=value arguments without dashes: lr=1e-3 epochs=20"


def _unwritable_record(err: OSError) -> int:
    """One line for a run record Hydra could not write; what it began of it is removed."""
    undone = undo_unstarted(finish.state.sweep_dir)
    if isinstance(err, WriteError):  # ours: its message names the file already
        reason = err.strerror
    else:
        where = err.filename or (f"the run record in {undone[0]}" if undone else "a run record")
        reason = f"cannot write {where}: {err.strerror or err}"
    sweep_dir = finish.state.sweep_dir
    ran = sweep_dir is not None and any(Path(sweep_dir).glob("**/history.json"))
    kept = "the jobs that ran keep their records" if ran else "nothing was run"
    print_error(f"{reason}; {kept}")
    return ExitCode.FAILED


def interrupted_while_starting() -> None:
    """The one line, then exit 130 at once, without the interpreter's exit hooks: a library
    left half-imported by a Ctrl-C (Python's own handler, before cli.start took it over) may
    print from its hooks (torch's FakeTensor cache statistics). Nothing of vae-train's needs
    them before a run began: no file is being written, the checks' claims are released, and a
    lock ends with its process."""
    print_error(signals.INTERRUPTED_WHILE_STARTING)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(ExitCode.INTERRUPTED))


def entry() -> None:
    """main(), quiet when its output pipe closes (`vae-train --help | head`), and one line for a
    Ctrl-C before any run began (while Hydra and torch start); the console script is cli.start's,
    which takes over SIGINT before this module's imports."""
    take_over_sigint()
    try:
        main()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(ExitCode.FAILED)
    except KeyboardInterrupt:  # Python's own handler (vae-train started without cli.start)
        # It can land after Hydra made the run's folder and .hydra/ (its logging, the job's
        # callbacks) but before the run began: "nothing was run" leaves nothing either.
        with contextlib.suppress(Exception):
            undo_unstarted(finish.state.sweep_dir)
        interrupted_while_starting()


if __name__ == "__main__":
    entry()
