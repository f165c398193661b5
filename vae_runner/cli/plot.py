"""`vae-plot DIR...`: redraw the pictures from the records.

A run directory: its curves.png and kl_per_dim.png from its history.json. A sweep directory (one
that holds run directories): its curves.png and loss_vs_<key>.png from its jobs' records, as the
sweep's end drew them; sweep_summary.json and .csv are left as they are (`vae-summary DIR`
rewrites those).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vae_runner.report.plots import plot_run
from vae_runner.sweep.rundirs import is_run_dir
from vae_runner.sweep.summary import SUMMARY_JSON, redraw_plots

SWEEP_FILES = ("multirun.yaml", SUMMARY_JSON)  # Hydra's record of a sweep; our summary


def _plot(path: Path) -> list[Path]:
    if is_run_dir(path):
        return plot_run(path)
    if not path.is_dir():
        raise ValueError("not a directory")
    if not any((path / name).is_file() for name in SWEEP_FILES):
        # any folder of runs would do, but a picture is written into it: only into a sweep's own
        raise ValueError(
            f"neither a run directory (history.json, .hydra/) nor a sweep directory "
            f"({' or '.join(SWEEP_FILES)}); to compare other runs: vae-summary DIR... --out OUT"
        )
    drawn = redraw_plots(path)
    if not drawn:
        raise ValueError("no run directories (with history.json or .hydra/) in it")
    return drawn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vae-plot",
        description="Redraw a run's curves.png and kl_per_dim.png from its history.json, or a "
        "sweep's curves.png and loss_vs_<key>.png from its run directories.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="run or sweep dirs")
    status = 0
    for path in parser.parse_args(argv).dirs:
        try:
            for written in _plot(path):
                print(written)
        except (OSError, ValueError, KeyError) as err:
            print(f"Error: {path}: cannot plot ({err})", file=sys.stderr)
            status = 2
    sys.exit(status)
