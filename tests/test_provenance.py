"""A run folder's checkpoint is checked against the run its history.json records before it is
used: a `last.pt` copied in from another run, or a record whose `last.pt` was deleted, is
refused in one line (exit 2) on both routes (the same command again, and `resume=`), and the
folder is left exactly as it was."""

from __future__ import annotations

import json
import shutil

import pytest

from vae_runner.config.errors import ConfigError
from vae_runner.training.provenance import check_checkpoint, missing_checkpoint_line

from helpers import vae_train_in_process

CHEAP = ("data=digits", "epochs=2", "eval.iw_samples=0", "pictures=false", "batch_size=256")


# --------------------------------------------------------------------------- the rule itself
def _record(**changes):
    history = {
        "epoch": [1, 2],
        "train_loss": [40.0, 30.0],
        "test_loss": [41.0, 31.0],
        "started_at": "2026-12-04T10:00:00+00:00",
        "config": {"lr": 0.001, "epochs": 2, "model": {"hidden_dim": 400}, "resume": None},
    }
    history.update(changes)
    return history


def _checkpoint(epoch=2, **changes):
    return {"epoch": epoch, "config": _record(**changes)["config"], "history": _record(**changes)}


def test_a_checkpoint_of_the_recorded_run_passes():
    check_checkpoint("D", _checkpoint(), _record())
    # a kill between last.pt and history.json leaves the checkpoint one epoch ahead
    ahead = _record(epoch=[1, 2, 3], train_loss=[40.0, 30.0, 25.0], test_loss=[41.0, 31.0, 26.0])
    check_checkpoint("D", {"epoch": 3, "config": ahead["config"], "history": ahead}, _record())
    # an extension (resume=D epochs=4) records its new epochs before its first checkpoint
    extended = _record(config={**_record()["config"], "epochs": 4, "resume": "D"})
    check_checkpoint("D", _checkpoint(), extended)


@pytest.mark.parametrize("record", [None, {"status": "running"}, {"config": {}}])
def test_a_checkpoint_without_a_readable_record_is_refused(record):
    # A run writes history.json before its first checkpoint: only a deleted or damaged record
    # leaves a last.pt alone, and then another run's last.pt was once carried on unchecked.
    with pytest.raises(ConfigError) as refused:
        check_checkpoint("D", _checkpoint(), record)
    assert str(refused.value) == (
        "D: history.json is missing or damaged, so checkpoints/last.pt cannot be checked against "
        "the run recorded there: nothing was loaded or changed; put back the run's own "
        "history.json, or use another folder"
    )


@pytest.mark.parametrize(
    "checkpoint, words",
    [
        (
            {"epoch": 2, "config": {**_record()["config"], "lr": 0.01}, "history": _record()},
            "(lr=0.01 in checkpoints/last.pt, 0.001 in history.json)",
        ),
        (
            {
                "epoch": 2,
                "config": {**_record()["config"], "model": {"hidden_dim": 64}},
                "history": _record(),
            },
            "(model.hidden_dim=64 in checkpoints/last.pt, 400 in history.json)",
        ),
        (
            _checkpoint(started_at="2026-12-04T11:00:00+00:00"),
            "(another run of the same settings, started 2026-12-04T11:00:00+00:00, not "
            "2026-12-04T10:00:00+00:00)",
        ),
        (_checkpoint(epoch=20), "(it holds epoch 20, history.json records 2 epochs)"),
        (_checkpoint(test_loss=[41.0, 99.0]), "(its test_loss per epoch differs"),
    ],
)
def test_a_checkpoint_of_another_run_is_refused_naming_what_differs(checkpoint, words):
    with pytest.raises(ConfigError) as refused:
        check_checkpoint("D", checkpoint, _record())
    line = str(refused.value)
    assert line.startswith("D: checkpoints/last.pt does not belong to the run recorded there")
    assert words in line and "\n" not in line
    assert line.endswith(
        "nothing was loaded or changed; put back the run's own checkpoint, or use another folder"
    )


def test_a_record_of_finished_epochs_without_its_checkpoint_is_refused():
    line = missing_checkpoint_line("D", _record())
    assert line.startswith("D/history.json records 2 finished epochs but checkpoints/last.pt")
    assert missing_checkpoint_line("D", {"epoch": []}) is None  # killed in epoch 1: afresh
    assert missing_checkpoint_line("D", None) is None


