"""When a sweep's answer may not hold: one sentence per reason, for sweep_summary.json's
`cautions` and the terminal.

- Still improving: when most completed jobs chose their last epoch as their best, the losses
  were still falling when the runs stopped. The ranking then says which setting learns fastest
  in that many epochs, not which one ends lowest.
- The KL weight never reached beta: a job whose annealing (linear warm-up, sigmoid) had not
  ramped up by its last epoch trained and was chosen on a weaker KL term than the one asked for.
  "Reached" means at least REACHED of beta: a sigmoid only approaches it.

Imports no torch.
"""

from __future__ import annotations

from typing import Any

from vae_runner.sweep.rundirs import Job
from vae_runner.sweep.settings import finite_number

REACHED = 0.99  # a KL weight within 1% of beta has reached it


def still_improving(rows: list[dict[str, Any]]) -> str | None:
    """Most completed jobs' best epoch is their last one (with more than one epoch run)."""
    completed = [r for r in rows if r["status"] == "completed" and (r.get("epochs_run") or 0) > 1]
    last = [r for r in completed if r.get("best_epoch") == r.get("epochs_run")]
    if not completed or 2 * len(last) <= len(completed):
        return None
    return (
        f"{len(last)} of {len(completed)} completed jobs had their best epoch at their last "
        f"(epoch {max(r['epochs_run'] for r in last)}): still improving at the end, so the "
        "ranking measures speed, not the end point; run longer (more epochs)."
    )


def kl_short_of_beta(jobs: list[Job]) -> str | None:
    """Jobs whose KL weight stayed below beta in every epoch they ran (of those that ran one)."""
    short, ran = [], 0
    for job in jobs:
        history = job.history or {}
        beta = (history.get("config") or {}).get("beta")
        weights = [w for w in history.get("kl_weight") or [] if finite_number(w)]
        if not (finite_number(beta) and beta > 0 and weights):
            continue  # no epoch finished, or a record without the series
        ran += 1
        if max(weights) < REACHED * beta:
            short.append((max(weights), beta))
    if not short:
        return None
    highest = max(w / b for w, b in short)
    betas = ", ".join(f"{b:g}" for b in sorted({b for _, b in short}))
    return (
        f"the KL weight never reached beta in {len(short)} of {ran} jobs (it rose to "
        f"{highest:.3g} × beta, beta={betas}): the annealing was still ramping up when they "
        "stopped, so they trained on a weaker KL term than asked for; run more epochs than the "
        "annealing's warm-up, or annealing=constant."
    )


def cautions(rows: list[dict[str, Any]], jobs: list[Job]) -> list[str]:
    """The sweep's cautions, each one sentence."""
    return [c for c in (still_improving(rows), kl_short_of_beta(jobs)) if c]
