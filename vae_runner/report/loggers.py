"""Loggers to viewers people already use: `logger=none` (default) or `logger=tensorboard`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vae_runner.config.errors import ConfigError
from vae_runner.config.schema import LoggerConfig, TensorBoardLoggerConfig

# history key -> TensorBoard tag: related series share a chart
SCALAR_TAGS = {
    "train_loss": "loss/train",
    "test_loss": "loss/test",
    "train_recon": "recon/train",
    "test_recon": "recon/test",
    "train_kl": "kl/train",
    "test_kl": "kl/test",
    "kl_weight": "kl_weight",
    "lr": "lr",
    "grad_norm": "grad_norm/mean",
    "grad_norm_max": "grad_norm/max",
    "active_units": "active_units/kl_threshold",
    "active_units_burda": "active_units/burda",
    "epoch_seconds": "epoch_seconds",
}


class NoLogger:
    def epoch(self, record: dict[str, Any]) -> None:
        pass

    def images(self, grids: dict, epoch: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger(NoLogger):
    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "logger=tensorboard needs the tensorboard package: "
                "pip install 'vae-runner[tensorboard]' (or logger=none)"
            ) from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def epoch(self, record: dict[str, Any]) -> None:
        for key, tag in SCALAR_TAGS.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, record[key], global_step=record["epoch"])
        self.writer.flush()

    def images(self, grids: dict, epoch: int) -> None:
        for name, grid in grids.items():
            self.writer.add_image(name, grid, global_step=epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def build_logger(cfg: LoggerConfig, run_dir: Path) -> NoLogger:
    if isinstance(cfg, TensorBoardLoggerConfig):
        return TensorBoardLogger(Path(run_dir) / cfg.log_dir)
    return NoLogger()
