"""Sweep summaries: jobs (rundirs.py) -> one row per job -> JSON, CSV, curves.png; ranked.

Everything is read back from the run directories (`history.json`, `.hydra/overrides.yaml`), never
from the process that launched the jobs: with joblib, submitit or SLURM the jobs ran elsewhere, and
`vae-summary` compares runs from separate invocations the same way.

Imports no torch.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from vae_runner.config.overrides import by_key
from vae_runner.exit_codes import exit_code, sweep_exit_code
from vae_runner.files import write_json_atomic, write_text_atomic
from vae_runner.sweep.against import add_values, draw_loss_vs
from vae_runner.sweep.cautions import cautions
from vae_runner.sweep.fair import fair_comparison
from vae_runner.sweep.rundirs import Job, collect_jobs
from vae_runner.sweep.settings import (
    MEASURES,
    SEED_KEY,
    group,
    rank_key,
    setting_key,
    setting_record,
    verdict,
)

SUMMARY_JSON = "sweep_summary.json"
SUMMARY_CSV = "sweep_summary.csv"
CURVES_PNG = "curves.png"
OPTUNA_RESULTS = "optimization_results.yaml"  # written by hydra-optuna-sweeper
SUMMARY_SCHEMA_VERSION = 2  # 2: settings (seeds grouped), the verdict, the CSV's `row` column
WINNER_KEYS = (
    "job",
    "label",
    "setting",
    "best_val_loss",
    "best_test_loss",
    "best_epoch",
    "run_dir",
)

# One row per job, in this column order in the CSV. Ranked by the best loss on the split chosen
# on (validation, else test), completed jobs first.
COLUMNS = (
    "rank",
    "winner",
    "job",
    "label",
    "setting",
    "seed",
    "status",
    "best_val_loss",
    "best_test_loss",
    "best_epoch",
    "final_test_loss",
    "final_test_nll_iw",
    "final_active_units",
    "collapsed",
    "epochs_run",
    "epochs",
    "stopped_early",  # early_stop.patience ended the job (its status stays completed)
    "stopped_epoch",
    "seconds",
    "overrides",
    "run_dir",
    "error",
)
# The CSV holds one row per setting, then one per job; `row` says which. A setting's columns:
# the counts of its jobs and, per measure, the mean, sd and 95% interval over its seeds.
SETTING_COLUMNS = tuple(
    ["n_jobs", "n_completed", "n_collapsed", "tied_with_best", "p_vs_best"]
    + [f"{m}_{part}" for m in MEASURES for part in ("mean", "sd", "ci95_low", "ci95_high")]
)
CSV_COLUMNS = ("row", *COLUMNS, *SETTING_COLUMNS)


# --------------------------------------------------------------------------- rows
def labels(jobs: list[Job]) -> list[str]:
    """What tells the jobs apart: the overrides whose values differ, else the run dir's name."""
    parsed = [_overrides_by_key(job) for job in jobs]
    keys = {key for overrides in parsed for key in overrides}
    varying = {key for key in keys if len({o.get(key) for o in parsed}) > 1}
    if len(jobs) == 1:
        varying = keys
    result = []
    for job, overrides in zip(jobs, parsed, strict=True):
        label = " ".join(text for key, text in overrides.items() if key in varying)
        # a run with none of the overrides that tell the others apart ran on the defaults
        result.append(label or (f"defaults ({job.name})" if varying else job.name))
    return [
        f"{label} ({job.name})" if result.count(label) > 1 and label != job.name else label
        for label, job in zip(result, jobs, strict=True)
    ]


def _overrides_by_key(job: Job) -> dict[str, str]:
    try:
        return by_key(job.overrides)
    except Exception:  # an overrides.yaml this Hydra cannot read: each as written
        return {o: o for o in job.overrides}


def _last(history: dict[str, Any], key: str) -> Any:
    values = history.get(key) or []
    return values[-1] if values else None


