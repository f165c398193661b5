"""Override strings (`lr=1e-3`, `+x=1`, `~epochs`, `optimizer=sgd`) read by Hydra's own parser.

Every place that needs an override's key or value (resume's allowed keys, a sweep's labels)
reads it here, so `key=value` forms Hydra accepts (quoted values, `++key`, lists) are read the
same way everywhere.
"""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override


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
