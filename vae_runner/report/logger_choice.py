"""The logger a run's config chooses (`logger=none`, `tensorboard` or `mlflow`): apart from
loggers.py, which MLflow's logger (tracking.py) builds on, so that neither imports the other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vae_runner.config.schema import LoggerConfig, MLflowLoggerConfig, TensorBoardLoggerConfig
from vae_runner.report.loggers import NoLogger, TensorBoardLogger


def build_logger(
    cfg: LoggerConfig,
    run_dir: Path,
    *,
    start_dir: Path | None = None,
    sweep_dir: Path | None = None,
    run_name: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> NoLogger:
    """The run's logger. `sweep_dir`: a sweep's job (MLflow makes it a child of the sweep's
    run); `run_name`: how a tracker names the run; `warn`: says what a tracker could not log."""
    if isinstance(cfg, TensorBoardLoggerConfig):
        return TensorBoardLogger(Path(run_dir) / cfg.log_dir)
    if isinstance(cfg, MLflowLoggerConfig):
        from vae_runner.report.tracking import MLflowLogger  # imports no mlflow until start()

        return MLflowLogger(cfg, Path(run_dir), start_dir, sweep_dir, run_name, warn)
    return NoLogger()
