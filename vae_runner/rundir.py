"""A run directory's owner and its earlier attempts: one process at a time, nothing overwritten.

`claim()` takes an exclusive lock (`flock`) on `DIR/.vae-train.lock` before anything is written
there, and holds it until the run ends: a second vae-train aimed at the same directory is
refused in one line, however close together the two start. The kernel drops the lock when its
process dies (SIGKILL, out of memory), so a lock file left behind by a killed run claims
nothing, and `is_live()` tells a live `running` record from a dead one without trusting a pid.

`earlier_attempt()` says what a directory already holds, for the rule that a job started again
in its own directory (a requeue, a retry, the same sweep command run again) carries on where the
earlier attempt stopped, and that anything else there is refused.

Imports no torch.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from vae_runner.config.errors import ConfigError
from vae_runner.files import WriteError, is_temporary, writing
from vae_runner.record import HISTORY_FILE, read_history

LOCK_FILE = ".vae-train.lock"
HYDRA_RECORD = ".hydra"


class Busy(ConfigError):
    """Another live process holds the directory."""


@dataclass
class Claim:
    """This process's lock on a run directory; `release()` gives it up (idempotent)."""

    run_dir: Path
    fd: int | None
    created_dir: bool  # this claim made the folder: a refused run removes it again
    # What the command's checks that took it found (cli.checks.Checked: the typed config, the
    # earlier attempt or the checkpoint resumed), for the job that trains under it: the job
    # does not type, read or load any of it again.
    found: Any = None

    def release(self, remove_empty_dir: bool = False) -> None:
        if self.fd is None:
            return
        # Unlink while still holding the lock: a process waiting on the old file sees it is gone
        # (claim() compares inodes) and locks a fresh one instead.
        with contextlib.suppress(OSError):
            (self.run_dir / LOCK_FILE).unlink()
        os.close(self.fd)
        self.fd = None
        if remove_empty_dir and self.created_dir:
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()  # only if nothing else is there


def _owner_line() -> str:
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": started})


def _describe(owner: dict[str, Any] | None) -> str:
    if not owner:
        return "another process"
    return f"pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('since')}"


