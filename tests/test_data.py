"""MNIST-style data from local IDX files in every layout, offline; torchvision only downloads.

Tiny IDX files are written by the tests; one end-to-end test uses the real Fashion-MNIST that
Debian's `dataset-fashion-mnist` installs (.ci/run installs it). No test downloads.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from vae_runner.data import idx
from vae_runner.data.idx import DataError
from vae_runner.data.images import load_data

from helpers import run_cli, typed_config

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_idx(folder: Path, n_train=20, n_test=10, side=28, gz=False, seed=0) -> dict:
    """Write the four IDX files of a tiny MNIST look-alike; returns what was written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        magic = 0x803 if array.ndim == 3 else 0x801
        payload = struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (folder / name).write_bytes(payload)
    return arrays


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Each test has its own cache and working directory, and no $VAE_RUNNER_DATA."""
    monkeypatch.setenv("VAE_RUNNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VAE_RUNNER_DATA", raising=False)
    monkeypatch.chdir(tmp_path)


def snapshot(folder: Path) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("layout", ["direct", "torchvision"])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_tiny_idx_files_load_in_every_layout(tmp_path, name, layout, gz):
    root = tmp_path / "user-data"
    cls = idx.TORCHVISION_CLASS[name]
    folder = root if layout == "direct" else root / cls / "raw"
    arrays = write_idx(folder, gz=gz)
    before = snapshot(root)
    data = load_data(typed_config(f"data={name}", f"data.root={root}", "data.download=false").data)
    assert data.train.shape == (20, 1, 28, 28) and data.test.shape == (10, 1, 28, 28)
    assert data.train.dtype == torch.uint8 and data.max_level == 255.0
    assert torch.equal(data.train[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(data.test_labels, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())
    x = data.to_float(data.train[:5])
    assert x.dtype == torch.float32 and x.min() >= 0.0 and x.max() <= 1.0
    assert snapshot(root) == before  # the user's folder is never modified
    prepared = layout == "direct" or gz
    assert (tmp_path / "cache").exists() == prepared


def test_prepared_cache_is_reused_and_renewed_when_the_source_changes(tmp_path):
    root = tmp_path / "user-data"
    write_idx(root, gz=True)
    cfg = typed_config("data=mnist", f"data.root={root}", "data.download=false").data
    load_data(cfg)
    (first,) = (tmp_path / "cache").iterdir()
    load_data(cfg)
    assert list((tmp_path / "cache").iterdir()) == [first]
    write_idx(root, n_train=30, gz=True, seed=1)
    assert len(load_data(cfg).train) == 30


def test_limit_takes_the_first_training_images(tmp_path):
    write_idx(tmp_path / "d")
    cfg = typed_config("data=mnist", f"data.root={tmp_path / 'd'}", "data.limit=7", "batch_size=4")
    data = load_data(cfg.data)
    assert len(data.train) == 7 and len(data.train_labels) == 7 and len(data.test) == 10


def test_found_through_the_variable_then_dot_data(tmp_path, monkeypatch):
    write_idx(tmp_path / "env" / "FashionMNIST" / "raw", n_train=11)
    write_idx(tmp_path / "data" / "fashion-mnist", n_train=12, gz=True)
    cfg = typed_config("data=fashion_mnist", "data.download=false").data
    monkeypatch.setenv("VAE_RUNNER_DATA", str(tmp_path / "env"))
    assert len(load_data(cfg).train) == 11
    monkeypatch.delenv("VAE_RUNNER_DATA")
    assert len(load_data(cfg).train) == 12  # ./data/fashion-mnist


def test_a_searched_folder_needs_the_data_set_s_name(tmp_path):
    """IDX files lying loose in ./data could be MNIST or Fashion-MNIST: they are not guessed."""
    write_idx(tmp_path / "data")
    cfg = typed_config("data=mnist", "data.download=false").data
    places = idx.places_to_look("mnist", None)
    if any(idx.find_files(p.path) for p in places if p.why == "system data folder"):
        pytest.skip("MNIST is installed in a system folder here")
    with pytest.raises(DataError, match="found nowhere"):
        load_data(cfg)


def test_missing_files_list_where_we_looked_and_the_three_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_RUNNER_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setattr(idx, "SYSTEM_DIRS", {"mnist": (str(tmp_path / "sys"),)})
    with pytest.raises(DataError) as info:
        load_data(typed_config("data=mnist", "data.download=false").data)
    message = str(info.value)
    assert "data=mnist" in message and "\n" not in message
    for place in (tmp_path / "nowhere" / "MNIST" / "raw", Path("data") / "mnist", tmp_path / "sys"):
        assert str(place) in message
    for fix in ("data.root=", "VAE_RUNNER_DATA=", "data.download=true"):
        assert fix in message


def test_a_missing_root_folder_is_named(tmp_path):
    with pytest.raises(DataError) as info:
        load_data(
            typed_config("data=mnist", f"data.root={tmp_path / 'typo'}", "data.download=false").data
        )
    assert f"data.root={tmp_path / 'typo'}: no such folder" in str(info.value)


def offline_download(monkeypatch):
    """Make torchvision's download fail as it does without a network (tests never download)."""
    from torchvision import datasets

    def offline(self):
        os.makedirs(self.raw_folder, exist_ok=True)  # as torchvision does before it fetches
        raise RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\nTried https://example.invalid/, got:\n"
            "<urlopen error [Errno -3] Temporary failure in name resolution>\n"
        )

    monkeypatch.setattr(datasets.MNIST, "download", offline)


