"""Every option of every config group composes and builds; every bad input fails clearly."""

from __future__ import annotations

from importlib import resources

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from vae_runner.app import to_typed
from vae_runner.build import (
    build_device,
    build_model,
    build_optimizer,
    build_scheduler,
)
from vae_runner.config import GROUP_SCHEMAS, Config, ConfigError

from helpers import compose_config, typed_config

GROUPS = (
    "optimizer",
    "scheduler",
    "reduction",
    "annealing",
    "device",
    "data",
    "model",
    "likelihood",
)


def shipped_options() -> list[tuple[str, str]]:
    """(group, option) for every YAML file in the installed conf/ package."""
    conf = resources.files("vae_runner.conf")
    return sorted(
        (group, entry.name.removesuffix(".yaml"))
        for group in GROUPS
        for entry in conf.joinpath(group).iterdir()
        if entry.name.endswith(".yaml")
    )


def test_every_group_ships_options():
    groups = {group for group, _ in shipped_options()}
    assert groups == set(GROUPS)
    assert len(shipped_options()) >= 23


def test_defaults_are_the_issue_s_public_interface():
    cfg = typed_config()
    assert (cfg.lr, cfg.beta, cfg.epochs, cfg.batch_size, cfg.seed, cfg.grad_clip) == (
        1e-3,
        1.0,
        50,
        128,
        0,
        1.0,
    )
    assert cfg.optimizer.name == "adam" and list(cfg.optimizer.betas) == [0.9, 0.999]
    assert (cfg.scheduler.name, cfg.scheduler.factor, cfg.scheduler.patience) == ("plateau", 0.5, 5)
    assert cfg.reduction.name == "sum"
    assert (cfg.annealing.name, cfg.annealing.warmup_epochs) == ("linear", 10)
    assert cfg.device.name == "auto" and cfg.data.name == "digits"
    assert (cfg.model.name, cfg.model.hidden_dim, cfg.model.latent_dim) == ("mlp", 400, 20)


@pytest.mark.parametrize("group, option", shipped_options())
def test_every_option_composes_and_builds(group, option):
    cfg = typed_config(f"{group}={option}")
    assert isinstance(cfg, Config)
    chosen = getattr(cfg, group)
    assert chosen.name == option
    if group in ("reduction", "device"):
        assert option in ("sum", "mean", "auto", "cpu", "cuda", "mps")
    else:
        assert type(chosen) is GROUP_SCHEMAS[group][option]

    if group == "device" and option in ("cuda", "mps"):
        available = (
            torch.cuda.is_available() if option == "cuda" else torch.backends.mps.is_available()
        )
        if not available:
            with pytest.raises(
                ConfigError, match=f"device={option}.*use device=auto or device=cpu"
            ):
                build_device(cfg.device)
            return
    device = build_device(cfg.device)
    model = build_model(cfg.model, cfg.likelihood, (1, 8, 8)).to(device)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    build_scheduler(cfg.scheduler, optimizer, cfg.epochs)
    assert optimizer.param_groups[0]["lr"] == cfg.lr


def test_optimizer_options_build_the_right_torch_classes():
    params = [torch.nn.Parameter(torch.zeros(2))]
    adamw = build_optimizer(typed_config("optimizer=adamw").optimizer, params, 1e-4)
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 1e-5
    sgd = typed_config("optimizer=sgd", "optimizer.nesterov=true").optimizer
    sgd_opt = build_optimizer(sgd, params, 0.1)
    assert type(sgd_opt) is torch.optim.SGD
    assert sgd_opt.defaults["momentum"] == 0.9 and sgd_opt.defaults["nesterov"] is True
    adam = build_optimizer(typed_config().optimizer, params, 1e-3)
    assert type(adam) is torch.optim.Adam and adam.defaults["betas"] == (0.9, 0.999)


def test_scheduler_options_build_the_right_torch_classes():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler
    plateau = build_scheduler(typed_config("scheduler.min_lr=1e-6").scheduler, opt, 10)
    assert isinstance(plateau, sched.ReduceLROnPlateau) and plateau.min_lrs == [1e-6]
    assert plateau.factor == 0.5 and plateau.patience == 5 and plateau.mode == "min"
    cosine = build_scheduler(typed_config("scheduler=cosine").scheduler, opt, 7)
    assert isinstance(cosine, sched.CosineAnnealingLR) and cosine.T_max == 7
    step = build_scheduler(typed_config("scheduler=step").scheduler, opt, 7)
    assert isinstance(step, sched.StepLR) and step.step_size == 10 and step.gamma == 0.5
    assert build_scheduler(typed_config("scheduler=none").scheduler, opt, 7) is None


