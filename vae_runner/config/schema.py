"""The typed schema of every config group, and the range rules a YAML file cannot express.

The default values live in one place, the YAML files under conf/ (every field here is MISSING);
this module says what type each key has and which values are allowed. Range and cross-field
rules live in ``__post_init__`` and raise ``ConfigError`` naming the key and the fix; they run
when config.typed.to_typed builds these objects from a composed config.

Imports no torch: ``vae-train --help`` and ``--cfg job`` stay fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

from vae_runner.config.errors import ConfigError


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


# --------------------------------------------------------------------------- optimizer
@dataclass
class OptimizerConfig:
    name: str = MISSING
    weight_decay: float = MISSING

    def __post_init__(self) -> None:
        _require(
            self.weight_decay >= 0,
            f"optimizer.weight_decay must be >= 0 (got {self.weight_decay}); 0 to 1e-5 is usual",
        )


@dataclass
class AdamConfig(OptimizerConfig):
    name: str = MISSING
    # `shape`: what config.explain says when a value of another type is given (betas=0.9)
    betas: List[float] = field(
        default=MISSING,
        metadata={"shape": "a list of two numbers, e.g. optimizer.betas=[0.9,0.999]"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
            f"optimizer.betas must be two numbers in [0, 1) (got {list(self.betas)}); "
            "the usual value is optimizer.betas=[0.9,0.999]",
        )


@dataclass
class AdamWConfig(AdamConfig):
    name: str = MISSING
    weight_decay: float = MISSING


@dataclass
class SGDConfig(OptimizerConfig):
    name: str = MISSING
    momentum: float = MISSING
    nesterov: bool = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            0.0 <= self.momentum < 1.0,
            f"optimizer.momentum must be in [0, 1) (got {self.momentum}); "
            "the usual value is optimizer.momentum=0.9",
        )
        _require(
            not (self.nesterov and self.momentum == 0),
            "optimizer.nesterov=true needs optimizer.momentum > 0; set optimizer.momentum=0.9",
        )


# --------------------------------------------------------------------------- scheduler
@dataclass
class SchedulerConfig:
    name: str = MISSING


@dataclass
class PlateauConfig(SchedulerConfig):
    """ReduceLROnPlateau on the test loss (mode min)."""

    name: str = MISSING
    factor: float = MISSING
    patience: int = MISSING
    threshold: float = MISSING
    min_lr: float = MISSING

    def __post_init__(self) -> None:
        _require(
            0.0 < self.factor < 1.0,
            f"scheduler.factor must be in (0, 1) (got {self.factor}); the default is 0.5",
        )
        _require(
            self.patience >= 0,
            f"scheduler.patience must be >= 0 epochs (got {self.patience}); the default is 5",
        )
        _require(self.threshold >= 0, f"scheduler.threshold must be >= 0 (got {self.threshold})")
        _require(self.min_lr >= 0, f"scheduler.min_lr must be >= 0 (got {self.min_lr})")


@dataclass
class CosineConfig(SchedulerConfig):
    name: str = MISSING
    t_max: Optional[int] = MISSING
    eta_min: float = MISSING

    def __post_init__(self) -> None:
        _require(
            self.t_max is None or self.t_max >= 1,
            f"scheduler.t_max must be >= 1 epoch or null for the whole run (got {self.t_max})",
        )
        _require(self.eta_min >= 0, f"scheduler.eta_min must be >= 0 (got {self.eta_min})")


@dataclass
class StepConfig(SchedulerConfig):
    name: str = MISSING
    step_size: int = MISSING
    gamma: float = MISSING

    def __post_init__(self) -> None:
        _require(
            self.step_size >= 1, f"scheduler.step_size must be >= 1 epoch (got {self.step_size})"
        )
        _require(0.0 < self.gamma <= 1.0, f"scheduler.gamma must be in (0, 1] (got {self.gamma})")


@dataclass
class NoSchedulerConfig(SchedulerConfig):
    name: str = MISSING


# --------------------------------------------------------------------------- reduction
@dataclass
class ReductionConfig:
    """How a batch's loss is reduced (sum or mean): see training/losses.py."""

    name: str = MISSING


