"""A sweep's end: its summary (Hydra callback, fallback, `vae-summary`) and its exit status.

Hydra runs `on_multirun_end` only when every job returned; when one raised, it skips the callback
and exits 1. So the summary is written by the callback when Hydra calls it, and otherwise by
`exit_if_multirun`, which `cli.main` calls once Hydra has returned: once either way.

The exit status is read from the job directories' history.json records, never from this process:
with joblib, submitit or SLURM the jobs ran in other processes.

Imports no torch (the callback is instantiated for every run, also `--help`-fast ones).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vae_runner.console import make_console, print_error, print_sweep_summary
from vae_runner.exit_codes import ExitCode, sweep_exit_code
from vae_runner.history import HISTORY_FILE
from vae_runner.rundirs import collect_jobs, is_run_dir
from vae_runner.summary import build_summary, read_optuna_results, write_summary


@dataclass
class SweepState:
    """This process's multirun, if one started: where, and whether its summary was attempted."""

    sweep_dir: Path | None = None
    summary_attempted: bool = False


state = SweepState()


class SweepSummary(Callback):
    """Registered in conf/config.yaml under hydra.callbacks."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Resolving ${now:...} here caches it in the config that the launcher reads: same folder.
        state.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        state.summary_attempted = False
        if "optuna" in str(config.hydra.sweeper.get("_target_", "")):
            import optuna  # its own handler writes colour codes, also into CI logs: use Hydra's

            optuna.logging.disable_default_handler()
            optuna.logging.enable_propagation()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Runs in the job's own process (a joblib worker, a submitit or SLURM job).
        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN:
            return
        threads = job_threads(config.hydra.launcher, cpu_count())
        if threads:
            import torch

            torch.set_num_threads(threads)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_sweep_summary()


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def job_threads(launcher: Mapping, cpus: int) -> int | None:
    """Torch threads for one job of a parallel launcher, or None to leave torch's default.

    joblib runs `n_jobs` jobs at once (-1: one per core), and each would otherwise take every
    core: each job gets max(1, cores // parallel jobs). A submitit job gets `cpus_per_task`, 1 when
    unset: SLURM's default allocation, and submitit_local starts every job of a batch at once.
    """
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        n_jobs = int(launcher.get("n_jobs") or 1)
        parallel = n_jobs if n_jobs > 0 else cpus + 1 + n_jobs  # joblib's rule for negatives
        return max(1, cpus // min(max(1, parallel), cpus))
    if "submitit" in target:
        return int(launcher.get("cpus_per_task") or 1)
    return None


def write_sweep_summary() -> None:
    """Write the sweep's summary files and print its table, once; never raise."""
    if state.sweep_dir is None or state.summary_attempted:
        return
    state.summary_attempted = True
    try:
        summarize([state.sweep_dir], state.sweep_dir, sweep_over=True, console=make_console())
    except Exception as err:  # the jobs' own records are intact: say so and carry on
        traceback.print_exc()
        print_error(f"the sweep summary could not be written: {type(err).__name__}: {err}")


def multirun_exit_code(hydra_code: Any) -> int:
    """0 when every job completed; else the highest job code (see exit_codes.sweep_exit_code)."""
    hydra_failed = hydra_code not in (0, None)
    jobs = collect_jobs([state.sweep_dir]) if state.sweep_dir and state.sweep_dir.is_dir() else []
    if not jobs:
        # Hydra refused a job's overrides before launching any (e.g. optimizer=adam,foo).
        return int(ExitCode.CONFIG if hydra_failed else ExitCode.COMPLETED)
    code = sweep_exit_code([job.status(sweep_over=True) for job in jobs])
    # Every job completed but Hydra failed after them (the sweeper, a launcher): not a success.
    return int(ExitCode.FAILED) if code == ExitCode.COMPLETED and hydra_failed else code


def exit_if_multirun(hydra_code: Any = 0) -> None | NoReturn:
    """After Hydra returns: when a multirun started, write its summary if Hydra skipped the
    callback, and exit with the sweep's status. Returns (does nothing) after a single run."""
    if state.sweep_dir is None:
        return None
    write_sweep_summary()
    sys.exit(multirun_exit_code(hydra_code))


# --------------------------------------------------------------------------- entry points
def summarize(
    sources: list[Path], out_dir: Path, *, sweep_over: bool = False, console=None
) -> dict | None:
    """Collect, write the three files into `out_dir` and print the ranked table. None: no runs."""
    jobs = collect_jobs(sources)
    if not jobs:
        return None
    summary = build_summary(jobs, sources, sweep_over=sweep_over)
    optuna = read_optuna_results(sources[0]) if len(sources) == 1 else None
    if optuna is not None:
        summary["optuna"] = optuna
    write_summary(summary, jobs, out_dir)
    where = "Sweep directory" if len(sources) == 1 and Path(out_dir) == Path(sources[0]) else None
    print_sweep_summary(console or make_console(), summary, out_dir, where or "Summary directory")
    return summary


def summary_main(argv: list[str] | None = None) -> None:
    """`vae-summary DIR...`: a sweep's summary again, or one over any set of run directories."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="vae-summary",
        description="Rank runs by best test loss: writes sweep_summary.json, sweep_summary.csv "
        "and curves.png, and prints the table. Exit status: 0 when every run completed, else "
        "the highest of the runs' exit codes (as vae-train -m).",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="sweep or run dirs")
    parser.add_argument(
        "--out",
        type=Path,
        help="where the files go (default: DIR, when DIR is one sweep directory)",
    )
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        print_error(f"not a directory: {', '.join(missing)}")
        sys.exit(ExitCode.CONFIG)
    out = args.out
    if out is None:
        if len(args.dirs) > 1 or is_run_dir(args.dirs[0]):
            print_error(
                "only a single sweep directory holds its own summary: "
                "choose where this one goes with --out DIR"
            )
            sys.exit(ExitCode.CONFIG)
        out = args.dirs[0]
    summary = summarize(args.dirs, out)
    if summary is None:
        print_error(
            f"no run directories (with {HISTORY_FILE} or .hydra/) in "
            f"{', '.join(str(d) for d in args.dirs)}"
        )
        sys.exit(ExitCode.CONFIG)
    sys.exit(summary["exit_code"])
