"""The training engine: M members of one shape trained as one stacked model (M = 1: one run).

It knows nothing of run directories, records or loggers (training/run_record.py): it trains one
epoch with a KL weight per member and gives each member's sums, evaluates, and hands out or takes
up one member's state (model, optimizer, scheduler, random generators) in a single run's format.

Per member, and never shared: initialisation from its seed, batch order and noise (its own
generators: training/noise.py), gradient-norm clipping, the optimizer's step with its own
hyper-parameters (training/stacked_optim.py), its learning-rate schedule (a real torch scheduler
on a "shell" that holds only the member's lr, build.LrShell, whose lr is copied into the stack
each epoch, so its state is a single run's), its KL weight, and whether it trains at all this
epoch (`active`: a member stopped early, diverged, or still waiting to reach the stack's epoch
does not move).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from vae_runner.config.schema import Config
from vae_runner.data.images import ImageData
from vae_runner.training.build import LrShell, build_model, build_scheduler, step_scheduler
from vae_runner.training.epoch import EpochSums, TestSums, TrainSums, evaluate, train_step
from vae_runner.training.graphed_step import GraphedTraining
from vae_runner.training.model import VAE
from vae_runner.training.noise import Noise, SeededNoise
from vae_runner.training.stacked_model import (
    load_member_state_dict,
    member_state_dict,
    stack_models,
)
from vae_runner.training.stacked_optim import StackedOptimizer


def seeded_model(cfg: Config, image_shape: tuple[int, ...]) -> VAE:
    """The model a run with `cfg` starts from: initialised from its seed, as a fork of torch's
    global RNG, which is left as it was (the init is the one runs have always had)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_model(cfg.model, cfg.likelihood, image_shape)


