"""Posterior-collapse warning: raised once per run, on the terminal and in history.json."""

from __future__ import annotations

from typing import Any

COLLAPSE_KL_NATS = 0.5  # a test KL below this (total over latent dims, per sample) ...
COLLAPSE_EPOCHS = 3  # ... for this many epochs in a row counts as collapse

REMEDIES = (
    "KL annealing (annealing=linear annealing.warmup_epochs=20, or annealing=cyclical), "
    "free bits (annealing.free_bits=0.5), or a smaller beta (beta=0.5)"
)


def collapse_warning(history: dict[str, Any]) -> str | None:
    """A message when the latest epoch shows posterior collapse, else None."""
    epoch = history["epoch"][-1]
    if history["active_units"][-1] == 0 and history["active_units_burda"][-1] == 0:
        # both measures agree; either alone can be 0 early on (an untrained encoder's means
        # barely vary, so Burda's count starts low while the KLs are still large)
        what = "no latent dimension is active (0 by the KL threshold and 0 by Burda et al.)"
    else:
        recent = history["test_kl"][-COLLAPSE_EPOCHS:]
        if len(recent) < COLLAPSE_EPOCHS or any(k is None or k >= COLLAPSE_KL_NATS for k in recent):
            return None
        what = f"the test KL stayed below {COLLAPSE_KL_NATS} nats for {COLLAPSE_EPOCHS} epochs"
    return (
        f"posterior collapse at epoch {epoch}: {what}, so z carries almost no information "
        f"about x. Remedies: {REMEDIES}"
    )
