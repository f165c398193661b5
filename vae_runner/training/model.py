"""VAE modules: encode, reparameterize, decode, forward, and the decoder's likelihood.

`decode` returns the raw decoder output: logits for a Bernoulli likelihood, the mean for a
Gaussian one. `model.likelihood` turns it into a per-sample NLL (`nll`) and into an image in
[0, 1] (`image`); a learned variance is a parameter of the likelihood, so it is trained,
checkpointed and counted with the model's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vae_runner.training.losses import bernoulli_nll, gaussian_nll


class BernoulliLikelihood(nn.Module):
    def nll(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return bernoulli_nll(logits, x)

    def image(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


class GaussianLikelihood(nn.Module):
    def __init__(self, sigma: float, learned: bool) -> None:
        super().__init__()
        log_sigma = torch.tensor(math.log(sigma))
        if learned:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def nll(self, mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return gaussian_nll(mean, x, self.log_sigma)

    def image(self, mean: torch.Tensor) -> torch.Tensor:
        return mean.clamp(0.0, 1.0)


class VAE(nn.Module):
    """What every VAE here shares: the reparameterisation trick and the forward pass."""

    latent_dim: int

    def __init__(self, likelihood: nn.Module) -> None:
        super().__init__()
        self.likelihood = likelihood

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(
        self, x: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`eps`: standard normal noise of the posterior's shape [B, latent_dim], handed in by the
        caller (training.noise: each run's own generator), never drawn from the global RNG."""
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar, eps)), mu, logvar


class MLPVAE(VAE):
    """The seed's and pytorch/examples' VAE: D -> hidden -> (mu, logvar) -> hidden -> D."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        hidden_dim: int,
        latent_dim: int,
        likelihood: nn.Module | None = None,
    ) -> None:
        super().__init__(likelihood or BernoulliLikelihood())
        self.input_shape = tuple(input_shape)
        self.latent_dim = latent_dim
        data_dim = math.prod(input_shape)
        self.fc1 = nn.Linear(data_dim, hidden_dim)
        self.fc_mu = nn.Linear(hidden_dim, latent_dim)
        self.fc_logvar = nn.Linear(hidden_dim, latent_dim)
        self.fc3 = nn.Linear(latent_dim, hidden_dim)
        self.fc4 = nn.Linear(hidden_dim, data_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.fc1(x.flatten(start_dim=1)))
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.fc4(torch.relu(self.fc3(z)))
        return out.view(-1, *self.input_shape)


class ConvVAE(VAE):
    """Two stride-2 4x4 convolutions down (H/4 x W/4), a dense bottleneck, and the mirror up."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        channels: int,
        hidden_dim: int,
        latent_dim: int,
        likelihood: nn.Module | None = None,
    ) -> None:
        super().__init__(likelihood or BernoulliLikelihood())
        c, h, w = input_shape  # sides divisible by 4: checked by training.build
        self.input_shape = tuple(input_shape)
        self.latent_dim = latent_dim
        self._grid = (2 * channels, h // 4, w // 4)
        flat = math.prod(self._grid)
        self.encoder = nn.Sequential(
            nn.Conv2d(c, channels, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(flat, hidden_dim),
            nn.ReLU(),
        )
        self.fc_mu = nn.Linear(hidden_dim, latent_dim)
        self.fc_logvar = nn.Linear(hidden_dim, latent_dim)
        self.decoder_dense = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, flat), nn.ReLU()
        )
        self.decoder_conv = nn.Sequential(
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(channels, c, 4, stride=2, padding=1),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x.view(-1, *self.input_shape))
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder_conv(self.decoder_dense(z).view(-1, *self._grid))
