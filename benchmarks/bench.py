"""vae-runner's speed against the seed's own loop, in one process and one run.

    python benchmarks/bench.py                      # Fashion-MNIST, CPU (or CUDA when present)
    python benchmarks/bench.py --reps 5 --limit 20000

Measures, alternating the two loops so the machine's noise hits both alike (medians):
- the training epoch of the seed's loop (torchvision dataset + ToTensor + DataLoader, an
  .item() per batch) and of vae-runner's (benchmarks/seed_loop.py has the reference),
  with the seed's settings: 784-400-20 MLP, batch 128, Adam, clipping at 1.0, fp32;
- the float32 matrix-multiply ceiling of this machine (a 2048^2 matmul), and the model FLOP
  utilisation: the model's forward+backward FLOPs per second over that ceiling;
- peak resident memory (VmHWM, each in its own process so they do not mix) of one epoch of the
  seed's loop (load, train, test) against a whole `vae-train` run of one epoch on the same data
  (which also estimates the IW NLL, draws its image grids and plots);
- start-up: `vae-train --help` and `--cfg job` (and whether they import torch), `import torch`
  alone, and a whole short run (digits, one epoch) from launch to exit.
Prints one table. Needs Debian's dataset-fashion-mnist (or data.root via --root).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def model_flops_per_sample(data_dim=784, hidden=400, latent=20) -> float:
    """Forward + backward FLOPs of the MLP VAE's matrix products for one sample.

    Forward: 2 * MACs. Backward: the weight gradients (2 * MACs) and the input gradients
    (2 * MACs) of every layer but the first, whose input (the data) needs none.
    """
    layers = [
        (data_dim, hidden),
        (hidden, latent),
        (hidden, latent),
        (latent, hidden),
        (hidden, data_dim),
    ]
    macs = sum(i * o for i, o in layers)
    first = data_dim * hidden
    return 2 * macs + 2 * macs + 2 * (macs - first)


def matmul_ceiling(device: str, size: int = 2048, reps: int = 10) -> float:
    import torch

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    times = []
    for _ in range(reps + 2):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times[2:])


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def fashion_root(root: str | None) -> str:
    """A torchvision root for FashionMNIST, prepared the way vae-runner finds it."""
    from vae_runner.data import idx

    for place in idx.places_to_look("fashion_mnist", root):
        files = idx.find_files(place.path)
        if files:
            return str(idx.torchvision_root(files, "fashion_mnist"))
    sys.exit(
        "bench.py: Fashion-MNIST's IDX files not found: apt-get install dataset-fashion-mnist "
        "(Debian), or --root DIR (the folder holding them)"
    )


def runner_setup(device: str, limit: int | None, root: str | None):
    import io

    from hydra import compose, initialize_config_module
    from rich.console import Console

    from vae_runner.config.resolvers import register
    from vae_runner.config.typed import to_typed
    from vae_runner.training.trainer import build_trainer

    overrides = ["data=fashion_mnist", f"device={device}", "data.download=false"]
    if limit:
        overrides.append(f"data.limit={limit}")
    if root:
        overrides.append(f"data.root={root}")
    register()
    with initialize_config_module("vae_runner.conf", version_base="1.3"):
        cfg = to_typed(compose("config", overrides=overrides))
    return cfg, build_trainer(cfg, Console(file=io.StringIO()))


def time_runner_epoch(cfg, trainer) -> float:
    from vae_runner.training.epoch import train_epoch

    _sync(trainer.device.type)
    start = time.perf_counter()
    train_epoch(
        trainer.train_model,
        trainer.data,
        trainer.optimizer,
        cfg,
        0.1,
        trainer.shuffle,
    )
    _sync(trainer.device.type)
    return time.perf_counter() - start


def seed_setup(device: str, limit: int | None, root: str):
    import torch
    from seed_loop import SeedVAE, seed_loaders

    torch.manual_seed(0)
    model = SeedVAE().to(device)
    train_loader, _test_loader = seed_loaders(root, limit=limit)  # the seed's loop holds both
    return model, torch.optim.Adam(model.parameters(), lr=1e-3), train_loader


def time_seed_epoch(model, optimizer, loader, device: str) -> float:
    from seed_loop import seed_train_epoch

    _sync(device)
    start = time.perf_counter()
    seed_train_epoch(model, loader, optimizer, device=device)
    _sync(device)
    return time.perf_counter() - start


def child(device: str, limit: int | None, root: str | None) -> None:
    """One epoch of the seed's loop (load, train, test); its peak RSS (MiB) as JSON on stdout."""
    import torch
    from seed_loop import SeedVAE, seed_loaders, seed_test_epoch

    torch.manual_seed(0)
    model = SeedVAE().to(device)
    train_loader, test_loader = seed_loaders(fashion_root(root), limit=limit)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    time_seed_epoch(model, optimizer, train_loader, device)
    seed_test_epoch(model, test_loader, device=device)
    print(json.dumps({"peak_mib": peak_rss_mib()}))