# --------------------------------------------------------------------------- both routes, for real
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Run A (lr=1e-3) and run B (lr=1e-2), same command otherwise, both finished."""
    import _pytest.monkeypatch

    base = tmp_path_factory.mktemp("runs")
    with _pytest.monkeypatch.MonkeyPatch.context() as monkeypatch:
        for name, lr in (("a", "1e-3"), ("b", "1e-2")):
            args = (*CHEAP, f"lr={lr}", f"hydra.run.dir={base / name}")
            assert vae_train_in_process(monkeypatch, *args) == 0
    return base


def _killed_in_final_evaluation(tmp_path, two_runs):
    """A copy of run A as a SIGKILL in its final evaluation leaves it: every epoch checkpointed,
    the record `running` (the same command, or resume=, carries it on)."""
    run_dir = tmp_path / "a"
    shutil.copytree(two_runs / "a", run_dir)
    history = json.loads((run_dir / "history.json").read_text())
    history.update(status="running", final=None, finished_at=None)
    (run_dir / "history.json").write_text(json.dumps(history))
    return run_dir


def _files(run_dir):
    return {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


ROUTES = {
    "same command": lambda d: (*CHEAP, "lr=1e-3", f"hydra.run.dir={d}"),
    "resume": lambda d: (f"resume={d}", "epochs=3"),
}


def _refused(run_dir, route, monkeypatch, capsys) -> str:
    """The route run on `run_dir`: exit 2, one line (returned), and every file as it was."""
    before = _files(run_dir)
    capsys.readouterr()
    assert vae_train_in_process(monkeypatch, *ROUTES[route](run_dir)) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1, errors
    assert _files(run_dir) == before
    return errors[0]


@pytest.mark.parametrize("route", ROUTES)
def test_a_checkpoint_copied_in_from_another_run_is_refused_and_nothing_changes(
    tmp_path, two_runs, monkeypatch, capsys, route
):
    run_dir = _killed_in_final_evaluation(tmp_path, two_runs)
    shutil.copy(two_runs / "b" / "checkpoints" / "last.pt", run_dir / "checkpoints" / "last.pt")
    line = _refused(run_dir, route, monkeypatch, capsys)
    assert "checkpoints/last.pt does not belong to the run recorded there" in line
    assert "(lr=0.01 in checkpoints/last.pt, 0.001 in history.json)" in line


@pytest.mark.parametrize("route", ROUTES)
def test_another_runs_checkpoint_beside_a_deleted_record_is_refused(
    tmp_path, two_runs, monkeypatch, capsys, route
):
    run_dir = _killed_in_final_evaluation(tmp_path, two_runs)
    (run_dir / "history.json").unlink()
    (run_dir / "checkpoints" / "last.pt").unlink()  # not written through: best.pt is a link
    shutil.copy(two_runs / "b" / "checkpoints" / "last.pt", run_dir / "checkpoints" / "last.pt")
    line = _refused(run_dir, route, monkeypatch, capsys)
    assert "history.json is missing or damaged, so checkpoints/last.pt cannot be checked" in line


@pytest.mark.parametrize("route", ROUTES)
def test_a_deleted_checkpoint_never_restarts_the_run_over_its_finished_epochs(
    tmp_path, two_runs, monkeypatch, capsys, route
):
    run_dir = _killed_in_final_evaluation(tmp_path, two_runs)
    (run_dir / "checkpoints" / "last.pt").unlink()
    line = _refused(run_dir, route, monkeypatch, capsys)  # history.json and best.pt as they were
    assert "history.json records 2 finished epochs but checkpoints/last.pt is missing" in line
    assert "stopped before its first epoch" not in line


def test_the_runs_own_checkpoint_still_carries_on(tmp_path, two_runs, monkeypatch):
    run_dir = _killed_in_final_evaluation(tmp_path, two_runs)
    assert vae_train_in_process(monkeypatch, *ROUTES["same command"](run_dir)) == 0
    history = json.loads((run_dir / "history.json").read_text())
    assert history["status"] == "completed" and history["epoch"] == [1, 2]
    assert history["resumed"][-1]["how"] == "restart"
