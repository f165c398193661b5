"""A sweep's settings and how sure its answer is.

A *setting* is everything a job was started with except its seed: `lr=1e-3 seed=0` and
`lr=1e-3 seed=1` are two seeds of the setting `lr=1e-3`. For every setting and measure this
module gives n, the mean, the standard deviation and a 95% interval (Student's t), and it ranks
the settings by their mean best loss. A winner is named only when its lead is larger than the
noise: Welch's two-sided t-test of the best setting against each other one, at ALPHA. Settings
it cannot tell from the best are *tied* with it. With one seed per setting no spread was
measured and no test is possible: the verdict says so.

Imports no torch (scipy.special's t distribution only).
"""

from __future__ import annotations

import math
from typing import Any

ALPHA = 0.05
TEST = f"Welch's two-sided t-test at {ALPHA}"
SEED_KEY = "seed"
SPLIT_NAMES = {"val": "validation", "test": "test"}

# measure (a job row's field) -> its name in the sentences and tables
MEASURES = {
    "best_val_loss": "best validation loss",  # with data.val_fraction: what ranks the settings
    "best_test_loss": "best test loss",  # with a validation split: the test loss at that epoch
    "final_test_loss": "final test loss",
    "final_test_nll_iw": "final IW NLL",
    "final_active_units": "active units",
    "epochs_run": "epochs run",
}


def finite_number(value: Any) -> bool:
    """A measure that can be averaged: an int or float (not a bool), finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def spread(values: list[float]) -> dict[str, Any]:
    """n, mean, sd and the 95% interval of the finite values (sd and interval need n >= 2)."""
    finite = [float(v) for v in values if finite_number(v)]
    n = len(finite)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "ci95": None}
    if n == 1:
        return {"n": 1, "mean": finite[0], "sd": None, "ci95": None}
    mean, var = _mean_var(finite)
    sd = math.sqrt(var)
    half = _t_quantile(0.975, n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci95": [mean - half, mean + half]}


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p of Welch's t-test (None when either side has fewer than 2 values), as
    scipy.stats.ttest_ind(a, b, equal_var=False) gives it (tests/test_settings.py holds them
    together). Two samples without any spread: 1.0 when equal, 0.0 when not (the t statistic
    is infinite)."""
    if len(a) < 2 or len(b) < 2:
        return None
    if len(set(a)) == 1 and len(set(b)) == 1:
        return 1.0 if a[0] == b[0] else 0.0
    # t and its degrees of freedom do not change when both samples are shifted and scaled
    # alike: taken on values of order 1, the squares below neither under- nor overflow.
    center = math.fsum(a + b) / (len(a) + len(b))
    scale = max(abs(v - center) for v in a + b)
    a, b = [(v - center) / scale for v in a], [(v - center) / scale for v in b]
    (mean_a, var_a), (mean_b, var_b) = _mean_var(a), _mean_var(b)
    share_a, share_b = var_a / len(a), var_b / len(b)
    t = (mean_a - mean_b) / math.sqrt(share_a + share_b)
    # Welch-Satterthwaite degrees of freedom
    df = (share_a + share_b) ** 2 / (share_a**2 / (len(a) - 1) + share_b**2 / (len(b) - 1))
    return 2.0 * _t_tail(-abs(t), df)


def _mean_var(values: list[float]) -> tuple[float, float]:
    mean = math.fsum(values) / len(values)
    return mean, math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)


# Student's t distribution from scipy.special, the functions scipy.stats.t calls (its ppf is
# stdtrit, its sf stdtr of -x): importing scipy.stats took 0.5 s at the end of every sweep on
# this project's 2 cores, scipy.special 0.09 s (benchmarks/RESULTS.md, 2026-12-05).


def _t_quantile(q: float, df: float) -> float:
    from scipy.special import stdtrit

    return float(stdtrit(df, q))


def _t_tail(x: float, df: float) -> float:
    """P(T <= x) for Student's t with `df` degrees of freedom."""
    from scipy.special import stdtr

    return float(stdtr(df, x))


