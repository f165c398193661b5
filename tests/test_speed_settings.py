"""What the speed work changed for users: `pictures=false`, and torch's threads: one on a small
machine, sleeping instead of spinning (vae_runner/cpu_threads.py)."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from test_runner import quiet_console

from vae_runner.cpu_threads import USER_SETTINGS, cpu_count, default_threads, wait_passively
from vae_runner.training.runner import run

from helpers import compose_config, one_line, run_cli, typed_config

PICTURES = ("curves.png", "kl_per_dim.png", "reconstructions.png", "samples.png")


def test_pictures_is_on_by_default_and_a_bool():
    assert compose_config().pictures is True
    assert typed_config("pictures=false").pictures is False
    assert one_line("pictures=maybe") == "pictures: Value 'maybe' is not a valid bool (type str)"


def test_pictures_false_draws_nothing_and_the_record_is_whole(tmp_path):
    console, output = quiet_console()
    cfg = typed_config("device=cpu", "epochs=2", "eval.iw_samples=5", "pictures=false")
    history = run(cfg, tmp_path, console)
    assert history["status"] == "completed"
    assert not list(tmp_path.rglob("*.png")) and not (tmp_path / "images").exists()
    on_disk = json.loads((tmp_path / "history.json").read_text())
    assert on_disk["final"]["test_nll_iw"] is not None  # the numbers do not depend on pictures
    assert len(on_disk["test_loss"]) == 2 and (tmp_path / "checkpoints" / "last.pt").exists()
    assert "curves.png" not in output.getvalue()


def test_the_same_run_with_pictures_draws_all_four(tmp_path):
    console, _ = quiet_console()
    run(typed_config("device=cpu", "epochs=2", "eval.iw_samples=0"), tmp_path, console)
    assert all((tmp_path / name).stat().st_size > 1000 for name in PICTURES)


def test_plot_every_with_pictures_false_is_a_recorded_warning(tmp_path):
    console, output = quiet_console()
    cfg = typed_config("device=cpu", "epochs=2", "eval.iw_samples=0", "pictures=false")
    cfg.plot_every = 1
    history = run(cfg, tmp_path, console)
    message = "plot_every=1 draws nothing with pictures=false; drop one of the two"
    assert {"epoch": 0, "kind": "config", "message": message} in history["warnings"]
    assert message in " ".join(output.getvalue().split())
    assert not (tmp_path / "images").exists()


def test_wait_passively_sets_the_policy_before_torch_is_imported(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch")  # as in vae-train's process before its first run
    environ: dict[str, str] = {}
    assert wait_passively(environ) is True
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}


@pytest.mark.parametrize("name", USER_SETTINGS)
def test_a_policy_the_user_set_stands(monkeypatch, name):
    monkeypatch.delitem(sys.modules, "torch")
    environ = {name: "ACTIVE" if name == "OMP_WAIT_POLICY" else "200"}
    assert wait_passively(environ) is False
    assert environ == {name: environ[name]}


def test_once_torch_is_imported_it_is_too_late_and_nothing_is_set():
    assert "torch" in sys.modules
    environ: dict[str, str] = {}
    assert wait_passively(environ) is False and environ == {}


def test_a_small_machine_runs_one_thread_and_a_larger_one_every_core():
    assert [default_threads(cpus) for cpus in (1, 2, 3, 4, 64)] == [1, 1, None, None, None]


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


LAUNCHERS = {
    "basic": (),
    "joblib": ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
    "submitit_local": ("hydra/launcher=submitit_local",),
}


@pytest.mark.parametrize("cpus, mode, launcher, threads", [
    (2, "RUN", "basic", 1),  # a single run on a small machine
    (16, "RUN", "basic", 3),  # a larger one: torch's default (3 here) stands
    (2, "MULTIRUN", "basic", 1),  # a sequential sweep: each job as a single run
    (16, "MULTIRUN", "basic", 3),
    (2, "MULTIRUN", "joblib", 1),  # two jobs at once share the two cores
    (16, "MULTIRUN", "joblib", 8),
    (16, "MULTIRUN", "submitit_local", 1),  # cpus_per_task unset: SLURM's default allocation
])  # fmt: skip
def test_each_run_gets_its_threads_before_it_starts(
    monkeypatch, torch_threads, cpus, mode, launcher, threads
):
    from hydra.types import RunMode

    from vae_runner.cli import callbacks

    if launcher != "basic":
        pytest.importorskip(f"hydra_plugins.hydra_{launcher.split('_')[0]}_launcher")
    monkeypatch.setattr(callbacks, "cpu_count", lambda: cpus)
    config = compose_config(*LAUNCHERS[launcher], hydra=True)
    config.hydra.mode = RunMode[mode]
    torch.set_num_threads(3)
    callbacks.RunnerCallbacks().on_job_start(config)
    assert torch.get_num_threads() == threads


@pytest.mark.e2e
def test_vae_train_records_its_threads_and_how_they_wait(tmp_path):
    common = ("epochs=1", "eval.iw_samples=0", "pictures=false")
    done = run_cli(*common, f"hydra.run.dir={tmp_path / 'a'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    process = json.loads((tmp_path / "a" / "history.json").read_text())["process"]
    assert process["omp_wait_policy"] == "PASSIVE"
    # one on a machine of 1-2 cores (as CI's), else torch's default: every core
    assert process["threads"] == (default_threads(cpu_count()) or torch.get_num_threads())
    assert not list((tmp_path / "a").glob("*.png"))

    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    done = run_cli(
        *common, "device.threads=2", f"hydra.run.dir={tmp_path / 'b'}", cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr
    process = json.loads((tmp_path / "b" / "history.json").read_text())["process"]
    assert process["omp_wait_policy"] == "ACTIVE" and process["threads"] == 2  # theirs stands
