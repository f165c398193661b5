"""Finding, checking, preparing and reading MNIST-style IDX files, offline first.

The files are kept in torchvision's layout, four uncompressed IDX files in `<root>/<Class>/raw/`,
which is where torchvision's MNIST/FashionMNIST download them. Users have them elsewhere:
directly in a folder, gzipped, or installed by a distribution (Debian's `dataset-fashion-mnist`
puts gzipped files in /usr/share/datasets/fashion-mnist). This module finds them, checks every
header and size (torchvision reads truncated files without complaint), and, when the layout is
not torchvision's, prepares it in a cache folder: the user's folder is never modified.

`read_idx` reads a checked file straight into one array. torchvision's own reader holds the file
twice while it parses (bytes, then a bytearray copy): for Fashion-MNIST's 47 MB training images
that transient was the run's peak resident memory (benchmarks/bench.py).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vae_runner.config.errors import ConfigError

# base name -> (magic number, number of dimensions) of the IDX format (ubyte data)
IDX_FILES = {
    "train-images-idx3-ubyte": (0x00000803, 3),
    "train-labels-idx1-ubyte": (0x00000801, 1),
    "t10k-images-idx3-ubyte": (0x00000803, 3),
    "t10k-labels-idx1-ubyte": (0x00000801, 1),
}

# the option name -> torchvision's class name (also the folder name in its layout)
TORCHVISION_CLASS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}

# Folders that Linux distributions' data-set packages install into.
SYSTEM_DIRS = {
    "mnist": ("/usr/share/datasets/mnist",),
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}
SLUGS = {"mnist": "mnist", "fashion_mnist": "fashion-mnist"}


class DataError(ConfigError):
    """The data cannot be found or read; the message says where we looked and how to fix it."""


@dataclass(frozen=True)
class Place:
    path: Path
    why: str  # where this candidate came from, for the error message
    direct: bool  # whether IDX files lying directly in `path` count (unambiguous folders only)


def cache_root() -> Path:
    if os.environ.get("VAE_RUNNER_CACHE"):
        return Path(os.environ["VAE_RUNNER_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vae-runner"


def places_to_look(name: str, root: str | None, start_dir: Path | None = None) -> list[Place]:
    """Where the files of data set `name` may be, in the documented order. Relative paths are
    read from `start_dir`, where vae-train was started (default: the working directory)."""
    cls = TORCHVISION_CLASS[name]
    start_dir = start_dir or Path.cwd()
    if root is not None:
        base = start_dir / Path(root).expanduser()
        if not base.is_dir():
            raise DataError(
                f"data.root={root}: no such folder; give the folder that holds the four IDX "
                "files, or leave data.root out to search the usual places"
            )
        return [Place(base / cls / "raw", "data.root", False), Place(base, "data.root", True)]
    places: list[Place] = []
    bases = []
    if os.environ.get("VAE_RUNNER_DATA"):
        env = start_dir / Path(os.environ["VAE_RUNNER_DATA"]).expanduser()
        bases.append((env, "$VAE_RUNNER_DATA"))
    bases.append((start_dir / "data", "torchvision's default ./data"))
    for base, why in bases:
        places.append(Place(base / cls / "raw", why, False))
        places.append(Place(base / SLUGS[name], why, True))
    places += [Place(Path(d), "system data folder", True) for d in SYSTEM_DIRS[name]]
    return places


def find_source(places: list[Place]) -> dict[str, Path] | None:
    """The four files from the first place that holds them all, or None."""
    for place in places:
        files = find_files(place.path)
        if files and (place.direct or place.path.name == "raw"):
            return files
    return None


def find_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in `folder`, each plain or gzipped; None unless all four are there."""
    found = {}
    for base in IDX_FILES:
        plain, gz = folder / base, folder / f"{base}.gz"
        found[base] = plain if plain.is_file() else gz if gz.is_file() else None
    return found if all(found.values()) else None


def check_idx(header: bytes, size: int, base: str, source: Path) -> int:
    """Check an IDX header against its expected kind and the file's size; returns the item count."""
    magic, ndim = IDX_FILES[base]
    if len(header) < 4 + 4 * ndim:
        raise DataError(f"{source} is truncated: {len(header)} bytes, shorter than an IDX header")
    (got,) = struct.unpack(">I", header[:4])
    if got != magic:
        raise DataError(
            f"{source} is not an IDX {'image' if ndim == 3 else 'label'} file: magic number "
            f"0x{got:08x}, expected 0x{magic:08x} (corrupt, or the wrong file under this name)"
        )
    dims = struct.unpack(f">{ndim}I", header[4 : 4 + 4 * ndim])
    expected = 4 + 4 * ndim + math.prod(dims)  # header, then one unsigned byte per item
    if size != expected:
        raise DataError(
            f"{source} is truncated or corrupt: {size} bytes, expected {expected} for "
            f"{' x '.join(map(str, dims))} items; replace it"
        )
    return dims[0]


