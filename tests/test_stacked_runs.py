"""Stacked sweeps as a user runs them: each member a run of its own (its history, checkpoints,
resume and vae-eval), signals that stop the whole stack, a SIGKILLed stack finished by its
command run again, the same answers as the basic launcher, and every group option run stacked.

Signals land where a test holds the run (start_cli(hold=...)), never where a timer guesses."""

from __future__ import annotations

import json
import signal

import pytest

from vae_runner.training.checkpoint import load_checkpoint

from helpers import run_cli, start_cli, vae_train_in_process, wait_for_hold

STACKED = "hydra/launcher=stacked"
RUN = ("epochs=3", "batch_size=32", "eval.iw_samples=0", "pictures=false")


def history(run_dir):
    return json.loads((run_dir / "history.json").read_text())


def jobs(sweep):
    return sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


@pytest.mark.e2e
def test_sigint_stops_every_member_and_the_same_command_carries_them_on_stacked(tmp_path):
    sweep = tmp_path / "sweep"
    args = ("-m", "lr=1e-3,1e-2", "seeds=2", *RUN, STACKED, f"hydra.sweep.dir={sweep}")
    log = tmp_path / "log"
    process = start_cli(*args, cwd=tmp_path, log=log, hold="batch:1:3")
    wait_for_hold(process)
    process.send_signal(signal.SIGINT)
    assert process.wait() == 130
    members = jobs(sweep)
    assert len(members) == 4
    for job in members:  # every member stopped at the batch boundary, its epoch 1 kept
        h = history(job)
        assert (h["status"], h["interrupted_by"], h["epoch"]) == ("interrupted", "SIGINT", [1])
        assert load_checkpoint(job / "checkpoints" / "last.pt")["epoch"] == 1
    assert f"To carry the whole sweep on: vae-train resume={sweep}" in log.read_text()

    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "stack 1: 4 jobs (#0 #1 #2 #3)" in again.stdout  # carried on in a stack again
    for job in members:
        h = history(job)
        assert h["status"] == "completed" and h["epoch"] == [1, 2, 3]
        assert h["resumed"][0]["after_epoch"] == 1


