"""The training loop in-process: history.json's contents, determinism, clipping, the scheduler."""

from __future__ import annotations

import io
import json
import logging
import math

import pytest
import torch
from rich.console import Console

from vae_runner.data.images import load_data
from vae_runner.files import write_json_atomic
from vae_runner.record import EPOCH_KEYS
from vae_runner.training.model import MLPVAE
from vae_runner.training.runner import run

from helpers import engine_of_one, typed_config

SEED_KEYS = ("train_loss", "train_recon", "train_kl", "test_loss", "test_recon", "test_kl")


def quiet_console() -> tuple[Console, io.StringIO]:
    """A console into a buffer, which also receives the `vae_runner` log records (the epoch
    lines), as vae-train's default job logging writes them beside the console's output."""
    buffer = io.StringIO()
    log = logging.getLogger("vae_runner")
    for old in [h for h in log.handlers if getattr(h, "from_test", False)]:
        log.removeHandler(old)
    handler = logging.StreamHandler(buffer)
    handler.from_test = True
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return Console(file=buffer, width=120), buffer


def train(tmp_path, *overrides):
    console, buffer = quiet_console()
    history = run(typed_config("device=cpu", *overrides), tmp_path, console)
    return history, buffer.getvalue()


def test_history_holds_the_seed_curves_and_the_monitors(tmp_path):
    history, output = train(tmp_path, "epochs=3")
    on_disk = json.loads((tmp_path / "history.json").read_text())
    assert on_disk == json.loads(json.dumps(history))
    assert on_disk["status"] == "completed" and on_disk["schema_version"] == 1
    for key in EPOCH_KEYS:
        assert len(on_disk[key]) == 3, key
    assert on_disk["epoch"] == [1, 2, 3]
    assert on_disk["kl_weight"] == pytest.approx([0.1, 0.2, 0.3])  # the seed's warmup of 10
    assert on_disk["lr"] == [1e-3] * 3
    for e in range(3):
        w = on_disk["kl_weight"][e]
        # train loss uses the annealed weight, test loss the full beta (as in the seed)
        assert on_disk["train_loss"][e] == pytest.approx(
            on_disk["train_recon"][e] + w * on_disk["train_kl"][e]
        )
        assert on_disk["test_loss"][e] == pytest.approx(
            on_disk["test_recon"][e] + on_disk["test_kl"][e]
        )
        assert on_disk["recon_per_dim"][e] == pytest.approx(on_disk["test_recon"][e] / 64)
        assert on_disk["kl_per_dim"][e] == pytest.approx(on_disk["test_kl"][e] / 20)
        assert 0 < on_disk["grad_norm"][e] <= on_disk["grad_norm_max"][e]
        assert 0 <= on_disk["active_units"][e] <= 20
        assert on_disk["epoch_seconds"][e] > 0
    # per-sample Bernoulli NLL of 64 grey levels: well below 64 * ln 2 * 2 and decreasing
    assert on_disk["test_loss"][-1] < on_disk["test_loss"][0] < 100
    best = min(range(3), key=lambda e: on_disk["test_loss"][e])
    assert on_disk["best_epoch"] == best + 1
    assert on_disk["best_test_loss"] == on_disk["test_loss"][best]
    assert on_disk["active_units_threshold"] == 0.01
    assert on_disk["device"] == "cpu" and on_disk["data_dim"] == 64
    assert on_disk["n_train"] + on_disk["n_test"] == 1797 and on_disk["n_test"] == 359
    assert on_disk["config"]["optimizer"]["name"] == "adam" and on_disk["config"]["epochs"] == 3
    assert set(on_disk["versions"]) >= {"torch", "python", "hydra", "vae_runner"}
    assert on_disk["finished_at"] >= on_disk["started_at"]
    assert "Epoch 1/3 | Train:" in output and "Run directory:" in output.splitlines()[-1]


def test_same_seed_same_history_and_other_seed_differs(tmp_path):
    first, _ = train(tmp_path / "a", "epochs=3")
    second, _ = train(tmp_path / "b", "epochs=3")
    other, _ = train(tmp_path / "c", "epochs=3", "seed=1")
    for key in SEED_KEYS + ("grad_norm", "grad_norm_max", "active_units"):
        assert first[key] == second[key], key
    assert first["test_loss"] != other["test_loss"]


