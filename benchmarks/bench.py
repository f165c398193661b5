"""vae-runner's speed against the seed's own loop, as a user meets it, in one table.

    python benchmarks/bench.py                  # Fashion-MNIST, CPU (or CUDA when present)
    python benchmarks/bench.py --pairs 1 --limit 20000 --skip-busy    # a quick look

Every figure comes from separate processes, alternated so the machine's drift hits both alike:
- quiet: the epoch (train + test, as history.json's `epoch_seconds` records it) of `vae-train`
  against the seed's loop (benchmarks/seed_loop.py: torchvision dataset + ToTensor +
  DataLoader, an .item() per batch), both with the seed's settings (784-400-20 MLP, batch 128,
  Adam, clipping at 1.0); fp32, and bf16 (`device.precision=bf16`) in a row of its own, since
  it changes the arithmetic;
- busy: the same, while a second torch training (--load: 2 threads, torch's defaults) that this
  script starts keeps both cores busy;
- short run: `vae-train epochs=2` on digits with its default outputs (grids, plots, history,
  the IW NLL), launch to exit, against `python -c "import torch"` plus the run's own training
  seconds; the same with `pictures=false`; and the floor of any torch training, `import
  torch` plus building a torch.optim.Adam (which imports torch._dynamo);
- the float32 matrix-multiply ceiling (a 2048^2 matmul, its own process, between pairs) and the
  model FLOP utilisation of an epoch against it;
- peak resident memory (VmHWM) of the seed's loop against a whole one-epoch `vae-train`;
  `vae-train --help` and `--cfg job`.
Ratios are taken pair by pair and their median is quoted, with the range. Needs Debian's
dataset-fashion-mnist (or --root DIR).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VAE_TRAIN = str(Path(sys.executable).with_name("vae-train"))
LOAD_THREADS = 2


def model_flops_per_sample(data_dim=784, hidden=400, latent=20) -> tuple[float, float]:
    """(training, test) FLOPs of the MLP VAE's matrix products for one sample.

    Forward: 2 * MACs. Backward: the weight gradients (2 * MACs) and the input gradients
    (2 * MACs) of every layer but the first, whose input (the data) needs none.
    """
    layers = [(data_dim, hidden), (hidden, latent), (hidden, latent), (latent, hidden)]
    layers.append((hidden, data_dim))
    macs = sum(i * o for i, o in layers)
    first = data_dim * hidden
    return 2 * macs + 2 * macs + 2 * (macs - first), 2 * macs


def peak_rss_mib() -> float:
    # VmHWM, not ru_maxrss: after fork + exec, ru_maxrss still holds the parent's peak.
    status = Path("/proc/self/status").read_text() if Path("/proc/self/status").exists() else ""
    if "VmHWM:" in status:
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


# ---------------------------------------------------------------- child processes


def ceiling_child(device: str, size: int = 2048, reps: int = 10) -> None:
    """The float32 matmul ceiling of this machine (GFLOP/s), as JSON on stdout."""
    import torch

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    times = []
    for _ in range(reps + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    capability = torch.backends.cpu.get_cpu_capability()  # AVX2, AVX512, ...: bf16 needs AVX512
    gflops = 2 * size**3 / statistics.median(times[2:]) / 1e9
    print(json.dumps({"gflops": gflops, "capability": capability}))


def load_child() -> None:
    """The busy machine's other program: a torch training with 2 threads, until killed."""
    import torch

    torch.set_num_threads(LOAD_THREADS)
    net = torch.nn.Sequential(torch.nn.Linear(784, 400), torch.nn.ReLU(), torch.nn.Linear(400, 784))
    optimizer = torch.optim.Adam(net.parameters())
    x = torch.rand(128, 784)
    for step in itertools.count():
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(net(x), x).backward()
        optimizer.step()
        if step == 0:
            print("training", flush=True)  # the parent waits for this line, not for a time


# ---------------------------------------------------------------- measurements


