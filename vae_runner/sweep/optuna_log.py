"""Hydra's Optuna sweeper ends by logging Optuna's "Best parameters" and "Best value". When
every trial failed or diverged (each objective is inf), those name a trial that has no result:
this logging filter, put on that sweeper's logger, says so instead. A filter is the logging
module's own way to change what a library logs; the sweeper itself is left as it is."""

from __future__ import annotations

import json
import logging
from pathlib import Path

OPTUNA_SWEEPER_LOGGER = "hydra_plugins.hydra_optuna_sweeper._impl"


def any_completed(sweep_dir: Path) -> bool:
    for record in Path(sweep_dir).glob("**/history.json"):
        try:
            if json.loads(record.read_text()).get("status") == "completed":
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


class NoBestWithoutResult(logging.Filter):
    def __init__(self, sweep_dir: Path) -> None:
        super().__init__()
        self.sweep_dir = Path(sweep_dir)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(("Best parameters:", "Best value:")):
            return True
        if any_completed(self.sweep_dir):
            return True
        if message.startswith("Best value:"):
            return False  # said once, with the parameters' line
        record.msg, record.args = "No best parameters: every trial failed or diverged", ()
        return True


def install(sweep_dir: Path) -> None:
    logger = logging.getLogger(OPTUNA_SWEEPER_LOGGER)
    for old in [f for f in logger.filters if isinstance(f, NoBestWithoutResult)]:
        logger.removeFilter(old)
    logger.addFilter(NoBestWithoutResult(sweep_dir))
