"""Writing the run's record, `history.json`, as the run goes: a new record, one more epoch, the
record of a job that failed before its first epoch. Its file name, shape and reading it back are
vae_runner/record.py's (below the report layer, which reads records too).

The file is replaced atomically after every epoch (temporary file, fsync, rename), so a crash or
a kill at any instant leaves either the old or the new complete file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vae_runner.files import json_value, write_json_atomic
from vae_runner.record import (
    EPOCH_KEYS,
    HISTORY_FILE,
    SCHEMA_VERSION,
    VAL_KEYS,
    epoch_keys,
    selected_on,
)


def new_history(config: dict, meta: dict[str, Any]) -> dict[str, Any]:
    """An empty record for a run that is about to start."""
    with_val = bool((config.get("data") or {}).get("val_fraction"))
    history: dict[str, Any] = {key: [] for key in EPOCH_KEYS + (VAL_KEYS if with_val else ())}
    history.update(
        schema_version=SCHEMA_VERSION,
        status="running",
        selected_on="val" if with_val else "test",
        best_epoch=None,
        best_test_loss=None,  # with a validation split: the test loss at the best epoch
        **({"best_val_loss": None} if with_val else {}),
        initial_test_loss=None,
        stopped_early=False,  # early_stop.patience ended the run (still `completed`)
        stopped_epoch=None,  # then: its last epoch, the one the final evaluation uses
        final=None,
        warnings=[],
        **meta,
        config=config,
    )
    return history


def append_epoch(history: dict[str, Any], values: dict[str, float]) -> None:
    keys = epoch_keys(history)
    missing = set(keys) - set(values)
    if missing:
        raise KeyError(f"epoch record lacks {sorted(missing)}")
    for key in keys:
        history[key].append(values[key])
    split = selected_on(history)
    loss, best = values[f"{split}_loss"], history.get(f"best_{split}_loss")
    if math.isfinite(loss) and (best is None or loss < best):
        history["best_epoch"] = values["epoch"]
        history[f"best_{split}_loss"] = loss
        history["best_test_loss"] = values["test_loss"]


def with_epoch(history: dict[str, Any], values: dict[str, float]) -> dict[str, Any]:
    """A copy of `history` with one more epoch (the original is left as it was)."""
    updated = {**history, **{key: list(history[key]) for key in epoch_keys(history)}}
    append_epoch(updated, values)
    return updated


# Trailing spaces (valid JSON) at the end of history.json: on a full disk the record of how the
# run ended is written compactly over the file's own blocks (files.write_json_atomic), and it
# must fit there. Its error line (300 characters at most), its end time and status need about
# 400 bytes more than a running record; the compact form saves a byte per number, which a run
# of a few epochs has too few of.
FULL_DISK_ROOM = " " * 512 + "\n"


class HistoryText:
    """history.json's text: one key per line, its value on that line (the curves then read as
    rows). Written after every epoch of every run, it was the largest part of an epoch's
    writes that is not torch's: json's indented layout is pure Python, one line per number.

    A run's curves only grow (append_epoch), so each number is encoded once: the items of each
    curve are kept as text, and a later call encodes only the items added since. A curve
    shorter than what was kept (another record) is encoded again from its start."""

    def __init__(self) -> None:
        self._items: dict[str, list[str]] = {}

    def __call__(self, history: dict[str, Any]) -> str:
        lines, curves = [], epoch_keys(history)
        for key, value in history.items():
            if key in curves and isinstance(value, list):
                done = self._items.setdefault(key, [])
                if len(done) > len(value):
                    done.clear()
                done.extend(json_value(item) for item in value[len(done) :])
                lines.append(f"  {json_value(key)}: [{', '.join(done)}]")
            else:
                lines.append(f"  {json_value(key)}: {json_value(value)}")
        return "{\n" + ",\n".join(lines) + "\n}\n" + FULL_DISK_ROOM


def history_text(history: dict[str, Any]) -> str:
    """history.json's text for `history` (HistoryText's layout, nothing kept)."""
    return HistoryText()(history)


def save_history(
    run_dir: Path, history: dict[str, Any], in_place_if_full: bool = False, text: str | None = None
) -> None:
    """`in_place_if_full`: for how a run ended, which a full disk must not leave `running`.
    `text`: history_text(history) (or a HistoryText's), when the caller made it already (for
    the checkpoint too)."""
    text = history_text(history) if text is None else text
    write_json_atomic(Path(run_dir) / HISTORY_FILE, history, in_place_if_full, text)


def failure_record(config: dict | None, message: str, kind: str) -> dict[str, Any]:
    """The record of a job that failed before its first epoch (kind: config or error), so that a
    sweep's summary lists it with its reason and its exit code."""
    history = new_history(config or {}, meta={})
    history.update(status="failed", error={"kind": kind, "message": message})
    return history
