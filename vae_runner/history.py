"""The run's record, `history.json`: the seed's curves plus the other monitored series.

Shape: one list per quantity at the top level, one entry per epoch (the seed's `history` dict),
plus run-level fields. The file is replaced atomically after every epoch (temporary file, fsync,
rename), so a crash or a kill at any instant leaves either the old or the new complete file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

HISTORY_FILE = "history.json"
SCHEMA_VERSION = 1

# Per-epoch series, in the order they appear in the file. The first six are the seed's.
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


def new_history(config: dict, meta: dict[str, Any]) -> dict[str, Any]:
    """An empty record for a run that is about to start."""
    history: dict[str, Any] = {key: [] for key in EPOCH_KEYS}
    history.update(
        schema_version=SCHEMA_VERSION,
        status="running",
        best_epoch=None,
        best_test_loss=None,
        initial_test_loss=None,
        final=None,
        warnings=[],
        **meta,
        config=config,
    )
    return history


def append_epoch(history: dict[str, Any], values: dict[str, float]) -> None:
    missing = set(EPOCH_KEYS) - set(values)
    if missing:
        raise KeyError(f"epoch record lacks {sorted(missing)}")
    for key in EPOCH_KEYS:
        history[key].append(values[key])
    test_loss = values["test_loss"]
    if math.isfinite(test_loss) and (
        history["best_test_loss"] is None or test_loss < history["best_test_loss"]
    ):
        history["best_epoch"] = values["epoch"]
        history["best_test_loss"] = test_loss


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN or Infinity: a non-finite number is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes 0600 files; a run's files get the permissions any new file would get.
FILE_MODE = 0o666 & ~_current_umask()


def replace_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through a temporary file in the same folder, fsync, then rename over it,
    so that `path` is always either the old or the new complete file, whatever happens."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that `path` is always either the old or the new complete file."""
    text = json.dumps(_finite_or_none(payload), indent=2, allow_nan=False) + "\n"
    replace_atomically(path, lambda f: f.write(text.encode()))


def save_history(run_dir: Path, history: dict[str, Any]) -> None:
    write_json_atomic(Path(run_dir) / HISTORY_FILE, history)


def load_history(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / HISTORY_FILE).read_text())
