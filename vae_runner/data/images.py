"""Data sets as one tensor each on the device; batches by shuffled index.

A data set is stored compactly (uint8 grey levels) and turned into floats in [0, 1] one batch at
a time, so the whole set lives on the device with no per-sample Python work.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import assert_never

import numpy as np
import torch

from vae_runner.config.errors import ConfigError
from vae_runner.config.schema import (
    BernoulliLikelihoodConfig,
    DataConfig,
    DigitsDataConfig,
    LikelihoodConfig,
    MNISTDataConfig,
)
from vae_runner.data import idx


@dataclass
class ImageData:
    train: torch.Tensor  # [N, C, H, W], uint8 grey levels
    test: torch.Tensor  # [M, C, H, W], uint8 grey levels
    max_level: float  # the grey level that maps to 1.0 (255 for MNIST, 16 for digits)
    name: str
    train_labels: torch.Tensor  # [N] int64 class labels (for plots; never used in training)
    test_labels: torch.Tensor  # [M]
    resample_train: bool = False  # dynamic binarisation: draw Bernoulli(x) for every batch
    val: torch.Tensor | None = None  # [V, C, H, W]: the validation split (data.val_fraction)
    val_labels: torch.Tensor | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.shape[1:])

    def to_float(self, levels: torch.Tensor) -> torch.Tensor:
        """A batch of stored grey levels as float32 in [0, 1]."""
        return levels.float().div_(self.max_level)

    def train_batch(self, index: torch.Tensor, bernoulli) -> torch.Tensor:
        """The training images at `index` as floats; with dynamic binarisation, drawn by
        `bernoulli` (each run's own generators: training/noise.py)."""
        x = self.to_float(self.train.index_select(0, index))  # a gather: faster than train[index]
        return bernoulli(x) if self.resample_train else x

    def without_train(self) -> ImageData:
        """The same data with an empty training set (for the end of a run: see runner.py)."""
        empty = dict(train=self.train[:0].clone(), train_labels=self.train_labels[:0].clone())
        return replace(self, **empty)

    def to(self, device: torch.device) -> ImageData:
        val = None if self.val is None else self.val.to(device)
        return replace(self, train=self.train.to(device), test=self.test.to(device), val=val)


def read_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """The images ([1797, 8, 8] uint8, levels 0..16) and labels of scikit-learn's digits.

    Read from the CSV file scikit-learn ships, as its `load_digits()` does, but without
    importing scikit-learn (a second of start-up: benchmarks/RESULTS.md). A test checks the
    result against `sklearn.datasets.load_digits()`.
    """
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ConfigError("data=digits needs scikit-learn: pip install scikit-learn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float64)
    return table[:, :-1].reshape(-1, 8, 8).astype(np.uint8), table[:, -1].astype(np.int64)


def load_digits(cfg: DigitsDataConfig) -> ImageData:
    """scikit-learn's 8x8 digits (bundled, offline), split once with a fixed permutation."""
    images, targets = read_sklearn_digits()
    labels = torch.from_numpy(targets)
    # The split must not follow the run's `seed`: runs with different seeds see the same test set.
    order = np.random.default_rng(20260101).permutation(len(images))
    n_test = round(len(images) * cfg.test_fraction)
    test, train = images[order[:n_test]], images[order[n_test:]]
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).unsqueeze(1)  # noqa: E731
    return ImageData(
        as_tensor(train),
        as_tensor(test),
        max_level=16.0,
        name="digits",
        train_labels=labels[order[n_test:]],
        test_labels=labels[order[:n_test]],
    )


def check_available(cfg: DataConfig, start_dir: Path) -> None:
    """Before a run: the IDX files a run without download would need are somewhere (their
    content is checked when they are loaded)."""
    if isinstance(cfg, MNISTDataConfig):
        places = idx.places_to_look(cfg.name, cfg.root, start_dir)
        files = idx.find_source(places)
        if files is not None:
            idx.check_consistent(files)
        elif not cfg.download:
            raise idx.DataError(idx.not_found_message(cfg.name, places, None))


def load_idx_data(cfg: MNISTDataConfig, start_dir: Path) -> ImageData:
    """MNIST or Fashion-MNIST from local IDX files first, else downloaded by torchvision."""
    places = idx.places_to_look(cfg.name, cfg.root, start_dir)
    files = idx.find_source(places)
    root = idx.torchvision_root(files, cfg.name) if files else _download(cfg, places, start_dir)
    raw = root / idx.TORCHVISION_CLASS[cfg.name] / "raw"
    # Named as the user's files when they are the source (a download is torchvision's).
    idx.check_consistent(files or {base: raw / base for base in idx.IDX_FILES})

    def read(base: str) -> torch.Tensor:
        return torch.from_numpy(idx.read_idx(raw / base, base))

    return ImageData(
        read("train-images-idx3-ubyte").unsqueeze(1),
        read("t10k-images-idx3-ubyte").unsqueeze(1),
        max_level=255.0,
        name=cfg.name,
        train_labels=read("train-labels-idx1-ubyte").long(),
        test_labels=read("t10k-labels-idx1-ubyte").long(),
    )


def _download(cfg: MNISTDataConfig, places: list, start_dir: Path) -> Path:
    """Let torchvision download the files (data.download=true); a failure leaves no folders."""
    if not cfg.download:
        raise idx.DataError(idx.not_found_message(cfg.name, places, None))
    from torchvision import datasets  # slow to import: only to download

    cls = getattr(datasets, idx.TORCHVISION_CLASS[cfg.name])
    root = start_dir / (Path(cfg.root).expanduser() if cfg.root else Path("data"))
    created = [
        p for p in (root / cls.__name__ / "raw", root / cls.__name__, root) if not p.exists()
    ]
    try:
        cls(root, train=True, download=True)
        cls(root, train=False, download=True)
    except Exception as err:  # offline, a proxy, a full disk: all end the same way
        for folder in created:  # only the folders this attempt made, and only if still empty
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise idx.DataError(idx.not_found_message(cfg.name, places, _reason(err))) from None
    files = idx.find_files(root / cls.__name__ / "raw")
    if not files:
        raise idx.DataError(idx.not_found_message(cfg.name, places, "no files after it"))
    return idx.torchvision_root(files, cfg.name)  # checks what was downloaded


def _reason(err: Exception) -> str:
    """The most telling line of torchvision's several-line download error."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    telling = [line for line in lines if "error" in line.lower() and not line.endswith(":")]
    return (telling or lines or [type(err).__name__])[-1][:200]


# The validation split's own seed: the same held-out images in every run of a sweep, whatever
# each run's `seed`, so the runs are chosen between on one set.
VAL_SPLIT_SEED = 0


def split_validation(data: ImageData, n_val: int) -> ImageData:
    """Hold `n_val` training images out, drawn with VAL_SPLIT_SEED; both parts keep the
    images' order."""
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    held, kept = order[:n_val].sort().values, order[n_val:].sort().values
    return replace(
        data,
        train=data.train[kept],
        train_labels=data.train_labels[kept],
        val=data.train[held],
        val_labels=data.train_labels[held],
    )


def binarize(data: ImageData, mode: str) -> ImageData:
    """Apply a Bernoulli likelihood's binarisation (see conf/likelihood/bernoulli.yaml).

    Binarised images are stored as levels 0 or `max_level`, so batches convert as before.
    """
    if mode == "none":
        return data
    top = int(data.max_level)
    if mode == "static":
        threshold = lambda t: (t.float() >= data.max_level / 2).to(torch.uint8) * top  # noqa: E731
        val = None if data.val is None else threshold(data.val)
        return replace(data, train=threshold(data.train), test=threshold(data.test), val=val)
    # dynamic: the test set is sampled once with a fixed seed, so every run meets the same one
    fixed = torch.Generator().manual_seed(0)
    test = torch.bernoulli(data.to_float(data.test), generator=fixed).to(torch.uint8) * top
    val = data.val
    if val is not None:  # likewise, with its own generator: the test sample stays as it was
        fixed_val = torch.Generator().manual_seed(1)
        val = torch.bernoulli(data.to_float(val), generator=fixed_val).to(torch.uint8) * top
    return replace(data, test=test, val=val, resample_train=True)


def load_data(
    cfg: DataConfig, likelihood: LikelihoodConfig | None = None, start_dir: Path | None = None
) -> ImageData:
    """The data set `cfg` names; relative paths are read from `start_dir` (default: here)."""
    match cfg:
        case DigitsDataConfig():
            data = load_digits(cfg)
        case MNISTDataConfig():
            data = load_idx_data(cfg, start_dir or Path.cwd())
        case _:
            assert_never(cfg)
    if cfg.limit is not None:
        data = replace(
            data, train=data.train[: cfg.limit], train_labels=data.train_labels[: cfg.limit]
        )
    if cfg.val_fraction:
        data = split_validation(data, cfg.val_size(len(data.train)))
    if isinstance(likelihood, BernoulliLikelihoodConfig):
        data = binarize(data, likelihood.binarize)
    return data
