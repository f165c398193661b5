"""`hydra/sweeper=checked` (vae-train's default): Hydra's basic sweeper, with every job's composed
config typed and checked before the first job is launched and before the sweep directory is
made. A bad value in any job is one line and exit 2, and nothing has trained or been written.

Hydra imports every module of `hydra_plugins` whenever any Hydra app starts (without putting it
in sys.modules, so no `from __future__ import annotations` here): this one imports
nothing heavy (vae_runner.sweep.plan: Hydra's own parser and grid sweeper), and vae_runner's
checks only when a sweep runs.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser

# Hydra's grid sweeper and override_dirname have no public import path:
# vae_runner.config.hydra_private holds every such import. The plan (seeds=N, every job's
# overrides) is vae_runner's, below this plugin, so that a sweep's summary reads it too.
from vae_runner.config.hydra_private import basic_sweeper
from vae_runner.sweep.plan import SeedsConflict, expand_seeds, planned_jobs


@dataclass
class CheckedSweeperConf:
    _target_: str = "hydra_plugins.vae_runner_sweeper.checked_sweeper.CheckedSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="checked", node=CheckedSweeperConf)


# Looked up as this module runs: Hydra runs it again at each app start, after its own basic
# sweeper's module, whose class is then another one.
class CheckedSweeper(basic_sweeper()):
    def sweep(self, arguments: List[str]) -> Any:
        from vae_runner.cli.checks import Once, check_sweep_job, check_sweep_overrides
        from vae_runner.cli.sweep_configs import JobConfigs, dirname, plan

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
        # A launcher that prepares its jobs itself (hydra/launcher=stacked) takes them from
        # here, composed and typed, instead of composing and typing every job again.
        take = getattr(self.launcher, "take_checked_configs", None)
        load = lambda job: loader.load_sweep_config(self.config, job)  # noqa: E731
        configs = JobConfigs(load, dirname, keep_jobs=take is not None)
        once = Once()
        for number, job in enumerate(jobs):
            check_sweep_job(configs, job, number, len(jobs) > 1, once)
        if take is not None:
            take(configs)
        return super().sweep(arguments)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Done for every job in sweep(), before any directory was made."""
