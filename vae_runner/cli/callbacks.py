"""vae-train's Hydra callbacks (conf/config.yaml, hydra.callbacks.runner).

- on_run_start: the checks of cli.checks, before Hydra creates the run directory.
- on_multirun_start: the sweep's own checks, and where its summary will go.
- on_job_start: torch's CPU threads for the run (a parallel launcher's job: in its process).
- on_multirun_end: the sweep summary (cli.train.main writes it when Hydra skips this call).

Imports no torch unless a job really runs: the callbacks are built for `--help` too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vae_runner.cli.checks import Refused, check_multirun, check_run
from vae_runner.config.overrides import task_overrides
from vae_runner.cpu_threads import cpu_count, default_threads
from vae_runner.sweep import finish


class RunnerCallbacks(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refusing(check_run, config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refusing(check_multirun, config)
        # Resolving ${now:...} here caches it, so the launcher makes this very folder.
        finish.state.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        finish.state.summary_attempted = False
        finish.start_stop_handling()
        _refusing(start_tracking, config)
        if "optuna" in str(config.hydra.sweeper.get("_target_", "")):
            import optuna  # its own handler writes colour codes, also into CI logs: use Hydra's

            optuna.logging.disable_default_handler()
            optuna.logging.enable_propagation()
            from vae_runner.sweep import optuna_log

            optuna_log.install(finish.state.sweep_dir)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Torch's CPU threads for this run, unless `device.threads` names them (the run sets
        those itself): a parallel launcher's job gets its share of the cores, any other run
        one thread on a small machine (cpu_threads.default_threads), else torch's default."""
        from hydra.types import RunMode

        cpus = cpu_count()
        share = None  # a parallel launcher's job: its share of the cores
        if config.hydra.mode == RunMode.MULTIRUN:
            share = job_threads(config.hydra.launcher, cpus)
        threads = share or default_threads(cpus)
        if threads:
            import torch

            torch.set_num_threads(threads)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        finish.write_sweep_summary()


def start_tracking(config: DictConfig) -> None:
    """logger=mlflow: the store and the sweep's parent run, before any job starts (processes
    that create a fresh SQLite store at the same moment fail)."""
    if config.get("logger") is None or config.logger.get("name") != "mlflow":
        return
    from vae_runner.cli.checks import job_config
    from vae_runner.report import tracking

    typed = job_config(config)
    tracking.start_sweep(
        typed.logger,
        finish.state.sweep_dir,
        task_overrides(config.hydra),
        Path(str(config.hydra.runtime.cwd)),
    )


def _refusing(check, config: DictConfig) -> None:
    """Run a check; its ConfigError becomes Refused, which Hydra's callback runner lets through."""
    from vae_runner.config.explain import explain
    from vae_runner.files import WriteError

    try:
        check(config)
    except Refused:
        raise
    except WriteError as err:  # its folder cannot be written (a full disk): a fault, one line
        raise Refused(f"{err.strerror}; nothing was run", code=1) from None
    except Exception as err:
        line = explain(err)
        if line is None:
            raise Refused(f"{type(err).__name__}: {err}", code=1) from err
        raise Refused(line) from None


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
