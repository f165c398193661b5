"""The KL weight (effective beta) as a pure function of the epoch.

Every schedule is a function of the 1-based epoch number and the config alone, so evaluation
cannot advance it and a resumed run recomputes it exactly. Within an epoch the weight is constant,
as in the seed's loop.
"""

from __future__ import annotations

import math
from typing import assert_never

from vae_runner.config.schema import (
    AnnealingConfig,
    ConstantAnnealingConfig,
    CyclicalAnnealingConfig,
    LinearAnnealingConfig,
    SigmoidAnnealingConfig,
)


def linear(epoch: int, beta: float, warmup_epochs: int) -> float:
    """The seed's `min(1, epoch / warmup_epochs) * beta`; warmup 0 means the full beta at once."""
    if warmup_epochs == 0:
        return beta
    return min(1.0, epoch / warmup_epochs) * beta


def cyclical(epoch: int, beta: float, epochs: int, cycles: int, ratio: float) -> float:
    """Fu et al. 2019, eq. (5), with t the 1-based epoch, T = `epochs`, M = `cycles`, R = `ratio`:

    tau = mod(t - 1, ceil(T / M)) / (T / M); the weight is beta * tau / R while tau <= R, then
    beta. A cycle lasts ceil(T / M) whole epochs and each one starts at 0; when M does not
    divide T the last cycle is cut short by the end of the run.
    """
    period = -(-epochs // cycles)  # ceil(T / M) in integers: no float rounding at the edges
    tau = ((epoch - 1) % period) / (epochs / cycles)
    return beta * min(1.0, tau / ratio)


def sigmoid(epoch: int, beta: float, midpoint: float, steepness: float) -> float:
    """Bowman et al. 2016: a logistic ramp centred on `midpoint` (the weight there is beta / 2)."""
    # Written so that exp() never overflows: a far-off midpoint (or a steep one) gives a weight
    # of 0 or beta, never an OverflowError mid-run.
    t = steepness * (epoch - midpoint)
    if t >= 0:
        return beta / (1.0 + math.exp(-t))
    return beta * math.exp(t) / (1.0 + math.exp(t))


def kl_weight(annealing: AnnealingConfig, epoch: int, beta: float, epochs: int) -> float:
    """The KL weight used in the training loss during `epoch` (1-based) of a run of `epochs`."""
    match annealing:
        case LinearAnnealingConfig():
            return linear(epoch, beta, annealing.warmup_epochs)
        case ConstantAnnealingConfig():
            return beta
        case CyclicalAnnealingConfig():
            return cyclical(epoch, beta, epochs, annealing.cycles, annealing.ratio)
        case SigmoidAnnealingConfig():
            return sigmoid(epoch, beta, annealing.midpoint, annealing.steepness)
        case _:
            assert_never(annealing)
