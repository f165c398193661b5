"""Self-describing checkpoints: written atomically, loaded with weights_only=True.

`checkpoints/last.pt` is rewritten after every finished epoch and holds everything a bit-exact
resume needs: model, optimizer and scheduler state, the epoch, every random-number-generator
state the run uses (taken after the test pass, which samples z too), the history so far and the
config. `checkpoints/best.pt` is a hard link to the same bytes when the test loss improved.
Only plain containers, numbers, strings and tensors go in, so `torch.load(weights_only=True)`
reads them and a crafted file can never run code.

The history goes in as history.json's own text (a str), which load_checkpoint reads back into
a dict: torch.save calls a Python function for every object it pickles, and a history's
thousands of numbers took a quarter of its time (0.4 ms of 1.5 ms for 50 epochs).
A checkpoint that holds the history as a dict (written before) loads as it always did.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from vae_runner.config.errors import ConfigError
from vae_runner.files import WriteError, replace_atomically, temporary_name, writing

CHECKPOINT_DIR = "checkpoints"
LAST, BEST = "last.pt", "best.pt"
FORMAT_VERSION = 1


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def checkpoint_bytes(payload: dict[str, Any]) -> io.BytesIO:
    """The bytes of last.pt for `payload`: torch.save's, in memory. Serialised in memory first:
    torch's zip writer turns a full disk into "unexpected pos" (a RuntimeError), while a plain
    write of the bytes raises the OSError that says so."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **payload}, buffer)
    return buffer


def save_checkpoint(
    run_dir: Path, payload: dict[str, Any], is_best: bool, data: io.BytesIO | None = None
) -> Path:
    """Write last.pt (and best.pt when `is_best`); each file is always complete. `data`:
    checkpoint_bytes(payload), when the caller made it already (a stack makes its runs' bytes
    in one thread and writes them in others: training/epoch_writes.py)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    last = folder / LAST
    buffer = checkpoint_bytes(payload) if data is None else data
    try:
        replace_atomically(last, lambda f: f.write(buffer.getbuffer()))
    except WriteError as err:
        if err.errno != errno.ENOENT or folder.exists():
            raise
        with writing(folder):  # the first checkpoint of the run (or its folder was removed)
            folder.mkdir()
        replace_atomically(last, lambda f: f.write(buffer.getbuffer()))
    if is_best:
        # A second name for the same bytes, swapped in atomically: no second write.
        best = folder / BEST
        tmp = temporary_name(os.fspath(best))
        with writing(best):
            try:
                os.link(last, tmp)
            except OSError:  # a file system without hard links
                replace_atomically(tmp, lambda f: f.write(last.read_bytes()))
            try:
                os.replace(tmp, best)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
    return last


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely, or raise CheckpointError with one clear line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    # torch.save writes a zip archive (older torch: a pickle, which starts with 0x80): bytes
    # that are neither are damage, not a refused object.
    with open(path, "rb") as f:
        start = f.read(1)
    if not zipfile.is_zipfile(path) and start != b"\x80":
        raise CheckpointError(
            f"{path} is not a usable checkpoint (truncated or corrupt: not a file torch.save wrote)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's weights_only refusal: objects that could run code
        raise CheckpointError(
            f"{path} is refused: it holds Python objects besides tensors and plain containers, "
            "which could run code when loaded (vae-train writes none)"
        ) from None
    except Exception as err:  # truncated or corrupt
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} is not a usable checkpoint (truncated or corrupt: {reason[:200]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a vae-runner checkpoint of format {FORMAT_VERSION}")
    if isinstance(payload.get("history"), str):  # history.json's text (see the docstring)
        try:
            payload["history"] = json.loads(payload["history"])
        except ValueError as err:
            raise CheckpointError(
                f"{path} is not a usable checkpoint: its `history` is not JSON ({err})"
            ) from None
    problem = _malformed(payload)
    if problem:
        raise CheckpointError(f"{path} is not a usable checkpoint: {problem}")
    return payload


# What a resume reads, and the type each must have (scheduler may be None).
FIELDS: dict[str, type | tuple[type, ...]] = {
    "epoch": int,
    "model": dict,
    "optimizer": dict,
    "scheduler": (dict, type(None)),
    "rng": dict,
    "history": dict,
    "config": dict,
}


def _malformed(payload: dict[str, Any]) -> str | None:
    """What is missing or wrongly typed in a checkpoint that loaded safely, or None."""
    for key, kind in FIELDS.items():
        if key not in payload:
            return f"it has no `{key}`"
        value = payload[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"its `{key}` is a {type(value).__name__}"
    if payload["epoch"] < 1:
        return f"its `epoch` is {payload['epoch']}"
    if not all(isinstance(t, torch.Tensor) for t in payload["model"].values()):
        return "its `model` holds values that are not tensors"
    rng = payload["rng"]
    if not isinstance(rng.get("shuffle"), torch.Tensor):
        return "its `rng` has no `shuffle` state"
    # the run's own noise generator (training/noise.py); a checkpoint from before it, torch's
    # global generator, whose stream a CPU run takes up
    if not any(isinstance(rng.get(key), torch.Tensor) for key in ("noise", "torch")):
        return "its `rng` has no `noise` state"
    return None
