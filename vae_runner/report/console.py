"""The only module that draws on the terminal (rich), and the run's log records.

On a terminal: a transient progress bar over each epoch's batches, and rich tables at the end.
The epoch lines, warnings and the run's last line are log records of the `vae_runner` logger, so
Hydra's job logging decides where they go: plain lines on stdout by default
(conf/hydra/job_logging/vae_train.yaml), also a file with `hydra/job_logging=default`. Off a
terminal (CI logs, pipes) there is no bar and no control code. The last line of a run's output
names its run directory, so a script can `tail -n 1` it.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

log = logging.getLogger("vae_runner")


def make_console(file=None) -> Console:
    return Console(file=file or sys.stdout, highlight=False)


def print_error(message: str) -> None:
    """One line on stderr, for errors the user can fix."""
    Console(file=sys.stderr, highlight=False).print(
        f"[bold red]Error:[/] {escape(message)}", soft_wrap=True
    )


def print_warning(console: Console, message: str) -> None:
    log.warning(f"Warning: {message}")


class BatchProgress:
    """A per-epoch progress bar. `advance()` only counts: it never reads a tensor (no sync)."""

    def __init__(self, console: Console, total_batches: int) -> None:
        self._total = total_batches
        self._progress = None
        if console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
        self._task = None

    @contextmanager
    def epoch(self, epoch: int):
        if self._progress is None:
            yield self
            return
        with self._progress:
            self._task = self._progress.add_task("train", total=self._total, epoch=epoch)
            try:
                yield self
            finally:
                self._progress.remove_task(self._task)
                self._task = None

    def advance(self, batches: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, batches)


def print_epoch(console: Console, epochs: int, record: dict[str, Any]) -> None:
    """The course loop's progress line, every epoch."""
    width = len(str(epochs))
    log.info(
        f"Epoch {record['epoch']:{width}d}/{epochs} | "
        f"Train: {record['train_loss']:.2f} (R:{record['train_recon']:.2f} "
        f"K:{record['train_kl']:.2f}) | "
        + (f"Val: {record['val_loss']:.2f} | " if "val_loss" in record else "")
        + f"Test: {record['test_loss']:.2f} | "
        f"β_eff: {record['kl_weight']:.3f} | lr: {record['lr']:.2e} | "
        f"active: {record['active_units']}"
    )


def print_stack_epoch(
    console: Console, epochs: int, epoch: int, rows: list[tuple[str | None, dict[str, Any]]]
) -> None:
    """A stack's epoch: one aligned line per member that trained it (its job's overrides,
    then the course loop's numbers), as log records like print_epoch's."""
    width = len(str(epochs))
    labels = [label or "-" for label, _ in rows]
    pad = max((len(label) for label in labels), default=0)
    log.info(f"Epoch {epoch:{width}d}/{epochs} | {len(rows)} member(s) of the stack trained it")
    for label, record in zip(labels, (r for _, r in rows), strict=True):
        val = f"val {record['val_loss']:9.2f} | " if "val_loss" in record else ""
        log.info(
            f"  {label:<{pad}} | train {record['train_loss']:9.2f} | {val}"
            f"test {record['test_loss']:9.2f} | lr {record['lr']:.2e} | "
            f"active {record['active_units']}"
        )


