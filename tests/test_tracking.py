"""logger=mlflow, read back through MLflow's own client; TensorBoard's hparams and images."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from rich.console import Console

from vae_runner.report import tracking
from vae_runner.training import signals
from vae_runner.training.checkpoint import load_checkpoint
from vae_runner.training.runner import run

from helpers import one_line, run_cli, typed_config, vae_train_in_process

CHEAP = ("epochs=3", "eval.iw_samples=0", "plot_every=0")


@pytest.fixture(autouse=True)
def no_stop_request_left_over():
    yield
    signals._process["signum"] = None


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """A SQLite file with MLflow's tables and no experiment of ours: made once (its schema
    migrations take seconds), copied for each test."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path, monkeypatch, empty_store):
    """A new SQLite store for this test, as $MLFLOW_TRACKING_URI (the default's fallback)."""
    (tmp_path / "store").mkdir()
    shutil.copy(empty_store, tmp_path / "store" / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def quiet() -> Console:
    return Console(file=io.StringIO())


def history_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "history.json").read_text())


def mlflow_run(run_dir: Path):
    ids = json.loads((run_dir / tracking.RUN_FILE).read_text())
    client = MlflowClient(ids["tracking_uri"])
    return client, client.get_run(ids["run_id"])


def steps(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def artifacts(client: MlflowClient, run_id: str, under: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, under)}


# --------------------------------------------------------------------------- the store's address
def test_the_tracking_uri_is_the_key_then_the_environment_then_sqlite_under_outputs(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_uri(None, tmp_path) == f"sqlite:///{tmp_path}/outputs/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker:5000")
    assert tracking.resolve_uri(None, tmp_path) == "http://tracker:5000"
    assert tracking.resolve_uri("sqlite:///runs.db", tmp_path) == f"sqlite:///{tmp_path}/runs.db"
    assert tracking.resolve_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert tracking.sqlite_path("sqlite:///:memory:") is None


def test_mlflow_options_compose_and_bad_values_are_one_line():
    cfg = typed_config("logger=mlflow")
    assert (cfg.logger.name, cfg.logger.tracking_uri, cfg.logger.experiment) == (
        "mlflow",
        None,
        "vae-runner",
    )
    cfg = typed_config("logger=mlflow", "logger.tracking_uri=sqlite:///x.db", "logger.experiment=e")
    assert (cfg.logger.tracking_uri, cfg.logger.experiment) == ("sqlite:///x.db", "e")
    assert "logger.experiment must name an MLflow experiment" in one_line(
        "logger=mlflow", "logger.experiment="
    )
    assert "logger.tracking_uri is empty" in one_line("logger=mlflow", "logger.tracking_uri=' '")