def fashion_root(root: str | None) -> str:
    from vae_runner.data import idx

    for place in idx.places_to_look("fashion_mnist", root):
        if idx.find_files(place.path):
            return str(place.path)
    sys.exit(
        "bench.py: Fashion-MNIST's IDX files not found: apt-get install dataset-fashion-mnist "
        "(Debian), or --root DIR (the folder holding them)"
    )


def seed_epochs(args) -> dict:
    """One process of the seed's loop: its per-epoch seconds (train + test) and peak memory."""
    command = [sys.executable, str(HERE / "seed_loop.py"), "--epochs", str(args.epochs)]
    command += ["--root", args.root, "--device", args.device]
    command += ["--limit", str(args.limit)] if args.limit else []
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def runner_epochs(args, tmp: Path, *extra: str) -> dict:
    """One `vae-train` process: history.json's epoch_seconds."""
    run_dir = Path(tempfile.mkdtemp(dir=tmp))
    command = [VAE_TRAIN, "data=fashion_mnist", "data.download=false", f"data.root={args.root}"]
    command += [f"epochs={args.epochs}", "eval.iw_samples=0", "pictures=false"]
    command += [f"device={args.device}", f"hydra.run.dir={run_dir}", *extra]
    command += [f"data.limit={args.limit}"] if args.limit else []
    subprocess.run(command, capture_output=True, text=True, check=True)
    history = json.loads((run_dir / "history.json").read_text())
    return {"epoch_seconds": history["epoch_seconds"]}


def ceiling(args) -> dict:
    command = [sys.executable, __file__, "--ceiling-child", "--device", args.device]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@contextlib.contextmanager
def busy_machine():
    """A second torch training on the same cores, for as long as the block runs."""
    load = subprocess.Popen(
        [sys.executable, __file__, "--load-child"], stdout=subprocess.PIPE, text=True
    )
    try:
        # its first step done: the cores are busy when the first pair starts
        if load.stdout.readline().strip() != "training":
            sys.exit("bench.py: the busy machine's load did not start")
        yield
    finally:
        load.kill()
        load.wait()


def pairs(args, tmp: Path, label: str) -> dict:
    """Alternating processes: seed, vae-runner fp32, vae-runner bf16; ratios pair by pair."""
    seed, fp32, bf16, ceilings, seed_peaks = [], [], [], [], []
    for i in range(args.pairs):
        print(f"  {label}: pair {i + 1}/{args.pairs}", file=sys.stderr, flush=True)
        seed_run = seed_epochs(args)
        seed.append(statistics.median(seed_run["epoch_seconds"]))
        seed_peaks.append(seed_run["peak_mib"])
        fp32.append(statistics.median(runner_epochs(args, tmp)["epoch_seconds"]))
        if i < args.bf16_pairs:  # its seed partner is this pair's
            bf16_run = runner_epochs(args, tmp, "device.precision=bf16")
            bf16.append(statistics.median(bf16_run["epoch_seconds"]))
        measured = ceiling(args)
        ceilings.append(measured["gflops"])
    return {
        "seed_epoch_s": seed,
        "runner_epoch_s": fp32,
        "runner_bf16_epoch_s": bf16,
        "matmul_gflops": ceilings,
        "cpu_capability": f"CPU vector capability {measured['capability']}",
        "seed_peak_mib": seed_peaks,
        "speedup": [s / r for s, r in zip(seed, fp32, strict=True)],
        "speedup_bf16": [s / r for s, r in zip(seed, bf16, strict=False)],
    }


OPTIM_FLOOR = "import torch; torch.optim.Adam([torch.zeros(1, requires_grad=True)])"


