"""The checked sweeper composes each setting once (issue 24): `-m seeds=1000 epochs=1` spent
85 s composing every job with Hydra before the first one ran. A job that differs from an
earlier one only in its `seed=` is that job's config with its own seed, which must be exactly
what Hydra composes for it, and checked as fully as before.

In process (`vae_train_in_process`), stopped at the first job the launcher starts: by then
every job was checked.
"""

from __future__ import annotations

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from omegaconf import OmegaConf, open_dict

import vae_runner.cli.job
import vae_runner.data.images
from vae_runner.cli.checks import Refused, job_config

from helpers import vae_train_in_process

SMALL = ("epochs=1", "eval.iw_samples=0", "pictures=false")
FIRST_JOB = 99  # the exit code of a sweep stopped at its first job, once all were checked


def checked_only(monkeypatch, *args: str) -> int:
    """`vae-train -m <args>`, stopped where the launcher starts its first job."""

    def first_job(cfg, hydra_cfg):
        raise Refused("every job was checked", code=FIRST_JOB, error=False)

    monkeypatch.setattr(vae_runner.cli.job, "run_job", first_job)
    return vae_train_in_process(monkeypatch, "-m", *args)


def counted(monkeypatch, owner, name: str) -> list:
    """The calls of `owner.name` (still called): a spy, nothing else changes."""
    calls, real = [], getattr(owner, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


def test_a_sweep_of_seeds_composes_each_setting_once_and_looks_for_its_data_once(
    tmp_path, monkeypatch
):
    compositions = counted(monkeypatch, ConfigLoaderImpl, "load_sweep_config")
    data_checks = counted(monkeypatch, vae_runner.data.images, "check_available")
    args = ("seeds=50", "lr=1e-3,1e-2", *SMALL, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert checked_only(monkeypatch, *args) == FIRST_JOB
    # 2 settings of 50 seeds: one composition each, and the launcher's own of job 0 (once 101)
    assert len(compositions) == 2 + 1
    assert len(data_checks) == 1  # all 100 jobs read digits from one place (once 100)


def user_presets(tmp_path):
    """A `-cd` folder with a preset of the user's own, which sets its seeds too."""
    folder = tmp_path / "mine"
    (folder / "experiment").mkdir(parents=True)
    (folder / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nlr: 0.0042\nseeds: 2\nhydra:\n  sweeper:\n"
        "    params:\n      beta: 0.5,1.0\n"
    )
    return folder


@pytest.mark.parametrize(
    "args, jobs, settings",
    [
        # a packaged preset: its params (4 lr) and its seeds
        (["experiment=lr_sweep", "seeds=2"], 8, 4),
        # a user's preset in a -cd folder, which sets the seeds (beta=0.5,1.0 x seed=0,1)
        (["-cd", "<mine>", "experiment=mine", "batch_size=64"], 4, 2),
        # the seed first among the sweep's keys; job folders named after each job's overrides
        (
            [
                "seed=3,1,4",
                "optimizer=adam,sgd",
                "hydra.sweep.subdir=${hydra.job.override_dirname}",
            ],
            6,
            2,
        ),
    ],
    ids=["lr_sweep", "config-dir", "override-dirname"],
)
def test_each_derived_job_is_exactly_what_hydra_composes(
    tmp_path, monkeypatch, args, jobs, settings
):
    """Every job's checked config (composed or derived) against Hydra's own composition of
    that job: the same config, Hydra's record of its overrides, its directory, its typing."""
    from vae_runner.cli.sweep_configs import JobConfigs

    seen, real = [], JobConfigs.checked

    def compared(self, job, check):
        cfg, typed = real(self, job, check)
        composed = self._load(list(job.overrides))  # Hydra's, as the launcher composes it
        with open_dict(composed.hydra.job):
            composed.hydra.job.num = cfg.hydra.job.num
        assert OmegaConf.to_container(cfg) == OmegaConf.to_container(composed), job.overrides
        for key in ("hydra.sweep.dir", "hydra.sweep.subdir", "hydra.job.override_dirname"):
            assert OmegaConf.select(cfg, key) == OmegaConf.select(composed, key)
        assert typed == job_config(composed)
        seen.append((job.overrides, OmegaConf.select(cfg, "hydra.sweep.subdir")))
        return cfg, typed

    monkeypatch.setattr(JobConfigs, "checked", compared)
    compositions = counted(monkeypatch, ConfigLoaderImpl, "load_sweep_config")
    args = [str(user_presets(tmp_path)) if a == "<mine>" else a for a in args]
    sweep = tmp_path / "sweep"
    assert checked_only(monkeypatch, *args, *SMALL, f"hydra.sweep.dir={sweep}") == FIRST_JOB
    assert len(seen) == jobs and len({subdir for _, subdir in seen}) == jobs
    # Hydra composed one job per setting, each job again for the comparison, and the launcher's
    assert len(compositions) == settings + jobs + 1


def test_a_derived_jobs_own_checks_still_refuse_it(tmp_path, monkeypatch, capsys):
    """The seed's range rule and the job's own directory are checked for every seed."""
    sweep = tmp_path / "sweep"
    args = ("lr=1e-3,1e-2", "seed=0,7,-1", *SMALL, f"hydra.sweep.dir={sweep}")
    assert checked_only(monkeypatch, *args) == 2
    assert capsys.readouterr().err.strip() == (
        "Error: job lr=0.001 seed=-1 epochs=1 eval.iw_samples=0 pictures=False: seed must be "
        "in [0, 2**63) (got -1): torch's generators take 64 bits; nothing was run"
    )
    (sweep / "2").mkdir(parents=True)
    (sweep / "2" / "notes.txt").write_text("mine\n")
    args = ("seeds=3", *SMALL, f"hydra.sweep.dir={sweep}")
    assert checked_only(monkeypatch, *args) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: job epochs=1 eval.iw_samples=0 pictures=False seed=2: {sweep}/2 is not empty "
        "and holds no vae-train run: nothing there is overwritten; choose another "
        "hydra.sweep.dir; nothing was run"
    )
    assert (sweep / "2" / "notes.txt").read_text() == "mine\n"


def test_a_job_kept_whole_for_the_launcher_is_handed_out_once_then_forgotten():
    """keep_jobs (the stacked launcher asks for every job again): a job without a seed of its
    own is kept after its check and handed to the launcher as it is, then forgotten, so a large
    grid does not hold each config twice; jobs with seeds keep one config per setting."""
    from vae_runner.cli.sweep_configs import JobConfigs, plan

    loads = []

    def load(overrides):
        loads.append(overrides)
        return OmegaConf.create({"lr": len(loads)})

    configs = JobConfigs(load, lambda overrides, cfg: "", keep_jobs=True)
    jobs = plan([["lr=0.1"], ["lr=0.2"]])
    check = lambda cfg, typed: ("typed", cfg.lr)  # noqa: E731
    checked = [configs.checked(job, check) for job in jobs]  # the sweeper's checks
    assert len(loads) == 2 and len(configs._settings) == 2
    handed = [configs.checked(job, check) for job in jobs]  # the launcher's turn
    assert len(loads) == 2  # nothing composed again
    assert [cfg for cfg, _ in handed] == [cfg for cfg, _ in checked]
    assert configs._settings == {}  # forgotten once handed out
