"""Writing a run's files so that each is always complete, and naming the file a write failed on.

`WriteError` is what a failed write of one of the run's own files becomes (a full disk, a
folder that became read-only): the job reports it in one line. Any other OSError is a bug or an
environment fault and keeps its traceback.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


class WriteError(OSError):
    """A file of the run could not be written; the message names it and why."""


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Around a write of `path`: its OSError becomes a WriteError naming the file."""
    try:
        yield
    except WriteError:
        raise
    except OSError as err:
        raise WriteError(err.errno, f"cannot write {path}: {err.strerror or err}") from err


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes 0600 files; a run's files get the permissions any new file would get.
FILE_MODE = 0o666 & ~_current_umask()


def replace_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through a temporary file in the same folder, fsync, then rename over it,
    so that `path` is always either the old or the new complete file, whatever happens."""
    path = Path(path)
    with writing(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, FILE_MODE)
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or Infinity: a non-finite number is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def write_json_atomic(path: Path, payload: Any) -> None:
    text = json.dumps(finite_or_none(payload), indent=2, allow_nan=False) + "\n"
    replace_atomically(path, lambda f: f.write(text.encode()))


def write_text_atomic(path: Path, text: str) -> None:
    replace_atomically(path, lambda f: f.write(text.encode()))
