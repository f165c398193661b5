"""`hydra/launcher=stacked`: a sweep's jobs trained together, as stacks of one model each.

For each job it does what Hydra's basic launcher does (the job's config, its folder and
`.hydra/`, the job callbacks: Hydra's own `run_job`), but the task it runs there is vae-runner's
`prepare_job` (cli.job), not the whole job. The prepared jobs are grouped into stacks by what
they must share (vae_runner.sweep.stacks), each stack is trained with one
`training.runner.run_stack` call, then each job is finished (`finish_job`) and its JobReturn
holds its objective, as `vae-train`'s task returns it: the sweep summary, its verdict and
Optuna read them unchanged. The callbacks' `on_job_end` waits for that end, so it sees the
job's objective, as with the basic launcher.

Hydra imports every module of `hydra_plugins` whenever any Hydra app starts (without putting it
in sys.modules, so no `from __future__ import annotations` here): this one imports nothing
heavy; vae_runner's job and torch only once a sweep launches.
"""

import copy
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class StackedLauncherConf:
    _target_: str = "hydra_plugins.vae_runner_sweeper.stacked_launcher.StackedLauncher"
    # The most jobs trained as one stack; a larger group of jobs that can share a stack is split.
    # 64: measured on one H200 (issue 25), an epoch of 64 stacked members of the 784-400-20
    # model costs what one run's epoch does (2.34 s against 2.35 s), while 256 already costs
    # twice as much; and 64 members' weights, Adam moments and activations (about 64 x 10 MB at
    # batch 128) fit any GPU and a laptop's memory. On CPU a stack gains nothing per member
    # beyond its start-up, so a smaller one costs little.
    max_stack: int = 64


ConfigStore.instance().store(group="hydra/launcher", name="stacked", node=StackedLauncherConf)


@dataclass
class _Job:
    """A job of this launch: its number, its composed config, Hydra's return for it, and what
    prepare_job made of it (a PreparedJob, or its outcome when it ended there)."""

    number: int
    config: DictConfig
    ret: JobReturn
    prepared: Any = None
    ended: bool = False


@dataclass
class _HeldJobEnds:
    """Hydra's callbacks for `run_job`, with `on_job_end` held back until the job is finished
    (Hydra's run_job calls it as soon as the task, here prepare_job, returns)."""

    callbacks: Any

    def on_job_start(self, **kwargs: Any) -> None:
        self.callbacks.on_job_start(**kwargs)

    def on_job_end(self, **kwargs: Any) -> None:
        """Held: `end_job` calls the callbacks' own once the job's outcome is known."""


