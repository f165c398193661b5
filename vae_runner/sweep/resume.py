"""`vae-train resume=<sweep dir> [epochs=N]`: a sweep's own command, rebuilt from its record.

A sweep is carried on by running its command again in its own directory (cli.job carries each
job on from what it left, and extends it when epochs= grows). The command is read back from
the sweep's `multirun.yaml` (Hydra's record of it): its settings, its launcher and sweeper, its
config directory; the sweep directory is the one given, and epochs= or device= replace the
recorded ones. Hydra then runs it as any `vae-train -m`: the checked sweeper checks every job
before any starts, the launcher runs them as it did the first time (joblib, submitit, SLURM),
and the sweep's end writes the summary and the exit status.

Imports no torch.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from omegaconf import OmegaConf

from vae_runner.config.errors import ConfigError
from vae_runner.config.overrides import (
    by_key,
    changeable,
    parse,
    refuse_changes,
    task_overrides,
)
from vae_runner.sweep.rundirs import is_run_dir

MULTIRUN_RECORD = "multirun.yaml"  # written by Hydra's basic sweeper (and `checked`, its child)
# Settings of the first sweep that the sweep directory given now replaces.
REPLACED_HYDRA_KEYS = ("hydra.mode", "hydra.sweep.dir")


def is_sweep_dir(path: Path) -> bool:
    """A folder of a sweep: its multirun.yaml, or run directories right below it (not one
    itself). Only one level is looked at: `resume=/` once walked the whole file system."""
    path = Path(path)
    if not path.is_dir() or is_run_dir(path):
        return False
    if (path / MULTIRUN_RECORD).is_file():
        return True
    try:
        return any(child.is_dir() and is_run_dir(child) for child in path.iterdir())
    except OSError:  # a folder that cannot be listed holds no sweep vae-train can carry on
        return False


def _record(sweep_dir: Path):
    try:
        record = OmegaConf.load(sweep_dir / MULTIRUN_RECORD)
        sweeper = str(record.hydra.sweeper._target_)
    except Exception:  # absent (Optuna's sweeper writes none) or unreadable
        record, sweeper = None, ""
    if record is None or not sweeper.endswith(("BasicSweeper", "CheckedSweeper")):
        raise ConfigError(
            f"resume={sweep_dir}: this sweep has no {MULTIRUN_RECORD} of the default sweeper "
            "to carry it on from (an Optuna search writes none): continue its jobs one at a "
            f"time with resume={sweep_dir}/<job>"
        )
    return record


def _config_flags(record) -> list[str]:
    """`-cd DIR` and `-cn NAME` as the first sweep was given them."""
    flags = []
    for source in record.hydra.runtime.config_sources:
        if source.provider == "command-line" and source.schema == "file":
            flags += ["--config-dir", str(source.path)]
    if record.hydra.job.config_name not in (None, "config"):
        flags += ["--config-name", str(record.hydra.job.config_name)]
    return flags


def _swept_epochs(record, task: list[str]) -> str | None:
    params = [f"{k}={v}" for k, v in (record.hydra.sweeper.params or {}).items()]
    for override in parse(params + task):
        if override.get_key_element() == "epochs" and override.is_sweep_override():
            return override.input_line
    return None


def multirun_arguments(sweep_dir: Path, given: list[str]) -> list[str]:
    """The `vae-train` arguments that carry the sweep in `sweep_dir` on, with the epochs= and
    device= of `given` (the command line of `vae-train resume=<sweep dir> ...`)."""
    refuse_changes(given)
    record = _record(sweep_dir)
    task = task_overrides(record.hydra)
    changes = {k: v for k, v in by_key(given).items() if changeable(k)}
    swept = _swept_epochs(record, task)
    if swept and "epochs" in changes:
        raise ConfigError(
            f"resume={sweep_dir} epochs={changes['epochs'].partition('=')[2]}: the sweep "
            f"varies epochs ({swept}); extend its jobs one at a time with "
            f"resume={sweep_dir}/<job> epochs=N"
        )
    # A recorded epochs= (or device=) is replaced where it stood; a new one comes last.
    recorded = by_key(task)
    task = [changes.pop(k) if k in changes else o for k, o in recorded.items()]
    task += list(changes.values())
    hydra = [
        str(o)
        for o in record.hydra.overrides.hydra
        if parse([str(o)])[0].key_or_group not in REPLACED_HYDRA_KEYS
    ]
    where = f"hydra.sweep.dir={Path(sweep_dir).expanduser().absolute()}"
    return ["--multirun", *_config_flags(record), *hydra, *task, where]


def carry_on_command(sweep_dir: Path) -> str:
    """What a user types to carry the whole sweep on (its jobs not started included)."""
    return f"vae-train resume={shlex.quote(str(Path(sweep_dir).absolute()))}"
