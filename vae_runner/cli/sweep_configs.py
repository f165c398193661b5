"""Every job of a basic sweep composed and typed for the `checked` sweeper: once per setting.

Hydra composes a job in about 0.3 s (its defaults list, each YAML file, the merges), so
`-m seeds=1000` spent minutes composing before its first job. Jobs that differ only in their
`seed=<int>` override compose to one config but for `seed` and Hydra's record of the overrides
(`hydra.overrides.task`, `hydra.job.override_dirname`): the first job of each setting is
composed by Hydra, and each other one is that config with its own `seed=` applied as Hydra
applies an override (OmegaConf.update, which type-checks it), its record set as Hydra sets it,
and its typed config made again with the schema's rules (`dataclasses.replace` runs
`Config.__post_init__`, where `seed`'s range rule is). Anything else (`+seed=`, a seed that is
not an int, two seed overrides) is composed by Hydra, and so is a job whose derivation fails,
so that its error is Hydra's own.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from omegaconf import DictConfig, OmegaConf

from vae_runner.config.hydra_private import overrides_dirname
from vae_runner.config.schema import Config

SEED = "seed"

# Hydra's composition of a job from its overrides, and its `hydra.job.override_dirname` of
# the job's overrides (as the config's hydra.job.config.override_dirname says to join them).
Load = Callable[[list[str]], DictConfig]
Dirname = Callable[[list[Override], DictConfig], str]


@dataclass(frozen=True)
class PlannedJob:
    """A job's overrides (as Hydra's sweeper plans them), parsed as Hydra parses them."""

    overrides: tuple[str, ...]
    parsed: tuple[Override, ...]

    def seed(self) -> Override | None:
        """Its one plain `seed=<int>` override, if that is how it sets the seed."""
        seeds = [o for o in self.parsed if o.key_or_group == SEED]
        if len(seeds) != 1:
            return None
        (override,) = seeds
        plain = override.type == OverrideType.CHANGE and override.package is None
        value = override.value()
        return override if plain and type(value) is int else None

    def setting(self) -> tuple[str, ...] | None:
        """What it shares with every job of its setting (the overrides but its seed), or None
        when it does not set its seed plainly (it is then composed on its own)."""
        seed = self.seed()
        if seed is None:
            return None
        return tuple(o.input_line if o is not seed else "<seed>" for o in self.parsed)

    def task(self) -> list[Override]:
        """Its overrides Hydra records as the task's (`hydra.overrides.task`)."""
        return [o for o in self.parsed if not o.is_hydra_override()]


def dirname(overrides: list[Override], cfg: DictConfig) -> str:
    """`hydra.job.override_dirname` of a job's task overrides, made by Hydra's own function as
    its config says (`hydra.job.config.override_dirname`)."""
    how = cfg.hydra.job.config.override_dirname
    return overrides_dirname(overrides, how.exclude_keys, how.item_sep, how.kv_sep)


def plan(jobs: list[list[str]]) -> list[PlannedJob]:
    parser, parsed = OverridesParser.create(), {}
    planned = []
    for job in jobs:
        for line in job:  # each distinct override parsed once (seed=0..999 and a few others)
            if line not in parsed:
                parsed[line] = parser.parse_override(line)
        planned.append(PlannedJob(tuple(job), tuple(parsed[line] for line in job)))
    return planned


# What a job is checked with: its composed config and, when derived, its typed config (else
# None: the check types it); returns the typed config.
Check = Callable[[DictConfig, "Config | None"], Config]


class JobConfigs:
    """Each job's composed config, composed by Hydra once per setting, checked by `check`."""

    def __init__(self, load: Load, dirname: Dirname, keep_jobs: bool = False) -> None:
        """`keep_jobs`: also keep each job that has no seed of its own to derive (its whole
        overrides are its key), for a launcher that asks for every job again (the stacked
        one): a config per such job, so only when one will ask."""
        self._load, self._dirname, self._keep_jobs = load, dirname, keep_jobs
        self._settings: dict[tuple[str, ...], tuple[DictConfig, Config]] = {}

    def checked(self, job: PlannedJob, check: Check) -> tuple[DictConfig, Config]:
        """The job's config as Hydra composes it (without hydra.job.num, which the launcher
        sets) and its typed config, once `check` passed them. A derived config is its
        setting's, changed in place: it holds only until the next job's is asked for."""
        setting = job.setting()
        key = setting if setting is not None else ("<job>", *job.overrides)
        known = self._settings.pop(key, None)
        derived = None
        if known is not None and setting is None:
            derived = known  # the same overrides compose to the same config
        elif known is not None:
            # if it cannot be derived, Hydra composes it: its error is then Hydra's own
            with contextlib.suppress(Exception):
                derived = self._derive(*known, job)
        if derived is not None:
            cfg, typed = derived[0], check(*derived)
        else:
            cfg = self._load(list(job.overrides))
            typed = check(cfg, None)
        # A job kept whole is asked for once more (by the launcher), then forgotten: the
        # launcher keeps its own copy of each job's config, so the two never pile up.
        if setting is not None or (self._keep_jobs and known is None):
            self._settings[key] = (cfg, typed)
        return cfg, typed

    def _derive(self, cfg: DictConfig, typed: Config, job: PlannedJob) -> tuple[DictConfig, Config]:
        seed = job.seed()
        assert seed is not None
        OmegaConf.update(cfg, SEED, seed.value(), merge=True)  # as Hydra applies `seed=k`
        task = job.task()
        cfg.hydra.overrides.task = [o.input_line for o in task]  # as Hydra records them
        cfg.hydra.job.override_dirname = self._dirname(task, cfg)
        return cfg, dataclasses.replace(typed, seed=cfg.seed)  # Config's rules run again
