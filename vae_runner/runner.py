"""run(): the training loop of the seed, as a short list of named steps.

The runner never imports Hydra: it takes a typed `Config` and a run directory, so tests and other
programs can call it directly.

Hot-path rules (see DESIGN.md): the data set is one tensor on the device and a batch is
`x[perm[i:i+b]]`; metrics are summed as tensors and read once per epoch (one host sync), never
with `.item()` per batch.
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import torch

from vae_runner import __version__
from vae_runner.annealing import kl_weight as annealed_kl_weight
from vae_runner.build import (
    build_device,
    build_model,
    build_optimizer,
    build_scheduler,
    step_scheduler,
)
from vae_runner.config import Config
from vae_runner.console import BatchProgress, make_console, print_epoch, print_summary
from vae_runner.data import ImageData, load_data, shuffled_batches
from vae_runner.history import append_epoch, new_history, save_history
from vae_runner.losses import elbo_terms, training_loss


class TrainSums(NamedTuple):
    """Per-sample means over one training epoch, read from the device once."""

    recon: float
    kl: float
    grad_norm: float  # mean over batches of the pre-clip global norm
    grad_norm_max: float


class TestSums(NamedTuple):
    recon: float
    kl: float
    kl_by_dim: list[float]  # test-set mean KL of each latent dimension


def train_epoch(
    model, data: ImageData, optimizer, cfg: Config, kl_w: float, generator, progress
) -> TrainSums:
    model.train()
    device = data.train.device
    params = [p for p in model.parameters() if p.requires_grad]
    # clip_grad_norm_ returns the pre-clip norm, so monitoring is free. With clipping off, an
    # infinite max norm makes it a pure measurement (its clip factor is clamped to 1).
    max_norm = cfg.clip_norm if cfg.clip_norm is not None else math.inf
    recon_sum = torch.zeros((), device=device)
    kl_sum = torch.zeros((), device=device)
    norm_sum = torch.zeros((), device=device)
    norm_max = torch.zeros((), device=device)
    batches = shuffled_batches(len(data.train), cfg.batch_size, generator, device)
    for index in batches:
        x = data.train_batch(index)
        optimizer.zero_grad(set_to_none=True)
        out, mu, logvar = model(x)
        terms = elbo_terms(model.likelihood.nll(out, x), mu, logvar)
        training_loss(terms, kl_w, cfg.reduction.name).backward()
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm)
        optimizer.step()
        with torch.no_grad():
            recon_sum += terms.recon.sum()
            kl_sum += terms.kl.sum()
            norm_sum += norm
            norm_max = torch.maximum(norm_max, norm)
        progress.advance()
    n = len(data.train)
    recon, kl, norm_total, norm_top = torch.stack([recon_sum, kl_sum, norm_sum, norm_max]).tolist()
    return TrainSums(recon / n, kl / n, norm_total / len(batches), norm_top)


@torch.no_grad()
def evaluate(model, data: ImageData, batch_size: int) -> TestSums:
    """The test set under the model in eval mode; z is sampled, as in the seed."""
    model.eval()
    device = data.test.device
    recon_sum = torch.zeros((), device=device)
    kl_by_dim_sum = torch.zeros(model.latent_dim, device=device)
    for start in range(0, len(data.test), batch_size):
        x = data.to_float(data.test[start : start + batch_size])
        out, mu, logvar = model(x)
        terms = elbo_terms(model.likelihood.nll(out, x), mu, logvar)
        recon_sum += terms.recon.sum()
        kl_by_dim_sum += terms.kl_by_dim.sum(dim=0)
    n = len(data.test)
    kl_by_dim = (kl_by_dim_sum / n).tolist()
    return TestSums(recon_sum.item() / n, sum(kl_by_dim), kl_by_dim)


def _versions() -> dict[str, str]:
    import hydra
    import numpy
    import omegaconf

    return {
        "vae_runner": __version__,
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # a plain str: weights_only loads refuse TorchVersion
        "hydra": hydra.__version__,
        "omegaconf": omegaconf.__version__,
        "numpy": numpy.__version__,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run(cfg: Config, run_dir: Path, console=None) -> dict[str, Any]:
    """Train a VAE as `cfg` says, writing history.json into `run_dir`. Returns the history."""
    console = console or make_console()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    device = build_device(cfg.device)
    torch.manual_seed(cfg.seed)  # model init and the reparameterisation noise
    shuffle_generator = torch.Generator().manual_seed(cfg.seed)
    data = load_data(cfg.data, cfg.likelihood).to(device)
    model = build_model(cfg.model, cfg.likelihood, data.image_shape).to(device)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    scheduler = build_scheduler(cfg.scheduler, optimizer, cfg.epochs)

    data_dim = math.prod(data.image_shape)
    history = new_history(
        asdict(cfg),
        meta=dict(
            device=str(device),
            data_name=data.name,
            n_train=len(data.train),
            n_test=len(data.test),
            data_dim=data_dim,
            latent_dim=model.latent_dim,
            n_parameters=sum(p.numel() for p in model.parameters()),
            active_units_threshold=cfg.active_threshold,
            started_at=_now(),
            finished_at=None,
            versions=_versions(),
        ),
    )
    # The untrained model's test loss: the baseline every later epoch should beat.
    initial = evaluate(model, data, cfg.batch_size)
    history["initial_test_loss"] = initial.recon + cfg.beta * initial.kl
    save_history(run_dir, history)

    n_batches = math.ceil(len(data.train) / cfg.batch_size)
    progress = BatchProgress(console, n_batches)
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        kl_w = annealed_kl_weight(cfg.annealing, epoch, cfg.beta, cfg.epochs)
        lr = optimizer.param_groups[0]["lr"]
        with progress.epoch(epoch):
            train = train_epoch(model, data, optimizer, cfg, kl_w, shuffle_generator, progress)
        test = evaluate(model, data, cfg.batch_size)
        test_loss = test.recon + cfg.beta * test.kl
        record = dict(
            epoch=epoch,
            train_loss=train.recon + kl_w * train.kl,
            train_recon=train.recon,
            train_kl=train.kl,
            test_loss=test_loss,
            test_recon=test.recon,
            test_kl=test.kl,
            kl_weight=kl_w,
            lr=lr,
            grad_norm=train.grad_norm,
            grad_norm_max=train.grad_norm_max,
            active_units=sum(kl > cfg.active_threshold for kl in test.kl_by_dim),
            recon_per_dim=test.recon / data_dim,
            kl_per_dim=test.kl / model.latent_dim,
            epoch_seconds=time.perf_counter() - started,
        )
        append_epoch(history, record)
        print_epoch(console, cfg.epochs, record)
        if not all(math.isfinite(v) for v in (record["train_loss"], test_loss, train.grad_norm)):
            # Never hand a NaN to ReduceLROnPlateau: it would silently cut the lr.
            history["status"] = "diverged"
            break
        step_scheduler(scheduler, test_loss)
        save_history(run_dir, history)

    if history["status"] == "running":
        history["status"] = "completed"
    history["finished_at"] = _now()
    save_history(run_dir, history)
    print_summary(console, history, run_dir)
    return history
