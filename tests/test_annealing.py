"""KL-weight schedules: end points, shape, and the seed's own sequence."""

from __future__ import annotations

import math

import pytest

from vae_runner.config.schema import (
    ConstantAnnealingConfig,
    CyclicalAnnealingConfig,
    LinearAnnealingConfig,
    SigmoidAnnealingConfig,
)
from vae_runner.training.annealing import cyclical, kl_weight, linear, sigmoid


def test_linear_is_the_seed_sequence_for_warmup_10():
    beta = 1.0
    seed = [min(1.0, epoch / 10) * beta for epoch in range(1, 16)]
    ours = [linear(epoch, beta, 10) for epoch in range(1, 16)]
    assert ours == seed
    assert ours[:3] == [0.1, 0.2, 0.3] and ours[9:] == [1.0] * 6


def test_linear_scales_with_beta_and_warmup_zero_is_constant():
    assert linear(5, 4.0, 10) == 2.0
    assert linear(1, 0.5, 0) == 0.5


def test_constant_is_beta_every_epoch():
    cfg = ConstantAnnealingConfig(name="constant", free_bits=0.0)
    assert [kl_weight(cfg, e, 0.7, 20) for e in (1, 10, 20)] == [0.7, 0.7, 0.7]


def fu_eq5(t: int, T: int, M: int, R: float, beta: float) -> float:
    """Fu et al. 2019, eq. (5), written out as the paper prints it (a reference for the tests)."""
    tau = math.fmod(t - 1, math.ceil(T / M)) / (T / M)
    f = tau / R if tau <= R else 1.0
    return beta * f


def test_cyclical_is_the_issues_example_every_cycle_restarting_at_zero():
    # annealing=cyclical annealing.cycles=4 annealing.ratio=0.5 epochs=10: ceil(10/4) = 3-epoch
    # cycles, tau = 0, 0.4, 0.8 of T/M = 2.5 (main recorded [0, .8, 1, .4, 1, 0, .8, 1, .4, 1])
    weights = [cyclical(e, 1.0, 10, 4, 0.5) for e in range(1, 11)]
    assert weights == pytest.approx([0, 0.8, 1, 0, 0.8, 1, 0, 0.8, 1, 0], abs=1e-12)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.8, 1.0])
def test_cyclical_follows_eq5_for_every_epochs_and_cycles(ratio):
    # Every (T, M) up to 60 epochs, most of them not dividing evenly (the default 50/4 is one).
    for T in range(1, 61):
        for M in range(1, T + 1):
            ours = [cyclical(t, 2.0, T, M, ratio) for t in range(1, T + 1)]
            assert ours == pytest.approx([fu_eq5(t, T, M, ratio, 2.0) for t in range(1, T + 1)])


def test_cyclical_starts_each_cycle_at_zero_rises_for_ratio_then_holds():
    # 20 epochs, 4 cycles: period 5 epochs, rising over the first half (2.5 epochs)
    weights = [cyclical(e, 1.0, 20, 4, 0.5) for e in range(1, 21)]
    assert weights[0] == 0.0 and weights[5] == 0.0 and weights[10] == 0.0 and weights[15] == 0.0
    assert weights[1] == pytest.approx(0.4) and weights[2] == pytest.approx(0.8)
    assert weights[3] == 1.0 and weights[4] == 1.0
    assert weights[:5] == weights[5:10] == weights[10:15] == weights[15:]
    assert max(weights) == 1.0 and min(weights) == 0.0


def test_cyclical_with_ratio_one_rises_through_the_whole_cycle():
    weights = [cyclical(e, 2.0, 10, 1, 1.0) for e in range(1, 11)]
    assert weights == pytest.approx([2.0 * k / 10 for k in range(10)])


def test_sigmoid_is_half_beta_at_the_midpoint_and_monotone():
    assert sigmoid(10, 2.0, 10, 1.0) == pytest.approx(1.0)
    weights = [sigmoid(e, 1.0, 10, 1.0) for e in range(1, 41)]
    assert all(a < b for a, b in zip(weights[:-1], weights[1:], strict=True))
    assert weights[0] < 0.001 and weights[-1] > 0.999999


@pytest.mark.parametrize(
    "cfg, expected",
    [
        (
            LinearAnnealingConfig(name="linear", free_bits=0.0, warmup_epochs=4),
            [0.25, 0.5, 0.75, 1.0, 1.0],
        ),
        (ConstantAnnealingConfig(name="constant", free_bits=0.0), [1.0] * 5),
        (
            CyclicalAnnealingConfig(name="cyclical", free_bits=0.0, cycles=1, ratio=1.0),
            [0, 0.2, 0.4, 0.6, 0.8],
        ),
        (
            SigmoidAnnealingConfig(name="sigmoid", free_bits=0.0, midpoint=3, steepness=100.0),
            [0.0, 0.0, 0.5, 1.0, 1.0],
        ),
    ],
)
def test_dispatch_by_config(cfg, expected):
    got = [kl_weight(cfg, e, 1.0, 5) for e in range(1, 6)]
    assert got == pytest.approx(expected, abs=1e-12)


def test_schedule_is_a_pure_function_of_the_epoch():
    cfg = LinearAnnealingConfig(name="linear", free_bits=0.0, warmup_epochs=10)
    first = [kl_weight(cfg, e, 1.0, 30) for e in range(1, 31)]
    again = [kl_weight(cfg, e, 1.0, 30) for e in reversed(range(1, 31))][::-1]
    assert first == again


def test_sigmoid_never_overflows_far_from_its_midpoint():
    # annealing=sigmoid annealing.midpoint=1000 used to raise OverflowError in epoch 1
    assert sigmoid(1, 1.0, 1000, 1.0) == 0.0
    assert sigmoid(1000, 2.0, 1, 1.0) == 2.0
    assert sigmoid(1, 1.0, 1e6, 50.0) == 0.0
