"""Image grids of what the model does: reconstructions and samples (torchvision's save_image).

Neither touches the training run's random state: reconstructions decode the posterior mean,
and samples come from a generator of their own, so the same z is decoded at every epoch (the
grids of `images/` show one set of samples evolve) and a resumed run stays bit-exact.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from vae_runner.files import write_through_temporary, writing

MIN_SIDE = 56  # smaller images (8x8 digits, 28x28 MNIST) are enlarged to be seen


def _visible(images: torch.Tensor) -> torch.Tensor:
    side = images.shape[-1]
    if side >= MIN_SIDE:
        return images
    return F.interpolate(images, scale_factor=math.ceil(MIN_SIDE / side), mode="nearest")


@torch.no_grad()
def reconstruction_grid(model, data, n: int = 8) -> torch.Tensor:
    """The first n test images (top row) over their reconstructions (bottom row), as in
    pytorch/examples' VAE."""
    from torchvision.utils import make_grid

    model.eval()
    x = data.to_float(data.test[:n])
    mu, _ = model.encode(x)
    recon = model.likelihood.image(model.decode(mu)).view_as(x)
    return make_grid(_visible(torch.cat([x, recon]).cpu()), nrow=n, pad_value=1.0)


@torch.no_grad()
def sample_grid(model, n: int = 64, seed: int = 0) -> torch.Tensor:
    """Decodes of n draws from the prior N(0, I), always the same draws."""
    from torchvision.utils import make_grid

    model.eval()
    z = torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(seed))
    device = next(model.parameters()).device
    images = model.likelihood.image(model.decode(z.to(device)))
    return make_grid(_visible(images.cpu()), nrow=int(math.sqrt(n)), pad_value=1.0)


def save_grids(model, data, folder: Path, suffix: str = "") -> dict[str, torch.Tensor]:
    """Write reconstructions<suffix>.png and samples<suffix>.png; returns the grids."""
    from torchvision.utils import save_image

    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    grids = {"reconstructions": reconstruction_grid(model, data), "samples": sample_grid(model)}
    for name, grid in grids.items():
        # Through a temporary name, removed if the write fails: never a half-written PNG.
        write_through_temporary(
            folder / f"{name}{suffix}.png", lambda tmp, g=grid: save_image(g, tmp, format="png")
        )
    return grids