@pytest.mark.e2e
def test_a_sigkilled_stack_is_finished_by_its_command_run_again(tmp_path):
    """Killed while a member's epoch 2 is in its last.pt but not yet in its history.json (the
    stack writes its members' files at once, so the others may be either side of epoch 2): run
    again, every member ends as its twin in the same stack never killed."""
    sweep = tmp_path / "sweep"
    args = ("-m", "lr=1e-3,1e-2,3e-3", *RUN, STACKED, f"hydra.sweep.dir={sweep}")
    process = start_cli(*args, cwd=tmp_path, log=tmp_path / "log", hold="write:2")
    wait_for_hold(process, at="write")
    process.send_signal(signal.SIGKILL)
    process.wait()
    members = jobs(sweep)
    saved = [load_checkpoint(j / "checkpoints" / "last.pt")["epoch"] for j in members]
    recorded = [history(j)["epoch"] for j in members]
    assert all(h["status"] == "running" for h in map(history, members))
    assert all(
        r == list(range(1, len(r) + 1)) and len(r) <= e
        for r, e in zip(recorded, saved, strict=True)
    )
    assert any(
        len(r) < e for r, e in zip(recorded, saved, strict=True)
    )  # the one held: last.pt ahead

    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    twin = tmp_path / "never-killed"
    reference = run_cli(*args[:-1], f"hydra.sweep.dir={twin}", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr
    for job in members:
        got, want = history(job), history(twin / job.name)
        assert got["status"] == "completed" and got["epoch"] == [1, 2, 3]
        assert got["test_loss"] == pytest.approx(want["test_loss"], rel=1e-6)


@pytest.mark.e2e
def test_a_members_job_dir_resumes_with_the_ordinary_runner_and_vae_eval_reads_it(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli("-m", "lr=1e-3,1e-2", *RUN, STACKED, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    job = sweep / "1"
    longer = run_cli(f"resume={job}", "epochs=4", cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr
    h = history(job)
    assert h["epoch"] == [1, 2, 3, 4] and h["config"]["lr"] == 1e-2
    assert h["resumed"][-1]["after_epoch"] == 3
    evaluated = run_cli_eval(job, tmp_path)
    assert evaluated["test_loss"] > 0 and evaluated["iw_samples"] == 10


def run_cli_eval(job, cwd):
    import subprocess
    import sys
    from pathlib import Path

    out = Path(cwd) / "eval.json"
    command = [str(Path(sys.executable).with_name("vae-eval")), str(job), "--iw-samples", "10"]
    done = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


# --------------------------------------------------------------------------- same answers
def test_a_stacked_lr_sweep_gives_the_basic_launchers_answers(tmp_path, monkeypatch):
    """Real images (scikit-learn's digits), a validation split, three seeds per lr: each
    setting's mean best validation loss, stacked, lies within the seed spread of the basic
    launcher's; the verdicts agree."""
    args = ("-m", "lr=1e-2,1e-3", "seeds=3", "epochs=4", "data.val_fraction=0.2")
    args += ("eval.iw_samples=0", "pictures=false", "device.threads=1")
    summaries = {}
    for launcher in ("basic", "stacked"):
        where = tmp_path / launcher
        extra = (STACKED,) if launcher == "stacked" else ()
        assert vae_train_in_process(monkeypatch, *args, *extra, f"hydra.sweep.dir={where}") == 0
        summaries[launcher] = json.loads((where / "sweep_summary.json").read_text())
    basic = {s["label"]: s for s in summaries["basic"]["settings"]}
    stacked = {s["label"]: s for s in summaries["stacked"]["settings"]}
    assert basic.keys() == stacked.keys() == {"lr=0.01", "lr=0.001"}
    for setting, b in basic.items():
        mean_b = b["measures"]["best_val_loss"]["mean"]
        spread = b["measures"]["best_val_loss"]["sd"]
        assert abs(stacked[setting]["measures"]["best_val_loss"]["mean"] - mean_b) <= spread
    verdicts = [summaries[k]["verdict"] for k in ("basic", "stacked")]
    assert [(v["kind"], v["winner"], v["tied"]) for v in verdicts] == [
        (verdicts[0]["kind"], verdicts[0]["winner"], verdicts[0]["tied"])
    ] * 2
    # each stacked member is its basic twin up to float32 rounding of batched products
    jobs_b = {j["label"]: j for j in summaries["basic"]["jobs"]}
    for j in summaries["stacked"]["jobs"]:
        assert j["best_val_loss"] == pytest.approx(jobs_b[j["label"]]["best_val_loss"], rel=1e-4)


# ---------------------------------------------------------------- members at other epochs
def test_members_that_start_at_other_epochs_train_in_one_stack_as_alone(tmp_path):
    """A stack's members may carry on from different epochs (one killed between its files):
    each trains from its own, sitting out the epochs it already has, and ends as it would alone."""

    from test_runner import quiet_console

    from vae_runner.training.runner import MemberRun, run, run_stack

    from helpers import typed_config

    console, _ = quiet_console()
    # dynamic binarisation draws too: a member sitting an epoch out must not draw
    tiny = ("eval.iw_samples=0", "pictures=false", "likelihood.binarize=dynamic")
    three = typed_config("epochs=3", *tiny, "lr=3e-3")
    one = typed_config("epochs=1", *tiny, "lr=3e-3")
    alone = run(three, tmp_path / "alone", console)
    run(one, tmp_path / "ahead", console)  # its epoch 1, then carried on beside a fresh one
    checkpoint = load_checkpoint(tmp_path / "ahead" / "checkpoints" / "last.pt")
    other = typed_config("epochs=3", *tiny, "lr=1e-2", "seed=4")
    ahead, fresh = run_stack(
        [MemberRun(three, tmp_path / "ahead", checkpoint), MemberRun(other, tmp_path / "fresh")],
        console,
    )
    assert ahead["epoch"] == fresh["epoch"] == [1, 2, 3]
    assert ahead["resumed"][0]["after_epoch"] == 1 and "resumed" not in fresh
    assert ahead["test_loss"] == pytest.approx(alone["test_loss"], rel=1e-5)


# --------------------------------------------------------------------------- one member's failure
def _stack(tmp_path, *extra, n=3):
    from vae_runner.training.runner import MemberRun

    from helpers import typed_config

    cfgs = [typed_config("epochs=2", "eval.iw_samples=0", *extra, f"seed={s}") for s in range(n)]
    return [MemberRun(cfg, tmp_path / str(i)) for i, cfg in enumerate(cfgs)]


def test_a_member_whose_start_fails_fails_the_stack_and_no_record_stays_running(
    tmp_path, monkeypatch
):
    from test_runner import quiet_console

    from vae_runner.training import run_record
    from vae_runner.training.runner import run_stack

    real = run_record.build_logger

    def refused_for_member_1(cfg, run_dir, **where):
        if run_dir.name == "1":
            raise ImportError("logger=tensorboard needs tensorboard: pip install 'vae-runner[x]'")
        return real(cfg, run_dir, **where)

    monkeypatch.setattr(run_record, "build_logger", refused_for_member_1)
    results = run_stack(_stack(tmp_path, "pictures=false"), quiet_console()[0])
    assert all(isinstance(r, ImportError) for r in results)
    for i in range(3):  # member 2 never began: recorded failed all the same, not `running`
        h = history(tmp_path / str(i))
        assert h["status"] == "failed" and "needs tensorboard" in h["error"]["message"]


def test_a_member_whose_end_fails_leaves_the_others_completed(tmp_path, monkeypatch):
    from test_runner import quiet_console

    from vae_runner.report import plots
    from vae_runner.training.runner import run_stack

    real = plots.plot_run

    def broken_for_member_0(run_dir, history):
        if run_dir.name == "0":
            raise RuntimeError("the plot could not be drawn")
        return real(run_dir, history)

    monkeypatch.setattr(plots, "plot_run", broken_for_member_0)
    results = run_stack(_stack(tmp_path), quiet_console()[0])
    assert isinstance(results[0], RuntimeError)
    assert history(tmp_path / "0")["status"] == "failed"
    for i in (1, 2):
        assert results[i]["status"] == "completed" == history(tmp_path / str(i))["status"]
        assert (tmp_path / str(i) / "curves.png").exists()


def test_a_checkpoint_that_does_not_fit_fails_only_its_own_run(tmp_path):
    from test_runner import quiet_console

    from vae_runner.training.runner import run, run_stack

    from helpers import typed_config

    small = typed_config("epochs=1", "eval.iw_samples=0", "pictures=false", "model.hidden_dim=16")
    run(small, tmp_path / "small", quiet_console()[0])
    members = _stack(tmp_path, "pictures=false")
    members[1].checkpoint = load_checkpoint(tmp_path / "small" / "checkpoints" / "last.pt")
    results = run_stack(members, quiet_console()[0])
    assert "the checkpoint does not fit this run's model and optimizer: " in str(results[1])
    assert not (tmp_path / "1" / "history.json").exists()  # nothing written over
    assert results[0]["status"] == results[2]["status"] == "completed"
