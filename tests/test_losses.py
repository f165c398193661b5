"""The ELBO terms against the seed's formulas, and what each reduction does to the gradient."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vae_runner.training.losses import (
    bernoulli_nll,
    elbo_terms,
    gaussian_kl_by_dim,
    gaussian_nll,
    training_loss,
)


def fixed_batch(batch: int = 6, data_dim: int = 12, latent: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, data_dim, generator=g) * 3
    x = torch.rand(batch, data_dim, generator=g)  # grey levels, as the seed's MNIST
    mu = torch.randn(batch, latent, generator=g)
    logvar = torch.randn(batch, latent, generator=g) * 0.5
    return logits, x, mu, logvar


def seed_terms(logits, x, mu, logvar):
    """The seed's lines, verbatim: BCE on the sigmoid output, KL in closed form, both summed."""
    recon = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return recon, kl


def test_terms_equal_the_seed_formulas():
    logits, x, mu, logvar = fixed_batch()
    terms = elbo_terms(bernoulli_nll(logits, x), mu, logvar)
    recon, kl = seed_terms(logits, x, mu, logvar)
    assert terms.recon.shape == (6,) and terms.kl_by_dim.shape == (6, 4)
    torch.testing.assert_close(terms.recon.sum(), recon, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(terms.kl.sum(), kl, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0, 4.0])
