"""A full disk, wherever it strikes: one line naming the file, a record that says `failed`,
and nothing half-written. In-process, a full disk is /dev/full behind every new file the run
writes; the end-to-end test fills a real (tmpfs) file system."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from vae_runner import files
from vae_runner.files import WriteError, is_temporary, rewrite_in_place, write_json_atomic
from vae_runner.training import run_record as runner_module
from vae_runner.training.checkpoint import load_checkpoint
from vae_runner.training.runner import run

from helpers import run_cli, typed_config, vae_train_in_process

SHORT = ("data=digits", "eval.iw_samples=0", "plot_every=0")


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"), width=120)


class FullDisk:
    """Once `fill()` is called, every new file of vae_runner.files lands on /dev/full (ENOSPC
    on its first flush), as on a disk with no free block; existing files can still be
    rewritten in their own blocks, as on a real full disk."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch

    def fill(self) -> None:
        def create(path):
            return files.temporary_name(path), os.open("/dev/full", os.O_WRONLY)

        self.monkeypatch.setattr(files, "_create", create)


@pytest.fixture
def full_disk(monkeypatch) -> FullDisk:
    return FullDisk(monkeypatch)


def history_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "history.json").read_text())


def leftovers(run_dir: Path) -> list[str]:
    return [str(p) for p in run_dir.rglob("*") if is_temporary(p.name) or p.stat().st_size == 0]


def test_a_full_disk_at_a_checkpoint_names_the_file_and_records_failed(
    tmp_path, monkeypatch, full_disk
):
    real = runner_module.save_checkpoint

    def disk_fills_before_epoch_2(run_dir, payload, is_best, *data):
        if payload["epoch"] == 2:
            full_disk.fill()
        return real(run_dir, payload, is_best, *data)

    monkeypatch.setattr(runner_module, "save_checkpoint", disk_fills_before_epoch_2)
    run_dir = tmp_path / "run"
    with pytest.raises(WriteError) as failed:
        run(typed_config(*SHORT, "epochs=3"), run_dir, quiet())
    # torch's own writer says "unexpected pos ..."; the OSError of the bytes names the disk
    assert failed.value.strerror == (
        f"cannot write {run_dir}/checkpoints/last.pt: No space left on device"
    )
    history = history_of(run_dir)  # rewritten in its own blocks: the disk had no new ones
    assert history["status"] == "failed" and history["epoch"] == [1]
    assert history["error"]["message"] == failed.value.strerror
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 1
    assert leftovers(run_dir) == []


def test_a_full_disk_during_the_final_images_leaves_no_empty_png(tmp_path, monkeypatch, full_disk):
    import torchvision.utils

    def save_image_on_a_full_disk(grid, fp, format=None):
        Path(fp).write_bytes(b"")  # PIL has opened the file when the disk refuses its bytes
        full_disk.fill()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torchvision.utils, "save_image", save_image_on_a_full_disk)
    run_dir = tmp_path / "run"
    with pytest.raises(WriteError, match="reconstructions.png: No space left on device"):
        run(typed_config(*SHORT, "epochs=2"), run_dir, quiet())
    history = history_of(run_dir)
    assert history["status"] == "failed" and history["epoch"] == [1, 2]
    assert "reconstructions.png" in history["error"]["message"]
    assert not (run_dir / "reconstructions.png").exists()
    assert leftovers(run_dir) == []


def test_rewriting_in_place_takes_no_new_block(tmp_path):
    path = tmp_path / "history.json"
    write_json_atomic(path, {"status": "running", "epoch": list(range(100))})
    assert rewrite_in_place(path, '{"status":"failed"}\n')
    assert json.loads(path.read_text()) == {"status": "failed"}  # padded with spaces
    blocks = os.stat(path).st_blocks * 512
    assert not rewrite_in_place(path, "[" + "1," * blocks + "1]")  # would need more room
    assert json.loads(path.read_text()) == {"status": "failed"}


