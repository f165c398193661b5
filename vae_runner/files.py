"""Writing a run's files so that each is always complete, and naming the file a write failed on.

`WriteError` is what a failed write of one of the run's own files becomes (a full disk, a
folder that became read-only): the job reports it in one line. Any other OSError is a bug or an
environment fault and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import math
import os
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


# A temporary file's name: `.NAME.<pid>-<n>.tmp` beside NAME, unique to this process and call
# (no other writer can be handed it: os.open's O_EXCL), so no random name is drawn and no
# leftover of an earlier write needs removing first.
_numbers = itertools.count()


def temporary_name(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}-{next(_numbers)}.tmp")


def _create(path: str) -> tuple[str, int]:
    """A new temporary file beside `path`, open for writing: (its name, its descriptor). Its
    mode is what any new file gets here (0666 less the umask, which os.open applies)."""
    while True:
        tmp = temporary_name(path)
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:  # a file of a process that had this pid before: next number
            continue


def replace_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through a temporary file in the same folder, fsync, then rename over it,
    so that `path` is always either the old or the new complete file, whatever happens.

    Few system calls (open, write, fsync, close, rename): in a stack the files of many runs are
    written by threads while another thread pickles the next run's (training/epoch_writes.py),
    and every call a thread returns from takes the GIL back from it."""
    path = os.fspath(path)
    with writing(path):
        tmp, fd = _create(path)
        try:
            with open(fd, "wb", buffering=WRITE_BUFFER) as f:
                write(f)
                f.flush()
                os.fsync(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


# open()'s buffer for the writes above: a size given skips its isatty() and block-size look-ups
WRITE_BUFFER = 1 << 16


def is_temporary(name: str) -> bool:
    """A temporary file of these writers (`.NAME.*.tmp`, `.NAME.tmp.png`), left by a kill; or
    `.best.pt.link`, the name best.pt's link had before 2026-12-05."""
    return name.startswith(".") and (
        name.endswith(".tmp") or ".tmp." in name or name == ".best.pt.link"
    )


def write_through_temporary(path: Path, write: Callable[[Path], None]) -> None:
    """For writers that take a file name (PIL's, matplotlib's): `write` fills a temporary
    name beside `path`, which then replaces it; a failed write leaves no partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")  # the suffix tells the format
    with writing(path):
        try:
            write(tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


# A disk (or quota) with no room left: a new file cannot be made, but the blocks a file holds
# can still be rewritten.
NO_ROOM = (errno.ENOSPC, errno.EDQUOT)


def rewrite_in_place(path: Path, text: str) -> bool:
    """The last resort when a disk is full: write `text` over `path` in the blocks it already
    holds, padded with spaces to the old length (trailing spaces are valid JSON), in one write,
    so the file is never shorter than a whole document. False when it would need more room."""
    data = text.encode()
    with writing(path):
        fd = os.open(path, os.O_WRONLY)
        try:
            info = os.fstat(fd)
            if len(data) > info.st_blocks * 512:
                return False
            data = data.ljust(info.st_size, b" ")
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
    return True


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or Infinity: a non-finite number is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def _finite_json(payload: Any, **layout: Any) -> str:
    """json.dumps with non-finite numbers as null; the walk that replaces them only when the
    payload holds one (a diverged run's record): a walk in Python over every value."""
    try:
        return json.dumps(payload, allow_nan=False, **layout)
    except ValueError:
        return json.dumps(finite_or_none(payload), allow_nan=False, **layout)


def json_value(value: Any) -> str:
    """`value` as JSON on one line (json's C encoder; non-finite numbers null)."""
    return _finite_json(value)


def json_text(payload: Any) -> str:
    """The text write_json_atomic writes for `payload` (indented; non-finite numbers null)."""
    return _finite_json(payload, indent=2) + "\n"


def write_json_atomic(
    path: Path, payload: Any, in_place_if_full: bool = False, text: str | None = None
) -> None:
    """`in_place_if_full`: on a full disk, rewrite an existing file in its own blocks
    (rewrite_in_place) rather than fail, for a record that must say how the run ended.
    `text`: json_text(payload), when the caller made it already."""
    text = json_text(payload) if text is None else text
    try:
        replace_atomically(path, lambda f: f.write(text.encode()))
    except WriteError as err:
        if not (in_place_if_full and err.errno in NO_ROOM and Path(path).is_file()):
            raise
        # Without the spaces, the record is smaller than the file it had (history.json keeps
        # room for this: training/history.py's FULL_DISK_ROOM): it fits.
        compact = _finite_json(payload, separators=(",", ":"))
        if not rewrite_in_place(Path(path), compact + "\n"):
            raise


def write_text_atomic(path: Path, text: str) -> None:
    replace_atomically(path, lambda f: f.write(text.encode()))
