"""Check a whole command line before Hydra creates anything: every job of a sweep, one line.

Hydra would report a bad value in several lines (and, in a sweep, only when that job's turn
comes, after earlier jobs have trained). Composing each job's config here first, with the same
typed checks as the job itself, turns every such mistake into one line and exit code 2 before
any run directory exists. No torch is imported.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import re

from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from vae_runner.config import _OPTION_OF_SCHEMA, GROUP_SCHEMAS, ConfigError

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


# Hydra's flags that train (the others are in NOT_A_RUN), and those of them that take a value.
RUN_FLAGS = ("-m", "--multirun", "-r", "--run")
VALUE_FLAGS = ("-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir", "-p",
               "--package")  # fmt: skip


def misshapen_setting(args: list[str]) -> str | None:
    """One line for what a newcomer types out of habit (`--lr 1e-3`, `lr 1e-3`), where Hydra
    would say only that it cannot parse it; None when every argument has a setting's shape."""
    i = 0
    while i < len(args):
        arg, following = args[i], args[i + 1] if i + 1 < len(args) else None
        i += 1
        if arg in RUN_FLAGS or arg.split("=", 1)[0] in VALUE_FLAGS:
            if arg in VALUE_FLAGS:
                i += 1  # its value is the next argument
            continue
        key, has_value, value = arg.lstrip("-").partition("=")
        if arg.startswith("-"):
            if not has_value and following is not None and not following.startswith("-"):
                value = following if "=" not in following else ""
            example = f"{key}={value or '<value>'}"
            return (
                f"{arg} is not an option of vae-train: settings are written key=value, "
                f"without dashes: {example} (`vae-train --help` lists them)"
            )
        if not has_value and not arg.startswith("~"):
            if following is not None and "=" not in following and not following.startswith("-"):
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
    """'of optimizer=adam (did you mean betas?): its keys are ...' from the schema that refused
    a key."""
    schema = err.object_type
    if schema is None or not dataclasses.is_dataclass(schema):
        return "(`vae-train --help` lists every key)"
    names = [f.name for f in dataclasses.fields(schema)]
    close = difflib.get_close_matches(str(err.key or ""), names, n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]}?)" if close else ""
    keys = ", ".join(names)
    option = _OPTION_OF_SCHEMA.get(schema)
    if option is None:
        return f"of the config{hint}: the top-level keys are {keys}"
    group = next(g for g, options in GROUP_SCHEMAS.items() if schema in options.values())
    return f"of {group}={option}{hint}: its keys are {keys}"


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
    misshapen = misshapen_setting(args)
    if misshapen:
        return misshapen
    if any(a.startswith("resume=") and a != "resume=null" for a in args):
        return None  # resume checks its own overrides against the saved config (resume.py)
    multirun = "-m" in args or "--multirun" in args
    overrides = [a for a in args if not a.startswith("-")]
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
