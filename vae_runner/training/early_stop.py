"""Early stopping (`early_stop.patience`, `early_stop.min_delta`) as pure functions of the record.

The patience counter is never a mutable attribute of the loop: it is recomputed from the
history's per-epoch losses on the split the run selects on (record.selected_on: validation
when there is one, else test). A resumed or restarted run therefore stops exactly where the
uninterrupted run would, and the same record always gives the same answer.

An epoch improves when its loss is lower than the reference by more than `min_delta` nats; the
reference is the loss of the last epoch that improved (as Keras' and Lightning's EarlyStopping
count), so many small decreases that add up to less than `min_delta` never reset the counter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from vae_runner.config.schema import EarlyStopConfig
from vae_runner.record import selected_on


def epochs_without_improvement(losses: Sequence[float], min_delta: float) -> int:
    """How many of the last epochs did not improve; the first epoch improves on nothing."""
    since, reference = 0, math.inf
    for loss in losses:
        if loss < reference - min_delta:
            reference, since = loss, 0
        else:
            since += 1
    return since


def _losses(history: dict[str, Any]) -> list[float]:
    return history[f"{selected_on(history)}_loss"]


def stops_early(history: dict[str, Any], rule: EarlyStopConfig) -> bool:
    """Whether `rule` ends the run before another epoch, given the epochs `history` holds."""
    if not rule.patience:
        return False
    return epochs_without_improvement(_losses(history), rule.min_delta) >= rule.patience


def why(history: dict[str, Any], rule: EarlyStopConfig) -> str:
    """Why `rule` stops the run, from the record: 'no improvement of the val loss larger than
    0.1 nats in the 5 epochs since epoch 7 (early_stop.patience=5)'."""
    since = epochs_without_improvement(_losses(history), rule.min_delta)
    last_improved = history["epoch"][-1 - since]
    epochs = f"{since} epoch" + ("s" if since != 1 else "")
    return (
        f"no improvement of the {selected_on(history)} loss larger than {rule.min_delta:g} nats "
        f"in the {epochs} since epoch {last_improved} (early_stop.patience={rule.patience})"
    )


def mark_stopped(history: dict[str, Any]) -> None:
    """Record that the run stops early after its last epoch (the run still ends completed)."""
    history["stopped_early"] = True
    history["stopped_epoch"] = history["epoch"][-1]


def clear_stopped(history: dict[str, Any]) -> None:
    """A run that trains on (resumed with a larger patience) has not stopped, yet."""
    history["stopped_early"] = False
    history["stopped_epoch"] = None