def peak_rss_mib() -> float:
    # VmHWM, not ru_maxrss: after fork + exec, ru_maxrss still holds the parent's peak.
    status = Path("/proc/self/status").read_text()
    if "VmHWM:" in status:
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


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


def peak_memory(kind: str, args, tmp: Path) -> float:
    if kind == "seed":
        command = [sys.executable, __file__, "--child", "--device", args.device]
        command += ["--limit", str(args.limit)] if args.limit else []
        command += ["--root", args.root] if args.root else []
    else:
        overrides = [
            "data=fashion_mnist",
            "data.download=false",
            "epochs=1",
            f"device={args.device}",
            f"hydra.run.dir={tmp / 'memory-run'}",
        ]
        overrides += [f"data.limit={args.limit}"] if args.limit else []
        overrides += [f"data.root={args.root}"] if args.root else []
        probe = RUNNER_PEAK.format(here=str(HERE), args=overrides)
        command = [sys.executable, "-c", probe]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]


def wall(command: list[str], env=None, reps: int = 3) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def startup(tmp: Path) -> dict[str, float | bool]:
    exe = str(Path(sys.executable).with_name("vae-train"))
    probe = (
        "import sys; sys.argv=['vae-train','--cfg','job']; from vae_runner.cli.train import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)"
    )
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    torch_import = statistics.median(
        float(
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import time; t=time.perf_counter(); "
                    "import torch; print(time.perf_counter()-t)",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for _ in range(3)
    )
    # What a plain torch program pays before it trains: `import torch` plus torch.optim's first
    # use, which imports torch._dynamo
    floor_probe = (
        "import time; t=time.perf_counter(); import torch\n"
        "p=[torch.nn.Parameter(torch.zeros(2))]; o=torch.optim.Adam(p); p[0].grad=torch.ones(2)\n"
        "o.step(); print(time.perf_counter()-t)"
    )
    floor = statistics.median(
        float(
            subprocess.run(
                [sys.executable, "-c", floor_probe], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(3)
    )
    # What the user waits for: a whole short run (digits, one epoch), launch to exit.
    whole = []
    for i in range(3):
        started = time.perf_counter()
        subprocess.run(
            [exe, "epochs=1", "eval.iw_samples=0", f"hydra.run.dir={tmp}/{i}"],
            capture_output=True,
            check=True,
        )
        whole.append(time.perf_counter() - started)
    return {
        "help_s": wall([exe, "--help"]),
        "cfg_job_s": wall([exe, "--cfg", "job"]),
        "cfg_job_imports_torch": "NO-TORCH" not in imported.stderr,
        "import_torch_s": torch_import,
        "torch_training_floor_s": floor,
        "short_run_s": statistics.median(whole),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="epochs of each loop (alternating)")
    parser.add_argument("--limit", type=int, default=None, help="training images (default all)")
    parser.add_argument("--root", default=None, help="folder of the Fashion-MNIST IDX files")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.child:
        child(args.device, args.limit, args.root)
        return

    seed_root = fashion_root(args.root)  # first: a missing data set is one line, not a traceback
    cfg, trainer = runner_setup(args.device, args.limit, args.root)
    model, optimizer, loader = seed_setup(args.device, args.limit, seed_root)
    n = len(trainer.data.train)
    seed_times, runner_times, ceilings = [], [], []
    # build_trainer set the allocator thresholds a CPU run trains under (allocator.py); they
    # are process-wide, so the seed's epochs run under them too: conservative for the ratio.
    time_runner_epoch(cfg, trainer)  # warm-up: allocator, caches, compilation
    for _ in range(args.reps):
        seed_times.append(time_seed_epoch(model, optimizer, loader, args.device))
        runner_times.append(time_runner_epoch(cfg, trainer))
        # measured in every repetition, so a utilisation compares like with like on a
        # machine whose speed drifts
        ceilings.append(matmul_ceiling(args.device))
    seed_s, runner_s = statistics.median(seed_times), statistics.median(runner_times)
    flops = model_flops_per_sample() * n
    peak = statistics.median(ceilings)

    def utilisation(times: list[float]) -> float:
        return statistics.median(flops / t / c for t, c in zip(times, ceilings, strict=True))

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        memory = {kind: peak_memory(kind, args, Path(tmp)) for kind in ("seed", "runner")}
        start = startup(Path(tmp))
    figures = {
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "train_images": n,
        "seed_epoch_s": seed_s,
        "runner_epoch_s": runner_s,
        "speedup": seed_s / runner_s,
        "matmul_gflops": peak / 1e9,
        "matmul_gflops_range": [min(ceilings) / 1e9, max(ceilings) / 1e9],
        "runner_model_gflops": flops / runner_s / 1e9,
        "runner_mfu": utilisation(runner_times),  # median over repetitions
        "seed_mfu": utilisation(seed_times),
        "seed_peak_mib": memory["seed"],
        "runner_peak_mib": memory["runner"],
        **start,
    }
    report(figures, seed_times, runner_times)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


def report(f: dict, seed_times: list[float], runner_times: list[float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"vae-runner vs the seed's loop: Fashion-MNIST, {f['device']}, "
        f"{f['torch_threads']} threads, {f['train_images']} images/epoch"
    )
    for column in ("measure", "seed loop", "vae-runner", "target / note"):
        table.add_column(column)
    table.add_row(
        "training epoch (median s)",
        f"{f['seed_epoch_s']:.2f}",
        f"{f['runner_epoch_s']:.2f}",
        (
            f"{f['speedup']:.2f}x faster (target >= 4x)"
            if f["speedup"] >= 1
            else f"{1 / f['speedup']:.2f}x SLOWER (target: >= 4x faster)"
        ),
    )
    table.add_row(
        "  all epochs (s)",
        " ".join(f"{t:.2f}" for t in seed_times),
        " ".join(f"{t:.2f}" for t in runner_times),
        "alternating",
    )
    table.add_row(
        "model FLOP/s (GFLOP/s)",
        f"{f['runner_model_gflops'] / f['speedup']:.1f}",
        f"{f['runner_model_gflops']:.1f}",
        "matmul ceiling {:.1f} GFLOP/s ({:.0f}-{:.0f})".format(
            f["matmul_gflops"], *f["matmul_gflops_range"]
        ),
    )
    table.add_row(
        "model FLOP utilisation",
        f"{f['seed_mfu']:.0%}",
        f"{f['runner_mfu']:.0%}",
        "target >= 50% (per repetition)",
    )
    table.add_row(
        "peak resident memory (MiB)",
        f"{f['seed_peak_mib']:.1f}",
        f"{f['runner_peak_mib']:.1f}",
        "seed: an epoch of its loop; vae-runner: a whole 1-epoch run. Target: runner <= seed",
    )
    table.add_row(
        "vae-train --help / --cfg job (s)",
        "",
        f"{f['help_s']:.2f} / {f['cfg_job_s']:.2f}",
        f"imports torch: {f['cfg_job_imports_torch']}",
    )
    table.add_row(
        "a whole 1-epoch digits run (s)",
        "",
        f"{f['short_run_s']:.2f}",
        f"import torch alone {f['import_torch_s']:.2f} s; "
        f"import torch + plain torch.optim's first step {f['torch_training_floor_s']:.2f} s",
    )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
