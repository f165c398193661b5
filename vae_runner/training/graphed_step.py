"""device.graphs: the engine's training step captured once as a CUDA graph and replayed for every
full batch (CUDA only; everywhere else Engine.train_epoch's eager loop trains).

On a GPU the seed's small model is bound by kernel launches (about 9 us each on an H200) and the
Python around them, not by arithmetic: a replayed graph launches the whole step at once.

`StaticStep.__call__` IS the step: the index gather, dynamic binarisation and reparameterisation
noise, forward, loss, backward, per-member clipping, the stacked optimizer's step, the
per-member sums and the first non-finite batch. It reads its inputs from buffers that live as
long as it does (the batch's indices, the KL weights, the optimizer's hyper-parameters) and
adds into buffers (the epoch's sums): what a graph needs. On CUDA it is captured; on the CPU the
tests call it as it is and compare it with the eager step (tests/test_graphed_step.py).

Where it differs from the eager step, and why:
- the optimizer takes its vectorised path (StackedOptimizer.step_vectorised): every
  hyper-parameter is an [M] device tensor that set_lr rewrites in place, and the step counts
  are device tensors. Torch's fused kernels, the eager path on CPU and CUDA, take the lr as a
  Python number, which a capture would freeze. (The two paths agree to rounding: tests.)
- the batch number that a non-finite loss records is a device counter, not a Python int.
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

from vae_runner.training.epoch import TrainSums, draw_noise
from vae_runner.training.losses import elbo_terms, member_losses
from vae_runner.training.noise import SeededNoise
from vae_runner.training.stacked_optim import clip_grad_norms

# The engine (training/engine.py) that imports this module: typed as Any, not imported back
Engine = Any

# Eager steps on a side stream before the capture: cuBLAS workspaces, the optimizer's state and
# the autograd graph's buffers are made there, not inside the graph (torch's CUDA-graph notes)
WARMUP_STEPS = 3


class EpochSums:
    """An epoch's per-member sums ([M] each) and the batch counter, on the device: every step
    adds into them in place, and they are read once, at the epoch's end."""

    def __init__(self, members: int, device: torch.device, dtype: torch.dtype) -> None:
        def zeros(*shape):
            return torch.zeros(*shape, device=device, dtype=dtype)

        self.recon, self.kl, self.norm_sum, self.norm_max = (zeros(members) for _ in range(4))
        self.first_bad = zeros(members)  # 1-based batch of the first non-finite loss or norm
        self.batch = zeros(())  # batches done this epoch

    def zero(self) -> None:
        for t in (self.recon, self.kl, self.norm_sum, self.norm_max, self.first_bad, self.batch):
            t.zero_()

    def read(self, n: int, batches: int) -> list[TrainSums]:
        """The per-member means, as Engine.train_epoch gives them: the epoch's one host sync."""
        rows = torch.stack([self.recon, self.kl, self.norm_sum, self.norm_max, self.first_bad])
        return [
            TrainSums(r / n, k / n, total / batches, top, int(bad) or None)
            for r, k, total, top, bad in rows.T.tolist()
        ]


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
        e, sums = self.engine, self.sums
        m, b = self.index.shape
        latent = e.model.latent_dim
        x = e.data.train_batch(self.index.flatten(), self.binarize).to(e.dtype)
        eps = draw_noise(e.noise, self.active, (b, latent), x)
        e.optimizer.zero_grad()  # backward makes the gradients: in a capture, the graph's own
        with self.autocast():
            out, mu, logvar = e.model(x, eps)
            nll = e.model.likelihood.nll(out.to(e.dtype), x)
            terms = elbo_terms(nll, mu.to(e.dtype), logvar.to(e.dtype))
            recon = terms.recon.view(m, b)
            kl_by_dim = terms.kl_by_dim.view(m, b, latent)
            reduction = e.cfgs[0].reduction.name
            losses = member_losses(recon, kl_by_dim, self.kl_weights, reduction, e._free_bits)
        total = losses if self.mask is None else torch.where(self.mask, losses, 0.0)
        total.sum().backward()
        norms = clip_grad_norms(e._params, e._max_norms)
        e.optimizer.step_vectorised(self.mask)
        with torch.no_grad():
            sums.batch += 1
            sums.recon += recon.sum(dim=1)
            sums.kl += kl_by_dim.sum(dim=(1, 2))
            sums.norm_sum += norms
            torch.maximum(sums.norm_max, norms, out=sums.norm_max)
            bad = ~(torch.isfinite(losses) & torch.isfinite(norms)) & (sums.first_bad == 0)
            sums.first_bad.copy_(torch.where(bad, sums.batch, sums.first_bad))


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