def setting_key(overrides: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """What a job's setting is: its overrides by key, without the seed."""
    return tuple(sorted((k, v) for k, v in overrides.items() if k != SEED_KEY))


def group(rows: list[dict[str, Any]], keys: list[tuple]) -> list[dict[str, Any]]:
    """One entry per setting (in the order of their first job), with its job rows."""
    settings: dict[tuple, dict[str, Any]] = {}
    for row, key in zip(rows, keys, strict=True):
        settings.setdefault(key, {"key": key, "rows": []})["rows"].append(row)
    return list(settings.values())


def rank_key(split: str) -> str:
    """The measure that ranks settings and jobs: the best loss on the split they chose on."""
    return f"best_{split}_loss"


def setting_record(
    label: str, rows: list[dict[str, Any]], identical_to: list[str], split: str = "test"
) -> dict:
    """A setting's line of the summary: its jobs counted by status, and each measure's spread
    over the seeds that completed (failed or diverged seeds are counted, never averaged)."""
    completed = [r for r in rows if r["status"] == "completed"]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return {
        "label": label,
        "jobs": [r["job"] for r in rows],
        "seeds": [r.get("seed") for r in rows],
        "n_jobs": len(rows),
        "n_completed": len(completed),
        "n_collapsed": sum(bool(r.get("collapsed")) for r in rows),
        "counts": counts,
        "measures": {m: spread([r.get(m) for r in completed]) for m in MEASURES},
        "best_values": [
            r[rank_key(split)] for r in completed if finite_number(r.get(rank_key(split)))
        ],
        "rank": None,
        "winner": False,
        "tied_with_best": False,
        "p_vs_best": None,
        "identical_to": identical_to,
    }


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.6g}"


def verdict(settings: list[dict[str, Any]], split: str) -> dict[str, Any]:
    """Rank the settings by mean best loss (settings without a completed seed last) and say
    whether the best one's lead is larger than the noise. Fills rank, winner, tied_with_best
    and p_vs_best in the records; returns the verdict with its sentence."""

    key = rank_key(split)

    def order(s):
        mean = s["measures"][key]["mean"]
        return (mean is None, mean if mean is not None else 0.0)

    settings.sort(key=order)
    for rank, s in enumerate(settings, start=1):
        s["rank"] = rank
    ranked = [s for s in settings if s["measures"][key]["mean"] is not None]
    base = {"test": TEST, "ranked_on": split, "winner": None, "tied": []}
    on = SPLIT_NAMES[split]  # in the sentences: "best validation loss", "best test loss"
    if not ranked:
        return {**base, "kind": "none", "sentence": "No setting completed: there is no best."}
    best = ranked[0]
    mean = best["measures"][key]
    if len(ranked) == 1:
        best["winner"] = True
        return {
            **base,
            "kind": "only one",
            "winner": best["label"],
            "sentence": f"{best['label']} is the only setting that completed "
            f"(mean {_fmt(mean['mean'])}, n={mean['n']}).",
        }
    identical = [s["label"] for s in ranked[1:] if s["label"] in best["identical_to"]]
    if identical:
        names = " and ".join([best["label"], *identical])
        for s in ranked[1:]:
            s["tied_with_best"] = s["label"] in identical
        return {
            **base,
            "kind": "identical",
            "tied": identical,
            "sentence": f"{names} trained identically (every per-epoch value equal): they "
            "compare nothing, so no winner is named.",
        }
    if any(s["measures"][key]["n"] < 2 for s in ranked):
        best["winner"] = True
        runner_up = ranked[1]["measures"][key]["mean"]
        return {
            **base,
            "kind": "no spread",
            "winner": best["label"],
            "sentence": f"{best['label']} has the lowest best {on} loss ({_fmt(mean['mean'])},"
            f" {_fmt(runner_up - mean['mean'])} nats ahead of {ranked[1]['label']}), but no "
            "spread was measured (one seed per setting): add seeds (seeds=3) to know whether "
            "the lead is larger than the noise.",
        }
    for s in ranked[1:]:
        s["p_vs_best"] = welch_p(best["best_values"], s["best_values"])
        s["tied_with_best"] = s["p_vs_best"] is None or s["p_vs_best"] >= ALPHA
    tied = [s for s in ranked[1:] if s["tied_with_best"]]
    if tied:
        names = ", ".join(s["label"] for s in tied)
        ps = ", ".join(f"p={s['p_vs_best']:.2g}" for s in tied)
        return {
            **base,
            "kind": "tied",
            "tied": [s["label"] for s in tied],
            "sentence": f"{best['label']} and {names} are tied within noise (best {on} loss: "
            f"mean {_fmt(mean['mean'])} ± {mean['sd']:.2g}, n={mean['n']}; {ps} ≥ {ALPHA}, "
            f"{TEST}).",
        }
    best["winner"] = True
    second = ranked[1]
    lead = second["measures"][key]["mean"] - mean["mean"]
    return {
        **base,
        "kind": "winner",
        "winner": best["label"],
        "sentence": f"{best['label']} is best (mean best {on} loss {_fmt(mean['mean'])} ± "
        f"{mean['sd']:.2g}, n={mean['n']}), ahead of {second['label']} by {_fmt(lead)} nats, "
        f"p={second['p_vs_best']:.2g} ({TEST}).",
    }