# --------------------------------------------------------------------------- one run
def test_a_run_is_one_mlflow_run_with_params_tags_metrics_per_epoch_and_artifacts(tmp_path, store):
    run_dir = tmp_path / "run"
    cfg = typed_config(
        "logger=mlflow", "optimizer=adamw", "data.val_fraction=0.1", "epochs=3", "plot_every=2"
    )
    history = run(cfg, run_dir, console=quiet(), start_dir=tmp_path)
    assert history["status"] == "completed"
    client, logged = mlflow_run(run_dir)
    # named by its folder, from where vae-train started
    assert logged.info.status == "FINISHED" and logged.info.run_name == "run"
    assert json.loads((run_dir / tracking.RUN_FILE).read_text())["tracking_uri"] == store
    # the resolved config as params, the chosen options as tags
    params = logged.data.params
    assert params["lr"] == "0.001" and params["optimizer.name"] == "adamw"
    assert params["optimizer.weight_decay"] == "0.01" and params["data.val_fraction"] == "0.1"
    assert params["optimizer.betas"] == "[0.9, 0.999]" and params["data.limit"] == "null"
    tags = logged.data.tags
    assert tags["optimizer"] == "adamw" and tags["scheduler"] == "plateau"
    assert tags["data"] == "digits" and tags["vae.status"] == "completed"
    assert tags["stopped_early"] == "false" and "stopped_epoch" not in logged.data.metrics
    assert tags["vae.run_dir"] == str(run_dir.resolve())
    # every per-epoch series, step = epoch, the values history.json holds
    run_id = logged.info.run_id
    for key in ("train_loss", "val_loss", "test_loss", "test_kl", "lr", "active_units"):
        assert steps(client, run_id, key) == list(zip([1, 2, 3], history[key], strict=True)), key
    assert steps(client, run_id, "kl_by_dim/07") == [
        (e, kl[7]) for e, kl in zip([1, 2, 3], history["kl_by_dim"], strict=True)
    ]
    # the final measures
    metrics = logged.data.metrics
    final = history["final"]
    assert metrics["final/test_elbo"] == pytest.approx(final["test_elbo"])
    assert metrics["final/test_nll_iw"] == pytest.approx(final["test_nll_iw"])
    assert metrics["final/active_units"] == final["active_units"]
    assert metrics["best_val_loss"] == pytest.approx(history["best_val_loss"])
    # history.json and the PNGs (images/ too), and Hydra's record when there is one
    assert {"history.json", "curves.png", "kl_per_dim.png", "reconstructions.png"} <= artifacts(
        client, run_id
    )
    assert "images/samples_epoch002.png" in artifacts(client, run_id, "images")
    local = Path(client.download_artifacts(run_id, "history.json", str(tmp_path)))
    assert json.loads(local.read_text())["status"] == "completed"
    # the artifacts lie beside the store's file, not in an mlruns/ of the working directory
    assert logged.info.artifact_uri.startswith(str(tmp_path / "store" / tracking.ARTIFACTS_DIR))


def test_an_early_stopped_run_is_tagged_and_logs_the_epoch_it_stopped_after(tmp_path, store):
    # min_delta=1e9: the first epoch improves on nothing, the second cannot improve enough,
    # so patience=1 stops the run after epoch 2
    rule = ("early_stop.patience=1", "early_stop.min_delta=1e9")
    history = run(typed_config("logger=mlflow", *CHEAP, *rule), tmp_path / "run", console=quiet())
    assert (history["status"], history["stopped_epoch"]) == ("completed", 2)
    _, logged = mlflow_run(tmp_path / "run")
    assert (logged.info.status, logged.data.tags["vae.status"]) == ("FINISHED", "completed")
    assert logged.data.tags["stopped_early"] == "true"
    assert logged.data.metrics["stopped_epoch"] == 2
    assert logged.data.metrics["final/test_loss"] == pytest.approx(history["test_loss"][1])


def test_a_diverged_run_ends_failed_and_an_interrupted_one_killed(tmp_path, store):
    diverged = tmp_path / "diverged"
    cfg = typed_config("logger=mlflow", "optimizer=sgd", "lr=1e6", "grad_clip=0", *CHEAP)
    assert run(cfg, diverged, console=quiet())["status"] == "diverged"
    _, logged = mlflow_run(diverged)
    assert (logged.info.status, logged.data.tags["vae.status"]) == ("FAILED", "diverged")

    stopped = tmp_path / "stopped"
    stop_file = tmp_path / signals.STOP_FILE
    stop_file.write_text("SIGTERM\n")  # a sweep's stop, seen at the first batch
    history = run(typed_config("logger=mlflow", *CHEAP), stopped, stop_file=stop_file,
                  console=quiet())  # fmt: skip
    assert history["status"] == "interrupted"
    _, logged = mlflow_run(stopped)
    assert (logged.info.status, logged.data.tags["vae.status"]) == ("KILLED", "interrupted")


