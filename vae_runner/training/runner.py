"""run() and run_stack(): the course's training loop, as a short list of named steps, for M
runs trained together (a single run is a stack of one: there is one loop).

The runner never imports Hydra: it takes typed `Config`s and run directories, so tests and other
programs can call it directly. The hot path is the engine's (training/engine.py, epoch.py); what
happens to each run, in its own directory, is its RunRecord's (training/run_record.py).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vae_runner import heap
from vae_runner.config.schema import Config
from vae_runner.data.images import load_data
from vae_runner.files import writing
from vae_runner.report.console import BatchProgress, make_console, print_epoch, print_stack_epoch
from vae_runner.training.allocator import reuse_freed_blocks
from vae_runner.training.annealing import kl_weight as annealed_kl_weight
from vae_runner.training.build import build_device, build_model
from vae_runner.training.checkpoint import CheckpointError
from vae_runner.training.engine import build_engine
from vae_runner.training.engines import Engines, parts_for, split
from vae_runner.training.epoch_writes import EpochRun, writer_pool
from vae_runner.training.noise import Noise
from vae_runner.training.run_record import RunRecord, one_line
from vae_runner.training.signals import Interrupted, StopNow, graceful_stop

__all__ = ["MemberRun", "run", "run_stack", "one_line"]


@dataclass
class MemberRun:
    """One run of a stack: what `run` takes besides what the whole stack shares."""

    cfg: Config
    run_dir: Path
    checkpoint: dict[str, Any] | None = None
    how: str = "resume"  # resume | restart: how the checkpoint is taken up (see `run`)
    job_label: str | None = None  # a sweep job's overrides: names it in warnings and trackers


def run(
    cfg: Config,
    run_dir: Path,
    console=None,
    checkpoint: dict[str, Any] | None = None,
    start_dir: Path | None = None,
    stop_file: Path | None = None,
    how: str = "resume",
    job_label: str | None = None,
    sweep_dir: Path | None = None,
) -> dict[str, Any]:
    """Train a VAE as `cfg` says (or continue from `checkpoint`), writing into `run_dir`.
    Relative data paths are read from `start_dir` (default: the working directory); a sweep's
    job also stops when `stop_file` appears (training.signals); `job_label` names a sweep's job
    in its warnings and its tracker; `sweep_dir` is a sweep job's sweep (its tracker's parent).
    `how`: resume (resume=DIR) or restart (the same job started again in its directory).

    Returns the history; its `status` is completed, diverged or interrupted. A failure once
    the history exists is recorded there as `failed` before the exception rises.
    """
    member = MemberRun(cfg, Path(run_dir), checkpoint, how, job_label)
    (result,) = run_stack([member], console, start_dir, stop_file, sweep_dir)
    if isinstance(result, BaseException):
        raise result
    return result


def run_stack(
    members: list[MemberRun],
    console=None,
    start_dir: Path | None = None,
    stop_file: Path | None = None,
    sweep_dir: Path | None = None,
    noise: Noise | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[dict[str, Any] | BaseException]:
    """Train `members` (equal in model, likelihood, data, batch_size, epochs, reduction and
    device: sweep.stacks) together, each writing its own run directory as a single run does.
    Returns, per member, its history, or the exception that ended it (which its history.json
    records as `failed`, as `run`'s does). An exception before any record exists (the model
    or the data could not be made, a second signal) rises for the caller to say.

    `noise` and `dtype` are for oracle tests: draws handed in (training/noise.py) and float64."""
    console = console or make_console()
    for member in members:
        with writing(member.run_dir):
            Path(member.run_dir).mkdir(parents=True, exist_ok=True)
    # The handlers stay for the whole stack, its last writes and plots included: a second
    # Ctrl-C there is a stop like any other, never a KeyboardInterrupt.
    with graceful_stop(stop_file) as stop:
        records = [
            RunRecord(
                m.cfg,
                Path(m.run_dir),
                console,
                m.checkpoint,
                m.how,
                m.job_label,
                sweep_dir,
                start_dir,
            )
            for m in members
        ]
        if len(records) > 1:
            for record, label in zip(records, member_labels(members), strict=True):
                record.short_label = label
        results: list[dict[str, Any] | BaseException | None] = [None] * len(records)
        cfg = records[0].cfg
        data = load_data(cfg.data, cfg.likelihood, start_dir)  # batch_size fits: Config's
        # A checkpoint that does not fit its run's model is that run's failure, not its stack's
        for member, record in enumerate(records):
            refusal = _misfit(record, data.image_shape)
            if refusal is not None:
                results[member] = refusal
        training = [m for m, result in enumerate(results) if result is None]
        if training:
            stacked = [records[m] for m in training]
            engine = _build(stacked, data, noise, dtype)
            heap.freeze_long_lived()  # before its parts fork: they share what it froze
            try:
                engine.start()
                trained = _train(engine, stacked, stop)
            finally:
                engine.close()
            for m, result in zip(training, trained, strict=True):
                results[m] = result
        for member, record in enumerate(records):
            if isinstance(results[member], BaseException):
                continue
            try:  # each run's last record, plots and logger's end, whatever the others' do
                record.finish(stop, in_sweep=sweep_dir is not None)
            except Exception as err:
                record.failed(err, stop)
                results[member] = err
    stop.chain()  # a handler that was there before ours (submitit's requeue) now runs
    return results


def _misfit(record: RunRecord, image_shape: tuple[int, ...]) -> CheckpointError | None:
    """A checkpoint whose model does not fit its run's config (shapes, names), in one line."""
    if record.checkpoint is None:
        return None
    cfg = record.cfg
    try:
        build_model(cfg.model, cfg.likelihood, image_shape).load_state_dict(
            record.checkpoint["model"]
        )
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        return _checkpoint_error(err)
    return None


