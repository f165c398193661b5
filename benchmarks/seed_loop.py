"""The reference: the seed document's training loop, verbatim in spirit.

    python benchmarks/seed_loop.py --epochs 2 --root /usr/share/datasets/fashion-mnist

torchvision dataset + ToTensor + DataLoader (shuffled, batch 128), the pytorch/examples MLP VAE
with a sigmoid decoder and F.binary_cross_entropy, Adam, clip_grad_norm_(1.0), and an `.item()`
per batch. Run as a script, it trains --epochs epochs and prints, as JSON, each epoch's
seconds (its training pass and its test pass, as vae-runner's history.json counts an epoch)
and the process's peak resident memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SeedVAE(nn.Module):
    def __init__(self, data_dim=784, hidden=400, latent=20):
        super().__init__()
        self.fc1 = nn.Linear(data_dim, hidden)
        self.fc21 = nn.Linear(hidden, latent)
        self.fc22 = nn.Linear(hidden, latent)
        self.fc3 = nn.Linear(latent, hidden)
        self.fc4 = nn.Linear(hidden, data_dim)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        return mu + torch.randn_like(std) * std

    def decode(self, z):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

    def forward(self, x):
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar


def seed_loaders(root: str, batch_size: int = 128, limit: int | None = None):
    """The seed's train_loader and test_loader (its loop takes both)."""
    from torchvision import datasets, transforms

    def dataset(train: bool):
        return datasets.FashionMNIST(
            root, train=train, download=False, transform=transforms.ToTensor()
        )

    train = dataset(True)
    if limit:
        train = torch.utils.data.Subset(train, range(limit))
    loader = torch.utils.data.DataLoader
    return loader(train, batch_size=batch_size, shuffle=True), loader(dataset(False), batch_size)


def seed_train_epoch(model, loader, optimizer, kl_weight=0.1, device="cpu"):
    model.train()
    epoch_loss = epoch_recon = epoch_kl = 0.0
    for data, _ in loader:
        data = data.view(data.size(0), -1).to(device)
        optimizer.zero_grad()
        recon, mu, logvar = model(data)
        recon_loss = F.binary_cross_entropy(recon, data, reduction="sum")
        kl_loss = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        loss = recon_loss + kl_weight * kl_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        epoch_loss += loss.item()
        epoch_recon += recon_loss.item()
        epoch_kl += kl_loss.item()
    return epoch_loss


def seed_test_epoch(model, loader, kl_weight=0.1, device="cpu"):
    """The seed's test pass: no gradients, an `.item()` per batch."""
    model.eval()
    test_loss = 0.0
    with torch.no_grad():
        for data, _ in loader:
            data = data.view(data.size(0), -1).to(device)
            recon, mu, logvar = model(data)
            recon_loss = F.binary_cross_entropy(recon, data, reduction="sum")
            kl_loss = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            test_loss += (recon_loss + kl_weight * kl_loss).item()
    return test_loss


def main() -> None:
    import argparse
    import json
    import sys
    import time
    from pathlib import Path

    parser = argparse.ArgumentParser(description="the seed's loop on Fashion-MNIST")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--root", required=True, help="the folder of the IDX files")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None, help="training images (default all)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench import peak_rss_mib

    from vae_runner.data import idx

    root = idx.torchvision_root(idx.find_files(Path(args.root)), "fashion_mnist")
    torch.manual_seed(0)
    model = SeedVAE().to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_loader, test_loader = seed_loaders(str(root), limit=args.limit)
    seconds = []
    for _ in range(args.epochs):
        started = time.perf_counter()
        seed_train_epoch(model, train_loader, optimizer, device=args.device)
        seed_test_epoch(model, test_loader, device=args.device)
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"epoch_seconds": seconds, "peak_mib": peak_rss_mib()}))


if __name__ == "__main__":
    main()
