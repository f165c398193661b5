"""Nothing lost, in-process: directory claims, earlier attempts, deferred signals, failures
recorded where they happen, a run finished after a stop in its final evaluation."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys

import pytest
from rich.console import Console

from vae_runner.cli.checks import carry_on
from vae_runner.config.errors import ConfigError
from vae_runner.exit_codes import exit_code
from vae_runner.files import WriteError
from vae_runner.record import EPOCH_KEYS
from vae_runner.rundir import LOCK_FILE, Busy, claim, claimed_by_checks, earlier_attempt, is_live
from vae_runner.training import run_record, signals
from vae_runner.training import runner as runner_module
from vae_runner.training.checkpoint import load_checkpoint
from vae_runner.training.history import new_history, with_epoch
from vae_runner.training.resume import load_for_resume
from vae_runner.training.runner import run

from helpers import compose_config, typed_config, vae_train_in_process

CHEAP = ("epochs=2", "eval.iw_samples=0", "plot_every=0")


@pytest.fixture(autouse=True)
def no_stop_request_left_over():
    """A stop this test's handlers noted must not stop the next test's runs (one process)."""
    yield
    signals._process["signum"] = None


def quiet() -> Console:
    return Console(file=io.StringIO())


def history_of(run_dir):
    return json.loads((run_dir / "history.json").read_text())


# --------------------------------------------------------------------------- claims
def test_a_second_claim_on_a_held_directory_is_refused_naming_the_holder(tmp_path):
    run_dir = tmp_path / "run"
    first = claim(run_dir)
    assert is_live(run_dir)
    with pytest.raises(
        Busy, match=rf"{run_dir} is in use by another vae-train \(pid {os.getpid()}"
    ):
        claim(run_dir)
    first.release()
    assert not (run_dir / LOCK_FILE).exists() and not is_live(run_dir)
    claim(run_dir).release()  # free again


def test_a_claim_held_by_another_process_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal; from vae_runner.rundir import claim; "
            f"claim({str(run_dir)!r}); print('held', flush=True); signal.pause()",  # until killed
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Busy, match=f"pid {holder.pid}"):
            claim(run_dir)
        assert is_live(run_dir)
        assert not claimed_by_checks(run_dir)  # another process's: a job claims (refused)
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the killed holder's lock: its lock file claims nothing.
    assert (run_dir / LOCK_FILE).exists() and not is_live(run_dir)
    claim(run_dir).release()


def test_earlier_attempts_are_told_apart(tmp_path):
    assert earlier_attempt(tmp_path / "absent").kind == "new"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / LOCK_FILE).write_text("")
    assert earlier_attempt(tmp_path / "empty").kind == "new"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.tex").write_text("mine")
    assert earlier_attempt(tmp_path / "other").kind == "foreign"
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    (tmp_path / "run" / ".hydra" / "overrides.yaml").write_text("- lr=0.01\n")
    attempt = earlier_attempt(tmp_path / "run")
    assert attempt.kind == "run" and attempt.overrides == ["lr=0.01"]
    assert not attempt.has_checkpoint


def test_carry_on_accepts_the_same_settings_and_refuses_others(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    typed = typed_config("lr=1e-3")
    from dataclasses import asdict

    history = new_history(asdict(typed), meta={})
    (run_dir / "history.json").write_text(json.dumps(history))
    # the same values, written differently: the same job
    assert carry_on(run_dir, typed_config("lr=0.001"), ["lr=0.001"], "hydra.run.dir").kind == "run"
    with pytest.raises(ConfigError) as refused:
        carry_on(run_dir, typed_config("lr=1e-2"), ["lr=1e-2"], "hydra.run.dir")
    assert "already holds a run started with other settings (lr=0.001 there, 0.01 here)" in str(
        refused.value
    )
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty and holds no vae-train run"):
        carry_on(tmp_path / "other", typed, [], "hydra.sweep.dir")


def test_the_output_subdir_keeps_an_earlier_attempts_hydra_record(tmp_path):
    cfg = compose_config(hydra=True)
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
    assert cfg.hydra.output_subdir == ".hydra"
    (tmp_path / ".hydra").mkdir()
    assert cfg.hydra.output_subdir is None


# --------------------------------------------------------------------------- signals
def test_a_second_signal_waits_for_the_end_of_a_critical_section():
    request = signals.StopRequest()
    request._handle(signal.SIGTERM, None)
    with pytest.raises(signals.StopNow), request.critical():
        request._handle(signal.SIGTERM, None)  # deferred: no raise here
        written = True
    assert written
    with pytest.raises(signals.StopNow):
        request._handle(signal.SIGTERM, None)  # outside one: at once


def test_start_ups_sigint_handler_requests_a_stop_and_is_never_chained_after_a_run(monkeypatch):
    """vae-train's start-up handler (cli.start): a SIGINT is a stop request, never an exception
    (raised inside torch's C++ import code one aborted the process); the next ones change
    nothing; a run's handler, which chains what was there before, never calls it."""
    monkeypatch.setattr(signal, "getsignal", lambda s: signal.default_int_handler)
    installed = {}
    monkeypatch.setattr(signal, "signal", lambda s, h: installed.update({s: h}))
    signals.take_over_sigint()
    assert installed[signal.SIGINT] is signals.interrupt_once
    monkeypatch.setitem(signals._process, "signum", None)
    signals.interrupt_once(signal.SIGINT, None)  # nothing raised: a request
    assert signals.requested() == signal.SIGINT
    installed[signal.SIGINT](signal.SIGINT, None)  # the second: nothing either
    from vae_runner.cli.checks import Refused, stop_if_interrupted

    with pytest.raises(Refused) as stopped:  # honoured at start-up's next safe point
        stop_if_interrupted()
    assert (stopped.value.message, stopped.value.code) == (
        "interrupted while starting; nothing was run",
        130,
    )
    monkeypatch.setitem(signals._process, "signum", None)  # this process's stop, put back
    for before in (signals.interrupt_once, installed[signal.SIGINT]):
        monkeypatch.setattr(signal, "getsignal", lambda s, before=before: before)
        with signals.graceful_stop() as stop:
            stop._handle(signal.SIGINT, None)
            stop.chain()  # once the run recorded its stop: no KeyboardInterrupt from start-up's
        assert stop._chained == {}
        signals._process["signum"] = None


def test_a_sweeps_stop_file_stops_a_job_at_its_next_check(tmp_path):
    stop_file = tmp_path / signals.STOP_FILE
    request = signals.StopRequest(stop_file)
    request.check()
    stop_file.write_text("SIGTERM\n")
    request._next_poll = 0.0
    with pytest.raises(signals.Interrupted, match="SIGTERM"):
        request.check()


def test_interrupted_exit_codes_follow_the_signal():
    assert exit_code({"status": "interrupted", "interrupted_by": "SIGINT"}) == 130
    assert exit_code({"status": "interrupted", "interrupted_by": "SIGTERM"}) == 143
    assert exit_code({"status": "interrupted", "interrupted_by": "SIGUSR2"}) == 140


def test_with_epoch_leaves_the_history_it_was_given_alone():
    history = new_history({}, meta={})
    record = {key: 1.0 for key in EPOCH_KEYS}
    updated = with_epoch(history, record)
    assert updated["epoch"] == [1.0] and history["epoch"] == []
    assert updated["best_test_loss"] == 1.0 and history["best_test_loss"] is None


# --------------------------------------------------------------------------- failures recorded
def test_a_failure_after_the_history_exists_is_recorded_as_failed(tmp_path, monkeypatch):
    def no_logger(cfg, run_dir, **where):
        raise ImportError("logger=tensorboard needs tensorboard: pip install 'vae-runner[x]'")

    monkeypatch.setattr(run_record, "build_logger", no_logger)
    with pytest.raises(ImportError):
        run(typed_config(*CHEAP), tmp_path / "run", console=quiet())
    history = history_of(tmp_path / "run")
    assert history["status"] == "failed"
    assert history["error"]["message"].startswith("ImportError: logger=tensorboard needs")
    assert exit_code(history) == 1


def test_a_failed_checkpoint_write_leaves_the_history_at_the_last_checkpointed_epoch(
    tmp_path, monkeypatch
):
    real = run_record.save_checkpoint
    calls = []

    def full_disk_on_epoch_2(run_dir, payload, is_best, *data):
        calls.append(payload["epoch"])
        if payload["epoch"] == 2:
            raise WriteError(28, f"cannot write {run_dir}/checkpoints/last.pt: No space left")
        return real(run_dir, payload, is_best, *data)

    monkeypatch.setattr(run_record, "save_checkpoint", full_disk_on_epoch_2)
    run_dir = tmp_path / "run"
    with pytest.raises(WriteError):
        run(typed_config("epochs=3", "eval.iw_samples=0", "plot_every=0"), run_dir, quiet())
    history = history_of(run_dir)
    assert calls == [1, 2]
    assert history["status"] == "failed" and history["epoch"] == [1]
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 1


def test_a_stop_in_the_final_evaluation_can_be_finished_by_resume(tmp_path, monkeypatch):
    def stopped(*args, check=None, **kwargs):
        raise signals.Interrupted(signal.SIGTERM)

    monkeypatch.setattr(run_record, "importance_weighted_nll", stopped)
    run_dir = tmp_path / "run"
    cfg = typed_config("epochs=2", "eval.iw_samples=10", "plot_every=0")
    run(cfg, run_dir, console=quiet())
    history = history_of(run_dir)
    assert history["status"] == "interrupted" and history["interrupted_by"] == "SIGTERM"
    assert history["epoch"] == [1, 2] and history["final"] is None
    assert exit_code(history) == 143

    monkeypatch.undo()
    again, checkpoint = load_for_resume(run_dir, [f"resume={run_dir}"], compose_config())
    finished = run(again, run_dir, console=quiet(), checkpoint=checkpoint)
    assert finished["status"] == "completed" and finished["epoch"] == [1, 2]
    assert finished["final"]["test_nll_iw"] is not None
    assert finished["resumed"][-1]["after_epoch"] == 2
    # and now it is finished for good
    with pytest.raises(ConfigError, match="already finished 2 of epochs=2"):
        load_for_resume(run_dir, [f"resume={run_dir}"], compose_config())


def test_a_missing_tensorboard_is_recorded_and_its_hint_printed_whole(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ConfigError) as missing:
        run(typed_config(*CHEAP, "logger=tensorboard"), tmp_path / "run", console=quiet())
    history = history_of(tmp_path / "run")
    assert history["status"] == "failed" and history["error"]["kind"] == "config"
    assert "pip install 'vae-runner[tensorboard]'" in history["error"]["message"]
    assert exit_code(history) == 2
    from vae_runner.report.console import print_error

    print_error(str(missing.value))  # rich markup would swallow [tensorboard]
    assert "pip install 'vae-runner[tensorboard]'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ckpt") / "run"
    run(typed_config("epochs=1", "eval.iw_samples=0", "plot_every=0"), run_dir, console=quiet())
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