def _checkpoint_error(err: BaseException) -> CheckpointError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return CheckpointError(
        f"the checkpoint does not fit this run's model and optimizer: {first[:200]}"
    )


def member_labels(members: list[MemberRun]) -> list[str]:
    """Each member's overrides that not every member shares (what tells them apart in the
    stack's lines), or its number in the stack when none differ."""
    words = [(m.job_label or "").split() for m in members]
    shared = set.intersection(*(set(w) for w in words)) if words else set()
    labels = [" ".join(w for w in ws if w not in shared) for ws in words]
    return [label or f"#{i}" for i, label in enumerate(labels)]


def _build(records: list[RunRecord], data, noise, dtype) -> Engines:
    """The engines of the stack (training/engines.py): device and threads once for every
    member, each member's model from its seed, and each member's checkpoint taken up."""
    cfg = records[0].cfg
    device = build_device(cfg.device)
    if device.type == "cpu":
        reuse_freed_blocks()
    if cfg.device.threads:
        torch.set_num_threads(cfg.device.threads)
    data = data.to(device)
    cfgs = [r.cfg for r in records]
    parts = split(cfgs, parts_for(cfgs, device, noise is not None))
    engines = Engines([build_engine(part, data, device, noise, dtype) for part in parts])
    for member, record in enumerate(records):
        if record.checkpoint is not None:
            try:
                engines.load_member(member, record.checkpoint)
            except (RuntimeError, ValueError, KeyError, TypeError) as err:  # optimizer states
                raise _checkpoint_error(err) from None
    return engines


