"""What the VAE learned: the likelihood estimate, active units, free bits, collapse, pictures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from vae_runner.training.diagnostics import collapse_warning
from vae_runner.training.losses import bernoulli_nll, elbo_terms, training_loss
from vae_runner.training.metrics import active_units_burda, importance_weighted_nll
from vae_runner.training.model import VAE, GaussianLikelihood
from vae_runner.training.runner import run

from helpers import run_cli, typed_config


# ------------------------------------------------------------- importance-weighted likelihood
class LinearGaussianVAE(VAE):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I): log p(x) = log N(x | b, W W^T + s^2 I).

    The encoder is deliberately not the true posterior (its mean is off and its variance too
    wide), so the ELBO is loose and only importance weighting closes the gap.
    """

    def __init__(self, dim=5, latent=2, sigma=0.5, seed=0):
        super().__init__(GaussianLikelihood(sigma, learned=False))
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(dim, latent, generator=g)
        self.b = torch.randn(dim, generator=g)
        self.sigma, self.latent_dim = sigma, latent
        self.input_shape = (dim,)

    def encode(self, x):
        # the true posterior mean, shifted, and a variance that is too large
        cov = torch.linalg.inv(torch.eye(self.latent_dim) + self.W.T @ self.W / self.sigma**2)
        mean = (x - self.b) @ (self.W / self.sigma**2) @ cov + 0.3
        logvar = torch.log(torch.diagonal(cov) * 2.0).expand_as(mean)
        return mean, logvar

    def decode(self, z):
        return z @ self.W.T + self.b

    def log_marginal(self, x):
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(len(self.b))
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)


def test_iw_estimate_matches_the_closed_form_marginal_likelihood():
    model = LinearGaussianVAE()
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(1)) * 2
    truth = -model.log_marginal(x).mean().item()
    estimate = importance_weighted_nll(model, x, samples=4000, seed=3)
    assert estimate.nll == pytest.approx(truth, abs=0.02)
    assert estimate.neg_elbo > truth + 0.1  # the deliberately wrong encoder: a loose ELBO
    assert estimate.samples == 4000 and estimate.seconds > 0


def test_iw_estimate_is_never_looser_than_the_elbo_and_tightens_with_k(tmp_path):
    cfg = typed_config("device=cpu", "epochs=3", "eval.iw_samples=0")
    from helpers import engine_of_one

    engine = engine_of_one(cfg)
    for _ in range(3):
        engine.train_epoch([1.0], [True])
    model = engine.member_model(0)
    images = engine.data.to_float(engine.data.test)
    estimates = [importance_weighted_nll(model, images, k, seed=5) for k in (1, 20, 400)]
    for e in estimates:
        assert e.nll <= e.neg_elbo + 1e-9
    assert estimates[0].nll == pytest.approx(estimates[0].neg_elbo)  # K = 1 is the ELBO
    assert estimates[0].nll > estimates[1].nll > estimates[2].nll


# ------------------------------------------------------------- active units
def test_active_units_count_dimensions_whose_posterior_mean_varies():
    g = torch.Generator().manual_seed(0)
    n = 500
    mu = torch.zeros(n, 6, dtype=torch.float64)
    mu[:, 0] = 3.0  # constant: inactive, however large
    mu[:, 1] = torch.randn(n, generator=g, dtype=torch.float64)  # variance ~1: active
    mu[:, 2] = 0.05 * torch.randn(n, generator=g, dtype=torch.float64)  # 0.0025: inactive
    mu[:, 3] = 0.2 * torch.randn(n, generator=g, dtype=torch.float64)  # 0.04: active
    mu[:, 4] = torch.linspace(-1, 1, n, dtype=torch.float64)  # ~0.33: active
    count, variance = active_units_burda(mu.sum(0), mu.pow(2).sum(0), n)
    assert count == 3
    assert variance[0] == pytest.approx(0, abs=1e-12) and variance[5] == 0
    torch.testing.assert_close(variance, mu.var(dim=0, unbiased=False))