# ---------------------------------------------------------------- errors Hydra raises at compose
@pytest.mark.parametrize(
    "override, words",
    [
        ("lr=abc", ["lr", "could not be converted to Float"]),
        ("epochs=1.5", ["epochs", "could not be converted to Integer"]),
        ("optimizer.momentum=0.9", ["Key 'momentum' not in 'AdamConfig'"]),
        ("optimizer.betaz=[0.9,0.9]", ["Key 'betaz' not in 'AdamConfig'"]),
        ("lrr=1e-3", ["Key 'lrr' not in 'Config'", "full_key: lrr"]),
    ],
)
def test_compose_rejects_types_and_misspelt_keys(override, words):
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(override)
    message = f"{info.value} {info.value.__cause__}"
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "override, options",
    [("optimizer=foo", "adam, adamw, sgd"), ("reduction=median", "mean, sum")],
)
def test_compose_rejects_unknown_options_and_lists_the_choices(override, options):
    group = override.split("=")[0]
    with pytest.raises(Exception) as info:
        compose_config(override)
    message = str(info.value)
    assert f"Could not find '{group}/{override.split('=')[1]}'" in message
    for option in options.split(", "):
        assert f"\t{option}\n" in message + "\n"
    listed = message.split("Available options")[1].split("Config search path")[0]
    assert "schema" not in listed and "base" not in listed  # the typed schemas are not options


# ---------------------------------------------------------------- errors of the typed checks
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["+misspelt_key=1"], "unknown config key misspelt_key"),
        (["+optimizer.momentum=0.5"], "unknown config key optimizer.momentum"),
        (["lr=-1"], "lr must be a finite number > 0 (got -1.0)"),
        (["lr=0"], "lr must be a finite number > 0"),
        (["epochs=0"], "epochs must be >= 1 (got 0)"),
        (["batch_size=0"], "batch_size must be >= 1 (got 0)"),
        (["beta=-1"], "beta must be a finite number >= 0 (got -1.0)"),
        (["grad_clip=-1"], "grad_clip must be >= 0 (got -1.0)"),
        (["annealing.warmup_epochs=-1"], "annealing.warmup_epochs must be >= 0 (got -1)"),
        (["optimizer.betas=[0.9,1.5]"], "optimizer.betas must be two numbers in [0, 1)"),
        (["optimizer.weight_decay=-1"], "optimizer.weight_decay must be >= 0"),
        (["optimizer=sgd", "optimizer.momentum=0", "optimizer.nesterov=true"], "nesterov"),
        (["optimizer.name=sgd"], "use optimizer=sgd instead of optimizer.name=sgd"),
        (["scheduler.patience=-1"], "scheduler.patience must be >= 0"),
        (["scheduler.factor=1.5"], "scheduler.factor must be in (0, 1)"),
        (["scheduler=cosine", "scheduler.t_max=0"], "scheduler.t_max must be >= 1"),
        (["scheduler=step", "scheduler.gamma=0"], "scheduler.gamma must be in (0, 1]"),
        (["annealing=cyclical", "annealing.cycles=0"], "annealing.cycles must be >= 1"),
        (["annealing=cyclical", "annealing.ratio=0"], "annealing.ratio must be in (0, 1]"),
        (["annealing=sigmoid", "annealing.steepness=0"], "annealing.steepness must be > 0"),
        (["reduction.name=median"], "reduction.name must be sum or mean"),
        (["device.name=tpu"], "device.name must be one of auto, cpu, cuda, mps"),
        (["data.limit=0"], "data.limit must be >= 1"),
        (["model.latent_dim=0"], "model.latent_dim must be >= 1"),
    ],
)
def test_typed_checks_name_the_key_and_the_fix(overrides, message):
    with pytest.raises(ConfigError) as info:
        to_typed(compose_config(*overrides))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_grad_clip_zero_or_null_disables_clipping():
    assert typed_config("grad_clip=0").clip_norm is None
    assert typed_config("grad_clip=null").clip_norm is None
    assert typed_config("grad_clip=2.5").clip_norm == 2.5


def test_schema_errors_are_omegaconf_errors_not_crashes():
    # compose-time errors carry the full key (Hydra prints it without a traceback)
    with pytest.raises(ConfigCompositionException) as info:
        compose_config("batch_size=big")
    assert isinstance(info.value.__cause__, (ValidationError, ConfigKeyError))
    assert "full_key: batch_size" in str(info.value.__cause__)


def test_help_lists_every_shipped_option():
    import yaml

    help_cfg = yaml.safe_load(
        resources.files("vae_runner.conf").joinpath("hydra/help/vae_train.yaml").read_text()
    )
    listed = {}
    for line in help_cfg["template"].splitlines():
        group, _, options = line.partition(":")
        if group.strip() in GROUPS:
            listed[group.strip()] = {o.strip() for o in options.split(",")}
    shipped: dict[str, set[str]] = {}
    for group, option in shipped_options():
        shipped.setdefault(group, set()).add(option)
    assert listed == shipped


@pytest.mark.parametrize("group, option", shipped_options())
def test_a_saved_config_rebuilds_exactly_for_resume(group, option):
    from dataclasses import asdict

    from vae_runner.resume import config_from_dict

    cfg = typed_config(f"{group}={option}")
    assert config_from_dict(asdict(cfg)) == cfg
