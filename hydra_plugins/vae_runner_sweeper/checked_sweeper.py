"""`hydra/sweeper=checked` (vae-train's default): Hydra's basic sweeper, with every job's composed
config typed and checked before the first job is launched and before the sweep directory is
made. A bad value in any job is one line and exit 2, and nothing has trained or been written.

Hydra imports every module of `hydra_plugins` whenever any Hydra app starts (without putting it
in sys.modules, so no `from __future__ import annotations` here): this one imports
nothing heavy, and vae_runner's checks only when a sweep runs.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

# Hydra's grid sweeper has no public import path; this is the only module of vae_runner that
# imports hydra._internal, so a move of the class upstream is mended here alone.
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser


@dataclass
class CheckedSweeperConf:
    _target_: str = "hydra_plugins.vae_runner_sweeper.checked_sweeper.CheckedSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="checked", node=CheckedSweeperConf)


def planned_jobs(arguments: List[str]) -> List[List[str]]:
    """Every job's overrides, in job order, as the basic sweeper expands `arguments`."""
    overrides = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


class CheckedSweeper(BasicSweeper):
    def sweep(self, arguments: List[str]) -> Any:
        from vae_runner.cli.checks import check_sweep_job, check_sweep_overrides

        assert self.config is not None and self.hydra_context is not None
        every = self._parse_config() + list(arguments)
        check_sweep_overrides(OverridesParser.create().parse_overrides(every))
        jobs = planned_jobs(every)
        loader = self.hydra_context.config_loader
        for number, job in enumerate(jobs):
            compose = lambda job=job: loader.load_sweep_config(self.config, list(job))  # noqa: E731
            check_sweep_job(compose, job if len(jobs) > 1 else None, number)
        return super().sweep(arguments)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Done for every job in sweep(), before any directory was made."""
