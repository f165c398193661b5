"""loss_vs_<key>.png: a sweep's measure against the value it swept (sweep.against prepares it).

Each completed seed a hollow dot, each setting's mean a bar with its 95% interval (Student's t,
as in the settings table), the means of a numeric key joined by a line per series, the verdict's
winner a gold star just above its points; with a tie, the best and the settings level with it a
white one each. A job that did not complete has no loss to draw: it is a triangle just above
the frame, named in the legend by its status, never dropped.

matplotlib's Figure API only (no pyplot), as in report.plots.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from vae_runner.report.plots import _colours, _save

SEED_SPREAD = 0.25  # categories: seeds spread over this much of the gap between two categories
MARGIN = 0.08  # the y-axis: the seeds and means, and this much of their range on either side


def _positions(data: dict[str, Any], series_index: int) -> float:
    """Categories: series side by side around each category's position (dodged)."""
    n = len(data["series"])
    return 0.0 if n == 1 else (series_index - (n - 1) / 2) * 0.6 / n


def _seed_xs(x: float, n: int, kind: str, n_series: int) -> list[float]:
    """Seeds of one setting, spread a little so that equal values stay visible (on either side
    of the mean's bar, and within the series' own slot of a category)."""
    if n <= 1:
        return [x] * n
    steps = [i / (n - 1) - 0.5 for i in range(n)]
    if kind == "category":
        return [x + min(SEED_SPREAD, 0.5 / n_series) * s for s in steps]
    if kind == "log":
        return [x * 10 ** (0.06 * s) for s in steps]
    return [x] * n  # linear: at the exact value


