"""The ELBO's parts, and the one explicit switch between the two batch reductions.

`elbo_terms` returns per-sample reconstruction NLL and per-sample, per-dimension KL, so that every
reported number is per sample (and comparable across reductions and batch sizes) whatever the
training loss does with them.

Reductions (the seed's "Loss Normalization"):
- `sum`:  loss = sum_i sum_d recon_id + w * sum_i sum_j kl_ij      (the seed's)
- `mean`: loss = (1/B) * [sum_i sum_d recon_id + w * sum_i sum_j kl_ij]
Both reduce the two terms the same way, so the reconstruction/KL balance (the effective beta) is
identical; `sum` only scales the gradient by the batch size B, which matters for the learning rate,
for SGD and for gradient clipping. A per-element mean of the reconstruction (dividing it by D as
well, as `F.mse_loss` does by default) would instead weaken it by D against the KL.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


class ElboTerms(NamedTuple):
    recon: torch.Tensor  # [B]: Bernoulli negative log-likelihood per sample, nats
    kl_by_dim: torch.Tensor  # [B, latent_dim]: KL(q(z|x) || N(0, I)) per sample and dimension

    @property
    def kl(self) -> torch.Tensor:  # [B]
        return self.kl_by_dim.sum(dim=1)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample binary cross-entropy, summed over the data dimensions.

    Equal to the seed's `F.binary_cross_entropy(sigmoid(logits), x)`, computed from logits so it
    stays finite (a diverging run then shows up as a non-finite loss, not a device assert).
    On the CPU it goes through `_BernoulliNLL`, which gives the same numbers 4x faster.
    """
    fast = logits.dtype in (torch.float32, torch.float64) and x.dtype == logits.dtype
    if logits.device.type == "cpu" and fast and logits.shape == x.shape:
        return _BernoulliNLL.apply(logits.flatten(start_dim=1), x.flatten(start_dim=1))
    nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return nll.flatten(start_dim=1).sum(dim=1)


class _BernoulliNLL(torch.autograd.Function):
    """`binary_cross_entropy_with_logits(l, x).sum(1)` from vectorised CPU kernels only.

    torch's own CPU kernel goes through log1p, which is not vectorised: on a 128 x 784 batch its
    forward took as long as a layer's matrix product (benchmarks/RESULTS.md).
    softplus(l) = relu(l) - log(sigmoid(|l|)) needs only exp and log, which are; the
    gradient is sigmoid(l) - x. Where exp(-|l|) < 6e-8 the log rounds to 0: an error below
    6e-8 nats per pixel, against a loss of hundreds of nats per image. Used for float32/64
    inputs of one shape (torch's own function handles the rest); once differentiable.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits, x)
        nll = logits.clamp_min(0).addcmul_(logits, x, value=-1)
        return nll.sub_(torch.sigmoid(logits.abs()).log_()).sum(dim=1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        logits, x = ctx.saved_tensors
        grad = grad.unsqueeze(1)
        grad_logits = torch.sigmoid(logits).sub_(x).mul_(grad) if ctx.needs_input_grad[0] else None
        grad_x = logits.neg().mul_(grad) if ctx.needs_input_grad[1] else None
        return grad_logits, grad_x


def gaussian_kl_by_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per element, the seed's closed form."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


def gaussian_nll(mean: torch.Tensor, x: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample -log N(x | mean, sigma^2 I), summed over the data dimensions (nats).

    0.5 * sum_d [((x - mean) / sigma)^2 + log(2 pi sigma^2)]: a squared error whose scale and
    constant make it a likelihood, so Gaussian and Bernoulli runs report the same kind of number.
    """
    z = (x - mean) * torch.exp(-log_sigma)
    per_element = 0.5 * z.pow(2) + log_sigma + 0.5 * math.log(2 * math.pi)
    return per_element.flatten(start_dim=1).sum(dim=1)


def elbo_terms(recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> ElboTerms:
    """Bundle a per-sample reconstruction NLL with the posterior's KL per dimension."""
    return ElboTerms(recon=recon, kl_by_dim=gaussian_kl_by_dim(mu, logvar))


def member_losses(
    recon: torch.Tensor,
    kl_by_dim: torch.Tensor,
    kl_weight: torch.Tensor,
    reduction: str,
    free_bits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each member's training loss ([M]) of a stack (M = 1: one run): recon + kl_weight * KL
    under `reduction`. recon: [M, B]; kl_by_dim: [M, B, L]; kl_weight, free_bits: [M]
    (free_bits None: off for every member).

    With free bits (Kingma et al. 2016), each latent dimension's KL, averaged over the batch,
    counts as at least `free_bits` nats: below that floor it adds a constant and no gradient,
    so the encoder is not pushed to collapse that dimension. Only the loss changes; the
    reported KL stays the true one.
    """
    kl = kl_by_dim.sum(dim=2)
    per_sample = recon + kl_weight.unsqueeze(1) * kl
    loss = per_sample.sum(dim=1) if reduction == "sum" else per_sample.mean(dim=1)
    if free_bits is None:
        return loss
    floored = kl_by_dim.mean(dim=1).clamp(min=free_bits.unsqueeze(1)).sum(dim=1)
    batch = recon.shape[1]
    kl_total = floored * batch if reduction == "sum" else floored
    recon_total = recon.sum(dim=1) if reduction == "sum" else recon.mean(dim=1)
    return torch.where(free_bits > 0, recon_total + kl_weight * kl_total, loss)


def training_loss(
    terms: ElboTerms, kl_weight: float, reduction: str, free_bits: float = 0.0
) -> torch.Tensor:
    """One run's scalar loss from its batch's terms: `member_losses` of a stack of one."""
    like = dict(dtype=terms.recon.dtype, device=terms.recon.device)
    weight = torch.tensor([kl_weight], **like)
    floor = torch.tensor([free_bits], **like) if free_bits > 0 else None
    return member_losses(terms.recon[None], terms.kl_by_dim[None], weight, reduction, floor)[0]