def read_owner(run_dir: Path) -> dict[str, Any] | None:
    try:
        owner = json.loads((Path(run_dir) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


# The claims a vae-train command's checks took before Hydra wrote anything (a single run's
# directory, a sweep's): the command's own, given back when it ends (release_held). A job
# is never handed one: it asks claimed_by_checks() whether its directory is among them.
_held: dict[Path, Claim] = {}


def _key(run_dir: Path) -> Path:
    """Normalised as Hydra's runtime.output_dir is (os.path.abspath folds `..`)."""
    return Path(os.path.abspath(run_dir))


def release_held() -> None:
    """Give back every held claim, removing the folders they made that stayed empty."""
    while _held:
        _held.popitem()[1].release(remove_empty_dir=True)


def claimed_by_checks(run_dir: Path) -> Claim | None:
    """The claim this command's checks took on `run_dir` and hold still, under any spelling of
    the folder (resume= may name it otherwise than hydra.run.dir), or None. A job whose folder is
    among them trains under that claim, with what the checks found (`Claim.found`); any other
    job claims its folder itself, so two jobs of one process aimed at one folder are still
    refused (the second is Busy)."""
    for held in _held.values():
        if held.fd is not None and _same_folder(held.run_dir, run_dir):
            return held
    return None


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def claim(run_dir: Path, key: str = "hydra.run.dir", hold: bool = False) -> Claim:
    """Lock `run_dir` (made if absent) for this process, or raise Busy naming the holder.
    `hold`: the command's own claim (its checks'), kept until release_held()."""
    run_dir = _key(run_dir)  # released from there, whatever the job's cwd becomes
    created = not run_dir.exists()
    with writing(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    while True:
        with writing(path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Busy(
                f"{run_dir} is in use by another vae-train ({_describe(read_owner(run_dir))}): "
                f"wait for it to end, or choose another {key}"
            ) from None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)  # the holder released (and unlinked) it while we waited: lock the new one
    taken = Claim(run_dir, fd, created)
    try:
        with writing(path):
            os.ftruncate(fd, 0)
            os.write(fd, (_owner_line() + "\n").encode())
    except WriteError:  # a full disk: give the folder back as it was
        taken.release(remove_empty_dir=True)
        raise
    if hold:
        _held[run_dir] = taken
    return taken


def is_live(run_dir: Path) -> bool:
    """Whether a process holds `run_dir` now (its record may say `running` after a kill)."""
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False  # no lock file: released, or never taken
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@dataclass
class Attempt:
    """What a directory held before this attempt: nothing, a vae-train run, or something else."""

    kind: str  # "new", "run" or "foreign"
    history: dict[str, Any] | None = None
    overrides: list[str] | None = None  # the earlier attempt's .hydra/overrides.yaml
    has_checkpoint: bool = False


def earlier_attempt(run_dir: Path) -> Attempt:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return Attempt("new")
    # The lock, interrupted writes and Hydra's log files of a start that went nowhere: nothing
    names = {
        p.name
        for p in run_dir.iterdir()
        if p.name != LOCK_FILE and not is_temporary(p.name) and not p.name.endswith(".log")
    }
    if not names:
        return Attempt("new")
    if not ({HISTORY_FILE, HYDRA_RECORD} & names):
        return Attempt("foreign")
    history = read_history(run_dir)
    overrides = None
    with contextlib.suppress(OSError, yaml.YAMLError):
        loaded = yaml.safe_load((run_dir / HYDRA_RECORD / "overrides.yaml").read_text())
        overrides = [str(o) for o in loaded] if isinstance(loaded, list) else None
    has_checkpoint = (run_dir / "checkpoints" / "last.pt").is_file()
    return Attempt("run", history, overrides, has_checkpoint)


def never_trained(run_dir: Path) -> bool:
    """No history and no checkpoint: whatever the folder holds is only Hydra's start of it."""
    return not (run_dir / HISTORY_FILE).exists() and not (run_dir / "checkpoints").exists()


def remove_hydra_record(run_dir: Path) -> None:
    """What Hydra wrote for a job that never trained: .hydra/, its log files, the empty folder."""
    shutil.rmtree(run_dir / HYDRA_RECORD, ignore_errors=True)
    for log_file in run_dir.glob("*.log"):
        log_file.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()  # only when nothing else is there


def undo_unstarted(sweep_dir: Path | None) -> list[Path]:
    """After Hydra failed to write a new run's `.hydra/` record (a full disk from the start):
    remove the records of the held run, or of the sweep's jobs, that never trained (no
    history, no checkpoint), so no empty config.yaml passes for a run; give back the claims.
    Returns those folders. Hydra writes `.hydra/` only into a folder without one
    (config.resolvers.output_subdir), so no earlier attempt's record is among them."""
    candidates = list(_held)
    if sweep_dir is not None and Path(sweep_dir).is_dir():
        candidates += [record.parent for record in Path(sweep_dir).rglob(HYDRA_RECORD)]
    undone = []
    for run_dir in candidates:
        if (run_dir / HYDRA_RECORD).is_dir() and never_trained(run_dir):
            claim_ = _held.pop(run_dir, None)
            if claim_ is not None:  # the lock goes first, so the empty folder can go too
                claim_.release()
            remove_hydra_record(run_dir)
            undone.append(run_dir)
    release_held()
    if sweep_dir is not None and Path(sweep_dir).is_dir():
        left = list(Path(sweep_dir).iterdir())
        if all(p.name == "multirun.yaml" for p in left):  # a sweep that launched nothing
            for p in left:
                p.unlink()
            with contextlib.suppress(OSError):
                Path(sweep_dir).rmdir()
            undone.append(Path(sweep_dir))
    return undone


def remove_temporary_files(run_dir: Path) -> list[Path]:
    """The temporary files of writes a kill interrupted (files.is_temporary): never anyone's
    data, and each may be a whole checkpoint. Returns those removed."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints", Path(run_dir) / "images"):
        for tmp in folder.glob(".*.tmp*"):
            if is_temporary(tmp.name):
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed.append(tmp)
    return removed
