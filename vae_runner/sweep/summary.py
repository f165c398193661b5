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
from vae_runner.sweep.rundirs import Job, collect_jobs

SUMMARY_JSON = "sweep_summary.json"
SUMMARY_CSV = "sweep_summary.csv"
CURVES_PNG = "curves.png"
OPTUNA_RESULTS = "optimization_results.yaml"  # written by hydra-optuna-sweeper
SUMMARY_SCHEMA_VERSION = 1
WINNER_KEYS = ("job", "label", "best_test_loss", "best_epoch", "run_dir")

# One row per job, in this column order in the CSV. Ranked by best test loss, completed jobs first.
COLUMNS = (
    "rank",
    "winner",
    "job",
    "label",
    "status",
    "best_test_loss",
    "best_epoch",
    "final_test_loss",
    "final_active_units",
    "epochs_run",
    "epochs",
    "seconds",
    "overrides",
    "run_dir",
    "error",
)


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


def job_row(job: Job, label: str, sweep_over: bool) -> dict[str, Any]:
    h = job.history or {}
    seconds = [s for s in h.get("epoch_seconds") or [] if s is not None]
    return dict(
        rank=None,
        winner=False,
        job=job.name,
        label=label,
        status=job.status(sweep_over),
        best_test_loss=h.get("best_test_loss"),
        best_epoch=h.get("best_epoch"),
        final_test_loss=_last(h, "test_loss"),
        final_active_units=_last(h, "active_units"),
        epochs_run=len(h.get("epoch") or []),
        epochs=(h.get("config") or {}).get("epochs"),
        seconds=round(sum(seconds), 3) if job.history else None,
        overrides=list(job.overrides),
        run_dir=str(job.run_dir.resolve()) if job.run_dir else None,
        error=(h.get("error") or {}).get("message"),
    )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def rank_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lowest best test loss first; completed jobs rank above diverged or failed ones."""

    def key(row):
        best = row["best_test_loss"]
        return (row["status"] != "completed", not _finite(best), best if _finite(best) else 0.0)

    ranked = sorted(rows, key=key)  # stable: ties keep the job order
    for rank, row in enumerate(ranked, start=1):
        row["rank"] = rank
    if ranked and ranked[0]["status"] == "completed" and _finite(ranked[0]["best_test_loss"]):
        ranked[0]["winner"] = True
    return ranked


def build_summary(jobs: list[Job], sources: list[Path], sweep_over: bool = False) -> dict:
    """The summary record (what sweep_summary.json holds), without writing anything."""
    rows = rank_rows(
        [job_row(j, lab, sweep_over) for j, lab in zip(jobs, labels(jobs), strict=True)]
    )
    winner = next((row for row in rows if row["winner"]), None)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return dict(
        schema_version=SUMMARY_SCHEMA_VERSION,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        sources=[str(Path(s).resolve()) for s in sources],
        ranked_by="best_test_loss (lowest first; completed jobs before the others)",
        exit_code=sweep_exit_code([exit_code(job.record(sweep_over)) for job in jobs]),
        counts=counts,
        winner=None if winner is None else {k: winner[k] for k in WINNER_KEYS},
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


def csv_text(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: csv_value(row[key]) for key in COLUMNS})
    return out.getvalue()


def curve_label(row: dict[str, Any]) -> str:
    """A job's legend entry: the winner starred, a job that did not complete tagged."""
    if row["winner"]:
        return f"★ {row['label']}"
    return row["label"] if row["status"] == "completed" else f"{row['label']} [{row['status']}]"


def read_optuna_results(sweep_dir: Path) -> dict | None:
    path = Path(sweep_dir) / OPTUNA_RESULTS
    if not path.is_file():
        return None
    results = yaml.safe_load(path.read_text())
    return results if isinstance(results, dict) else None


def write_summary(summary: dict, jobs: list[Job], out_dir: Path) -> dict:
    """Write sweep_summary.json, sweep_summary.csv and curves.png into `out_dir`."""
    from vae_runner.report.plots import plot_curves  # matplotlib: only when a summary is written

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_name = {job.name: job for job in jobs}
    curves = [(curve_label(row), by_name[row["job"]].history) for row in summary["jobs"]]
    drawable = [(label, h) for label, h in curves if h and h.get("epoch")]  # >= 1 finished epoch
    lines = plot_curves(drawable, out_dir / CURVES_PNG)
    summary["plot"] = {"file": CURVES_PNG, "lines": lines}
    write_text_atomic(out_dir / SUMMARY_CSV, csv_text(summary["jobs"]))
    write_json_atomic(out_dir / SUMMARY_JSON, summary)
    return summary


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