def test_a_restarted_run_continues_its_mlflow_run_and_logs_each_epoch_once(
    tmp_path, store, monkeypatch
):
    run_dir = tmp_path / "run"
    logged_epoch = tracking.MLflowLogger.epoch

    def stop_after_epoch_one(self, history, record):
        logged_epoch(self, history, record)
        if record["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # the run's own handler takes it

    monkeypatch.setattr(tracking.MLflowLogger, "epoch", stop_after_epoch_one)
    cfg = typed_config("logger=mlflow", *CHEAP)
    first = run(cfg, run_dir, console=quiet())
    assert first["status"] == "interrupted" and first["epoch"] == [1]
    client, logged = mlflow_run(run_dir)
    assert logged.info.status == "KILLED"
    run_id = logged.info.run_id

    monkeypatch.setattr(tracking.MLflowLogger, "epoch", logged_epoch)
    signals._process["signum"] = None
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    longer = typed_config("logger=mlflow", *CHEAP, "epochs=4")  # resume=DIR epochs=4
    done = run(longer, run_dir, checkpoint=checkpoint, console=quiet())
    assert done["status"] == "completed" and done["epoch"] == [1, 2, 3, 4]
    client, logged = mlflow_run(run_dir)
    assert logged.info.run_id == run_id and logged.info.status == "FINISHED"
    assert steps(client, run_id, "test_loss") == list(
        zip([1, 2, 3, 4], done["test_loss"], strict=True)
    )
    # a param never changes in MLflow: the value the run carried on with is a tag
    assert logged.data.params["epochs"] == "3" and logged.data.tags["vae.resumed.epochs"] == "4"


@pytest.mark.parametrize("answers_again", [True, False])
def test_a_store_that_fails_mid_run_warns_and_gets_the_epochs_once_it_answers(
    tmp_path, store, monkeypatch, answers_again
):
    run_dir = tmp_path / "run"
    original = MlflowClient.log_batch
    calls = {"metrics": 0}

    def flaky(self, run_id, metrics=(), params=(), tags=(), synchronous=None):
        if metrics and any(m.key == "train_loss" for m in metrics):
            calls["metrics"] += 1
            if calls["metrics"] == 1 or not answers_again:
                raise OSError("database is locked")
        return original(self, run_id, metrics, params, tags, synchronous)

    monkeypatch.setattr(MlflowClient, "log_batch", flaky)
    # no retry before the end, however long an epoch takes on a busy machine
    monkeypatch.setattr(tracking, "RETRY_SECONDS", math.inf)
    history = run(typed_config("logger=mlflow", *CHEAP), run_dir, console=quiet())
    assert history["status"] == "completed"
    assert history == history_of(run_dir)
    warned = [w["message"] for w in history["warnings"] if w["kind"] == "tracking"]
    assert warned[0].startswith("MLflow could not log epoch 1 (database is locked)")
    if answers_again:
        assert len(warned) == 1  # once, not once per failed epoch
    else:
        assert len(warned) == 2 and warned[1].startswith("MLflow did not answer at the end")
    # after a failure the store is left alone for a while (epochs 2 and 3 did not wait on
    # it), then tried once more at the end
    assert calls["metrics"] == 2
    client, logged = mlflow_run(run_dir)
    logged_epochs = [s for s, _ in steps(client, logged.info.run_id, "train_loss")]
    if answers_again:
        assert logged_epochs == [1, 2, 3] and logged.info.status == "FINISHED"
    else:
        assert logged_epochs == [] and logged.info.status == "RUNNING"


def test_a_store_deleted_mid_run_is_one_warning_line_each_and_no_traceback(
    tmp_path, store, monkeypatch, capfd
):
    # MLflow logged each SQLAlchemy error with its traceback (114-166 lines on stderr) before
    # raising it, and the warning quoted the whole SQL statement.
    from vae_runner.training.run_record import RunRecord

    db = tmp_path / "store" / "mlflow.db"
    after_epoch = RunRecord.after_epoch

    def delete_the_store(self, record, *rest):
        if record["epoch"] == 1:
            db.unlink()
        return after_epoch(self, record, *rest)

    monkeypatch.setattr(RunRecord, "after_epoch", delete_the_store)
    monkeypatch.setattr(tracking, "RETRY_SECONDS", 0)  # every epoch tries the store again
    # no handler an earlier in-process vae-train left on the root logger (its stream is gone):
    # the warnings reach stderr through logging's last resort, as the terminal would show them
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    capfd.readouterr()
    history = run(typed_config("logger=mlflow", *CHEAP), tmp_path / "run", console=quiet())
    assert history["status"] == "completed"
    err = capfd.readouterr().err
    assert "Traceback" not in err and "[SQL:" not in err
    warned = [w["message"] for w in history["warnings"] if w["kind"] == "tracking"]
    assert warned[0] == (
        "MLflow could not log epoch 1 ((sqlite3.OperationalError) no such table: runs); the run "
        "goes on: history.json holds every epoch, and the store gets them once it answers"
    )
    assert warned[1].startswith("MLflow did not answer at the end")
    assert len(warned) == 2 and len(err.strip().splitlines()) <= 3, err


@pytest.mark.parametrize("route", ["same command", "resume"])
def test_a_finished_run_started_again_ends_an_mlflow_run_a_kill_left_running(
    tmp_path, store, monkeypatch, route
):
    # SIGKILL while the run's files were uploaded at its end: history.json says completed,
    # the MLflow run stays RUNNING, without its files. Started again, the run ends it.
    run_dir = tmp_path / "run"
    args = ("logger=mlflow", *CHEAP, "pictures=false", f"hydra.run.dir={run_dir}")
    assert vae_train_in_process(monkeypatch, *args) == 0
    client, logged = mlflow_run(run_dir)
    run_id = logged.info.run_id
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "vae.status", "running")
    record = (run_dir / "history.json").read_bytes()
    again = args if route == "same command" else (f"resume={run_dir}",)
    assert vae_train_in_process(monkeypatch, *again) == (0 if route == "same command" else 2)
    ended = client.get_run(run_id)
    assert ended.info.status == "FINISHED" and ended.data.tags["vae.status"] == "completed"
    assert "history.json" in artifacts(client, run_id)
    assert [s for s, _ in steps(client, run_id, "train_loss")] == [1, 2, 3]  # once each
    assert (run_dir / "history.json").read_bytes() == record


