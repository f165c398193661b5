"""Each run's own random numbers: its reparameterisation noise, its dynamic binarisation and its
batch order come from generators seeded by its `seed`, never from torch's global RNG, so a run
gives the same numbers alone or as a member of any stack (training/stacked_model.py).

The noise is drawn through a `Noise` object that the engine is handed: the default one
(`SeededNoise`) holds a generator per member; a test hands in its own, so that a stacked member and
a separate reference loop see the very same draws (tests/test_stacked_oracle.py).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Noise(Protocol):
    def normal(self, member: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Standard normal draws of `shape`, with `like`'s dtype and device."""

    def bernoulli(self, member: int, probs: torch.Tensor) -> torch.Tensor:
        """Bernoulli(probs) draws (dynamic binarisation)."""


class SeededNoise:
    """A generator per member, on the device the draws are made on, seeded by the member's seed."""

    def __init__(self, seeds: list[int], device: torch.device) -> None:
        self.device = torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(s) for s in seeds]

    def normal(self, member: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        generator = self.generators[member]
        return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)

    def bernoulli(self, member: int, probs: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(probs, generator=self.generators[member])

    def state(self, member: int) -> dict[str, Any]:
        return {"noise": self.generators[member].get_state(), "noise_device": self.device.type}

    def restore(self, member: int, rng: dict[str, Any]) -> None:
        """From a checkpoint's `rng`. A checkpoint written before runs had their own generator
        holds torch's global CPU state under `torch`: a CPU generator takes it up, so such a run
        carries on with the very stream it had. A run moved to another device (resume with
        device=...) starts a fresh stream there, seeded by its epoch-independent seed state."""
        generator = self.generators[member]
        if rng.get("noise_device") == self.device.type and "noise" in rng:
            generator.set_state(rng["noise"])
        elif "noise" not in rng and self.device.type == "cpu" and "torch" in rng:
            generator.set_state(rng["torch"])
        elif "noise" not in rng and self.device.type == "cuda" and rng.get("cuda"):
            generator.set_state(rng["cuda"][0])  # torch.cuda.get_rng_state_all()'s first
