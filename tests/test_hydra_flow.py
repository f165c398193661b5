"""Issue 12's bugs: the checks run inside Hydra's own flow, on what Hydra composed.

Each test runs the installed `vae-train` as a user does; each failed before the redesign.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException

from vae_runner.config.explain import explain

from helpers import run_cli

pytestmark = pytest.mark.e2e

FAST = ("epochs=1", "eval.iw_samples=0")  # the cheap run: no IW estimate


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def user_presets(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    (folder / "experiment").mkdir(parents=True)
    (folder / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nlr: 0.0042\nepochs: 1\neval:\n  iw_samples: 0\n"
    )
    return folder


def test_a_config_dir_preset_is_checked_in_one_line_and_leaves_nothing(tmp_path):
    presets, run_dir = user_presets(tmp_path), tmp_path / "run"
    result = run_cli("-cd", str(presets), "epochs=0", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 2
    assert one_error_line(result) == (
        "Error: epochs must be from 1 to 1000000 (got 0); 50 is the course's"
    )
    assert not run_dir.exists()


def test_a_search_path_preset_runs(tmp_path):
    presets, run_dir = user_presets(tmp_path), tmp_path / "run"
    result = run_cli(
        f"hydra.searchpath=[file://{presets}]",
        "experiment=mine",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "history.json").read_text())["config"]["lr"] == 0.0042


@pytest.mark.parametrize(
    "args",
    [["--help", "-cd", "{dir}"], ["--help", "--config-dir={dir}", "experiment=mine"]],
    ids=["-cd", "--config-dir"],
)
def test_help_with_a_config_dir_lists_the_users_presets(tmp_path, args):
    presets = user_presets(tmp_path)
    result = run_cli(*[a.format(dir=presets) for a in args], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    groups = result.stdout.split("== Config groups")[1].split("== Config (")[0]
    assert "mine" in groups and "schema" not in groups


def test_help_with_cfg_job_prints_help(tmp_path):
    result = run_cli("--help", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "== Config groups" in result.stdout


def test_chdir_reads_relative_data_paths_from_where_vae_train_started(tmp_path):
    """A relative data.root with hydra.job.chdir=true: found, as without chdir."""
    from test_data import write_idx

    write_idx(tmp_path / "idx")
    run_dir = tmp_path / "run"
    result = run_cli(
        "data=mnist",
        "data.root=idx",
        "data.download=false",
        "batch_size=4",
        "hydra.job.chdir=true",
        f"hydra.run.dir={run_dir}",
        *FAST,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "history.json").read_text())["status"] == "completed"


def test_a_missing_relative_root_with_chdir_is_refused_before_any_folder(tmp_path):
    run_dir = tmp_path / "run"
    args = ("data=mnist", "data.root=nope", "hydra.job.chdir=true", f"hydra.run.dir={run_dir}")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "data.root=nope: no such folder" in one_error_line(result)
    assert not run_dir.exists()


@pytest.mark.parametrize("flag", ["-m", "--multi", "--multirun"])
def test_an_unwritable_sweep_dir_is_one_line_with_every_multirun_flag(tmp_path, flag):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_cli(flag, "lr=1e-3", f"hydra.sweep.dir={blocker}/sweep", cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot create hydra.sweep.dir=" in one_error_line(result)


@pytest.mark.parametrize(
    "form", ["hydra.run.dir={d}", "hydra.run.dir='{d}'", "++hydra.run.dir={d}"]
)
def test_a_finished_runs_record_never_changes(tmp_path, form):
    done = tmp_path / "done"
    first = run_cli(f"hydra.run.dir={done}", *FAST, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    record = {p: p.read_bytes() for p in done.rglob("*") if p.is_file()}
    again = run_cli("lr=0.5", form.format(d=done), *FAST, cwd=tmp_path)
    assert again.returncode == 2
    assert "already holds a run" in one_error_line(again)
    assert {p: p.read_bytes() for p in done.rglob("*") if p.is_file()} == record


def test_an_empty_run_dir_is_refused(tmp_path):
    result = run_cli("hydra.run.dir=", *FAST, cwd=tmp_path)
    assert result.returncode == 2
    assert "hydra.run.dir is empty" in one_error_line(result)
    assert list(tmp_path.iterdir()) == []


def test_hydras_default_job_logging_writes_the_epoch_lines_to_the_log_file(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("hydra/job_logging=default", f"hydra.run.dir={run_dir}", *FAST, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    log = (run_dir / "vae-train.log").read_text()
    assert "Epoch 1/1 | Train:" in log and f"Run directory: {run_dir}" in log


def test_version_names_vae_runner(tmp_path):
    from vae_runner import __version__

    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == f"vae-runner {__version__}"


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["-m", "lr=interval(1e-5,1e-2)"],
            "lr=interval(1e-5,1e-2) is a range: the default sweeper runs lists of values",
        ),
        (["-m", "lr=1e-3,", "1e-4"], "a space after a comma splits a sweep's values"),
        (["Lr=1e-3"], "Lr is not a key of the config (did you mean lr?)"),
        (["lr", "1e-3"], "lr has no value: a setting is one argument, key=value"),
        (["experiment=lr_sweep"], "experiment=lr_sweep is a sweep preset: run it with -m"),
        (
            ["-m", "hydra/launcher=slurm", "lr=1e-3"],
            "hydra/launcher=slurm submits with SLURM's sbatch",
        ),
    ],
)
def test_mistakes_are_one_line_and_exit_2(tmp_path, args, line):
    env = {"PATH": os.path.dirname(sys.executable)}  # no sbatch on this PATH
    result = run_cli(*args, f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert line in one_error_line(result)
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "missing, option",
    [
        ("hydra/launcher/joblib", "hydra/launcher=joblib"),
        ("hydra/launcher/submitit_slurm", "hydra/launcher=submitit_slurm"),
        ("hydra/sweeper/optuna", "hydra/sweeper=optuna"),
    ],
)
def test_a_missing_plugin_names_the_sweep_extra(missing, option):
    """What Hydra raises when the plugin's config is not installed (its fields, not its text)."""
    err = MissingConfigException("any words", missing_cfg_file=missing, options=["basic"])
    assert explain(err) == f"{option} needs Hydra's plugins from the sweep extra: " + (
        "pip install 'vae-runner[sweep]'"
    )


