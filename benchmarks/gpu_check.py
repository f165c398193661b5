"""device.graphs on a GPU, in one table (benchmarks/gpu_check.sh runs it; see docs/speed.md).

    python benchmarks/gpu_check.py                  # CUDA, Fashion-MNIST: about 3 minutes
    python benchmarks/gpu_check.py --cpu-dry-run    # the same steps, tiny, on the CPU

Each row is a process of its own (a fresh CUDA context): the engine that vae-train trains with
(training/engine.py), for a single run and for a stack of members (each its own lr and seed, as
a sweep's jobs), trained three ways: `off` (the eager step, torch's fused optimizer kernels),
`static` (the step a graph captures, run as it is) and `captured` (device.graphs=true: captured
once, replayed). One warm-up epoch (the capture happens there), then --epochs timed epochs
(train + test pass, as history.json's `epoch_seconds`) that exercise what a capture must follow:
every epoch its own KL weights, a learning-rate change per member before the second timed
epoch, and in a stack member 1 sitting the first timed epoch out (a graph of its own). Then the
seed's own loop (benchmarks/seed_loop.py) and the final IW estimate of the single run's model at
K = --iw-k.

The check: `captured` against `static`, member by member (the last epoch's train and test loss):
the same kernels on the same data and noise, so they agree to CAPTURE_TOLERANCE or the capture is
wrong, and the script exits 1. `static` against `off` is printed for information: torch's fused
optimizer and the vectorised one round differently (float32), and the difference grows with the
steps (on the CPU: 2e-6 after 50 steps, 7e-4 after 1300), so no tolerance tells a bug there.

--cpu-dry-run proves the script on a machine without a GPU: digits, a stack of 4, K = 20 and
100, and no `captured` rows (its seconds say nothing about a GPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"

# `captured` against `static`, relative, per member: the same kernels replayed, so only
# non-deterministic reductions (atomics) could part them.
CAPTURE_TOLERANCE = 1e-6
# The targets on an H200-class GPU (docs/speed.md)
TARGETS = {"seed loop x": 40.0, "stack epoch s": 1.5, "IW K=1000 s": 1.0}


def measure(members: int, mode: str, args) -> dict:
    """In this process: `members` members trained --epochs (+1 warm-up) epochs, timed."""
    import torch
    from hydra import compose, initialize_config_module

    from vae_runner.config.resolvers import register
    from vae_runner.config.typed import to_typed
    from vae_runner.cpu_threads import cpu_count, default_threads
    from vae_runner.data.images import load_data
    from vae_runner.training.build import build_device
    from vae_runner.training.engine import build_engine
    from vae_runner.training.graphed_step import CapturedStep, GraphedTraining
    from vae_runner.training.metrics import importance_weighted_nll

    register()
    threads = default_threads(cpu_count())  # as vae-train sets them
    if threads:
        torch.set_num_threads(threads)
    device = "cpu" if args.cpu_dry_run else "cuda"
    overrides = [f"device={device}", "annealing=constant", "eval.iw_samples=0"]
    overrides += [f"device.graphs={str(mode == 'captured').lower()}"]
    if args.cpu_dry_run:
        overrides += ["data=digits"]
    else:
        overrides += ["data=fashion_mnist", f"data.root={args.root}", "data.download=false"]
    with initialize_config_module("vae_runner.conf", version_base="1.3"):
        base = compose("config", overrides=overrides)
    cfgs = []
    for m in range(members):  # a sweep's jobs: lr from 1e-4 to 1e-2, a seed each
        node = base.copy()
        node.lr = 10 ** (-4 + 2 * m / max(1, members - 1)) if members > 1 else 1e-3
        node.seed = m
        cfgs.append(to_typed(node))
    dev = build_device(cfgs[0].device)
    data = load_data(cfgs[0].data, cfgs[0].likelihood).to(dev)
    engine = build_engine(cfgs, data, dev)
    if mode == "static":
        engine.graphed = GraphedTraining(engine, capture=False)
    seconds, train, test = [], [], []
    for epoch in range(args.epochs + 1):  # the first: warm-up (and the capture)
        kl = [min(1.0, 0.25 * (epoch + 1) + 0.1 * (m % 3)) for m in range(members)]
        active = [not (epoch == 1 and m == 1) for m in range(members)]
        if epoch == 2:
            for m in range(members):  # as a scheduler's step: a new lr between epochs
                engine.set_lr(m, engine.lr(m) * (0.5 if m % 2 else 0.1))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        train = engine.train_epoch(kl, active)
        test = engine.evaluate(active)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if epoch:
            seconds.append(time.perf_counter() - started)
    if mode == "captured":  # a capture really happened: the full batches replay a graph
        assert isinstance(engine.graphed._steps[cfgs[0].batch_size], CapturedStep)
    row = {
        "epoch_s": statistics.median(seconds),
        "train_loss": [t.recon + t.kl for t in train],
        "test_loss": [t.recon + t.kl for t in test],
    }
    if members == 1:
        model = engine.member_model(0)
        for k in args.iw_k:
            estimate = importance_weighted_nll(model, data.test, k, to_float=data.to_float)
            row[f"iw{k}_s"], row[f"iw{k}_nll"] = estimate.seconds, estimate.nll
    return row


def seed_loop(args) -> float | None:
    """The seed's loop (benchmarks/seed_loop.py): its median epoch seconds."""
    command = [sys.executable, str(HERE / "seed_loop.py"), "--root", args.root]
    command += ["--epochs", "2", "--device", "cpu" if args.cpu_dry_run else "cuda"]
    if args.cpu_dry_run:
        command += ["--limit", "1000"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr.strip().splitlines()[-1:], file=sys.stderr)
        return None
    return statistics.median(json.loads(done.stdout)["epoch_seconds"])


