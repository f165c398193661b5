"""Checks of a composed config that refuse a run before Hydra creates anything for it.

Hydra calls them with exactly what it composed, whatever the command line looked like (`-cd`,
`hydra.searchpath`, quoted values, `++key`): `RunnerCallbacks.on_run_start` for a single run,
the `checked` sweeper for every job of a sweep, and the job itself for a sweeper that checks
nothing (Optuna's). A refusal is `Refused`: one line, exit 2, nothing written.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from hydra.core.override_parser.types import Override
from hydra.core.utils import env_override
from omegaconf import DictConfig, OmegaConf, open_dict

from vae_runner import heap
from vae_runner.cli.sweep_configs import JobConfigs, PlannedJob
from vae_runner.config.errors import ConfigError
from vae_runner.config.explain import SWEEP_EXTRA, explain
from vae_runner.config.overrides import by_key, changeable, keys, task_overrides
from vae_runner.config.schema import Config
from vae_runner.config.search_path import refuse_shadowed
from vae_runner.config.typed import config_differences, to_typed
from vae_runner.exit_codes import ExitCode, exit_code
from vae_runner.rundir import Attempt, claim, earlier_attempt, is_live, release_held
from vae_runner.sweep.resume import MULTIRUN_RECORD, is_sweep_dir, multirun_arguments
from vae_runner.sweep.rundirs import is_run_dir
from vae_runner.sweep.stacks import check_max_stack


class Refused(BaseException):
    """A run refused before it started: one line for the user, then exit 2 (or `code`).

    A BaseException, so that it passes Hydra's callback and error reporting (which catch
    Exception and would print a warning or a traceback instead) and reaches cli.train.main.
    `error=False`: not a mistake, only nothing to do (a finished run started again).
    """

    def __init__(self, message: str, code: int = ExitCode.CONFIG, error: bool = True) -> None:
        super().__init__(message)
        self.message, self.code, self.error = message, int(code), error


class CarryOnSweep(Refused):
    """`resume=<sweep dir>`: not a run, but the sweep's own command (`arguments`) run again,
    which cli.train runs as Hydra's multirun once this run has been given up."""

    def __init__(self, sweep_dir: Path, arguments: list[str]) -> None:
        super().__init__(f"carrying on the sweep in {sweep_dir}", code=ExitCode.COMPLETED)
        self.arguments = arguments


def job_config(cfg: DictConfig) -> Config:
    """The typed config of a job (its composed config without `hydra`), resolved in the job's
    own environment (job_env): the checks type it before Hydra sets that environment, and
    the job trains on what they typed."""
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    with job_env(cfg):
        return to_typed(job)


def job_env(cfg: DictConfig):
    """hydra.job.env_set, set as Hydra sets it around a job's task (and put back after): an
    `${oc.env:NAME}` in the config reads there what the job itself would read."""
    env = OmegaConf.select(cfg, "hydra.job.env_set") or {}
    return env_override({str(key): str(value) for key, value in env.items()})


class Once:
    """Checks that many jobs share, run once for each distinct value they check: a sweep of
    1000 seeds looks for its data files, its device and its tracking store once."""

    def __init__(self) -> None:
        self._done: list[tuple] = []  # compared with ==: the typed groups are dataclasses

    def __call__(self, key: tuple, check: Callable[[], object]) -> None:
        if key not in self._done:
            check()
            self._done.append(key)


def check_new_job(cfg: DictConfig, typed: Config | None = None, once: Once | None = None) -> Config:
    """Everything that can be known about a new job before it runs; returns its typed config
    (`typed`: the one already made of `cfg`; `once`: what earlier jobs of a sweep checked).
    Relative data paths are read from where vae-train was started (hydra.runtime.cwd), by the
    run too, so hydra.job.chdir=true changes nothing for them."""
    once = Once() if once is None else once
    hydra, start_dir = cfg.hydra, Path(cfg.hydra.runtime.cwd)
    # a -cd folder's config.yaml that Hydra passed over; keyed by all that refuse_shadowed reads
    search_path = (str(hydra.job.config_name), str(hydra.runtime.choices))
    once(search_path + (str(hydra.runtime.config_sources),), lambda: refuse_shadowed(hydra))
    typed = job_config(cfg) if typed is None else typed
    once(("data", typed.data, start_dir), lambda: check_data(typed, start_dir))
    once(("device", typed.device), lambda: check_device(typed))
    once(("tracking", typed.logger, start_dir), lambda: open_tracking_store(typed, start_dir))
    return typed


