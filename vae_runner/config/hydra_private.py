"""The three things vae-runner takes from Hydra that Hydra offers no public import for, in one
place, so that a move upstream is mended here alone (hydra-core is pinned below 1.4):

- `basic_sweeper()`: Hydra's grid sweeper, which the `checked` sweeper extends and whose
  `split_arguments` plans a sweep's jobs (sweep.plan);
- `overrides_dirname()`: `hydra.job.override_dirname` as Hydra makes it, for the sweep jobs the
  checked sweeper derives instead of composing (cli.sweep_configs);
- `run_hydra()`: a command line run as `@hydra.main` runs one, for `vae-train resume=<sweep
  dir>`, which runs the sweep's recorded command again (cli.train).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def basic_sweeper() -> type:
    """Hydra's grid sweeper class, as Hydra has it loaded now. Each Hydra app start runs its
    plugin modules again in place (a new class each time, which its own __init__ names), so the
    class is looked up when asked for, never kept from an earlier start (in-process runs)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper


def overrides_dirname(overrides: list, exclude_keys: list, item_sep: str, kv_sep: str) -> str:
    """Hydra's own `hydra.job.override_dirname` of these parsed overrides."""
    from hydra._internal.config_loader_impl import get_overrides_dirname

    return get_overrides_dirname(
        overrides=overrides, exclude_keys=exclude_keys, item_sep=item_sep, kv_sep=kv_sep
    )


def run_hydra(task: Callable[[Any], Any], arguments: list[str], config_path: str, name: str):
    """What `@hydra.main(config_path=..., config_name=name)(task)` does for `arguments`: the two
    calls `hydra.main` itself makes."""
    from hydra._internal.utils import _run_hydra, get_args_parser

    parser = get_args_parser()
    _run_hydra(
        args=parser.parse_args(arguments),
        args_parser=parser,
        task_function=task,
        config_path=config_path,
        config_name=name,
    )
