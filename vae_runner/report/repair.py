"""What a kill after a run finished left undone, done when the run is started again.

A run records `completed` (or `diverged`) before its last steps: the run's plots, then its
tracker's end (MLflow's artifacts and status). A SIGKILL there leaves the record finished, so the
same command says "nothing to do" and `resume=` says "already finished": both first repair what
the kill left, adding only what is missing (a finished record is never rewritten):

- temporary files of the interrupted writes (`.curves.png.tmp.png`, a whole `.last.pt.*.tmp`);
- `curves.png` and `kl_per_dim.png` when the run draws pictures and one is missing;
- an MLflow run still `RUNNING`: its missing epochs, final measures and files are logged and it
  is ended with the run's status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vae_runner.config.schema import Config, MLflowLoggerConfig
from vae_runner.rundir import remove_temporary_files


def repair_finished(
    run_dir: Path, history: dict[str, Any], cfg: Config, start_dir: Path | None
) -> list[str]:
    """Repair the finished run in `run_dir` (its record `history`, its settings `cfg`);
    returns what was done, as short phrases for one log line (empty: nothing was missing)."""
    run_dir = Path(run_dir)
    done = []
    if remove_temporary_files(run_dir):
        done.append("removed the temporary files of interrupted writes")
    if cfg.pictures and history.get("epoch"):
        drawn = _draw_missing_plots(run_dir, history)
        if drawn:
            done.append(f"drew {' and '.join(drawn)}")
    if isinstance(cfg.logger, MLflowLoggerConfig) and _mlflow_left_running(run_dir):
        ended = _end_mlflow_run(run_dir, history, cfg, start_dir)
        if ended:
            done.append(ended)
    return done


def _draw_missing_plots(run_dir: Path, history: dict[str, Any]) -> list[str]:
    from vae_runner.report.plots import (
        CURVES_FILE,
        KL_MAP_FILE,
        plot_kl_heatmap,
        plot_run_curves,
    )

    drawn = []
    if not (run_dir / CURVES_FILE).exists():
        plot_run_curves(history, run_dir / CURVES_FILE)
        drawn.append(CURVES_FILE)
    if not (run_dir / KL_MAP_FILE).exists() and plot_kl_heatmap(history, run_dir / KL_MAP_FILE):
        drawn.append(KL_MAP_FILE)
    return drawn


def _mlflow_left_running(run_dir: Path) -> bool:
    from vae_runner.report.tracking import recorded_run_status

    return recorded_run_status(run_dir) == "RUNNING"


def _end_mlflow_run(run_dir: Path, history: dict[str, Any], cfg: Config, start_dir) -> str:
    """The run's own logger, carried on and finished as the run's end would have."""
    from vae_runner.report.console import log
    from vae_runner.report.logger_choice import build_logger

    warned: list[str] = []
    logger = build_logger(cfg.logger, run_dir, start_dir=start_dir, warn=warned.append)
    logger.start(history)
    logger.finish(history)
    for message in warned:
        log.warning(f"Warning: {message}")
    return "" if warned else "ended its MLflow run, which a kill had left RUNNING"
