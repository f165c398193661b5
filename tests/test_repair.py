"""A finished run started again repairs what a kill at its very end left (report/repair.py):
the plots, the temporary files of interrupted writes, and (in test_tracking.py) an MLflow run
left RUNNING. Only what is missing is added: the record itself is never rewritten."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import vae_train_in_process

CHEAP = ("data=digits", "epochs=2", "eval.iw_samples=0", "batch_size=256")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A completed run, with its pictures."""
    import _pytest.monkeypatch

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    with _pytest.monkeypatch.MonkeyPatch.context() as monkeypatch:
        assert vae_train_in_process(monkeypatch, *CHEAP, f"hydra.run.dir={run_dir}") == 0
    return run_dir


def _as_a_kill_while_plotting_left_it(tmp_path, finished):
    """SIGKILL while curves.png was written: no curves.png, no kl_per_dim.png, the plot's
    temporary file; and a whole temporary checkpoint of an earlier interrupted write."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    (run_dir / "curves.png").rename(run_dir / ".curves.png.tmp.png")
    (run_dir / "kl_per_dim.png").unlink()
    shutil.copy(run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / ".last.pt.x1.tmp")
    return run_dir


def _temporary(run_dir):
    return sorted(p.name for p in run_dir.rglob(".*tmp*"))


@pytest.mark.parametrize(
    "route, code",
    [
        ("same command", 0),  # "nothing to do", as before, once repaired
        ("resume", 2),  # "already finished": refused, as before, once repaired
    ],
)
def test_a_finished_run_started_again_redraws_its_plots_and_cleans_up(
    tmp_path, finished, monkeypatch, capsys, route, code
):
    run_dir = _as_a_kill_while_plotting_left_it(tmp_path, finished)
    record = (run_dir / "history.json").read_bytes()
    checkpoints = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").glob("*.pt")}
    args = (
        (*CHEAP, f"hydra.run.dir={run_dir}") if route == "same command" else (f"resume={run_dir}",)
    )
    assert vae_train_in_process(monkeypatch, *args) == code
    assert (run_dir / "curves.png").stat().st_size > 0
    assert (run_dir / "kl_per_dim.png").stat().st_size > 0
    assert _temporary(run_dir) == []
    assert (run_dir / "history.json").read_bytes() == record  # the record is not rewritten
    assert {p.name: p.read_bytes() for p in (run_dir / "checkpoints").glob("*.pt")} == checkpoints
    said = capsys.readouterr().out
    assert "was finished but a kill had interrupted its end: removed the temporary files" in said
    assert "drew curves.png and kl_per_dim.png" in said


def test_a_finished_run_with_nothing_missing_is_left_alone(tmp_path, finished, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run_dir.rglob("*") if p.is_file()}
    assert vae_train_in_process(monkeypatch, *CHEAP, f"hydra.run.dir={run_dir}") == 0
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run_dir.rglob("*") if p.is_file()}
    assert after == before
    assert "kill had interrupted" not in capsys.readouterr().out


def test_resume_removes_a_temporary_checkpoint_an_interrupted_write_left(
    tmp_path, finished, monkeypatch
):
    # killed during the final evaluation, after a kill in an earlier checkpoint write: resume=
    # finishes the run and, like the same command, leaves no temporary checkpoint behind
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    history = json.loads((run_dir / "history.json").read_text())
    history.update(status="running", final=None, finished_at=None)
    (run_dir / "history.json").write_text(json.dumps(history))
    shutil.copy(run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / ".last.pt.x2.tmp")
    assert vae_train_in_process(monkeypatch, f"resume={run_dir}") == 0
    assert _temporary(run_dir) == []
    assert json.loads((run_dir / "history.json").read_text())["status"] == "completed"
