"""One training pass and one test pass over the data: the hot path.

Hot-path rules (see DESIGN.md): the data set is one tensor on the device and a batch is
`x[perm[i:i+b]]`; metrics are summed as tensors and read once per epoch (one host sync), never
with `.item()` per batch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from vae_runner.config.schema import Config
from vae_runner.data.images import ImageData, shuffled_batches
from vae_runner.training.losses import elbo_terms, training_loss
from vae_runner.training.metrics import active_units_burda


class TrainSums(NamedTuple):
    """Per-sample means over one training epoch, read from the device once."""

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


def train_epoch(
    model, data: ImageData, optimizer, cfg: Config, kl_w: float, generator, progress=None, stop=None
) -> TrainSums:
    model.train()
    device = data.train.device
    params = [p for p in model.parameters() if p.requires_grad]
    # clip_grad_norm_ returns the pre-clip norm, so monitoring is free. With clipping off, an
    # infinite max norm makes it a pure measurement (its clip factor is clamped to 1).
    max_norm = cfg.clip_norm if cfg.clip_norm is not None else math.inf
    recon_sum = torch.zeros((), device=device)
    kl_sum = torch.zeros((), device=device)
    norm_sum = torch.zeros((), device=device)
    norm_max = torch.zeros((), device=device)
    batches = shuffled_batches(len(data.train), cfg.batch_size, generator, device)
    # Divergence is found without a host sync: the first non-finite batch's number is kept on
    # the device and read with the other sums at the end of the epoch.
    batch_numbers = torch.arange(1, len(batches) + 1, device=device, dtype=torch.float32)
    first_bad = torch.zeros((), device=device)
    # bf16 autocast (device.precision): matrix products in bfloat16, weights and sums in fp32
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=cfg.device.precision == "bf16")
    for i, index in enumerate(batches):
        if stop is not None:
            stop.check()  # a requested stop ends the run here, at a batch boundary
        x = data.train_batch(index)
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out, mu, logvar = model(x)
            terms = elbo_terms(model.likelihood.nll(out.float(), x), mu.float(), logvar.float())
            loss = training_loss(terms, kl_w, cfg.reduction.name, cfg.annealing.free_bits)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm)
        optimizer.step()
        with torch.no_grad():
            recon_sum += terms.recon.sum()
            kl_sum += terms.kl.sum()
            norm_sum += norm
            norm_max = torch.maximum(norm_max, norm)
            bad = ~(torch.isfinite(loss) & torch.isfinite(norm)) & (first_bad == 0)
            first_bad = torch.where(bad, batch_numbers[i], first_bad)
        if progress is not None:
            progress.advance()
    n = len(data.train)
    sums = torch.stack([recon_sum, kl_sum, norm_sum, norm_max, first_bad]).tolist()
    recon, kl, norm_total, norm_top, bad_batch = sums
    return TrainSums(recon / n, kl / n, norm_total / len(batches), norm_top, int(bad_batch) or None)


@torch.no_grad()
def evaluate(model, data: ImageData, batch_size: int, split: str = "test") -> TestSums:
    """The test set (or the validation split) under the model in eval mode; z is sampled, as
    in the seed."""
    model.eval()
    images = data.test if split == "test" else data.val
    device = images.device
    recon_sum = torch.zeros((), device=device)
    kl_by_dim_sum = torch.zeros(model.latent_dim, device=device)
    # float64 sums of the posterior means: their variance over the test set (active units)
    mu_sum = torch.zeros(model.latent_dim, device=device, dtype=torch.float64)
    mu_sq_sum = torch.zeros_like(mu_sum)
    for start in range(0, len(images), batch_size):
        x = data.to_float(images[start : start + batch_size])
        out, mu, logvar = model(x)
        terms = elbo_terms(model.likelihood.nll(out, x), mu, logvar)
        recon_sum += terms.recon.sum()
        kl_by_dim_sum += terms.kl_by_dim.sum(dim=0)
        mu64 = mu.double()
        mu_sum += mu64.sum(dim=0)
        mu_sq_sum += mu64.pow(2).sum(dim=0)
    n = len(images)
    kl_by_dim = (kl_by_dim_sum / n).tolist()
    active_burda, _ = active_units_burda(mu_sum, mu_sq_sum, n)
    return TestSums(recon_sum.item() / n, sum(kl_by_dim), kl_by_dim, active_burda)
