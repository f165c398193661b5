"""A stacked member is the run it stands for (issue 25's proofs, on the CPU, in float64).

Bit-identity with a separate run is impossible (batched products round differently, and Adam
amplifies it), so: with the noise handed in (an injectable sampler) and float64 everywhere,
- ORACLE: each member's per-epoch losses equal a plain reference loop's (nn.Module, torch.optim,
  clip_grad_norm_, torch's schedulers, written out below) to 1e-9 relative;
- NO LEAKS: a member trained alone and the same member among 7 others give equal histories,
  also when one of the others diverges.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_runner import quiet_console

from vae_runner.data.images import load_data
from vae_runner.training.annealing import kl_weight as annealed_kl_weight
from vae_runner.training.build import build_model
from vae_runner.training.runner import MemberRun, run_stack
from vae_runner.training.schedules import epoch_lr

from helpers import typed_config

BASE = ("device=cpu", "epochs=3", "eval.iw_samples=0", "pictures=false", "data=digits")


class HandedNoise:
    """The draws a test hands in: per member, a float64 stream seeded by 1000 + its seed, which
    the reference loop draws from in the same order."""

    def __init__(self, seeds: list[int]) -> None:
        self.generators = [torch.Generator().manual_seed(1000 + s) for s in seeds]

    def normal(self, member, shape, like):
        draws = torch.randn(shape, generator=self.generators[member], dtype=torch.float64)
        return draws.to(like.dtype)

    def bernoulli(self, member, probs):
        return torch.bernoulli(probs, generator=self.generators[member])

    def state(self, member):
        return {"noise": self.generators[member].get_state(), "noise_device": "cpu"}

    def restore(self, member, rng):
        self.generators[member].set_state(rng["noise"])


def reference_losses(cfg) -> dict[str, list[float]]:
    """The seed's loop, plainly, in float64: per-epoch train and test losses and lrs."""
    data = load_data(cfg.data, cfg.likelihood)
    torch.manual_seed(cfg.seed)  # the model's init, as every run's
    model = build_model(cfg.model, cfg.likelihood, data.image_shape).double()
    params = list(model.parameters())
    o = cfg.optimizer
    if o.name == "sgd":
        optimizer = torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=o.momentum,
            nesterov=o.nesterov,
            weight_decay=o.weight_decay,
            foreach=False,
        )
    else:
        kind = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
        optimizer = kind(
            params, lr=cfg.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, foreach=False
        )
    s = cfg.scheduler
    scheduler = None
    if s.name == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=s.factor, patience=s.patience, threshold=s.threshold, min_lr=s.min_lr
        )
    elif s.name == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, s.step_size, s.gamma)
    lr_of_epoch = epoch_lr(cfg, cfg.epochs)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    noise = torch.Generator().manual_seed(1000 + cfg.seed)
    latent = cfg.model.latent_dim

    def terms(x):
        eps = torch.randn(len(x), latent, generator=noise, dtype=torch.float64)
        logits, mu, logvar = model(x, eps)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(1)
        return recon, kl

    def test_loss():
        recon_sum = kl_sum = 0.0
        with torch.no_grad():
            for start in range(0, len(data.test), cfg.batch_size):
                recon, kl = terms(data.to_float(data.test[start : start + cfg.batch_size]).double())
                recon_sum += recon.sum().item()
                kl_sum += kl.sum().item()
        return (recon_sum + cfg.beta * kl_sum) / len(data.test)

    out = {"train_loss": [], "test_loss": [], "lr": []}
    test_loss()  # the run's initial evaluation draws noise too
    max_norm = cfg.clip_norm if cfg.clip_norm is not None else math.inf
    n = len(data.train)
    for epoch in range(1, cfg.epochs + 1):
        kl_w = annealed_kl_weight(cfg.annealing, epoch, cfg.beta, cfg.epochs)
        if lr_of_epoch is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_of_epoch(epoch)
        out["lr"].append(optimizer.param_groups[0]["lr"])
        recon_sum = kl_sum = 0.0
        for index in torch.randperm(n, generator=shuffle).split(cfg.batch_size):
            x = data.to_float(data.train[index]).double()
            recon, kl = terms(x)
            per_sample = recon + kl_w * kl
            loss = per_sample.sum() if cfg.reduction.name == "sum" else per_sample.mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm)
            optimizer.step()
            recon_sum += recon.sum().item()
            kl_sum += kl.sum().item()
        out["train_loss"].append((recon_sum + kl_w * kl_sum) / n)
        out["test_loss"].append(test_loss())
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(out["test_loss"][-1])
        elif scheduler is not None:
            scheduler.step()
    return out


