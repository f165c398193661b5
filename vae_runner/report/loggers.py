"""Loggers to viewers people already use: `logger=none` (default), `tensorboard` or `mlflow`.

A logger follows a run through four calls, all made by training.runner:
- start(history): once the run's record exists (fresh, resumed or restarted);
- epoch(history, record): after each epoch is in history.json and last.pt;
- images(grids, epoch): the image grids, when the run draws them;
- finish(history): at the end, however the run ended, once history.json and the PNGs are
  written (its status is final then).
Building a logger imports nothing: its package is imported by start(), so a missing extra is
found as the run starts and recorded like any other failure. Which one a run gets:
report/logger_choice.py (MLflow's is report/tracking.py's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vae_runner.config.errors import ConfigError
from vae_runner.config.typed import flat_config

# history key -> TensorBoard tag: related series share a chart
SCALAR_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "test_loss": "loss/test",
    "train_recon": "recon/train",
    "val_recon": "recon/val",
    "test_recon": "recon/test",
    "train_kl": "kl/train",
    "val_kl": "kl/val",
    "test_kl": "kl/test",
    "kl_weight": "kl_weight",
    "lr": "lr",
    "grad_norm": "grad_norm/mean",
    "grad_norm_max": "grad_norm/max",
    "active_units": "active_units/kl_threshold",
    "active_units_burda": "active_units/burda",
    "epoch_seconds": "epoch_seconds",
}

# The final measures, as TensorBoard's HParams tab and MLflow show them: the record's own
# best_* fields (and stopped_epoch when early_stop ended the run), and its `final` section's
# measures as final/<name>
BEST_KEYS = ("best_epoch", "best_val_loss", "best_test_loss", "stopped_epoch")
FINAL_KEYS = ("test_loss", "test_elbo", "test_nll_iw", "active_units", "active_units_burda")


def final_measures(history: dict[str, Any]) -> dict[str, float]:
    """The run's final measures that it has (an interrupted run has no `final` section)."""
    final = history.get("final") or {}
    values = {k: history.get(k) for k in BEST_KEYS}
    values.update({f"final/{k}": final.get(k) for k in FINAL_KEYS})
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}


class NoLogger:
    def start(self, history: dict[str, Any]) -> None:
        pass

    def epoch(self, history: dict[str, Any], record: dict[str, Any]) -> None:
        pass

    def images(self, grids: dict, epoch: int) -> None:
        pass

    def finish(self, history: dict[str, Any]) -> None:
        pass


class TensorBoardLogger(NoLogger):
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.writer = None
        self.images_at: int | None = None  # the epoch whose grids were written last

    def start(self, history: dict[str, Any]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "logger=tensorboard needs the tensorboard package: "
                "pip install 'vae-runner[tensorboard]' (or logger=none)"
            ) from None
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def epoch(self, history: dict[str, Any], record: dict[str, Any]) -> None:
        for key, tag in SCALAR_TAGS.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, record[key], global_step=record["epoch"])
        self.writer.flush()

    def images(self, grids: dict, epoch: int) -> None:
        # The last epoch's grids are drawn by plot_every and by the end of the run: once here.
        if self.writer is None or epoch == self.images_at:
            return
        for name, grid in grids.items():
            self.writer.add_image(name, grid, global_step=epoch)
        self.writer.flush()
        self.images_at = epoch

    def finish(self, history: dict[str, Any]) -> None:
        if self.writer is None:
            return
        try:
            if history.get("epoch"):  # the HParams tab: the config beside the final measures
                params = hparams(history.get("config") or {})
                params["status"] = str(history.get("status"))
                measures = {f"hparam/{k}": v for k, v in final_measures(history).items()}
                # run_name "." writes into this run's own folder, not a timestamped one below
                self.writer.add_hparams(
                    params, measures, run_name=".", global_step=history["epoch"][-1]
                )
        finally:
            self.writer.close()


def hparams(config: dict[str, Any]) -> dict[str, int | float | str | bool]:
    """The config as TensorBoard's hparams take it: scalars kept, lists and null as text."""
    out: dict[str, int | float | str | bool] = {}
    for key, value in flat_config(config).items():
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        else:
            out[key] = "null" if value is None else str(value)
    return out