def job_row(job: Job, label: str, sweep_over: bool, setting: str = "") -> dict[str, Any]:
    h = job.history or {}
    seed = _overrides_by_key(job).get(SEED_KEY)
    seed = (h.get("config") or {}).get("seed") if seed is None else seed.partition("=")[2]
    seconds = [s for s in h.get("epoch_seconds") or [] if s is not None]
    return dict(
        rank=None,
        winner=False,
        job=job.name,
        label=label,
        setting=setting,
        seed=int(seed) if str(seed).lstrip("-").isdigit() else seed,
        status=job.status(sweep_over),
        best_val_loss=h.get("best_val_loss"),
        best_test_loss=h.get("best_test_loss"),
        best_epoch=h.get("best_epoch"),
        final_test_loss=_last(h, "test_loss"),
        final_test_nll_iw=(h.get("final") or {}).get("test_nll_iw"),
        final_active_units=_last(h, "active_units"),
        collapsed=_collapsed(h),
        epochs_run=len(h.get("epoch") or []),
        epochs=(h.get("config") or {}).get("epochs"),
        stopped_early=bool(h.get("stopped_early")),
        stopped_epoch=h.get("stopped_epoch"),
        seconds=round(sum(seconds), 3) if job.history else None,
        overrides=list(job.overrides),
        run_dir=str(job.run_dir.resolve()) if job.run_dir else None,
        error=(h.get("error") or {}).get("message"),
    )


def _collapsed(history: dict[str, Any]) -> bool:
    """Whether the job's last epoch shows posterior collapse (training.diagnostics' rule)."""
    from vae_runner.training.diagnostics import collapsed_at

    try:
        return bool(history.get("epoch")) and bool(collapsed_at(history, len(history["epoch"]) - 1))
    except (KeyError, IndexError, TypeError):  # an older or partial record
        return False


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def rank_rows(rows: list[dict[str, Any]], split: str = "test") -> list[dict[str, Any]]:
    """Lowest best loss (on `split`) first; completed jobs rank above diverged or failed ones."""
    measure = rank_key(split)

    def key(row):
        best = row.get(measure)
        return (row["status"] != "completed", not _finite(best), best if _finite(best) else 0.0)

    ranked = sorted(rows, key=key)  # stable: ties keep the job order
    for rank, row in enumerate(ranked, start=1):
        row["rank"] = rank
    if ranked and ranked[0]["status"] == "completed" and _finite(ranked[0].get(measure)):
        ranked[0]["winner"] = True
    return ranked


def ranked_on(rows: list[dict[str, Any]]) -> str:
    """The split the sweep is ranked on: validation when every completed job chose on one
    (data.val_fraction), else the test set."""
    completed = [r for r in rows if r["status"] == "completed"]
    if completed and all(_finite(r.get("best_val_loss")) for r in completed):
        return "val"
    return "test"


def setting_labels(jobs: list[Job]) -> tuple[list[tuple], list[str]]:
    """Each job's setting (its overrides but the seed) and the setting's label: the overrides
    whose values differ between settings."""
    parsed = [_overrides_by_key(job) for job in jobs]
    keys = [setting_key(o) for o in parsed]
    distinct = list(dict.fromkeys(keys))
    varying = {k for key in distinct for k, _ in key if len({dict(d).get(k) for d in distinct}) > 1}
    by_key = dict(zip(keys, parsed, strict=True))
    names = {}
    for key in distinct:
        text = " ".join(by_key[key][k] for k, _ in key if k in varying)
        names[key] = text or ("defaults" if varying else " ".join(by_key[key][k] for k, _ in key))
    return keys, [names[k] or "defaults" for k in keys]


def _fingerprint(rows: list[dict], jobs_by_name: dict[str, Job]) -> tuple | None:
    """A setting's seeds and every per-epoch loss they recorded: equal for two settings that
    trained identically (AdamW whose weight decay rounds to nothing is Adam, bit for bit)."""
    from vae_runner.record import EPOCH_KEYS

    histories = []
    for row in sorted(rows, key=lambda r: str(r["seed"])):
        h = jobs_by_name[row["job"]].history
        if not h or not h.get("epoch"):
            return None
        series = tuple(tuple(map(str, h.get(k) or [])) for k in EPOCH_KEYS if k != "epoch_seconds")
        histories.append((str(row["seed"]), series))
    return tuple(histories)


