"""VAE modules: encode, reparameterize, decode, forward.

The decoder returns logits of a Bernoulli likelihood; `torch.sigmoid(logits)` is the image (the
seed's sigmoid output). Keeping logits lets the loss use the numerically stable BCE-with-logits.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MLPVAE(nn.Module):
    """The seed's and pytorch/examples' VAE: D -> hidden -> (mu, logvar) -> hidden -> D."""

    def __init__(self, input_shape: tuple[int, ...], hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
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

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        std = torch.exp(0.5 * logvar)
        return mu + std * torch.randn_like(std)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Logits with the data's shape."""
        logits = self.fc4(torch.relu(self.fc3(z)))
        return logits.view(-1, *self.input_shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar
