"""`vae-train`: Hydra's command line around app.run_job, with exit codes Hydra does not give.

Imports no torch: `vae-train --help` and `vae-train --cfg job` answer at once.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vae_runner.config import register_configs
from vae_runner.console import print_error
from vae_runner.exit_codes import ExitCode, outcome
from vae_runner.history import HISTORY_FILE
from vae_runner.precheck import check_command_line
from vae_runner.sweep import exit_if_multirun


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _train(cfg: DictConfig) -> float:
    from vae_runner.app import run_job

    hydra_cfg = HydraConfig.get()
    return run_job(cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task))


def _refuse_existing_run_dir(argv: list[str]) -> None:
    """Stop before Hydra rewrites .hydra/ of a finished run named by `hydra.run.dir=...`."""
    if "-m" in argv or "--multirun" in argv or _last_value(argv, "resume") not in (None, "null"):
        return
    chosen = _last_value(argv, "hydra.run.dir")
    if chosen and (Path(chosen) / HISTORY_FILE).exists():
        print_error(
            f"{chosen} already holds a run ({HISTORY_FILE}); it is not overwritten: "
            f"choose another hydra.run.dir, or continue it with resume={chosen}"
        )
        sys.exit(ExitCode.CONFIG)


def _last_value(argv: list[str], key: str) -> str | None:
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"{key}=")]
    return values[-1] if values else None


def _resume_into_its_directory(argv: list[str]) -> list[str]:
    """`resume=DIR` runs in DIR itself, and Hydra must not rewrite DIR/.hydra (the original)."""
    target = _last_value(argv, "resume")
    if target in (None, "null"):
        return argv
    if "-m" in argv or "--multirun" in argv:
        print_error("resume= continues one run: drop -m (resume each sweep job on its own)")
        sys.exit(ExitCode.CONFIG)
    path = str(Path(target.strip("'\"")).expanduser().resolve())
    if not Path(path).is_dir():
        print_error(f"resume={target}: no such directory")
        sys.exit(ExitCode.CONFIG)
    if "'" in path or "\\" in path:
        print_error(f"resume={target}: a run directory whose path has quotes cannot be resumed")
        sys.exit(ExitCode.CONFIG)
    kept = [
        a for a in argv if not a.startswith(("resume=", "hydra.run.dir=", "hydra.output_subdir="))
    ]
    return [*kept, f"resume='{path}'", f"hydra.run.dir='{path}'", "hydra.output_subdir=null"]


def _refuse_unwritable_output(argv: list[str]) -> None:
    """Say in one line that the output folder cannot be made (Hydra would print a traceback).

    The test is real: a temporary folder is made (and removed) in the deepest existing folder
    on the way, since permission bits do not tell the whole story (root, /proc, read-only
    mounts)."""
    multirun = "-m" in argv or "--multirun" in argv
    chosen = _last_value(argv, "hydra.sweep.dir" if multirun else "hydra.run.dir")
    target = Path(chosen.strip("'\"")).expanduser() if chosen else Path("outputs")
    existing = target.absolute()
    while not existing.exists():
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        tempfile.TemporaryDirectory(dir=existing).cleanup()
    except OSError as err:
        print_error(
            f"cannot create the run directory {target}: {existing} is not a writable folder "
            f"({err.strerror or err}); choose another with hydra.run.dir=... "
            "(hydra.sweep.dir=... for -m)"
        )
        sys.exit(ExitCode.CONFIG)


def _print_help(args: list[str]) -> None:
    """`vae-train --help` from our help template, without Hydra's help machinery.

    Hydra builds its help by composing every option of every config group, its own plugins'
    included: 2 to 5 s here. Our template lists the groups itself, so only the config the
    other arguments select is composed (0.3 s). `--hydra-help` is still Hydra's.
    """
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    overrides = [a for a in args if not a.startswith("-")]
    with initialize_config_module("vae_runner.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    help_cfg = cfg.hydra.help
    job = OmegaConf.to_yaml({k: v for k, v in cfg.items() if k != "hydra"})
    text = help_cfg.template.replace("$CONFIG", job)
    text = text.replace("${hydra.help.header}", help_cfg.header)
    print(text.replace("${hydra.help.footer}", help_cfg.footer))


def main() -> None:
    register_configs()
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        _print_help(sys.argv[1:])
        sys.exit(ExitCode.COMPLETED)
    problem = check_command_line(sys.argv[1:])
    if problem:
        print_error(problem)
        sys.exit(ExitCode.CONFIG)
    sys.argv[1:] = _resume_into_its_directory(sys.argv[1:])
    _refuse_existing_run_dir(sys.argv[1:])
    _refuse_unwritable_output(sys.argv[1:])
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


def entry() -> None:
    """The console script: main(), quiet when its output pipe closes (`vae-train --help | head`)."""
    try:
        main()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(ExitCode.FAILED)


if __name__ == "__main__":
    main()