def plot_loss_vs(data: dict[str, Any], path: Path) -> Path:
    """Draw one key's plot (see the module's docstring) and write it to `path`."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    kind = data["x"]
    width = 9.0 if kind != "category" else max(7.5, 1.3 * len(data["categories"]) + 5.0)
    fig = Figure(figsize=(width, 5.4), layout="constrained")
    ax, note = fig.subplots(2, 1, height_ratios=[1, 0.1])
    colours = _colours(len(data["series"]))
    lines = []  # the PNG's Description: one line per setting, what was drawn
    off_statuses: set[str] = set()
    for index, (series, colour) in enumerate(zip(data["series"], colours, strict=True)):
        shift = _positions(data, index) if kind == "category" else 0.0
        means = []
        for point in series["points"]:
            x = point["x"] + shift
            _draw_setting(fig, ax, point, x, colour, kind, len(data["series"]))
            off_statuses.update(point["off"])
            if point["mean"] is not None:
                means.append((x, point["mean"]))
            lines.append(f"{point['label']}\t{point['mean']}\t{len(point['seeds'])}")
        if kind != "category" and len(means) > 1:
            xs, ys = [m[0] for m in means], [m[1] for m in means]
            ax.plot(xs, ys, color=colour, linewidth=1.0, alpha=0.7, zorder=2)
    _axes(ax, data)
    handles = _legend(data, colours, off_statuses, Line2D)
    fig.legend(handles=handles, fontsize=8, loc="outside right upper")
    note.axis("off")
    note.text(0, 1, _caption(data, int(width * 11)), fontsize=8, va="top", ha="left")
    _save(fig, Path(path), dpi=110, metadata={"Description": "\n".join(lines)})
    return Path(path)


def _draw_setting(fig, ax, point: dict, x: float, colour, kind: str, n_series: int) -> None:
    """One setting: its seeds, its mean and interval, its star, its jobs without a loss."""
    from matplotlib.transforms import ScaledTranslation

    seed_xs = _seed_xs(x, len(point["seeds"]), kind, n_series)
    ax.scatter(
        seed_xs, point["seeds"], s=22, facecolors="none", edgecolors=[colour], linewidths=1.1,
        zorder=3,
    )  # fmt: skip
    if point["mean"] is not None:
        mean = point["mean"]
        low, high = point["ci95"] or (mean, mean)
        ax.errorbar(
            [x], [mean], yerr=[[mean - low], [high - mean]], fmt="_", markersize=16, capsize=4,
            color=colour, linewidth=1.6, zorder=4,
        )  # fmt: skip
    if point["winner"] or point["tied"]:  # a star just above, not over, its points
        ax.plot(
            [x], [max([*point["seeds"], point["mean"]])], marker="*", markersize=15,
            markerfacecolor="gold" if point["winner"] else "white", markeredgecolor="black",
            linestyle="none", zorder=5, clip_on=False,
            transform=ax.transData + ScaledTranslation(0, 0.16, fig.dpi_scale_trans),
        )  # fmt: skip
    for _ in point["off"]:  # no loss to draw: just above the frame, never over a measured point
        ax.plot(
            [x], [1.025], marker="^", markersize=8, color="crimson", linestyle="none", zorder=5,
            transform=ax.get_xaxis_transform(), clip_on=False,  # x in data, y in axes units
        )  # fmt: skip


def _axes(ax, data: dict[str, Any]) -> None:
    """The x-axis (log, linear at the values swept, or categories), labels and y-limits."""
    from matplotlib.ticker import NullLocator

    kind, key = data["x"], data["key"]
    if kind == "log":
        ax.set_xscale("log")
    if kind == "category":
        ax.set_xticks(range(len(data["categories"])), data["categories"])
        ax.set_xlim(-0.6, len(data["categories"]) - 0.4)
    else:  # a tick at each value swept, written as it reads: 1e-05, 0.0001, 0.01
        values = sorted({p["x"] for s in data["series"] for p in s["points"]})
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(key + (" (log scale)" if kind == "log" else ""))
    ax.set_ylabel(f"{data['measure_name']} (nats per sample)")
    ax.set_title(f"{data['measure_name'].capitalize()} against {key}", fontsize=12, pad=12)
    ax.grid(True, alpha=0.3)
    # The axis spans the seeds and means; an interval from two seeds (t = 12.7) can be far wider
    # than any value measured and then runs off the axis, which shows it is wide.
    measured = [v for s in data["series"] for p in s["points"] for v in (*p["seeds"], p["mean"])]
    measured = [v for v in measured if v is not None]
    if measured:
        low, high = min(measured), max(measured)
        pad = MARGIN * (high - low) or MARGIN * abs(high) or 1.0
        ax.set_ylim(low - pad, high + pad)


def _legend(data, colours, off_statuses, Line2D) -> list:
    handles = [
        Line2D([], [], marker="o", markerfacecolor="none", color="grey", ls="none", label="a seed"),
        Line2D([], [], marker="_", markersize=12, color="grey", label="mean, 95% interval"),
    ]
    points = [p for s in data["series"] for p in s["points"]]
    winner = next((p["label"] for p in points if p["winner"]), None)
    if winner:
        handles.append(_star(Line2D, "gold", f"winner: {winner}"))
    if any(p["tied"] for p in points):
        identical = data["verdict"].get("kind") == "identical"
        label = "trained identically: no winner" if identical else "tied within noise: no winner"
        handles.append(_star(Line2D, "none", label))
    for status in sorted(off_statuses):
        label = f"{status}: no loss (▲ above the frame)"
        handles.append(Line2D([], [], marker="^", color="crimson", ls="none", label=label))
    if len(data["series"]) > 1:
        for series, colour in zip(data["series"], colours, strict=True):
            handles.append(Line2D([], [], color=colour, marker="s", ls="-", label=series["name"]))
    return handles


def _star(Line2D, face: str, label: str):
    return Line2D(
        [], [], marker="*", markersize=12, markerfacecolor=face, markeredgecolor="black",
        ls="none", label=label,
    )  # fmt: skip


def _caption(data: dict[str, Any], width: int) -> str:
    sentence = data["verdict"].get("sentence") or ""
    if data["others_vary"]:
        sentence += (
            f" Other keys vary too ({data['others_vary']} combinations): drawn as one series."
        )
    return textwrap.fill(sentence.strip(), width=width)
