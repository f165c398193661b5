"""Plots of a run, drawn from its history.json alone, so an old run can be redrawn.

`vae-plot RUN_DIR...` redraws them; the sweep summary reuses `plot_run_curves`' panels.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display is needed or used
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

CURVES_FILE, KL_MAP_FILE = "curves.png", "kl_per_dim.png"

# (title, y label, [(history key, legend label)], log scale)
PANELS = (
    (
        "Loss (ELBO terms)",
        "nats per sample",
        [("train_loss", "train"), ("test_loss", "test")],
        False,
    ),
    ("Reconstruction", "NLL, nats", [("train_recon", "train"), ("test_recon", "test")], False),
    ("KL divergence", "nats", [("train_kl", "train"), ("test_kl", "test")], False),
    ("Effective beta (KL weight)", "kl_weight", [("kl_weight", "kl_weight")], False),
    ("Learning rate", "lr", [("lr", "lr")], True),
    (
        "Gradient norm (pre-clip)",
        "global L2 norm",
        [("grad_norm", "mean"), ("grad_norm_max", "max")],
        True,
    ),
    (
        "Active units",
        "latent dims",
        [("active_units", "KL > threshold"), ("active_units_burda", "Burda")],
        False,
    ),
)


def _series(history: dict[str, Any], key: str) -> tuple[list, list]:
    points = [(e, v) for e, v in zip(history["epoch"], history.get(key, []), strict=False)]
    points = [(e, v) for e, v in points if v is not None]
    return [e for e, _ in points], [v for _, v in points]


def plot_run_curves(history: dict[str, Any], path: Path) -> Path:
    """Every per-epoch series of one run, one panel each."""
    fig, axes = plt.subplots(2, 4, figsize=(18, 8), constrained_layout=True)
    for ax, (title, ylabel, lines, log) in zip(axes.flat, PANELS, strict=False):
        for key, label in lines:
            epochs, values = _series(history, key)
            if values:
                ax.plot(epochs, values, marker="o", markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        if log and any(v > 0 for v in _series(history, lines[0][0])[1]):
            ax.set_yscale("log")
        if len(lines) > 1:
            ax.legend()
        ax.grid(alpha=0.3)
    axes.flat[-1].axis("off")
    axes.flat[-1].text(0, 0.5, _caption(history), fontsize=10, va="center", family="monospace")
    fig.suptitle(f"vae-train: {history.get('data_name', '?')}, status {history.get('status')}")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _caption(history: dict[str, Any]) -> str:
    cfg = history.get("config", {})
    lines = [
        f"optimizer  {cfg.get('optimizer', {}).get('name')}  lr {cfg.get('lr')}",
        f"beta       {cfg.get('beta')}  annealing {cfg.get('annealing', {}).get('name')}",
        f"batch      {cfg.get('batch_size')}  reduction {cfg.get('reduction', {}).get('name')}",
        f"best epoch {history.get('best_epoch')}",
        f"best test  {history.get('best_test_loss') or float('nan'):.4f}",
    ]
    return "\n".join(lines)


def plot_kl_heatmap(history: dict[str, Any], path: Path) -> Path | None:
    """KL of each latent dimension (rows) per epoch (columns): collapsed dims are dark rows."""
    rows = [kl for kl in history.get("kl_by_dim", []) if kl is not None]
    if not rows:
        return None
    import numpy as np

    grid = np.array(rows, dtype=float).T  # [latent_dim, epochs]
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * grid.shape[1] + 3), max(4, 0.25 * grid.shape[0])))
    image = ax.imshow(
        grid,
        aspect="auto",
        cmap="viridis",
        interpolation="nearest",
        extent=(0.5, grid.shape[1] + 0.5, grid.shape[0] - 0.5, -0.5),
    )
    fig.colorbar(image, ax=ax, label="KL (nats, test-set mean)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("latent dimension")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("KL per latent dimension\n(dark rows: collapsed, inactive dimensions)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_run(run_dir: Path, history: dict[str, Any] | None = None) -> list[Path]:
    """Draw curves.png and kl_per_dim.png into `run_dir` from its history."""
    from vae_runner.history import load_history

    run_dir = Path(run_dir)
    history = history if history is not None else load_history(run_dir)
    written = [plot_run_curves(history, run_dir / CURVES_FILE)]
    heat = plot_kl_heatmap(history, run_dir / KL_MAP_FILE)
    return written + ([heat] if heat else [])


def main(argv: list[str] | None = None) -> None:
    """`vae-plot RUN_DIR...`: redraw a run's plots from its history.json."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print("usage: vae-plot RUN_DIR...   redraw curves.png and kl_per_dim.png from history.json")
        sys.exit(0 if args else 2)
    status = 0
    for arg in args:
        try:
            for path in plot_run(Path(arg)):
                print(path)
        except (OSError, ValueError, KeyError) as err:
            print(f"Error: {arg}: cannot plot ({err})", file=sys.stderr)
            status = 2
    sys.exit(status)