@pytest.mark.parametrize("with_root", [True, False], ids=["data.root", "./data"])
def test_a_failed_download_is_one_clear_line_and_leaves_no_folders(
    tmp_path, monkeypatch, with_root
):
    offline_download(monkeypatch)
    (tmp_path / "dl").mkdir()
    root = [f"data.root={tmp_path / 'dl'}"] if with_root else []
    with pytest.raises(DataError) as info:
        load_data(typed_config("data=mnist", *root, "data.download=true").data)
    message = str(info.value)
    assert "The download failed (<urlopen error [Errno -3]" in message and "\n" not in message
    assert "data.download=true" not in message  # it was on: not offered as the fix
    assert "data.root=<folder" in message and "VAE_RUNNER_DATA=" in message
    assert list((tmp_path / "dl").iterdir()) == [] and not (tmp_path / "data").exists()


def test_a_mistyped_root_is_refused_before_any_download(tmp_path, monkeypatch):
    offline_download(monkeypatch)
    cfg = typed_config("data=mnist", f"data.root={tmp_path / 'typo'}", "data.download=true").data
    with pytest.raises(DataError, match=r"data.root=.*typo: no such folder"):
        load_data(cfg)
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_a_truncated_file_is_named(tmp_path, gz):
    write_idx(tmp_path / "d", gz=gz)
    victim = tmp_path / "d" / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])
    with pytest.raises(DataError) as info:
        load_data(typed_config("data=mnist", f"data.root={tmp_path / 'd'}").data)
    assert str(victim) in str(info.value)
    assert ("truncated" in str(info.value)) or ("cannot be read" in str(info.value))


def test_a_wrong_magic_number_is_named(tmp_path):
    write_idx(tmp_path / "d")
    victim = tmp_path / "d" / "t10k-labels-idx1-ubyte"
    victim.write_bytes(struct.pack(">I", 0x803) + victim.read_bytes()[4:])
    with pytest.raises(DataError) as info:
        load_data(typed_config("data=mnist", f"data.root={tmp_path / 'd'}").data)
    assert str(victim) in str(info.value)
    assert "magic number 0x00000803, expected 0x00000801" in str(info.value)


