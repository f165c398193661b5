"""Which jobs of a sweep train together as one stack (`hydra/launcher=stacked`), and the lines
that say so.

Members of a stack share one model shape and one batch loop, so they must be equal in
`STACK_KEY`: the model, likelihood, data and device nodes whole (data.limit, val_fraction,
device.precision included), batch_size, epochs and reduction. Everything else (lr, seed, beta,
grad_clip, optimizer, scheduler, annealing, early_stop, on_divergence) may differ per member.

Pure functions of typed configs. Imports no torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from vae_runner.config.errors import ConfigError
from vae_runner.config.schema import Config

STACK_KEY = ("model", "likelihood", "data", "batch_size", "epochs", "reduction", "device")
STACKED_TARGET = "StackedLauncher"  # the end of hydra/launcher=stacked's `_target_`


def stack_key(cfg: Config) -> tuple:
    """What a job must share with the other members of its stack (compared with ==: the
    typed groups are dataclasses, which do not hash)."""
    return tuple(getattr(cfg, name) for name in STACK_KEY)


def group_stacks(keys: Sequence[tuple], max_stack: int) -> list[list[int]]:
    """The positions of `keys`, grouped by equal key, each group split into stacks of at most
    `max_stack`. Stacks come in the order of their first job, jobs in their sweep order."""
    if max_stack < 1:
        raise ValueError(f"max_stack must be >= 1 (got {max_stack})")
    groups: list[tuple[tuple, list[int]]] = []
    for position, key in enumerate(keys):
        group = next((members for known, members in groups if known == key), None)
        if group is None:
            groups.append((key, [position]))
        else:
            group.append(position)
    return [
        members[start : start + max_stack]
        for _, members in groups
        for start in range(0, len(members), max_stack)
    ]


def _flat(key: tuple) -> dict[str, Any]:
    """A stack key as dotted keys and values: model.hidden_dim, batch_size, ..."""
    flat: dict[str, Any] = {}
    for name, value in zip(STACK_KEY, key, strict=True):
        if dataclasses.is_dataclass(value):
            for field, inner in dataclasses.asdict(value).items():
                flat[f"{name}.{field}"] = inner
        else:
            flat[name] = value
    return flat


def stack_lines(
    keys: Sequence[tuple], stacks: list[list[int]], numbers: Sequence[int]
) -> list[str]:
    """What the launcher logs: a heading, then one line per stack with its size, its jobs'
    numbers (`numbers[position]`: Hydra's job numbers) and the keys whose values differ between
    stacks, with this stack's values."""
    flats = [_flat(keys[stack[0]]) for stack in stacks]
    differ = [name for name in flats[0] if any(f[name] != flats[0][name] for f in flats)]
    jobs = sum(len(stack) for stack in stacks)
    lines = [f"Stacking {_count(jobs, 'job')} into {_count(len(stacks), 'stack')}"]
    for index, (stack, flat) in enumerate(zip(stacks, flats, strict=True), 1):
        members = " ".join(f"#{numbers[position]}" for position in stack)
        line = f"  stack {index}: {_count(len(stack), 'job')} ({members})"
        if differ:
            line += ": " + " ".join(f"{name}={flat[name]}" for name in differ)
        lines.append(line)
    return lines


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("s" if n != 1 else "")


def check_max_stack(launcher: Mapping) -> None:
    """hydra.launcher.max_stack of the stacked launcher: 1 or more."""
    if not str(launcher.get("_target_", "")).endswith(STACKED_TARGET):
        return
    max_stack = launcher.get("max_stack")
    if max_stack is None or max_stack < 1:
        raise ConfigError(
            f"hydra.launcher.max_stack must be 1 or more (got {max_stack}): the most jobs "
            "trained as one stack, e.g. hydra.launcher.max_stack=64"
        )
