"""`vae-eval`: a run's checkpoint measured again, without training.

It reads the run (its checkpoint and the config saved in it) and never writes there except its
own `eval.json`: no lock is taken, so it runs beside a live training run, which writes each
checkpoint atomically (it reads the last complete one).

The measures are the run's own, computed the run's way: the test pass of `epoch.evaluate` (with
a generator seeded by the run's `seed`: its z samples give the one-sample test loss)
and `metrics.importance_weighted_nll`, whose noise comes from its own generator with a fixed
seed. With the run's K, batch size, device and thread count, the estimate of `last.pt` of a
completed run is the run's `final.test_nll_iw` exactly.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from vae_runner import __version__
from vae_runner.config.errors import ConfigError
from vae_runner.config.explain import explain
from vae_runner.config.schema import Config, DataConfig, MNISTDataConfig
from vae_runner.config.typed import to_typed
from vae_runner.data import idx
from vae_runner.data.images import load_data
from vae_runner.record import HISTORY_FILE, read_history
from vae_runner.rundir import is_live, never_trained
from vae_runner.training.allocator import reuse_freed_blocks
from vae_runner.training.build import build_device, build_model
from vae_runner.training.checkpoint import BEST, CHECKPOINT_DIR, LAST, CheckpointError
from vae_runner.training.checkpoint import load_checkpoint as read_checkpoint
from vae_runner.training.epoch import evaluate
from vae_runner.training.metrics import BURDA_THRESHOLD, importance_weighted_nll
from vae_runner.training.noise import SeededNoise
from vae_runner.training.stacked_model import stack_models

CHECKPOINTS = {"last": LAST, "best": BEST}


def checkpoint_file(run_dir: Path, which: str) -> Path:
    """The checkpoint `--checkpoint which` names, or ConfigError saying why there is none."""
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such directory; give a vae-train run directory")
    folder = run_dir / CHECKPOINT_DIR
    if never_trained(run_dir):
        raise ConfigError(
            f"{run_dir} holds no vae-train run (no {HISTORY_FILE}, no {CHECKPOINT_DIR}/): give "
            "a run directory, such as outputs/<date>/<time> or a sweep's job folder"
        )
    path = folder / CHECKPOINTS[which]
    if path.is_file():
        return path
    if which == "best" and (folder / LAST).is_file():
        raise ConfigError(f"{run_dir} has no {CHECKPOINT_DIR}/{BEST}: use --checkpoint last")
    raise ConfigError(
        f"{run_dir} has no {CHECKPOINT_DIR}/{CHECKPOINTS[which]}: the run stopped before its "
        "first epoch finished, so there is nothing to evaluate"
    )


def load_run(path: Path) -> tuple[Config, dict[str, Any]]:
    """The typed config saved in the checkpoint at `path`, and the checkpoint."""
    checkpoint = read_checkpoint(path)  # CheckpointError: one line naming the file
    try:
        return to_typed(checkpoint["config"]), checkpoint
    except Exception as err:
        line = explain(err)
        if line is None:
            raise
        raise CheckpointError(f"{path}: its config does not fit this vae-runner: {line}") from None


def run_status(run_dir: Path) -> str | None:
    """The run's status now: its record's, or `running` while a process holds the folder."""
    if is_live(run_dir):
        return "running"
    return (read_history(run_dir) or {}).get("status")


def check_data(cfg: DataConfig, start_dir: Path) -> None:
    """The run's IDX files are found from `start_dir`, as vae-train looks for them; vae-eval
    never downloads (it measures the data the run had), so it refuses here instead."""
    if not isinstance(cfg, MNISTDataConfig):
        return  # digits ship with scikit-learn
    root = None if cfg.root is None else start_dir / Path(cfg.root).expanduser()
    if root is not None and not root.is_dir():
        looked = str(root)
    else:
        places = idx.places_to_look(cfg.name, cfg.root, start_dir)
        if idx.find_source(places) is not None:
            return
        looked = "; ".join(f"{p.path} ({p.why})" for p in places)
    given = f" data.root={cfg.root}" if cfg.root is not None else ""
    fix = (
        "run vae-eval from the folder the run was started in (relative paths are read from "
        "the working directory), or put the four files back"
        if cfg.root is not None
        else "put the four files in one of those places, or export VAE_RUNNER_DATA=<folder>"
    )
    raise idx.DataError(
        f"the run's data (data={cfg.name}{given}) is not found from {start_dir}: looked in "
        f"{looked}; {fix}"
    )


def _model_and_test_set(cfg: Config, checkpoint: dict[str, Any], device, start_dir: Path):
    """The checkpoint's model and its run's test set (no training images), on `device`."""
    check_data(cfg.data, start_dir)
    data_cfg = cfg.data
    if isinstance(data_cfg, MNISTDataConfig):
        data_cfg = replace(data_cfg, download=False)
    # Only the test set is kept: Fashion-MNIST's training images alone are 47 MB.
    data = load_data(data_cfg, cfg.likelihood, start_dir).without_train().to(device)
    model = build_model(cfg.model, cfg.likelihood, data.image_shape).to(device)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as err:  # shapes or names: the file does not hold this config's model
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(
            f"the checkpoint's weights do not fit its config: {first[:200]}"
        ) from None
    return model, data


def _likelihood(model, data, iw_samples: int) -> dict[str, Any]:
    """The IW estimate's fields (history.json's `final` names), none when K = 0."""
    if not iw_samples:
        return {"test_nll_iw": None, "test_nll_iw_se": None, "iw_seconds": None}
    estimate = importance_weighted_nll(model, data.test, iw_samples, to_float=data.to_float)
    return {
        "test_elbo": -estimate.neg_elbo,  # from the same samples: never tighter than the NLL
        "elbo_samples": estimate.samples,
        "test_nll_iw": estimate.nll,
        "test_nll_iw_se": estimate.nll_se,
        "iw_seconds": estimate.seconds,
    }


def evaluate_checkpoint(
    cfg: Config,
    checkpoint: dict[str, Any],
    iw_samples: int,
    batch_size: int,
    start_dir: Path,
    device_name: str | None = None,
) -> dict[str, Any]:
    """The measures of the checkpoint's model on its run's test set (K = 0: no IW estimate).
    Relative data paths are read from `start_dir`."""
    started = time.perf_counter()
    device_cfg = cfg.device if device_name is None else replace(cfg.device, name=device_name)
    device = build_device(device_cfg)
    if device.type == "cpu":
        reuse_freed_blocks()  # the estimate frees and remakes its chunks: keep them, as runs do
    model, data = _model_and_test_set(cfg, checkpoint, device, start_dir)
    # the test pass samples z: the same draws every time, from a generator seeded by the run's seed
    noise = SeededNoise([cfg.seed], device)
    (test,) = evaluate(stack_models([model]), data, batch_size, noise, [True])
    return {
        "test_elbo": -(test.recon + test.kl),  # one sample, unless the estimate gives its own
        "elbo_samples": 1,
        "iw_samples": iw_samples,
        **_likelihood(model, data, iw_samples),
        "test_loss": test.recon + cfg.beta * test.kl,  # one z sample per image, as every epoch
        "test_recon": test.recon,
        "test_kl": test.kl,
        "active_units": sum(kl > cfg.active_threshold for kl in test.kl_by_dim),
        "active_units_burda": test.active_burda,
        "active_units_threshold": cfg.active_threshold,
        "active_units_burda_threshold": BURDA_THRESHOLD,
        "latent_dim": model.latent_dim,
        "kl_by_dim": test.kl_by_dim,
        "data_name": data.name,
        "n_test": len(data.test),
        "batch_size": batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "seconds": time.perf_counter() - started,
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    return {"vae_runner": __version__, "torch": str(torch.__version__)}