def test_a_full_disk_from_the_start_is_one_line_and_leaves_no_record(tmp_path, monkeypatch):
    """Hydra writes .hydra/config.yaml before any job: on a full disk it is left empty."""
    import hydra.core.utils

    def save_config_on_a_full_disk(cfg, filename, output_dir):
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / filename).write_text("")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hydra.core.utils, "_save_config", save_config_on_a_full_disk)
    run_dir = tmp_path / "run"
    args = (*SHORT, "epochs=1", f"hydra.run.dir={run_dir}")
    assert vae_train_in_process(monkeypatch, *args) == 1
    assert not run_dir.exists()  # no empty config.yaml to pass for a run, no lock


# --------------------------------------------------------------------------- a real full disk
def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return mounted.returncode == 0


@pytest.mark.e2e
def test_a_real_full_disk_from_the_start_and_mid_run(tmp_path):
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "1400k"):
        pytest.skip("needs permission to mount a tmpfs (root)")
    try:
        (disk / "fill").write_bytes(b"\0" * (1400 * 1024 - 4096))  # one block left
        start = run_cli(*SHORT, "epochs=1", f"hydra.run.dir={disk}/a", cwd=tmp_path)
        assert start.returncode == 1, start.stderr
        assert start.stderr.strip().splitlines() == [
            f"Error: cannot write the run record in {disk}/a: No space left on device; "
            "nothing was run"
        ]
        assert not (disk / "a").exists()

        (disk / "fill").unlink()  # room for .hydra and the first checkpoint, not the second
        mid = run_cli(*SHORT, "epochs=2", f"hydra.run.dir={disk}/b", cwd=tmp_path)
        assert mid.returncode == 1, mid.stderr
        assert "Traceback" not in mid.stderr
        assert f"cannot write {disk}/b/checkpoints/last.pt: No space left on device" in mid.stderr
        history = history_of(disk / "b")
        assert history["status"] == "failed" and history["epoch"] == [1]
        assert leftovers(disk / "b") == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_stack_whose_files_fail_records_every_run_failed_at_its_last_whole_epoch(
    tmp_path, monkeypatch, split_stack
):
    """A stack writes its runs' files at once (in two parts: members 0-1 and 2, each where
    it trains): a write that fails (here member 1's last.pt of epoch 2) ends the stack; that
    run's record stays at epoch 1 (history.json never ahead of last.pt), the others keep what
    they wrote whole, and every run records `failed`."""
    from vae_runner.training.runner import MemberRun, run_stack

    real = runner_module.save_checkpoint

    def refused_for_member_1_at_epoch_2(run_dir, payload, is_best, *data):
        if payload["epoch"] == 2 and Path(run_dir).name == "1":
            raise WriteError(errno.ENOSPC, f"cannot write {run_dir}/checkpoints/last.pt: full")
        return real(run_dir, payload, is_best, *data)

    monkeypatch.setattr(runner_module, "save_checkpoint", refused_for_member_1_at_epoch_2)
    cfgs = [typed_config(*SHORT, "epochs=4", f"seed={s}") for s in range(3)]
    members = [MemberRun(cfg, tmp_path / str(i)) for i, cfg in enumerate(cfgs)]
    results = run_stack(members, quiet())
    assert all(isinstance(r, WriteError) for r in results)
    refused = history_of(tmp_path / "1")
    assert refused["status"] == "failed" and refused["epoch"] == [1]
    assert load_checkpoint(tmp_path / "1" / "checkpoints" / "last.pt")["epoch"] == 1
    for other in ("0", "2"):  # their epoch 2 was written whole, beside member 1's
        record = history_of(tmp_path / other)
        saved = load_checkpoint(tmp_path / other / "checkpoints" / "last.pt")["epoch"]
        assert record["status"] == "failed" and record["epoch"] == list(range(1, saved + 1))
