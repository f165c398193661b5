"""`vae-train resume=<run_dir>`: continue a run from its last finished epoch, as it was started.

The config comes from the checkpoint, not from the command line: only `epochs` (to extend a run)
and `device` may be given again; any other override would make the result differ from the run
that was started, so it is refused.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from omegaconf import OmegaConf

from vae_runner.checkpoint import CHECKPOINT_DIR, LAST, CheckpointError, load_checkpoint
from vae_runner.config import GROUP_SCHEMAS, Config, ConfigError
from vae_runner.history import HISTORY_FILE

CHANGEABLE_ON_RESUME = ("epochs", "device")


def override_keys(overrides: list[str]) -> list[str]:
    """The keys of command-line overrides such as `lr=1e-3`, `+x=1`, `optimizer=sgd`."""
    keys = []
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        keys.append(key)
    return keys


def config_from_dict(saved: dict[str, Any]) -> Config:
    """Rebuild the typed config a checkpoint was written with (runs every check again)."""
    values = dict(saved)
    for group, options in GROUP_SCHEMAS.items():
        node = dict(values[group])
        schema = options.get(node["name"]) or next(iter(options.values()))
        values[group] = schema(**node)
    for key, kind in get_type_hints(Config).items():  # plain nested sections, such as `eval`
        if key not in GROUP_SCHEMAS and is_dataclass(kind) and isinstance(values.get(key), dict):
            values[key] = kind(**values[key])
    known = {f.name for f in fields(Config)}
    return Config(**{k: v for k, v in values.items() if k in known})


def load_for_resume(run_dir: Path, overrides: list[str], cli) -> tuple[Config, dict]:
    """The config and checkpoint to continue `run_dir` with; ConfigError says why not.

    `cli` is the command line's composed DictConfig: only its `epochs` and `device` are used.
    """
    if not run_dir.is_dir():
        raise ConfigError(f"resume={run_dir}: no such directory")
    last = run_dir / CHECKPOINT_DIR / LAST
    if not last.exists():
        if not (run_dir / HISTORY_FILE).exists():
            raise ConfigError(f"resume={run_dir}: this directory holds no vae-train run")
        raise ConfigError(
            f"resume={run_dir}: the run has no {CHECKPOINT_DIR}/{LAST} (it stopped before its "
            "first epoch finished); start it again instead"
        )
    refused = [
        k
        for k in override_keys(overrides)
        if k != "resume"
        and k.split(".")[0] not in CHANGEABLE_ON_RESUME
        and not k.startswith("hydra")
    ]
    if refused:
        raise ConfigError(
            f"resume continues the run with the config it was started with: drop "
            f"{', '.join(refused)} (only epochs= and device= may be given on resume)"
        )
    try:
        checkpoint = load_checkpoint(last)
    except CheckpointError as err:
        raise ConfigError(f"resume={run_dir}: {err}") from None
    saved = dict(checkpoint["config"])
    given = override_keys(overrides)
    if "epochs" in given:
        saved["epochs"] = int(cli.epochs)
    if any(k == "device" or k.startswith("device.") for k in given):
        saved["device"] = OmegaConf.to_container(cli.device)
    saved["resume"] = str(run_dir)
    cfg = config_from_dict(saved)
    done = checkpoint["epoch"]
    if cfg.epochs <= done:
        raise ConfigError(
            f"resume={run_dir}: the run already finished {done} of epochs={cfg.epochs}; "
            f"pass epochs=<more than {done}> to extend it"
        )
    return cfg, checkpoint
