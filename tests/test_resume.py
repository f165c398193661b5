"""Nothing lost: checkpoints, bit-exact resume, signals, divergence, unusable inputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest
import torch

from vae_runner.record import EPOCH_KEYS
from vae_runner.training.checkpoint import CheckpointError, load_checkpoint

from helpers import run_cli, start_cli, vae_train_in_process, wait_for_hold

pytestmark = pytest.mark.e2e

# Signals land where a test holds the run (start_cli(hold=...)), never where a timer guesses.
# (its warm-up never reaches half of beta: a config warning, which a resume must not repeat)
RUN = ("epochs=5", "batch_size=16", "seed=3", "annealing.warmup_epochs=11")
# every per-epoch series but the wall-clock one must match bit for bit
COMPARED = tuple(key for key in EPOCH_KEYS if key != "epoch_seconds")


def history(run_dir):
    return json.loads((run_dir / "history.json").read_text())


def weights(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same config, never interrupted."""
    base = tmp_path_factory.mktemp("reference")
    result = run_cli(*RUN, f"hydra.run.dir={base / 'run'}", cwd=base)
    assert result.returncode == 0, result.stderr
    return base / "run"


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    """A finished one-epoch run; tests take a copy of it."""
    base = tmp_path_factory.mktemp("one-epoch")
    result = run_cli("epochs=1", f"hydra.run.dir={base / 'run'}", cwd=base)
    assert result.returncode == 0, result.stderr
    return base / "run"


@pytest.fixture
def finished_run(tmp_path, one_epoch_run):
    copy = tmp_path / "run"
    shutil.copytree(one_epoch_run, copy)
    return copy


def assert_same_run(resumed, reference):
    got, want = history(resumed), history(reference)
    assert got["status"] == want["status"] == "completed"
    for key in COMPARED:
        assert got[key] == want[key], key  # bit for bit: exact float equality
    assert got["best_epoch"] == want["best_epoch"]
    assert got["warnings"] == want["warnings"]  # RUN's warm-up warning, not once per resume
    assert "annealing.warmup_epochs=11" in got["warnings"][0]["message"]
    mine, theirs = weights(resumed), weights(reference)
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name


