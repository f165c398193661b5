"""Check a whole command line before Hydra creates anything: every job of a sweep, one line.

Hydra would report a bad value in several lines (and, in a sweep, only when that job's turn
comes, after earlier jobs have trained). Composing each job's config here first, with the same
typed checks as the job itself, turns every such mistake into one line and exit code 2 before
any run directory exists. No torch is imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import itertools
import re
import typing

from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from vae_runner.config import _OPTION_OF_SCHEMA, GROUP_SCHEMAS, Config, ConfigError

# Flags after which Hydra does something other than train: leave them to Hydra.
NOT_A_RUN = (
    "--help",
    "-h",
    "--hydra-help",
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--version",
    "--resolve",
    "--experimental-rerun",
)


NEGATIVE_NUMBER = re.compile(r"^-\.?\d")


def hydra_arguments(args: list[str]) -> tuple[argparse.Namespace, list[str]] | None:
    """Hydra's own reading of the command line (its flags, with their `=`, joined and
    abbreviated forms) and the arguments it does not know; None where Hydra itself would
    refuse its flags (it says why better)."""
    from hydra._internal.utils import get_args_parser

    def refuse(message: str):
        raise argparse.ArgumentError(None, message)

    parser = get_args_parser()
    parser.exit_on_error = False
    parser.error = refuse  # no usage text printed from here
    try:
        return parser.parse_known_args(args)
    except (argparse.ArgumentError, SystemExit):
        return None


def misshapen_setting(args: list[str], overrides: list[str], unknown: list[str]) -> str | None:
    """One line for what a newcomer types out of habit (`--lr 1e-3`, `lr 1e-3`), where Hydra
    would say only that it cannot parse it; None when every setting has the key=value shape.
    `overrides` and `unknown` are Hydra's reading of `args` (hydra_arguments)."""
    if unknown:
        flag = unknown[0]
        key, has_value, value = flag.lstrip("-").partition("=")
        key = key.replace("-", "_")
        if not has_value:
            following = (args[args.index(flag) + 1 :] or [""])[0]
            takes = "=" not in following and (
                not following.startswith("-") or NEGATIVE_NUMBER.match(following)
            )
            value = following if takes else ""
        return (
            f"{flag} is not an option of vae-train: settings are written key=value, "
            f"without dashes: {key or '<key>'}={value or '<value>'} (`vae-train --help` lists them)"
        )
    for i, arg in enumerate(overrides):
        if "=" in arg or arg.startswith("~"):
            continue
        following = overrides[i + 1] if i + 1 < len(overrides) else None
        if following is not None and "=" not in following:
            return (
                f"`{arg} {following}`: a setting is one argument, key=value: "
                f"write {arg}={following}"
            )
        return f"{arg} has no value: write {arg}=<value> (`vae-train --help` lists the keys)"
    return None


def job_overrides(args: list[str], multirun: bool) -> list[list[str]] | None:
    """The override list of every job the command line asks for; None when it cannot say."""
    overrides = OverridesParser.create().parse_overrides(args)
    fixed: list[str] = []
    sweeps: list[list[str]] = []
    for override in overrides:
        if override.is_hydra_override():
            continue  # hydra.* settings and launcher/sweeper choices are Hydra's to check
        if override.is_sweep_override():
            discrete = override.is_discrete_sweep()
            if not multirun or not discrete or override.value_type == ValueType.GLOB_CHOICE_SWEEP:
                return None
            key = override.get_key_element()
            sweeps.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            fixed.append(override.input_line)
    return [fixed + list(combo) for combo in itertools.product(*sweeps)]


def explain(err: Exception) -> str:
    """Hydra's and OmegaConf's several-line compose errors, as one line."""
    text = str(err)
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        listed = text.split("Available options", 1)[-1].split("Config search path")[0]
        options = [line.strip() for line in listed.splitlines()[1:] if line.strip()]
        return f"{group}={option} is not an option of {group}: choose one of {', '.join(options)}"
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    if isinstance(cause, OmegaConfBaseException):
        key = cause.full_key or "?"
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
            return f"{key} is not a key {_owner(cause)}"
        return f"{key}: {cause.msg.splitlines()[0]}"
    return f"cannot read the command line: {text.strip().splitlines()[0]}"


