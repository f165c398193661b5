"""The final importance-weighted estimate sized for the device (training/metrics.py): chunks of
2^20 decoded values on the CPU, as large as the free memory allows on a GPU, and the same
numbers whatever the chunks, since each image's noise comes from its own seeded stream."""

from __future__ import annotations

import pytest
import torch

from vae_runner.data.images import load_data
from vae_runner.training import metrics
from vae_runner.training.build import build_model
from vae_runner.training.metrics import chunk_values, importance_weighted_nll

from helpers import typed_config


def digits_model_and_images(n=9):
    cfg = typed_config("device=cpu", "data=digits")
    data = load_data(cfg.data, cfg.likelihood)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.likelihood, data.image_shape).double()
    return model, data.to_float(data.test[:n]).double()


def test_the_estimate_is_the_same_whatever_the_chunks_in_float64():
    model, images = digits_model_and_images()
    samples, pixels = 7, 64
    one_each = importance_weighted_nll(model, images, samples, seed=3, values=1)
    threes = importance_weighted_nll(model, images, samples, seed=3, values=3 * samples * pixels)
    whole = importance_weighted_nll(model, images, samples, seed=3, values=10**9)
    for estimate in (one_each, threes):
        assert estimate.nll == pytest.approx(whole.nll, rel=1e-12, abs=0)
        assert estimate.neg_elbo == pytest.approx(whole.neg_elbo, rel=1e-12, abs=0)
        assert estimate.nll_se == pytest.approx(whole.nll_se, rel=1e-9, abs=0)
    # another seed: other draws (the seed is used)
    assert importance_weighted_nll(model, images, samples, seed=4).nll != whole.nll


def test_an_images_noise_is_its_own_seeded_stream():
    mu = torch.zeros(3, 5, dtype=torch.float64)
    noise = metrics.image_noise(torch.Generator(), 2, 10, 4, mu)
    assert noise.shape == (4, 3, 5)
    for j in range(3):
        own = torch.Generator().manual_seed(2 * 1_000_003 + 10 + j)
        expected = torch.randn(4, 5, generator=own, dtype=torch.float64)
        assert torch.equal(noise[:, j], expected)


def test_the_chunk_rule_cpu_and_cuda(monkeypatch):
    assert chunk_values(torch.device("cpu")) == 2**20
    # never the free memory's: runs sharing a GPU, and a vae-eval of the run, take the same
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (1 / 0, 0))
    assert chunk_values(torch.device("cuda")) == 2**26
    # K = 1000 on Fashion-MNIST's 784 pixels: 1 image per chunk on the CPU, 85 on a GPU
    assert max(1, 2**20 // (1000 * 784)) == 1 and 2**26 // (1000 * 784) == 85


# --------------------------------------------------------------------------- the one-sample pass
def test_the_test_pass_takes_batch_size_chunks_on_the_cpu_and_2_20_values_on_a_gpu():
    from vae_runner.training.epoch import eval_chunk

    cpu = torch.zeros(10000, 28, 28, dtype=torch.uint8)
    assert eval_chunk(cpu, 128) == 128  # the CPU's numbers are as before
    cuda = torch.zeros(10000, 28, 28, dtype=torch.uint8, device="meta")
    cuda_like = type("Images", (), {"device": torch.device("cuda"), "shape": cuda.shape})()
    assert eval_chunk(cuda_like, 128) == (1 << 20) // 784 == 1337  # whatever the stack's size
    digits_like = type("Images", (), {"device": torch.device("cuda"), "shape": (359, 64)})()
    assert eval_chunk(digits_like, 128) == (1 << 20) // 64  # more than the test set: one chunk
    tiny = type("Images", (), {"device": torch.device("cuda"), "shape": (10, 4096, 4096)})()
    assert eval_chunk(tiny, 128) == 128  # never below batch_size


class _NoNoise:
    """z = the posterior mean: the pass's sums then depend on nothing but the images."""

    def normal(self, member, shape, like):
        return torch.zeros(shape, dtype=like.dtype, device=like.device)


def test_the_test_pass_sums_are_the_same_in_any_chunks(monkeypatch):
    """The pass sums per chunk and reads once: its measures do not depend on the chunk (with
    the noise out of the way, float64), so a GPU's large chunks measure what 128s would."""
    from vae_runner.training import epoch
    from vae_runner.training.stacked_model import stack_models

    cfg = typed_config("device=cpu", "data=digits")
    data = load_data(cfg.data, cfg.likelihood)
    torch.manual_seed(0)
    one = build_model(cfg.model, cfg.likelihood, data.image_shape).double()
    torch.manual_seed(1)
    two = build_model(cfg.model, cfg.likelihood, data.image_shape).double()
    model = stack_models([one, two]).double()
    by_batch = epoch.evaluate(model, data, 128, _NoNoise(), [True, True])
    monkeypatch.setattr(epoch, "eval_chunk", lambda images, batch_size: len(images))
    whole = epoch.evaluate(model, data, 128, _NoNoise(), [True, True])
    for a, b in zip(by_batch, whole, strict=True):
        assert a.recon == pytest.approx(b.recon, rel=1e-12)
        assert a.kl == pytest.approx(b.kl, rel=1e-12)
        assert a.kl_by_dim == pytest.approx(b.kl_by_dim, rel=1e-12)
        assert a.active_burda == b.active_burda
    assert by_batch[0].recon != by_batch[1].recon  # two members, each its own model
