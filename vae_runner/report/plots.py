"""Every plot, drawn from history.json records with matplotlib's Figure API (the Agg canvas: no
display and no pyplot state, so runs in threads or in one process never share a figure).

- `plot_curves`: (label, history) pairs, one line each: a sweep's comparison (curves.png).
- `plot_run`: one run's own curves.png (every monitored series) and kl_per_dim.png.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vae_runner.files import write_through_temporary

# (history key, panel title): the test loss that ranks the jobs, and beside it the training loss
# and the KL term, which show whether a run trained or collapsed.
PANELS = (
    ("test_loss", "test loss (nats per sample)"),
    ("train_loss", "train loss (annealed β)"),
    ("test_kl", "KL(q(z|x) || p(z)), test set"),
)

LINE_STYLES = ("-", "--", "-.", ":")

# The loss panels' y-axis is fitted to the leading runs (the first LEADERS, ranked best first), so
# that one far-off setting (lr=1e-5's slow start, a diverging run) cannot flatten the curves that
# decide the answer; what is cut off is marked (focus_limits, plot_curves).
FOCUSED = ("val_loss", "test_loss", "train_loss")
LEADERS = 2
ZOOM = 2.0  # fit the axis to the leaders only when that at least doubles their scale


def _values(history: dict[str, Any], key: str) -> list[float]:
    """A per-epoch series with null (non-finite when written) as NaN: a gap in the line."""
    return [math.nan if v is None else float(v) for v in history.get(key) or []]


def _mean_and_band(histories: list[dict[str, Any]], key: str) -> tuple[list, list, list, list]:
    """Per epoch: the mean over the seeds that recorded it, and their min and max."""
    by_epoch: dict[int, list[float]] = {}
    for history in histories:
        for epoch, value in zip(history.get("epoch") or [], _values(history, key), strict=False):
            if math.isfinite(value):
                by_epoch.setdefault(int(epoch), []).append(value)
    epochs = sorted(by_epoch)
    means = [math.fsum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]
    return epochs, means, [min(by_epoch[e]) for e in epochs], [max(by_epoch[e]) for e in epochs]


def focus_limits(
    leaders: Sequence[Sequence[float]],
    everyone: Sequence[Sequence[float]],
    *,
    skip: int = 1,
    margin: float = 0.08,
) -> tuple[float, float] | None:
    """Y-limits that keep the leaders' curves readable, or None when every value fits anyway.

    From the lowest finite value of any series (nothing below the leaders is hidden) up to the
    highest of the leaders' values after their first `skip` epochs (every run starts far
    above where it ends), widened by `margin` of that range on both sides; only when that
    magnifies the axis ZOOM times or more. Each series is one value per epoch (a mean, a band's
    edge); NaN and inf are ignored.
    """

    def finite(series):
        return [v for v in series if math.isfinite(v)]

    lowest = [v for series in everyone for v in finite(series)]
    top = [v for s in leaders for v in finite(s[skip:] if len(s) > 2 * skip else s)]
    if not lowest or not top:
        return None
    low, high = min(lowest), max(top)
    pad = margin * (high - low) if high > low else margin * abs(high) or 1.0
    if max(lowest) - low < ZOOM * (high - low + 2 * pad):
        return None  # nothing is cut off, or too little is gained to be worth cutting
    return low - pad, high + pad


def plot_curves(
    runs: Sequence[tuple[str, dict[str, Any] | list[dict[str, Any]]]],
    path: Path,
    *,
    title: str | None = None,
) -> list[str]:
    """Write a PNG of every run's curves, one line per run in each panel, labelled.

    A run given as a list of histories (the seeds of one setting) is drawn as their mean per
    epoch with a shaded band from the lowest to the highest seed. A label starting with ★ is
    drawn thicker (the winner); one starting with = is tied with it. Returns the labels of the
    lines drawn in the test-loss panel, in order.
    """
    from matplotlib.figure import Figure  # Figure + savefig uses Agg; pyplot is never imported
    from matplotlib.ticker import MaxNLocator

    histories = [h for _, r in runs for h in (r if isinstance(r, list) else [r])]
    panels = PANELS
    if any("val_loss" in h for h in histories):  # the loss the runs were chosen on, first
        panels = (("val_loss", "validation loss (chooses the best epoch)"), *PANELS)
    fig = Figure(figsize=(5.0 * len(panels) + 3.0, 4.5), layout="constrained")
    axes = fig.subplots(1, len(panels))
    colours = _colours(len(runs))
    banded = False
    clipped = []
    for ax, (key, panel_title) in zip(axes, panels, strict=True):
        finite: list[float] = []
        drawn_series: list[tuple[int, list, list, Any]] = []  # run, x, y or band edge, colour
        for index, ((label, runs_of), colour) in enumerate(zip(runs, colours, strict=True)):
            seeds = runs_of if isinstance(runs_of, list) else [runs_of]
            x, y, low, high = _mean_and_band(seeds, key)
            if len(seeds) == 1:  # one run: every epoch as recorded, a gap where not finite
                y = _values(seeds[0], key)
                x = (seeds[0].get("epoch") or list(range(1, len(y) + 1)))[: len(y)]
            winner = label.startswith("★")
            ax.plot(
                x,
                y,
                label=label,
                color=colour,
                linewidth=2.6 if winner else 1.4,
                # runs with the same curve (identical settings) stay visible on top of each other
                linestyle="-" if winner else LINE_STYLES[index % len(LINE_STYLES)],
                marker="o" if len(y) < 15 else None,
                markersize=3,
            )
            drawn_series.append((index, list(x), list(y), colour))
            if len(seeds) > 1:
                ax.fill_between(x, low, high, color=colour, alpha=0.18, linewidth=0)
                banded = True
                finite += low + high
                drawn_series += [(index, list(x), low, colour), (index, list(x), high, colour)]
            finite += [v for v in y if math.isfinite(v)]
        limits = None
        if key in FOCUSED and len(runs) > LEADERS:
            leaders = [y for run, _, y, _ in drawn_series if run < LEADERS]
            limits = focus_limits(leaders, [y for _, _, y, _ in drawn_series])
        if limits is not None:
            labels = [label for label, _ in runs]
            _clip(ax, limits, [(labels[run], x, y, colour) for run, x, y, colour in drawn_series])
            panel_title += "\n(axis fitted to the leaders; ▲ off the top)"
            clipped.append(key)
        elif finite and min(finite) > 0 and max(finite) / min(finite) > 20:
            ax.set_yscale("log")  # a diverging run would flatten every other curve
        ax.set_title(panel_title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    drawn = [line.get_label() for line in axes[0].get_lines() if line.get_label()[:1] != "_"]
    if drawn:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    if banded:
        title = (title + "\n" if title else "") + (
            "lines: mean over seeds; bands: lowest to highest seed (★ winner, = tied with it)"
        )
    if title:
        fig.suptitle(title)
    metadata = {"Description": "\n".join(drawn), "Clipped": " ".join(clipped)}
    _save(fig, Path(path), dpi=90, metadata=metadata)
    return drawn


def _clip(ax, limits: tuple[float, float], drawn: list[tuple[str, list, list, Any]]) -> None:
    """Fix the y-axis to `limits`, mark each epoch drawn above it by a ▲ at the top edge and
    name the runs that are off the axis for most of their epochs."""
    ax.set_ylim(*limits)
    off = {}
    for label, x, y, colour in drawn:
        over = [e for e, v in zip(x, y, strict=False) if math.isfinite(v) and v > limits[1]]
        if 2 * len(over) > len(x) and label not in off:
            off[label] = colour
        if over:
            ax.plot(
                over,
                [1.0] * len(over),
                marker="^",
                markersize=5,
                color=colour,
                linestyle="none",
                transform=ax.get_xaxis_transform(),  # x in epochs, y in axes units
                clip_on=False,
            )
    for row, (label, colour) in enumerate(off.items()):  # name what is off the axis
        ax.text(
            0.98, 0.97 - 0.07 * row, f"▲ {label}", color=colour, fontsize=7, ha="right",
            va="top", transform=ax.transAxes,
        )  # fmt: skip


def _save(fig, path: Path, **options) -> None:
    """Write the PNG through a temporary name, so a half-written picture never replaces one."""
    write_through_temporary(path, lambda tmp: fig.savefig(tmp, format="png", **options))


def _colours(n: int) -> list:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](i / max(1, n - 1)) for i in range(n)]


# --------------------------------------------------------------------------- one run
CURVES_FILE, KL_MAP_FILE = "curves.png", "kl_per_dim.png"

# (title, y label, [(history key, legend label)], log scale)
RUN_PANELS = (
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
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # Fixed margins, not layout="constrained": the solver took half of this figure's drawing
    # time, which a short run waits for (benchmarks/RESULTS.md); the panels' size is fixed.
    fig = Figure(figsize=(18, 8))
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.07, top=0.9, wspace=0.32, hspace=0.38)
    axes = fig.subplots(2, 4)
    for ax, (title, ylabel, lines, log) in zip(axes.flat, RUN_PANELS, strict=False):
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
    _save(fig, Path(path), dpi=100)
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
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    grid = np.array(rows, dtype=float).T  # [latent_dim, epochs]
    fig = Figure(figsize=(max(6, 0.25 * grid.shape[1] + 3), max(4, 0.25 * grid.shape[0])))
    ax = fig.subplots()
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
    _save(fig, Path(path), dpi=100)
    return Path(path)


def plot_run(run_dir: Path, history: dict[str, Any] | None = None) -> list[Path]:
    """Draw curves.png and kl_per_dim.png into `run_dir` from its history."""
    from vae_runner.record import load_history

    run_dir = Path(run_dir)
    history = history if history is not None else load_history(run_dir)
    written = [plot_run_curves(history, run_dir / CURVES_FILE)]
    heat = plot_kl_heatmap(history, run_dir / KL_MAP_FILE)
    return written + ([heat] if heat else [])