def test_sum_reduction_is_the_seed_loss(beta):
    logits, x, mu, logvar = fixed_batch()
    recon, kl = seed_terms(logits, x, mu, logvar)
    loss = training_loss(elbo_terms(bernoulli_nll(logits, x), mu, logvar), beta, "sum")
    torch.testing.assert_close(loss, recon + beta * kl, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_mean_reduction_divides_both_terms_by_the_batch(beta):
    logits, x, mu, logvar = fixed_batch(batch=6)
    recon, kl = seed_terms(logits, x, mu, logvar)
    loss = training_loss(elbo_terms(bernoulli_nll(logits, x), mu, logvar), beta, "mean")
    torch.testing.assert_close(loss, (recon + beta * kl) / 6, rtol=1e-5, atol=1e-4)


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    zeros = torch.zeros(3, 5)
    assert torch.equal(gaussian_kl_by_dim(zeros, zeros), zeros)
    assert (gaussian_kl_by_dim(torch.ones(3, 5), torch.full((3, 5), -1.0)) > 0).all()


def _param_grads(reduction: str, copies: int, beta: float = 1.0):
    """Gradients of two scalar 'parameters' (one scales the decoder logits, one the posterior
    means) for the fixed batch repeated `copies` times."""
    logits, x, mu, logvar = fixed_batch()
    w_decoder = torch.ones((), requires_grad=True)
    w_encoder = torch.ones((), requires_grad=True)

    def rep(t):
        return t.repeat(copies, 1)

    terms = elbo_terms(
        bernoulli_nll(rep(logits) * w_decoder, rep(x)), rep(mu) * w_encoder, rep(logvar)
    )
    training_loss(terms, beta, reduction).backward()
    return w_decoder.grad, w_encoder.grad


def test_sum_gradient_grows_with_the_batch_and_mean_does_not():
    """README claim: under `sum` the gradient scales with the batch size B; `mean` is invariant."""
    dec_1, enc_1 = _param_grads("sum", 1)
    dec_4, enc_4 = _param_grads("sum", 4)
    torch.testing.assert_close(dec_4, 4 * dec_1)
    torch.testing.assert_close(enc_4, 4 * enc_1)
    mdec_1, menc_1 = _param_grads("mean", 1)
    mdec_4, menc_4 = _param_grads("mean", 4)
    torch.testing.assert_close(mdec_4, mdec_1)
    torch.testing.assert_close(menc_4, menc_1)


def test_both_reductions_keep_the_recon_kl_balance():
    """The seed's 'effective KL weight moves with batch size' holds only for mixed reductions:
    `sum` and `mean` differ by the same factor B on both terms."""
    for copies in (1, 4):
        dec_sum, enc_sum = _param_grads("sum", copies, beta=0.5)
        dec_mean, enc_mean = _param_grads("mean", copies, beta=0.5)
        b = 6 * copies
        torch.testing.assert_close(dec_mean * b, dec_sum)
        torch.testing.assert_close(enc_mean * b, enc_sum)
        torch.testing.assert_close(dec_sum / enc_sum, dec_mean / enc_mean)
    # a per-element mean of the reconstruction (F.*(reduction="mean")) would shrink it by D:
    logits, x, mu, logvar = fixed_batch()
    per_element = F.binary_cross_entropy_with_logits(logits, x, reduction="mean")
    terms = elbo_terms(bernoulli_nll(logits, x), mu, logvar)
    torch.testing.assert_close(per_element * x.shape[1], terms.recon.mean())


def test_gaussian_nll_is_the_normal_log_density():
    g = torch.Generator().manual_seed(1)
    mean, x = torch.rand(4, 10, generator=g), torch.rand(4, 10, generator=g)
    for sigma in (0.1, 1.0, 2.5):
        log_sigma = torch.tensor(math.log(sigma))
        expected = -torch.distributions.Normal(mean, sigma).log_prob(x).sum(dim=1)
        torch.testing.assert_close(gaussian_nll(mean, x, log_sigma), expected)
    # with sigma = 1 it is half the summed squared error plus a constant per dimension
    half_sse = 0.5 * (x - mean).pow(2).sum(dim=1) + 10 * 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(gaussian_nll(mean, x, torch.tensor(0.0)), half_sse)


@pytest.mark.parametrize("scale", [1.0, 10.0, 100.0])
def test_fast_cpu_bernoulli_nll_equals_torch_in_value_and_gradient(scale):
    """The CPU path (_BernoulliNLL) against torch's binary_cross_entropy_with_logits."""
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(8, 1, 6, 6, generator=g, dtype=torch.float64) * scale).requires_grad_()
    x = torch.rand(8, 1, 6, 6, generator=g, dtype=torch.float64).requires_grad_()
    weights = torch.rand(8, generator=g, dtype=torch.float64)  # a non-uniform upstream gradient
    ours = bernoulli_nll(logits, x)
    assert type(ours.grad_fn).__name__ == "_BernoulliNLLBackward"  # the fast path was taken
    torch_s = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    torch.testing.assert_close(ours, torch_s, rtol=1e-12, atol=1e-9)
    ours_grads = torch.autograd.grad((ours * weights).sum(), (logits, x))
    torch_grads = torch.autograd.grad((torch_s * weights).sum(), (logits, x))
    for mine, theirs in zip(ours_grads, torch_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(bernoulli_nll, (logits[:2].detach().requires_grad_(), x[:2]))


def test_fast_cpu_bernoulli_nll_in_float32_stays_finite_and_close():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(128, 784, generator=g) * 30
    logits[0, :4] = torch.tensor([-1e4, 1e4, 88.0, -88.0])  # exp over/underflow territory
    x = torch.rand(128, 784, generator=g)
    ours = bernoulli_nll(logits.requires_grad_(), x)
    assert type(ours.grad_fn).__name__ == "_BernoulliNLLBackward"
    ours = ours.detach()
    reference = F.binary_cross_entropy_with_logits(
        logits.double(), x.double(), reduction="none"
    ).sum(1)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=1e-3)


def test_inputs_the_fast_path_does_not_take_go_to_torch():
    """bf16 logits (torch upcasts) and mismatched shapes (torch refuses) are torch's."""
    g = torch.Generator().manual_seed(3)
    logits, x = torch.randn(4, 10, generator=g), torch.rand(4, 10, generator=g)
    half = bernoulli_nll(logits.bfloat16().requires_grad_(), x)
    assert type(half.grad_fn).__name__ == "SumBackward1" and half.dtype == torch.float32
    with pytest.raises(ValueError, match="same as input size"):
        bernoulli_nll(logits, x[:, :1])