def child(members: int, mode: str, args) -> dict:
    command = [sys.executable, __file__, "--one", str(members), "--mode", mode]
    command += ["--epochs", str(args.epochs), "--root", args.root]
    command += ["--iw-k", *map(str, args.iw_k)] + (["--cpu-dry-run"] if args.cpu_dry_run else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"members={members} {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def apart(a: list[float], b: list[float]) -> float:
    """The largest relative difference, member by member."""
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))


def table(rows: dict, seed_s: float | None, args) -> None:
    def num(value, digits=3):
        return "n/a" if value is None else f"{value:.{digits}f}"

    print("| run | step | epoch s | member-epoch s | train loss | test loss | vs static |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (members, mode), r in rows.items():
        name = "single run" if members == 1 else f"stack of {members}"
        static = rows[(members, "static")]
        vs = max(apart(r[k], static[k]) for k in ("train_loss", "test_loss"))
        print(
            f"| {name} | {mode} | {num(r['epoch_s'])} | {num(r['epoch_s'] / members, 4)} | "
            f"{num(sum(r['train_loss']) / members, 4)} | {num(sum(r['test_loss']) / members, 4)}"
            f" | {vs:.1e} |"
        )
    print(f"| the seed's loop | - | {num(seed_s)} | {num(seed_s)} | - | - | - |")
    print()
    modes = [mode for members, mode in rows if members == 1]
    print("| IW estimate, single run | " + " | ".join(f"{m}: s | -log p(x)" for m in modes) + " |")
    print("| --- |" + " --- | --- |" * len(modes))
    for k in args.iw_k:
        cells = [
            f"{num(rows[(1, m)][f'iw{k}_s'])} | {num(rows[(1, m)][f'iw{k}_nll'], 4)}" for m in modes
        ]
        print(f"| K={k} | " + " | ".join(cells) + " |")
    if (1, "captured") in rows:
        best = rows[(1, "captured")]
        stack = max(members for members, _ in rows)
        print()
        if seed_s:
            target = TARGETS["seed loop x"]
            ratio = seed_s / best["epoch_s"]
            print(f"single run, captured: {ratio:.1f}x the seed's loop (target: {target:.0f}x)")
        print(
            f"stack of {stack}, captured: {rows[(stack, 'captured')]['epoch_s']:.3f} s an epoch "
            f"(target for 64: at most {TARGETS['stack epoch s']} s)"
        )
        if 1000 in args.iw_k:
            target = TARGETS["IW K=1000 s"]
            print(f"IW K=1000: {best['iw1000_s']:.2f} s (target: under {target} s)")


def wrong_captures(rows: dict) -> list[str]:
    """Members whose captured step ends further than CAPTURE_TOLERANCE from the same step run
    as it is (the static step)."""
    said = []
    for (members, mode), r in rows.items():
        if mode != "captured":
            continue
        for key in ("train_loss", "test_loss"):
            gap = apart(r[key], rows[(members, "static")][key])
            line = f"members={members} {key}: captured and static {gap:.1e} apart"
            print(
                f"{line} ({'within' if gap <= CAPTURE_TOLERANCE else 'OVER'} {CAPTURE_TOLERANCE})"
            )
            if gap > CAPTURE_TOLERANCE:
                said.append(line)
    return said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny, on the CPU")
    parser.add_argument("--members", type=int, default=None, help="the stack (64; dry run 4)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after a warm-up")
    parser.add_argument("--iw-k", type=int, nargs="+", default=None, help="1000 5000; dry 20 100")
    parser.add_argument("--root", default=DEFAULT_ROOT, help="Fashion-MNIST's IDX files")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: measure this
    parser.add_argument("--mode", default="off", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.iw_k = args.iw_k or ([20, 100] if args.cpu_dry_run else [1000, 5000])
    if args.one is not None:
        print(json.dumps(measure(args.one, args.mode, args)))
        return
    members = args.members or (4 if args.cpu_dry_run else 64)
    modes = ("off", "static") if args.cpu_dry_run else ("off", "static", "captured")
    rows = {}
    for m in (1, members):
        for mode in modes:
            rows[(m, mode)] = child(m, mode, args)
            print(f"measured members={m} {mode}", file=sys.stderr)
    table(rows, seed_loop(args), args)
    print()
    if wrong_captures(rows):  # the capture trains another model than the step it captured
        sys.exit(1)


if __name__ == "__main__":
    main()
