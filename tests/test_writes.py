"""The files a run writes after every epoch: history.json's text made epoch by epoch, files
replaced atomically with few system calls, and last.pt / best.pt."""

from __future__ import annotations

import json
import math
import os
import random

import pytest
import torch

from vae_runner.files import finite_or_none, replace_atomically
from vae_runner.record import EPOCH_KEYS
from vae_runner.training.checkpoint import (
    BEST,
    CHECKPOINT_DIR,
    LAST,
    checkpoint_bytes,
    load_checkpoint,
    save_checkpoint,
)
from vae_runner.training.history import (
    FULL_DISK_ROOM,
    HistoryText,
    history_text,
    new_history,
    with_epoch,
)


def epoch_values(epoch: int, rng: random.Random, latent: int = 3) -> dict:
    values = {key: rng.uniform(-50.0, 50.0) for key in EPOCH_KEYS}
    values.update(epoch=epoch, kl_by_dim=[rng.random() for _ in range(latent)])
    return values


def test_history_text_kept_epoch_by_epoch_is_the_text_made_afresh():
    rng = random.Random(0)
    history = new_history({"lr": 1e-3, "data": {"val_fraction": 0.0}}, meta={"device": "cpu"})
    kept = HistoryText()
    for epoch in range(1, 8):
        values = epoch_values(epoch, rng)
        if epoch == 4:
            values["grad_norm"] = math.nan  # a diverging epoch: null in the file
        history = with_epoch(history, values)
        history["status"] = "completed" if epoch == 7 else "running"
        text = kept(history)
        assert text == history_text(history)
        assert json.loads(text) == finite_or_none(history)
    assert text.endswith("\n}\n" + FULL_DISK_ROOM)  # room for a failed record (below)
    lines = text.rstrip().splitlines()
    # one line per key, the value on it: a curve reads as a row
    assert lines[0] == "{" and lines[-1] == "}" and len(lines) == len(history) + 2
    row = next(line for line in lines if line.startswith('  "train_loss": '))
    assert json.loads(row.split(": ", 1)[1].rstrip(",")) == history["train_loss"]
    assert json.loads(text)["grad_norm"][3] is None


def test_a_curve_shorter_than_what_was_kept_is_encoded_again():
    rng = random.Random(1)
    kept = HistoryText()
    long = new_history({}, meta={})
    for epoch in range(1, 6):
        long = with_epoch(long, epoch_values(epoch, rng))
    kept(long)
    short = with_epoch(new_history({}, meta={}), epoch_values(1, rng))  # another record
    assert kept(short) == history_text(short)
    assert json.loads(kept(short))["train_loss"] == short["train_loss"]


def test_a_file_replaced_atomically_has_a_new_files_mode_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "history.json"
    path.write_text("old")
    replace_atomically(path, lambda f: f.write(b"new"))
    mask = os.umask(0)
    os.umask(mask)
    assert path.read_text() == "new"
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["history.json"]


def test_a_failed_write_removes_its_temporary_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"old")

    def fails(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match=f"cannot write {path}: No space left on device"):
        replace_atomically(path, fails)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def payload(epoch: int) -> dict:
    return dict(
        epoch=epoch,
        model={"w": torch.full((2, 3), float(epoch))},
        optimizer={"state": {}, "param_groups": []},
        scheduler=None,
        rng={
            "shuffle": torch.zeros(4, dtype=torch.uint8),
            "noise": torch.ones(4, dtype=torch.uint8),
        },
        history=json.dumps({"epoch": list(range(1, epoch + 1))}),
        config={"lr": 1e-3},
    )


