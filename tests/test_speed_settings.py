"""What the speed work changed for users: `pictures=false`, and torch's threads that sleep
instead of spinning (vae_runner/cpu_threads.py)."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from test_runner import quiet_console

from vae_runner.cpu_threads import USER_SETTINGS, wait_passively
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


@pytest.mark.e2e
def test_vae_train_records_its_threads_and_how_they_wait(tmp_path):
    common = ("epochs=1", "eval.iw_samples=0", "pictures=false")
    done = run_cli(*common, f"hydra.run.dir={tmp_path / 'a'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    process = json.loads((tmp_path / "a" / "history.json").read_text())["process"]
    assert process["omp_wait_policy"] == "PASSIVE"
    assert process["threads"] == torch.get_num_threads()  # torch's default: the machine's cores
    assert not list((tmp_path / "a").glob("*.png"))

    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    done = run_cli(
        *common, "device.threads=1", f"hydra.run.dir={tmp_path / 'b'}", cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr
    process = json.loads((tmp_path / "b" / "history.json").read_text())["process"]
    assert process["omp_wait_policy"] == "ACTIVE" and process["threads"] == 1