def open_tracking_store(typed: Config, start_dir: Path) -> None:
    """logger=mlflow: its store made (and its experiment) before the run's directory is: a
    store that cannot be opened is refused before anything is written."""
    from vae_runner.config.schema import MLflowLoggerConfig

    if isinstance(typed.logger, MLflowLoggerConfig):
        from vae_runner.report import tracking

        tracking.open_configured_store(typed.logger, start_dir)


def check_job(typed: Config, start_dir: Path) -> None:
    """What the typed config alone cannot say: the data files are there, the device exists."""
    check_data(typed, start_dir)
    check_device(typed)


def check_data(typed: Config, start_dir: Path) -> None:
    from vae_runner.data.images import check_available

    heap.freeze_long_lived()  # torch is imported now (vae_runner/heap.py)
    check_available(typed.data, start_dir)


def check_device(typed: Config) -> None:
    from vae_runner.training.build import build_device

    build_device(typed.device)  # device=cuda without CUDA is refused here, not mid-run


def refuse_empty_dir(path: Path, key: str) -> None:
    if str(path) in ("", "."):
        raise ConfigError(f"{key} is empty: give the run its own folder, e.g. {key}=outputs/run1")


# Statuses a run ends in for good: started again with the same settings, it is left as it is.
FINISHED = ("completed", "diverged")


def _differences(
    attempt: Attempt, typed: Config, overrides: list[str], extendable: bool
) -> list[str]:
    """How this job's settings differ from those the earlier attempt recorded (none: the same
    job started again). Compared as typed values, so lr=1e-3 and lr=0.001 are the same.
    `extendable`: epochs and device may differ (a sweep carried on with more epochs)."""
    kept = (lambda key: not changeable(key)) if extendable else (lambda key: True)
    recorded = (attempt.history or {}).get("config")
    if recorded:
        return config_differences(recorded, asdict(typed), ("there", "here"), kept)
    if attempt.overrides is None:
        return []
    if extendable:
        there = {k: v for k, v in by_key(attempt.overrides).items() if kept(k)}
        if there == {k: v for k, v in by_key(overrides).items() if kept(k)}:
            return []
    elif attempt.overrides == overrides:
        return []
    return [f"overrides {' '.join(attempt.overrides) or '(none)'} there"]


def carry_on(run_dir: Path, typed: Config, overrides: list[str], key: str) -> Attempt:
    """What an earlier attempt left in `run_dir`, when this job may carry on from it.

    A job started again in its own directory (a requeue, a retry, the same command run again)
    carries on: from its last checkpoint, from scratch if it never finished an epoch, or not at
    all if it already finished. A sweep's job may also be carried on with more epochs (or on
    another device), as `resume=<job dir> epochs=N` would (`vae-train resume=<sweep dir>
    epochs=N`). Refused: a folder holding anything else, a run there that was started with
    other settings (its record is never written into), and fewer epochs than it finished.
    """
    attempt = earlier_attempt(run_dir)
    if attempt.kind == "foreign":
        raise ConfigError(
            f"{run_dir} is not empty and holds no vae-train run: nothing there is overwritten; "
            f"choose another {key}"
        )
    if attempt.kind == "run":
        extendable = key == "hydra.sweep.dir"
        differences = _differences(attempt, typed, overrides, extendable)
        if differences:
            raise ConfigError(
                f"{run_dir} already holds a run started with other settings "
                f"({'; '.join(differences[:3])}); it is not overwritten: choose another {key}, "
                f"or continue that run as it was with resume={run_dir}"
            )
        done = finished_epochs(attempt.history)
        if extendable and typed.epochs < done:
            raise ConfigError(
                f"{run_dir} already finished {done} epochs, more than epochs={typed.epochs}: "
                f"finished epochs are kept; give epochs={done} or more"
            )
    return attempt


