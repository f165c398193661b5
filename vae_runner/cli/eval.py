"""`vae-eval RUN_DIR`: a finished or interrupted run measured again, without training.

The test ELBO, the importance-weighted NLL with K samples, both active-unit counts and the KL of
each latent dimension, from the run's own config and data: one table on the terminal and
`eval.json` (written atomically) in the run directory or at `--out`. It takes no lock and
changes none of the run's files, so it runs beside a live training run.

Imports no torch until the command line is read: `vae-eval --help` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from vae_runner.config.errors import ConfigError
from vae_runner.cpu_threads import cpu_count, default_threads, wait_passively
from vae_runner.exit_codes import ExitCode
from vae_runner.faults import out_of_memory_line
from vae_runner.files import WriteError, write_json_atomic
from vae_runner.report.console import make_console, print_error, print_evaluation

EVAL_FILE = "eval.json"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """argparse's refusals in one line, as every other refusal (its usage is in --help)."""
        _refuse(f"{message} (see vae-eval --help)")


def _refuse(message: str) -> NoReturn:
    print_error(message)
    sys.exit(ExitCode.CONFIG)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vae-eval",
        description="Evaluate a finished or interrupted vae-train run without training: test "
        "ELBO, importance-weighted NLL, active units, KL per latent dimension. Prints a table "
        f"and writes RUN_DIR/{EVAL_FILE} (or --out); never changes the run's own files. "
        "Relative data paths of the run are read from the working directory.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a vae-train run directory")
    parser.add_argument(
        "--checkpoint",
        choices=("last", "best"),
        default="last",
        help="checkpoints/last.pt (default) or best.pt",
    )
    parser.add_argument(
        "--iw-samples",
        type=int,
        metavar="K",
        help="importance samples per test image (default: the run's eval.iw_samples; "
        "published tables use 5000)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="B",
        help="images per batch of the test pass (default: the run's batch_size)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda", "mps"),
        help="where to evaluate (default: the run's device setting)",
    )
    parser.add_argument("--out", type=Path, metavar="FILE", help=f"default: RUN_DIR/{EVAL_FILE}")
    return parser


# Far above the 5000 of published tables; each test image's K samples are one allocation.
MAX_IW_SAMPLES = 1_000_000


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    for option, value, example in (
        ("--iw-samples", args.iw_samples, 5000),
        ("--batch-size", args.batch_size, 1000),
    ):
        if value is not None and value < 1:
            _refuse(f"{option} must be >= 1 (got {value}), e.g. {option} {example}")
    if args.iw_samples is not None and args.iw_samples > MAX_IW_SAMPLES:
        _refuse(
            f"--iw-samples must be at most {MAX_IW_SAMPLES} (got {args.iw_samples}); published "
            "tables use 5000"
        )
    wait_passively()  # before torch is imported: its OpenMP runtime reads it once (cpu_threads)
    try:
        sys.exit(_evaluate(args))
    except ConfigError as err:
        _refuse(str(err))
    except KeyboardInterrupt:
        print_error("interrupted; nothing was written")
        sys.exit(ExitCode.INTERRUPTED)


def _output_file(args: argparse.Namespace) -> Path:
    """Where eval.json goes; refused before any work when that would overwrite something."""
    if args.out is not None and args.out.is_dir():
        _refuse(f"--out {args.out} is a folder: give a file name, e.g. {args.out / EVAL_FILE}")
    out: Path = args.out if args.out is not None else args.run_dir / EVAL_FILE
    if out.exists():
        _refuse(
            f"{out} already exists (an earlier evaluation): write this one elsewhere with "
            "--out FILE, or remove it"
        )
    if not out.parent.is_dir():
        _refuse(f"--out {out}: no such folder {out.parent}")
    return out


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from vae_runner.training import evaluation

    run_dir: Path = args.run_dir
    path = evaluation.checkpoint_file(run_dir, args.checkpoint)
    out = _output_file(args)
    cfg, checkpoint = evaluation.load_run(path)
    threads = cfg.device.threads or default_threads(cpu_count())  # the run's own rule
    if threads:
        torch.set_num_threads(threads)
    iw_samples = cfg.eval.iw_samples if args.iw_samples is None else args.iw_samples
    console = make_console()
    # The estimate can take many minutes (K=5000 on Fashion-MNIST, docs/eval.md): say what runs.
    estimate = f", with the IW estimate at K={iw_samples}" if iw_samples else ""
    console.print(
        f"Evaluating {path} (epoch {checkpoint['epoch']}){estimate}", markup=False, soft_wrap=True
    )
    try:
        measures = evaluation.evaluate_checkpoint(
            cfg,
            checkpoint,
            iw_samples=iw_samples,
            batch_size=args.batch_size or cfg.batch_size,
            start_dir=Path.cwd(),
            device_name=args.device,
        )
    except (RuntimeError, MemoryError) as err:  # K x one image's size did not fit in memory
        if out_of_memory_line(err) is None:
            raise
        print_error(
            f"out of memory with --iw-samples {iw_samples} (the estimate holds K samples of "
            "one test image at once): use a smaller --iw-samples; nothing was written"
        )
        return ExitCode.FAILED
    result = {
        "run_dir": str(run_dir.resolve()),
        "checkpoint": args.checkpoint,
        "epoch": checkpoint["epoch"],
        "epochs": cfg.epochs,
        "run_status": evaluation.run_status(run_dir),
        "seed": cfg.seed,
        **measures,
        "evaluated_at": evaluation.now(),
        "versions": evaluation.versions(),
    }
    try:
        write_json_atomic(out, result)
    except WriteError as err:  # its message names the file and the reason
        print_error(str(err.strerror))
        return ExitCode.FAILED
    print_evaluation(console, result, out)
    return ExitCode.COMPLETED
