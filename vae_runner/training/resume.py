"""`vae-train resume=<run_dir>`: continue a run from its last finished epoch, as it was started.

The config comes from the checkpoint, not from the command line: only `epochs` (to extend a run),
`early_stop` (when to stop it) and `device` may be given again; any other override would make
the result differ from the run that was started, so it is refused.

A run that its early_stop rule ended stays stopped when resumed with the same rule (the rule,
applied to the same record, says the same): resume refuses in one line. With a larger
`early_stop.patience` (or 0, off) it trains on, and its patience counter, recomputed from the
record (training/early_stop.py), goes on from where it was.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from vae_runner.config.errors import ConfigError
from vae_runner.config.overrides import keys, refuse_changes
from vae_runner.config.schema import Config
from vae_runner.config.typed import to_typed
from vae_runner.record import HISTORY_FILE, read_history
from vae_runner.training.checkpoint import CHECKPOINT_DIR, LAST, CheckpointError, load_checkpoint
from vae_runner.training.early_stop import stops_early, why
from vae_runner.training.provenance import check_checkpoint, missing_checkpoint_line


class RunFinished(ConfigError):
    """`resume=` of a run that already finished its epochs: refused, after what a kill at its
    very end left undone is repaired (report.repair), for which it carries the run's config
    and record."""

    def __init__(self, cfg: Config, history: dict | None, message: str) -> None:
        super().__init__(message)
        self.cfg, self.history = cfg, history


def load_for_resume(run_dir: Path, overrides: list[str], cli) -> tuple[Config, dict]:
    """The config and checkpoint to continue `run_dir` with; ConfigError says why not.

    `cli` is the command line's composed DictConfig: only its `epochs` and `device` are used.
    """
    if not run_dir.is_dir():
        raise ConfigError(f"resume={run_dir}: no such directory")
    last = run_dir / CHECKPOINT_DIR / LAST
    recorded = read_history(run_dir)
    if not last.exists():
        if not (run_dir / HISTORY_FILE).exists():
            raise ConfigError(f"resume={run_dir}: this directory holds no vae-train run")
        refusal = missing_checkpoint_line(run_dir, recorded)
        if refusal:
            raise ConfigError(f"resume={refusal}")
        raise ConfigError(
            f"resume={run_dir}: the run has no {CHECKPOINT_DIR}/{LAST} (it stopped before its "
            f"first epoch finished): start it again with its own command and "
            f"hydra.run.dir={run_dir}, which begins it afresh there"
        )
    refuse_changes(overrides)
    given = keys(overrides)
    try:
        checkpoint = load_checkpoint(last)
    except CheckpointError as err:
        raise ConfigError(f"resume={run_dir}: {err}") from None
    check_checkpoint(run_dir, checkpoint, recorded)  # before its settings become the run's
    saved = dict(checkpoint["config"])
    if "epochs" in given:
        saved["epochs"] = int(cli.epochs)
    if any(k == "device" or k.startswith("device.") for k in given):
        saved["device"] = OmegaConf.to_container(cli.device)
    saved["early_stop"] = _early_stop(saved, given, cli)
    saved["resume"] = str(run_dir)
    cfg = to_typed(saved)
    done = checkpoint["epoch"]
    if stops_early(checkpoint["history"], cfg.early_stop) and _has_final(recorded):
        raise RunFinished(
            cfg,
            recorded,
            f"resume={run_dir}: the run stays stopped after epoch {done}: "
            f"{why(checkpoint['history'], cfg.early_stop)}; to train on, give a larger "
            f"early_stop.patience (its count goes on from the record) or early_stop.patience=0",
        )
    if cfg.epochs == done and not _has_final(recorded):
        return cfg, checkpoint  # every epoch is checkpointed, the final evaluation is not done
    if cfg.epochs <= done:
        raise RunFinished(
            cfg,
            recorded,
            f"resume={run_dir}: the run already finished {done} of epochs={cfg.epochs}; "
            f"pass epochs=<more than {done}> to extend it",
        )
    return cfg, checkpoint


def _early_stop(saved: dict, given: list[str], cli) -> dict:
    """The run's early_stop with the keys given on resume changed (early_stop.patience=10
    keeps its min_delta). A run from before early_stop existed had it off, as the default."""
    rule = dict(saved.get("early_stop") or OmegaConf.to_container(cli.early_stop))
    changed = {k.partition(".")[2] for k in given if k.split(".")[0] == "early_stop"}
    return {k: cli.early_stop[k] if k in changed or "" in changed else v for k, v in rule.items()}


def _has_final(history: dict | None) -> bool:
    """Whether the run's record holds its final evaluation (a stop or a kill during it leaves
    every epoch checkpointed but no `final`: resume then only finishes the run)."""
    return history is not None and history.get("final") is not None