def repair(run_dir: Path, history: dict, typed: Config, start_dir: Path) -> None:
    """A finished run started again: what a kill at its very end left undone (report.repair)."""
    from vae_runner.report.console import log
    from vae_runner.report.repair import repair_finished

    done = repair_finished(run_dir, history, typed, start_dir)
    if done:
        log.info(f"{run_dir} was finished but a kill had interrupted its end: {'; '.join(done)}")


def finished_epochs(history: dict | None) -> int:
    return len((history or {}).get("epoch") or [])


def is_finished(history: dict | None, typed: Config) -> bool:
    """A run that ended for good: diverged, or completed with every epoch `typed` asks for
    (a completed run asked for more epochs is extended), or stopped early by a rule that,
    as `typed` gives it, still stops it (as `resume=` of that run says)."""
    from vae_runner.training.early_stop import stops_early

    status = (history or {}).get("status")
    if status == "completed":
        stays_stopped = bool(history.get("stopped_early")) and stops_early(
            history, typed.early_stop
        )
        return finished_epochs(history) >= typed.epochs or stays_stopped
    return status in FINISHED


def extended(history: dict | None, typed: Config) -> bool:
    """Whether this attempt asks the earlier one's run for another number of epochs."""
    recorded = ((history or {}).get("config") or {}).get("epochs")
    return recorded is not None and recorded != typed.epochs


def finished_line(run_dir: Path, history: dict) -> str:
    status = history.get("status")
    epochs = len(history.get("epoch") or [])
    return f"{run_dir} already holds this run, {status} after {epochs} epochs: nothing to do"


def check_writable(path: Path, key: str) -> None:
    """The nearest existing folder on the way to `path` must take a new folder: a real test,
    since permission bits do not tell the whole story (root, read-only mounts)."""
    existing = path.absolute()
    try:
        # exists() itself raises for a name the file system cannot hold (ENAMETOOLONG)
        while not existing.exists():
            existing = existing.parent
    except OSError as err:
        raise ConfigError(
            f"cannot create {key}={path}: {err.strerror or err}; choose a shorter {key}"
        ) from None
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        tempfile.TemporaryDirectory(dir=existing).cleanup()
    except OSError as err:
        raise ConfigError(
            f"cannot create {key}={path}: {existing} is not a writable folder "
            f"({err.strerror or err}); choose another {key}"
        ) from None


def refuse_inside_a_live_sweep(run_dir: Path) -> None:
    """A single run's folder inside a sweep directory another vae-train holds: that sweep's
    job folders are its own (one it has not started yet would be taken over, and its summary
    would rank the intruder as one of its jobs)."""
    for parent in Path(run_dir).absolute().parents:
        if (parent / MULTIRUN_RECORD).is_file() and is_live(parent):
            raise ConfigError(
                f"hydra.run.dir={run_dir} is inside the sweep {parent}, which another vae-train "
                "is running: its folders are its jobs'; choose a folder outside it"
            )


def stop_if_interrupted() -> None:
    """A Ctrl-C while vae-train started (training.signals.interrupt_once) is honoured here,
    before anything is made for a run, a sweep or a job: one line, exit 130."""
    from vae_runner.training import signals

    signum = signals.requested()
    if signum is not None:
        raise Refused(signals.INTERRUPTED_WHILE_STARTING, code=signals.exit_status(signum))


@dataclass
class Checked:
    """What a single run's checks found, left on the claim they hold for its job (cli.job):
    its typed config, and the earlier attempt in its folder or (resume=) the checkpoint it goes
    on from. The folder is claimed from the checks to the job's end, so nothing of it changes
    in between but Hydra's own .hydra/."""

    typed: Config
    attempt: Attempt | None = None
    checkpoint: dict | None = None


