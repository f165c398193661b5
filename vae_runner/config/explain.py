"""Hydra's and OmegaConf's errors about a config, as one line that names the key and the fix.

Every message is built from the exception's fields (`missing_cfg_file` and `options`,
`override`, OmegaConf's `full_key`, `key` and `object_type`), never from its text, so a
new Hydra wording cannot break it.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing

from hydra.errors import (
    ConfigCompositionException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    ConfigTypeError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from vae_runner.config.errors import ConfigError
from vae_runner.config.schema import GROUP_SCHEMAS, Config

SWEEP_EXTRA = "pip install 'vae-runner[sweep]'"
# Options of Hydra's groups that the `sweep` extra's plugins (and conf/hydra/launcher/) provide.
PLUGIN_OPTIONS = {
    "hydra/launcher": ("joblib", "submitit_local", "submitit_slurm", "slurm"),
    "hydra/sweeper": ("optuna",),
    "hydra/sweeper/sampler": ("tpe", "random", "cmaes", "nsgaii", "motpe", "grid"),
}


def explain(err: BaseException) -> str | None:
    """One line for an error in the user's config or command line; None for anything else."""
    if isinstance(err, ConfigError):
        return str(err)
    if isinstance(err, MissingConfigException):
        return _missing(err)
    if isinstance(err, OverrideParseException):
        return _unparsable(err.override)
    cause = err if isinstance(err, OmegaConfBaseException) else err.__cause__
    if isinstance(cause, OmegaConfBaseException):
        return _omegaconf(cause)
    if isinstance(err, ConfigCompositionException):  # e.g. +lr=1e-2 when lr is there already
        return " ".join(str(err).split())  # Hydra's words name the override and the fix
    return None


def _missing(err: MissingConfigException) -> str:
    group, _, option = (err.missing_cfg_file or "").rpartition("/")
    if not group:
        return f"there is no config named {option!r} on the config search path (-cn/-cp/-cd)"
    if option in PLUGIN_OPTIONS.get(group, ()):
        return f"{group}={option} needs Hydra's plugins from the sweep extra: {SWEEP_EXTRA}"
    options = ", ".join(err.options or []) or "none found"
    return f"{group}={option} is not an option of {group}: choose one of {options}"


def _unparsable(override: str) -> str:
    if override.startswith("-"):
        key = override.lstrip("-").partition("=")[0].replace("-", "_")
        return f"{override} is not an option: settings are written key=value: {key}=<value>"
    if override.endswith(",") or override.startswith(","):
        return (
            f"{override!r}: a space after a comma splits a sweep's values into two arguments; "
            "write them without spaces (lr=1e-3,1e-4) or quote the whole setting"
        )
    if "=" not in override:
        return (
            f"{override} has no value: a setting is one argument, key=value "
            f"(write {override}=<value>, without spaces around '=')"
        )
    return f"cannot read the setting {override!r}: write key=value (quote values with spaces)"


def _omegaconf(err: OmegaConfBaseException) -> str:
    key = err.full_key or str(err.key or "")
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)):
        return f"{key} is not a key {_owner(err)}"
    if isinstance(err, MissingMandatoryValue) and key:
        return (
            f"{key} has no value (removed with ~{key}?): every run needs one; give it as "
            f"{key}=<value>, or leave ~{key} out to keep the default"
        )
    shape = _declared_shape(key) if isinstance(err, (ValidationError, ConfigTypeError)) else None
    if shape:
        return f"{key.partition('[')[0]} must be {shape}"
    first = (err.msg or type(err).__name__).strip().splitlines()[0]
    return f"{key}: {first}" if key else first


def _declared_shape(full_key: str) -> str | None:
    """What the schema says a key holds (its field's `shape`, e.g. optimizer.betas: a list of
    two numbers), for a value of the wrong type; found from `full_key` (optimizer.betas[0] too)."""
    section, _, name = full_key.partition("[")[0].rpartition(".")
    for schema in _SECTIONS.get(section, {}).values():
        for field in dataclasses.fields(schema):
            if field.name == name and "shape" in field.metadata:
                return field.metadata["shape"]
    return None


def _owner(err: OmegaConfBaseException) -> str:
    """'of optimizer=adam (did you mean optimizer.betas?): its keys are ...' from the schema
    that refused a key."""
    schema = err.object_type
    parent = (err.full_key or "").rpartition(".")[0]
    if dataclasses.is_dataclass(schema):
        names = [f.name for f in dataclasses.fields(schema)]
    elif parent in _SECTIONS:  # a group's node before it is typed: the keys of all its options
        having = [name for name, s in _SECTIONS[parent].items() if _has_field(s, str(err.key))]
        if having:
            return f"of this {parent} (only of {parent}={' or '.join(having)}): choose that option"
        fields = [f.name for s in _SECTIONS[parent].values() for f in dataclasses.fields(s)]
        names = list(dict.fromkeys(fields))
    else:
        return "(`vae-train --cfg job` prints every key)"
    hint = _did_you_mean(str(err.key or ""), names, parent)
    where = f"of {parent}" if parent else "of the config"
    return f"{where}{hint}: its keys are {', '.join(names)}"


def _did_you_mean(key: str, names: list[str], parent: str) -> str:
    """' (did you mean optimizer.betas?)': a group's key typed at the top level, else a near
    spelling (case ignored) among `names`."""
    if not parent:
        having = {
            group: [name for name, schema in options.items() if _has_field(schema, key)]
            for group, options in _SECTIONS.items()
        }
        found = [(group, names_) for group, names_ in having.items() if names_]
        if len(found) == 1:
            group, with_key = found[0]
            everywhere = len(set(with_key)) == len(set(_SECTIONS[group]))
            where = "" if everywhere else f" with {group}={' or '.join(with_key)}"
            return f" (did you mean {group}.{key}{where}?)"
    lowered = {name.lower(): name for name in names}
    close = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=0.75)
    prefix = f"{parent}." if parent else ""
    return f" (did you mean {prefix}{lowered[close[0]]}?)" if close else ""


def _has_field(schema: type, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(schema))


# Every section of the config and its schemas: the groups, and plain sections such as `eval`.
_SECTIONS = GROUP_SCHEMAS | {
    name: {name: hint}
    for name, hint in typing.get_type_hints(Config).items()
    if name not in GROUP_SCHEMAS and dataclasses.is_dataclass(hint)
}
