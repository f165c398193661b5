"""Finding a sweep's jobs on disk: run directories, their overrides and history.json records.

A job is what its directory says, read back after the fact: the process that launched it may
have been another (joblib, submitit, SLURM) or another invocation altogether. A basic sweep that
stopped early also lists the jobs it planned but never started, from its multirun.yaml.

Imports no torch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vae_runner.config.overrides import task_overrides
from vae_runner.record import HISTORY_FILE, read_history
from vae_runner.rundir import is_live

NOT_STARTED = "not started"
KILLED = "killed"


@dataclass
class Job:
    """One job of a sweep (or one run). `history` is None when the job wrote none; `run_dir` is
    None for a planned job that never started."""

    name: str
    run_dir: Path | None
    overrides: list[str]
    history: dict[str, Any] | None

    def status(self, sweep_over: bool = False) -> str:
        if self.run_dir is None:
            return NOT_STARTED
        if self.history is None:
            return "failed"  # it stopped before training: a bad value, an import error, a crash
        status = self.history.get("status") or "failed"
        # A record still saying `running` whose directory no process holds: its process died
        # before it could write its final status (SIGKILL, out of memory, a lost node).
        if status == "running" and (sweep_over or not is_live(self.run_dir)):
            return KILLED
        return status

    def record(self, sweep_over: bool = False) -> dict[str, Any]:
        """The job's history as exit_codes.exit_code reads it, with the status as judged here."""
        return {**(self.history or {}), "status": self.status(sweep_over)}


def is_run_dir(path: Path) -> bool:
    return (path / HISTORY_FILE).is_file() or (path / ".hydra").is_dir()


def _natural_key(path: Path) -> list:
    return [int(p) if p.isdigit() else p for p in path.parts]


def find_run_dirs(sweep_dir: Path) -> list[Path]:
    """Run directories below a sweep directory in job order (0, 1, ..., 10), hidden ones skipped."""
    found: list[Path] = []
    pending = [Path(sweep_dir)]
    while pending:
        folder = pending.pop()
        for child in folder.iterdir():
            if not child.is_dir() or child.name.startswith("."):
                continue  # .submitit/, editors' folders
            (found if is_run_dir(child) else pending).append(child)
    return sorted(found, key=lambda p: _natural_key(p.relative_to(sweep_dir)))


def _read_overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    try:
        overrides = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in overrides] if isinstance(overrides, list) else []


def load_job(run_dir: Path, name: str) -> Job:
    return Job(name, Path(run_dir), _read_overrides(run_dir), read_history(run_dir))  # None: failed


def planned_overrides(sweep_dir: Path) -> list[list[str]] | None:
    """Every job's overrides, in job order, as the basic sweeper expands them; None when that
    cannot be known (another sweeper, such as Optuna's, or no multirun.yaml)."""
    try:
        from omegaconf import OmegaConf

        from vae_runner.sweep.plan import planned_jobs

        hydra = OmegaConf.load(Path(sweep_dir) / "multirun.yaml").hydra
        if not str(hydra.sweeper._target_).endswith(("BasicSweeper", "CheckedSweeper")):
            return None
        params = [f"{k}={v}" for k, v in (hydra.sweeper.params or {}).items()]
        seeds = OmegaConf.load(Path(sweep_dir) / "multirun.yaml").get("seeds")
        return planned_jobs(params + task_overrides(hydra), seeds)
    except Exception:  # a glob over a config group, an old file: list what ran, as found
        return None


def _shared_changes(planned: list[list[str]]) -> dict[str, str] | None:
    """The epochs= and device= overrides that every planned job shares (None: the plan varies
    them, or there is no plan)."""
    from vae_runner.config.overrides import by_key, changeable

    shared = [{k: v for k, v in by_key(job).items() if changeable(k)} for job in planned]
    return shared[0] if shared and all(s == shared[0] for s in shared) else None


def as_planned(found: list[Job], planned: list[list[str]]) -> None:
    """A sweep carried on with epochs=N (`vae-train resume=<sweep dir> epochs=N`) keeps each
    job's .hydra/overrides.yaml as the job was started, while its plan (multirun.yaml) and the
    jobs it started say epochs=N. Every job is listed with the plan's epochs= and device=, which
    its history.json now runs to: they tell no jobs apart."""
    from vae_runner.config.overrides import changeable, keys

    shared = _shared_changes(planned)
    if shared is None:
        return
    for job in found:
        try:
            written = keys(job.overrides)
        except Exception:  # an overrides.yaml this Hydra cannot read: as written
            continue
        # The plan's value where the job's stood (its place kept), the others' last
        left = dict(shared)
        job.overrides = [
            left.pop(k) if changeable(k) else o
            for o, k in zip(job.overrides, written, strict=True)
            if not changeable(k) or k in left
        ] + list(left.values())


def _not_started(planned: list[list[str]], found: list[Job]) -> list[Job]:
    seen = Counter(tuple(sorted(job.overrides)) for job in found)
    missing = []
    for num, overrides in enumerate(planned):
        if seen[tuple(sorted(overrides))] > 0:
            seen[tuple(sorted(overrides))] -= 1
        else:
            missing.append(Job(f"#{num}", None, overrides, None))
    return missing


def collect_jobs(dirs: list[Path]) -> list[Job]:
    """Jobs from any mix of sweep and run directories; job names stay unique across them."""
    jobs: list[Job] = []
    for given in map(Path, dirs):
        prefix = f"{given.name}/" if len(dirs) > 1 else ""
        if is_run_dir(given):
            jobs.append(load_job(given, given.name))
            continue
        found = [
            load_job(d, prefix + d.relative_to(given).as_posix()) for d in find_run_dirs(given)
        ]
        # Planned jobs count once one started: Hydra writes multirun.yaml before it checks every
        # job's overrides, so a sweep it refused outright has a plan but no jobs.
        plan = (planned_overrides(given) or []) if found else []
        as_planned(found, plan)
        planned = _not_started(plan, found)
        jobs += found + [Job(prefix + j.name, None, j.overrides, None) for j in planned]
    names = [job.name for job in jobs]
    for job in jobs:
        if names.count(job.name) > 1 and job.run_dir is not None:
            job.name = str(job.run_dir)
    return jobs
