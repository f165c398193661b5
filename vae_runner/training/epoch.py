"""One training pass and one test pass of a stack of M members (M = 1 for a single run): the
hot path.

Hot-path rules (see DESIGN.md): the data set is one tensor on the device and a batch is a gather
of shuffled indices; sums are kept as [M] tensors and read once per epoch (one host sync), never
with `.item()` per batch. Activations carry the members folded into the batch axis, member-major
([M*B, ...]: training/stacked_model.py); every sum here is per member.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from vae_runner.data.images import ImageData
from vae_runner.training.losses import elbo_terms, member_losses
from vae_runner.training.metrics import active_units_burda
from vae_runner.training.noise import Noise
from vae_runner.training.stacked_optim import clip_grad_norms


class TrainSums(NamedTuple):
    """One member's per-sample means over one training epoch."""

    recon: float
    kl: float
    grad_norm: float  # mean over batches of the pre-clip global norm
    grad_norm_max: float
    first_bad_batch: int | None  # 1-based batch whose loss or gradient norm was non-finite


class TestSums(NamedTuple):
    recon: float
    kl: float
    kl_by_dim: list[float]  # test-set mean KL of each latent dimension
    active_burda: int  # dimensions whose posterior mean varies over the test set (Burda et al.)


class EpochSums:
    """An epoch's per-member sums ([M] each) and its batch counter, on the device: every step
    adds into them in place (no host sync, and the buffers a CUDA graph needs), and they are
    read once, at the epoch's end."""

    def __init__(self, members: int, device: torch.device, dtype: torch.dtype) -> None:
        def zeros(*shape):
            return torch.zeros(*shape, device=device, dtype=dtype)

        self.recon, self.kl, self.norm_sum, self.norm_max = (zeros(members) for _ in range(4))
        # Divergence is found without a host sync: each member's first non-finite batch (1-based)
        self.first_bad = zeros(members)
        self.batch = zeros(())  # batches done this epoch

    def zero(self) -> None:
        for t in (self.recon, self.kl, self.norm_sum, self.norm_max, self.first_bad, self.batch):
            t.zero_()

    @torch.no_grad()
    def add(self, recon, kl_by_dim, norms, losses) -> None:
        """One batch: recon [M, B], kl_by_dim [M, B, D], norms and losses [M]."""
        self.batch += 1
        self.recon += recon.sum(dim=1)
        self.kl += kl_by_dim.sum(dim=(1, 2))
        self.norm_sum += norms
        torch.maximum(self.norm_max, norms, out=self.norm_max)
        bad = ~(torch.isfinite(losses) & torch.isfinite(norms)) & (self.first_bad == 0)
        self.first_bad.copy_(torch.where(bad, self.batch, self.first_bad))

    def read(self, n: int, batches: int) -> list[TrainSums]:
        """The per-member means over `n` images and `batches` batches: the epoch's host sync."""
        rows = torch.stack([self.recon, self.kl, self.norm_sum, self.norm_max, self.first_bad])
        return [
            TrainSums(r / n, k / n, total / batches, top, int(bad) or None)
            for r, k, total, top, bad in rows.T.tolist()
        ]


def train_step(
    engine, index, binarize, active, mask, kl_weights, sums: EpochSums, model, step, autocast
) -> None:
    """One training step of `engine`'s members (training/engine.py) on the batch `index` ([M, B]
    rows of the training set): gather and binarise, draw z, forward, loss, backward, clip each
    member's norm, `step()` the optimizer, add to `sums`. The eager epoch and the step a CUDA
    graph captures (training/graphed_step.py) are both this function. `mask` ([M] bools, or
    None: all train) zeroes the loss of a member sitting out; `autocast()` makes the context."""
    m, b = index.shape
    latent = engine.model.latent_dim
    dtype = engine.dtype
    x = engine.data.train_batch(index.flatten(), binarize).to(dtype)
    eps = draw_noise(engine.noise, active, (b, latent), x)
    engine.optimizer.zero_grad()
    with autocast():
        out, mu, logvar = model(x, eps)
        nll = engine.model.likelihood.nll(out.to(dtype), x)
        terms = elbo_terms(nll, mu.to(dtype), logvar.to(dtype))
        recon = terms.recon.view(m, b)
        kl_by_dim = terms.kl_by_dim.view(m, b, latent)
        reduction = engine.cfgs[0].reduction.name
        losses = member_losses(recon, kl_by_dim, kl_weights, reduction, engine._free_bits)
    total = losses if mask is None else torch.where(mask, losses, 0.0)
    total.sum().backward()
    norms = clip_grad_norms(engine._params, engine._max_norms)
    step()
    sums.add(recon, kl_by_dim, norms, losses)