def check_run(cfg: DictConfig) -> None:
    """A single run (RunMode.RUN), before Hydra writes anything in its directory. The run's
    directory is claimed here, for the run's whole life (the command releases it), with what
    the checks found on the claim for the job (Checked)."""
    stop_if_interrupted()
    run_dir = Path(str(cfg.hydra.run.dir))
    if cfg.hydra.sweeper.get("params"):
        choice = cfg.hydra.runtime.choices.get("experiment")
        what = f"experiment={choice}" if choice else "hydra.sweeper.params"
        raise ConfigError(
            f"{what} is a sweep preset: run it with -m (vae-train -m {what}); "
            "without -m only its first job's settings would run"
        )
    if str(cfg.hydra.launcher.get("_target_", "")).endswith("SlurmLauncher"):
        choice = cfg.hydra.runtime.choices.get("hydra/launcher")
        raise ConfigError(
            f"hydra/launcher={choice} launches the jobs of a sweep (-m): without -m this run "
            f"would train here; submit it with -m (a sweep of one: vae-train -m "
            f"hydra/launcher={choice} ...), or drop hydra/launcher to train here"
        )
    if (cfg.get("seeds") or 1) > 1:
        raise ConfigError(
            f"seeds={cfg.seeds} runs every setting with seed=0..{cfg.seeds - 1}: that is a sweep, "
            f"run it with -m (vae-train -m seeds={cfg.seeds} ...)"
        )
    try:
        if cfg.resume is not None:
            from vae_runner.training.resume import RunFinished, load_for_resume

            target = Path(str(cfg.resume)).expanduser()
            if run_dir.expanduser().resolve() != target.resolve():
                raise ConfigError(
                    f"resume={cfg.resume} continues that run in its own directory: "
                    "drop hydra.run.dir"
                )
            if is_sweep_dir(target):
                if "hydra.sweep.dir" in keys(list(cfg.hydra.overrides.hydra)):  # once dropped
                    raise ConfigError(
                        f"resume={cfg.resume} carries that sweep on in its own folder: drop "
                        "hydra.sweep.dir"
                    )
                claim(target, "resume").release()  # another process's sweep: refused here
                overrides = task_overrides(cfg.hydra)
                raise CarryOnSweep(target, multirun_arguments(target, overrides))
            if target.is_dir() and not is_run_dir(target):  # nothing of ours written there
                raise ConfigError(f"resume={cfg.resume}: this directory holds no vae-train run")
            held = claim(target, "resume", hold=True) if target.is_dir() else None
            try:
                with job_env(cfg):
                    typed, checkpoint = load_for_resume(target, task_overrides(cfg.hydra), cfg)
            except RunFinished as finished:  # refused, once what a kill left is repaired
                repair(target, finished.history or {}, finished.cfg, Path(cfg.hydra.runtime.cwd))
                raise
            if held is not None:
                held.found = Checked(typed, checkpoint=checkpoint)
            return
        refuse_empty_dir(run_dir, "hydra.run.dir")
        check_writable(run_dir, "hydra.run.dir")
        refuse_inside_a_live_sweep(run_dir)
        typed = check_new_job(cfg)
        stop_if_interrupted()  # checking imported torch: seconds
        held = claim(run_dir, "hydra.run.dir", hold=True)
        attempt = carry_on(run_dir, typed, task_overrides(cfg.hydra), "hydra.run.dir")
        if attempt.history and attempt.history.get("status") in FINISHED:
            repair(run_dir, attempt.history, typed, Path(cfg.hydra.runtime.cwd))
            line = finished_line(run_dir, attempt.history)
            raise Refused(line, code=exit_code(attempt.history), error=False)
        held.found = Checked(typed, attempt=attempt)
    except BaseException:
        release_held()
        raise


