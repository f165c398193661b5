"""The one place where config names become objects: device, model, optimizer, scheduler."""

from __future__ import annotations

from typing import assert_never

import torch

from vae_runner.config.errors import ConfigError
from vae_runner.config.schema import (
    AdamConfig,
    AdamWConfig,
    BernoulliLikelihoodConfig,
    ConvModelConfig,
    CosineConfig,
    DeviceConfig,
    GaussianLikelihoodConfig,
    LikelihoodConfig,
    MLPModelConfig,
    ModelConfig,
    NoSchedulerConfig,
    OptimizerConfig,
    PlateauConfig,
    SchedulerConfig,
    SGDConfig,
    StepConfig,
)
from vae_runner.training.model import MLPVAE, VAE, BernoulliLikelihood, ConvVAE, GaussianLikelihood


def build_device(cfg: DeviceConfig) -> torch.device:
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    match cfg.name:
        case "auto":
            return torch.device("cuda" if cuda else "mps" if mps else "cpu")
        case "cpu":
            return torch.device("cpu")
        case "cuda":
            if not cuda:
                raise ConfigError(
                    "device=cuda but torch sees no CUDA GPU "
                    f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                    "use device=auto or device=cpu"
                )
            return torch.device("cuda")
        case "mps":
            if not mps:
                raise ConfigError(
                    "device=mps but Apple's MPS backend is not available here; "
                    "use device=auto or device=cpu"
                )
            return torch.device("mps")
    raise AssertionError(f"device.name={cfg.name!r} passed config.typed's name check")


def build_likelihood(cfg: LikelihoodConfig) -> torch.nn.Module:
    match cfg:
        case BernoulliLikelihoodConfig():
            return BernoulliLikelihood()
        case GaussianLikelihoodConfig():
            return GaussianLikelihood(cfg.sigma, learned=cfg.variance == "learned")
        case _:
            assert_never(cfg)


def build_model(
    cfg: ModelConfig, likelihood: LikelihoodConfig, image_shape: tuple[int, ...]
) -> VAE:
    decoder_likelihood = build_likelihood(likelihood)
    match cfg:
        case MLPModelConfig():
            return MLPVAE(image_shape, cfg.hidden_dim, cfg.latent_dim, decoder_likelihood)
        case ConvModelConfig():
            _, height, width = image_shape
            if height % 4 or width % 4:
                raise ConfigError(
                    f"model=conv needs image sides divisible by 4 but the data's images are "
                    f"{height}x{width}; use model=mlp"
                )
            return ConvVAE(
                image_shape, cfg.channels, cfg.hidden_dim, cfg.latent_dim, decoder_likelihood
            )
        case _:
            assert_never(cfg)


def build_optimizer(cfg: OptimizerConfig, params, lr: float) -> torch.optim.Optimizer:
    """The optimizer, fused (one kernel for the whole update) where torch has it, else foreach:
    the same arithmetic up to float rounding, with fewer kernel launches (benchmarks/RESULTS.md).
    """
    params = list(params)
    match cfg:
        # AdamW subclasses Adam's schema: test it first.
        case AdamWConfig():
            kind = torch.optim.AdamW
            options = dict(betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        case AdamConfig():
            kind = torch.optim.Adam
            options = dict(betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        case SGDConfig():
            kind = torch.optim.SGD
            options = dict(
                momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
            )
        case _:
            assert_never(cfg)
    try:
        return kind(params, lr=lr, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or dtype
        return kind(params, lr=lr, foreach=True, **options)


class LrShell(torch.optim.Optimizer):
    """What one member's torch scheduler steps: a single param group that holds the member's
    lr, with no parameters (the stacked optimizer applies the lr; training/engine.py copies it
    there each epoch). So the member's scheduler is torch's own, and its state a single run's.

    Optimizer.__init__ is not called, nor any Optimizer method: torch wraps add_param_group,
    zero_grad, state_dict and step for torch.compile, and the first call of any of them imports
    torch._dynamo, 0.9 s of every vae-train command's start-up and exit (benchmarks/RESULTS.md,
    2026-12-05) for a compiler no eager run uses. torch's schedulers read and set
    `param_groups` only (tests/test_schedules.py runs them against a real torch optimizer)."""

    def __init__(self, lr: float) -> None:  # no super().__init__(): see the docstring
        self.defaults = {"lr": lr}
        self.state: dict = {}
        self.param_groups = [{"params": [], "lr": lr}]

    def step(self, closure=None) -> None:
        """Nothing to update; torch's schedulers want it called before their own step."""


def build_scheduler(cfg: SchedulerConfig, optimizer: torch.optim.Optimizer):
    """An epoch-level LR scheduler that keeps a state, or None. The plateau one must be stepped
    with the test loss. Cosine keeps none: it is a pure function of the epoch, set at the start
    of each one (training.schedules.epoch_lr), so a resume or an extension cannot bend it."""
    from torch.optim import lr_scheduler

    match cfg:
        case PlateauConfig():
            return lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="min",
                factor=cfg.factor,
                patience=cfg.patience,
                threshold=cfg.threshold,
                min_lr=cfg.min_lr,
            )
        case StepConfig():
            return lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
        case NoSchedulerConfig() | CosineConfig():
            return None
        case _:
            assert_never(cfg)


def step_scheduler(scheduler, watched_loss: float) -> None:
    """Advance one epoch. ReduceLROnPlateau watches the loss the run chooses on (the validation
    loss with data.val_fraction, else the test loss, as the course's loop); the others count
    epochs."""
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(watched_loss)
    else:
        scheduler.step()
