"""Plots drawn from history.json records (matplotlib's Agg canvas: no display, no pyplot state).

`plot_curves` takes (label, history) pairs as loaded from `history.json`, so a sweep's comparison
and a single run's own curves are the same function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# (history key, panel title): the test loss that ranks the jobs, and beside it the training loss
# and the KL term, which show whether a run trained or collapsed.
PANELS = (
    ("test_loss", "test loss (nats per sample)"),
    ("train_loss", "train loss (annealed β)"),
    ("test_kl", "KL(q(z|x) || p(z)), test set"),
)

LINE_STYLES = ("-", "--", "-.", ":")


def _values(history: dict[str, Any], key: str) -> list[float]:
    """A per-epoch series with null (non-finite when written) as NaN: a gap in the line."""
    return [math.nan if v is None else float(v) for v in history.get(key) or []]


def plot_curves(
    runs: Sequence[tuple[str, dict[str, Any]]],
    path: Path,
    *,
    title: str | None = None,
) -> list[str]:
    """Write a PNG of every run's curves, one line per run in each panel, labelled.

    A label starting with ★ is drawn thicker (the winner). Returns the labels of the lines drawn
    in the test-loss panel, in order.
    """
    from matplotlib.figure import Figure  # Figure + savefig uses Agg; pyplot is never imported
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(5.0 * len(PANELS) + 3.0, 4.5), layout="constrained")
    axes = fig.subplots(1, len(PANELS))
    colours = _colours(len(runs))
    for ax, (key, panel_title) in zip(axes, PANELS, strict=True):
        finite: list[float] = []
        for index, ((label, history), colour) in enumerate(zip(runs, colours, strict=True)):
            y = _values(history, key)
            x = history.get("epoch") or list(range(1, len(y) + 1))
            winner = label.startswith("★")
            ax.plot(
                x[: len(y)],
                y,
                label=label,
                color=colour,
                linewidth=2.6 if winner else 1.4,
                # runs with the same curve (AdamW's tiny decay) stay visible on top of each other
                linestyle="-" if winner else LINE_STYLES[index % len(LINE_STYLES)],
                marker="o" if len(y) < 15 else None,
                markersize=3,
            )
            finite += [v for v in y if math.isfinite(v)]
        if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
            ax.set_yscale("log")  # a diverging run would flatten every other curve
        ax.set_title(panel_title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    drawn = [line.get_label() for line in axes[0].get_lines()]
    if drawn:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90, metadata={"Description": "\n".join(drawn)})
    tmp.replace(path)
    return drawn


def _colours(n: int) -> list:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](i / max(1, n - 1)) for i in range(n)]