# ------------------------------------------------------------- free bits
def _terms(seed=0, batch=4, latent=3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, 10, generator=g)
    x = torch.rand(batch, 10, generator=g)
    mu = (0.1 * torch.randn(batch, latent, generator=g)).requires_grad_(True)
    logvar = (0.1 * torch.randn(batch, latent, generator=g)).requires_grad_(True)
    return elbo_terms(bernoulli_nll(logits, x), mu, logvar), mu


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_free_bits_floor_each_dimension_s_kl_in_the_loss(reduction):
    terms, mu = _terms()
    batch_mean_kl = terms.kl_by_dim.mean(dim=0)
    floor = 0.05
    expected_kl = batch_mean_kl.clamp(min=floor).sum()
    recon = terms.recon.sum() if reduction == "sum" else terms.recon.mean()
    scale = 4 if reduction == "sum" else 1
    loss = training_loss(terms, 0.7, reduction, free_bits=floor)
    torch.testing.assert_close(loss, recon + 0.7 * scale * expected_kl)
    # below the floor a dimension gets no gradient from the KL term
    loss.backward()
    below = batch_mean_kl < floor
    assert below.any() and (mu.grad[:, below] == 0).all()


def test_free_bits_zero_is_the_plain_loss_and_the_reported_kl_is_untouched(tmp_path):
    terms, _ = _terms()
    torch.testing.assert_close(
        training_loss(terms, 1.0, "sum", free_bits=0.0), training_loss(terms, 1.0, "sum")
    )
    # a run with free bits: the history's KL is the true KL, not the floored one
    from rich.console import Console

    out = (tmp_path / "out").open("w")
    cfg = typed_config("device=cpu", "epochs=2", "annealing.free_bits=2.0", "eval.iw_samples=0")
    history = run(cfg, tmp_path / "run", Console(file=out))
    assert history["status"] == "completed"
    assert all(kl < 2.0 * 20 for kl in history["test_kl"])  # below the floor's 40 nats
    assert history["train_loss"][0] == pytest.approx(
        history["train_recon"][0] + history["kl_weight"][0] * history["train_kl"][0]
    )


# ------------------------------------------------------------- collapse warning
def _history(test_kl, active, burda, config=None):
    return {
        "epoch": list(range(1, len(test_kl) + 1)),
        "test_kl": test_kl,
        "active_units": active,
        "active_units_burda": burda,
        "kl_by_dim": [[0.0] * 20 for _ in test_kl],  # 20 latent dimensions
        "config": config or {},
    }


def test_collapse_warning_rules():
    assert collapse_warning(_history([5.0, 4.0], [3, 2], [3, 2])) is None
    assert collapse_warning(_history([5.0, 2.0], [3, 13], [3, 0])) is None  # one measure only
    zero = collapse_warning(_history([5.0, 0.01], [3, 0], [3, 0]))
    assert "epoch 2" in zero and "no latent dimension is active" in zero
    assert "annealing.free_bits" in zero and "beta=" in zero
    low = collapse_warning(_history([3.0, 0.4, 0.3, 0.2], [2, 1, 1, 1], [2, 1, 1, 1]))
    assert "stayed below 0.5 nats for 3 epochs with at most 2 of 20 latent dimensions" in low
    assert collapse_warning(_history([0.4, 0.3, 3.0], [1, 1, 2], [1, 1, 2])) is None


def test_a_small_kl_with_every_unit_active_is_not_collapse():
    # the misfire: an lr=1e-4 run at epoch 16, 20 of 20 units active, a total KL below 0.5
    assert collapse_warning(_history([0.45, 0.42, 0.4], [20, 20, 20], [20, 20, 20])) is None


def test_the_warning_leaves_out_remedies_the_run_uses_and_names_its_job():
    cyclical = {"annealing": {"name": "cyclical", "cycles": 4}, "beta": 1.0}
    said = collapse_warning(_history([5.0, 0.01], [3, 0], [3, 0], cyclical), job="lr=1e-4 seed=1")
    assert said.startswith("posterior collapse in job lr=1e-4 seed=1 at epoch 2:")
    assert "annealing=linear" not in said and "free bits" not in said and "beta=0.5" in said
    every = {"annealing": {"name": "linear", "free_bits": 0.5}, "beta": 0.5}
    said = collapse_warning(_history([5.0, 0.01], [3, 0], [3, 0], every))
    assert "Remedies" not in said and "already uses annealing, free bits and a beta below 1" in said


def test_collapse_is_warned_each_time_the_run_falls_into_it():
    kl, active = [5.0, 0.01, 0.01, 4.0, 0.01], [3, 0, 0, 3, 0]
    warned = [collapse_warning(_history(kl[:n], active[:n], active[:n])) for n in range(1, 6)]
    assert [w is not None for w in warned] == [False, True, False, False, True]


