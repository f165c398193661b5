"""Sweeps: the summary (JSON, CSV, curves.png, ranked table), launchers, Optuna, vae-summary.

The end-to-end tests run the installed `vae-train -m` with 1-2 epochs on the offline digits; the
launcher and sweeper plugins come from the `sweep` extra (pip install -e ".[dev,sweep]").
"""

from __future__ import annotations

import csv
import json
import math
from importlib import resources
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module

from vae_runner.cli.callbacks import job_threads
from vae_runner.config.resolvers import register
from vae_runner.cpu_threads import cpu_count
from vae_runner.exit_codes import exit_code, sweep_exit_code
from vae_runner.sweep.rundirs import collect_jobs
from vae_runner.sweep.summary import COLUMNS, CSV_COLUMNS, build_summary, write_summary

from helpers import help_text, run_cli, vae_train_in_process

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXPERIMENTS = ("lr_sweep", "optimizer_comparison", "optuna_search")


# --------------------------------------------------------------------------- checks
def _same(csv_cell: str, value) -> bool:
    """A CSV cell against the JSON value of the same row and column, written independently."""
    if value is None:
        return csv_cell == ""
    if isinstance(value, bool):
        return csv_cell == str(value).lower()
    if isinstance(value, list):
        return csv_cell == " ".join(value)
    if isinstance(value, float):
        return float(csv_cell) == value
    return csv_cell == str(value)