@pytest.mark.parametrize(
    "hold, kept, checkpointed",
    [
        ("batch:2:5", [1, 2], 2),  # at the 5th batch of epoch 3
        ("write:3", [1, 2], 3),  # between epoch 3's last.pt and its history.json
    ],
)
def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(
    tmp_path, uninterrupted, hold, kept, checkpointed
):
    run_dir = tmp_path / "run"
    log = tmp_path / "log"
    process = start_cli(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path, log=log, hold=hold)
    wait_for_hold(process, at=hold.split(":")[0])
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = history(run_dir)
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    # both files whole, and history.json never ahead of last.pt
    assert killed["status"] == "running" and killed["epoch"] == kept
    assert checkpoint["epoch"] == checkpointed
    assert load_checkpoint(run_dir / "checkpoints" / "best.pt")["epoch"] <= checkpointed

    resumed = run_cli(f"resume={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming {run_dir} after epoch {checkpointed}" in resumed.stdout
    assert_same_run(run_dir, uninterrupted)
    assert history(run_dir)["resumed"][0]["after_epoch"] == checkpointed


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_cleanly_and_the_checkpoint_resumes(tmp_path, uninterrupted, signum, code):
    run_dir = tmp_path / "run"
    log = tmp_path / "log"
    process = start_cli(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path, log=log, hold="batch:1:3")
    wait_for_hold(process)
    process.send_signal(signum)
    assert process.wait() == code
    output = log.read_text()
    stopped = history(run_dir)
    assert stopped["status"] == "interrupted" and stopped["epoch"] == [1]
    assert stopped["interrupted_by"] == signal.Signals(signum).name
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 1
    assert f"continue with: vae-train resume={run_dir}" in output

    resumed = run_cli(f"resume={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run_dir, uninterrupted)


def test_resume_extends_a_finished_run_with_more_epochs(tmp_path, finished_run):
    run_dir = finished_run
    again = run_cli(f"resume={run_dir}", cwd=tmp_path)
    assert again.returncode == 2 and "pass epochs=<more than 1>" in again.stderr
    longer = run_cli(f"resume={run_dir}", "epochs=3", cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr
    assert history(run_dir)["epoch"] == [1, 2, 3]
    assert history(run_dir)["config"]["epochs"] == 3
    # the original .hydra/ record is left alone
    assert "epochs=1" in (run_dir / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.parametrize(
    "override, refused",
    [("model=conv", "model"), ("lr=0.1", "lr"), ("data.limit=10", "data.limit")],
)
def test_resume_refuses_overrides_that_change_the_run(tmp_path, finished_run, override, refused):
    run_dir = finished_run
    before = (run_dir / "history.json").read_bytes()
    result = run_cli(f"resume={run_dir}", "epochs=3", override, cwd=tmp_path)
    assert result.returncode == 2
    assert (
        f"drop {refused} (only epochs=, early_stop.* and device= may be given on resume)"
        in result.stderr
    )
    assert (run_dir / "history.json").read_bytes() == before


@pytest.mark.parametrize(
    "override, line",
    [
        ("~epochs", "~epochs: resume continues the run with the config it was started with, so"),
        ("epochs=abc", "epochs: Value 'abc' of type 'str' could not be converted to Integer"),
        ("device=tpu", "device=tpu is not an option of device: choose one of auto, cpu"),
        ("+lr=1e-2", "Could not append to config. An item is already at 'lr'"),
        ("~lr", "~lr: resume continues the run"),
    ],
)
def test_bad_values_after_resume_are_one_line(tmp_path, finished_run, override, line):
    before = sorted((p, p.stat().st_mtime_ns) for p in finished_run.rglob("*"))
    result = run_cli(f"resume={finished_run}", override, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert line in result.stderr and "Traceback" not in result.stderr
    assert sorted((p, p.stat().st_mtime_ns) for p in finished_run.rglob("*")) == before


def test_divergence_keeps_the_history_and_exits_3(tmp_path):
    run_dir = tmp_path / "run"
    args = ("optimizer=sgd", "lr=1e6", "grad_clip=0", "epochs=3", f"hydra.run.dir={run_dir}")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    record = history(run_dir)
    assert record["status"] == "diverged"
    where = record["divergence"]
    assert where["epoch"] >= 1 and (where["batch"] is None or where["batch"] >= 1)
    assert len(record["test_loss"]) == where["epoch"] - 1  # finished epochs only, all finite
    assert all(v is not None for v in record["test_loss"])
    assert f"Diverged in epoch {where['epoch']}" in result.stdout


def test_on_divergence_stop_exits_0(tmp_path):
    args = ("optimizer=sgd", "lr=1e6", "grad_clip=0", "epochs=3", "on_divergence=stop")
    result = run_cli(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert history(tmp_path / "run")["status"] == "diverged"


def test_a_crafted_checkpoint_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "history.json").write_text("{}")
    torch.save({"format": 1, "model": Exploit()}, run_dir / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match="is refused: it holds Python objects"):
        load_checkpoint(run_dir / "checkpoints" / "last.pt")
    result = run_cli(f"resume={run_dir}", "epochs=3", cwd=tmp_path)
    assert result.returncode == 2 and "could run code when loaded" in result.stderr
    assert "weights_only" not in result.stderr  # torch's advice to turn the check off: never
    assert not marker.exists()


def test_a_truncated_or_missing_checkpoint_is_one_clear_line(tmp_path, finished_run):
    run_dir = finished_run
    last = run_dir / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    truncated = run_cli(f"resume={run_dir}", "epochs=2", cwd=tmp_path)
    assert truncated.returncode == 2
    assert truncated.stderr.count("\n") == 1 and "not a usable checkpoint" in truncated.stderr
    last.unlink()
    missing = run_cli(f"resume={run_dir}", "epochs=2", cwd=tmp_path)
    # its record holds a finished epoch: never "stopped before its first epoch", never afresh
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "history.json records 1 finished epoch but checkpoints/last.pt is missing" in (
        missing.stderr
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = run_cli(f"resume={empty}", cwd=tmp_path)
    assert nothing.returncode == 2 and "holds no vae-train run" in nothing.stderr


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["batch_size=5000"], 2, "batch_size=5000 is larger than the training set (1438 images"),
        (["data.limit=0"], 2, "data.limit must be >= 1"),
        (["scheduler.patience=-1"], 2, "scheduler.patience must be >= 0"),
        (["epochs=2", "annealing.warmup_epochs=20"], 0, "KL weight is 0.1 of beta=1"),
    ],
)
def test_bad_input_is_a_clear_error_or_warning(tmp_path, args, code, words):
    result = run_cli(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert words in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_doubtful_settings_are_kept_in_the_history_once_each(tmp_path, finished_run):
    # (a resume with the same settings adds none: assert_same_run compares the warnings)
    # one_epoch_run: epochs=1 under the default 10-epoch KL warm-up
    warm_up = (
        "annealing.warmup_epochs=10 puts the KL ramp's middle past the last epoch (epochs={}): "
        "the last epoch's KL weight is {} of beta=1, so the whole run trains far below the beta "
        "it reports; use a smaller annealing.warmup_epochs or more epochs"
    )
    (first,) = history(finished_run)["warnings"]
    assert first == {"epoch": 0, "kind": "config", "message": warm_up.format(1, 0.1)}
    assert run_cli(f"resume={finished_run}", "epochs=2", cwd=tmp_path).returncode == 0
    assert history(finished_run)["warnings"] == [
        first,
        {"epoch": 1, "kind": "config", "message": warm_up.format(2, 0.2)},
    ]


def test_an_unwritable_output_directory_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli("epochs=1", f"hydra.run.dir={blocker / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "cannot create hydra.run.dir=" in result.stderr and "Traceback" not in result.stderr
    assert blocker.read_text() == "not a folder"


def test_resume_may_name_the_device(tmp_path, finished_run):
    result = run_cli(f"resume={finished_run}", "epochs=2", "device=cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    resumed = history(finished_run)
    assert resumed["epoch"] == [1, 2] and resumed["config"]["device"]["name"] == "cpu"
    assert resumed["config"]["device"]["precision"] == "fp32"


# --------------------------------------------------------------------------- one directory, one run
def test_a_second_process_is_refused_and_the_same_command_carries_on_after_a_kill(
    tmp_path, uninterrupted
):
    run_dir = tmp_path / "run"
    log = tmp_path / "log"
    first = start_cli(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path, log=log, hold="batch:1:3")
    wait_for_hold(first)
    first.send_signal(signal.SIGSTOP)  # frozen, still holding its directory
    second = run_cli(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert second.returncode == 2
    assert f"{run_dir} is in use by another vae-train (pid {first.pid} on" in second.stderr
    first.send_signal(signal.SIGKILL)
    first.wait()
    # A requeue: the same command, the same directory, carries on from the last checkpoint.
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 1
    again = run_cli(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"Resuming {run_dir} after epoch 1" in again.stdout
    assert_same_run(run_dir, uninterrupted)
    assert history(run_dir)["resumed"][-1]["how"] == "restart"
    assert not list(run_dir.rglob(".*.tmp")) and not (run_dir / ".vae-train.lock").exists()


def test_a_finished_run_started_again_is_left_as_it_is(tmp_path, finished_run):
    run_dir = finished_run
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    same = run_cli("epochs=1", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert same.returncode == 0, same.stderr
    assert f"{run_dir} already holds this run, completed after 1 epochs: nothing to do" in (
        same.stdout
    )
    other = run_cli("epochs=1", "lr=0.01", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert other.returncode == 2
    assert "already holds a run started with other settings (lr=0.001 there, 0.01 here)" in (
        other.stderr
    )
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_a_run_stopped_in_its_first_epoch_starts_afresh_with_its_own_command(tmp_path):
    run_dir = tmp_path / "run"
    args = ("epochs=2", "eval.iw_samples=0", f"hydra.run.dir={run_dir}")
    process = start_cli(*args, cwd=tmp_path, log=tmp_path / "log", hold="batch:0:2")
    wait_for_hold(process)  # at the 2nd batch of epoch 1
    process.send_signal(signal.SIGTERM)
    assert process.wait() == 143
    stopped = history(run_dir)
    assert stopped["status"] == "interrupted" and stopped["epoch"] == []
    refused = run_cli(f"resume={run_dir}", cwd=tmp_path)
    assert refused.returncode == 2
    assert f"start it again with its own command and hydra.run.dir={run_dir}" in refused.stderr
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert history(run_dir)["status"] == "completed" and history(run_dir)["epoch"] == [1, 2]


def test_a_double_ctrl_c_after_finished_epochs_keeps_them(tmp_path):
    run_dir = tmp_path / "run"
    log = tmp_path / "log"
    args = (*RUN, f"hydra.run.dir={run_dir}")
    process = start_cli(*args, cwd=tmp_path, log=log, hold="batch:2:3,stop")
    wait_for_hold(process)  # in epoch 3
    process.send_signal(signal.SIGINT)
    wait_for_hold(process, at="stop")  # writing the interrupted record: the second waits for it
    process.send_signal(signal.SIGINT)
    assert process.wait() == 130
    output = log.read_text()
    assert "SIGINT: stopping after the current batch" in output
    assert "SIGINT: stopping once this epoch's checkpoint is written" in output
    assert "stopped before the plots were drawn: vae-plot RUN_DIR draws them" in output
    assert "before the first epoch" not in output and "Traceback" not in output
    stopped = history(run_dir)
    assert stopped["status"] == "interrupted" and stopped["interrupted_by"] == "SIGINT"
    assert stopped["epoch"] == [1, 2] and stopped["finished_at"] is not None
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 2
    assert not (run_dir / "curves.png").exists() and not list(run_dir.rglob(".*.tmp"))


def test_a_ctrl_c_while_starting_is_one_line(tmp_path):
    # Once vae-train's own code runs (the `start` marker): a SIGINT in Python's first tens of
    # milliseconds, while it imports its site module, is Python's ("Fatal Python error:
    # init_import_site", exit 1), before any code of vae-train could take it.
    process = start_cli("epochs=1", cwd=tmp_path, log=tmp_path / "log", hold="start")
    wait_for_hold(process, at="start")
    process.send_signal(signal.SIGINT)  # wherever it lands: imports, composing, the run
    code = process.wait()
    output = (tmp_path / "log").read_text()
    # 0: the SIGINT was swallowed by a library bare `except:` while it imported (the run went on)
    assert code in (0, 130) and "Traceback" not in output, output


# After vae-train has taken over SIGINT (the `start` marker): 0 lands in its imports, the last
# ones in the run on most machines; the loop stops at the first that lands in the run. The run
# holds at its first batch until a stop (`batch:0:1`), so that no pair lands after it ended,
# whatever the machine's speed: once the interpreter exits, Python's finalisation puts the
# default handler back and a SIGINT kills the process (-2), which a fast start-up once let
# happen between the 1.0 s and the 1.3 s delay.
START_DELAYS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.3, 1.6, 2.0, 2.5, 3.0, 4.0, 6.0)


def test_two_ctrl_c_while_starting_are_one_line(tmp_path):
    """An impatient double Ctrl-C (two SIGINTs 3 ms apart) while vae-train starts: once the
    first was caught, the second raised in its unwinding, its line or the interpreter's exit (a
    traceback, "Exception ignored in threading._shutdown"), and a first one inside `import torch`
    let torch's exit hook print its FakeTensor cache statistics on stdout. Sent at growing
    delays after start-up began, until one lands in the run; asserted on what each printed."""
    landed = []
    for number, delay in enumerate(START_DELAYS):
        run_dir, log = tmp_path / f"run{number}", tmp_path / f"log{number}"
        process = start_cli(
            "epochs=1", "eval.iw_samples=0", "pictures=false", f"hydra.run.dir={run_dir}",
            cwd=tmp_path, log=log, hold="start,batch:0:1",
        )  # fmt: skip
        wait_for_hold(process, at="start")
        time.sleep(delay)  # where it lands is what varies; the outputs say where it did
        process.send_signal(signal.SIGINT)
        time.sleep(0.003)
        process.send_signal(signal.SIGINT)
        code, output = process.wait(), log.read_text()
        assert code == 130, output
        for noise in ("Traceback", "Exception ignored", "FakeTensor", "KeyboardInterrupt"):
            assert noise not in output, output
        if "interrupted while starting" not in output:
            break  # the run had begun: its own double Ctrl-C (test_a_double_ctrl_c_...)
        assert output == "Error: interrupted while starting; nothing was run\n"
        assert not run_dir.exists()
        landed.append(delay)
    assert landed, "no SIGINT landed while vae-train started"


def test_a_killed_sweep_run_again_keeps_finished_jobs_and_carries_on(tmp_path, uninterrupted):
    sweep = tmp_path / "sweep"
    args = ("-m", "lr=1e-3,1e-2", *RUN, f"hydra.sweep.dir={sweep}")
    process = start_cli(*args, cwd=tmp_path, log=tmp_path / "log", hold="batch:2:3")
    assert wait_for_hold(process)[0]["run_dir"] == str(sweep / "0")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert history(sweep / "0")["epoch"] == [1, 2] and not (sweep / "1").exists()
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert_same_run(sweep / "0", uninterrupted)  # job 0 is RUN with lr=1e-3: the same run
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert {(j["label"], j["status"]) for j in summary["jobs"]} == {
        ("lr=0.001", "completed"),
        ("lr=0.01", "completed"),
    }
    # run once more: both are finished, nothing changes
    before = (sweep / "1" / "history.json").read_bytes()
    once_more = run_cli(*args, cwd=tmp_path)
    assert once_more.returncode == 0, once_more.stderr
    assert "already holds this run, completed after 5 epochs: nothing to do" in once_more.stdout
    assert (sweep / "1" / "history.json").read_bytes() == before


def test_sigterm_to_a_basic_sweep_stops_it_with_143_and_lists_what_never_started(tmp_path):
    sweep = tmp_path / "sweep"
    args = ("-m", "lr=1e-3,1e-2,1e-4,1e-5", *RUN, f"hydra.sweep.dir={sweep}")
    process = start_cli(*args, cwd=tmp_path, log=tmp_path / "log", hold="batch:1:3")
    assert wait_for_hold(process)[0]["run_dir"] == str(sweep / "0")
    process.send_signal(signal.SIGTERM)
    assert process.wait() == 143
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [(j["label"], j["status"]) for j in summary["jobs"]] == [
        ("lr=0.001", "interrupted"),
        ("lr=0.01", "not started"),
        ("lr=0.0001", "not started"),
        ("lr=1e-05", "not started"),
    ]
    # The first job that would start ends the launcher's loop: the jobs after it are never
    # composed or logged (1000 of them once took two minutes after a SIGTERM)
    log = (tmp_path / "log").read_text()
    assert "#1 : lr=0.01" in log and "#2 : " not in log and "#3 : " not in log
    assert "Traceback" not in log
    assert history(sweep / "0")["interrupted_by"] == "SIGTERM"
    assert history(sweep / "0")["epoch"] == [1]
    assert not (sweep / ".vae-train.stop").exists()


def test_a_ctrl_c_sweep_prints_one_command_that_carries_every_job_on(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    args = ("-m", "lr=1e-3,1e-2", "epochs=2", "eval.iw_samples=0", "pictures=false")
    log = tmp_path / "log"
    process = start_cli(*args, f"hydra.sweep.dir={sweep}", cwd=tmp_path, log=log, hold="batch:1:3")
    assert wait_for_hold(process)[0]["run_dir"] == str(sweep / "0")
    process.send_signal(signal.SIGINT)
    assert process.wait() == 130
    output = log.read_text()
    assert f"To carry the whole sweep on: vae-train resume={sweep}\n" in output, output
    assert f"resume={sweep}/0" not in output  # not job 0's own, which leaves job 1 not started
    # Following it, in this process: job 0 carries on from epoch 1, job 1 starts
    assert vae_train_in_process(monkeypatch, f"resume={sweep}") == 0
    assert [history(sweep / job)["epoch"] for job in ("0", "1")] == [[1, 2], [1, 2]]
    assert history(sweep / "0")["resumed"][0]["after_epoch"] == 1
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert sorted((j["label"], j["status"]) for j in summary["jobs"]) == [
        ("lr=0.001", "completed"),
        ("lr=0.01", "completed"),
    ]
    assert summary["exit_code"] == 0


PARALLEL = {
    "joblib": ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
    "submitit_local": ("hydra/launcher=submitit_local",),  # every job of a batch at once
}


@pytest.mark.parametrize("launcher", PARALLEL)
def test_sigterm_to_a_parallel_sweep_stops_its_workers_and_writes_the_summary(tmp_path, launcher):
    pytest.importorskip(f"hydra_plugins.hydra_{launcher.split('_')[0]}_launcher")
    sweep = tmp_path / "sweep"
    args = ("-m", *PARALLEL[launcher], "lr=1e-3,1e-2", *RUN, f"hydra.sweep.dir={sweep}")
    process = start_cli(*args, cwd=tmp_path, log=tmp_path / "log", hold="batch:1:3")
    held = wait_for_hold(process, runs=2)  # each job in its own process, both held
    assert {h["run_dir"] for h in held} == {str(sweep / "0"), str(sweep / "1")}
    assert process.pid not in {h["pid"] for h in held}
    process.send_signal(signal.SIGTERM)  # to the sweep: its jobs see the stop file
    assert process.wait() == 143, (tmp_path / "log").read_text()
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert {j["status"] for j in summary["jobs"]} == {"interrupted"}
    for job in ("0", "1"):
        stopped = history(sweep / job)
        assert stopped["interrupted_by"] == "SIGTERM" and stopped["epoch"] == [1]


def test_a_preempted_submitit_job_is_requeued_and_carries_on_bit_for_bit(tmp_path):
    """submitit's contract: SIGUSR2 before a time limit or on preemption; its handler (which
    ours calls once the run has stopped) requeues the job, which starts again in its own
    directory and carries on from last.pt. submitit_local requeues as SLURM would."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    args = ("-m", "hydra/launcher=submitit_local", "lr=1e-3", *RUN)
    reference = tmp_path / "reference"  # the same launcher (1 thread per job), never stopped
    done = run_cli(*args, f"hydra.sweep.dir={reference}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    sweep = tmp_path / "sweep"
    log = tmp_path / "log"
    process = start_cli(*args, f"hydra.sweep.dir={sweep}", cwd=tmp_path, log=log, hold="batch:1:3")
    [held] = wait_for_hold(process)  # the requeued job runs through: its directory held once
    job_pid = history(sweep / "0")["process"]["pid"]  # the job's own process, not the sweep's
    assert job_pid == held["pid"] != process.pid
    os.kill(job_pid, signal.SIGUSR2)
    assert process.wait() == 0, (tmp_path / "log").read_text()
    job_log = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "SIGUSR2: stopping after the current batch" in job_log
    assert "this job is preempted" in job_log  # submitit's handler ran after ours
    resumed = history(sweep / "0")["resumed"]
    assert resumed == [{**resumed[0], "after_epoch": 1, "how": "restart"}]
    assert_same_run(sweep / "0", reference / "0")