@pytest.mark.parametrize(
    "spoil, said",
    [
        (lambda c: c.pop("config"), "it has no `config`"),
        (lambda c: c.pop("rng"), "it has no `rng`"),
        (lambda c: c.update(epoch="3"), "its `epoch` is a str"),
        (lambda c: c["rng"].pop("shuffle"), "its `rng` has no `shuffle` state"),
        (lambda c: c.update(model={"fc1.weight": [1, 2]}), "`model` holds values that are not"),
        (lambda c: c.update(history='{"epoch": [1'), "its `history` is not JSON"),
        (lambda c: c.update(history=3), "its `history` is a int"),
    ],
)
def test_a_checkpoint_lacking_fields_is_one_line_naming_the_file(
    tmp_path, saved_checkpoint, spoil, said
):
    import copy

    import torch

    spoilt = copy.deepcopy(saved_checkpoint)
    spoil(spoilt)
    path = tmp_path / "last.pt"
    torch.save(spoilt, path)
    from vae_runner.training.checkpoint import CheckpointError

    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    assert str(refused.value) == f"{path} is not a usable checkpoint: {said}" or said in str(
        refused.value
    )
    assert str(path) in str(refused.value)


def test_a_checkpoint_holds_history_json_s_own_text_and_one_with_a_dict_loads_too(
    tmp_path, saved_checkpoint
):
    """The history goes into last.pt as history.json's text (torch.save pickles one string,
    not thousands of numbers); a checkpoint written with the history as a dict (before) loads
    into the same record."""
    import torch

    run_dir = tmp_path / "run"
    run(typed_config("epochs=2", *CHEAP[1:]), run_dir, console=quiet())
    raw = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert isinstance(raw["history"], str)
    held = json.loads(raw["history"])  # the record as the epoch left it (before the run's end)
    final = history_of(run_dir)
    assert held["status"] == "running" and final["status"] == "completed"
    assert held["epoch"] == final["epoch"] == [1, 2]
    assert held["train_loss"] == final["train_loss"] and held["lr"] == final["lr"]
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["history"] == held
    older = dict(raw, history=json.loads(raw["history"]))  # the dict a checkpoint held before
    torch.save(older, tmp_path / "older.pt")
    assert load_checkpoint(tmp_path / "older.pt")["history"] == json.loads(raw["history"])


