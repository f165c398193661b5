"""The Hydra job: composed DictConfig -> typed Config -> run(), with failures turned into statuses.

A job never raises and never calls sys.exit: an exception would make Hydra skip its end-of-sweep
callbacks and sys.exit would abort the other jobs of a sweep. Instead each job records its exit
code in `outcome`, and `cli.main` exits with it once Hydra returns.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vae_runner.config import Config, ConfigError, unknown_keys
from vae_runner.console import print_error
from vae_runner.exit_codes import ExitCode, outcome, status_exit_code
from vae_runner.history import HISTORY_FILE


def exit_code_of(history: dict, cfg: Config) -> ExitCode:
    """A finished job's exit code: exit_codes' status mapping, plus what only the job knows."""
    if history["status"] == "diverged" and cfg.on_divergence == "stop":
        return ExitCode.COMPLETED
    if history["status"] == "interrupted" and history.get("interrupted_by") == "SIGTERM":
        return ExitCode.TERMINATED
    return ExitCode(status_exit_code(history["status"]))


def to_typed(cfg: DictConfig) -> Config:
    """Validate a composed config and build the typed objects (runs every __post_init__)."""
    extra = unknown_keys(cfg)
    if extra:
        raise ConfigError(
            f"unknown config key {', '.join(extra)}: check the spelling "
            "(`vae-train --cfg job` prints every key)"
        )
    try:
        typed = OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except Exception as err:  # OmegaConf may wrap what __post_init__ raised
        cause = err.__cause__ or err.__context__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise
    assert isinstance(typed, Config)
    return typed


def _refuse_used_dir(run_dir: Path) -> None:
    if (run_dir / HISTORY_FILE).exists():
        raise ConfigError(
            f"{run_dir} already holds a run ({HISTORY_FILE}); it is not overwritten: "
            "choose another directory with hydra.run.dir=..."
        )


def run_job(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> float:
    """Run one job and record its exit code. Returns the best test loss (inf if there is none)."""
    outcome.job_started = True
    code, objective = ExitCode.FAILED, float("inf")
    if outcome.interrupted:  # Ctrl-C in an earlier job of this sweep: start nothing more
        outcome.codes.append(int(ExitCode.INTERRUPTED))
        return objective
    try:
        checkpoint = None
        if cfg.resume is not None:
            # the saved config decides, so the command line's is not checked on its own
            from vae_runner.resume import load_for_resume  # imports torch

            typed, checkpoint = load_for_resume(run_dir, overrides, cfg)
        else:
            typed = to_typed(cfg)
            _refuse_used_dir(run_dir)
        from vae_runner.runner import run  # imports torch: only once a job really runs

        history = run(typed, run_dir, checkpoint=checkpoint)
        code = exit_code_of(history, typed)
        if history["status"] == "completed" and history["best_test_loss"] is not None:
            objective = history["best_test_loss"]
    except KeyboardInterrupt:  # Ctrl-C before training started (imports, data loading)
        print_error("interrupted before the first epoch; nothing to resume")
        code = ExitCode.INTERRUPTED
    except OSError as err:  # a full disk, a folder that cannot be written: no traceback needed
        print_error(
            f"{err.strerror or err} ({err.filename or run_dir}); the run directory "
            "keeps every finished epoch"
        )
        code = ExitCode.FAILED
    except ConfigError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            traceback.print_exc()
        print_error(str(err))
        code = ExitCode.CONFIG
    except Exception as err:  # a bug or an environment fault: keep the traceback
        traceback.print_exc()
        print_error(f"{type(err).__name__}: {err} (run directory: {run_dir})")
        code = ExitCode.FAILED
    if code in (ExitCode.INTERRUPTED, ExitCode.TERMINATED):
        outcome.interrupted = True
    outcome.codes.append(int(code))
    return objective