def stacked_histories(tmp_path, cfgs, name="stack"):
    members = [MemberRun(cfg, tmp_path / name / str(i)) for i, cfg in enumerate(cfgs)]
    noise = HandedNoise([cfg.seed for cfg in cfgs])
    console, _ = quiet_console()
    results = run_stack(members, console, noise=noise, dtype=torch.float64)
    for result in results:
        assert not isinstance(result, BaseException), result
    return results


# Members that differ in everything a stack lets differ, each against its own reference loop
MEMBERS = {
    "adam, plateau that acts, clipping": (
        "optimizer=adam",
        "lr=1e-2",
        "scheduler.patience=0",
        "scheduler.threshold=1.0",
        "grad_clip=1.0",
        "seed=0",
    ),
    "adamw, cosine, no clipping": (
        "optimizer=adamw",
        "lr=3e-3",
        "optimizer.weight_decay=0.1",
        "scheduler=cosine",
        "grad_clip=0",
        "seed=1",
    ),
    "sgd momentum, plateau, clipping": (
        "optimizer=sgd",
        "lr=1e-3",
        "optimizer.momentum=0.9",
        "grad_clip=5.0",
        "seed=2",
    ),
    "sgd nesterov, weight decay, step": (
        "optimizer=sgd",
        "lr=2e-3",
        "optimizer.momentum=0.9",
        "optimizer.nesterov=true",
        "optimizer.weight_decay=1e-3",
        "scheduler=step",
        "scheduler.step_size=1",
        "seed=3",
    ),
    "adam, other betas, beta and annealing": (
        "optimizer=adam",
        "lr=5e-3",
        "optimizer.betas=[0.8,0.95]",
        "beta=0.5",
        "annealing=constant",
        "grad_clip=0",
        "seed=4",
    ),
}


def test_each_stacked_member_equals_its_reference_loop_in_float64(tmp_path):
    cfgs = [typed_config(*BASE, *overrides) for overrides in MEMBERS.values()]
    histories = stacked_histories(tmp_path, cfgs)
    for name, cfg, history in zip(MEMBERS, cfgs, histories, strict=True):
        expected = reference_losses(cfg)
        assert history["status"] == "completed", name
        for key in ("train_loss", "test_loss", "lr"):
            assert history[key] == pytest.approx(expected[key], rel=1e-9, abs=0), (name, key)
    plateau = histories[0]["lr"]
    assert plateau == pytest.approx([1e-2, 5e-3, 2.5e-3])  # the scheduler acted: it was tested


def test_a_member_alone_and_among_seven_others_one_diverging_has_one_history(tmp_path):
    watched = typed_config(*BASE, "lr=3e-3", "seed=11")
    others = [typed_config(*BASE, f"lr={lr}", f"seed={s}") for s, lr in enumerate([1e-2, 1e-4] * 3)]
    diverging = typed_config(*BASE, "lr=1e3", "grad_clip=0", "seed=5", "on_divergence=stop")
    (alone,) = stacked_histories(tmp_path, [watched], "alone")
    together = stacked_histories(tmp_path, [others[0], diverging, watched, *others[1:]], "together")
    assert together[1]["status"] == "diverged"
    assert [h["status"] for i, h in enumerate(together) if i != 1] == ["completed"] * 7
    among = together[2]
    for key in ("train_loss", "test_loss", "grad_norm", "lr"):
        assert among[key] == pytest.approx(alone[key], rel=1e-12, abs=1e-300), key
    for among_epoch, alone_epoch in zip(among["kl_by_dim"], alone["kl_by_dim"], strict=True):
        assert among_epoch == pytest.approx(alone_epoch, rel=1e-12, abs=1e-300)
    assert among["best_epoch"] == alone["best_epoch"]


def test_a_member_that_stops_early_is_frozen_and_the_others_go_on(tmp_path):
    """No epoch improves by 100 nats: with patience 1 the member stops after epoch 2, recorded
    as a run stopped early, evaluated at its last epoch; its neighbours train their 4 epochs as
    they do alone."""
    four = (*BASE[:1], "epochs=4", *BASE[2:])
    stopping = typed_config(*four, "early_stop.patience=1", "early_stop.min_delta=100", "seed=1")
    other = typed_config(*four, "lr=3e-3", "seed=2")
    stopped, beside = stacked_histories(tmp_path, [stopping, other], "stack")
    (alone,) = stacked_histories(tmp_path, [other], "alone")
    assert stopped["status"] == "completed" and stopped["stopped_early"] is True
    assert stopped["epoch"] == [1, 2] and stopped["final"]["epoch"] == 2
    assert beside["epoch"] == [1, 2, 3, 4] and beside["stopped_early"] is False
    assert beside["test_loss"] == pytest.approx(alone["test_loss"], rel=1e-12)