# ------------------------------------------------------------- files of a run, end to end
def png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    image = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert image.std() > 1.0, f"{path} is blank"
    return image.shape


@pytest.mark.e2e
def test_a_run_writes_images_plots_final_measures_and_tensorboard(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        "epochs=4",
        "plot_every=2",
        "eval.iw_samples=50",
        "logger=tensorboard",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    # digits are 8x8, enlarged x7 to 56x56 with 2-pixel padding: 8 per row, 2 rows
    assert png(run_dir / "reconstructions.png") == (2 + 2 * 58, 2 + 8 * 58)
    assert png(run_dir / "samples.png") == (2 + 8 * 58, 2 + 8 * 58)
    for epoch in (2, 4):
        png(run_dir / "images" / f"reconstructions_epoch{epoch:03d}.png")
        png(run_dir / "images" / f"samples_epoch{epoch:03d}.png")
    assert not (run_dir / "images" / "samples_epoch001.png").exists()
    assert png(run_dir / "curves.png") == (800, 1800)
    assert png(run_dir / "kl_per_dim.png")[0] >= 400

    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["kl_by_dim"]) == 4 and all(len(row) == 20 for row in history["kl_by_dim"])
    for e in range(4):
        assert sum(history["kl_by_dim"][e]) == pytest.approx(history["test_kl"][e])
    assert all(0 <= a <= 20 for a in history["active_units_burda"])
    assert history["active_units_burda_threshold"] == 0.01
    final = history["final"]
    assert final["iw_samples"] == 50 and final["iw_seconds"] > 0
    assert final["test_nll_iw"] <= -final["test_elbo"]
    assert math.isfinite(final["test_nll_iw"]) and final["epoch"] == 4
    assert "test NLL, IW (K=50)" in result.stdout

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss/train", "loss/test", "kl/test", "lr", "active_units/burda"} <= set(
        tags["scalars"]
    )
    test_loss = [e.value for e in events.Scalars("loss/test")]
    assert test_loss == pytest.approx(history["test_loss"], rel=1e-6)
    assert [e.step for e in events.Scalars("loss/test")] == [1, 2, 3, 4]
    assert {"reconstructions", "samples"} <= set(tags["images"])
    # epoch 4's grids once, though plot_every and the end of the run both draw them
    assert [e.step for e in events.Images("samples")] == [2, 4]
    # the HParams tab: the config beside the final measures
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["lr"].number_value == 0.001 and hparams["optimizer.name"].string_value == "adam"
    assert hparams["status"].string_value == "completed"
    assert hparams["data.limit"].string_value == "null"
    nll = [e.value for e in events.Scalars("hparam/final/test_nll_iw")]
    assert nll == [pytest.approx(final["test_nll_iw"], rel=1e-6)]


@pytest.mark.e2e
def test_collapse_is_warned_on_the_terminal_and_in_the_history(tmp_path):
    run_dir = tmp_path / "run"
    # a warm-up whose middle lies past the run: a config warning first, which must not hide the
    # collapse (the first epoch's KL weight is 54 / 9 = 6)
    args = ("beta=54", "annealing.warmup_epochs=9", "epochs=4", "eval.iw_samples=0")
    result = run_cli(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    history = json.loads((run_dir / "history.json").read_text())
    config, warning = history["warnings"]
    assert config["kind"] == "config" and config["epoch"] == 0
    assert warning["kind"] == "posterior_collapse" and warning["epoch"] == 1
    assert "posterior collapse at epoch" in result.stdout and "annealing.free_bits" in result.stdout


@pytest.mark.e2e
def test_vae_plot_redraws_an_old_run(tmp_path):
    run_dir = tmp_path / "run"
    assert (
        run_cli(
            "epochs=2", "eval.iw_samples=0", f"hydra.run.dir={run_dir}", cwd=tmp_path
        ).returncode
        == 0
    )
    (run_dir / "curves.png").unlink()
    (run_dir / "kl_per_dim.png").unlink()
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("vae-plot")
    done = subprocess.run([str(script), str(run_dir)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert png(run_dir / "curves.png") == (800, 1800)
    png(run_dir / "kl_per_dim.png")
