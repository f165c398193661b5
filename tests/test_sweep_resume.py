"""`vae-train resume=<sweep dir> [epochs=N]`: a sweep carried on, or extended, as one command.

In-process (tests/helpers.py `vae_train_in_process`) on the offline digits: a finished 2-job
sweep of 2 epochs, made once and copied by each test. The Ctrl-C hint, which needs a real
signal, is in test_resume.py.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from vae_runner.rundir import LOCK_FILE, claim
from vae_runner.sweep.rundirs import collect_jobs
from vae_runner.sweep.summary import build_summary

from helpers import vae_train_in_process

SWEEP = ("lr=1e-3,1e-2", "data=digits", "epochs=2", "eval.iw_samples=0", "pictures=false")


def history(run_dir) -> dict:
    return json.loads((run_dir / "history.json").read_text())


def records(sweep) -> dict[str, bytes]:
    """Every file a refusal must leave as it was (a lock is not a record)."""
    files = [p for p in sorted(sweep.rglob("*")) if p.is_file() and p.name != LOCK_FILE]
    return {str(p): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("finished") / "sweep"
    with pytest.MonkeyPatch.context() as monkeypatch:
        code = vae_train_in_process(monkeypatch, "-m", *SWEEP, f"hydra.sweep.dir={sweep}")
    assert code == 0
    return sweep


@pytest.fixture
def sweep(tmp_path, finished_sweep):
    copy = tmp_path / "sweep"
    shutil.copytree(finished_sweep, copy)
    return copy


def test_resume_extends_every_job_of_a_finished_sweep_and_redoes_its_summary(
    tmp_path, monkeypatch, sweep
):
    # The reference: job 0 extended on its own, as resume=<sweep>/0 epochs=3 does
    alone = tmp_path / "alone"
    shutil.copytree(sweep / "0", alone)
    assert vae_train_in_process(monkeypatch, f"resume={alone}", "epochs=3") == 0

    assert vae_train_in_process(monkeypatch, f"resume={sweep}", "epochs=3") == 0

    for job in ("0", "1"):
        extended = history(sweep / job)
        assert extended["status"] == "completed" and extended["epoch"] == [1, 2, 3]
        assert extended["config"]["epochs"] == 3
        assert [(r["after_epoch"], r["how"]) for r in extended["resumed"]] == [(2, "resume")]
    assert history(sweep / "0")["test_loss"] == history(alone)["test_loss"]  # bit for bit
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["exit_code"] == 0 and summary["counts"] == {"completed": 2}
    by_label = {row["label"]: row for row in summary["jobs"]}
    assert set(by_label) == {"lr=0.001", "lr=0.01"}  # the same two jobs, nothing "not started"
    for job, label in (("0", "lr=0.001"), ("1", "lr=0.01")):
        losses = history(sweep / job)["test_loss"]
        row = by_label[label]
        assert row["epochs_run"] == 3 and row["final_test_loss"] == losses[-1]
        assert row["best_test_loss"] == min(losses)
    best = min(by_label.values(), key=lambda row: row["best_test_loss"])
    assert summary["winner"]["label"] == best["label"]
    csv_jobs = [line for line in (sweep / "sweep_summary.csv").read_text().splitlines()[1:]]
    assert len(csv_jobs) == 2 + 2  # a row per setting, then one per job

    # Carried on again to the same epochs: nothing to do, the records stay as they are
    before = {job: (sweep / job / "history.json").read_bytes() for job in ("0", "1")}
    assert vae_train_in_process(monkeypatch, f"resume={sweep}", "epochs=3") == 0
    assert {job: (sweep / job / "history.json").read_bytes() for job in ("0", "1")} == before


def test_the_same_sweep_command_with_more_epochs_extends_it_too(monkeypatch, sweep):
    args = ("-m", *SWEEP[:2], "epochs=3", *SWEEP[3:], f"hydra.sweep.dir={sweep}")
    assert vae_train_in_process(monkeypatch, *args) == 0
    assert [history(sweep / job)["epoch"] for job in ("0", "1")] == [[1, 2, 3]] * 2


@pytest.mark.parametrize(
    "args, line",
    [
        (("epochs=1",), "already finished 2 epochs, more than epochs=1: finished epochs are kept"),
        (
            ("epochs=3", "lr=0.1"),
            "drop lr (only epochs=, early_stop.* and device= may be given on resume)",
        ),
        # once dropped without a word: the sweep ran in its own folder all the same
        (("hydra.sweep.dir=elsewhere",), "carries that sweep on in its own folder: drop "),
    ],
)
def test_a_sweep_resume_that_cannot_work_is_one_line(monkeypatch, capsys, sweep, args, line):
    before = records(sweep)
    assert vae_train_in_process(monkeypatch, f"resume={sweep}", *args) == 2
    err = capsys.readouterr().err
    assert line in err and "Traceback" not in err, err
    assert records(sweep) == before


def test_a_sweep_another_process_holds_is_refused(monkeypatch, capsys, sweep):
    held = claim(sweep, "hydra.sweep.dir")  # as the sweep's own process holds it
    try:
        before = records(sweep)
        assert vae_train_in_process(monkeypatch, f"resume={sweep}", "epochs=3") == 2
    finally:
        held.release()
    assert "is in use by another vae-train" in capsys.readouterr().err
    assert records(sweep) == before


def test_a_folder_without_a_sweep_record_is_refused(monkeypatch, capsys, sweep, tmp_path):
    (sweep / "multirun.yaml").unlink()  # as an Optuna search leaves its folder
    assert vae_train_in_process(monkeypatch, f"resume={sweep}", "epochs=3") == 2
    assert "this sweep has no multirun.yaml of the default sweeper" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert vae_train_in_process(monkeypatch, f"resume={tmp_path / 'empty'}") == 2
    assert "this directory holds no vae-train run" in capsys.readouterr().err
    assert list((tmp_path / "empty").iterdir()) == []  # not even a lock file written there


def test_a_big_folder_is_told_from_a_sweep_at_its_first_level(monkeypatch, capsys, tmp_path):
    # resume=/ once walked the whole file system, following linked folders, and never answered
    from vae_runner.sweep.resume import is_sweep_dir

    deep = tmp_path / "big" / "a" / "b" / "run"
    (deep / ".hydra").mkdir(parents=True)
    (tmp_path / "big" / "a" / "loop").symlink_to(tmp_path / "big")
    assert not is_sweep_dir(tmp_path / "big")
    assert vae_train_in_process(monkeypatch, f"resume={tmp_path / 'big'}") == 2
    assert "this directory holds no vae-train run" in capsys.readouterr().err


def test_extending_a_sweep_leaves_its_early_stopped_jobs_as_they_are(monkeypatch, tmp_path):
    # Each job as resume=<job> epochs=N does: a job the same rule stopped stays stopped, and
    # its record is not rewritten (once each got epochs=10 and a `resumed` entry for nothing)
    sweep = tmp_path / "stopped"
    rule = ("early_stop.patience=1", "early_stop.min_delta=1000")  # stops after epoch 2
    args = ("-m", *SWEEP[:-2], "epochs=6", *SWEEP[-2:], *rule, f"hydra.sweep.dir={sweep}")
    assert vae_train_in_process(monkeypatch, *args) == 0
    assert [history(sweep / j)["stopped_epoch"] for j in ("0", "1")] == [2, 2]
    before = records(sweep / "0") | records(sweep / "1")
    assert vae_train_in_process(monkeypatch, f"resume={sweep}", "epochs=10") == 0
    assert records(sweep / "0") | records(sweep / "1") == before


def test_an_extended_sweep_lists_each_job_once_with_its_new_epochs(tmp_path):
    """Job 0 ran before the extension (its overrides.yaml says epochs=2), job 1 started in it
    (epochs=3); multirun.yaml now plans epochs=3: two jobs, told apart by lr alone."""
    sweep = tmp_path / "sweep"
    for job, overrides in (("0", ["lr=0.1", "epochs=2"]), ("1", ["lr=0.01", "epochs=3"])):
        (sweep / job / ".hydra").mkdir(parents=True)
        (sweep / job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        record = {"status": "completed", "epoch": [1, 2, 3], "test_loss": [3.0, 2.0, 1.0]}
        (sweep / job / "history.json").write_text(json.dumps(record | {"config": {"epochs": 3}}))
    (sweep / "multirun.yaml").write_text(
        yaml.safe_dump(
            {
                "hydra": {
                    "sweeper": {"_target_": "x.CheckedSweeper", "params": None},
                    "overrides": {"task": ["lr=0.1,0.01", "epochs=3"]},
                }
            }
        )
    )
    summary = build_summary(collect_jobs([sweep]), [sweep], sweep_over=True)
    assert [(r["job"], r["label"], r["overrides"]) for r in summary["jobs"]] == [
        ("0", "lr=0.1", ["lr=0.1", "epochs=3"]),
        ("1", "lr=0.01", ["lr=0.01", "epochs=3"]),
    ]


def test_a_single_run_into_a_job_folder_of_a_live_sweep_is_refused(monkeypatch, capsys, sweep):
    # Once it trained there while the sweep was held, and the sweep then listed its own job as
    # not started and ranked the intruder among its jobs.
    held = claim(sweep, "hydra.sweep.dir")  # as the sweep's own process holds it
    try:
        before = records(sweep)
        args = (*SWEEP[1:], f"hydra.run.dir={sweep / '2'}")
        assert vae_train_in_process(monkeypatch, *args) == 2
    finally:
        held.release()
    err = capsys.readouterr().err
    assert f"is inside the sweep {sweep}, which another vae-train is running" in err
    assert records(sweep) == before and not (sweep / "2").exists()
