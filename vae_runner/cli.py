"""`vae-train`: Hydra's command line around app.run_job, with exit codes Hydra does not give.

Imports no torch: `vae-train --help` and `vae-train --cfg job` answer at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vae_runner.config import register_configs
from vae_runner.console import print_error
from vae_runner.exit_codes import ExitCode, outcome
from vae_runner.history import HISTORY_FILE
from vae_runner.sweep import exit_if_multirun


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _train(cfg: DictConfig) -> float:
    from vae_runner.app import run_job

    return run_job(cfg, Path(HydraConfig.get().runtime.output_dir))


def _refuse_existing_run_dir(argv: list[str]) -> None:
    """Stop before Hydra rewrites .hydra/ of a finished run named by `hydra.run.dir=...`."""
    if "-m" in argv or "--multirun" in argv:
        return
    dirs = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    if dirs and (Path(dirs[-1]) / HISTORY_FILE).exists():
        print_error(
            f"{dirs[-1]} already holds a run ({HISTORY_FILE}); it is not overwritten: "
            "choose another hydra.run.dir"
        )
        sys.exit(ExitCode.CONFIG)


def main() -> None:
    register_configs()
    _refuse_existing_run_dir(sys.argv[1:])
    try:
        _train()
    except SystemExit as exit_:
        exit_if_multirun(exit_.code)  # a sweep: its summary, then its status (sweep.py)
        # Hydra exits 1 when it rejects the command line or the config, before any job starts.
        if exit_.code not in (0, None) and not outcome.job_started:
            sys.exit(ExitCode.CONFIG)
        raise
    exit_if_multirun()
    sys.exit(outcome.exit_code())


if __name__ == "__main__":
    main()