# --------------------------------------------------------------------------- annealing
# A bound far above any useful value (a latent dimension rarely carries 20 nats), and far below
# what overflows float32 once summed over a batch's dimensions.
MAX_FREE_BITS = 1000.0


@dataclass
class AnnealingConfig:
    name: str = MISSING
    # Free bits (Kingma et al. 2016): each latent dimension's batch-mean KL counts as at least
    # this many nats in the training loss; 0 turns it off. Works with every schedule.
    free_bits: float = MISSING

    def __post_init__(self) -> None:
        _require(
            math.isfinite(self.free_bits) and 0 <= self.free_bits <= MAX_FREE_BITS,
            f"annealing.free_bits must be in [0, {MAX_FREE_BITS:g}] nats per dimension (got "
            f"{self.free_bits}); 0 turns free bits off, 0.1 to 1 is usual",
        )


@dataclass
class LinearAnnealingConfig(AnnealingConfig):
    """The course's schedule: kl_weight = min(1, epoch / warmup_epochs) * beta."""

    name: str = MISSING
    warmup_epochs: int = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            self.warmup_epochs >= 0,
            f"annealing.warmup_epochs must be >= 0 (got {self.warmup_epochs}); "
            "0 means the full beta from the first epoch",
        )


@dataclass
class ConstantAnnealingConfig(AnnealingConfig):
    name: str = MISSING


@dataclass
class CyclicalAnnealingConfig(AnnealingConfig):
    """Fu et al. 2019: `cycles` ramps over the run, each rising for `ratio` of its length."""

    name: str = MISSING
    cycles: int = MISSING
    ratio: float = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.cycles >= 1, f"annealing.cycles must be >= 1 (got {self.cycles})")
        _require(
            0.0 < self.ratio <= 1.0,
            f"annealing.ratio must be in (0, 1] (got {self.ratio}); Fu et al. use 0.5",
        )


@dataclass
class SigmoidAnnealingConfig(AnnealingConfig):
    """Bowman et al. 2016: kl_weight = beta / (1 + exp(-steepness * (epoch - midpoint)))."""

    name: str = MISSING
    midpoint: float = MISSING
    steepness: float = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.midpoint >= 0, f"annealing.midpoint must be >= 0 (got {self.midpoint})")
        _require(self.steepness > 0, f"annealing.steepness must be > 0 (got {self.steepness})")


# --------------------------------------------------------------------------- device
@dataclass
class DeviceConfig:
    name: str = MISSING
    precision: str = MISSING  # fp32 | bf16 (autocast of the forward pass and the loss)
    compile: bool = MISSING  # torch.compile the model (CUDA: with CUDA graphs)
    graphs: bool = MISSING  # CUDA: the whole training step captured once as a CUDA graph
    threads: Optional[int] = (
        MISSING  # torch's CPU threads; null = torch's (or the launcher's) choice
    )

    def __post_init__(self) -> None:
        _require(
            self.precision in ("fp32", "bf16"),
            f"device.precision must be fp32 or bf16 (got {self.precision})",
        )
        _require(
            self.threads is None or self.threads >= 1,
            f"device.threads must be >= 1 or null (got {self.threads})",
        )
        # device=auto may land on a CPU: there graphs are a no-op, said in the run's warnings
        _require(
            not self.graphs or self.name not in ("cpu", "mps"),
            f"device.graphs=true needs CUDA, but device={self.name}; use device=cuda (or "
            "device=auto on a machine with a GPU), or device.graphs=false",
        )
        _require(
            not (self.graphs and self.compile),
            "device.graphs=true and device.compile=true both capture CUDA graphs of the training "
            "step; choose one: device.compile=false (graphs capture the whole step)",
        )


