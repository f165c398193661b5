"""The config search path as Hydra composed it: which files of a `-cd DIR` or `hydra.searchpath`
folder Hydra reads, and which presets `--help` cannot list.

Hydra adds `-cd DIR` and `hydra.searchpath` folders *after* vae-train's own configs, and takes
each file (`config.yaml`, `optimizer/adam.yaml`) from the first folder that has it, so a file of
the same name in DIR is never read: a `lr: 0.01` there would train at 1e-3 without a word. That
is Hydra's documented rule, kept; a run whose own file is passed over this way is refused
(`refuse_shadowed`). Read from `hydra.runtime.config_sources`, the composed config's record of
the search path, never from the command line.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable, Mapping
from importlib.resources.abc import Traversable
from pathlib import Path

from vae_runner.config.errors import ConfigError

PRIMARY = "{name}.yaml"  # Hydra's name for a primary config file (`-cn NAME`)


def source_root(schema: str, path: str) -> Traversable | None:
    """The folder of one search-path entry: a file:// folder or a pkg:// package (None for
    ConfigStore's `structured` source, or a package that is not installed)."""
    if schema == "file":
        return Path(path)
    if schema == "pkg":
        try:
            return importlib.resources.files(path.replace("/", "."))
        except ModuleNotFoundError:
            return None
    return None


def _read(root: Traversable, name: str) -> str | None:
    found = root.joinpath(name)
    return found.read_text() if found.is_file() else None


def shadowed(sources: Iterable[Mapping], names: Iterable[str]) -> list[tuple[str, str, str]]:
    """(name, a file passed over, the one Hydra read instead) for each of `names` (such as
    `config.yaml`) that several folders of the search path hold with different contents; only
    the first holder is read. An identical copy (a copied conf/ folder) loses nothing."""
    roots = [source_root(str(s["schema"]), str(s["path"])) for s in sources]
    passed_over = []
    for name in names:
        read = None
        for root in roots:
            text = None if root is None else _read(root, name)
            if text is None:
                continue
            if read is None:
                read = (root, text)
            elif text != read[1]:
                lost, used = root.joinpath(name), read[0].joinpath(name)
                passed_over.append((name, str(lost), str(used)))
    return passed_over


def refuse_shadowed(hydra_cfg) -> None:
    """ConfigError when the run's primary config or a chosen option exists in a `-cd` (or
    `hydra.searchpath`) folder but Hydra read vae-train's own file of that name instead."""
    primary = PRIMARY.format(name=hydra_cfg.job.config_name)
    chosen = {
        f"{group}/{option}.yaml": (group, option)
        for group, option in hydra_cfg.runtime.choices.items()
        if isinstance(option, str)
    }
    for name, lost, read in shadowed(hydra_cfg.runtime.config_sources, [primary, *chosen]):
        if name == primary:
            folder = lost.removesuffix(primary).rstrip("/")
            raise ConfigError(
                f"{lost} is not read: Hydra takes {primary} from vae-train's own configs, "
                f"before the folders of -cd and hydra.searchpath; rename it (e.g. "
                f"mine.yaml, starting with `defaults: [config, _self_]`) and run "
                f"vae-train -cd {folder} -cn mine"
            )
        group, option = chosen[name]
        raise ConfigError(
            f"{lost} is not read: Hydra takes {group}={option} from {read}, which comes first "
            f"on the config search path; rename yours (e.g. {option}_mine.yaml) and choose it "
            f"with {group}={option}_mine"
        )


def presets(folder: Traversable, group: str = "") -> dict[str, list[str]]:
    """{group: [options]} of the YAML files in a config folder (nested groups as a/b), without
    Hydra's own `hydra/` groups, as `--help` lists them."""
    found: dict[str, list[str]] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith(("_", ".")):
            if group or entry.name != "hydra":
                found |= presets(entry, f"{group}/{entry.name}" if group else entry.name)
        elif group and entry.name.endswith(".yaml"):
            found.setdefault(group, []).append(entry.name.removesuffix(".yaml"))
    return found


def searchpath_groups(searchpath: Iterable[str]) -> str:
    """What `--help` adds for the folders of `hydra.searchpath`, a block per folder ending with
    a newline ('' when there are none): Hydra lists the groups of the search path it started
    with (vae-train's own configs and `-cd DIR`), not those of hydra.searchpath."""
    text = ""
    for entry in searchpath:
        schema, sep, path = str(entry).partition("://")
        root = source_root(schema if sep else "file", path if sep else schema)
        found = presets(root) if root is not None and root.is_dir() else {}
        if found:
            text += f"On hydra.searchpath ({entry}):\n"
            text += "".join(f"{g}: {', '.join(o)}\n" for g, o in sorted(found.items()))
    return text
