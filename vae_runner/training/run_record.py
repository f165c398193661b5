"""One run's record while it trains: its history, checkpoints, logger, warnings, divergence,
early stop and final evaluation. The engine (training/engine.py) trains; a RunRecord says what
happened to one of its members, in that run's own directory, exactly as a single run's.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import platform
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from vae_runner import __version__
from vae_runner.config.errors import ConfigError
from vae_runner.config.schema import Config
from vae_runner.faults import out_of_memory_line
from vae_runner.files import WriteError
from vae_runner.record import EpochRecord, selected_on
from vae_runner.report.console import log, print_divergence, print_summary, print_warning
from vae_runner.report.images import save_grids
from vae_runner.report.logger_choice import build_logger
from vae_runner.report.loggers import NoLogger
from vae_runner.training import early_stop
from vae_runner.training.checkpoint import checkpoint_bytes, save_checkpoint
from vae_runner.training.config_warnings import config_warnings
from vae_runner.training.diagnostics import collapse_warning
from vae_runner.training.epoch import TestSums, TrainSums
from vae_runner.training.history import HistoryText, new_history, save_history, with_epoch
from vae_runner.training.metrics import BURDA_THRESHOLD, importance_weighted_nll
from vae_runner.training.schedules import epoch_lr, extension_line, planned_horizon


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


def process() -> dict[str, Any]:
    """Which process writes the record now (vae-summary tells a live run from a killed one by
    the directory's lock; these say where to look), and with how many CPU threads, waiting how
    (cpu_threads.py): what its epoch_seconds depend on."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def one_line(err: BaseException) -> str:
    """An error as one line for the record (the terminal keeps the traceback)."""
    if isinstance(err, WriteError):  # its message names the file and the reason
        return " ".join(str(err.strerror).split())[:300]
    memory = out_of_memory_line(err)
    if memory:
        return memory
    text = " ".join(str(err).split())[:300] or type(err).__name__
    return text if isinstance(err, ConfigError) else f"{type(err).__name__}: {text}"


@dataclass
class EpochFiles:
    """An epoch's files for one run, made and not yet written (epoch_writes.write_epochs)."""

    history: dict[str, Any]  # the record with the epoch
    text: str  # history.json's text
    checkpoint: dict[str, Any]  # last.pt's payload
    data: io.BytesIO  # last.pt's bytes


def epoch_files(
    history: dict[str, Any], text: str, state: dict[str, Any], kl_w: float, config: dict
) -> EpochFiles:
    """An epoch's files from the history with the epoch, its text, and the member's state
    (model, optimizer, scheduler, rng: Engine.member_state, after the test pass, which samples
    z). Also made in a stack's training process (training/engine_process.py)."""
    checkpoint = dict(
        epoch=history["epoch"][-1],
        **state,
        kl_weight=kl_w,
        history=text,
        config=config,
    )
    return EpochFiles(history, text, checkpoint, checkpoint_bytes(checkpoint))


def write_epoch_files(run_dir: Path, files: EpochFiles) -> None:
    """Checkpoint first, history second: history.json never runs ahead of last.pt."""
    epoch = files.checkpoint["epoch"]
    is_best = files.history["best_epoch"] == epoch
    save_checkpoint(run_dir, files.checkpoint, is_best, files.data)
    save_history(run_dir, files.history, text=files.text)


@dataclass
class RunRecord:
    """A member's run: its directory, config and history, and where it stands."""

    cfg: Config
    run_dir: Path
    console: Any
    checkpoint: dict[str, Any] | None = None  # what it carries on from (None: a fresh run)
    how: str = "resume"
    job_label: str | None = None
    sweep_dir: Path | None = None
    start_dir: Path | None = None
    history: dict[str, Any] = field(default_factory=dict)
    logger: Any = field(default_factory=NoLogger)
    horizon: int = 0  # the epochs the run started with: what cyclical and cosine are laid over
    epoch_lr: Any = None  # the lr as a pure function of the epoch (scheduler=cosine), or None
    warnings: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    short_label: str = ""  # in a stack's lines: its overrides that differ from other members'
    start: int = 1  # its first epoch to train
    done: bool = False  # no more epochs: stopped early, diverged, or failed
    _text: HistoryText = field(default_factory=HistoryText)  # history.json's text, epoch by epoch

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.config = asdict(self.cfg)  # as its checkpoints record it
        self.horizon = (
            self.cfg.epochs if self.checkpoint is None else planned_horizon(self.checkpoint)
        )
        self.epoch_lr = epoch_lr(self.cfg, self.horizon)
        self.warnings = config_warnings(self.cfg, self.horizon)
        if self.checkpoint is not None:
            self.start = self.checkpoint["epoch"] + 1

    # -- the start ------------------------------------------------------------------------------

    def fresh_history(self, engine, member: int, initial: TestSums) -> None:
        cfg, data = self.cfg, engine.data
        self.history = new_history(
            asdict(cfg),
            meta=dict(
                device=str(engine.device),
                data_name=data.name,
                n_train=len(data.train),
                n_test=len(data.test),
                data_dim=math.prod(data.image_shape),
                latent_dim=engine.latent_dim,
                n_parameters=engine.n_parameters(member),
                active_units_threshold=cfg.active_threshold,
                active_units_burda_threshold=BURDA_THRESHOLD,
                schedule_horizon=self.horizon,  # epochs at the start: a resume never re-plans
                started_at=now(),
                finished_at=None,
                process=process(),
                versions=_versions(),
            ),
        )
        # The untrained model's test loss: the baseline every later epoch should beat.
        self.history["initial_test_loss"] = initial.recon + cfg.beta * initial.kl

    def restored_history(self) -> None:
        """The history of the checkpoint it carries on from, marked running again."""
        checkpoint = self.checkpoint
        history = checkpoint["history"]
        history["status"] = "running"
        history["finished_at"] = None
        history["config"] = asdict(self.cfg)  # as resumed: epochs= and device= may have changed
        history["schedule_horizon"] = self.horizon  # (a record from before the field: now it has)
        history["process"] = process()
        history.pop("error", None)
        early_stop.clear_stopped(history)  # it stops again below if its rule still says so
        resumed = {"after_epoch": checkpoint["epoch"], "at": now(), "how": self.how}
        history.setdefault("resumed", []).append(resumed)
        self.history = history
        log.info(f"Resuming {self.run_dir} after epoch {checkpoint['epoch']}")
        extended = extension_line(self.cfg, self.horizon, checkpoint["config"]["epochs"])
        if extended:
            log.info(extended)

    def begin(self, stop, printed: set[str]) -> None:
        """Its config warnings (kept once each, also over resumes; printed once per stack:
        `printed` holds what another member said already), the first write of its record, and
        its logger."""
        for message in self.warnings:
            if message not in printed:
                printed.add(message)
                print_warning(self.console, message)
            if not any(w["message"] == message for w in self.history["warnings"]):
                entry = {"epoch": self.start - 1, "kind": "config", "message": message}
                self.history["warnings"].append(entry)
        with stop.critical():  # a second signal here is raised once the record is written
            save_history(self.run_dir, self.history)
        self.logger = build_logger(
            self.cfg.logger,
            self.run_dir,
            start_dir=self.start_dir,
            sweep_dir=self.sweep_dir,
            run_name=self.job_label,
            warn=self.tracking_warning,
        )
        self.logger.start(self.history)

    def tracking_warning(self, message: str) -> None:
        """What a logger could not write to its tracker: on the terminal and in the record."""
        epoch = self.history["epoch"][-1] if self.history["epoch"] else 0
        self.history["warnings"].append({"epoch": epoch, "kind": "tracking", "message": message})
        print_warning(self.console, message)

    # -- each epoch -----------------------------------------------------------------------------

    def stops_early(self, epoch: int) -> bool:
        """Before each epoch, from the record alone: a restarted or resumed run decides as the
        uninterrupted one did (training/early_stop.py)."""
        if not early_stop.stops_early(self.history, self.cfg.early_stop):
            return False
        why = early_stop.why(self.history, self.cfg.early_stop)
        log.info(f"{self._who()}Stopping early after epoch {epoch - 1}: {why}")
        early_stop.mark_stopped(self.history)
        self.done = True
        return True

    def epoch_record(
        self,
        engine,
        epoch: int,
        kl_w: float,
        lr: float,
        train: TrainSums,
        test: TestSums,
        val: TestSums | None,
        seconds: float,
    ) -> dict[str, Any]:
        """The epoch's measures (record.EpochRecord), as the history holds them."""
        cfg = self.cfg
        return EpochRecord(
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
            recon_per_dim=test.recon / math.prod(engine.data.image_shape),
            kl_per_dim=test.kl / engine.latent_dim,
            epoch_seconds=seconds,
            # the split the run chooses on (data.val_fraction)
            val_loss=None if val is None else val.recon + cfg.beta * val.kl,
            val_recon=None if val is None else val.recon,
            val_kl=None if val is None else val.kl,
        ).values()

    def diverged(self, train: TrainSums, record: dict[str, Any], lr: float) -> bool:
        """Record where the run stopped being finite: nothing of this epoch is kept, and no NaN
        reaches ReduceLROnPlateau (it would silently cut the lr); the history and last.pt stay
        at the last finite epoch."""
        where = None
        if train.first_bad_batch is not None:
            what = "the training loss or gradient norm became non-finite"
            where = {"epoch": record["epoch"], "batch": train.first_bad_batch, "what": what}
        elif not math.isfinite(record["test_loss"]):
            where = {"epoch": record["epoch"], "batch": None, "what": "the test loss is non-finite"}
        if where is None:
            return False
        self.history["status"] = "diverged"
        self.history["divergence"] = where
        if self._who():
            log.error(f"{self._who()}diverged (the other members go on):")
        print_divergence(self.console, where, lr)
        self.done = True
        return True

    def watched_loss(self, record: dict[str, Any]) -> float:
        return record[f"{selected_on(self.history)}_loss"]

    def epoch_history(self, record: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The history with the epoch, and history.json's text (the checkpoint's history too).
        Nothing is written, and the record is as it was: the epoch joins it only once last.pt
        and history.json hold it (training/runner.py's _keep_epochs, inside the stop's critical
        section)."""
        updated = with_epoch(self.history, record)
        return updated, self._text(updated)

    def after_epoch(self, record: dict[str, Any], model_of, data) -> None:
        """Diagnostics and pictures of a finished epoch: none of it changes the training.
        `model_of()`: the member's model as a plain one (only built when pictures are due)."""
        self.logger.epoch(self.history, record)
        warning = collapse_warning(self.history, self.job_label)  # each time it falls into collapse
        if warning:
            self.history["warnings"].append(
                {"epoch": record["epoch"], "kind": "posterior_collapse", "message": warning}
            )
            print_warning(self.console, warning)
        cfg = self.cfg
        if cfg.pictures and cfg.plot_every and record["epoch"] % cfg.plot_every == 0:
            folder = self.run_dir / "images"
            grids = save_grids(model_of(), data, folder, f"_epoch{record['epoch']:03d}")
            self.logger.images(grids, record["epoch"])

    # -- the end --------------------------------------------------------------------------------

    def final_evaluation(self, model, data, stop) -> None:
        """The end of a completed run: the likelihood estimate and the image grids. A stop
        request is honoured here too (between batches of the estimate): the run stays
        resumable."""
        history, cfg = self.history, self.cfg
        last = len(history["epoch"]) - 1
        final: dict[str, Any] = {
            "epoch": history["epoch"][last],
            "test_loss": history["test_loss"][last],
            "test_elbo": -(history["test_recon"][last] + history["test_kl"][last]),
            "elbo_samples": 1,
            "active_units": history["active_units"][last],
            "active_units_burda": history["active_units_burda"][last],
            "test_nll_iw": None,
            "iw_samples": cfg.eval.iw_samples,
            "iw_seconds": None,
            "checkpoint": "last.pt",  # the model evaluated: the last epoch's, not best.pt's
        }
        if cfg.eval.iw_samples:
            k = cfg.eval.iw_samples
            log.info(f"{self._who()}Estimating the test NLL with {k} importance samples")
            estimate = importance_weighted_nll(
                model, data.test, cfg.eval.iw_samples, to_float=data.to_float, check=stop.check
            )
            final.update(
                test_nll_iw=estimate.nll,
                test_elbo=-estimate.neg_elbo,  # from the same samples: never tighter than the NLL
                elbo_samples=estimate.samples,
                iw_seconds=estimate.seconds,
            )
        stop.check()
        history["final"] = final
        if cfg.pictures:
            self.logger.images(save_grids(model, data, self.run_dir), history["epoch"][last])
        history["status"] = "completed"

    def interrupted(self, signalled: BaseException) -> None:
        self.history["status"] = "interrupted"
        self.history["interrupted_by"] = str(signalled)

    def failed(self, err: BaseException, stop) -> None:
        """A failure once the history exists: recorded (`failed`, with the error's line) before
        it rises. A value only the run could find wrong (a missing extra for
        logger=tensorboard) is `config`, as its exit code 2 says; anything else `error`."""
        kind = "config" if isinstance(err, ConfigError) else "error"
        self.history["status"] = "failed"
        self.history["error"] = {"kind": kind, "message": one_line(err)}
        with contextlib.suppress(OSError), stop.critical():
            save_history(self.run_dir, self.history, in_place_if_full=True)
        self.finish_logger()

    def finish(self, stop, in_sweep: bool) -> None:
        """Its last record, its plots and summary, then its logger's end."""
        from vae_runner.training.signals import StopNow

        history = self.history
        history["finished_at"] = now()
        try:
            with stop.critical():  # a second signal waits for the record, then skips the rest
                save_history(self.run_dir, history)
            if history["epoch"] and self.cfg.pictures:
                from vae_runner.report.plots import plot_run  # matplotlib: only when needed

                plot_run(self.run_dir, history)
            print_summary(self.console, history, self.run_dir, in_sweep=in_sweep)
        except StopNow:
            log.info("stopped before the plots were drawn: vae-plot RUN_DIR draws them")
        finally:  # after the files it sends to its tracker, and also when they failed
            with contextlib.suppress(StopNow), stop.critical():  # a signal waits for its end
                warned = len(history["warnings"])
                self.finish_logger()
                if len(history["warnings"]) != warned:  # the record says what its tracker lacks
                    with contextlib.suppress(OSError):
                        save_history(self.run_dir, history)

    def finish_logger(self) -> None:
        """The logger's end (its tracker's status and files); a logger that fails here is said
        in one line: history.json and the run directory are complete without it."""
        try:
            self.logger.finish(self.history)
        except Exception as err:
            log.warning(f"Warning: the logger could not finish: {one_line(err)}")
        self.logger = NoLogger()

    def _who(self) -> str:
        """In a stack's log lines, which member speaks ("" for a single run)."""
        return f"[{self.short_label}] " if self.short_label else ""