def test_a_missing_mlflow_or_a_store_that_cannot_be_opened_is_refused_before_any_file(
    tmp_path, monkeypatch, capsys
):
    run_dir = tmp_path / "run"
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import fails
    args = ("logger=mlflow", *CHEAP, f"hydra.run.dir={run_dir}")
    assert vae_train_in_process(monkeypatch, *args) == 2
    err = capsys.readouterr().err
    assert "logger=mlflow needs the mlflow package: pip install 'vae-runner[mlflow]'" in err
    assert "Traceback" not in err and not run_dir.exists()

    monkeypatch.delitem(sys.modules, "mlflow")
    (tmp_path / "a_file").write_text("")
    uri = f"sqlite:///{tmp_path}/a_file/mlflow.db"  # below a file: no folder can be made
    assert vae_train_in_process(monkeypatch, *args, f"logger.tracking_uri={uri}") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Error")]
    assert len(errors) == 1
    assert errors[0].startswith(f"Error: logger.tracking_uri={uri}: MLflow could not open")
    assert not run_dir.exists()


# a process that opens the store and prints its experiment's id (imports no torch: quick)
OPEN = (
    "import sys; from vae_runner.report import tracking; "
    "print(tracking.open_store(sys.argv[1], 'vae-runner')[1])"
)


