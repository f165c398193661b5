"""Every option of every config group composes and builds; every bad input fails clearly."""

from __future__ import annotations

from importlib import resources

import pytest
import torch

from vae_runner.config.errors import ConfigError
from vae_runner.config.schema import GROUP_SCHEMAS, Config
from vae_runner.config.typed import to_typed
from vae_runner.report.logger_choice import build_logger
from vae_runner.training.build import (
    build_device,
    build_model,
    build_optimizer,
    build_scheduler,
)

from helpers import help_text, one_line, typed_config

GROUPS = (
    "optimizer",
    "scheduler",
    "reduction",
    "annealing",
    "device",
    "data",
    "model",
    "likelihood",
    "logger",
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
def test_every_option_composes_and_builds(group, option, tmp_path):
    cfg = typed_config(f"{group}={option}")
    assert isinstance(cfg, Config)
    chosen = getattr(cfg, group)
    assert chosen.name == option
    assert type(chosen) is GROUP_SCHEMAS[group][option]
    if group == "logger":
        logger = build_logger(cfg.logger, tmp_path)  # what it logs: test_tracking, e2e tests
        names = {"none": "NoLogger", "tensorboard": "TensorBoardLogger", "mlflow": "MLflowLogger"}
        assert type(logger).__name__ == names[option]
        return

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
    build_scheduler(cfg.scheduler, optimizer)
    assert optimizer.param_groups[0]["lr"] == cfg.lr


def test_optimizer_options_build_the_right_torch_classes():
    params = [torch.nn.Parameter(torch.zeros(2))]
    adamw = build_optimizer(typed_config("optimizer=adamw").optimizer, params, 1e-4)
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 1e-2
    sgd = typed_config("optimizer=sgd", "optimizer.nesterov=true").optimizer
    sgd_opt = build_optimizer(sgd, params, 0.1)
    assert type(sgd_opt) is torch.optim.SGD
    assert sgd_opt.defaults["momentum"] == 0.9 and sgd_opt.defaults["nesterov"] is True
    adam = build_optimizer(typed_config().optimizer, params, 1e-3)
    assert type(adam) is torch.optim.Adam and adam.defaults["betas"] == (0.9, 0.999)


def test_scheduler_options_build_the_right_torch_classes():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler
    plateau = build_scheduler(typed_config("scheduler.min_lr=1e-6").scheduler, opt)
    assert isinstance(plateau, sched.ReduceLROnPlateau) and plateau.min_lrs == [1e-6]
    assert plateau.factor == 0.5 and plateau.patience == 5 and plateau.mode == "min"
    # cosine keeps no state: its lr is a pure function of the epoch (tests/test_schedules.py)
    assert build_scheduler(typed_config("scheduler=cosine").scheduler, opt) is None
    step = build_scheduler(typed_config("scheduler=step").scheduler, opt)
    assert isinstance(step, sched.StepLR) and step.step_size == 10 and step.gamma == 0.5
    assert build_scheduler(typed_config("scheduler=none").scheduler, opt) is None


# ---------------------------------------------------------------- bad input, as vae-train says it
# The words the issue asks for (issue 23), not OmegaConf's "AnyNode is not a ListConfig".
BETAS_SHAPE = "optimizer.betas must be a list of two numbers, e.g. optimizer.betas=[0.9,0.999]"


@pytest.mark.parametrize(
    "overrides, line",
    [
        # compose-time: Hydra types the top level and refuses unknown keys and options
        (["lr=abc"], "lr: Value 'abc' of type 'str' could not be converted to Float"),
        (["epochs=1.5"], "epochs: Value '1.5' of type 'float' could not be converted to Integer"),
        (["Lr=1e-3"], "Lr is not a key of the config (did you mean lr?)"),
        (["lrr=1e-3"], "lrr is not a key of the config (did you mean lr?)"),
        (["betas=[0.9,0.9]"], "(did you mean optimizer.betas with optimizer=adam or adamw?)"),
        (["iw_samples=5"], "(did you mean eval.iw_samples?)"),
        (["optimizer.betaz=[0.9,0.9]"], "optimizer.betaz is not a key of optimizer (did you mean"),
        (
            ["optimizer=foo"],
            "optimizer=foo is not an option of optimizer: choose one of adam, adamw, sgd",
        ),
        (
            ["reduction=median"],
            "reduction=median is not an option of reduction: choose one of mean, sum",
        ),
        (["hydra/launcher=nope"], "hydra/launcher=nope is not an option of hydra/launcher"),
        # typing each group by its schema
        (["+misspelt_key=1"], "misspelt_key is not a key of the config"),
        (["+optimizer.momentum=0.5"], "optimizer.momentum is not a key of optimizer: its keys are"),
        (["optimizer.name=sgd"], "optimizer.betas is not a key of optimizer"),
        (
            ["optimizer.name=lion"],
            "optimizer.name=lion is not a known optimizer: a optimizer option's",
        ),
        (["reduction.name=median"], "reduction.name=median is not a known reduction"),
        (["device.name=tpu"], "device.name=tpu is not a known device"),
        # a value of the wrong shape: what the key holds, not OmegaConf's node types
        (["optimizer.betas=0.9"], BETAS_SHAPE),
        (["optimizer.betas=abc"], BETAS_SHAPE),
        (["optimizer.betas={a:1}"], BETAS_SHAPE),
        (["optimizer.betas=[a,b]"], BETAS_SHAPE),
        (["optimizer=adamw", "optimizer.betas=0.9"], BETAS_SHAPE),
        # range rules (__post_init__)
        (["lr=-1"], "lr must be a finite number > 0 (got -1.0)"),
        (["lr=0"], "lr must be a finite number > 0"),
        (["epochs=0"], "epochs must be from 1 to 1000000 (got 0)"),
        # a mistyped count is refused, not run for ever
        (["epochs=100000000000000000000"], "epochs must be from 1 to 1000000 (got 1000000000"),
        (["batch_size=0"], "batch_size must be >= 1 (got 0)"),
        (["batch_size=5000"], "batch_size=5000 is larger than the training set (1438 images"),
        (["beta=-1"], "beta must be a finite number >= 0 (got -1.0)"),
        (["grad_clip=-1"], "grad_clip must be >= 0 (got -1.0)"),
        (["annealing.warmup_epochs=-1"], "annealing.warmup_epochs must be >= 0 (got -1)"),
        (["optimizer.betas=[0.9,1.5]"], "optimizer.betas must be two numbers in [0, 1)"),
        (["optimizer.weight_decay=-1"], "optimizer.weight_decay must be >= 0"),
        (["optimizer=sgd", "optimizer.momentum=0", "optimizer.nesterov=true"], "nesterov"),
        (["scheduler.patience=-1"], "scheduler.patience must be >= 0"),
        (["scheduler.factor=1.5"], "scheduler.factor must be in (0, 1)"),
        (["scheduler=cosine", "scheduler.t_max=0"], "scheduler.t_max must be >= 1"),
        (["scheduler=step", "scheduler.gamma=0"], "scheduler.gamma must be in (0, 1]"),
        (["annealing=cyclical", "annealing.cycles=0"], "annealing.cycles must be >= 1"),
        (["annealing=cyclical", "annealing.ratio=0"], "annealing.ratio must be in (0, 1]"),
        (["annealing=sigmoid", "annealing.steepness=0"], "annealing.steepness must be > 0"),
        (["data.limit=0"], "data.limit must be >= 1"),
        (["model.latent_dim=0"], "model.latent_dim must be >= 1"),
        (["logger=tensorboard", "logger.log_dir="], "logger.log_dir must name a folder"),
        # values that used to pass every check and crash mid-run (issue 13)
        (["annealing.free_bits=1e300"], "annealing.free_bits must be in [0, 1000] nats"),
        (["seed=100000000000000000000"], "seed must be in [0, 2**63) (got 100000000000000000000)"),
        (["seed=-1"], "seed must be in [0, 2**63)"),
        (["data.test_fraction=0.0001"], "data.test_fraction=0.0001 leaves 0 test images"),
        (["data.test_fraction=0.9999"], "leaves 1797 test images and 0 training images"),
        # keys removed or added the wrong way
        (["~lr"], "lr has no value (removed with ~lr?): every run needs one; give it as lr="),
        (["~model.latent_dim"], "model.latent_dim has no value (removed with ~model.latent_dim?)"),
        (["+lr=1e-2"], "An item is already at 'lr'. Either remove + prefix: 'lr=1e-2'"),
    ],
)
def test_bad_input_is_one_line_naming_the_key(overrides, line):
    said = one_line(*overrides)
    assert said is not None and line in said
    assert "\n" not in said


def test_grad_clip_zero_or_null_disables_clipping():
    assert typed_config("grad_clip=0").clip_norm is None
    assert typed_config("grad_clip=null").clip_norm is None
    assert typed_config("grad_clip=2.5").clip_norm == 2.5


def test_help_lists_the_groups_found_on_the_search_path(tmp_path):
    """Hydra's $APP_CONFIG_GROUPS: every shipped option, a user's own presets, no schema group."""
    (tmp_path / "optimizer").mkdir()
    (tmp_path / "optimizer" / "mine.yaml").write_text("name: adam\nbetas: [0.5, 0.9]\n")
    text = help_text(f"--config-dir={tmp_path}")
    for group, option in shipped_options():
        line = next(x for x in text.splitlines() if x.startswith(f"{group}:"))
        assert option in line
    assert "mine" in next(x for x in text.splitlines() if x.startswith("optimizer:"))
    assert "schema" not in text and "base_config" not in text


@pytest.mark.parametrize("group, option", shipped_options())
def test_a_saved_config_rebuilds_exactly_for_resume(group, option):
    from dataclasses import asdict

    cfg = typed_config(f"{group}={option}")
    assert to_typed(asdict(cfg)) == cfg


@pytest.mark.parametrize(
    "args, hint",
    [
        (
            ["data=digits", "-m", "lr=1e-3,1e-4"],
            "-m comes between settings: put Hydra's flags first",
        ),
        (["epochs=2", "--multirun", "lr=1"], "--multirun comes between settings"),
        (["--lr", "1e-3"], "settings are key=value arguments without dashes"),
        (["epochs=2", "--lr", "1e-3"], "settings are key=value arguments without dashes"),
        (["epochs=2", "-m"], "settings are key=value arguments without dashes"),  # -m last works
    ],
)
def test_a_refused_command_line_gets_the_likely_fix(args, hint):
    from vae_runner.cli.train import _usage_hint

    assert _usage_hint(args).startswith(hint)
