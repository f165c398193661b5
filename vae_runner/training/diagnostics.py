"""Posterior-collapse warning: on the evidence of collapse only, once each time a run falls
into it, on the terminal and in history.json, naming the job and only the remedies it lacks."""

from __future__ import annotations

from typing import Any

COLLAPSE_KL_NATS = 0.5  # a test KL below this (total over latent dims, per sample) ...
COLLAPSE_EPOCHS = 3  # ... for this many epochs in a row, with few active units, is collapse
FEW_ACTIVE = 0.1  # "few": at most this share of the latent dimensions (and at least 1)


def _latent_dim(history: dict[str, Any]) -> int:
    by_dim = [k for k in history.get("kl_by_dim") or [] if k]
    if by_dim:
        return len(by_dim[-1])
    return int(((history.get("config") or {}).get("model") or {}).get("latent_dim") or 20)


def collapsed_at(history: dict[str, Any], i: int) -> str | None:
    """What shows posterior collapse at the i-th recorded epoch, or None when nothing does.
    A low KL alone is not collapse (with 20 active units it is a small, spread-out KL)."""
    active, burda = history["active_units"][i], history["active_units_burda"][i]
    if active == 0 and burda == 0:
        # both measures agree; either alone can be 0 early on (an untrained encoder's means
        # barely vary, so Burda's count starts low while the KLs are still large)
        return "no latent dimension is active (0 by the KL threshold and 0 by Burda et al.)"
    latent = _latent_dim(history)
    few = max(1, int(FEW_ACTIVE * latent))
    start = i - COLLAPSE_EPOCHS + 1
    if start < 0:
        return None
    window = range(start, i + 1)
    kls = [history["test_kl"][j] for j in window]
    if any(k is None or k >= COLLAPSE_KL_NATS for k in kls):
        return None
    if any(history["active_units"][j] > few for j in window):
        return None
    return (
        f"the test KL stayed below {COLLAPSE_KL_NATS} nats for {COLLAPSE_EPOCHS} epochs with at "
        f"most {few} of {latent} latent dimensions active"
    )


def remedies(config: dict[str, Any]) -> list[str]:
    """The usual remedies the run does not use already."""
    annealing = config.get("annealing") or {}
    found = []
    if annealing.get("name") in (None, "constant"):
        found.append("KL annealing (annealing=linear annealing.warmup_epochs=20, or cyclical)")
    if not annealing.get("free_bits") and annealing.get("name") != "cyclical":  # it has none
        found.append("free bits (annealing.free_bits=0.5)")
    beta = config.get("beta")
    if beta is None or beta >= 1.0:
        found.append(f"a smaller beta (beta={0.5 * (beta or 1.0):g})")
    return found


def collapse_warning(history: dict[str, Any], job: str | None = None) -> str | None:
    """A message when the latest epoch falls into posterior collapse (it was not collapsed the
    epoch before), else None. `job`: which job of a sweep this is."""
    last = len(history["epoch"]) - 1
    what = collapsed_at(history, last)
    if what is None or (last > 0 and collapsed_at(history, last - 1)):
        return None
    where = f" in job {job}" if job else ""
    missing = remedies(history.get("config") or {})
    advice = (
        f"Remedies: {', '.join(missing)}"
        if missing
        else "The run already uses annealing, free bits and a beta below 1: try a smaller beta "
        "or a longer warm-up"
    )
    return (
        f"posterior collapse{where} at epoch {history['epoch'][last]}: {what}, so z carries "
        f"almost no information about x. {advice}"
    )
