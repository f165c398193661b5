"""The Trainer: everything one run trains with, built from the config in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vae_runner.config.schema import Config, CyclicalAnnealingConfig
from vae_runner.data.images import ImageData, load_data
from vae_runner.report.console import print_warning
from vae_runner.training.allocator import reuse_freed_blocks
from vae_runner.training.build import build_device, build_model, build_optimizer, build_scheduler
from vae_runner.training.model import VAE
from vae_runner.training.schedules import epoch_lr, kl_far_below_warning


@dataclass
class Trainer:
    """Everything one run trains with, built from the config in one place."""

    cfg: Config
    device: torch.device
    data: ImageData
    model: VAE
    optimizer: torch.optim.Optimizer
    scheduler: Any
    shuffle: torch.Generator  # the batch order's own generator (CPU), seeded by `seed`
    train_model: Any  # what the training step calls: `model`, or its torch.compile'd form
    config_warnings: list[str]  # legal but doubtful settings: printed, and kept in the history
    horizon: int  # the epochs the run started with: what cyclical and cosine are laid out over
    epoch_lr: Any  # the lr as a pure function of the epoch (scheduler=cosine), or None
    job_label: str | None = None  # a sweep job's overrides, to name it in its warnings


def _config_warnings(cfg: Config, horizon: int | None = None) -> list[str]:
    """Settings that are valid but probably not what was meant. `horizon`: the epochs the run
    started with (training.schedules), when a resume changed `epochs`."""
    horizon = horizon or cfg.epochs
    found = [w for w in [kl_far_below_warning(cfg, horizon)] if w]
    if isinstance(cfg.annealing, CyclicalAnnealingConfig) and horizon / cfg.annealing.cycles < 2:
        found.append(
            f"annealing=cyclical with annealing.cycles={cfg.annealing.cycles} over "
            f"epochs={horizon}: a cycle is shorter than 2 epochs, so the KL weight barely "
            "rises (it starts every cycle at 0); use fewer cycles or more epochs"
        )
    if cfg.plot_every and not cfg.pictures:
        found.append(
            f"plot_every={cfg.plot_every} draws nothing with pictures=false; drop one of the two"
        )
    decay = getattr(cfg.optimizer, "weight_decay", 0.0)
    if cfg.optimizer.name == "adamw" and 0 < cfg.lr * decay <= FLOAT32_HALF_ULP:
        found.append(
            f"optimizer.weight_decay={decay:g} at lr={cfg.lr:g}: AdamW scales each weight by "
            f"1 - lr * weight_decay = 1 - {cfg.lr * decay:.1g} per step, which rounds to 1 in "
            "float32, so it trains bit for bit like Adam; use weight_decay >= "
            f"{FLOAT32_HALF_ULP / cfg.lr:.0e} for a decay that acts"
        )
    return found


# Up to this, 1 - x rounds to exactly 1.0 in float32 (half the spacing of floats below 1).
FLOAT32_HALF_ULP = 2.0**-25


def build_trainer(
    cfg: Config, console, start_dir: Path | None = None, horizon: int | None = None
) -> Trainer:
    """`horizon`: the epochs the run started with (training.schedules); default `epochs`."""
    horizon = horizon or cfg.epochs
    device = build_device(cfg.device)
    if device.type == "cpu":
        reuse_freed_blocks()
    if cfg.device.threads:
        torch.set_num_threads(cfg.device.threads)
    torch.manual_seed(cfg.seed)  # model init and the reparameterisation noise
    shuffle = torch.Generator().manual_seed(cfg.seed)
    data = load_data(cfg.data, cfg.likelihood, start_dir)  # batch_size fits: checked by Config
    config_warnings = _config_warnings(cfg, horizon)
    for warning in config_warnings:
        print_warning(console, warning)
    data = data.to(device)
    model = build_model(cfg.model, cfg.likelihood, data.image_shape).to(device)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    scheduler = build_scheduler(cfg.scheduler, optimizer)
    train_model = model
    if cfg.device.compile:
        # On CUDA, "reduce-overhead" also captures CUDA graphs: the launch cost of a small
        # model's many kernels is what bounds it there. Evaluation and checkpoints use `model`.
        mode = "reduce-overhead" if device.type == "cuda" else "default"
        train_model = torch.compile(model, mode=mode)
    return Trainer(
        cfg,
        device,
        data,
        model,
        optimizer,
        scheduler,
        shuffle,
        train_model,
        config_warnings,
        horizon,
        epoch_lr(cfg, horizon),
    )