def read_dims(source: Path, base: str) -> tuple[int, ...]:
    """The dimensions an IDX file's header declares (plain or gzipped), its magic checked."""
    magic, ndim = IDX_FILES[base]
    try:
        opener = gzip.open if source.suffix == ".gz" else open
        with opener(source, "rb") as f:
            header = f.read(4 + 4 * ndim)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{source} cannot be read ({err}); replace it") from None
    if len(header) < 4 + 4 * ndim:
        raise DataError(f"{source} is truncated: {len(header)} bytes, shorter than an IDX header")
    (got,) = struct.unpack(">I", header[:4])
    if got != magic:
        check_idx(header, len(header), base, source)  # says which magic number it has
    return struct.unpack(f">{ndim}I", header[4:])


def check_consistent(files: dict[str, Path]) -> None:
    """The four files make one data set: each split has images, one label per image, and the
    test images are the training images' size. Headers only: it is quick before every run."""
    dims = {base: read_dims(path, base) for base, path in files.items()}
    train, test = "train-images-idx3-ubyte", "t10k-images-idx3-ubyte"
    for images, labels in ((train, "train-labels-idx1-ubyte"), (test, "t10k-labels-idx1-ubyte")):
        n = dims[images][0]
        if n == 0:
            raise DataError(f"{files[images]} holds 0 images: each split needs at least one")
        if dims[labels][0] != n:
            raise DataError(
                f"{files[labels]} holds {dims[labels][0]} labels for the {n} images of "
                f"{files[images].name}: one label per image; replace the mismatched file"
            )
    if dims[train][1:] != dims[test][1:]:
        raise DataError(
            f"{files[test]} holds {'x'.join(map(str, dims[test][1:]))} images but "
            f"{files[train].name} holds {'x'.join(map(str, dims[train][1:]))}: train and test "
            "images must be the same size; replace the mismatched file"
        )


def _read_checked(source: Path, base: str) -> bytes:
    """The uncompressed bytes of one IDX file, checked."""
    try:
        if source.suffix == ".gz":
            with gzip.open(source, "rb") as f:
                data = f.read()
        else:
            data = source.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{source} cannot be read ({err}); replace it") from None
    check_idx(data[:16], len(data), base, source)
    return data


def _check_plain(source: Path, base: str) -> None:
    with open(source, "rb") as f:
        header = f.read(16)
    check_idx(header, source.stat().st_size, base, source)


def read_idx(path: Path, base: str):
    """The items of a checked, uncompressed IDX file as a numpy uint8 array of its dimensions."""
    import numpy as np

    _magic, ndim = IDX_FILES[base]
    with open(path, "rb") as f:
        header = f.read(4 + 4 * ndim)
        dims = struct.unpack(f">{ndim}I", header[4:])
        return np.fromfile(f, dtype=np.uint8).reshape(dims)


def torchvision_root(files: dict[str, Path], name: str) -> Path:
    """A root from which torchvision loads `files`, prepared in the cache when needed."""
    cls = TORCHVISION_CLASS[name]
    folders = {p.parent for p in files.values()}
    plain = all(p.suffix != ".gz" for p in files.values())
    if plain and len(folders) == 1:
        (folder,) = folders
        for base, path in files.items():
            _check_plain(path, base)
        if folder.name == "raw" and folder.parent.name == cls:
            return folder.parent.parent
    # Key the cache by the sources' identity so a changed file is prepared again.
    ident = "|".join(
        f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files.values()
    )
    target = cache_root() / f"{cls}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"
    raw = target / cls / "raw"
    if find_files(raw):
        for base in IDX_FILES:
            _check_plain(raw / base, base)
        return target
    # Prepare next to the final place, then rename: a crash leaves no half-prepared cache.
    cache_root().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache_root(), prefix=".prepare-"))
    try:
        (staging / cls / "raw").mkdir(parents=True)
        for base, source in files.items():
            (staging / cls / "raw" / base).write_bytes(_read_checked(source, base))
        try:
            staging.rename(target)
        except OSError:  # a concurrent job prepared it first
            if not find_files(raw):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def not_found_message(name: str, places: list[Place], download_error: str | None) -> str:
    looked = "; ".join(f"{p.path} ({p.why})" for p in places)
    if download_error:
        tail = f" The download failed ({download_error}). Fix: when online, run again"
    else:
        tail = " Fix: allow a download with data.download=true (needs internet)"
    return (
        f"data={name}: its four IDX files (train-images-idx3-ubyte[.gz], ...) were found nowhere. "
        f"Looked in: {looked}.{tail}, or pass data.root=<folder holding them>, or "
        "export VAE_RUNNER_DATA=<folder>"
    )
