"""A run's record, `history.json`, as every reader sees it: its file name, its shape and reading
it back. Torch-free and below every layer that reads records (report, training, sweep, cli);
writing it during a run is training/history.py's.

Shape: one list per quantity at the top level, one entry per epoch (the course loop's `history`),
plus run-level fields. The file is replaced atomically after every epoch (temporary file, fsync,
rename), so a crash or a kill at any instant leaves either the old or the new complete file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