def test_the_first_checkpoint_makes_its_folder_and_best_is_last_under_a_second_name(tmp_path):
    folder = tmp_path / CHECKPOINT_DIR
    save_checkpoint(tmp_path, payload(1), is_best=True)
    assert (folder / LAST).samefile(folder / BEST)
    # bytes made beforehand (a stack's main thread) are what is written
    save_checkpoint(tmp_path, payload(2), is_best=False, data=checkpoint_bytes(payload(2)))
    assert load_checkpoint(folder / LAST)["epoch"] == 2
    assert load_checkpoint(folder / BEST)["epoch"] == 1  # the best stays where it was
    assert torch.equal(load_checkpoint(folder / LAST)["model"]["w"], torch.full((2, 3), 2.0))
    save_checkpoint(tmp_path, payload(3), is_best=True)
    assert (folder / LAST).samefile(folder / BEST)
    assert sorted(p.name for p in folder.iterdir()) == [BEST, LAST]  # no temporaries left


def test_a_checkpoint_without_its_run_folder_is_a_write_error_naming_it(tmp_path):
    from vae_runner.files import WriteError

    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'gone' / CHECKPOINT_DIR}"):
        save_checkpoint(tmp_path / "gone", payload(1), is_best=False)


def test_a_failed_record_fits_over_a_running_one_on_a_full_disk(tmp_path):
    """On a full disk the record of how the run ended is written compactly in the blocks of the
    file it replaces (files.write_json_atomic); history.json keeps room for it even after one
    epoch, with the longest error line a record holds."""
    from vae_runner.files import json_value

    running = with_epoch(new_history({"lr": 1e-3}, meta={}), epoch_values(1, random.Random(2)))
    text = history_text(running)
    failed = {
        **running,
        "status": "failed",
        "finished_at": "2026-12-05T07:30:00+00:00",
        "error": {"kind": "error", "message": "x" * 300},
    }
    compact = json.dumps(finite_or_none(failed), separators=(",", ":")) + "\n"
    assert len(compact.encode()) <= len(text.encode())
    assert json.loads(text) == running and json_value(1.5) == "1.5"


def test_a_stack_holds_at_most_in_flight_runs_files_and_writes_every_run(
    tmp_path, monkeypatch, split_stack
):
    import io

    from rich.console import Console

    from vae_runner.training import epoch_writes
    from vae_runner.training.runner import MemberRun, run_stack

    from helpers import typed_config

    monkeypatch.setattr(epoch_writes, "IN_FLIGHT", 1)
    cfgs = [
        typed_config("epochs=2", "eval.iw_samples=0", "pictures=false", f"seed={s}")
        for s in range(3)
    ]
    members = [MemberRun(cfg, tmp_path / str(i)) for i, cfg in enumerate(cfgs)]
    results = run_stack(members, Console(file=io.StringIO()))
    for i, result in enumerate(results):
        assert result["status"] == "completed" and result["epoch"] == [1, 2]
        on_disk = json.loads((tmp_path / str(i) / "history.json").read_text())
        assert on_disk["epoch"] == [1, 2] and on_disk["config"]["seed"] == i
        assert load_checkpoint(tmp_path / str(i) / CHECKPOINT_DIR / LAST)["epoch"] == 2


def test_a_sweep_whose_trials_are_checked_elsewhere_turns_the_collector_back_on(monkeypatch):
    """hydra/sweeper=optuna checks no job in the sweep's process (its launcher may run them in
    others): the sweep's checks end vae-train's import phase (vae_runner/heap.py) themselves."""
    from vae_runner import heap
    from vae_runner.cli import checks

    from helpers import compose_config

    calls = []
    monkeypatch.setattr(heap, "freeze_long_lived", lambda: calls.append("freeze"))
    monkeypatch.setattr(checks, "check_writable", lambda *args: None)
    cfg = compose_config("hydra/sweeper=optuna", hydra=True)
    checks.check_multirun(cfg)
    assert calls == ["freeze"]
    calls.clear()
    checks.check_multirun(compose_config(hydra=True))  # the checked sweeper: at its jobs' checks
    assert calls == []


def test_best_pts_link_of_an_earlier_version_counts_as_a_temporary_file():
    from vae_runner.files import is_temporary

    assert is_temporary(".best.pt.link") and is_temporary(".best.pt.4242-7.tmp")
    assert not is_temporary("best.pt") and not is_temporary(".best.pt")
