"""M models of one shape as ONE model: every weight gets a leading member axis.

A stack is built from M ordinary models (each initialised from its own seed) by replacing each
layer that holds weights with its stacked counterpart; the model's own `encode`/`decode` code then
runs unchanged on activations that carry the members folded into the batch axis: [M*B, ...],
member-major (member m's batch is rows m*B ... (m+1)*B - 1). A stacked layer unfolds them, applies
each member's weights to its own rows in one batched product, and folds them again.

Why explicit batched layers and not torch.func.vmap over functional_call: measured on 2 CPU cores
(the seed's 784-400-20 model, batch 128, forward and backward), vmap took 6.4 ms per step for one
member and 51 ms for eight, explicit `baddbmm` layers 5.2 ms and 42 ms, and a loop of plain
models 5.7 ms and 37 ms. The explicit layers also let the likelihood's fast NLL (an autograd
Function that vmap refuses) and torch.compile see ordinary tensors.

Nothing mixes members: every stacked operation works on each member's own rows and weights, so
a member's numbers do not depend on which members share its stack (tests/test_stacked_model.py).
A member's `state_dict` has exactly the keys and shapes of the plain model's, so its checkpoint
is a single run's.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vae_runner.training.losses import gaussian_nll
from vae_runner.training.model import VAE, GaussianLikelihood


def _stacked(tensors: list[torch.Tensor], trainable: bool) -> torch.Tensor:
    stacked = torch.stack([t.detach() for t in tensors])
    return nn.Parameter(stacked) if trainable else stacked


class StackedLinear(nn.Module):
    """nn.Linear per member: [M*B, in] -> [M*B, out] by one batched product (baddbmm)."""

    def __init__(self, layers: list[nn.Linear]) -> None:
        super().__init__()
        self.members = len(layers)
        self.weight = _stacked([layer.weight for layer in layers], True)  # [M, out, in]
        self.bias = _stacked([layer.bias for layer in layers], True)  # [M, out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(self.members, -1, x.shape[-1])
        out = torch.baddbmm(self.bias.unsqueeze(1), rows, self.weight.transpose(1, 2))
        return out.reshape(-1, out.shape[-1])


class _StackedConv(nn.Module):
    """A (transposed) convolution per member. On CUDA one grouped convolution (the members as
    groups: one kernel for the stack); elsewhere one convolution per member, because the CPU's
    grouped convolution was slower than the loop (tests check that both give the same numbers).
    """

    grouped: bool | None = None  # None: grouped on CUDA only; tests set it to try both ways

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        first = layers[0]
        self.members = len(layers)
        self.options = dict(stride=first.stride, padding=first.padding, dilation=first.dilation)
        if isinstance(first, nn.ConvTranspose2d):
            self.options["output_padding"] = first.output_padding
        self.weight = _stacked([layer.weight for layer in layers], True)
        self.bias = _stacked([layer.bias for layer in layers], True)  # [M, out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grouped = self.grouped if self.grouped is not None else x.device.type == "cuda"
        m = self.members
        if not grouped:
            rows = x.reshape(m, -1, *x.shape[1:])
            return torch.cat(
                [self._conv(rows[i], self.weight[i], self.bias[i], 1) for i in range(m)]
            )
        batch = x.shape[0] // m
        # [M*B, C, H, W] -> [B, M*C, H, W]: member i's channels are group i
        grouped_x = x.reshape(m, batch, *x.shape[1:]).transpose(0, 1).flatten(1, 2)
        weight = self.weight.flatten(0, 1)  # [M*out, in, k, k] (transposed: [M*in, out, k, k])
        out = self._conv(grouped_x, weight, self.bias.flatten(), m)
        return out.reshape(batch, m, -1, *out.shape[2:]).transpose(0, 1).flatten(0, 1)


class StackedConv2d(_StackedConv):
    def _conv(self, x, weight, bias, groups):
        return F.conv2d(x, weight, bias, groups=groups, **self.options)


class StackedConvTranspose2d(_StackedConv):
    def _conv(self, x, weight, bias, groups):
        return F.conv_transpose2d(x, weight, bias, groups=groups, **self.options)


class StackedGaussianLikelihood(nn.Module):
    """GaussianLikelihood per member: its log sigma is [M] (a parameter when learned)."""

    def __init__(self, likelihoods: list[GaussianLikelihood]) -> None:
        super().__init__()
        learned = isinstance(likelihoods[0].log_sigma, nn.Parameter)
        stacked = _stacked([lik.log_sigma for lik in likelihoods], learned)
        if learned:
            self.log_sigma = stacked
        else:
            self.register_buffer("log_sigma", stacked)

    def nll(self, mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        per_row = self.log_sigma.repeat_interleave(mean.shape[0] // len(self.log_sigma))
        return gaussian_nll(mean, x, per_row.view(-1, *[1] * (mean.dim() - 1)))

    def image(self, mean: torch.Tensor) -> torch.Tensor:
        return mean.clamp(0.0, 1.0)


STACKED_LAYERS: dict[type, type] = {
    nn.Linear: StackedLinear,
    nn.Conv2d: StackedConv2d,
    nn.ConvTranspose2d: StackedConvTranspose2d,
}


def stack_models(models: list[VAE]) -> VAE:
    """One model holding `models` (same class and sizes) as members 0..M-1."""
    stacked = copy.deepcopy(models[0])
    for name, module in list(models[0].named_modules()):
        kind = STACKED_LAYERS.get(type(module))
        if kind is not None:
            stacked.set_submodule(name, kind([m.get_submodule(name) for m in models]))
    if isinstance(models[0].likelihood, GaussianLikelihood):
        stacked.likelihood = StackedGaussianLikelihood([m.likelihood for m in models])
    stacked.members = len(models)
    plain = models[0].state_dict()
    for key, value in stacked.state_dict().items():  # a layer kind this file does not stack
        if value.shape != (len(models), *plain[key].shape):
            raise TypeError(f"{type(models[0]).__name__}.{key} cannot be stacked")
    return stacked


def member_state_dict(stacked: VAE, member: int) -> dict[str, torch.Tensor]:
    """Member `member`'s weights, as the plain model's state_dict (keys and shapes): on the CPU."""
    return {
        key: value[member].detach().cpu().clone() for key, value in stacked.state_dict().items()
    }


@torch.no_grad()
def load_member_state_dict(stacked: VAE, member: int, state: dict[str, Any]) -> None:
    """Put a plain model's state_dict into member `member`; a state that does not fit raises
    ValueError naming the first key that differs (as load_state_dict's strict check would)."""
    own = stacked.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"missing keys {missing[:3]}, unexpected keys {unexpected[:3]}")
    for key, value in own.items():
        given = state[key]
        if not isinstance(given, torch.Tensor) or tuple(given.shape) != tuple(value.shape[1:]):
            shape = tuple(getattr(given, "shape", ()))
            raise ValueError(f"size mismatch for {key}: {shape} against {tuple(value.shape[1:])}")
        value[member].copy_(given)