def print_divergence(console: Console, where: dict[str, Any], lr: float) -> None:
    batch = f", batch {where['batch']}" if where["batch"] else ""
    finished = where["epoch"] - 1
    kept = (
        f"history.json and the checkpoints keep epoch {finished}"
        if finished
        else "no epoch had finished, so history.json records only the divergence"
    )
    log.error(
        f"Diverged in epoch {where['epoch']}{batch}: {where['what']}; {kept}. "
        f"Try a lower lr (was {lr:.2e}) or clipping (grad_clip=1.0)."
    )


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def print_summary(
    console: Console, history: dict[str, Any], run_dir: Path, in_sweep: bool = False
) -> None:
    """The end-of-run table; its last line names the run directory. A sweep's job leaves the
    resume command to its sweep's end, which prints the one that carries every job on."""
    status = history["status"]
    colour = {"completed": "green", "diverged": "red"}.get(status, "yellow")
    table = Table(title="vae-train summary", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")

    def last(key: str) -> Any:
        return history[key][-1] if history[key] else None

    stopped = (
        f" (stopped early after epoch {history['stopped_epoch']})"
        if history.get("stopped_early")
        else ""
    )
    rows = [
        ("status", f"[{colour}]{status}[/]{stopped}"),
        ("epochs run", f"{len(history['epoch'])} of {history['config']['epochs']}"),
        ("best epoch", _fmt(history["best_epoch"], "d")),
        *(
            [("best val loss (chose the epoch)", _fmt(history["best_val_loss"]))]
            if "best_val_loss" in history
            else []
        ),
        (
            "test loss at that epoch" if "best_val_loss" in history else "best test loss",
            _fmt(history["best_test_loss"]),
        ),
        ("final test loss", _fmt(last("test_loss"))),
        ("final test recon / KL", f"{_fmt(last('test_recon'))} / {_fmt(last('test_kl'))}"),
        (
            "active units (KL / Burda)",
            f"{_fmt(last('active_units'), 'd')} / {_fmt(last('active_units_burda'), 'd')} "
            f"of {history['latent_dim']}",
        ),
        ("final lr", _fmt(last("lr"), ".2e")),
        ("device", history["device"]),
        ("seconds", _fmt(sum(history["epoch_seconds"]), ".1f")),
    ]
    final = history.get("final") or {}
    if final:
        # which model the final measures are of: the last epoch's (last.pt), not best.pt's
        rows.append(("final evaluation", f"epoch {final['epoch']} (the last epoch's model)"))
        rows.append(("test ELBO", _fmt(final["test_elbo"])))
        if final.get("test_nll_iw") is not None:
            rows.append(
                (
                    f"test NLL, IW (K={final['iw_samples']})",
                    f"{_fmt(final['test_nll_iw'])}  ({final['iw_seconds']:.1f} s)",
                )
            )
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if status == "interrupted" and not in_sweep:
        how = (
            f"continue with: vae-train resume={Path(run_dir).resolve()}"
            if history["epoch"]
            else "no epoch had finished, so there is nothing to resume"
        )
        log.info(f"Interrupted ({history.get('interrupted_by')}); {how}")
    log.info(f"Run directory: {Path(run_dir).resolve()}")


_STATUS_COLOUR = {"completed": "green", "diverged": "red", "failed": "red", "killed": "red"}


def _mean_sd(spread: dict[str, Any], fmt: str = ".4g") -> str:
    if spread["mean"] is None:
        return "-"
    if spread["sd"] is None:
        return format(spread["mean"], fmt)
    return f"{spread['mean']:{fmt}} ± {spread['sd']:.2g}"


def print_settings_table(console: Console, settings: list[dict[str, Any]]) -> None:
    """One row per setting: its seeds' mean ± sd and 95% interval, ranked by the mean."""
    from rich.text import Text

    on_val = any(s["measures"]["best_val_loss"]["n"] for s in settings)
    table = Table(
        title="settings: mean ± sd over seeds, ranked by mean best "
        + ("validation loss" if on_val else "test loss")
        + " (★ winner, = tied with the best)",
        title_justify="left",
    )
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("setting", overflow="fold")
    table.add_column("seeds", no_wrap=True)
    ranked = "best val loss" if on_val else "best test loss"
    names = (ranked, "95% interval") + (("best-epoch test loss",) if on_val else ())
    for name in names + ("final test loss", "IW NLL", "active", "p"):
        table.add_column(name, justify="right", no_wrap=True)
    for s in settings:
        m = s["measures"]
        best = m["best_val_loss"] if on_val else m["best_test_loss"]
        interval = (
            "-" if best["ci95"] is None else f"{best['ci95'][0]:.4g} to {best['ci95'][1]:.4g}"
        )
        others = {k: v for k, v in s["counts"].items() if k != "completed"}
        seeds = f"{s['n_completed']} of {s['n_jobs']}" + "".join(
            f", {n} {status}" for status, n in others.items()
        )
        if s.get("n_collapsed"):
            seeds += f", {s['n_collapsed']} collapsed"
        mark = "★ " if s["winner"] else "= " if s["tied_with_best"] else ""
        table.add_row(
            f"{mark}{s['rank']}",
            Text(s["label"]),
            seeds,
            _mean_sd(best),
            interval,
            *([_mean_sd(m["best_test_loss"])] if on_val else []),
            _mean_sd(m["final_test_loss"]),
            _mean_sd(m["final_test_nll_iw"]),
            _mean_sd(m["final_active_units"], ".3g"),
            "-" if s["p_vs_best"] is None else f"{s['p_vs_best']:.2g}",
            style="bold" if s["winner"] else None,
        )
    console.print(table)


def print_fair_comparison(console: Console, fair: dict[str, Any]) -> None:
    """A crossed sweep's categories, each at its own best value (sweep/fair.py), and the verdict
    on them: the table, then its sentence."""
    from rich.text import Text

    category, numeric = fair["category"], fair["numeric"]
    chosen_on = "validation" if fair["chosen_on"] == "best_val_loss" else "test"
    compared = "test loss at the best-validation epoch" if chosen_on == "validation" else "test"
    table = Table(
        title=f"each {category} at its own best {' and '.join(numeric)}: chosen on mean best "
        f"{chosen_on} loss, compared on the {compared} (★ winner, = tied with the best)",
        title_justify="left",
    )
    for name in ("#", category, *numeric, "seeds", f"{chosen_on} loss (chose)"):
        table.add_column(name, justify="right" if name != category else "left", no_wrap=True)
    for name in ("test loss", "95% interval", "p"):
        table.add_column(name, justify="right", no_wrap=True)
    for c in fair["categories"]:
        test = c["measures"]["best_test_loss"]
        interval = (
            "-" if test["ci95"] is None else f"{test['ci95'][0]:.4g} to {test['ci95'][1]:.4g}"
        )
        chosen = c["chosen"] or {}
        mark = "★ " if c["winner"] else "= " if c["tied_with_best"] else ""
        table.add_row(
            f"{mark}{c['rank']}",
            Text(str(c["category"])),
            *(
                "-" if n not in chosen else format(chosen[n], "g") + (" (edge)" * c["at_edge"])
                for n in numeric
            ),
            f"{c['n_completed']} of {c['n_jobs']}",
            _fmt(c["chosen_mean"], ".4g"),
            _mean_sd(test),
            interval,
            "-" if c["p_vs_best"] is None else f"{c['p_vs_best']:.2g}",
            style="bold" if c["winner"] else None,
        )
    console.print(table)
    said = fair["verdict"]
    good = said["kind"] == "winner" and not fair["optimistic"]
    heading = "Winner" if good else "Verdict"
    colour = "bold green" if good else "bold yellow"
    console.print(f"[{colour}]{heading}:[/] {escape(said['sentence'])}", soft_wrap=True)


def print_sweep_summary(
    console: Console, summary: dict[str, Any], out_dir: Path, where: str = "Sweep directory"
) -> None:
    """A sweep's ranked table (lowest best test loss first, the winner starred), then its folder."""
    from rich.markup import escape
    from rich.text import Text

    rows = summary["jobs"]
    on_val = summary.get("ranked_on") == "val"
    title = "sweep summary: ranked by best " + ("validation loss" if on_val else "test loss")
    table = Table(title=title, title_justify="left")
    # On a terminal long labels fold to fit; in a log the table takes the width it needs.
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("job", overflow="fold")
    table.add_column("status", no_wrap=True)
    names = ("best test loss", "best epoch", "final test loss", "active units", "seconds")
    for name in (("best val loss",) if on_val else ()) + names:
        table.add_column(name, justify="right", no_wrap=True)
    for row in rows:
        colour = _STATUS_COLOUR.get(row["status"], "yellow")
        table.add_row(
            f"{'★ ' if row['winner'] else ''}{row['rank']}",
            Text(row["label"]),  # overrides may hold [ ]: never markup
            f"[{colour}]{row['status']}[/]"
            + (f" (stopped early at {row['stopped_epoch']})" if row.get("stopped_early") else "")
            + (" [red](collapsed)[/]" if row["collapsed"] else ""),
            *([_fmt(row["best_val_loss"], ".6g")] if on_val else []),
            _fmt(row["best_test_loss"], ".6g"),
            _fmt(row["best_epoch"], "d"),
            _fmt(row["final_test_loss"], ".6g"),
            _fmt(row["final_active_units"], "d"),
            _fmt(row["seconds"], ".1f"),
            style="bold" if row["winner"] else None,
        )
    wide = console if console.is_terminal else Console(file=console.file, width=240)
    wide.print(table)
    counts = ", ".join(f"{n} {status}" for status, n in summary["counts"].items())
    console.print(f"{len(rows)} jobs: {counts}", soft_wrap=True)
    said = summary.get("verdict") or {}
    seeds = summary.get("seeds_per_setting", 1)
    if seeds > 1:
        print_settings_table(wide, summary["settings"])
    winner = summary["winner"]
    if winner and seeds <= 1:
        console.print(
            f"[bold green]Winner:[/] {escape(winner['label'])} (job {escape(winner['job'])}): "
            f"best test loss {winner['best_test_loss']:.6g} at epoch {winner['best_epoch']}",
            soft_wrap=True,
        )
    elif not winner and said.get("kind") in (None, "none"):
        console.print("[bold red]No winner:[/] no job completed", soft_wrap=True)
    if said.get("kind") not in (None, "none"):
        colour = "bold green" if said["kind"] == "winner" else "bold yellow"
        heading = "Winner" if said["kind"] == "winner" else "Verdict"
        console.print(f"[{colour}]{heading}:[/] {escape(said['sentence'])}", soft_wrap=True)
    for caution in summary.get("cautions") or []:  # sweep.cautions: the answer may not hold
        console.print(f"[yellow]Caution:[/] {escape(caution)}", soft_wrap=True)
    if summary.get("fair_comparison"):
        print_fair_comparison(wide, summary["fair_comparison"])
    if not on_val and len(summary.get("settings") or []) > 1:
        console.print(
            "[yellow]Caution:[/] ranked on the test set, the set the results are reported on; "
            "choose on a validation split with data.val_fraction=0.1",
            soft_wrap=True,
        )
    optuna = summary.get("optuna")
    if optuna and optuna.get("no_best"):
        console.print(f"Optuna found no best parameters: {optuna['no_best']}", soft_wrap=True)
    elif optuna and optuna.get("best_params"):
        console.print(
            f"Optuna best parameters: {optuna['best_params']}", markup=False, soft_wrap=True
        )
    console.print(f"{where}: {Path(out_dir).resolve()}", soft_wrap=True, markup=False)


def print_evaluation(console: Console, result: dict[str, Any], out: Path) -> None:
    """vae-eval's table (its fields are eval.json's); the last line names the file written."""
    table = Table(title="vae-eval", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    status = result["run_status"] or "unknown"
    k = result["iw_samples"]
    if result["test_nll_iw"] is None:
        nll = "not estimated (the run's eval.iw_samples=0): pass --iw-samples K"
    else:
        nll = (
            f"{result['test_nll_iw']:.4f} ± {result['test_nll_iw_se']:.2f} (s.e.)  "
            f"({result['iw_seconds']:.1f} s)"
        )
    rows = [
        ("run", f"{result['run_dir']} ({status})"),
        ("checkpoint", f"{result['checkpoint']}.pt: epoch {result['epoch']} of {result['epochs']}"),
        ("test set", f"{result['n_test']} images of {result['data_name']}"),
        (f"test ELBO ({result['elbo_samples']} samples)", _fmt(result["test_elbo"])),
        (f"test NLL, IW (K={k})", nll),
        (
            "test loss (recon / KL)",
            f"{_fmt(result['test_loss'])} ({_fmt(result['test_recon'])} / "
            f"{_fmt(result['test_kl'])})",
        ),
        (
            "active units (KL / Burda)",
            f"{result['active_units']} / {result['active_units_burda']} of {result['latent_dim']}",
        ),
        ("KL per dimension", " ".join(f"{kl:.2f}" for kl in result["kl_by_dim"])),
        ("device", f"{result['device']}, {result['threads']} thread(s)"),
        ("seconds", f"{result['seconds']:.1f}"),
    ]
    for name, value in rows:
        table.add_row(name, escape(value) if name in ("run",) else value)
    console.print(table)
    console.print(f"Wrote {Path(out).resolve()}", soft_wrap=True, markup=False)