def test_a_checkpoint_whose_tensors_do_not_fit_the_model_is_refused(tmp_path, saved_checkpoint):
    import copy

    import torch

    from vae_runner.training.checkpoint import CheckpointError

    spoilt = copy.deepcopy(saved_checkpoint)
    name = next(iter(spoilt["model"]))
    spoilt["model"][name] = torch.zeros(3, 3)
    cfg = typed_config("epochs=2", "eval.iw_samples=0", "plot_every=0")
    with pytest.raises(CheckpointError, match="does not fit this run's model and optimizer"):
        run(cfg, tmp_path / "run", console=quiet(), checkpoint=spoilt)


def test_a_directory_its_checks_claimed_is_found_under_any_spelling_and_no_other(tmp_path):
    """A single run's job is handed nothing: it asks whether its command's checks claimed its
    folder, under the path Hydra gives the job; a claim a job took itself (another job of the
    same process aimed at the same folder) is not the checks': that job is refused Busy."""
    from vae_runner.rundir import release_held

    (tmp_path / "a").mkdir()
    assert not claimed_by_checks(tmp_path / "run")
    claim(tmp_path / "a" / ".." / "run", hold=True)  # hydra.run.dir=../run
    assert claimed_by_checks(tmp_path / "run")  # Hydra's runtime.output_dir folds the `..`
    own = claim(tmp_path / "job")  # a sweep job's own claim, in this process
    assert not claimed_by_checks(tmp_path / "job")
    own.release()
    release_held()  # as the command's end does
    assert not claimed_by_checks(tmp_path / "run") and not (tmp_path / "run").exists()


