"""run(): the course's training loop, as a short list of named steps.

The runner never imports Hydra: it takes a typed `Config` and a run directory, so tests and other
programs can call it directly. The hot path (one pass over the training and test sets) is in
`epoch.py`; what a run trains with is built in `trainer.py`.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from vae_runner import __version__
from vae_runner.config.errors import ConfigError
from vae_runner.config.schema import Config
from vae_runner.faults import out_of_memory_line
from vae_runner.files import WriteError, writing
from vae_runner.record import selected_on
from vae_runner.report.console import (
    BatchProgress,
    log,
    make_console,
    print_divergence,
    print_epoch,
    print_summary,
    print_warning,
)
from vae_runner.report.images import save_grids
from vae_runner.report.logger_choice import build_logger
from vae_runner.report.loggers import NoLogger
from vae_runner.training import early_stop
from vae_runner.training.annealing import kl_weight as annealed_kl_weight
from vae_runner.training.build import step_scheduler
from vae_runner.training.checkpoint import (
    CheckpointError,
    capture_rng,
    restore_rng,
    save_checkpoint,
)
from vae_runner.training.diagnostics import collapse_warning
from vae_runner.training.epoch import TrainSums, evaluate, train_epoch
from vae_runner.training.history import new_history, save_history, with_epoch
from vae_runner.training.metrics import BURDA_THRESHOLD, importance_weighted_nll
from vae_runner.training.schedules import extension_line, planned_horizon, set_lr
from vae_runner.training.signals import Interrupted, StopNow, graceful_stop
from vae_runner.training.trainer import Trainer, build_trainer


def _versions() -> dict[str, str]:
    import hydra
    import numpy
    import omegaconf

    return {
        "vae_runner": __version__,
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # a plain str: weights_only loads refuse TorchVersion
        "hydra": hydra.__version__,
        "omegaconf": omegaconf.__version__,
        "numpy": numpy.__version__,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _process() -> dict[str, Any]:
    """Which process writes the record now (vae-summary tells a live run from a killed one by
    the directory's lock; these say where to look), and with how many CPU threads, waiting how
    (cpu_threads.py): what its epoch_seconds depend on."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def _fresh_history(t: Trainer) -> dict[str, Any]:
    cfg, data = t.cfg, t.data
    history = new_history(
        asdict(cfg),
        meta=dict(
            device=str(t.device),
            data_name=data.name,
            n_train=len(data.train),
            n_test=len(data.test),
            data_dim=math.prod(data.image_shape),
            latent_dim=t.model.latent_dim,
            n_parameters=sum(p.numel() for p in t.model.parameters()),
            active_units_threshold=cfg.active_threshold,
            active_units_burda_threshold=BURDA_THRESHOLD,
            schedule_horizon=t.horizon,  # epochs at the start: a resume never re-plans them
            started_at=_now(),
            finished_at=None,
            process=_process(),
            versions=_versions(),
        ),
    )
    # The untrained model's test loss: the baseline every later epoch should beat.
    initial = evaluate(t.model, data, cfg.batch_size)
    history["initial_test_loss"] = initial.recon + cfg.beta * initial.kl
    return history


def _restore(t: Trainer, checkpoint: dict[str, Any], how: str) -> dict[str, Any]:
    """Put the trainer back where `checkpoint` left it; returns the history so far. `how`:
    resume (resume=DIR) or restart (the same job started again in its directory)."""
    try:
        t.model.load_state_dict(checkpoint["model"])
        t.optimizer.load_state_dict(checkpoint["optimizer"])
        if t.scheduler is not None and checkpoint["scheduler"] is not None:
            t.scheduler.load_state_dict(checkpoint["scheduler"])
        restore_rng(checkpoint["rng"], t.device, t.shuffle)
    except (RuntimeError, ValueError, KeyError, TypeError) as err:  # shapes, states, fields
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"the checkpoint does not fit this run's model and optimizer: {first[:200]}"
        ) from None
    history = checkpoint["history"]
    history["status"] = "running"
    history["finished_at"] = None
    history["config"] = asdict(t.cfg)  # as resumed: epochs= and device= may have changed
    history["schedule_horizon"] = t.horizon  # (a record from before the field: now it has it)
    history["process"] = _process()
    history.pop("error", None)
    early_stop.clear_stopped(history)  # it stops again below if its rule still says so
    resumed = {"after_epoch": checkpoint["epoch"], "at": _now(), "how": how}
    history.setdefault("resumed", []).append(resumed)
    return history


