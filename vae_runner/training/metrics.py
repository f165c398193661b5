"""Measures of what a VAE learned: active units and an importance-weighted likelihood.

- Active units, Burda et al. (2015): dimension d is active when Cov_x(E_q[z_d | x]) > 0.01,
  i.e. the posterior mean of z_d varies across the test set. (The seed's count, KL above a
  threshold, is computed in runner.py from `kl_by_dim`; both are recorded.)
- The importance-weighted estimate of -log p(x) (Burda et al. 2015): with K samples z_k from
  q(z|x) and w_k = p(x|z_k) p(z_k) / q(z_k|x),  -log p(x) ~ -log (1/K sum_k w_k). It is never
  looser than the ELBO computed from the same samples, and tightens as K grows.
"""

from __future__ import annotations

import math
import time
from functools import partial
from typing import NamedTuple

import torch

BURDA_THRESHOLD = 0.01


def active_units_burda(mu_sum, mu_sq_sum, n: int, threshold: float = BURDA_THRESHOLD):
    """(count, per-dimension variance) of the posterior means, from running sums over n images."""
    mean = mu_sum / n
    variance = (mu_sq_sum / n - mean.pow(2)).clamp(min=0)
    return int((variance > threshold).sum()), variance


class LikelihoodEstimate(NamedTuple):
    nll: float  # importance-weighted estimate of -log p(x), nats per test image
    neg_elbo: float  # -ELBO from the same samples, nats per test image
    samples: int
    seconds: float
    # the standard error of `nll` over the images: the sd of the per-image estimates / sqrt(N)
    # (NaN for one image). It holds the Monte Carlo noise too, so two estimates of the same
    # images that differ by more than a few of these differ by more than chance.
    nll_se: float = math.nan


def _log_normal(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z | mean, exp(logvar)), summed over the last dimension."""
    return -0.5 * ((z - mean).pow(2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)


@torch.no_grad()
def log_weights(model, x: torch.Tensor, draw) -> torch.Tensor:
    """log w_k for every image of the batch x: a [samples, batch] tensor; `draw(mu)` gives the
    standard normal draws, [samples, *mu.shape] (image_noise)."""
    mu, logvar = model.encode(x)
    noise = draw(mu)
    samples = len(noise)
    z = mu + noise * torch.exp(0.5 * logvar)  # [K, B, D]
    out = model.decode(z.flatten(0, 1))  # [K * B, ...]
    x_k = x.unsqueeze(0).expand(samples, *x.shape).flatten(0, 1)
    log_px_z = -model.likelihood.nll(out, x_k).view(samples, -1)
    log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)  # log N(z | 0, I)
    log_qz = _log_normal(z, mu, logvar)
    return log_px_z + log_pz - log_qz


def image_seed(seed: int, image: int) -> int:
    """Image `image`'s seed: 32 bits, since the CPU's generator (mt19937) keeps only those;
    distinct for the images of one estimate (fewer than 1000003 of them)."""
    return (seed * 1_000_003 + image) % 2**32


def image_noise(
    generator: torch.Generator, seed: int, first: int, samples: int, mu: torch.Tensor
) -> torch.Tensor:
    """The standard normal draws of images first, first + 1, ... (one per row of mu, their
    posterior means): [samples, *mu.shape] in mu's dtype and device. Image i's K x latent draws
    come from the generator seeded by image_seed(seed, i) alone, so the estimate does not depend
    on how the images are chunked (nor on the device's memory); one draw call per image."""
    count, latent = mu.shape
    noise = torch.empty(count, samples, latent, dtype=mu.dtype, device=mu.device)
    for j in range(count):
        generator.manual_seed(image_seed(seed, first + j))
        noise[j].normal_(generator=generator)
    return noise.transpose(0, 1)


# The chunk sizes, in decoded values (K x images x pixels): the CPU's keep its tensors at 4 MiB
# (full-speed products, no rise of the run's peak memory); a GPU's are 64 times larger, about
# 2 GiB at the 32 bytes a value takes there (the logits, the repeated images, the per-pixel NLL
# and the decoder's hidden layer live together): 85 Fashion-MNIST images a chunk at K = 1000.
# Never sized by the free memory: several runs share a GPU and reach their estimates together,
# and a vae-eval of the run must take the same chunks (the same products, the same rounding).
CHUNK_VALUES = 1 << 20
GPU_CHUNK_VALUES = 1 << 26


def chunk_values(device: torch.device) -> int:
    """How many decoded values one chunk of the estimate holds on `device`."""
    return GPU_CHUNK_VALUES if device.type == "cuda" else CHUNK_VALUES


def importance_weighted_nll(
    model,
    images,
    samples: int,
    seed: int = 0,
    to_float=None,
    check=None,
    values: int | None = None,
) -> LikelihoodEstimate:
    """Estimate -log p(x) over `images` ([N, ...] floats in [0, 1]) with K = `samples`.

    `to_float`, if given, turns a chunk of stored images (ImageData.to_float) into those floats,
    so the whole test set is never held as floats at once. `check`, if given, is called before
    each chunk (a run's stop request: the estimate can take minutes).

    Vectorised over images and samples, in chunks of `values` decoded values (default
    chunk_values: 2^20 on the CPU, 2^26 on a GPU; at least one image,
    so K * D values when that is more). The numbers do not depend on the chunks (image_noise).
    Its own generator, on the images' device: the estimate does not move the training run's
    random state.
    """
    started = time.perf_counter()
    model.eval()
    generator = torch.Generator(images.device)
    per_image = max(1, math.prod(images.shape[1:]))
    values = values or chunk_values(images.device)
    chunk = max(1, values // (samples * per_image))
    # float64 sums kept on the device and read once: no host sync per chunk (-NLL, -ELBO and
    # the per-image NLL's squares, for its spread)
    sums = torch.zeros(3, dtype=torch.float64, device=images.device)
    for start in range(0, len(images), chunk):
        if check is not None:
            check()
        x = images[start : start + chunk]
        x = x if to_float is None else to_float(x)
        log_w = log_weights(model, x, partial(image_noise, generator, seed, start, samples))
        log_px = (torch.logsumexp(log_w, dim=0) - math.log(samples)).double()  # per image
        sums[0] -= log_px.sum()
        sums[1] -= log_w.double().mean(dim=0).sum()
        sums[2] += log_px.pow(2).sum()
    n = len(images)
    nll_sum, neg_elbo_sum, square_sum = sums.tolist()
    nll = nll_sum / n
    spread = math.sqrt(max(0.0, square_sum - n * nll**2) / (n - 1)) if n > 1 else math.nan
    seconds = time.perf_counter() - started
    return LikelihoodEstimate(nll, neg_elbo_sum / n, samples, seconds, spread / math.sqrt(n))