def test_a_single_runs_job_takes_what_its_checks_found_and_makes_none_of_it_again(
    tmp_path, monkeypatch
):
    """The checks type the config and read the folder's earlier attempt (resume=: load the
    checkpoint) under the claim they take; the job trains on what they left on that claim
    (cli.checks.Checked): nothing is typed, read or loaded twice."""
    from collections import Counter

    from vae_runner.cli import checks, job
    from vae_runner.training import resume

    calls: Counter = Counter()

    def count(module, name):
        original = getattr(module, name)

        def counted(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)

    for module, name in [(checks, "job_config"), (job, "job_config"), (checks, "earlier_attempt")]:
        count(module, name)
    count(resume, "load_for_resume")
    run_dir = tmp_path / "run"
    assert vae_train_in_process(monkeypatch, *CHEAP, "epochs=1", f"hydra.run.dir={run_dir}") == 0
    assert (calls["job_config"], calls["earlier_attempt"]) == (1, 1)
    monkeypatch.chdir(tmp_path)  # resume= spelt relative: the record keeps the folder's path
    assert vae_train_in_process(monkeypatch, "resume=run", "epochs=2") == 0
    assert calls["load_for_resume"] == 1
    history = json.loads((run_dir / "history.json").read_text())
    assert history["epoch"] == [1, 2] and history["status"] == "completed"
    assert history["config"]["resume"] == str(run_dir)


