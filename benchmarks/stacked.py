"""Stacked training (hydra/launcher=stacked) against separate runs, in one table.

    python benchmarks/stacked.py                          # K = 1, 8, 64, 256 on this machine
    python benchmarks/stacked.py --members 1 8 --limit 2000 --epochs 2

For each K, a process of its own builds the training engines (vae_runner/training/engines.py) of K
members of the seed's model (784-400-20 MLP, Adam, clipping at 1.0, batch 128, each member its
own lr and seed, as a sweep's jobs) on Fashion-MNIST (the first --limit training images; the
whole test set is evaluated each epoch, as runs do), trains one epoch to warm up, then times
--epochs epochs (train + test, as history.json's `epoch_seconds`). A separate run is the engine
of one member (what `vae-train` trains with): K separate runs cost K times its epoch. Prints
seconds per epoch and per member-epoch, and the separate runs' cost over the stack's. Runs on
CUDA when torch sees a GPU (--device cpu to compare on the CPU). Needs Debian's
dataset-fashion-mnist (or --root DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"


def measure(members: int, limit: int | None, epochs: int, device: str, root: str) -> dict:
    """In this process: the engine of `members` members, its epochs timed."""
    import torch
    from hydra import compose, initialize_config_module

    from vae_runner.config.resolvers import register
    from vae_runner.config.typed import to_typed
    from vae_runner.cpu_threads import cpu_count, default_threads
    from vae_runner.data.images import load_data
    from vae_runner.training.build import build_device
    from vae_runner.training.engine import build_engine
    from vae_runner.training.engines import Engines, parts_for, split

    register()
    threads = default_threads(cpu_count())  # as vae-train sets them
    if threads:
        torch.set_num_threads(threads)
    with initialize_config_module("vae_runner.conf", version_base="1.3"):
        overrides = ["data=fashion_mnist", f"data.root={root}", f"device={device}"]
        overrides += [f"data.limit={limit if limit else 'null'}", "annealing=constant"]
        base = compose("config", overrides=overrides)
    cfgs = []
    for m in range(members):  # a sweep's jobs: lr from 1e-4 to 1e-2, a seed each
        node = base.copy()
        node.lr = 10 ** (-4 + 2 * m / max(1, members - 1))
        node.seed = m
        cfgs.append(to_typed(node))
    dev = build_device(cfgs[0].device)
    data = load_data(cfgs[0].data, cfgs[0].likelihood).to(dev)
    # as vae-train trains a stack: on a CPU whose runs get one thread each, a sub-stack per core
    parts = split(cfgs, parts_for(cfgs, dev, fixed_noise=False))
    engine = Engines([build_engine(part, data, dev) for part in parts])
    engine.start()  # the parts in processes of their own (Linux) or threads, as vae-train's
    active = [True] * members
    seconds = []
    try:
        for epoch in range(epochs + 1):  # the first: warm-up (allocations, kernels, caches)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            engine.train_epoch([1.0] * members, active)
            engine.evaluate(active)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if epoch:
                seconds.append(time.perf_counter() - started)
    finally:
        engine.close()
    return {
        "members": members,
        "epoch_s": statistics.median(seconds),
        "epochs_s": seconds,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "n_train": len(data.train),
        "n_test": len(data.test),
        "engines": len(parts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--limit", type=int, default=None, help="training images (default: all)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per K")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: measure K=one
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.limit, args.epochs, args.device, args.root)))
        return
    rows = []
    for members in args.members:
        command = [sys.executable, __file__, "--one", str(members), "--epochs", str(args.epochs)]
        command += ["--device", args.device, "--root", args.root]
        if args.limit:
            command += ["--limit", str(args.limit)]
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        if done.returncode:
            sys.exit(f"K={members} failed:\n{done.stderr[-2000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"measured K={members}: {rows[-1]['epoch_s']:.3f} s per epoch", file=sys.stderr)
    one = next((r["epoch_s"] for r in rows if r["members"] == 1), None)
    first = rows[0]
    print(
        f"{platform.node()} | {first['device']} | {first['threads']} threads | "
        f"{first['n_train']} training images, {first['n_test']} test images | "
        f"median of {args.epochs} epochs after a warm-up"
    )
    print(
        "| K members | engines | s per epoch | s per member-epoch | K separate runs / the stack |"
    )
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        k, epoch = r["members"], r["epoch_s"]
        ratio = f"{k * one / epoch:.2f}x" if one else "-"
        print(f"| {k} | {r['engines']} | {epoch:.3f} | {epoch / k:.4f} | {ratio} |")


if __name__ == "__main__":
    main()