def _epoch_record(t: Trainer, epoch: int, kl_w: float, lr: float, train, test, seconds) -> dict:
    cfg = t.cfg
    data_dim = math.prod(t.data.image_shape)
    return dict(
        epoch=epoch,
        train_loss=train.recon + kl_w * train.kl,
        train_recon=train.recon,
        train_kl=train.kl,
        test_loss=test.recon + cfg.beta * test.kl,
        test_recon=test.recon,
        test_kl=test.kl,
        kl_weight=kl_w,
        lr=lr,
        grad_norm=train.grad_norm,
        grad_norm_max=train.grad_norm_max,
        active_units=sum(kl > cfg.active_threshold for kl in test.kl_by_dim),
        active_units_burda=test.active_burda,
        kl_by_dim=test.kl_by_dim,
        recon_per_dim=test.recon / data_dim,
        kl_per_dim=test.kl / t.model.latent_dim,
        epoch_seconds=seconds,
    )


def _divergence(train: TrainSums, record: dict) -> dict | None:
    """Where the run stopped being finite, or None."""
    if train.first_bad_batch is not None:
        what = "the training loss or gradient norm became non-finite"
        return {"epoch": record["epoch"], "batch": train.first_bad_batch, "what": what}
    if not math.isfinite(record["test_loss"]):
        return {"epoch": record["epoch"], "batch": None, "what": "the test loss is non-finite"}
    return None


def _after_epoch(t: Trainer, history: dict, record: dict, run_dir: Path, console, logger) -> None:
    """Diagnostics and pictures of a finished epoch: none of it changes the training."""
    logger.epoch(history, record)
    warning = collapse_warning(history, t.job_label)  # each time the run falls into collapse
    if warning:
        history["warnings"].append(
            {"epoch": record["epoch"], "kind": "posterior_collapse", "message": warning}
        )
        print_warning(console, warning)
    if t.cfg.pictures and t.cfg.plot_every and record["epoch"] % t.cfg.plot_every == 0:
        grids = save_grids(t.model, t.data, run_dir / "images", f"_epoch{record['epoch']:03d}")
        logger.images(grids, record["epoch"])


def release_training_state(t: Trainer) -> None:
    """Give back what only training needed, once the last checkpoint holds it.

    The training images and the optimizer's moments (about 55 MB for Fashion-MNIST) go before
    the final evaluation imports torchvision and matplotlib, so the end of a run does not
    raise its peak memory above the training loop's.
    """
    t.data = t.data.without_train()
    t.optimizer.state.clear()
    for p in t.model.parameters():
        p.grad = None


def _final_evaluation(t: Trainer, history: dict, run_dir: Path, logger, stop) -> None:
    """The end of a completed run: the likelihood estimate and the image grids. A stop request
    is honoured here too (between batches of the estimate): the run stays resumable."""
    last = len(history["epoch"]) - 1
    final: dict[str, Any] = {
        "epoch": history["epoch"][last],
        "test_loss": history["test_loss"][last],
        "test_elbo": -(history["test_recon"][last] + history["test_kl"][last]),
        "elbo_samples": 1,
        "active_units": history["active_units"][last],
        "active_units_burda": history["active_units_burda"][last],
        "test_nll_iw": None,
        "iw_samples": t.cfg.eval.iw_samples,
        "iw_seconds": None,
        "checkpoint": "last.pt",  # the model evaluated: the last epoch's, not best.pt's
    }
    if t.cfg.eval.iw_samples:
        log.info(f"Estimating the test NLL with {t.cfg.eval.iw_samples} importance samples")
        estimate = importance_weighted_nll(
            t.model, t.data.test, t.cfg.eval.iw_samples, to_float=t.data.to_float, check=stop.check
        )
        final.update(
            test_nll_iw=estimate.nll,
            test_elbo=-estimate.neg_elbo,  # from the same samples: never tighter than the NLL
            elbo_samples=estimate.samples,
            iw_seconds=estimate.seconds,
        )
    stop.check()
    history["final"] = final
    if t.cfg.pictures:
        logger.images(save_grids(t.model, t.data, run_dir), history["epoch"][last])