@pytest.mark.parametrize("launch", [(), ("-m", "lr=1e-2,1e-3", "hydra/launcher=stacked")])
def test_a_config_reading_the_environment_reads_the_jobs_own(tmp_path, monkeypatch, launch):
    """An `${oc.env:...}` in the config reads hydra.job.env_set, which Hydra sets only around
    the job's task, also where the checks or a sweeper typed the config before (cli.checks
    job_config): a single run, and a stacked sweep whose jobs the sweeper typed."""
    monkeypatch.delenv("VAE_TEST_SEED", raising=False)
    (tmp_path / "conf" / "experiment").mkdir(parents=True)  # a preset of the user's own
    preset = "# @package _global_\nseed: ${oc.env:VAE_TEST_SEED,0}\n"
    (tmp_path / "conf" / "experiment" / "env_seed.yaml").write_text(preset)
    where = tmp_path / "out"
    key = "hydra.sweep.dir" if launch else "hydra.run.dir"
    args = ("-cd", str(tmp_path / "conf"), *launch, *CHEAP, "epochs=1", "experiment=env_seed")
    env = "+hydra.job.env_set.VAE_TEST_SEED=7"
    assert vae_train_in_process(monkeypatch, *args, env, f"{key}={where}") == 0
    records = [where / "history.json"] if not launch else sorted(where.glob("*/history.json"))
    assert len(records) == (2 if launch else 1)
    assert {json.loads(r.read_text())["config"]["seed"] for r in records} == {7}


@pytest.mark.parametrize("launcher", ["basic", "stacked"])
def test_a_setting_given_as_an_interpolation_is_resolved_by_its_job_alone(
    tmp_path, monkeypatch, launcher
):
    """`'seed=${oc.env:VAE_TEST_SEED}'` on the command line: Hydra hands it to each job to
    resolve in the job's environment. The sweep's own code reads it as written (never
    resolving it where the variable is unset: that was an InterpolationResolutionError, exit
    2), and its summary expects the jobs that ran (not two phantom `not started` ones)."""
    monkeypatch.delenv("VAE_TEST_SEED", raising=False)
    sweep = tmp_path / "sweep"
    args = ["-m", "lr=1e-2,1e-3", *CHEAP, "epochs=1", "seed=${oc.env:VAE_TEST_SEED}"]
    args += ["+hydra.job.env_set.VAE_TEST_SEED=7", f"hydra.sweep.dir={sweep}"]
    args += ["hydra/launcher=stacked"] if launcher == "stacked" else []
    assert vae_train_in_process(monkeypatch, *args) == 0
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["counts"] == {"completed": 2}
    seeds = {json.loads(r.read_text())["config"]["seed"] for r in sweep.glob("*/history.json")}
    assert seeds == {7}


