"""Whether a run folder's `checkpoints/last.pt` belongs to the run its `history.json` records.

A run carries on from `last.pt` (resume=DIR, or the same command started again in DIR). A
checkpoint copied in from another run, or a record whose checkpoint was deleted, would otherwise
continue another run's weights under this run's record, or start afresh over finished epochs.
Both are refused before anything is loaded or written: one line naming what differs.

Pure dictionaries: no torch, so the check runs before the model is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vae_runner.config.errors import ConfigError
from vae_runner.config.overrides import changeable
from vae_runner.config.typed import config_differences

LAST_FILE = "checkpoints/last.pt"


def recorded_epochs(history: dict[str, Any] | None) -> list[int]:
    """The finished epochs a record holds (none for a missing or damaged record)."""
    epochs = (history or {}).get("epoch")
    return [int(e) for e in epochs] if isinstance(epochs, list) else []


def missing_checkpoint_line(run_dir: Path, history: dict[str, Any] | None) -> str | None:
    """The refusal for a record of finished epochs without its checkpoint, else None."""
    done = recorded_epochs(history)
    if not done:
        return None
    return (
        f"{run_dir}/history.json records {len(done)} finished "
        f"epoch{'' if len(done) == 1 else 's'} but {LAST_FILE} is "
        "missing, so the run cannot carry on and is not started afresh over them: restore "
        "the checkpoint, or start a new run in another folder"
    )


def check_checkpoint(run_dir: Path, checkpoint: dict[str, Any], history: dict[str, Any] | None):
    """Raise ConfigError when `checkpoint` (the folder's last.pt) does not continue the run
    that `history` (the folder's history.json) records. A checkpoint without a readable record
    is refused too: a run writes its record before its first checkpoint, so only a deleted or
    damaged history.json leaves one, and then nothing says whose the checkpoint is."""
    fix = "nothing was loaded or changed; put back the run's own checkpoint, or use another folder"
    if not history or not isinstance(history.get("config"), dict) or not history["config"]:
        raise ConfigError(
            f"{run_dir}: history.json is missing or damaged, so {LAST_FILE} cannot be checked "
            f"against the run recorded there: {fix.replace('checkpoint', 'history.json')}"
        )
    refusal = f"{run_dir}: {LAST_FILE} does not belong to the run recorded there"
    differences = config_differences(
        checkpoint.get("config") or {},
        history["config"],
        (f"in {LAST_FILE}", "in history.json"),
        # what resume= may change: an extension (a larger patience) writes its record before
        # its first new checkpoint
        kept=lambda key: not changeable(key),
    )
    if differences:
        raise ConfigError(f"{refusal} ({'; '.join(differences[:3])}): {fix}")
    theirs = checkpoint.get("history") or {}
    started, recorded = theirs.get("started_at"), history.get("started_at")
    if started and recorded and started != recorded:
        raise ConfigError(
            f"{refusal} (another run of the same settings, started {started}, not {recorded}): "
            f"{fix}"
        )
    done, at = recorded_epochs(history), int(checkpoint.get("epoch", 0))
    # The checkpoint is written first: a kill between the two files leaves it one epoch ahead.
    last = done[-1] if done else 0
    if at not in (last, last + 1):
        raise ConfigError(
            f"{refusal} (it holds epoch {at}, history.json records {len(done)} epochs): {fix}"
        )
    # The epochs both hold must be the same epochs, with the same losses (exact: both are
    # the same Python floats, one through JSON, one through torch.save).
    n = min(len(recorded_epochs(theirs)), len(done))
    if recorded_epochs(theirs)[:n] != done[:n]:
        raise ConfigError(f"{refusal} (its epochs are not the record's {done}): {fix}")
    for key in ("train_loss", "test_loss"):
        if (theirs.get(key) or [])[:n] != (history.get(key) or [])[:n]:
            raise ConfigError(f"{refusal} (its {key} per epoch differs from the record's): {fix}")
