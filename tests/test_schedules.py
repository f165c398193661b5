"""Schedules that depend on the run's length: cosine's lr, a run extended with resume=, and the
warning for a KL ramp that leaves the weight far below beta."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console
from test_annealing import fu_eq5

from vae_runner.training.build import LrShell
from vae_runner.training.config_warnings import config_warnings
from vae_runner.training.runner import run
from vae_runner.training.schedules import cosine_lr, extension_line

from helpers import typed_config, vae_train_in_process

SMALL = ("data=digits", "eval.iw_samples=0", "pictures=false", "device=cpu")


def closed_form(k: int, lr: float, eta_min: float, t_max: int) -> float:
    """SGDR's eq. (5) (Loshchilov & Hutter 2017) at step k, as torch's CosineAnnealingLR
    documents it."""
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * k / t_max)) / 2


@pytest.mark.parametrize("t_max, eta_min", [(1, 0.0), (4, 0.0), (7, 1e-5), (50, 0.0)])
def test_cosine_follows_the_closed_form_then_holds_its_last_planned_lr(t_max, eta_min):
    ours = [cosine_lr(e, 1e-3, eta_min, t_max) for e in range(1, 2 * t_max + 3)]
    planned = [closed_form(k, 1e-3, eta_min, t_max) for k in range(t_max)]
    assert ours[:t_max] == pytest.approx(planned, rel=1e-12)
    assert ours[t_max:] == pytest.approx([planned[-1]] * (t_max + 2), rel=1e-12)
    assert min(ours) > eta_min  # an epoch at eta_min (0 by default) is never trained


def test_cosine_within_its_horizon_is_torchs_cosine_annealing_lr():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    torch_cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=6, eta_min=1e-5)
    torchs = []
    for _ in range(6):
        torchs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        torch_cosine.step()
    assert [cosine_lr(e, 1e-3, 1e-5, 6) for e in range(1, 7)] == pytest.approx(torchs)


def test_a_t_max_shorter_than_the_run_never_trains_an_epoch_at_lr_0(tmp_path):
    # main (torch's chained CosineAnnealingLR): 1e-3, 5e-4, 0, 5e-4
    cfg = typed_config("scheduler=cosine", "scheduler.t_max=2", "epochs=4", *SMALL)
    recorded = run(cfg, tmp_path, Console(file=io.StringIO()))["lr"]
    assert recorded == pytest.approx(
        [closed_form(0, 1e-3, 0, 2)] + [closed_form(1, 1e-3, 0, 2)] * 3
    )
    assert recorded == pytest.approx([1e-3, 5e-4, 5e-4, 5e-4])


def history(run_dir):
    return json.loads((run_dir / "history.json").read_text())


def test_an_extended_run_keeps_its_schedules_and_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    """The issue's example: scheduler=cosine epochs=4, then resume=D epochs=8. main trained
    epoch 5 at lr 0 and climbed back (1.5e-4, 5e-4, 8.5e-4); cyclical re-planned its cycles."""
    run_dir = tmp_path / "D"
    cyclical = ("annealing=cyclical", "annealing.cycles=2", "annealing.ratio=1.0")
    first = ("scheduler=cosine", "epochs=4", *cyclical, *SMALL, f"hydra.run.dir={run_dir}")
    assert vae_train_in_process(monkeypatch, *first) == 0
    capsys.readouterr()
    assert vae_train_in_process(monkeypatch, f"resume={run_dir}", "epochs=8") == 0
    extended = history(run_dir)
    # Cosine over the 4 planned epochs (steps 0..3), then the lr of epoch 4, held.
    planned = [closed_form(k, 1e-3, 0.0, 4) for k in range(4)]
    assert extended["lr"] == pytest.approx(planned + [planned[-1]] * 4, rel=1e-12)
    assert extended["lr"][4] == pytest.approx(1.4644660940672627e-4)
    # Cyclical: eq. (5) with T = 4, M = 2 (cycles of 2 epochs) goes on past the horizon.
    assert extended["kl_weight"] == pytest.approx([fu_eq5(t, 4, 2, 1.0, 1.0) for t in range(1, 9)])
    assert extended["kl_weight"] == pytest.approx([0, 0.5] * 4)
    assert extended["schedule_horizon"] == 4 and extended["config"]["epochs"] == 8
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if "epochs:" in line]
    assert lines == [
        "Extended from 4 to 8 epochs: scheduler=cosine holds lr 1.46e-04, its lr at epoch 4 "
        "(the end of the 4 epochs the run started with); annealing=cyclical keeps its period "
        "of 2 epochs (cycles=2 over the 4 epochs the run started with)"
    ]


def test_the_extension_line_for_an_explicit_t_max_and_for_no_length_dependent_schedule():
    cosine = typed_config("scheduler=cosine", "scheduler.t_max=10", "epochs=12")
    assert extension_line(cosine, 6, 6) == (
        "Extended from 6 to 12 epochs: scheduler=cosine holds lr 2.45e-05, its lr at epoch 10 "
        "(the end of scheduler.t_max=10)"
    )
    assert f"{closed_form(9, 1e-3, 0.0, 10):.2e}" == "2.45e-05"
    assert extension_line(typed_config("epochs=9"), 5, 5) == (
        "Extended from 5 to 9 epochs: no schedule depends on epochs"
    )
    assert extension_line(typed_config("epochs=9"), 9, 9) is None


# ------------------------------------------------------------------ KL weight far below beta
def far_below(*overrides: str) -> list[str]:
    return [w for w in config_warnings(typed_config(*overrides)) if "KL ramp" in w]


def test_a_warmup_far_past_the_last_epoch_is_one_warning_naming_the_key_and_the_weight():
    (said,) = far_below("annealing.warmup_epochs=100", "epochs=10")
    assert said == (
        "annealing.warmup_epochs=100 puts the KL ramp's middle past the last epoch (epochs=10): "
        "the last epoch's KL weight is 0.1 of beta=1, so the whole run trains far below the "
        "beta it reports; use a smaller annealing.warmup_epochs or more epochs"
    )
    assert "\n" not in said
    # beta=4: the weight 10/100 * 4 is still 0.1 of beta
    assert (
        "the last epoch's KL weight is 0.1 of beta=4,"
        in far_below("annealing.warmup_epochs=100", "epochs=10", "beta=4")[0]
    )
    # "far below" is under half of beta: a warm-up up to twice the run reaches half of it
    assert far_below("annealing.warmup_epochs=20", "epochs=10") == []
    assert far_below("annealing.warmup_epochs=21", "epochs=10") != []


def test_a_sigmoid_midpoint_past_the_last_epoch_is_warned():
    (said,) = far_below("annealing=sigmoid", "annealing.midpoint=30", "epochs=10")
    weight = 1 / (1 + math.exp(30 - 10))  # Bowman et al.'s logistic at epoch 10
    assert said.startswith("annealing.midpoint=30 puts the KL ramp's middle past the last epoch")
    assert f"the last epoch's KL weight is {weight:.2g} of beta=1," in said
    assert far_below("annealing=sigmoid", "annealing.midpoint=10", "epochs=10") == []


@pytest.mark.parametrize("annealing", ["linear", "constant", "cyclical", "sigmoid"])
def test_no_warning_for_the_defaults(annealing):
    assert config_warnings(typed_config(f"annealing={annealing}")) == []


@pytest.mark.parametrize(
    "make",
    [
        lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=1),
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.3),
    ],
    ids=["plateau", "step"],
)
def test_a_torch_scheduler_on_an_lr_shell_steps_as_on_a_real_optimizer(make):
    """build.LrShell holds a member's lr for its torch scheduler without torch's Optimizer
    machinery: the same lrs, epoch by epoch, and the same scheduler state as on an SGD."""
    real = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    shell = LrShell(0.1)
    schedulers = [make(real), make(shell)]
    real.step()
    shell.step()
    losses = [3.0, 2.0, 2.5, 2.6, 2.7, 1.0, 1.5, 1.6, 1.7, 1.8]
    for loss in losses:
        for scheduler in schedulers:
            plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
            scheduler.step(loss) if plateau else scheduler.step()
        assert shell.param_groups[0]["lr"] == real.param_groups[0]["lr"]
    assert real.param_groups[0]["lr"] < 0.1  # it did change
    assert schedulers[1].state_dict() == schedulers[0].state_dict()


def test_a_run_of_the_stacked_engine_never_imports_torch_dynamo(tmp_path):
    """Its import is 0.9 s of every command (build.LrShell): no member's optimizer, scheduler
    or state dict may bring it in. A fresh interpreter, as a command starts."""
    code = (
        "import sys\n"
        "from helpers import typed_config\n"
        "from vae_runner.training.runner import run\n"
        f"run(typed_config('epochs=2', 'scheduler=plateau', *{SMALL!r}), {str(tmp_path)!r})\n"
        "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