def check_multirun(cfg: DictConfig) -> None:
    """A sweep as a whole (RunMode.MULTIRUN), before its jobs are checked and launched. The
    sweep directory is claimed: one sweep at a time writes into it."""
    stop_if_interrupted()
    sweep_dir = Path(str(cfg.hydra.sweep.dir))
    if str(sweep_dir) in ("", "."):
        raise ConfigError("hydra.sweep.dir is empty: give the sweep its own folder")
    check_writable(sweep_dir, "hydra.sweep.dir")
    refuse_shadowed(cfg.hydra)  # also for a sweeper that checks no job (Optuna)
    check_max_stack(cfg.hydra.launcher)  # hydra/launcher=stacked
    launcher = str(cfg.hydra.launcher.get("_target_", ""))
    if launcher.endswith("SlurmLauncher") and shutil.which("sbatch") is None:
        raise ConfigError(
            "hydra/launcher=slurm submits with SLURM's sbatch, which is not on PATH here: run "
            "the sweep on the cluster's login node, or try it here with "
            "hydra/launcher=submitit_local"
        )
    sweeper = str(cfg.hydra.sweeper.get("_target_", ""))
    checked = sweeper.endswith("CheckedSweeper")
    if not checked:
        # Its trials are checked (and may be trained) in other processes: nothing here may
        # import torch, and this process must not go on without its cycle collector.
        heap.freeze_long_lived()
    if (cfg.get("seeds") or 1) > 1 and not checked:
        raise ConfigError(
            f"seeds={cfg.seeds} is read by vae-train's default sweeper only; with "
            f"{sweeper.rsplit('.', 1)[-1]} each trial has one seed: drop seeds (or set seed=...)"
        )
    refuse_swept_tracking(task_overrides(cfg.hydra))
    if cfg.get("logger") is not None and cfg.logger.get("name") == "mlflow":
        open_tracking_store(job_config(cfg), Path(cfg.hydra.runtime.cwd))
    claim(sweep_dir, "hydra.sweep.dir", hold=True)


TRACKING_KEYS = ("logger.tracking_uri", "logger.experiment")


def refuse_swept_tracking(overrides: list[str]) -> None:
    """A sweep is one MLflow parent run in one store and experiment, its jobs the children:
    the store, the experiment, and mlflow against another logger, cannot vary between jobs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(overrides):
        if not override.is_sweep_override():
            continue
        key = override.get_key_element()
        if key not in TRACKING_KEYS + ("logger",):
            continue  # (an interval, Optuna's, cannot be enumerated: never ask it)
        logs_mlflow = key == "logger" and (
            not override.is_discrete_sweep() or "mlflow" in override.sweep_string_iterator()
        )
        if key in TRACKING_KEYS or logs_mlflow:
            raise ConfigError(
                f"{override.input_line}: a sweep with logger=mlflow is one parent run in one "
                f"store and experiment: give {key} one value, and sweep the others"
            )


def check_sweep_overrides(overrides: list[Override]) -> None:
    """What the basic sweeper cannot run, said before anything is composed."""
    for override in overrides:
        key = override.get_key_element()
        if key == "resume" and override.value() is not None:
            raise Refused("resume= continues one run: drop -m (resume each sweep job on its own)")
        if override.is_sweep_override() and not override.is_discrete_sweep():
            raise Refused(
                f"{override.input_line} is a range: the default sweeper runs lists of values "
                f"({key}=1e-4,1e-3); search a range with hydra/sweeper=optuna ({SWEEP_EXTRA})"
            )


def check_sweep_job(
    configs: JobConfigs, job: PlannedJob, number: int, name_it: bool, once: Once
) -> None:
    """Job `number` of a basic sweep, composed and typed (by `configs`) as Hydra will launch it;
    `once`: what the sweep's earlier jobs checked (the same data, device, store). `name_it`:
    the refusal names the job (a sweep of more than one)."""
    stop_if_interrupted()  # checking 1000 jobs takes a while
    where = f"job {' '.join(job.overrides)}: " if name_it else ""

    def check(cfg: DictConfig, typed: Config | None) -> Config:
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = number  # as the launcher sets it, so hydra.sweep.subdir resolves
        job_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        typed = check_new_job(cfg, typed, once)
        carry_on(job_dir, typed, task_overrides(cfg.hydra), "hydra.sweep.dir")
        return typed

    try:
        configs.checked(job, check)
    except Exception as err:
        line = explain(err)
        if line is None:
            raise
        raise Refused(f"{where}{line}" + ("; nothing was run" if where else "")) from None
