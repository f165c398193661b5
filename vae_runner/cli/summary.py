"""`vae-summary DIR...`: a sweep's summary again, or one over any set of run directories."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vae_runner.exit_codes import ExitCode
from vae_runner.record import HISTORY_FILE
from vae_runner.report.console import print_error
from vae_runner.sweep.rundirs import is_run_dir
from vae_runner.sweep.summary import summarize


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vae-summary",
        description="Rank runs by best validation loss (by best test loss unless every "
        "completed run has a validation split, data.val_fraction): writes sweep_summary.json, "
        "sweep_summary.csv and curves.png, and prints the table. Exit status: 0 when every "
        "run completed, else the highest of the runs' exit codes (as vae-train -m).",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="sweep or run dirs")
    parser.add_argument(
        "--out",
        type=Path,
        help="where the files go (default: DIR, when DIR is one sweep directory)",
    )
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        print_error(f"not a directory: {', '.join(missing)}")
        sys.exit(ExitCode.CONFIG)
    out = args.out
    if out is None:
        if len(args.dirs) > 1 or is_run_dir(args.dirs[0]):
            print_error(
                "only a single sweep directory holds its own summary: "
                "choose where this one goes with --out DIR"
            )
            sys.exit(ExitCode.CONFIG)
        out = args.dirs[0]
    summary = summarize(args.dirs, out)
    if summary is None:
        print_error(
            f"no run directories (with {HISTORY_FILE} or .hydra/) in "
            f"{', '.join(str(d) for d in args.dirs)}"
        )
        sys.exit(ExitCode.CONFIG)
    sys.exit(summary["exit_code"])
