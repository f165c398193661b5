"""Data sets as one tensor each on the device; batches by shuffled index.

A data set is stored compactly (uint8 grey levels) and turned into floats in [0, 1] one batch at
a time, so the whole set lives on the device with no per-sample Python work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vae_runner.config import DataConfig, DigitsDataConfig


@dataclass
class ImageData:
    train: torch.Tensor  # [N, C, H, W], uint8 grey levels
    test: torch.Tensor  # [M, C, H, W], uint8 grey levels
    max_level: float  # the grey level that maps to 1.0 (255 for MNIST, 16 for digits)
    name: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.shape[1:])

    def to_float(self, levels: torch.Tensor) -> torch.Tensor:
        """A batch of stored grey levels as float32 in [0, 1]."""
        return levels.float().div_(self.max_level)

    def to(self, device: torch.device) -> ImageData:
        return ImageData(self.train.to(device), self.test.to(device), self.max_level, self.name)


def load_digits(cfg: DigitsDataConfig) -> ImageData:
    """scikit-learn's 8x8 digits (bundled, offline), split once with a fixed permutation."""
    from sklearn.datasets import load_digits as sklearn_digits  # 1.3 s to import: only when used

    images = sklearn_digits().images.astype(np.uint8)  # [1797, 8, 8], levels 0..16
    # The split must not follow the run's `seed`: runs with different seeds see the same test set.
    order = np.random.default_rng(20260101).permutation(len(images))
    n_test = round(len(images) * cfg.test_fraction)
    test, train = images[order[:n_test]], images[order[n_test:]]
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).unsqueeze(1)  # noqa: E731
    return ImageData(as_tensor(train), as_tensor(test), max_level=16.0, name="digits")


def load_data(cfg: DataConfig) -> ImageData:
    match cfg:
        case DigitsDataConfig():
            data = load_digits(cfg)
        case _:
            raise ValueError(f"unknown data set {cfg.name!r}")
    if cfg.limit is not None:
        data.train = data.train[: cfg.limit]
    return data


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device):
    """Index tensors of one shuffled epoch; the last batch may be smaller (no sample dropped).

    The generator stays on the CPU so the same seed gives the same order on every device.
    """
    perm = torch.randperm(n, generator=generator).to(device)
    return perm.split(batch_size)