# --------------------------------------------------------------------------- data
DIGITS_IMAGES = 1797  # scikit-learn's digits
MNIST_TRAIN_IMAGES = 60000  # MNIST and Fashion-MNIST alike


@dataclass
class DataConfig:
    name: str = MISSING
    limit: Optional[int] = MISSING
    # a share of the training images held out as a validation split (the same images in every
    # run: a fixed seed), on which the run and the sweep choose; 0 = none (the course's loop)
    val_fraction: float = MISSING

    def __post_init__(self) -> None:
        _require(
            self.limit is None or self.limit >= 1,
            f"data.limit must be >= 1 or null for the whole training set (got {self.limit})",
        )
        _require(
            0.0 <= self.val_fraction < 1.0,
            f"data.val_fraction must be in [0, 1) (got {self.val_fraction}); 0.1 is usual, "
            "0 = no validation split",
        )
        full = self.full_train_size()
        n_val = self.val_size(full)
        _require(
            self.val_fraction == 0 or 1 <= n_val < full,
            f"data.val_fraction={self.val_fraction} leaves {n_val} validation images and "
            f"{full - n_val} training images of {full}: use a value in "
            f"[{1 / full:.4g}, {1 - 1 / full:.4g}], 0.1 is usual",
        )

    def full_train_size(self) -> int:
        raise NotImplementedError

    def val_size(self, full: int) -> int:
        """Validation images taken from `full` training images (images.load_data agrees)."""
        return round(full * self.val_fraction)

    def train_size(self) -> int:
        """Training images after the validation split, known before loading."""
        full = self.full_train_size()
        return full - self.val_size(full)


@dataclass
class DigitsDataConfig(DataConfig):
    """scikit-learn's bundled 8x8 digits: offline, 1797 images, a fixed train/test split."""

    name: str = MISSING
    test_fraction: float = MISSING

    def __post_init__(self) -> None:
        _require(
            0.0 < self.test_fraction < 1.0,
            f"data.test_fraction must be in (0, 1) (got {self.test_fraction})",
        )
        n_test = round(DIGITS_IMAGES * self.test_fraction)
        _require(
            1 <= n_test < DIGITS_IMAGES,
            f"data.test_fraction={self.test_fraction} leaves {n_test} test images and "
            f"{DIGITS_IMAGES - n_test} training images of {DIGITS_IMAGES}: use a value in "
            f"[{1 / DIGITS_IMAGES:.4f}, {1 - 1 / DIGITS_IMAGES:.4f}], 0.2 is usual",
        )
        super().__post_init__()  # the validation split, once the test split is known

    def full_train_size(self) -> int:
        """Training images, known before loading (data.py splits the same way)."""
        full = DIGITS_IMAGES - round(DIGITS_IMAGES * self.test_fraction)
        return min(full, self.limit) if self.limit else full


@dataclass
class MNISTDataConfig(DataConfig):
    """MNIST from local IDX files (see idx.py for where it looks), else torchvision's download."""

    name: str = MISSING
    # a folder of the four IDX files, relative to where vae-train was started; null = search
    root: Optional[str] = MISSING
    download: bool = MISSING  # let torchvision download when the files are found nowhere

    def full_train_size(self) -> int:
        return min(MNIST_TRAIN_IMAGES, self.limit) if self.limit else MNIST_TRAIN_IMAGES


@dataclass
class FashionMNISTDataConfig(MNISTDataConfig):
    """Fashion-MNIST; the same files and rules as MNIST."""


# --------------------------------------------------------------------------- likelihood
@dataclass
class LikelihoodConfig:
    name: str = MISSING


BINARIZE = ("none", "static", "dynamic")