def build_settings(
    rows: list[dict], keys: list[tuple], jobs: list[Job], split: str = "test"
) -> tuple[list, dict]:
    """The settings (seeds grouped, each measure's spread) and the verdict on them."""
    jobs_by_name = {job.name: job for job in jobs}
    groups = group(rows, keys)
    prints = [_fingerprint(g["rows"], jobs_by_name) for g in groups]
    settings = []
    for g, mine in zip(groups, prints, strict=True):
        label = g["rows"][0]["setting"]
        twins = [
            other["rows"][0]["setting"]
            for other, theirs in zip(groups, prints, strict=True)
            if other is not g and mine is not None and theirs == mine
        ]
        settings.append(setting_record(label, g["rows"], twins, split))
    return settings, verdict(settings, split)


def build_summary(jobs: list[Job], sources: list[Path], sweep_over: bool = False) -> dict:
    """The summary record (what sweep_summary.json holds), without writing anything."""
    keys, names = setting_labels(jobs)
    rows = [
        job_row(j, lab, sweep_over, setting)
        for j, lab, setting in zip(jobs, labels(jobs), names, strict=True)
    ]
    split = ranked_on(rows)
    settings, said = build_settings(rows, keys, jobs, split)
    add_values(settings, jobs)  # each setting's swept values, typed: {"lr": 0.01}
    fair = fair_comparison(rows, keys, settings, split)  # None unless the sweep is crossed
    rows = rank_rows(rows, split)
    # The best job is the winner only when its setting is the verdict's winner.
    for row in rows:
        row["winner"] = row["winner"] and said["winner"] == row["setting"]
    if said["winner"] is not None and not any(r["winner"] for r in rows):
        best_of = [r for r in rows if r["setting"] == said["winner"] and r["status"] == "completed"]
        if best_of:
            best_of[0]["winner"] = True
    winner = next((row for row in rows if row["winner"]), None)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    seeds = max((s["n_jobs"] for s in settings), default=0)
    return dict(
        schema_version=SUMMARY_SCHEMA_VERSION,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        sources=[str(Path(s).resolve()) for s in sources],
        ranked_by=f"{rank_key(split)} (lowest first; completed jobs before the others)",
        ranked_on=split,
        exit_code=sweep_exit_code([exit_code(job.record(sweep_over)) for job in jobs]),
        counts=counts,
        winner=None if winner is None else {k: winner[k] for k in WINNER_KEYS},
        seeds_per_setting=seeds,
        verdict=said,
        cautions=cautions(rows, jobs),
        settings=settings,
        **({"fair_comparison": fair} if fair else {}),
        jobs=rows,
    )


# --------------------------------------------------------------------------- files
def csv_value(value: Any) -> str:
    """A JSON value as the CSV writes it: null -> '', true/false, lists space-joined."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(map(str, value))
    return repr(value) if isinstance(value, float) else str(value)


def _setting_csv_row(setting: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {key: None for key in CSV_COLUMNS}
    counts = ", ".join(f"{n} {status}" for status, n in setting["counts"].items())
    row.update(
        row="setting",
        rank=setting["rank"],
        winner=setting["winner"],
        label=setting["label"],
        setting=setting["label"],
        status=counts,
        n_jobs=setting["n_jobs"],
        n_completed=setting["n_completed"],
        n_collapsed=setting["n_collapsed"],
        tied_with_best=setting["tied_with_best"],
        p_vs_best=setting["p_vs_best"],
    )
    for measure, spread in setting["measures"].items():
        low, high = spread["ci95"] or (None, None)
        row.update(
            {
                f"{measure}_mean": spread["mean"],
                f"{measure}_sd": spread["sd"],
                f"{measure}_ci95_low": low,
                f"{measure}_ci95_high": high,
            }
        )
    return row


def csv_text(
    rows: list[dict[str, Any]], settings: list[dict[str, Any]] = (), fair: dict | None = None
) -> str:
    """One row per setting (`row` = setting), then, for a crossed sweep, one per category at its
    own best value (`row` = fair, `setting`: the setting chosen), then one per job (`row` = job)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for setting in settings:
        writer.writerow({k: csv_value(v) for k, v in _setting_csv_row(setting).items()})
    for category in (fair or {}).get("categories", []):
        cells = {**_setting_csv_row(category), "row": "fair", "setting": category["setting"]}
        writer.writerow({k: csv_value(v) for k, v in cells.items()})
    for row in rows:
        cells = {key: csv_value(row.get(key)) for key in CSV_COLUMNS}
        writer.writerow({**cells, "row": "job"})
    return out.getvalue()