def short_runs(args, tmp: Path) -> dict:
    """`vae-train epochs=2` on digits, launch to exit, against import torch + its training."""
    torch_import, optim_floor, whole, whole_plain, training = [], [], [], [], []
    for i in range(args.short_reps):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        torch_import.append(time.perf_counter() - started)
        # What any torch program with an optimizer pays before its first batch: torch.optim
        # imports torch._dynamo when the first optimizer is built.
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", OPTIM_FLOOR], check=True)
        optim_floor.append(time.perf_counter() - started)
        for pictures, times in ((True, whole), (False, whole_plain)):
            run_dir = tmp / f"short-{i}-{pictures}"
            command = [VAE_TRAIN, "epochs=2", f"device={args.device}", f"hydra.run.dir={run_dir}"]
            command += [] if pictures else ["pictures=false"]
            started = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            times.append(time.perf_counter() - started)
            if pictures:
                history = json.loads((run_dir / "history.json").read_text())
                training.append(sum(history["epoch_seconds"]))
    floor = [t + s for t, s in zip(torch_import, training, strict=True)]
    return {
        "import_torch_s": torch_import,
        "import_torch_and_build_adam_s": optim_floor,
        "short_run_s": whole,
        "short_run_no_pictures_s": whole_plain,
        "short_training_s": training,
        "short_ratio": [w / f for w, f in zip(whole, floor, strict=True)],
        "short_ratio_no_pictures": [w / f for w, f in zip(whole_plain, floor, strict=True)],
    }


# `vae-train` itself, with its peak memory printed as it exits
RUNNER_PEAK = (
    "import atexit, json, sys\n"
    "sys.path.insert(0, {here!r})\n"
    "from bench import peak_rss_mib\n"
    "atexit.register(lambda: print(json.dumps({{'peak_mib': peak_rss_mib()}})))\n"
    "sys.argv = ['vae-train'] + {args!r}\n"
    "from vae_runner.cli.train import entry\n"
    "entry()\n"
)


def memory_and_startup(args, tmp: Path) -> dict:
    """Peak memory of a whole default one-epoch run (IW NLL, grids, plots); --help times."""
    overrides = ["data=fashion_mnist", "data.download=false", f"data.root={args.root}"]
    overrides += ["epochs=1", f"device={args.device}", f"hydra.run.dir={tmp / 'memory-run'}"]
    overrides += [f"data.limit={args.limit}"] if args.limit else []
    probe = RUNNER_PEAK.format(here=str(HERE), args=overrides)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    runner_peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]

    def wall(*command: str) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    probe = (
        "import sys; sys.argv=['vae-train','--cfg','job']; from vae_runner.cli.train import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)"
    )
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return {
        "runner_peak_mib": runner_peak,
        "help_s": wall(VAE_TRAIN, "--help"),
        "cfg_job_s": wall(VAE_TRAIN, "--cfg", "job"),
        "cfg_job_imports_torch": "NO-TORCH" not in imported.stderr,
    }


# ---------------------------------------------------------------- the table


def median_range(values: list[float], fmt: str = ".2f", unit: str = "") -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:{fmt}}{unit} ({low:{fmt}}-{high:{fmt}})"


