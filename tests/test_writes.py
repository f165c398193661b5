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
from vae_runner.training.history import HistoryText, history_text, new_history, with_epoch


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
    lines = text.splitlines()
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