def test_plateau_halves_the_lr_when_the_test_loss_stops_improving(tmp_path):
    # threshold 1 makes every epoch count as 'no improvement'; patience 0 acts at once
    history, _ = train(tmp_path, "epochs=3", "scheduler.patience=0", "scheduler.threshold=1.0")
    assert history["lr"] == pytest.approx([1e-3, 5e-4, 2.5e-4])


def test_plateau_keeps_the_lr_while_the_loss_improves(tmp_path):
    history, _ = train(tmp_path, "epochs=3")
    assert history["lr"] == [1e-3] * 3


@pytest.mark.parametrize("scheduler, expected", [("step", 0.5e-3), ("cosine", 0.0)])
def test_epoch_schedulers_move_the_lr(tmp_path, scheduler, expected):
    args = ["epochs=3", f"scheduler={scheduler}", "scheduler.step_size=2"]
    history, _ = train(tmp_path, *(args if scheduler == "step" else args[:2]))
    assert history["lr"][0] == 1e-3
    if scheduler == "step":
        assert history["lr"] == pytest.approx([1e-3, 1e-3, 0.5e-3])
    else:  # T_max = epochs: 1e-3 * (1 + cos(pi * k / 3)) / 2
        assert history["lr"] == pytest.approx(
            [1e-3 * (1 + math.cos(math.pi * k / 3)) / 2 for k in range(3)]
        )


def one_sgd_step(lr: float, grad_clip: float):
    """One plain-SGD step over the whole digits training set: (pre-clip norm, step length)."""
    cfg = typed_config(
        "device=cpu",
        "optimizer=sgd",
        "optimizer.momentum=0",
        f"lr={lr}",
        f"grad_clip={grad_clip}",
        "batch_size=1438",  # the whole training set: one batch, one step
    )
    engine = engine_of_one(cfg)
    before = torch.cat([p.detach().flatten().clone() for p in engine.model.parameters()])
    (sums,) = engine.train_epoch([1.0], [True])
    after = torch.cat([p.detach().flatten() for p in engine.model.parameters()])
    return sums.grad_norm, (after - before).norm().item()


def test_clipping_bounds_the_update_and_the_recorded_norm_is_pre_clip():
    """With plain SGD the update is lr * clipped gradient, so its norm is at most lr * grad_clip."""
    grad_norm, step = one_sgd_step(lr=1.0, grad_clip=0.01)
    assert grad_norm > 1.0  # the gradient itself is large...
    assert step == pytest.approx(0.01, rel=1e-3)  # ...the step is clipped to lr * grad_clip


def test_without_clipping_the_step_is_the_full_gradient():
    grad_norm, step = one_sgd_step(lr=1e-3, grad_clip=0)
    assert step == pytest.approx(1e-3 * grad_norm, rel=1e-4)


def test_history_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "history.json"
    write_json_atomic(path, {"status": "running", "train_loss": [1.0]})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(path, {"status": "completed", "train_loss": [1.0, 0.5]})
    assert json.loads(path.read_text()) == {"status": "running", "train_loss": [1.0]}
    assert [p.name for p in tmp_path.iterdir()] == ["history.json"]  # no temporary left behind


def test_non_finite_numbers_are_written_as_null(tmp_path):
    write_json_atomic(tmp_path / "h.json", {"loss": [1.0, float("nan"), float("inf")]})
    assert json.loads((tmp_path / "h.json").read_text()) == {"loss": [1.0, None, None]}


def test_output_off_a_terminal_has_no_control_codes(tmp_path):
    _, output = train(tmp_path, "epochs=2")
    assert "\x1b" not in output and "\r" not in output


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=conv"],
        ["likelihood=bernoulli", "likelihood.binarize=none"],
        ["likelihood=bernoulli", "likelihood.binarize=static"],
        ["likelihood=bernoulli", "likelihood.binarize=dynamic"],
        ["likelihood=gaussian", "likelihood.variance=fixed"],
        ["likelihood=gaussian", "likelihood.variance=learned"],
        ["model=conv", "likelihood=gaussian", "likelihood.variance=learned"],
    ],
    ids=lambda o: " ".join(o),
)
def test_every_model_and_likelihood_trains(tmp_path, overrides):
    history, _ = train(tmp_path, "epochs=2", *overrides)
    assert history["status"] == "completed"
    assert all(math.isfinite(v) for v in history["test_loss"])
    assert history["test_loss"][-1] < history["initial_test_loss"]


