"""A composed config (or one saved in a checkpoint) -> the typed `Config`, every rule checked.

Hydra types the top level while it composes (schema.Config is `base_config`). Here each group's
node is merged into the schema its `name` selects, so a wrong type or an unknown key anywhere
fails with OmegaConf's `full_key` and `object_type`, and then `OmegaConf.to_object` runs every
`__post_init__` range rule.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from vae_runner.config.errors import ConfigError
from vae_runner.config.schema import GROUP_SCHEMAS, Config


def group_schema(group: str, name: Any) -> type:
    """The schema a group's `name` selects; the one check of every group's `name`."""
    options = GROUP_SCHEMAS[group]
    if name not in options:
        raise ConfigError(
            f"{group}.name={name} is not a known {group}: a {group} option's `name` is one of "
            f"{', '.join(options)} (choose the option with {group}=<option>)"
        )
    return options[name]


def to_typed(cfg: DictConfig | dict) -> Config:
    """The typed config of a composed config (without its `hydra` node), or ConfigError /
    an OmegaConf error carrying `full_key` (config.explain turns either into one line)."""
    # As plain containers (interpolations kept), so that a key Hydra let into the composed
    # structured config (`+misspelt_key=1`) meets the schema again here and is refused.
    cfg = OmegaConf.create(OmegaConf.to_container(cfg) if isinstance(cfg, DictConfig) else cfg)
    typed = OmegaConf.structured(Config)
    for group in GROUP_SCHEMAS:
        node = cfg.get(group)
        name = node.get("name") if isinstance(node, DictConfig) else None
        typed[group] = OmegaConf.structured(group_schema(group, name))
    typed.merge_with(cfg)
    try:
        result = OmegaConf.to_object(typed)
    except Exception as err:  # OmegaConf wraps what a __post_init__ raised
        cause = err.__cause__ or err.__context__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise
    assert isinstance(result, Config)
    return result


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optimizer": {"lr": 1}} -> {"optimizer.lr": 1}: a config as dotted keys (how a run's
    settings are compared, and how trackers list hyper-parameters)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(
    there: dict[str, Any], here: dict[str, Any], names: tuple[str, str], kept=lambda key: True
) -> list[str]:
    """How two runs' configs differ, as `key=A <names[0]>, B <names[1]>` for each dotted key
    whose value differs and that `kept(key)` compares (`resume`, a route, is never a setting).
    Compared as typed values, so lr=1e-3 and lr=0.001 are the same."""
    a, b = flat_config(there), flat_config(here)
    return [
        f"{k}={a.get(k)} {names[0]}, {b.get(k)} {names[1]}"
        for k in sorted(set(a) | set(b))
        if k != "resume" and kept(k) and a.get(k) != b.get(k)
    ]