def draw_noise(noise: Noise, active: list[bool], shape: tuple[int, ...], like: torch.Tensor):
    """[M * shape[0], ...]: each active member's own draws; zeros for a member that sits this
    epoch out (its generator does not move)."""
    parts = [
        noise.normal(m, shape, like)
        if on
        else torch.zeros(shape, dtype=like.dtype, device=like.device)
        for m, on in enumerate(active)
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


# On a GPU the test pass is bound by kernel launches, not arithmetic: it takes the images in
# chunks of about GPU_EVAL_VALUES image values per member (1337 Fashion-MNIST images, not 128).
# The chunk depends only on the images (never on the stack's size or the free memory), so a
# member draws the same z alone, in any stack, and under vae-eval; on the CPU, batch_size, as
# ever (its numbers unchanged).
GPU_EVAL_VALUES = 1 << 20


def eval_chunk(images: torch.Tensor, batch_size: int) -> int:
    """Images per chunk of the one-sample test (or validation) pass on `images`' device."""
    if images.device.type != "cuda":
        return batch_size
    return max(batch_size, GPU_EVAL_VALUES // max(1, math.prod(images.shape[1:])))


@torch.no_grad()
def evaluate(
    model, data: ImageData, batch_size: int, noise: Noise, active: list[bool], split: str = "test"
) -> list[TestSums]:
    """The test set (or the validation split) under each member in eval mode; z is sampled with
    the member's own noise, as in the seed."""
    model.eval()
    members = len(active)
    images = data.test if split == "test" else data.val
    device = images.device
    dtype = next(model.parameters()).dtype
    latent = model.latent_dim
    recon_sum = torch.zeros(members, device=device, dtype=dtype)
    kl_by_dim_sum = torch.zeros(members, latent, device=device, dtype=dtype)
    # float64 sums of the posterior means: their variance over the test set (active units)
    mu_sum = torch.zeros(members, latent, device=device, dtype=torch.float64)
    mu_sq_sum = torch.zeros_like(mu_sum)
    chunk = eval_chunk(images, batch_size)
    for start in range(0, len(images), chunk):
        x = data.to_float(images[start : start + chunk]).to(dtype)
        b = len(x)
        if members > 1:  # every member sees the same images
            x = x.repeat(members, *[1] * (x.dim() - 1))
        eps = draw_noise(noise, active, (b, latent), x)
        out, mu, logvar = model(x, eps)
        terms = elbo_terms(model.likelihood.nll(out, x), mu, logvar)
        recon_sum += terms.recon.view(members, b).sum(dim=1)
        kl_by_dim_sum += terms.kl_by_dim.view(members, b, latent).sum(dim=1)
        mu64 = mu.double().view(members, b, latent)
        mu_sum += mu64.sum(dim=1)
        mu_sq_sum += mu64.pow(2).sum(dim=1)
    n = len(images)
    recon = (recon_sum / n).tolist()
    kl_by_dim = (kl_by_dim_sum / n).tolist()
    sums = []
    for m in range(members):
        active_burda, _ = active_units_burda(mu_sum[m], mu_sq_sum[m], n)
        sums.append(TestSums(recon[m], math.fsum(kl_by_dim[m]), kl_by_dim[m], active_burda))
    return sums