def check_summary(sweep: Path, n_jobs: int) -> dict:
    """The three files agree with each other and rank correctly; returns the JSON summary."""
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    rows = summary["jobs"]
    assert len(rows) == n_jobs and [row["rank"] for row in rows] == list(range(1, n_jobs + 1))

    with open(sweep / "sweep_summary.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        csv_rows = list(reader)
    settings = summary["settings"]
    assert [r["row"] for r in csv_rows] == ["setting"] * len(settings) + ["job"] * n_jobs
    for setting, csv_row in zip(settings, csv_rows, strict=False):
        assert csv_row["label"] == setting["label"] and int(csv_row["rank"]) == setting["rank"]
        mean = setting["measures"]["best_test_loss"]["mean"]
        assert _same(csv_row["best_test_loss_mean"], mean)
    for row, csv_row in zip(rows, csv_rows[len(settings) :], strict=True):
        assert set(row) == set(COLUMNS)
        for key in COLUMNS:
            assert _same(csv_row[key], row[key]), (key, csv_row[key], row[key])

    # completed jobs first, each group by best test loss; the winner is the best job of the
    # setting the verdict names, and there is none when it names none
    completed = [r for r in rows if r["status"] == "completed"]
    assert rows[: len(completed)] == completed
    best = [r[f"best_{summary['ranked_on']}_loss"] for r in completed]  # the split ranked on
    assert best == sorted(best) and all(math.isfinite(b) for b in best)
    named = summary["verdict"]["winner"]
    expected = [r for r in completed if r["setting"] == named][:1] if named else []
    assert [r for r in rows if r["winner"]] == expected
    if expected:
        assert summary["winner"]["job"] == expected[0]["job"]
    statuses = [{"status": r["status"], "config": {}} for r in rows]
    assert summary["exit_code"] == sweep_exit_code([exit_code(s) for s in statuses])

    png = (sweep / "curves.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE and len(png) > 20_000
    from PIL import Image

    with Image.open(sweep / "curves.png") as image:
        assert image.format == "PNG" and image.size[0] > 1000 and image.size[1] > 300
        drawn = image.text["Description"].splitlines()
    assert drawn == summary["plot"]["lines"]
    for plot in summary["loss_vs"]:  # the answer against each swept key: recorded and written
        assert (sweep / plot["file"]).read_bytes()[:8] == PNG_SIGNATURE
    if summary["seeds_per_setting"] > 1:  # one curve per setting, its seeds' mean
        drawable = [s for s in settings if any(rows_of(summary, s, epochs=True))]
        assert len(drawn) == len(drawable)
        for line, setting in zip(drawn, drawable, strict=True):
            assert setting["label"] in line and line.startswith("★") == setting["winner"]
        return summary
    with_history = [r for r in rows if r["epochs_run"] > 0]
    assert len(drawn) == len(with_history)
    for line, row in zip(drawn, with_history, strict=True):
        assert row["label"] in line and line.startswith("★") == row["winner"]
    return summary


def rows_of(summary: dict, setting: dict, epochs: bool = False) -> list[dict]:
    rows = [r for r in summary["jobs"] if r["job"] in setting["jobs"]]
    return [r for r in rows if r["epochs_run"] > 0] if epochs else rows


def by_label(summary: dict) -> dict[str, dict]:
    return {row["label"]: row for row in summary["jobs"]}


# --------------------------------------------------------------------------- units
@pytest.mark.parametrize(
    "launcher, cpus, threads",
    [
        ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 8, None),
        ({"_target_": "x.JoblibLauncher", "n_jobs": -1}, 2, 1),
        ({"_target_": "x.JoblibLauncher", "n_jobs": -1}, 16, 1),
        ({"_target_": "x.JoblibLauncher", "n_jobs": -4}, 16, 1),  # 13 at once
        ({"_target_": "x.JoblibLauncher", "n_jobs": 4}, 16, 4),
        ({"_target_": "x.JoblibLauncher", "n_jobs": 3}, 16, 5),
        ({"_target_": "x.JoblibLauncher", "n_jobs": 1}, 2, 2),
        ({"_target_": "x.JoblibLauncher", "n_jobs": 8}, 2, 1),  # more jobs than cores
        ({"_target_": "x.submitit_launcher.LocalLauncher", "cpus_per_task": None}, 8, 1),
        ({"_target_": "x.submitit_launcher.SlurmLauncher", "cpus_per_task": 6}, 64, 6),
    ],
)
def test_parallel_jobs_share_the_cores(launcher, cpus, threads):
    assert job_threads(launcher, cpus) == threads


def _codes(*records):
    return [exit_code(r) for r in records]


def test_one_function_maps_every_record_to_its_exit_code():
    assert exit_code({"status": "completed"}) == 0
    assert exit_code(None) == 1  # no history.json: failed
    assert exit_code({"status": "running"}) == 1  # as judged after the sweep: a dead process
    assert exit_code({"status": "something new"}) == 1
    assert exit_code({"status": "diverged", "config": {"on_divergence": "fail"}}) == 3
    assert exit_code({"status": "diverged", "config": {"on_divergence": "stop"}}) == 0
    assert exit_code({"status": "interrupted", "interrupted_by": "SIGINT"}) == 130
    assert exit_code({"status": "interrupted", "interrupted_by": "SIGTERM"}) == 143
    assert exit_code({"status": "failed", "error": {"kind": "config"}}) == 2
    assert exit_code({"status": "failed", "error": {"kind": "error"}}) == 1


def test_a_sweep_exits_0_only_when_every_job_completed():
    completed, diverged = {"status": "completed"}, {"status": "diverged", "config": {}}
    assert sweep_exit_code([]) == 0
    assert sweep_exit_code(_codes(completed, completed)) == 0
    assert sweep_exit_code(_codes(completed, None)) == 1
    assert sweep_exit_code(_codes(completed, diverged, None)) == 3  # the highest code
    sigterm = {"status": "interrupted", "interrupted_by": "SIGTERM"}
    assert sweep_exit_code(_codes(sigterm, diverged)) == 143


def _fake_run(run_dir: Path, overrides: list[str], status: str | None, losses=()) -> None:
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if status is None:
        return  # the job stopped before writing history.json
    finite = [v for v in losses if v is not None]
    history = {
        "status": status,
        "epoch": list(range(1, len(losses) + 1)),
        "test_loss": list(losses),
        "train_loss": list(losses),
        "test_kl": [1.0] * len(losses),
        "active_units": [3] * len(losses),
        "epoch_seconds": [0.25] * len(losses),
        "best_test_loss": min(finite) if finite else None,
        "best_epoch": losses.index(min(finite)) + 1 if finite else None,
        "config": {"epochs": 3},
    }
    (run_dir / "history.json").write_text(json.dumps(history))


def test_summary_ranks_completed_jobs_first_and_keeps_every_job(tmp_path):
    sweep = tmp_path / "sweep"
    _fake_run(sweep / "0", ["lr=0.1", "epochs=3"], "diverged", [5.0, None])
    _fake_run(sweep / "1", ["lr=0.01", "epochs=3"], "completed", [9.0, 8.0, 8.5])
    _fake_run(sweep / "2", ["lr=-1", "epochs=3"], None)
    _fake_run(sweep / "10", ["lr=0.001", "epochs=3"], "completed", [9.0, 7.0, 7.5])
    _fake_run(sweep / "3", ["lr=1e-05", "epochs=3"], "running", [9.5])
    (sweep / ".submitit" / "123").mkdir(parents=True)  # hidden: not a job

    jobs = collect_jobs([sweep])
    assert [job.name for job in jobs] == ["0", "1", "2", "3", "10"]  # job order, not text order
    summary = build_summary(jobs, [sweep], sweep_over=True)
    assert [(r["label"], r["status"], r["rank"]) for r in summary["jobs"]] == [
        ("lr=0.001", "completed", 1),
        ("lr=0.01", "completed", 2),
        ("lr=0.1", "diverged", 3),  # a lower loss, but it diverged
        ("lr=1e-05", "killed", 4),  # `running`, but no process holds it: it died
        ("lr=-1", "failed", 5),  # no history.json at all
    ]
    assert summary["winner"]["label"] == "lr=0.001" and summary["winner"]["best_epoch"] == 2
    assert summary["counts"] == {"completed": 2, "diverged": 1, "failed": 1, "killed": 1}
    assert summary["exit_code"] == 3
    # vae-summary during a sweep: `running` is live only while a process holds its directory
    assert build_summary(jobs, [sweep])["jobs"][3]["status"] == "killed"
    from vae_runner.rundir import claim

    held = claim(sweep / "3")
    assert build_summary(collect_jobs([sweep]), [sweep])["jobs"][3]["status"] == "running"
    held.release()

    write_summary(summary, jobs, sweep)
    written = check_summary(sweep, 5)
    assert written["jobs"][2]["final_test_loss"] is None  # null: not finite


def test_jobs_a_stopped_sweep_never_started_are_listed(tmp_path):
    sweep = tmp_path / "sweep"
    _fake_run(sweep / "0", ["lr=0.1", "epochs=3"], "completed", [2.0])
    _fake_run(sweep / "1", ["lr=0.01", "epochs=3"], "running", [3.0])
    (sweep / "multirun.yaml").write_text(  # what Hydra's basic sweeper saves
        "hydra:\n"
        "  sweeper:\n"
        "    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper\n"
        "    max_batch_size: null\n"
        "    params: null\n"
        "  overrides:\n"
        "    task:\n"
        "    - lr=0.1,0.01,0.001\n"
        "    - epochs=3\n"
    )
    summary = build_summary(collect_jobs([sweep]), [sweep], sweep_over=True)
    assert [(r["job"], r["label"], r["status"], r["run_dir"]) for r in summary["jobs"]] == [
        ("0", "lr=0.1", "completed", str((sweep / "0").resolve())),
        ("1", "lr=0.01", "killed", str((sweep / "1").resolve())),
        ("#2", "lr=0.001", "not started", None),
    ]
    assert summary["exit_code"] == 1


def test_labels_show_what_differs_and_stay_unique(tmp_path):
    _fake_run(tmp_path / "a", ["optimizer=sgd", "lr=0.1"], "completed", [1.0])
    _fake_run(tmp_path / "b", ["optimizer=sgd", "lr=0.1"], "completed", [2.0])
    _fake_run(tmp_path / "c", [], "completed", [3.0])
    rows = build_summary(collect_jobs([tmp_path / d for d in "abc"]), [])["jobs"]
    assert [r["label"] for r in rows] == [
        "optimizer=sgd lr=0.1 (a)",
        "optimizer=sgd lr=0.1 (b)",
        "defaults (c)",  # no overrides: the defaults, and its directory's name
    ]
    (single,) = build_summary(collect_jobs([tmp_path / "a"]), [])["jobs"]
    assert single["label"] == "optimizer=sgd lr=0.1"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_are_global_packages_that_configure_their_sweep(experiment):
    conf = resources.files("vae_runner.conf")
    text = conf.joinpath(f"experiment/{experiment}.yaml").read_text()
    assert text.startswith("# @package _global_")
    assert f"vae-train -m experiment={experiment}" in text  # the command, in a comment
    register()
    with initialize_config_module("vae_runner.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
        adamw = compose("config", overrides=[f"experiment={experiment}", "optimizer=adamw"])
    params = cfg.hydra.sweeper.params
    if experiment == "lr_sweep":
        assert params == {"lr": "1e-2,1e-3,1e-4,1e-5"} and cfg.seeds == 3
    elif experiment == "optimizer_comparison":
        # optimizer x lr: each optimizer is compared at its own best lr (sweep/fair.py)
        assert params == {"optimizer": "adam,adamw,sgd", "lr": "1e-1,1e-2,1e-3"}
        assert cfg.seeds == 3 and cfg.data.val_fraction == 0.1
        assert adamw.lr * adamw.optimizer.weight_decay > 2**-25  # a decay that acts in float32
    else:
        assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
        assert cfg.hydra.sweeper.direction == "minimize" and "lr" in params
        assert cfg.hydra.sweeper.max_failure_rate == 0.0


def test_the_slurm_launcher_config_extends_submitit_slurm():
    register()
    with initialize_config_module("vae_runner.conf", version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert {"partition", "gpus_per_node", "timeout_min", "array_parallelism"} <= set(launcher)


def test_vae_summary_help_says_what_ranks(capsys):
    """The sweep's rank: validation when every completed job has that split, else test."""
    from vae_runner.cli.summary import main

    with pytest.raises(SystemExit) as ended:
        main(["--help"])
    assert ended.value.code == 0
    said = " ".join(capsys.readouterr().out.split())
    assert (
        "Rank runs by best validation loss (by best test loss unless every completed run "
        "has a validation split, data.val_fraction)" in said
    )


@pytest.mark.parametrize("launcher", ["slurm", "submitit_slurm"])
def test_a_slurm_launcher_without_m_is_refused_rather_than_training_here(
    tmp_path, monkeypatch, capsys, launcher
):
    """A launcher acts on -m only: a single run with it would train on this machine (a
    cluster's login node), whether sbatch is there or not."""
    run_dir = tmp_path / "run"
    args = (f"hydra/launcher={launcher}", f"hydra.run.dir={run_dir}", "epochs=1")
    assert vae_train_in_process(monkeypatch, *args) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: hydra/launcher={launcher} launches the jobs of a sweep (-m): without -m this "
        f"run would train here; submit it with -m (a sweep of one: vae-train -m "
        f"hydra/launcher={launcher} ...), or drop hydra/launcher to train here"
    )
    assert not run_dir.exists()


@pytest.mark.e2e
def test_help_lists_every_packaged_group_and_option():
    """Help is Hydra's, from the config search path: each conf/ group with all its YAMLs."""
    section = help_text().split("== Config groups (group=option) ==\n")[1].split("\n\n")[0]
    listed = {
        group: {option.strip() for option in options.split(",")}
        for group, _, options in (line.partition(": ") for line in section.splitlines())
    }
    conf = resources.files("vae_runner.conf")
    groups = [d for d in conf.iterdir() if d.is_dir() and d.name not in ("hydra", "__pycache__")]
    assert {d.name for d in groups} == set(listed)
    for group in groups:
        options = {f.name.removesuffix(".yaml") for f in group.iterdir() if f.suffix == ".yaml"}
        assert listed[group.name] == options, group.name
    assert listed["experiment"] == set(EXPERIMENTS)


# --------------------------------------------------------------------------- end to end
e2e = pytest.mark.e2e


@e2e
def test_basic_sweep_ends_with_the_answer_on_screen_and_in_files(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "lr=1e-2,1e-3", "epochs=2", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = check_summary(sweep, 2)
    rows = by_label(summary)
    assert set(rows) == {"lr=0.01", "lr=0.001"}
    assert all(r["status"] == "completed" and r["epochs_run"] == 2 for r in rows.values())
    history = json.loads((sweep / "0" / "history.json").read_text())
    assert rows["lr=0.01"]["best_test_loss"] == history["best_test_loss"]
    assert rows["lr=0.01"]["overrides"] == ["lr=0.01", "epochs=2"]
    # the table once (the callback ran; the fallback did not write again), the folder last
    out = result.stdout
    assert out.count("sweep summary: ranked by best test loss") == 1 and "\x1b" not in out
    winner = summary["jobs"][0]
    assert f"Winner: {winner['label']} (job {winner['job']})" in out
    assert out.strip().splitlines()[-1] == f"Sweep directory: {sweep.resolve()}"

    # vae-summary rebuilds the same rows from the directory
    again = run_cli(str(sweep), cwd=tmp_path, program="vae-summary")
    assert again.returncode == 0, again.stderr
    assert json.loads((sweep / "sweep_summary.json").read_text())["jobs"] == summary["jobs"]


@e2e
def test_joblib_runs_the_jobs_in_parallel_processes(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "lr=1e-2,1e-3",
        "epochs=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Joblib.Parallel(n_jobs=2" in result.stdout
    rows = by_label(check_summary(sweep, 2))
    assert set(rows) == {"lr=0.01", "lr=0.001"}
    assert all(r["status"] == "completed" for r in rows.values())
    # Each job's share of the cores, and threads that sleep when idle: the workers inherit
    # vae-train's OMP_WAIT_POLICY (cpu_threads.py)
    for job in ("0", "1"):
        process = json.loads((sweep / job / "history.json").read_text())["process"]
        assert process["threads"] == max(1, cpu_count() // 2)
        assert process["omp_wait_policy"] == "PASSIVE"


@e2e
def test_diverged_and_failed_jobs_are_listed_and_the_sweep_exits_non_zero(tmp_path):
    sweep = tmp_path / "sweep"
    # A model too large to allocate passes every check made before the sweep starts and fails
    # inside its job, before its first epoch.
    huge = "100000000000"
    result = run_cli(
        "-m",
        "lr=1e-3,1e8",
        f"model.hidden_dim=400,{huge}",
        "epochs=2",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 3, result.stderr  # diverged (3) beats failed (1)
    summary = check_summary(sweep, 4)
    assert summary["jobs"][0]["label"] == "lr=0.001 model.hidden_dim=400"
    assert {(r["label"], r["status"]) for r in summary["jobs"]} == {
        ("lr=0.001 model.hidden_dim=400", "completed"),
        ("lr=100000000.0 model.hidden_dim=400", "diverged"),
        (f"lr=0.001 model.hidden_dim={huge}", "failed"),
        (f"lr=100000000.0 model.hidden_dim={huge}", "failed"),
    }
    assert summary["winner"]["label"] == "lr=0.001 model.hidden_dim=400"
    assert summary["exit_code"] == 3
    assert "out of memory (" in result.stderr and "Traceback" not in result.stderr
    table = result.stdout[result.stdout.index("sweep summary") :]
    assert "4 jobs: 1 completed, 2 failed, 1 diverged" in table


@e2e
def test_the_summary_is_written_when_hydra_skips_its_callback(tmp_path):
    # The second job ends the sweep from inside (what a sys.exit in a job does): Hydra then
    # stops without calling on_multirun_end. Hydra turns a callback's Exception into a warning,
    # so the test's callback raises SystemExit, which passes through.
    (tmp_path / "stop_callback.py").write_text(
        "from hydra.experimental.callback import Callback\n"
        "class Stop(Callback):\n"
        "    def on_job_start(self, config, **kwargs):\n"
        "        if config.hydra.job.num == 1:\n"
        "            raise SystemExit(7)\n"
    )
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "lr=1e-2,1e-3",
        "epochs=1",
        "+hydra.callbacks.stop._target_=stop_callback.Stop",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 1, result.stderr  # a job that wrote no history.json: failed
    summary = check_summary(sweep, 2)
    assert [(r["label"], r["status"]) for r in summary["jobs"]] == [
        ("lr=0.01", "completed"),
        ("lr=0.001", "failed"),
    ]
    assert result.stdout.count("sweep summary: ranked by best test loss") == 1


@e2e
def test_a_sweep_refused_before_any_job_exits_2_and_writes_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "optimizer=adam,foo", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 2
    assert "optimizer=foo is not an option of optimizer" in result.stderr
    assert not sweep.exists()  # refused before Hydra made anything


@e2e
def test_submitit_local_runs_a_two_job_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "lr=1e-2,1e-3",
        "epochs=2",
        "hydra/launcher=submitit_local",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = by_label(check_summary(sweep, 2))
    assert set(rows) == {"lr=0.01", "lr=0.001"}
    assert all(r["status"] == "completed" for r in rows.values())
    assert (sweep / ".submitit").is_dir()  # submitit's logs, not a job


@e2e
def test_an_optuna_search_records_its_best_parameters(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "experiment=optuna_search",
        "hydra.sweeper.n_trials=3",
        "epochs=2",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout  # Optuna's coloured log goes through Hydra's
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    searched = {"lr", "batch_size", "grad_clip", "annealing.warmup_epochs"}
    assert set(results["best_params"]) == searched
    summary = check_summary(sweep, 3)
    assert summary["optuna"] == results
    winner = summary["jobs"][0]
    # the objective and the ranking are the best validation loss (data.val_fraction=0.1)
    assert summary["ranked_on"] == "val"
    assert results["best_value"] == winner["best_val_loss"]
    chosen = dict(o.split("=", 1) for o in winner["overrides"])
    for name, value in results["best_params"].items():
        assert float(chosen[name]) == pytest.approx(float(value))
    assert "Optuna best parameters:" in result.stdout


@e2e
def test_an_optuna_search_with_early_stopping_runs_and_says_where_each_trial_stopped(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "experiment=optuna_search",
        "hydra.sweeper.n_trials=2",
        "epochs=4",
        "early_stop.patience=2",
        "early_stop.min_delta=1e9",  # no epoch after the first improves: each stops after 3
        "eval.iw_samples=0",
        "pictures=false",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = check_summary(sweep, 2)
    for row in summary["jobs"]:
        assert (row["status"], row["stopped_early"], row["stopped_epoch"]) == ("completed", True, 3)
        assert (row["epochs_run"], row["epochs"]) == (3, 4)
    assert result.stdout.count("completed (stopped early at 3)") == 2  # the ranked table
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == summary["jobs"][0]["best_val_loss"]


@e2e
def test_an_optuna_search_whose_every_trial_diverged_names_no_best(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=2",
        "lr=interval(1e6,1e7)",
        "optimizer=sgd",
        "grad_clip=0",
        "epochs=2",
        "data=digits",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 3, result.stderr
    said = result.stdout + result.stderr
    assert "Best parameters" not in said and "Best value" not in said
    assert "No best parameters: every trial failed or diverged" in said  # Hydra's log line
    assert "Optuna found no best parameters: every trial failed or diverged" in result.stdout
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["winner"] is None and summary["optuna"]["best_params"] is None
    assert summary["optuna"]["no_best"] == "every trial failed or diverged"


@e2e
def test_vae_summary_compares_runs_from_separate_invocations(tmp_path):
    for name, lr in (("a", "1e-2"), ("b", "1e-3")):
        run = run_cli(f"lr={lr}", "epochs=1", f"hydra.run.dir={tmp_path / name}", cwd=tmp_path)
        assert run.returncode == 0, run.stderr
    dirs = [str(tmp_path / "a"), str(tmp_path / "b")]

    no_out = run_cli(*dirs, cwd=tmp_path, program="vae-summary")
    assert no_out.returncode == 2 and "--out" in no_out.stderr

    out = tmp_path / "compare"
    result = run_cli(*dirs, "--out", str(out), cwd=tmp_path, program="vae-summary")
    assert result.returncode == 0, result.stderr
    summary = check_summary(out, 2)
    assert {(r["job"], r["label"]) for r in summary["jobs"]} == {("a", "lr=1e-2"), ("b", "lr=1e-3")}
    assert result.stdout.strip().splitlines()[-1] == f"Summary directory: {out.resolve()}"

    missing = run_cli(str(tmp_path / "nowhere"), cwd=tmp_path, program="vae-summary")
    assert missing.returncode == 2 and "not a directory" in missing.stderr


@e2e
def test_a_seeded_sweep_reports_each_settings_spread_and_a_verdict(tmp_path):
    sweep = tmp_path / "sweep"
    args = ("-m", "lr=1e-2,1e-3", "seeds=2", "epochs=2", "data.val_fraction=0.1")
    result = run_cli(*args, "eval.iw_samples=0", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = check_summary(sweep, 4)
    assert summary["seeds_per_setting"] == 2 and summary["ranked_on"] == "val"
    assert sorted(r["label"] for r in summary["jobs"]) == [
        "lr=0.001 seed=0",
        "lr=0.001 seed=1",
        "lr=0.01 seed=0",
        "lr=0.01 seed=1",
    ]
    assert [s["n_completed"] for s in summary["settings"]] == [2, 2]
    said = summary["verdict"]
    assert said["kind"] in ("winner", "tied") and said["test"] == "Welch's two-sided t-test at 0.05"
    out = " ".join(result.stdout.split())
    assert "settings: mean ± sd over seeds, ranked by mean best validation loss" in out
    assert " ".join(said["sentence"].split()) in out
    assert "ranked on the test set" not in out  # ranked on the validation split
    # the answer against lr (1e-2 and 1e-3: 10x apart, a linear axis), each setting's lr typed
    assert summary["loss_vs"] == [
        {"key": "lr", "file": "loss_vs_lr.png", "x": "linear", "measure": "best_val_loss"}
    ]
    assert sorted(s["values"]["lr"] for s in summary["settings"]) == [0.001, 0.01]
    # 2 epochs of a 10-epoch KL warm-up: the weight never reached beta, and the terminal says so
    assert any(
        c.startswith("the KL weight never reached beta in 4 of 4") for c in summary["cautions"]
    )
    assert f"Caution: {summary['cautions'][-1]}" in result.stdout
