"""device.graphs: the engine's training step captured once as a CUDA graph and replayed for every
full batch (CUDA only; everywhere else Engine.train_epoch's eager loop trains).

On a GPU the seed's small model is bound by kernel launches (about 9 us each on an H200) and the
Python around them, not by arithmetic: a replayed graph launches the whole step at once.

`StaticStep.__call__` runs the eager epoch's own step (epoch.train_step: the index gather,
dynamic binarisation and reparameterisation noise, forward, loss, backward, per-member
clipping, the stacked optimizer's step, the per-member sums and the first non-finite batch) on
buffers that live as long as it does (the batch's indices, the KL weights, the optimizer's
hyper-parameters, the epoch's sums): what a graph needs. On CUDA it is captured; on the CPU the
tests call it as it is and compare it with the eager epoch (tests/test_graphed_step.py).

What it hands the step otherwise than the eager epoch does, and why:
- the optimizer takes its vectorised path (StackedOptimizer.step_vectorised): every
  hyper-parameter is an [M] device tensor that set_lr rewrites in place, and the step counts
  are device tensors. Torch's fused kernels, the eager path on CPU and CUDA, take the lr as a
  Python number, which a capture would freeze. (The two paths agree to rounding: tests.)
- autocast (bf16) runs without its cast cache, which a graph must not keep between replays.
- noise: each member's own CUDA generator is registered with the graph
  (CUDAGraph.register_generator_state). A replay draws what the same calls would draw eagerly
  and moves each generator on by as much (torch's graph-safe philox offsets), so evaluation,
  checkpoints and resume read and set the generators as before.
- the last, partial batch runs the same function uncaptured, on buffers of its size.
- a graph holds one set of active members: when it changes (a member stops early, diverges,
  or waits for the stack's epoch on resume) the step is captured again, before that epoch.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from typing import Any

import torch

from vae_runner.training.epoch import EpochSums, TrainSums, train_step
from vae_runner.training.noise import SeededNoise

# The engine (training/engine.py) that imports this module: typed as Any, not imported back
Engine = Any

# Eager steps on a side stream before the capture: cuBLAS workspaces, the optimizer's state and
# the autograd graph's buffers are made there, not inside the graph (torch's CUDA-graph notes)
WARMUP_STEPS = 3


class StaticStep:
    """The training step over buffers of one batch size, for one set of active members."""

    def __init__(self, engine: Engine, batch: int, active: tuple[bool, ...], kl_weights, sums):
        self.engine, self.active = engine, list(active)
        self.kl_weights, self.sums = kl_weights, sums  # [M] and EpochSums, shared by the steps
        device = engine.data.train.device
        self.index = torch.zeros(engine.members, batch, dtype=torch.long, device=device)
        self.mask = None if all(active) else torch.tensor(active, device=device)
        self.binarize = partial(engine._binarize, self.active)
        precision = engine.cfgs[0].device.precision
        self.autocast = partial(
            torch.autocast, device.type, torch.bfloat16, precision == "bf16", cache_enabled=False
        )

    def __call__(self) -> None:
        e = self.engine
        step = partial(e.optimizer.step_vectorised, self.mask)
        train_step(
            e, self.index, self.binarize, self.active, self.mask, self.kl_weights, self.sums,
            e.model, step, self.autocast,
        )  # fmt: skip


def warm_up(step: StaticStep) -> None:
    """WARMUP_STEPS of `step` (on a side stream on CUDA, as a capture needs) that leave no
    trace: they train for real, so every member's state (weights, optimizer, generators, in a
    single run's checkpoint format) is put back afterwards, and the sums are zeroed."""
    engine = step.engine
    saved = [engine.member_state(m) for m in range(engine.members)]
    cuda = step.index.device.type == "cuda"
    side = torch.cuda.Stream() if cuda else None
    if cuda:
        side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side) if cuda else nullcontext():
        for _ in range(WARMUP_STEPS):
            step()
    if cuda:
        torch.cuda.current_stream().wait_stream(side)
    for m, state in enumerate(saved):
        engine.load_member(m, state)
    step.sums.zero()


class CapturedStep:
    """A StaticStep captured as a CUDA graph: calling it replays the graph."""

    def __init__(self, step: StaticStep) -> None:
        engine = step.engine
        if not isinstance(engine.noise, SeededNoise):
            raise TypeError("device.graphs needs each member's own CUDA generator (SeededNoise)")
        self.step = step
        warm_up(step)
        self.graph = torch.cuda.CUDAGraph()
        for generator in engine.noise.generators:
            self.graph.register_generator_state(generator)
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            step()

    @property
    def index(self) -> torch.Tensor:
        return self.step.index

    def __call__(self) -> None:
        self.graph.replay()


class GraphedTraining:
    """Engine.train_epoch through the static step: the full batches captured and replayed
    (`capture`: CUDA), or, for the tests on the CPU, the same step run as it is."""

    def __init__(self, engine: Engine, capture: bool) -> None:
        self.engine, self.capture = engine, capture
        device = engine.data.train.device
        self.kl_weights = torch.zeros(engine.members, device=device, dtype=engine.dtype)
        self.sums = EpochSums(engine.members, device, engine.dtype)
        self._steps: dict[int, StaticStep | CapturedStep] = {}  # by batch size
        self._active: tuple[bool, ...] | None = None  # the set the steps were made for

    def _step(self, batch: int, active: tuple[bool, ...]) -> StaticStep | CapturedStep:
        if active != self._active:
            self._steps.clear()  # a graph holds its active set: capture again
            self._active = active
        if batch not in self._steps:
            step = StaticStep(self.engine, batch, active, self.kl_weights, self.sums)
            full = batch == self.engine.cfgs[0].batch_size
            self._steps[batch] = CapturedStep(step) if self.capture and full else step
        return self._steps[batch]

    def train_epoch(
        self, kl_weights: list[float], active: list[bool], progress=None, stop=None
    ) -> list[TrainSums]:
        e = self.engine
        e.model.train()
        batches = e.batch_orders(active).split(e.cfgs[0].batch_size, dim=1)
        self.kl_weights.copy_(torch.tensor(kl_weights, dtype=e.dtype))
        for b in {index.shape[1] for index in batches}:
            self._step(b, tuple(active))  # any capture before the epoch's sums start
        self.sums.zero()
        for index in batches:
            if stop is not None:
                stop.check()  # a requested stop ends the stack here, at a batch boundary
            step = self._step(index.shape[1], tuple(active))
            step.index.copy_(index)
            step()
            if progress is not None:
                progress.advance()
        return self.sums.read(len(e.data.train), len(batches))
