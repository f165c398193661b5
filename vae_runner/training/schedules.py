"""The schedules that depend on a run's length, and what they do when a run is extended.

`scheduler=cosine` with `t_max: null` and `annealing=cyclical` are laid out over the run's
`epochs`. That length is fixed when the run starts, as its `schedule_horizon` (history.json):
`resume=DIR epochs=N` adds epochs after the plan, it never re-plans the epochs already trained
or the ones still ahead. Past its horizon a cosine schedule holds the lr of its last planned
epoch (never its end point `eta_min`, 0 by default: an epoch at lr 0 trains nothing), and the
cyclical KL weight goes on with cycles of the same length.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vae_runner.config.schema import (
    Config,
    CosineConfig,
    CyclicalAnnealingConfig,
    LinearAnnealingConfig,
)
from vae_runner.training.annealing import kl_weight

# "Far below beta": the KL weight never reaches half of it, i.e. the ramp's middle lies past
# the last epoch. The run then trains a different objective than the beta it reports.
FAR_BELOW = 0.5


def cosine_lr(epoch: int, lr: float, eta_min: float, t_max: int) -> float:
    """The lr of 1-based `epoch`: cosine annealing from `lr` towards `eta_min` over `t_max`
    epochs (torch's closed form at step epoch - 1), then the lr of epoch `t_max`, held."""
    step = min(epoch, t_max) - 1
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * step / t_max)) / 2


def cosine_t_max(cfg: CosineConfig, horizon: int) -> int:
    return cfg.t_max if cfg.t_max is not None else horizon


def epoch_lr(cfg: Config, horizon: int):
    """The lr as a pure function of the epoch, for the schedulers that are one (cosine), else
    None. Set at the start of every epoch, it cannot depend on a checkpoint's scheduler state."""
    if not isinstance(cfg.scheduler, CosineConfig):
        return None
    t_max, eta_min = cosine_t_max(cfg.scheduler, horizon), cfg.scheduler.eta_min
    return lambda epoch: cosine_lr(epoch, cfg.lr, eta_min, t_max)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def planned_horizon(checkpoint: dict[str, Any]) -> int:
    """The epochs the checkpointed run was started with. A run recorded before the horizon was
    (no `schedule_horizon`): the epochs of its last attempt, the best that is known."""
    recorded = checkpoint["history"].get("schedule_horizon")
    return int(recorded) if recorded else int(checkpoint["config"]["epochs"])


def extension_line(cfg: Config, horizon: int, before: int) -> str | None:
    """One line for a resume that changes `epochs` (from `before` to cfg.epochs): what each
    schedule that depends on the run's length does. None when `epochs` is unchanged."""
    if cfg.epochs == before:
        return None
    verb = "Extended" if cfg.epochs > before else "Shortened"
    said = []
    if isinstance(cfg.scheduler, CosineConfig):
        t_max = cosine_t_max(cfg.scheduler, horizon)
        if cfg.scheduler.t_max is None:
            end = f"the end of the {t_max} epochs the run started with"
        else:
            end = f"the end of scheduler.t_max={t_max}"
        if t_max < cfg.epochs:
            held = cosine_lr(t_max, cfg.lr, cfg.scheduler.eta_min, t_max)
            said.append(f"scheduler=cosine holds lr {held:.2e}, its lr at epoch {t_max} ({end})")
        else:
            said.append(f"scheduler=cosine keeps its plan ({end})")
    if isinstance(cfg.annealing, CyclicalAnnealingConfig):
        period = -(-horizon // cfg.annealing.cycles)
        said.append(
            f"annealing=cyclical keeps its period of {period} epochs "
            f"(cycles={cfg.annealing.cycles} over the {horizon} epochs the run started with)"
        )
    what = "; ".join(said) or "no schedule depends on epochs"
    return f"{verb} from {before} to {cfg.epochs} epochs: {what}"


def kl_far_below_warning(cfg: Config, horizon: int) -> str | None:
    """A ramp that leaves the KL weight below FAR_BELOW * beta for the whole run."""
    if cfg.beta <= 0 or isinstance(cfg.annealing, CyclicalAnnealingConfig):
        # (a cycle of 2 epochs or more reaches beta / 2; shorter ones have their own warning)
        return None
    # Linear and sigmoid ramps only rise: the last epoch's weight is the largest (computing
    # every epoch's cost a million calls at epochs=1000000, in every job's build)
    last = kl_weight(cfg.annealing, cfg.epochs, cfg.beta, horizon)
    if last >= FAR_BELOW * cfg.beta:
        return None
    # (only a linear or a sigmoid ramp gets here: a constant weight is beta)
    key = "warmup_epochs" if isinstance(cfg.annealing, LinearAnnealingConfig) else "midpoint"
    value = getattr(cfg.annealing, key)
    return (
        f"annealing.{key}={value:g} puts the KL ramp's middle past the last epoch "
        f"(epochs={cfg.epochs}): the last epoch's KL weight is {last / cfg.beta:.2g} of "
        f"beta={cfg.beta:g}, so the whole run trains far below the beta it reports; "
        f"use a smaller annealing.{key} or more epochs"
    )