def test_processes_that_make_a_fresh_store_at_the_same_moment_all_open_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"  # no file yet: each may make it
    workers = [
        subprocess.Popen([sys.executable, "-c", OPEN, uri], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    answers = [worker.communicate()[0].strip() for worker in workers]
    assert [w.returncode for w in workers] == [0, 0, 0]
    assert len(set(answers)) == 1 and answers[0]  # one experiment, the same for all


# --------------------------------------------------------------------------- sweeps
def _children(client: MlflowClient, parent) -> dict[str, object]:
    found = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    return {child.info.run_name: child for child in found}


def _parent(sweep_dir: Path):
    ids = json.loads((sweep_dir / tracking.PARENT_FILE).read_text())
    client = MlflowClient(ids["tracking_uri"])
    return client, client.get_run(ids["run_id"])


def test_a_basic_sweep_is_a_parent_run_with_a_child_per_job(tmp_path, store, monkeypatch):
    sweep_dir = tmp_path / "sweep"
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"  # the store's, given as the key
    # a bool and a URI among the shared overrides: Hydra hands them to each job as
    # `pictures=False` and `sqlite\\:///...`, which once stayed in every child's name
    shared = ("pictures=false", f"logger.tracking_uri={uri}")
    args = ("-m", "lr=1e-3,1e-2", "logger=mlflow", *shared, *CHEAP, f"hydra.sweep.dir={sweep_dir}")
    assert vae_train_in_process(monkeypatch, *args) == 0
    client, parent = _parent(sweep_dir)
    assert parent.info.status == "FINISHED"
    assert parent.data.params == {
        "lr": "1e-3,1e-2",
        "logger": "mlflow",
        "pictures": "false",
        "logger.tracking_uri": uri,
        "epochs": "3",
        "eval.iw_samples": "0",
        "plot_every": "0",
    }
    children = _children(client, parent)
    assert set(children) == {"lr=0.001", "lr=0.01"}  # named by what varies, and only that
    for name, child in children.items():
        history = history_of(sweep_dir / ("0" if name == "lr=0.001" else "1"))
        assert child.data.params["lr"] == name.removeprefix("lr=")
        assert steps(client, child.info.run_id, "test_loss") == list(
            zip([1, 2, 3], history["test_loss"], strict=True)
        )
    # the per-setting summary on the parent
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert parent.data.tags["vae.verdict"] == summary["verdict"]["sentence"]
    assert parent.data.tags["vae.winner"] == summary["verdict"]["winner"]
    best = {s["label"]: s for s in summary["settings"]}["lr=0.01"]["measures"]["best_test_loss"]
    assert parent.data.metrics["lr:0.01/best_test_loss_mean"] == pytest.approx(best["mean"])
    assert {"sweep_summary.json", "sweep_summary.csv", "curves.png", "settings.json"} <= (
        artifacts(client, parent.info.run_id)
    )


@pytest.mark.e2e
def test_a_joblib_sweep_logs_a_parent_two_children_and_a_diverged_child_failed(tmp_path):
    # $MLFLOW_TRACKING_URI is honoured by jobs in other processes too
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    sweep_dir = tmp_path / "sweep"
    args = ("optimizer=sgd", "grad_clip=0", "lr=1e-3,1e6", "logger=mlflow", *CHEAP)
    done = run_cli(
        "-m",
        *args,
        "hydra/launcher=joblib",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": uri},
    )
    assert done.returncode == 3, done.stderr  # a diverged job: the sweep's exit code
    client, parent = _parent(sweep_dir)
    assert json.loads((sweep_dir / tracking.PARENT_FILE).read_text())["tracking_uri"] == uri
    assert parent.info.status == "FAILED"  # as the sweep's exit code says
    children = _children(client, parent)
    assert set(children) == {"lr=0.001", "lr=1000000.0"}
    good, bad = children["lr=0.001"], children["lr=1000000.0"]
    assert (good.info.status, bad.info.status) == ("FINISHED", "FAILED")
    assert bad.data.tags["vae.status"] == "diverged"
    assert good.data.params["optimizer.name"] == "sgd" and good.data.tags["optimizer"] == "sgd"
    assert [s for s, _ in steps(client, good.info.run_id, "train_loss")] == [1, 2, 3]
    assert {"history.json", "curves.png", "samples.png"} <= artifacts(client, good.info.run_id)
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.e2e
def test_a_submitit_local_sweep_logs_a_parent_and_its_children(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "sweep"
    args = ("lr=1e-3,1e-2", "logger=mlflow", "epochs=2", "eval.iw_samples=0")
    done = run_cli(
        "-m", *args, "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    # the default store: a SQLite file under outputs/ of where vae-train started
    assert (tmp_path / "outputs" / "mlflow.db").is_file()
    client, parent = _parent(sweep_dir)
    assert parent.info.status == "FINISHED"
    children = _children(client, parent)
    assert set(children) == {"lr=0.001", "lr=0.01"}
    assert all(c.info.status == "FINISHED" for c in children.values())
    assert all(
        len(client.get_metric_history(c.info.run_id, "test_loss")) == 2 for c in children.values()
    )


@pytest.mark.e2e
def test_a_sigint_ends_the_mlflow_run_killed_and_resume_finishes_the_same_run(tmp_path):
    from helpers import start_cli, wait_for_hold

    run_dir = tmp_path / "run"
    args = ("logger=mlflow", "epochs=5", "batch_size=16", "eval.iw_samples=0")
    args = (*args, f"hydra.run.dir={run_dir}")
    process = start_cli(*args, cwd=tmp_path, log=tmp_path / "log", hold="batch:1:3")
    wait_for_hold(process)  # in epoch 2
    process.send_signal(signal.SIGINT)
    assert process.wait() == 130
    assert history_of(run_dir)["epoch"] == [1]
    client, logged = mlflow_run(run_dir)
    assert logged.info.status == "KILLED"
    resumed = run_cli(f"resume={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    client, again = mlflow_run(run_dir)
    assert again.info.run_id == logged.info.run_id and again.info.status == "FINISHED"
    assert [s for s, _ in steps(client, again.info.run_id, "train_loss")] == [1, 2, 3, 4, 5]


# --------------------------------------------------------------------------- what the review found
@pytest.mark.parametrize("lost", ["deleted in the UI", "its store is gone"])
def test_a_run_whose_mlflow_run_was_lost_carries_on_as_a_new_mlflow_run(tmp_path, store, lost):
    run_dir = tmp_path / "run"
    assert run(typed_config("logger=mlflow", *CHEAP), run_dir, console=quiet())["epoch"]
    ids = json.loads((run_dir / tracking.RUN_FILE).read_text())
    if lost == "deleted in the UI":
        MlflowClient(store).delete_run(ids["run_id"])
        where = store
    else:  # the file it named is not there any more (moved, removed): an empty store there
        where = f"sqlite:///{tmp_path / 'moved' / 'mlflow.db'}"
        (run_dir / tracking.RUN_FILE).write_text(json.dumps({**ids, "tracking_uri": where}))
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    done = run(typed_config("logger=mlflow", *CHEAP, "epochs=4"), run_dir, checkpoint=checkpoint,
               console=quiet())  # fmt: skip
    assert done["status"] == "completed"
    said = [w["message"] for w in done["warnings"] if w["kind"] == "tracking"]
    assert (
        len(said) == 1 and f"MLflow run {ids['run_id']} of {where} cannot be continued" in said[0]
    )
    client, logged = mlflow_run(run_dir)
    assert logged.info.run_id != ids["run_id"] and logged.info.status == "FINISHED"
    assert json.loads((run_dir / tracking.RUN_FILE).read_text())["tracking_uri"] == where
    # the new run holds every epoch the history holds, not only the resumed ones
    assert [s for s, _ in steps(client, logged.info.run_id, "test_loss")] == [1, 2, 3, 4]


def test_a_bad_store_in_the_environment_is_named_as_the_environment(tmp_path, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("")
    uri = f"sqlite:///{tmp_path}/a_file/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_dir = tmp_path / "run"
    assert vae_train_in_process(monkeypatch, "logger=mlflow", f"hydra.run.dir={run_dir}") == 2
    err = capsys.readouterr().err
    assert f"Error: MLFLOW_TRACKING_URI={uri}: MLflow could not open this store" in err
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "swept",
    [
        "logger=none,mlflow",
        "logger.experiment=a,b",
        "logger.tracking_uri=sqlite:///a.db,sqlite:///b.db",
    ],
)
def test_a_sweep_over_the_store_experiment_or_mlflow_itself_is_refused(
    swept, tmp_path, store, monkeypatch, capsys
):
    sweep_dir = tmp_path / "sweep"
    args = ("-m", swept, "logger=mlflow", *CHEAP, f"hydra.sweep.dir={sweep_dir}")
    if swept.startswith("logger="):
        args = ("-m", swept, *CHEAP, f"hydra.sweep.dir={sweep_dir}")
    assert vae_train_in_process(monkeypatch, *args) == 2
    key = swept.split("=")[0]
    assert f"give {key} one value" in capsys.readouterr().err
    assert not sweep_dir.exists()


def test_a_refused_sweep_leaves_no_parent_run_and_a_sweep_run_again_carries_on_in_its_own(
    tmp_path, store, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    refused = tmp_path / "refused"
    bad = ("-m", "lr=1e-3,-1", "logger=mlflow", *CHEAP, f"hydra.sweep.dir={refused}")
    assert vae_train_in_process(monkeypatch, *bad) == 2  # lr=-1 is refused by the job checks
    assert not refused.exists()
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("vae-runner")
    assert client.search_runs([experiment.experiment_id]) == []

    sweep_dir = tmp_path / "sweep"
    args = ("-m", "lr=1e-3,1e-2", "logger=mlflow", *CHEAP, f"hydra.sweep.dir={sweep_dir}")
    assert vae_train_in_process(monkeypatch, *args) == 0
    assert vae_train_in_process(monkeypatch, *args) == 0  # again: every job is done already
    client, parent = _parent(sweep_dir)
    assert parent.info.status == "FINISHED" and parent.data.tags["vae.status"] == "completed"
    assert len(_children(client, parent)) == 2  # the jobs were not logged twice
    local = Path(client.download_artifacts(parent.info.run_id, "settings.json", str(tmp_path)))
    settings = json.loads(local.read_text())["settings"]  # ranked: whichever won
    assert sorted(s["setting"] for s in settings) == ["lr=0.001", "lr=0.01"]
    mean = steps(client, parent.info.run_id, "lr:0.01/best_test_loss_mean")
    assert [s for s, _ in mean] == [1, 2]  # one point per run of the sweep


def test_only_the_tracking_keys_are_read_of_a_sweeps_overrides():
    from vae_runner.cli.checks import refuse_swept_tracking

    # Optuna's intervals cannot be enumerated: they are not the tracker's business
    refuse_swept_tracking(["lr=interval(1e-5,1e-2)", "logger=mlflow", "seed=range(3)"])
    refuse_swept_tracking(["logger=none,tensorboard"])  # no MLflow parent is involved
    with pytest.raises(Exception, match="give logger one value"):
        refuse_swept_tracking(["logger=tensorboard,mlflow"])


def test_a_stacked_sweep_is_a_parent_run_with_a_child_per_job(tmp_path, store, monkeypatch):
    """hydra/launcher=stacked: the same parent and children as the basic launcher's sweep."""
    sweep_dir = tmp_path / "sweep"
    monkeypatch.chdir(tmp_path)
    args = ("-m", "lr=1e-3,1e-2", "seed=0,1", "logger=mlflow", "hydra/launcher=stacked", *CHEAP)
    assert vae_train_in_process(monkeypatch, *args, f"hydra.sweep.dir={sweep_dir}") == 0
    client, parent = _parent(sweep_dir)
    assert parent.info.status == "FINISHED"
    children = _children(client, parent)
    assert set(children) == {f"lr={lr} seed={s}" for lr in ("0.001", "0.01") for s in (0, 1)}
    for child in children.values():
        assert child.info.status == "FINISHED"
        losses = client.get_metric_history(child.info.run_id, "test_loss")
        assert [m.step for m in losses] == [1, 2, 3]
