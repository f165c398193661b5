"""Settings that are valid but probably not what was meant: printed when a run starts, and kept
in its history's `warnings`."""

from __future__ import annotations

from vae_runner.config.schema import Config, CyclicalAnnealingConfig
from vae_runner.training.schedules import kl_far_below_warning


def config_warnings(cfg: Config, horizon: int | None = None) -> list[str]:
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
    if cfg.device.graphs and cfg.device.name == "auto" and not _cuda():
        found.append(
            "device.graphs=true does nothing here: device=auto found no CUDA GPU, so the "
            "training step runs eagerly; CUDA graphs are CUDA's (device.graphs=false says so)"
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


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