def _mismatched(folder: Path, case: str, gz: bool) -> tuple[Path, str]:
    """Four IDX files whose headers are valid but do not make one data set: one or two of
    them are taken from another tiny data set. Returns the file to blame and the words."""
    write_idx(folder, gz=gz)  # 20 training and 10 test images of 28x28
    other, suffix = folder.with_name("other"), ".gz" if gz else ""
    if case == "sizes":
        write_idx(other, side=16, gz=gz)
        taken = ["t10k-images-idx3-ubyte"]
        words = f"holds 16x16 images but train-images-idx3-ubyte{suffix} holds 28x28"
    elif case == "labels":
        write_idx(other, n_test=7, gz=gz)
        taken = ["t10k-labels-idx1-ubyte"]
        words = f"holds 7 labels for the 10 images of t10k-images-idx3-ubyte{suffix}"
    else:  # "empty": a test set with no image (and no label)
        write_idx(other, n_test=0, gz=gz)
        taken = ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
        words = "holds 0 images: each split needs at least one"
    for name in taken:
        (folder / f"{name}{suffix}").write_bytes((other / f"{name}{suffix}").read_bytes())
    return folder / f"{taken[0]}{suffix}", words


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("case", ["sizes", "labels", "empty"])
def test_files_that_do_not_make_one_data_set_are_refused_naming_the_file(tmp_path, case, gz):
    from vae_runner.data.images import check_available

    victim, words = _mismatched(tmp_path / "d", case, gz)
    cfg = typed_config("data=mnist", f"data.root={tmp_path / 'd'}").data
    for attempt in (lambda: check_available(cfg, tmp_path), lambda: load_data(cfg)):
        with pytest.raises(DataError) as info:
            attempt()
        assert str(info.value).startswith(f"{victim} {words}")


@pytest.mark.e2e
def test_mismatched_idx_files_end_in_exit_2_before_any_run_directory(tmp_path):
    victim, words = _mismatched(tmp_path / "d", "sizes", gz=False)
    done = run_cli(
        "data=mnist",
        f"data.root={tmp_path / 'd'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env={"VAE_RUNNER_CACHE": str(tmp_path / "cache")},
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"Error: {victim} {words}: train and test "
        "images must be the same size; replace the "
        "mismatched file"
    ]
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------- binarisation
def test_static_binarisation_thresholds_once(tmp_path):
    data = load_data(*_data_and_likelihood("likelihood.binarize=static"))
    for split in (data.train, data.test):
        assert set(split.unique().tolist()) <= {0, 16}
    assert not data.resample_train


def test_dynamic_binarisation_resamples_training_images_and_fixes_the_test_set():
    data = load_data(*_data_and_likelihood("likelihood.binarize=dynamic"))
    again = load_data(*_data_and_likelihood("likelihood.binarize=dynamic"))
    assert set(data.test.unique().tolist()) <= {0, 16} and torch.equal(data.test, again.test)
    index = torch.arange(64)
    first, second = (
        data.train_batch(index, torch.bernoulli),
        data.train_batch(index, torch.bernoulli),
    )
    assert set(first.unique().tolist()) <= {0.0, 1.0} and not torch.equal(first, second)
    grey = data.to_float(data.train[index])
    assert (first <= torch.ceil(grey)).all()  # a black pixel is never drawn white


def _data_and_likelihood(*overrides):
    cfg = typed_config(*overrides)
    return cfg.data, cfg.likelihood


# ------------------------------------------------------------------------- the real data set
def fashion_available() -> bool:
    return idx.find_files(DEBIAN_FASHION) is not None


@pytest.mark.e2e
def test_real_fashion_mnist_trains_an_epoch(tmp_path):
    if not fashion_available():
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's dataset-fashion-mnist (see .ci/run)")
        pytest.skip("apt-get install dataset-fashion-mnist to run this test")
    run_dir = tmp_path / "run"
    result = run_cli(
        "data=fashion_mnist",
        "data.limit=3000",
        "epochs=1",
        "data.download=false",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    history = json.loads((run_dir / "history.json").read_text())
    assert history["data_name"] == "fashion_mnist" and history["data_dim"] == 784
    assert history["n_test"] == 10000 and history["n_train"] == 3000
    final = history["test_loss"][-1]
    assert final is not None and np.isfinite(final)
    assert final < history["initial_test_loss"]
    # the final estimate runs after the training set was released (runner.release_training_state)
    iw = history["final"]["test_nll_iw"]
    assert np.isfinite(iw) and iw <= -history["final"]["test_elbo"] + 1e-6


def test_digits_are_scikit_learn_s_digits():
    from sklearn.datasets import load_digits as sklearn_digits

    from vae_runner.data.images import read_sklearn_digits

    images, labels = read_sklearn_digits()
    bunch = sklearn_digits()
    assert np.array_equal(images, bunch.images.astype(np.uint8))
    assert np.array_equal(labels, bunch.target) and images.shape == (1797, 8, 8)
    assert images.max() == 16 and images.min() == 0
