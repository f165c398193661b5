"""`hydra/sweeper=checked` (vae-train's default): Hydra's basic sweeper, with every job's composed
config typed and checked before the first job is launched and before the sweep directory is
made. A bad value in any job is one line and exit 2, and nothing has trained or been written.

Hydra imports every module of `hydra_plugins` whenever any Hydra app starts (without putting it
in sys.modules, so no `from __future__ import annotations` here): this one imports
nothing heavy, and vae_runner's checks only when a sweep runs.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

# Hydra's grid sweeper and its override_dirname have no public import path; this is the only
# module of vae_runner that imports hydra._internal, so a move upstream is mended here alone.
from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig


@dataclass
class CheckedSweeperConf:
    _target_: str = "hydra_plugins.vae_runner_sweeper.checked_sweeper.CheckedSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="checked", node=CheckedSweeperConf)


MAX_SEEDS = 1000  # the bound config.schema.Config puts on `seeds`


class SeedsConflict(ValueError):
    """`seeds=N` beside a `seed=` override: which seeds to run is unclear."""


def expand_seeds(arguments: List[str], default: Optional[int]) -> List[str]:
    """`seeds=N` (from the command line, else `default`: the config's, e.g. an experiment's)
    becomes the sweep dimension `seed=range(N)`, so each job records its own `seed=k` and
    nothing else. A `seed=` of the command line wins over a preset's `seeds`; beside a
    `seeds=` of the command line it is refused."""
    parsed = OverridesParser.create().parse_overrides(arguments)
    given = [o for o in parsed if o.get_key_element() == "seeds"]
    kept = [a for a, o in zip(arguments, parsed, strict=True) if o.get_key_element() != "seeds"]
    count = default
    if given:
        value = given[-1].value()
        count = None if value is None else int(value)
        # The typed config's own rule, here too: the jobs never see `seeds`, so seeds=0 would
        # otherwise run one job with the configured seed instead of being refused.
        if count is not None and not 1 <= count <= MAX_SEEDS:
            raise ValueError(
                f"seeds must be a count from 1 to {MAX_SEEDS} (got {count}), e.g. seeds=3"
            )
    seed_given = [o.input_line for o in parsed if o.get_key_element() == "seed"]
    if seed_given and given and count is not None:
        raise SeedsConflict(
            f"seeds={count} runs seed=0..{count - 1} and {seed_given[0]} names seeds too: "
            "give one of them"
        )
    if count is None or count <= 1 or seed_given:
        return kept
    return kept + [f"seed=range({count})"]


def planned_jobs(arguments: List[str], seeds: Optional[int] = None) -> List[List[str]]:
    """Every job's overrides, in job order, as the checked sweeper expands `arguments` (with
    the config's `seeds`)."""
    expanded = expand_seeds(arguments, seeds)
    overrides = OverridesParser.create().parse_overrides(expanded)
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def dirname(overrides: List[Override], cfg: DictConfig) -> str:
    """`hydra.job.override_dirname` of a job's task overrides, made by Hydra's own function as
    its config says (`hydra.job.config.override_dirname`)."""
    how = cfg.hydra.job.config.override_dirname
    return get_overrides_dirname(
        overrides=overrides,
        exclude_keys=how.exclude_keys,
        item_sep=how.item_sep,
        kv_sep=how.kv_sep,
    )


class CheckedSweeper(BasicSweeper):
    def sweep(self, arguments: List[str]) -> Any:
        from vae_runner.cli.checks import Once, check_sweep_job, check_sweep_overrides
        from vae_runner.cli.sweep_configs import JobConfigs, plan

        assert self.config is not None and self.hydra_context is not None
        preset = self._parse_config()  # hydra.sweeper.params, which super().sweep adds itself
        try:
            every = expand_seeds(preset + list(arguments), self.config.get("seeds"))
        except (SeedsConflict, ValueError) as err:
            from vae_runner.cli.checks import Refused

            raise Refused(str(err)) from None
        arguments = every[len(preset) :]  # the preset's params come first, unchanged
        check_sweep_overrides(OverridesParser.create().parse_overrides(every))
        jobs = plan(planned_jobs(every))
        loader = self.hydra_context.config_loader
        # Hydra composes a job of each setting; its other seeds are derived (cli.sweep_configs)
        configs = JobConfigs(lambda job: loader.load_sweep_config(self.config, job), dirname)
        once = Once()
        for number, job in enumerate(jobs):
            check_sweep_job(configs, job, number, len(jobs) > 1, once)
        return super().sweep(arguments)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Done for every job in sweep(), before any directory was made."""
