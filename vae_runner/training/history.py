"""The run's record, `history.json`: the course's curves plus the other monitored series.

Shape: one list per quantity at the top level, one entry per epoch (the course loop's `history`),
plus run-level fields. The file is replaced atomically after every epoch (temporary file, fsync,
rename), so a crash or a kill at any instant leaves either the old or the new complete file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from vae_runner.files import write_json_atomic

HISTORY_FILE = "history.json"
SCHEMA_VERSION = 1

# Per-epoch series, in the order they appear in the file. The first six are the course loop's.
EPOCH_KEYS = (
    "train_loss",
    "train_recon",
    "train_kl",
    "test_loss",
    "test_recon",
    "test_kl",
    "epoch",
    "kl_weight",
    "lr",
    "grad_norm",
    "grad_norm_max",
    "active_units",
    "active_units_burda",
    "kl_by_dim",
    "recon_per_dim",
    "kl_per_dim",
    "epoch_seconds",
)


# With a validation split (data.val_fraction > 0), also these per-epoch series: the run chooses
# its best epoch (best.pt) and steps the plateau scheduler on val_loss, and reports the test loss.
VAL_KEYS = ("val_loss", "val_recon", "val_kl")


def epoch_keys(history: dict[str, Any]) -> tuple[str, ...]:
    """The per-epoch series this record holds."""
    return EPOCH_KEYS + (VAL_KEYS if "val_loss" in history else ())


def selected_on(history: dict[str, Any]) -> str:
    """The split the run chose its best epoch on: "val" or "test" (the course's loop)."""
    return "val" if "val_loss" in history else "test"


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


def save_history(run_dir: Path, history: dict[str, Any], in_place_if_full: bool = False) -> None:
    """`in_place_if_full`: for how a run ended, which a full disk must not leave `running`."""
    write_json_atomic(Path(run_dir) / HISTORY_FILE, history, in_place_if_full)


def load_history(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / HISTORY_FILE).read_text())


def failure_record(config: dict | None, message: str, kind: str) -> dict[str, Any]:
    """The record of a job that failed before its first epoch (kind: config or error), so that a
    sweep's summary lists it with its reason and its exit code."""
    history = new_history(config or {}, meta={})
    history.update(status="failed", error={"kind": kind, "message": message})
    return history