@dataclass
class BernoulliLikelihoodConfig(LikelihoodConfig):
    """Binary cross-entropy on grey levels (the course's), optionally on binarised data."""

    name: str = MISSING
    binarize: str = MISSING  # none | static (thresholded once) | dynamic (resampled every epoch)

    def __post_init__(self) -> None:
        _require(
            self.binarize in BINARIZE,
            f"likelihood.binarize must be one of {', '.join(BINARIZE)} (got {self.binarize})",
        )


@dataclass
class GaussianLikelihoodConfig(LikelihoodConfig):
    """N(x | decoder mean, sigma^2 I): a squared-error decoder whose NLL is in nats."""

    name: str = MISSING
    variance: str = MISSING  # fixed | learned (one scalar sigma, starting at `sigma`)
    sigma: float = MISSING

    def __post_init__(self) -> None:
        _require(
            self.variance in ("fixed", "learned"),
            f"likelihood.variance must be fixed or learned (got {self.variance})",
        )
        _require(
            math.isfinite(self.sigma) and self.sigma > 0,
            f"likelihood.sigma must be > 0 (got {self.sigma}); 0.1 suits grey levels in [0, 1]",
        )


# --------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    name: str = MISSING
    latent_dim: int = MISSING

    def __post_init__(self) -> None:
        _require(self.latent_dim >= 1, f"model.latent_dim must be >= 1 (got {self.latent_dim})")


@dataclass
class MLPModelConfig(ModelConfig):
    """The course's and pytorch/examples' VAE: D -> hidden -> (mu, logvar) -> hidden -> D."""

    name: str = MISSING
    hidden_dim: int = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.hidden_dim >= 1, f"model.hidden_dim must be >= 1 (got {self.hidden_dim})")


@dataclass
class ConvModelConfig(ModelConfig):
    """A small convolutional VAE: two stride-2 convolutions each way (sides divisible by 4)."""

    name: str = MISSING
    channels: int = MISSING  # channels of the first convolution (the second has twice as many)
    hidden_dim: int = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.channels >= 1, f"model.channels must be >= 1 (got {self.channels})")
        _require(self.hidden_dim >= 1, f"model.hidden_dim must be >= 1 (got {self.hidden_dim})")


# --------------------------------------------------------------------------- logger
@dataclass
class LoggerConfig:
    name: str = MISSING


@dataclass
class NoLoggerConfig(LoggerConfig):
    """No viewer: history.json, the plots and the images are the record."""


@dataclass
class TensorBoardLoggerConfig(LoggerConfig):
    """Per-epoch scalars and image grids for TensorBoard, under the run directory."""

    log_dir: str = MISSING  # relative to the run directory

    def __post_init__(self) -> None:
        _require(bool(self.log_dir), "logger.log_dir must name a folder, e.g. tensorboard")


@dataclass
class MLflowLoggerConfig(LoggerConfig):
    """An MLflow run per run (a parent run per sweep), in an MLflow tracking store."""

    # null: $MLFLOW_TRACKING_URI when set, else report.tracking.DEFAULT_TRACKING_URI (a SQLite
    # file under outputs/). A relative sqlite:/// path is read from where vae-train started.
    tracking_uri: Optional[str] = None
    experiment: str = MISSING  # the MLflow experiment's name; made when it does not exist

    def __post_init__(self) -> None:
        _require(
            bool(self.experiment and self.experiment.strip()),
            "logger.experiment must name an MLflow experiment, e.g. logger.experiment=vae-runner",
        )
        _require(
            self.tracking_uri is None or bool(self.tracking_uri.strip()),
            "logger.tracking_uri is empty: give a store (sqlite:///outputs/mlflow.db, "
            "http://host:5000) or null for $MLFLOW_TRACKING_URI or the default",
        )


# --------------------------------------------------------------------------- evaluation
@dataclass
class EvalConfig:
    """The end-of-run evaluation (history.json's `final` section)."""

    # Samples per test image of the importance-weighted NLL estimate (Burda et al. 2015);
    # 0 skips it. Its cost is about iw_samples decoder passes per test image.
    iw_samples: int = MISSING

    def __post_init__(self) -> None:
        _require(
            self.iw_samples >= 0,
            f"eval.iw_samples must be >= 0 (got {self.iw_samples}); 0 skips the estimate",
        )