@pytest.mark.parametrize("args", [["device=cuda"], ["data=mnist", "data.download=false"]])
def test_a_run_refused_after_compose_leaves_no_folder(tmp_path, args, monkeypatch):
    import torch

    if args == ["device=cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    empty = tmp_path / "empty"
    empty.mkdir()
    run_dir = tmp_path / "run"
    env = {"VAE_RUNNER_DATA": str(empty)}
    result = run_cli(*args, f"hydra.run.dir={run_dir}", *FAST, cwd=tmp_path, env=env)
    if args[0] == "data=mnist" and result.returncode == 0:
        pytest.skip("MNIST is installed in a system folder here")
    assert result.returncode == 2
    one_error_line(result)
    assert not run_dir.exists()


def test_a_sweep_whose_download_fails_exits_2_like_the_single_run(tmp_path):
    """The download is tried inside each job: the job records a config failure (exit 2)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    sweep = tmp_path / "sweep"
    env = {
        "VAE_RUNNER_DATA": str(empty),
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
    }
    args = ("-m", "data=mnist", "data.download=true", "lr=1e-3,1e-2", f"hydra.sweep.dir={sweep}")
    result = run_cli(*args, *FAST, cwd=tmp_path, env=env)
    if result.returncode == 0:
        pytest.skip("MNIST is installed in a system folder here")
    assert result.returncode == 2, result.stderr
    record = json.loads((sweep / "0" / "history.json").read_text())
    assert record["status"] == "failed" and record["error"]["kind"] == "config"
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["exit_code"] == 2 and "found nowhere" in summary["jobs"][0]["error"]
