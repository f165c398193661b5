"""Hydra's own command line run again from inside vae-train, with arguments vae-train built.

`vae-train resume=<sweep dir>` carries a sweep on by running the sweep's recorded command
(sweep.resume): Hydra parses those arguments with its own parser and runs them as it runs any
`vae-train -m`, so its sweeper, launcher and callbacks are the ones the sweep had.

Hydra has no public call for "run this command line"; `hydra.main` itself calls these two
functions. This is the only module of vae_runner that does, so a move upstream is mended here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hydra._internal.utils import _run_hydra, get_args_parser


def run_hydra(task: Callable[[Any], Any], arguments: list[str], config_path: str, name: str):
    """What `@hydra.main(config_path=..., config_name=name)(task)` does for `arguments`."""
    parser = get_args_parser()
    _run_hydra(
        args=parser.parse_args(arguments),
        args_parser=parser,
        task_function=task,
        config_path=config_path,
        config_name=name,
    )