def report(f: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    train_flops, test_flops = model_flops_per_sample()
    epoch_flops = train_flops * f["train_images"] + test_flops * f["test_images"]

    def utilisation(times: list[float], ceilings: list[float]) -> str:
        shares = [epoch_flops / t / (c * 1e9) for t, c in zip(times, ceilings, strict=True)]
        return f"{statistics.median(shares):.0%}"

    table = Table(
        title=f"vae-runner vs the seed's loop: Fashion-MNIST, {f['device']}, "
        f"{os.cpu_count()} cores, {f['train_images']} + {f['test_images']} images per epoch, "
        f"{f['epochs']} epochs x {f['pairs']} alternating pairs"
    )
    for column in ("row", "seed loop", "vae-runner", "ratio (median, range)", "target / note"):
        table.add_column(column)
    for name, rows in (("quiet", f["quiet"]), ("busy", f.get("busy"))):
        if rows is None:
            table.add_row(name, "", "", "", "skipped (--skip-busy)")
            continue
        note = (
            "target >= 4x"
            if name == "quiet"
            else (f"target >= 2x; load: a second torch training, {LOAD_THREADS} threads")
        )
        table.add_row(
            f"{name}: epoch s (train + test)",
            median_range(rows["seed_epoch_s"]),
            median_range(rows["runner_epoch_s"]),
            median_range(rows["speedup"], unit="x"),
            note,
        )
        if rows["runner_bf16_epoch_s"]:
            table.add_row(
                f"{name}: epoch s, bf16",
                "",
                median_range(rows["runner_bf16_epoch_s"]),
                median_range(rows["speedup_bf16"], unit="x"),
                "device.precision=bf16: other arithmetic, reported apart; "
                f"{rows['cpu_capability']}",
            )
        table.add_row(
            f"{name}: FLOP utilisation",
            utilisation(rows["seed_epoch_s"], rows["matmul_gflops"]),
            utilisation(rows["runner_epoch_s"], rows["matmul_gflops"]),
            "",
            f"matmul ceiling {median_range(rows['matmul_gflops'], '.0f', ' GFLOP/s')}",
        )
    s = f["short"]
    table.add_row(
        "short: vae-train epochs=2 (s)",
        "",
        median_range(s["short_run_s"]),
        median_range(s["short_ratio"], unit="x"),
        "digits, default outputs; ratio to import torch "
        f"{statistics.median(s['import_torch_s']):.2f} s + training "
        f"{statistics.median(s['short_training_s']):.2f} s; target <= 2x",
    )
    table.add_row(
        "short: the same, pictures=false",
        "",
        median_range(s["short_run_no_pictures_s"]),
        median_range(s["short_ratio_no_pictures"], unit="x"),
        "no grids, no plots",
    )
    table.add_row(
        "short: a plain torch program (s)",
        "",
        median_range(s["import_torch_and_build_adam_s"]),
        "",
        "import torch + build torch.optim.Adam (which imports torch._dynamo): the floor of "
        "any torch training",
    )
    table.add_row(
        "peak resident memory (MiB)",
        f"{statistics.median(f['quiet']['seed_peak_mib']):.0f}",
        f"{f['runner_peak_mib']:.0f}",
        "",
        "seed: its loop's process; vae-runner: a whole default 1-epoch run",
    )
    table.add_row(
        "vae-train --help / --cfg job (s)",
        "",
        f"{f['help_s']:.2f} / {f['cfg_job_s']:.2f}",
        "",
        f"imports torch: {f['cfg_job_imports_torch']}",
    )
    Console(width=150).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="alternating seed/runner pairs")
    parser.add_argument("--epochs", type=int, default=2, help="epochs in each process")
    parser.add_argument("--short-reps", type=int, default=3, help="short runs of each kind")
    parser.add_argument("--limit", type=int, default=None, help="training images (default all)")
    parser.add_argument("--root", default=None, help="folder of the Fashion-MNIST IDX files")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument(
        "--bf16-pairs", type=int, default=1, help="pairs that also time device.precision=bf16"
    )
    parser.add_argument("--skip-busy", action="store_true", help="leave out the busy rows")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--ceiling-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pairs < 1 or args.epochs < 1:
        parser.error("--pairs and --epochs must be at least 1")
    if args.load_child:
        load_child()
        return
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.ceiling_child:
        ceiling_child(args.device)
        return

    args.root = str(Path(fashion_root(args.root)).resolve())  # a missing data set: one line
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        quiet = pairs(args, tmp, "quiet")
        busy = None
        if not args.skip_busy:
            with busy_machine():
                busy = pairs(args, tmp, "busy")
        print("  short runs", file=sys.stderr, flush=True)
        short = short_runs(args, tmp)
        extra = memory_and_startup(args, tmp)
    train_images = args.limit or 60000
    figures = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": args.device,
        "epochs": args.epochs,
        "pairs": args.pairs,
        "train_images": train_images,
        "test_images": 10000,
        "quiet": quiet,
        "busy": busy,
        "short": short,
        **extra,
    }
    report(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