# --------------------------------------------------------------------------- early stopping
@dataclass
class EarlyStopConfig:
    """Stop a run once its selected loss (val_loss, else test_loss) has not improved by more
    than `min_delta` nats for `patience` epochs (training/early_stop.py)."""

    patience: Optional[int] = MISSING  # epochs; 0 or null = off
    min_delta: float = MISSING  # nats

    def __post_init__(self) -> None:
        _require(
            self.patience is None or self.patience >= 0,
            f"early_stop.patience must be >= 0 epochs or null (got {self.patience}); "
            "0 or null turns early stopping off, e.g. early_stop.patience=5",
        )
        _require(
            math.isfinite(self.min_delta) and self.min_delta >= 0,
            f"early_stop.min_delta must be a finite number >= 0 nats (got {self.min_delta}); "
            "0 counts any decrease as an improvement",
        )

    @property
    def on(self) -> bool:
        return bool(self.patience)


# --------------------------------------------------------------------------- top level
# Far more than any VAE run needs (the course trains 50), and small enough that a mistyped
# count (epochs=100000000000000000000) is refused instead of running for ever.
MAX_EPOCHS = 1_000_000
MAX_SEEDS = 1000  # a sweep's seeds per setting (the checked sweeper holds it to this too)


@dataclass
class Config:
    """The whole run. Short top-level knobs read like the course's hyper-parameter table."""

    optimizer: Any = MISSING  # one of GROUP_SCHEMAS['optimizer'], chosen by its `name`
    scheduler: Any = MISSING  # one of GROUP_SCHEMAS['scheduler'], chosen by its `name`
    reduction: Any = MISSING  # one of GROUP_SCHEMAS['reduction'], chosen by its `name`
    annealing: Any = MISSING  # one of GROUP_SCHEMAS['annealing'], chosen by its `name`
    device: Any = MISSING  # one of GROUP_SCHEMAS['device'], chosen by its `name`
    data: Any = MISSING  # one of GROUP_SCHEMAS['data'], chosen by its `name`
    model: Any = MISSING  # one of GROUP_SCHEMAS['model'], chosen by its `name`
    likelihood: Any = MISSING  # one of GROUP_SCHEMAS['likelihood'], chosen by its `name`
    logger: Any = MISSING  # one of GROUP_SCHEMAS['logger'], chosen by its `name`
    eval: EvalConfig = MISSING
    early_stop: EarlyStopConfig = MISSING

    lr: float = MISSING
    beta: float = MISSING
    epochs: int = MISSING
    batch_size: int = MISSING
    seed: int = MISSING
    # a sweep's seeds per setting (seed=0..seeds-1), read by the checked sweeper; null: one
    seeds: Optional[int] = None
    grad_clip: Optional[float] = MISSING
    # KL per latent dimension (nats, test-set mean) above which a dimension counts as active
    active_threshold: float = MISSING
    plot_every: int = MISSING  # also write image grids every N epochs under images/; 0 = at the end
    # false: no image grids and no plots for this run (CI smoke runs, large sweeps); the
    # record is whole without them, and `vae-plot RUN_DIR` draws the plots later
    pictures: bool = MISSING
    on_divergence: str = MISSING  # fail (exit 3) | stop (exit 0); the status says diverged
    resume: Optional[str] = MISSING  # a run directory to continue from its checkpoints/last.pt

    def __post_init__(self) -> None:
        _require(
            math.isfinite(self.lr) and self.lr > 0,
            f"lr must be a finite number > 0 (got {self.lr}); 1e-4 to 1e-3 is usual, e.g. lr=1e-3",
        )
        _require(
            math.isfinite(self.beta) and self.beta >= 0,
            f"beta must be a finite number >= 0 (got {self.beta}); a plain VAE uses beta=1.0",
        )
        _require(
            1 <= self.epochs <= MAX_EPOCHS,
            f"epochs must be from 1 to {MAX_EPOCHS} (got {self.epochs}); 50 is the course's",
        )
        _require(
            self.seeds is None or 1 <= self.seeds <= MAX_SEEDS,
            f"seeds must be a count from 1 to {MAX_SEEDS} (got {self.seeds}), e.g. seeds=3",
        )
        _require(
            0 <= self.seed < 2**63,
            f"seed must be in [0, 2**63) (got {self.seed}): torch's generators take 64 bits",
        )
        _require(
            self.batch_size >= 1,
            f"batch_size must be >= 1 (got {self.batch_size}); the default is 128",
        )
        _require(
            self.grad_clip is None or self.grad_clip >= 0,
            f"grad_clip must be >= 0 (got {self.grad_clip}); 0 or null disables clipping, "
            "1.0 to 5.0 is usual",
        )
        train_size = self.data.train_size()
        _require(
            self.batch_size <= train_size,
            f"batch_size={self.batch_size} is larger than the training set ({train_size} images "
            f"of data={self.data.name}); use batch_size<={train_size}",
        )
        _require(
            self.plot_every >= 0,
            f"plot_every must be >= 0 epochs (got {self.plot_every}); 0 = images at the end only",
        )
        _require(
            self.on_divergence in ("fail", "stop"),
            f"on_divergence must be fail or stop (got {self.on_divergence})",
        )
        _require(
            self.active_threshold >= 0,
            f"active_threshold must be >= 0 nats (got {self.active_threshold})",
        )

    @property
    def clip_norm(self) -> Optional[float]:
        """The max-norm to clip to, or None when clipping is off (grad_clip 0 or null)."""
        return self.grad_clip if self.grad_clip else None