# --------------------------------------------------------------------------- out of memory
def test_an_allocation_that_fails_is_said_in_one_line():
    import torch

    from vae_runner.faults import out_of_memory_line

    cpu = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
        "memory: you tried to allocate 25600000000 bytes. Error code 12 (Cannot allocate memory)"
    )
    assert out_of_memory_line(cpu) == (
        "out of memory (23.8 GiB in one piece): choose smaller model sizes (model.hidden_dim, "
        "model.latent_dim, model.channels) or a smaller batch_size"
    )
    cuda = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 ...")
    assert out_of_memory_line(cuda).startswith("out of memory (2.00 GiB in one piece): ")
    assert out_of_memory_line(MemoryError()).startswith("out of memory: choose smaller")
    assert out_of_memory_line(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None


def test_an_unallocatable_model_in_a_single_run_is_one_line_and_leaves_nothing(
    tmp_path, monkeypatch, capsys
):
    run_dir = tmp_path / "run"
    huge = "model.hidden_dim=100000000000"  # 64 x 1e11 floats: no machine allocates it
    args = ("data=digits", "epochs=1", huge, f"hydra.run.dir={run_dir}")
    assert vae_train_in_process(monkeypatch, *args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("Error")] == [
        "Error: out of memory (23841.9 GiB in one piece): choose smaller model sizes "
        "(model.hidden_dim, model.latent_dim, model.channels) or a smaller batch_size"
    ]
    assert not run_dir.exists()


def test_temporary_files_of_interrupted_writes_are_removed_and_nothing_else(tmp_path):
    from vae_runner.rundir import remove_temporary_files

    (tmp_path / "checkpoints").mkdir()
    left = [
        tmp_path / "checkpoints" / ".last.pt.k2j3h4.tmp",  # replace_atomically's
        tmp_path / ".history.json.x8y9.tmp",
        tmp_path / ".curves.png.tmp.png",  # write_through_temporary's
    ]
    kept = [tmp_path / "checkpoints" / "last.pt", tmp_path / "history.json", tmp_path / "x.tmp"]
    for path in left + kept:
        path.write_bytes(b"data")
    only_temporary = tmp_path / "killed-while-writing"
    only_temporary.mkdir()
    (only_temporary / ".history.json.a1b2.tmp").write_bytes(b"{")
    assert earlier_attempt(only_temporary).kind == "new"  # not someone else's folder
    remove_temporary_files(tmp_path)
    assert [p.exists() for p in left] == [False] * 3
    assert [p.exists() for p in kept] == [True] * 3


def test_a_second_signal_while_the_model_is_built_is_one_line_and_leaves_nothing(
    tmp_path, monkeypatch, capsys
):
    """Two SIGTERMs before the run's record exists (the second stops at once)."""

    def stopped_at_once(*args, **kwargs):
        raise signals.StopNow(signal.SIGTERM)

    monkeypatch.setattr(runner_module, "build_engine", stopped_at_once)
    run_dir = tmp_path / "run"
    args = ("data=digits", *CHEAP, f"hydra.run.dir={run_dir}")
    assert vae_train_in_process(monkeypatch, *args) == 143
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        "Error: interrupted before the first epoch; nothing to resume"
    ]
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda good: b"", "truncated or corrupt: not a file torch.save wrote"),
        (
            lambda good: b"\x13" + os.urandom(4999),
            "truncated or corrupt: not a file torch.save wrote",
        ),
        (lambda good: good[: len(good) // 2], "not a usable checkpoint (truncated or corrupt"),
    ],
    ids=["empty", "random bytes", "half"],
)
def test_damaged_checkpoint_bytes_are_called_damage_not_a_refused_object(
    tmp_path, saved_checkpoint, damage, words
):
    import torch

    good = tmp_path / "good.pt"
    torch.save(saved_checkpoint, good)
    bad = tmp_path / "last.pt"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(ConfigError) as refused:
        load_checkpoint(bad)
    assert str(refused.value).startswith(f"{bad} ") and words in str(refused.value)
    assert "could run code" not in str(refused.value)


def test_a_legacy_pickle_that_would_run_code_is_refused(tmp_path):
    import torch

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "last.pt"
    torch.save({"format": 1, "model": Exploit()}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(ConfigError, match="is refused: it holds Python objects"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("flag", [None, "-m"])
def test_a_run_or_sweep_dir_too_long_for_the_file_system_is_one_line(
    tmp_path, monkeypatch, capsys, flag
):
    # A 300-character folder name: Path.exists() itself raises ENAMETOOLONG there, which
    # once rose as a 15-line traceback from the writability check.
    long_dir = tmp_path / ("x" * 300) / "run"
    key = "hydra.sweep.dir" if flag else "hydra.run.dir"
    args = [a for a in (flag, "epochs=1", f"{key}={long_dir}") if a]
    assert vae_train_in_process(monkeypatch, *args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.strip()]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"Error: cannot create {key}={long_dir}: File name too long")
    assert errors[0].endswith(f"choose a shorter {key}")
    assert list(tmp_path.iterdir()) == []