def curve_label(row: dict[str, Any]) -> str:
    """A job's legend entry: the winner starred, a job that did not complete tagged."""
    if row["winner"]:
        return f"★ {row['label']}"
    return row["label"] if row["status"] == "completed" else f"{row['label']} [{row['status']}]"


def setting_curve_label(setting: dict[str, Any]) -> str:
    """A setting's legend entry: ★ the winner, = tied with the best; its seed count."""
    mark = "★ " if setting["winner"] else "= " if setting["tied_with_best"] else ""
    n = f"n={setting['n_completed']}" + (
        f" of {setting['n_jobs']}" if setting["n_completed"] != setting["n_jobs"] else ""
    )
    return f"{mark}{setting['label']} ({n})"


def read_optuna_results(sweep_dir: Path) -> dict | None:
    path = Path(sweep_dir) / OPTUNA_RESULTS
    if not path.is_file():
        return None
    results = yaml.safe_load(path.read_text())
    return results if isinstance(results, dict) else None


def write_summary(summary: dict, jobs: list[Job], out_dir: Path) -> dict:
    """Write sweep_summary.json, sweep_summary.csv, curves.png and loss_vs_<key>.png into
    `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    draw_plots(summary, jobs, out_dir)
    write_text_atomic(
        out_dir / SUMMARY_CSV,
        csv_text(summary["jobs"], summary["settings"], summary.get("fair_comparison")),
    )
    write_json_atomic(out_dir / SUMMARY_JSON, summary)
    return summary


def draw_plots(summary: dict, jobs: list[Job], out_dir: Path) -> dict:
    """Draw curves.png and loss_vs_<key>.png (sweep.against) into `out_dir`; record them in the
    summary (`plot`, `loss_vs`)."""
    from vae_runner.report.plots import plot_curves  # matplotlib: only when a summary is written

    by_name = {job.name: job for job in jobs}
    if summary["seeds_per_setting"] > 1:  # one curve per setting: its seeds' mean and band
        drawable = []
        for setting in summary["settings"]:
            seeds = [by_name[j].history for j in setting["jobs"]]
            seeds = [h for h in seeds if h and h.get("epoch")]
            if seeds:
                drawable.append((setting_curve_label(setting), seeds))
    else:
        curves = [(curve_label(row), by_name[row["job"]].history) for row in summary["jobs"]]
        drawable = [(label, h) for label, h in curves if h and h.get("epoch")]  # >= 1 epoch
    lines = plot_curves(drawable, out_dir / CURVES_PNG)
    summary["plot"] = {"file": CURVES_PNG, "lines": lines}
    summary["loss_vs"] = draw_loss_vs(summary, out_dir)
    return summary


def redraw_plots(sweep_dir: Path) -> list[Path]:
    """vae-plot SWEEP_DIR: draw the sweep's plots again from its jobs' records, without
    rewriting its summary files. [] when it holds no run directories."""
    jobs = collect_jobs([sweep_dir])
    if not jobs:
        return []
    summary = draw_plots(build_summary(jobs, [sweep_dir]), jobs, sweep_dir)
    return [Path(sweep_dir) / name for name in plot_files(summary)]


def plot_files(summary: dict) -> list[str]:
    """The pictures a summary records: curves.png, then each loss_vs_<key>.png."""
    return [summary["plot"]["file"], *(p["file"] for p in summary.get("loss_vs") or [])]


def summarize(
    sources: list[Path], out_dir: Path, *, sweep_over: bool = False, console=None
) -> dict | None:
    """Collect, write the three files into `out_dir` and print the ranked table. None: no runs."""
    from vae_runner.report.console import make_console, print_sweep_summary

    jobs = collect_jobs(sources)
    if not jobs:
        return None
    summary = build_summary(jobs, sources, sweep_over=sweep_over)
    optuna = read_optuna_results(sources[0]) if len(sources) == 1 else None
    if optuna is not None:
        if summary["winner"] is None:  # Optuna's best of trials that all failed or diverged
            optuna = {**optuna, "best_params": None, "no_best": "every trial failed or diverged"}
        summary["optuna"] = optuna
    write_summary(summary, jobs, out_dir)
    where = "Sweep directory" if len(sources) == 1 and Path(out_dir) == Path(sources[0]) else None
    print_sweep_summary(console or make_console(), summary, out_dir, where or "Summary directory")
    return summary
