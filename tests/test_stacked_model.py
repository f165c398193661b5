"""The stacked model (training/stacked_model.py): M plain models as one, with nothing mixed.

Oracle: each member's plain model, run alone in float64 on the same inputs and noise; the stacked
model must give its outputs and gradients to rounding (1e-12 relative)."""

from __future__ import annotations

import math

import pytest
import torch

from vae_runner.training.model import MLPVAE, BernoulliLikelihood, ConvVAE, GaussianLikelihood
from vae_runner.training.stacked_model import (
    StackedConv2d,
    load_member_state_dict,
    member_state_dict,
    stack_models,
)

SHAPE = (1, 8, 8)


def plain_models(kind: str, members: int, likelihood=None):
    models = []
    for seed in range(members):
        torch.manual_seed(seed)
        lik = likelihood() if likelihood else BernoulliLikelihood()
        if kind == "mlp":
            model = MLPVAE(SHAPE, hidden_dim=16, latent_dim=3, likelihood=lik)
        else:
            model = ConvVAE(SHAPE, channels=4, hidden_dim=16, latent_dim=3, likelihood=lik)
        models.append(model.double())
    return models


def learned_gaussian():
    return GaussianLikelihood(0.5, learned=True)


@pytest.fixture(params=[False, True], ids=["conv looped", "conv grouped"])
def grouped(request, monkeypatch):
    monkeypatch.setattr(StackedConv2d, "grouped", request.param)
    from vae_runner.training import stacked_model

    monkeypatch.setattr(stacked_model.StackedConvTranspose2d, "grouped", request.param)
    return request.param


@pytest.mark.parametrize("kind", ["mlp", "conv"])
@pytest.mark.parametrize("likelihood", [None, learned_gaussian], ids=["bernoulli", "gaussian"])
def test_each_member_computes_what_its_plain_model_computes(kind, likelihood, grouped):
    members, batch = 3, 5
    models = plain_models(kind, members, likelihood)
    stacked = stack_models(plain_models(kind, members, likelihood))
    g = torch.Generator().manual_seed(7)
    x = torch.rand(members * batch, *SHAPE, generator=g, dtype=torch.float64)
    eps = torch.randn(members * batch, 3, generator=g, dtype=torch.float64)
    out, mu, logvar = stacked(x, eps)
    nll = stacked.likelihood.nll(out, x)
    nll.sum().backward()
    for m, model in enumerate(models):
        rows = slice(m * batch, (m + 1) * batch)
        o, u, v = model(x[rows], eps[rows])
        own = model.likelihood.nll(o, x[rows])
        own.sum().backward()
        torch.testing.assert_close(out[rows], o, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(mu[rows], u, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(logvar[rows], v, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(nll[rows], own, rtol=1e-12, atol=1e-12)
        for (name, p), (_, q) in zip(
            stacked.named_parameters(), model.named_parameters(), strict=True
        ):
            torch.testing.assert_close(p.grad[m], q.grad, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_a_member_state_is_the_plain_models_and_goes_back_in(kind):
    models = plain_models(kind, 3, learned_gaussian)
    stacked = stack_models(models)
    for m, model in enumerate(models):
        state = member_state_dict(stacked, m)
        assert list(state) == list(model.state_dict())
        for key, value in model.state_dict().items():
            assert torch.equal(state[key], value)
    other = plain_models(kind, 5, learned_gaussian)[4]
    load_member_state_dict(stacked, 1, other.state_dict())
    for key, value in other.state_dict().items():
        assert torch.equal(member_state_dict(stacked, 1)[key], value)
        assert torch.equal(member_state_dict(stacked, 0)[key], models[0].state_dict()[key])


def test_a_state_that_does_not_fit_is_refused_naming_the_key():
    stacked = stack_models(plain_models("mlp", 2))
    state = member_state_dict(stacked, 0)
    state["fc1.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"size mismatch for fc1.weight: \(3, 3\)"):
        load_member_state_dict(stacked, 0, state)
    del state["fc1.weight"]
    with pytest.raises(ValueError, match=r"missing keys \['fc1.weight'\]"):
        load_member_state_dict(stacked, 0, state)


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_a_non_finite_member_leaks_into_no_other(kind, grouped):
    members, batch = 3, 4
    stacked = stack_models(plain_models(kind, members))
    with torch.no_grad():
        for p in stacked.parameters():
            p[1].fill_(math.nan)
    x = torch.rand(members * batch, *SHAPE, dtype=torch.float64)
    eps = torch.randn(members * batch, 3, dtype=torch.float64)
    out, mu, _ = stacked(x, eps)
    stacked.likelihood.nll(out, x).sum().backward()
    rows = out.view(members, batch, -1)
    assert rows[1].isnan().all()
    assert (
        torch.isfinite(rows[[0, 2]]).all()
        and torch.isfinite(mu.view(members, batch, -1)[[0, 2]]).all()
    )
    for p in stacked.parameters():
        assert torch.isfinite(p.grad[[0, 2]]).all()
