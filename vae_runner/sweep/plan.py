"""A grid sweep's plan: `seeds=N` as the sweep dimension `seed=range(N)`, and every job's
overrides in job order as Hydra's basic sweeper expands them. Pure functions of the override
strings: the checked sweeper (hydra_plugins) plans with them before it launches anything, and a
sweep's summary reads back from multirun.yaml which jobs were planned (sweep/rundirs.py).

Imports no torch.
"""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser

from vae_runner.config.hydra_private import basic_sweeper
from vae_runner.config.schema import MAX_SEEDS


class SeedsConflict(ValueError):
    """`seeds=N` beside a `seed=` override: which seeds to run is unclear."""


def expand_seeds(arguments: list[str], default: int | None) -> list[str]:
    """`seeds=N` (from the command line, else `default`: the config's, e.g. an experiment's)
    becomes the sweep dimension `seed=range(N)`, so each job records its own `seed=k` and
    nothing else. A `seed=` of the command line wins over a preset's `seeds`; beside a
    `seeds=` of the command line it is refused."""
    parsed = OverridesParser.create().parse_overrides(arguments)
    given = [o for o in parsed if o.get_key_element() == "seeds"]
    kept = [a for a, o in zip(arguments, parsed, strict=True) if o.get_key_element() != "seeds"]
    count = default
    if given:
        value = given[-1].value()
        count = None if value is None else int(value)
        # The typed config's own rule, here too: the jobs never see `seeds`, so seeds=0 would
        # otherwise run one job with the configured seed instead of being refused.
        if count is not None and not 1 <= count <= MAX_SEEDS:
            raise ValueError(
                f"seeds must be a count from 1 to {MAX_SEEDS} (got {count}), e.g. seeds=3"
            )
    seed_given = [o.input_line for o in parsed if o.get_key_element() == "seed"]
    if seed_given and given and count is not None:
        raise SeedsConflict(
            f"seeds={count} runs seed=0..{count - 1} and {seed_given[0]} names seeds too: "
            "give one of them"
        )
    if count is None or count <= 1 or seed_given:
        return kept
    return kept + [f"seed=range({count})"]


def planned_jobs(arguments: list[str], seeds: int | None = None) -> list[list[str]]:
    """Every job's overrides, in job order, as the checked sweeper expands `arguments` (with
    the config's `seeds`)."""
    expanded = expand_seeds(arguments, seeds)
    overrides = OverridesParser.create().parse_overrides(expanded)
    return [job for batch in basic_sweeper().split_arguments(overrides, None) for job in batch]