def test_learned_gaussian_variance_is_trained(tmp_path):
    cfg = typed_config("device=cpu", "likelihood=gaussian", "likelihood.variance=learned")
    from vae_runner.training.build import build_model

    model = build_model(cfg.model, cfg.likelihood, (1, 8, 8))
    assert any(p is model.likelihood.log_sigma for p in model.parameters())
    fixed = build_model(cfg.model, typed_config("likelihood=gaussian").likelihood, (1, 8, 8))
    assert all(p is not fixed.likelihood.log_sigma for p in fixed.parameters())
    assert float(fixed.likelihood.log_sigma.exp()) == pytest.approx(0.1)


def test_an_interrupted_history_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "history.json"
    write_json_atomic(path, {"status": "running"})

    def half_then_crash(f):
        f.write(b'{"status": "compl')
        raise KeyboardInterrupt  # a signal in the middle of the write

    from vae_runner.files import replace_atomically

    with pytest.raises(KeyboardInterrupt):
        replace_atomically(path, half_then_crash)
    assert json.loads(path.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["history.json"]


def test_the_optimised_loop_matches_a_straightforward_one(tmp_path):
    """Correctness guard for the fast path (the engine's stacked layers and batched Adam,
    device-side sums, no per-batch sync):
    the seed's plain loop, written out here with .item() per batch and torch's default Adam,
    gives the same history for the same seed, up to float rounding."""
    import torch.nn.functional as F

    history, _ = train(tmp_path, "epochs=3", "eval.iw_samples=0")

    cfg = typed_config("device=cpu", "epochs=3")
    torch.manual_seed(cfg.seed)  # the model's init, as every run's
    shuffle = torch.Generator().manual_seed(cfg.seed)
    noise = torch.Generator().manual_seed(cfg.seed)  # the run's own noise (training/noise.py)
    data = load_data(cfg.data)
    model = MLPVAE(data.image_shape, cfg.model.hidden_dim, cfg.model.latent_dim)

    def eps(x):
        return torch.randn(len(x), cfg.model.latent_dim, generator=noise)

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, foreach=False)

    def test_pass(beta):
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(data.test), cfg.batch_size):
                x = data.test[start : start + cfg.batch_size].float() / 16
                logits, mu, logvar = model(x, eps(x))
                recon = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="sum")
                kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
                total += (recon + beta * kl).item()
        return total / len(data.test)

    test_pass(1.0)  # the runner's initial evaluation draws z too
    for epoch in range(1, 4):
        kl_weight = min(1.0, epoch / 10) * cfg.beta
        model.train()
        epoch_loss = 0.0
        for index in torch.randperm(len(data.train), generator=shuffle).split(cfg.batch_size):
            x = data.train[index].float() / 16
            optimizer.zero_grad()
            logits, mu, logvar = model(x, eps(x))
            recon = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="sum")
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = recon + kl_weight * kl
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
            epoch_loss += loss.item()
        model.eval()
        test_loss = test_pass(cfg.beta)
        assert history["train_loss"][epoch - 1] == pytest.approx(
            epoch_loss / len(data.train), rel=1e-4
        )
        assert history["test_loss"][epoch - 1] == pytest.approx(test_loss, rel=1e-4)


def test_help_and_cfg_job_import_no_torch():
    import subprocess
    import sys

    for flag in ("--help", "--cfg"):
        probe = (
            "import sys\n"
            f"sys.argv = ['vae-train', '{flag}'] + (['job'] if '{flag}' == '--cfg' else [])\n"
            "from vae_runner.cli.train import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
        )
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "optimizer:" in done.stdout


def test_releasing_the_training_state_keeps_what_the_final_evaluation_needs():
    cfg = typed_config("epochs=1", "data.limit=256")
    engine = engine_of_one(cfg)
    engine.train_epoch([1.0], [True])
    test_before = engine.data.test.clone()
    weights_before = engine.model.fc1.weight.detach().clone()
    assert engine.optimizer.member_state_dict(0)["state"]
    assert engine.model.fc1.weight.grad is not None
    engine.release_training_state()
    assert len(engine.data.train) == 0 and len(engine.data.train_labels) == 0
    assert engine.data.image_shape == (1, 8, 8)
    assert all(p.grad is None for p in engine.model.parameters())
    assert torch.equal(engine.data.test, test_before)
    assert torch.equal(engine.model.fc1.weight, weights_before)
