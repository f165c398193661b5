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

GiB = 1 << 30


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
    cuda = torch.device("cuda")
    for free, expected in ((64 * GiB, 2**28), (GiB, GiB // 2 // 32), (10 << 20, 2**20)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 0))
        assert chunk_values(cuda) == expected
    # K = 1000 on Fashion-MNIST's 784 pixels: 1 image per chunk on the CPU, 342 on a large GPU
    assert max(1, 2**20 // (1000 * 784)) == 1 and 2**28 // (1000 * 784) == 342
