"""Override strings (`lr=1e-3`, `+x=1`, `~epochs`, `optimizer=sgd`) read by Hydra's own parser.

Every place that needs an override's key or value (resume's allowed keys, a sweep's labels)
reads it here, so `key=value` forms Hydra accepts (quoted values, `++key`, lists) are read the
same way everywhere.
"""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override

from vae_runner.config.errors import ConfigError

# What continuing a run may change: more epochs, another device. Anything else would make the
# result another run than the one that was started (resume=DIR, a sweep carried on).
CHANGEABLE_ON_RESUME = ("epochs", "early_stop", "device")


def task_overrides(hydra) -> list[str]:
    """The command line's settings as Hydra recorded them (`hydra.overrides.task` of the
    `hydra` node given), as written. Read unresolved: iterating the node would resolve a value
    that is an interpolation (`'seed=${oc.env:SEED,0}'`) where it is read, in the sweep's
    process and environment, while Hydra hands it to the job to resolve as its own."""
    from omegaconf import OmegaConf

    return [str(o) for o in OmegaConf.to_container(hydra.overrides.task, resolve=False)]


def parse(overrides: list[str]) -> list[Override]:
    return OverridesParser.create().parse_overrides([str(o) for o in overrides])


def keys(overrides: list[str]) -> list[str]:
    """The keys (or groups) the overrides set: `lr`, `optimizer`, `hydra.run.dir`."""
    return [o.key_or_group for o in parse(overrides)]


def by_key(overrides: list[str]) -> dict[str, str]:
    """Each override as written, by the key or group it sets (the last one wins, as in Hydra)."""
    return {o.key_or_group: o.input_line for o in parse(overrides)}


def values_by_key(overrides: list[str]) -> dict[str, object]:
    """Each override's value as Hydra types it (`lr=1e-2` -> 0.01, `flag=true` -> True,
    `optimizer=sgd` -> "sgd", `~key` -> None), by key; the last one wins, as in Hydra."""
    return {o.key_or_group: o.value() for o in parse(overrides)}


def changeable(key: str) -> bool:
    """Whether continuing a run may change `key` (`epochs`, `device`, `device.threads`)."""
    return key.split(".")[0] in CHANGEABLE_ON_RESUME


def refuse_changes(overrides: list[str]) -> None:
    """resume=: only epochs=, early_stop.* and device= may be given again (and Hydra's own
    settings)."""
    removed = [o.input_line for o in parse(overrides) if o.is_delete()]
    if removed:
        raise ConfigError(
            f"{removed[0]}: resume continues the run with the config it was started with, so "
            "nothing can be removed; drop it (only epochs=, early_stop.* and device= may be "
            "given on resume)"
        )
    refused = [
        k
        for k in keys(overrides)
        if k != "resume" and not changeable(k) and not k.startswith("hydra")
    ]
    if refused:
        raise ConfigError(
            f"resume continues the run with the config it was started with: drop "
            f"{', '.join(refused)} (only epochs=, early_stop.* and device= may be given on resume)"
        )