def _train_epochs(
    t: Trainer, history: dict, start: int, run_dir: Path, console, stop, logger
) -> None:
    cfg = t.cfg
    progress = BatchProgress(console, math.ceil(len(t.data.train) / cfg.batch_size))
    for epoch in range(start, cfg.epochs + 1):
        # Before each epoch, from the record alone: a restarted or resumed run decides as the
        # uninterrupted one did (training/early_stop.py).
        if early_stop.stops_early(history, cfg.early_stop):
            log.info(
                f"Stopping early after epoch {epoch - 1}: {early_stop.why(history, cfg.early_stop)}"
            )
            early_stop.mark_stopped(history)
            return
        started = time.perf_counter()
        kl_w = annealed_kl_weight(cfg.annealing, epoch, cfg.beta, t.horizon)
        if t.epoch_lr is not None:
            set_lr(t.optimizer, t.epoch_lr(epoch))
        lr = t.optimizer.param_groups[0]["lr"]
        with progress.epoch(epoch):
            train = train_epoch(
                t.train_model, t.data, t.optimizer, cfg, kl_w, t.shuffle, progress, stop
            )
        test = evaluate(t.model, t.data, cfg.batch_size)
        val = None if t.data.val is None else evaluate(t.model, t.data, cfg.batch_size, "val")
        record = _epoch_record(t, epoch, kl_w, lr, train, test, time.perf_counter() - started)
        if val is not None:  # the split the run chooses on (data.val_fraction)
            record.update(
                val_loss=val.recon + cfg.beta * val.kl, val_recon=val.recon, val_kl=val.kl
            )
        diverged = _divergence(train, record)
        if diverged:
            # Nothing of this epoch is kept, and no NaN reaches ReduceLROnPlateau (it would
            # silently cut the lr): the history and last.pt stay at the last finite epoch.
            history["status"] = "diverged"
            history["divergence"] = diverged
            print_divergence(console, diverged, lr)
            return
        # The epoch joins the history only once last.pt holds it: a failed write leaves the
        # record at the previous epoch, and a second signal waits for both files.
        updated = with_epoch(history, record)
        print_epoch(console, cfg.epochs, record)
        step_scheduler(t.scheduler, record[f"{selected_on(history)}_loss"])
        checkpoint = dict(
            epoch=epoch,
            model=t.model.state_dict(),
            optimizer=t.optimizer.state_dict(),
            scheduler=t.scheduler.state_dict() if t.scheduler is not None else None,
            rng=capture_rng(t.device, t.shuffle),  # after the test pass, which samples z too
            kl_weight=kl_w,
            history=updated,
            config=asdict(cfg),
        )
        is_best = updated["best_epoch"] == epoch
        with stop.critical():
            # Checkpoint first, history second: history.json never runs ahead of last.pt.
            save_checkpoint(run_dir, checkpoint, is_best=is_best)
            save_history(run_dir, updated)
            history.update(updated)
        _after_epoch(t, history, record, run_dir, console, logger)


def _tracking_warning(history: dict, console, message: str) -> None:
    """What a logger could not write to its tracker: on the terminal and in the record."""
    epoch = history["epoch"][-1] if history["epoch"] else 0
    history["warnings"].append({"epoch": epoch, "kind": "tracking", "message": message})
    print_warning(console, message)


def _train(
    cfg: Config, run_dir: Path, console, checkpoint, start_dir, stop, how, job_label, sweep_dir
) -> tuple[dict, Any]:
    """Build, train and evaluate; returns the history, its status set, and the run's logger
    (started; `run` finishes it once the last files are written). Once the history exists,
    any failure is recorded in it (`failed`, with the error's line) before it rises."""
    horizon = None if checkpoint is None else planned_horizon(checkpoint)
    t = build_trainer(cfg, console, start_dir, horizon)
    t.job_label = job_label
    if checkpoint is None:
        history, start = _fresh_history(t), 1
    else:
        history, start = _restore(t, checkpoint, how), checkpoint["epoch"] + 1
        log.info(f"Resuming {run_dir} after epoch {checkpoint['epoch']}")
        extended = extension_line(cfg, t.horizon, checkpoint["config"]["epochs"])
        if extended:
            log.info(extended)
    for message in t.config_warnings:  # once each, also over resumes
        if not any(w["message"] == message for w in history["warnings"]):
            history["warnings"].append({"epoch": start - 1, "kind": "config", "message": message})
    logger = NoLogger()
    try:
        with stop.critical():  # a second signal here is raised once the record is written
            save_history(run_dir, history)
        logger = build_logger(
            cfg.logger,
            run_dir,
            start_dir=start_dir,
            sweep_dir=sweep_dir,
            run_name=job_label,
            warn=lambda message: _tracking_warning(history, console, message),
        )
        logger.start(history)
        _train_epochs(t, history, start, run_dir, console, stop, logger)
        if history["status"] == "running":
            release_training_state(t)
            _final_evaluation(t, history, run_dir, logger, stop)
            history["status"] = "completed"
    except (Interrupted, StopNow) as signalled:
        history["status"] = "interrupted"
        history["interrupted_by"] = str(signalled)
    except Exception as err:
        # A value only the run could find wrong (a missing extra for logger=tensorboard) is
        # `config`, as its exit code 2 says; anything else is an `error` (exit 1).
        kind = "config" if isinstance(err, ConfigError) else "error"
        history["status"] = "failed"
        history["error"] = {"kind": kind, "message": one_line(err)}
        with contextlib.suppress(OSError), stop.critical():
            save_history(run_dir, history, in_place_if_full=True)
        _finish_logger(logger, history)
        raise
    return history, logger