class StackedLauncher(Launcher):
    def __init__(self, max_stack: int = 64) -> None:
        super().__init__()
        self.max_stack = max_stack
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self.checked_configs: Any = None  # the checked sweeper's (cli.sweep_configs.JobConfigs)

    def take_checked_configs(self, configs: Any) -> None:
        """The `checked` sweeper's composed and typed jobs (cli.sweep_configs.JobConfigs): the
        launch derives each job from them instead of composing it again."""
        self.checked_configs = configs

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from vae_runner.cli.job import PreparedJob, leave_not_started

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs stacked")
        jobs: list[_Job] = []
        from vae_runner.cli.sweep_configs import plan

        configs = self.checked_configs or self._job_configs()
        try:
            planned = plan([list(overrides) for overrides in job_overrides])
            for number, job in enumerate(planned, initial_job_idx):
                jobs.append(self._prepare(number, job, configs))
                if jobs[-1].ended:  # finished, refused or failed before training
                    self._end(jobs[-1], jobs[-1].prepared)
            trained = [job for job in jobs if isinstance(job.prepared, PreparedJob)]
            self._train(trained)
        except BaseException:  # a stopped sweep (SweepStopped): what did not train never began
            for job in jobs:
                if isinstance(job.prepared, PreparedJob) and not job.ended:
                    leave_not_started(job.prepared)
            raise
        return [job.ret for job in jobs]

    def _job_configs(self):
        """Each job's composed config when no checked sweeper handed them over (Optuna's
        sweeper): Hydra composes one job of each setting (0.3 s each), the setting's other
        seeds are derived from it (cli.sweep_configs)."""
        from vae_runner.cli.sweep_configs import JobConfigs, dirname

        assert self.config is not None and self.hydra_context is not None
        loader, config = self.hydra_context.config_loader, self.config
        return JobConfigs(lambda job: loader.load_sweep_config(config, job), dirname)

    def _prepare(self, number: int, job, configs) -> _Job:
        """What the basic launcher does for a job, with prepare_job as its task."""
        from vae_runner.cli.checks import job_config
        from vae_runner.cli.job import PreparedJob, prepare_job
        from vae_runner.config.errors import ConfigError

        assert self.config is not None and self.hydra_context is not None
        log.info(f"\t#{number} : {' '.join(filter_overrides(job.overrides))}")
        try:
            composed, typed = configs.checked(job, lambda cfg, typed: typed or job_config(cfg))
            if self.checked_configs is None:
                typed = None  # typed, not checked: prepare_job checks it (its data, device)
        except ConfigError:  # a job no sweeper checked (Optuna's): prepare_job records why
            loader = self.hydra_context.config_loader
            composed, typed = loader.load_sweep_config(self.config, list(job.overrides)), None
        config = copy.deepcopy(composed)  # a derived one is its setting's, changed in place
        with open_dict(config):
            config.hydra.job.id = number
            config.hydra.job.num = number
        context = HydraContext(
            config_loader=self.hydra_context.config_loader,
            callbacks=_HeldJobEnds(self.hydra_context.callbacks),
        )
        ret = run_job(
            hydra_context=context,
            task_function=lambda cfg: prepare_job(cfg, HydraConfig.get(), typed),
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        prepared = ret.return_value  # prepare_job never raises (a stop is a BaseException)
        return _Job(number, config, ret, prepared, ended=not isinstance(prepared, PreparedJob))

    def _train(self, jobs: list[_Job]) -> None:
        """Each stack trained with one run_stack call, its jobs finished, in turn; a stop
        before a stack leaves it and the later ones not started."""
        from vae_runner.cli.job import (
            NOTHING,
            finish_job,
            leave_not_started,
            stopped_before_training,
            train_jobs,
        )
        from vae_runner.sweep.stacks import group_stacks, stack_key, stack_lines
        from vae_runner.training.signals import exit_status

        if not jobs:
            return
        keys = [stack_key(job.prepared.cfg) for job in jobs]
        stacks = group_stacks(keys, self.max_stack)
        for line in stack_lines(keys, stacks, [job.number for job in jobs]):
            log.info(line)
        for stack in stacks:
            members = [jobs[position] for position in stack]
            stopped = stopped_before_training(members[0].prepared)  # SweepStopped: the rest
            if stopped:  # (a sweep stopped in another process): as prepare_job's stopped jobs
                for job in members:
                    leave_not_started(job.prepared)
                    self._end(job, (exit_status(stopped), NOTHING))
                continue
            with _job_logging(members[0].config):
                results = train_jobs([job.prepared for job in members])
            for job, result in zip(members, results, strict=True):
                self._end(job, finish_job(job.prepared, result))

    def _end(self, job: _Job, outcome: Any) -> None:
        """The job's JobReturn holds its objective (vae-train's task returns it); then the
        callbacks' on_job_end, as Hydra's run_job calls it."""
        assert self.hydra_context is not None
        if isinstance(outcome, BaseException):  # prepare_job never raises: were it ever to
            from vae_runner.cli.job import NOTHING
            from vae_runner.exit_codes import ExitCode

            outcome = (int(ExitCode.FAILED), NOTHING)
        _code, objective = outcome
        job.ended, job.ret.return_value = True, objective
        with _as_job(job.config):
            self.hydra_context.callbacks.on_job_end(config=job.config, job_return=job.ret)


@contextmanager
def _as_job(config: DictConfig) -> Iterator[None]:
    """HydraConfig.get() is this job's while inside, as in Hydra's run_job."""
    before = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = before


@contextmanager
def _job_logging(config: DictConfig) -> Iterator[None]:
    """A stack's training logs as its first job's would (hydra.job_logging), then the sweep's
    own logging again, as the basic launcher has it between jobs."""
    with _as_job(config):
        configure_log(config.hydra.job_logging, config.hydra.verbose)
    try:
        yield
    finally:
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
