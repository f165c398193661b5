"""End to end: the installed `vae-train` in a subprocess, as a user or a CI script runs it."""

from __future__ import annotations

import json

import pytest
import yaml

from helpers import run_cli

pytestmark = pytest.mark.e2e


def test_one_run_records_its_overrides(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        "optimizer=adamw", "lr=1e-4", "epochs=2", f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["optimizer"]["name"] == "adamw" and config["lr"] == 1e-4
    assert config["optimizer"]["weight_decay"] == 1e-2  # PyTorch's default: a decay that acts
    history = json.loads((run_dir / "history.json").read_text())
    assert history["status"] == "completed"
    assert history["lr"] == [1e-4, 1e-4]
    assert history["config"]["optimizer"]["name"] == "adamw"
    # CI logs: no control codes, one line per epoch, the run directory on the last line
    assert "\x1b" not in result.stdout
    assert result.stdout.count("Epoch ") == 2
    assert result.stdout.strip().splitlines()[-1] == f"Run directory: {run_dir.resolve()}"


def test_default_run_dir_is_under_outputs_of_the_working_directory(tmp_path):
    result = run_cli("epochs=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (history_file,) = tmp_path.glob("outputs/*/*/history.json")
    assert json.loads(history_file.read_text())["status"] == "completed"


def test_multirun_writes_one_complete_run_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "lr=1e-2,1e-3", "epochs=2", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for job, lr in (("0", 1e-2), ("1", 1e-3)):
        history = json.loads((sweep / job / "history.json").read_text())
        assert history["status"] == "completed" and len(history["test_loss"]) == 2
        assert history["lr"][0] == lr and history["config"]["lr"] == lr


@pytest.mark.parametrize(
    "override, words",
    [
        ("lr=-1", "lr must be a finite number > 0 (got -1.0)"),
        ("epochs=0", "epochs must be from 1 to 1000000 (got 0)"),
        ("+misspelt=1", "misspelt is not a key of the config"),
        ("device=cuda", "device=cuda but torch sees no CUDA GPU"),
    ],
)
def test_bad_values_exit_2_with_one_line_and_no_run_data(tmp_path, override, words):
    run_dir = tmp_path / "run"
    result = run_cli(override, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    if override == "device=cuda" and result.returncode == 0:
        pytest.skip("a CUDA GPU is present")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"Error: {lines[0].removeprefix('Error: ')}"] and words in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not run_dir.exists()  # refused before Hydra made the run directory


@pytest.mark.parametrize(
    "override, words",
    [
        ("lr=abc", "lr: Value 'abc' of type 'str' could not be converted to Float"),
        (
            "optimizer=foo",
            "optimizer=foo is not an option of optimizer: choose one of adam, adamw, sgd",
        ),
        (
            "reduction=median",
            "reduction=median is not an option of reduction: choose one of mean, sum",
        ),
        (
            "optimizer.momentum=0.9",
            "optimizer.momentum is not a key of this optimizer (only of optimizer=sgd)",
        ),
        ("typo=1", "typo is not a key of the config: its keys are optimizer,"),
        ("epoch=5", "epoch is not a key of the config (did you mean epochs?): its keys"),
        (
            "optimizer.weight_decy=0",
            "not a key of optimizer (did you mean optimizer.weight_decay?): its keys are",
        ),
        ("eval.iw_sample=0", "not a key of eval (did you mean eval.iw_samples?): its keys are"),
        ("betas=[0.9,0.99]", "(did you mean optimizer.betas with optimizer=adam or adamw?)"),
        ("weight_decay=0", "not a key of the config (did you mean optimizer.weight_decay?)"),
    ],
)
def test_compose_errors_are_one_line_before_any_run_directory(tmp_path, override, words):
    run_dir = tmp_path / "run"
    result = run_cli(override, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"Error: {result.stderr.strip()[7:]}"]
    assert words in result.stderr and "Traceback" not in result.stderr
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "args",
    [["--lr", "1e-3"], ["-m", "--epochs=2"], ["--batch-size", "64"], ["resume=x", "--epochs", "5"]],
)
def test_a_flag_shaped_setting_gets_hydras_usage_and_the_right_shape(tmp_path, args):
    """Hydra's argparse refuses an unknown flag (its usage and error), then one line of ours."""
    run_dir = tmp_path / "run"
    result = run_cli(*args, f"hydra.run.dir={run_dir}", f"hydra.sweep.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 2
    assert "vae-train: error: unrecognized arguments:" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == "Error: settings are key=value arguments without dashes: lr=1e-3 epochs=20"
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "args, line",
    [
        (["lr", "1e-3"], "lr has no value: a setting is one argument, key=value (write lr=<value>"),
        (["epochs"], "epochs has no value: a setting is one argument, key=value"),
    ],
)
def test_a_setting_without_a_value_is_shown_its_right_shape(tmp_path, args, line):
    run_dir = tmp_path / "run"
    result = run_cli(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 2
    assert line in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "args",
    [["--info=config"], ["-cjob"], ["--config-name=config", "++lr=2", "--cfg", "job"]],
)
def test_hydras_own_flags_and_forms_work(tmp_path, args):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "optimizer" in result.stdout


def test_a_flags_value_is_not_mistaken_for_a_setting(tmp_path):
    result = run_cli(
        "-cn", "config", "epochs=1", "eval.iw_samples=0", "hydra.run.dir=run", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "history.json").exists()


def test_a_bad_value_anywhere_in_a_sweep_stops_it_before_any_job(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "lr=1e-3,-1", "epochs=1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 2
    assert "job lr=-1 epochs=1: lr must be a finite number > 0" in result.stderr
    assert "nothing was run" in result.stderr and not sweep.exists()


def test_two_runs_started_together_get_their_own_directories(tmp_path):
    import subprocess

    from helpers import vae_train_executable

    runs = [
        subprocess.Popen(
            [vae_train_executable(), "epochs=1", f"seed={seed}"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for seed in (1, 2)
    ]
    assert [p.wait() for p in runs] == [0, 0]
    seeds = sorted(
        json.loads(h.read_text())["config"]["seed"]
        for h in tmp_path.glob("outputs/*/*/history.json")
    )
    assert seeds == [1, 2]


def test_cfg_job_prints_the_composed_config(tmp_path):
    result = run_cli("optimizer=sgd", "lr=0.05", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["optimizer"] == {
        "name": "sgd",
        "weight_decay": 0.0,
        "momentum": 0.9,
        "nesterov": False,
    }
    assert config["lr"] == 0.05 and not (tmp_path / "outputs").exists()


def test_an_existing_run_is_never_overwritten(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli("epochs=1", f"hydra.run.dir={run_dir}", cwd=tmp_path).returncode == 0
    files = ("history.json", ".hydra/config.yaml", ".hydra/overrides.yaml")
    before = [(run_dir / name).read_bytes() for name in files]
    again = run_cli("epochs=2", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert [(run_dir / name).read_bytes() for name in files] == before