def _finish_logger(logger, history: dict) -> None:
    """The logger's end (its tracker's status and files); a logger that fails here is said in
    one line: history.json and the run directory are complete without it."""
    try:
        logger.finish(history)
    except Exception as err:
        log.warning(f"Warning: the logger could not finish: {one_line(err)}")


def one_line(err: BaseException) -> str:
    """An error as one line for the record (the terminal keeps the traceback)."""
    if isinstance(err, WriteError):  # its message names the file and the reason
        return " ".join(str(err.strerror).split())[:300]
    memory = out_of_memory_line(err)
    if memory:
        return memory
    text = " ".join(str(err).split())[:300] or type(err).__name__
    return text if isinstance(err, ConfigError) else f"{type(err).__name__}: {text}"


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

    Returns the history; its `status` is completed, diverged or interrupted. A failure once
    the history exists is recorded there as `failed` before the exception rises.
    """
    console = console or make_console()
    run_dir = Path(run_dir)
    with writing(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    # The handlers stay for the whole run, its last writes and plots included: a second
    # Ctrl-C there is a stop like any other, never a KeyboardInterrupt.
    with graceful_stop(stop_file) as stop:
        history, logger = _train(
            cfg, run_dir, console, checkpoint, start_dir, stop, how, job_label, sweep_dir
        )
        history["finished_at"] = _now()
        try:
            with stop.critical():  # a second signal waits for the record, then skips the rest
                save_history(run_dir, history)
            if history["epoch"] and cfg.pictures:
                from vae_runner.report.plots import plot_run  # matplotlib: only when needed

                plot_run(run_dir, history)
            print_summary(console, history, run_dir, in_sweep=sweep_dir is not None)
        except StopNow:
            log.info("stopped before the plots were drawn: vae-plot RUN_DIR draws them")
        finally:  # after the files it sends to its tracker, and also when they failed
            with contextlib.suppress(StopNow), stop.critical():  # a signal waits for its end
                warned = len(history["warnings"])
                _finish_logger(logger, history)
                if len(history["warnings"]) != warned:  # the record says what its tracker lacks
                    with contextlib.suppress(OSError):
                        save_history(run_dir, history)
    stop.chain()  # a handler that was there before ours (submitit's requeue) now runs
    return history


@dataclass
class MemberRun:
    """One run of a stack: what `run` takes besides what the whole stack shares."""

    cfg: Config
    run_dir: Path
    checkpoint: dict[str, Any] | None = None
    how: str = "resume"  # resume | restart: how the checkpoint is taken up (see `run`)
    job_label: str | None = None  # a sweep job's overrides: names it in warnings and trackers


def run_stack(
    members: list[MemberRun],
    console=None,
    start_dir: Path | None = None,
    stop_file: Path | None = None,
    sweep_dir: Path | None = None,
) -> list[dict[str, Any] | BaseException]:
    """Train `members` (equal in model, likelihood, data, batch_size, epochs, reduction and
    device) together; returns, per member, its history or the exception that ended it (which
    its history.json records as `failed`, as `run`'s does).

    PLACEHOLDER until the stacked engine lands: the members one after another."""
    results: list[dict[str, Any] | BaseException] = []
    for member in members:
        try:
            results.append(
                run(
                    member.cfg,
                    member.run_dir,
                    console=console,
                    checkpoint=member.checkpoint,
                    start_dir=start_dir,
                    stop_file=stop_file,
                    how=member.how,
                    job_label=member.job_label,
                    sweep_dir=sweep_dir,
                )
            )
        except Exception as err:
            results.append(err)
    return results