def _train(engine: Engines, records: list[RunRecord], stop) -> list[dict | BaseException]:
    """Start every record, train the epochs, evaluate the finished runs; every outcome is in
    its record before this returns. Returns the histories, or per member the exception."""
    started: list[RunRecord] = []
    try:
        fresh = [r.checkpoint is None for r in records]
        initial = engine.evaluate(fresh) if any(fresh) else None
        for member, record in enumerate(records):
            if record.checkpoint is None:
                record.fresh_history(engine, member, initial[member])
            else:
                record.restored_history()
        printed: set[str] = set()
        for record in records:
            started.append(record)
            record.begin(stop, printed)
        with writer_pool() if len(records) > 1 else nullcontext() as writer:
            _train_epochs(engine, records, stop, writer)
        finishing = [m for m, r in enumerate(records) if r.history["status"] == "running"]
        if finishing:
            models = {m: engine.member_model(m) for m in finishing}
            engine.release_training_state()
            for m in finishing:
                records[m].final_evaluation(models[m], engine.data, stop)
    except (Interrupted, StopNow) as signalled:
        for record in records:
            if record.history.get("status") == "running":
                record.interrupted(signalled)
        if not started:
            raise
    except Exception as err:
        if not started:
            raise  # no record exists yet: the caller says it in one line
        for record in records:  # also those whose start it cut short: none stays `running`
            if record.history["status"] == "running":
                record.failed(err, stop)
        return [err if r.history["status"] == "failed" else r.history for r in records]
    return [r.history for r in records]


def _keep_epochs(engine: Engines, records: list[RunRecord], kept, kl_weights, pool) -> None:
    """Write each kept run's epoch (`kept`: (member, epoch values) pairs): its last.pt, then its
    history.json, where its member trains (Engines.write_epochs). An epoch joins a record only
    once both are written; once all writes have ended, the first failure rises. `pool`: the
    writer threads of a stack trained here (None for a single run)."""
    runs = []
    for m, values in kept:
        history, text = records[m].epoch_history(values)
        runs.append(
            EpochRun(m, records[m].run_dir, history, text, kl_weights[m], records[m].config)
        )
    outcomes = engine.write_epochs(runs, pool)
    for run, outcome in zip(runs, outcomes, strict=True):
        if outcome is None:
            records[run.member].history.update(run.history)
    failures = [outcome for outcome in outcomes if outcome is not None]
    if failures:
        raise failures[0]


def _train_epochs(engine: Engines, records: list[RunRecord], stop, writer) -> None:
    epochs = records[0].cfg.epochs  # equal in a stack
    console = records[0].console
    progress = BatchProgress(console, engine.batches)
    for epoch in range(min(r.start for r in records), epochs + 1):
        # Before each epoch, from each record alone: who trains this epoch
        active = [not r.done and r.start <= epoch and not r.stops_early(epoch) for r in records]
        if not any(active):
            if all(r.done or r.start > epochs for r in records):
                return
            continue
        begun = time.perf_counter()
        kl_weights = []
        for m, record in enumerate(records):
            cfg = record.cfg
            kl_weights.append(annealed_kl_weight(cfg.annealing, epoch, cfg.beta, record.horizon))
            if record.epoch_lr is not None and active[m]:
                engine.set_lr(m, record.epoch_lr(epoch))
        lrs = [engine.lr(m) for m in range(len(records))]
        with progress.epoch(epoch):
            train = engine.train_epoch(kl_weights, active, progress, stop)
        test = engine.evaluate(active)
        val = engine.evaluate(active, "val") if engine.data.val is not None else None
        seconds = time.perf_counter() - begun
        kept = []
        for m, record in enumerate(records):
            if not active[m]:
                continue
            values = record.epoch_record(
                engine,
                epoch,
                kl_weights[m],
                lrs[m],
                train[m],
                test[m],
                None if val is None else val[m],
                seconds,
            )
            if record.diverged(train[m], values, lrs[m]):
                continue
            engine.step_scheduler(m, record.watched_loss(values))
            kept.append((m, values))
        # Each run's last.pt then history.json. A second signal waits for all of them.
        with stop.critical():
            _keep_epochs(engine, records, kept, kl_weights, writer)
        if len(records) == 1:
            if kept:
                print_epoch(console, epochs, kept[0][1])
        else:
            print_stack_epoch(
                console, epochs, epoch, [(records[m].short_label, v) for m, v in kept]
            )
        for m, values in kept:
            records[m].after_epoch(values, lambda m=m: engine.member_model(m), engine.data)
