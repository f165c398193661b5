"""The loss against the swept setting: typed setting values, and what loss_vs_<key>.png draws.

A sweep over `lr` (or beta, a weight decay, an optimizer) answers "which value is best, and by how
much": the measure that ranks the sweep (the best validation loss, else the best test loss; see
summary.ranked_on) against the value of the swept key, each seed a point, each setting's mean and
95% interval, the verdict's winner marked (with a tie: the best and the settings level with it).

One plot per key whose value differs between settings. When more than one key varies, the other
keys' values split the settings into series (one colour each); when they form more than
MAX_SERIES combinations (a random search), the settings are drawn as one series and the plot says
that other keys vary too. When more than MAX_KEYS keys vary (`vae-summary` over runs started
separately, with unrelated overrides) no such plot is drawn: there is no one swept value.

Imports no torch; matplotlib only in `draw_loss_vs`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from vae_runner.config.overrides import values_by_key
from vae_runner.sweep.rundirs import Job
from vae_runner.sweep.settings import MEASURES, SEED_KEY, finite_number, rank_key

LOG_SPAN = 100.0  # a numeric axis is logarithmic when its values are all > 0 and max/min >= this
MAX_SERIES = 8  # more combinations of the other keys than this: drawn as one series
MAX_KEYS = 3  # more keys varying than this (runs from unrelated invocations): no loss_vs plots
DEFAULT = "(default)"  # the category of a setting that did not set the key


def _typed(job: Job) -> dict[str, Any]:
    try:
        values = values_by_key(job.overrides)
    except Exception:  # an overrides.yaml this Hydra cannot read: no typed values
        return {}
    values.pop(SEED_KEY, None)
    return values


def _same_value(a: Any, b: Any) -> bool:
    """Equal and of the same type: 1, 1.0 and True are three values of a key."""
    return type(a) is type(b) and a == b


def varying_keys(values: list[dict[str, Any]]) -> list[str]:
    """The keys whose value (or presence) differs between the settings, in first-seen order."""
    keys = list(dict.fromkeys(k for v in values for k in v))
    missing = object()
    return [
        k
        for k in keys
        if any(not _same_value(v.get(k, missing), values[0].get(k, missing)) for v in values)
    ]


def add_values(settings: list[dict[str, Any]], jobs: list[Job]) -> None:
    """Give each setting `values`: the keys its label shows (those that differ between settings;
    every key when there is one setting), each typed by Hydra's override parser."""
    by_name = {job.name: job for job in jobs}
    typed = [_typed(by_name[s["jobs"][0]]) if s["jobs"] else {} for s in settings]
    shown = varying_keys(typed) if len(settings) > 1 else list(typed[0]) if typed else []
    for setting, values in zip(settings, typed, strict=True):
        setting["values"] = {k: values[k] for k in shown if k in values}


def swept_keys(settings: list[dict[str, Any]]) -> list[str]:
    """The keys a loss_vs plot is drawn for: those whose typed value differs between settings."""
    return varying_keys([s.get("values") or {} for s in settings]) if len(settings) > 1 else []


def axis_kind(values: list[Any]) -> str:
    """ "log" when every value is a positive number and they span a factor of LOG_SPAN or more,
    "linear" for other numbers, else "category" (strings, bools, a setting without the key)."""
    if not values or not all(finite_number(v) for v in values):
        return "category"
    if min(values) > 0 and max(values) / min(values) >= LOG_SPAN:
        return "log"
    return "linear"


def category_name(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if finite_number(value):
        return f"{value:g}"
    return value if isinstance(value, str) else json.dumps(value)


def plot_file(key: str) -> str:
    """The file a key's plot goes to: loss_vs_lr.png, loss_vs_optimizer.weight_decay.png."""
    return f"loss_vs_{re.sub(r'[^A-Za-z0-9._-]', '_', key)}.png"


def loss_vs(summary: dict[str, Any], key: str) -> dict[str, Any]:
    """What loss_vs_<key>.png draws: per series, per setting, its x, each completed seed's value
    of the ranking measure, the jobs that did not complete (by status), the mean and interval."""
    settings = summary["settings"]
    measure = rank_key(summary.get("ranked_on") or "test")
    raw = [(s.get("values") or {}).get(key, DEFAULT) for s in settings]
    kind = axis_kind(raw)
    categories = list(dict.fromkeys(category_name(v) for v in raw))  # the rank order
    others = [k for k in swept_keys(settings) if k != key]

    def series_of(setting):
        values = setting.get("values") or {}
        return " ".join(f"{k}={category_name(values.get(k, DEFAULT))}" for k in others)

    names = list(dict.fromkeys(series_of(s) for s in settings))
    mixed = len(names) > MAX_SERIES
    if mixed:
        names = [""]
    series: dict[str, list] = {name: [] for name in names}
    said = summary.get("verdict") or {}
    # A tie names no winner, and its `tied` are the settings level with the best: the best
    # itself is one of the tied too (drawn as they are: else the plot marks all but the best).
    level = list(said.get("tied") or [])
    if level and said.get("kind") in ("tied", "identical"):
        level += [s["label"] for s in settings if s.get("rank") == 1]
    for setting, value in zip(settings, raw, strict=True):
        rows = [r for r in summary["jobs"] if r["setting"] == setting["label"]]
        done = [r for r in rows if r["status"] == "completed" and finite_number(r.get(measure))]
        spread = setting["measures"][measure]
        series["" if mixed else series_of(setting)].append(
            {
                "label": setting["label"],
                "x": value if kind != "category" else categories.index(category_name(value)),
                "seeds": [r[measure] for r in done],
                "off": [r["status"] for r in rows if r not in done],
                "mean": spread["mean"],
                "ci95": spread["ci95"],
                "winner": said.get("winner") == setting["label"],
                "tied": setting["label"] in level,
            }
        )
    for points in series.values():
        if kind != "category":
            points.sort(key=lambda p: p["x"])
    return {
        "key": key,
        "file": plot_file(key),
        "x": kind,
        "categories": categories if kind == "category" else None,
        "measure": measure,
        "measure_name": MEASURES[measure],
        "series": [{"name": name, "points": points} for name, points in series.items()],
        "others_vary": len(set(map(series_of, settings))) if mixed else 0,
        "verdict": said,
    }


def draw_loss_vs(summary: dict[str, Any], out_dir: Path) -> list[dict[str, Any]]:
    """Draw loss_vs_<key>.png for every swept key into `out_dir`; what the summary records."""
    from vae_runner.report.sweep_plots import plot_loss_vs  # matplotlib: only when drawing

    drawn = []
    keys = swept_keys(summary["settings"])
    for key in keys if len(keys) <= MAX_KEYS else []:
        data = loss_vs(summary, key)
        plot_loss_vs(data, Path(out_dir) / data["file"])
        drawn.append({k: data[k] for k in ("key", "file", "x", "measure")})
    return drawn