@dataclass
class Engine:
    cfgs: list[Config]  # one per member; equal in the stack key (sweep.stacks)
    device: torch.device
    data: ImageData
    model: VAE  # the stacked model (training/stacked_model.py)
    optimizer: StackedOptimizer
    shells: list[LrShell]  # per member: what its scheduler steps (its lr)
    schedulers: list[Any]  # per member: a torch scheduler, or None
    shuffles: list[torch.Generator]  # per member: its batch order (CPU), seeded by its seed
    noise: Noise
    train_model: Callable  # what the training step calls: `model`, or its torch.compile'd form
    dtype: torch.dtype = torch.float32
    graphed: Any = None  # a GraphedTraining (device.graphs on CUDA) that trains the epochs
    _max_norms: torch.Tensor = field(init=False)
    _free_bits: torch.Tensor | None = field(init=False)
    _params: list[torch.Tensor] = field(init=False)

    def __post_init__(self) -> None:
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        norms = [cfg.clip_norm if cfg.clip_norm is not None else math.inf for cfg in self.cfgs]
        self._max_norms = torch.tensor(norms, device=self.device, dtype=self.dtype)
        bits = [cfg.annealing.free_bits for cfg in self.cfgs]
        self._free_bits = (
            torch.tensor(bits, device=self.device, dtype=self.dtype) if any(bits) else None
        )

    @property
    def members(self) -> int:
        return len(self.cfgs)

    # -- one epoch -----------------------------------------------------------------------------

    def train_epoch(
        self, kl_weights: list[float], active: list[bool], progress=None, stop=None
    ) -> list[TrainSums]:
        """One pass over the training set for every active member; the others do not move."""
        if self.graphed is not None:  # device.graphs on CUDA: training/graphed_step.py
            return self.graphed.train_epoch(kl_weights, active, progress, stop)
        cfg, data = self.cfgs[0], self.data
        self.model.train()
        device = data.train.device
        kl_w = torch.tensor(kl_weights, device=device, dtype=self.dtype)
        mask = None if all(active) else torch.tensor(active, device=device)
        batches = self.batch_orders(active).split(cfg.batch_size, dim=1)
        sums = EpochSums(self.members, device, self.dtype)
        bf16 = cfg.device.precision == "bf16"
        # Without bf16 no autocast context at all: a disabled one still makes eight calls into
        # torch per step, and in a stack trained in threads each is a turn at the GIL.
        autocast = partial(torch.autocast, device.type, torch.bfloat16) if bf16 else nullcontext
        binarize = partial(self._binarize, active)
        step = partial(self.optimizer.step, active)  # the list: no host read of a mask per step
        for index in batches:
            if stop is not None:
                stop.check()  # a requested stop ends the stack here, at a batch boundary
            train_step(
                self, index, binarize, active, mask, kl_w, sums, self.train_model, step, autocast
            )
            if progress is not None:
                progress.advance()
        return sums.read(len(data.train), len(batches))

    def batch_orders(self, active: list[bool]) -> torch.Tensor:
        """Each member's own order of the training set ([M, N], on the data's device); a member
        sitting out keeps its generator where it is."""
        n = len(self.data.train)
        orders = [
            torch.randperm(n, generator=g) if a else torch.arange(n)
            for g, a in zip(self.shuffles, active, strict=True)
        ]
        return torch.stack(orders).to(self.data.train.device)

    def _binarize(self, active: list[bool], probs: torch.Tensor) -> torch.Tensor:
        """Dynamic binarisation of a stack's batch ([M*B, ...]), each member with its own draws;
        a member sitting out draws nothing: its generator stays where it is."""
        parts = probs.chunk(self.members)
        draws = [self.noise.bernoulli(j, p) if active[j] else p for j, p in enumerate(parts)]
        return torch.cat(draws)

    def evaluate(self, active: list[bool], split: str = "test") -> list[TestSums]:
        return evaluate(self.model, self.data, self.cfgs[0].batch_size, self.noise, active, split)

    # -- learning rates --------------------------------------------------------------------------

    def lr(self, member: int) -> float:
        return self.optimizer.get_lr(member)

    def set_lr(self, member: int, lr: float) -> None:
        self.optimizer.set_lr(member, lr)
        self.shells[member].param_groups[0]["lr"] = lr

    def step_scheduler(self, member: int, watched_loss: float) -> None:
        """Advance member's scheduler one epoch on the loss it selects on; its new lr goes into
        the stack."""
        step_scheduler(self.schedulers[member], watched_loss)
        self.optimizer.set_lr(member, self.shells[member].param_groups[0]["lr"])

    # -- one member's state, in a single run's format ----------------------------------------------

    def member_state(self, member: int) -> dict[str, Any]:
        """model, optimizer, scheduler and rng, as a single run's checkpoint holds them."""
        scheduler = self.schedulers[member]
        rng = {"shuffle": self.shuffles[member].get_state(), **self.noise.state(member)}
        return dict(
            model=member_state_dict(self.model, member),
            optimizer=self.optimizer.member_state_dict(member),
            scheduler=scheduler.state_dict() if scheduler is not None else None,
            rng=rng,
        )

    def load_member(self, member: int, checkpoint: dict[str, Any]) -> None:
        """Take up a single run's checkpoint (model, optimizer, scheduler, rng) as `member`."""
        load_member_state_dict(self.model, member, checkpoint["model"])
        self.optimizer.load_member_state_dict(member, checkpoint["optimizer"])
        self.shells[member].param_groups[0]["lr"] = self.optimizer.get_lr(member)
        scheduler = self.schedulers[member]
        if scheduler is not None and checkpoint["scheduler"] is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        rng = checkpoint["rng"]
        self.shuffles[member].set_state(rng["shuffle"])
        self.noise.restore(member, rng)

    def member_model(self, member: int, weights: dict[str, Any] | None = None) -> VAE:
        """A plain model holding member's weights (for the final estimate and the pictures):
        the stack's, or `weights` (its state_dict, from the process that trains it)."""
        cfg = self.cfgs[member]
        model = build_model(cfg.model, cfg.likelihood, self.data.image_shape)
        model.load_state_dict(member_state_dict(self.model, member) if weights is None else weights)
        return model.to(self.device, self.dtype).eval()

    def release_training_state(self) -> None:
        """Give back what only training needed, once the last checkpoints hold it (see
        run_record.release_training_state)."""
        self.graphed = None  # its graphs hold the optimizer's state and the training set
        self.data = self.data.without_train()
        self.optimizer.clear_state()
        self.optimizer.zero_grad()


def build_engine(
    cfgs: list[Config],
    data: ImageData,
    device: torch.device,
    noise: Noise | None = None,
    dtype: torch.dtype = torch.float32,
) -> Engine:
    """The engine for `cfgs` (equal in the stack key) on `data`, already on `device`."""
    models = [seeded_model(cfg, data.image_shape) for cfg in cfgs]
    model = stack_models(models).to(device=device, dtype=dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = StackedOptimizer(params, [c.optimizer for c in cfgs], [c.lr for c in cfgs])
    shells, schedulers = [], []
    for cfg in cfgs:
        shell = LrShell(cfg.lr)
        shells.append(shell)
        schedulers.append(build_scheduler(cfg.scheduler, shell))
        shell.step()  # a no-op that tells torch's scheduler the optimizer has stepped
    shuffles = [torch.Generator().manual_seed(cfg.seed) for cfg in cfgs]
    noise = noise or SeededNoise([cfg.seed for cfg in cfgs], device)
    train_model = model
    if cfgs[0].device.compile:
        # On CUDA, "reduce-overhead" also captures CUDA graphs: the launch cost of a small
        # model's many kernels is what bounds it there. Evaluation and checkpoints use `model`.
        mode = "reduce-overhead" if device.type == "cuda" else "default"
        train_model = torch.compile(model, mode=mode)
    engine = Engine(
        cfgs,
        device,
        data,
        model,
        optimizer,
        shells,
        schedulers,
        shuffles,
        noise,
        train_model,
        dtype,
    )
    if device.type == "cuda" and cfgs[0].device.graphs:
        engine.graphed = GraphedTraining(engine, capture=True)
    return engine