# Each group's schemas by `name`: the YAML option conf/<group>/<file>.yaml says which one it is with
# its `name` key, so a user's own preset (`-cd DIR`, `optimizer/mine.yaml` with `name: adam`)
# is typed like the shipped one. Adding an option: its schema here, its YAML, its builder.
GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "optimizer": {"adam": AdamConfig, "adamw": AdamWConfig, "sgd": SGDConfig},
    "scheduler": {
        "plateau": PlateauConfig,
        "cosine": CosineConfig,
        "step": StepConfig,
        "none": NoSchedulerConfig,
    },
    "reduction": {"sum": ReductionConfig, "mean": ReductionConfig},
    "annealing": {
        "linear": LinearAnnealingConfig,
        "constant": ConstantAnnealingConfig,
        "cyclical": CyclicalAnnealingConfig,
        "sigmoid": SigmoidAnnealingConfig,
    },
    "device": {
        "auto": DeviceConfig,
        "cpu": DeviceConfig,
        "cuda": DeviceConfig,
        "mps": DeviceConfig,
    },
    "data": {
        "digits": DigitsDataConfig,
        "mnist": MNISTDataConfig,
        "fashion_mnist": FashionMNISTDataConfig,
    },
    "model": {"mlp": MLPModelConfig, "conv": ConvModelConfig},
    "likelihood": {"bernoulli": BernoulliLikelihoodConfig, "gaussian": GaussianLikelihoodConfig},
    "logger": {
        "none": NoLoggerConfig,
        "tensorboard": TensorBoardLoggerConfig,
        "mlflow": MLflowLoggerConfig,
    },
}


def register_configs() -> None:
    """Put the top-level schema in Hydra's ConfigStore (idempotent; before Hydra composes).

    Only the top level is typed while Hydra composes (`lr=abc` and `+misspelt=1` fail there).
    The groups' schemas are applied by config.typed.to_typed: as config groups of their own
    they would show in `--help` and in tab completion as options nobody should choose.
    """
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="base_config", node=Config)
