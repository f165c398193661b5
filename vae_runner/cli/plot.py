"""`vae-plot RUN_DIR...`: redraw a run's curves.png and kl_per_dim.png from its history.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vae_runner.report.plots import plot_run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vae-plot", description="Redraw curves.png and kl_per_dim.png from history.json."
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    status = 0
    for run_dir in parser.parse_args(argv).run_dirs:
        try:
            for path in plot_run(run_dir):
                print(path)
        except (OSError, ValueError, KeyError) as err:
            print(f"Error: {run_dir}: cannot plot ({err})", file=sys.stderr)
            status = 2
    sys.exit(status)