def _owner(err: OmegaConfBaseException) -> str:
    """'of optimizer=adam (did you mean optimizer.betas?): its keys are ...', from the schema
    that refused a key."""
    schema = err.object_type
    if schema is None or not dataclasses.is_dataclass(schema):
        return "(`vae-train --help` lists every key)"
    names = [f.name for f in dataclasses.fields(schema)]
    parent = (err.full_key or "").rpartition(".")[0]
    hint = _did_you_mean(str(err.key or ""), names, parent)
    keys = ", ".join(names)
    option = _OPTION_OF_SCHEMA.get(schema)
    if option is not None:
        group = next(g for g, options in GROUP_SCHEMAS.items() if schema in options.values())
        return f"of {group}={option}{hint}: its keys are {keys}"
    if parent:
        return f"of {parent}{hint}: its keys are {keys}"
    return f"of the config{hint}: the top-level keys are {keys}"


def _did_you_mean(key: str, names: list[str], parent: str) -> str:
    """' (did you mean optimizer.betas?)': a key of a group typed at the top level (the group
    named, and its options where not all have it), else a near spelling among `names`."""
    if not parent:
        having_key = {
            group: [option for option, schema in options.items() if _has_field(schema, key)]
            for group, options in _SECTIONS.items()
        }
        found = [(group, having) for group, having in having_key.items() if having]
        if len(found) == 1:
            group, having = found[0]
            everywhere = len(having) == len(_SECTIONS[group])
            where = "" if everywhere else f" with {group}={' or '.join(having)}"
            return f" (did you mean {group}.{key}{where}?)"
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    return f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""


def _has_field(schema: type, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(schema))


# Every section of the config and its schemas by option: the groups, and those with one
# schema and no options (eval), under their own name.
_SECTIONS = GROUP_SCHEMAS | {
    field.name: {field.name: hint}
    for field in dataclasses.fields(Config)
    if field.name not in GROUP_SCHEMAS
    and dataclasses.is_dataclass(hint := typing.get_type_hints(Config)[field.name])
}


def _check_data_files(data) -> None:
    """Files that must already be there (data.download=false) are looked for now, not after
    Hydra has made the run directory. Only where they are is checked; their content is
    checked when they are loaded."""
    from pathlib import Path

    from vae_runner import idx

    if data.name not in idx.TORCHVISION_CLASS:
        return
    if data.root is not None and not Path(data.root).expanduser().is_dir():
        raise idx.DataError(
            f"data.root={data.root}: no such folder; give the folder that holds the four IDX "
            "files, or leave data.root out to search the usual places"
        )
    if data.download:
        return
    places = idx.places_to_look(data.name, data.root)
    if not any(idx.find_files(p.path) and (p.direct or p.path.name == "raw") for p in places):
        raise idx.DataError(idx.not_found_message(data.name, places, None))


def check_command_line(args: list[str]) -> str | None:
    """None when every job's config composes and passes the checks; else one line to print."""
    from vae_runner.app import to_typed
    from vae_runner.config import register_configs

    if any(a in NOT_A_RUN or a.startswith("--cfg") for a in args):
        return None
    parsed = hydra_arguments(args)
    if parsed is None:
        return None
    hydra, unknown = parsed
    if hydra.cfg or hydra.info or hydra.hydra_help or hydra.shell_completion:
        return None  # an abbreviated or `=` form of a flag in NOT_A_RUN
    if hydra.experimental_rerun or hydra.config_path or hydra.config_dir:
        return None  # another run's or another folder's config: Hydra composes that one
    if hydra.config_name not in (None, "config"):
        return None
    misshapen = misshapen_setting(args, hydra.overrides, unknown)
    if misshapen:
        return misshapen
    if any(a.startswith("resume=") and a != "resume=null" for a in hydra.overrides):
        return None  # resume checks its own overrides against the saved config (resume.py)
    multirun = hydra.multirun
    overrides = hydra.overrides
    try:
        jobs = job_overrides(overrides, multirun)
    except Exception as err:  # a syntax error in an override
        return explain(err)
    if jobs is None:
        return None
    register_configs()
    with initialize_config_module("vae_runner.conf", version_base="1.3"):
        for job in jobs:
            where = f"job {' '.join(job)}: " if len(jobs) > 1 else ""
            try:
                _check_data_files(to_typed(compose("config", overrides=job)).data)
            except ConfigError as err:
                return f"{where}{err}" + ("; nothing was run" if where else "")
            except Exception as err:
                return f"{where}{explain(err)}" + ("; nothing was run" if where else "")
    return None
