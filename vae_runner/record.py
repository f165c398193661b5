"""A run's record, `history.json`, as every reader sees it: its file name, its shape and reading
it back. Torch-free and below every layer that reads records (report, training, sweep, cli);
writing it during a run is training/history.py's.

Shape: one list per quantity at the top level, one entry per epoch (the course loop's `history`),
plus run-level fields. The file is replaced atomically after every epoch (temporary file, fsync,
rename), so a crash or a kill at any instant leaves either the old or the new complete file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

HISTORY_FILE = "history.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class EpochRecord:
    """One epoch's measures: the one home of a per-epoch quantity. Its fields, in this order,
    are the history's per-epoch series (the first six are the course loop's); a new measure is
    a field here, its value in training/run_record.py, and its column where it is shown.
    The val_* series exist only with a validation split (data.val_fraction > 0): the run then
    chooses its best epoch (best.pt) and steps the plateau scheduler on val_loss, and reports
    the test loss."""

    train_loss: float
    train_recon: float
    train_kl: float
    test_loss: float
    test_recon: float
    test_kl: float
    epoch: int
    kl_weight: float
    lr: float
    grad_norm: float
    grad_norm_max: float
    active_units: int
    active_units_burda: int
    kl_by_dim: list[float]
    recon_per_dim: float
    kl_per_dim: float
    epoch_seconds: float
    val_loss: float | None = None
    val_recon: float | None = None
    val_kl: float | None = None

    def values(self) -> dict[str, Any]:
        """As the history holds it: one value per series (no val_* without a split)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.val_loss is None:
            for key in VAL_KEYS:
                del values[key]
        return values


VAL_KEYS = ("val_loss", "val_recon", "val_kl")
EPOCH_KEYS = tuple(f.name for f in fields(EpochRecord) if f.name not in VAL_KEYS)


def epoch_keys(history: dict[str, Any]) -> tuple[str, ...]:
    """The per-epoch series this record holds."""
    return EPOCH_KEYS + (VAL_KEYS if "val_loss" in history else ())


def selected_on(history: dict[str, Any]) -> str:
    """The split the run chose its best epoch on: "val" or "test" (the course's loop)."""
    return "val" if "val_loss" in history else "test"


def read_history(run_dir: Path) -> dict[str, Any] | None:
    """The folder's record, or None when it is absent, unreadable or not a record (whoever
    asks decides what that means: a failed job, nothing to check against, no status)."""
    try:
        history = json.loads((Path(run_dir) / HISTORY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return history if isinstance(history, dict) else None


def load_history(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / HISTORY_FILE).read_text())
