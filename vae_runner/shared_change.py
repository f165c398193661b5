"""A process-wide change shared by nested and concurrent blocks: made by the first to enter,
undone by the last to leave (runs in threads of one process each open their own block).

Used for glibc's malloc thresholds (allocator.py) and torch.optim's deferred dynamo import
(lazy_dynamo.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class SharedChange:
    def __init__(self, make: Callable[[], Any], undo: Callable[[], None]) -> None:
        self._make, self._undo = make, undo
        self._lock = threading.Lock()
        self._depth = 0  # how many blocks are open
        self._made: Any = None  # what `make` returned: what every block yields

    @contextmanager
    def block(self) -> Iterator[Any]:
        with self._lock:
            if self._depth == 0:
                self._made = self._make()
            self._depth += 1
        try:
            yield self._made
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._undo()
