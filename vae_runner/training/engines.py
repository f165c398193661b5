"""A stack's members over one engine, or over several trained at once on the CPU's cores.

On a CPU where each run gets one torch thread (cpu_threads: a small machine), one stack leaves
the other cores idle, while the basic launcher's jobs take turns on one core. Members do not
depend on which others share their engine (tests/test_stacked_oracle.py), so a stack is split
into one sub-stack per free core, and their epochs run at once in threads: torch's operations
release the GIL, so each thread keeps a core busy. Measured on this project's 2 cores (digits,
12 members): one engine of 12 took 246 ms an epoch, two of 6 in two threads 162 ms.

On CUDA, and for tests that hand in their noise (which counts members stack-wide), it is one
engine. `Engines` answers as an Engine does, by stack-wide member number.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import torch

from vae_runner.cpu_threads import cpu_count
from vae_runner.training.engine import Engine
from vae_runner.training.epoch import TestSums, TrainSums


def parts_for(cfgs: list, device: torch.device, fixed_noise: bool) -> int:
    """How many engines a stack of `cfgs` trains in: one per core that its torch threads leave
    free, on the CPU; else one (also with device.compile: torch.compile's tracing is not for
    two threads at once)."""
    members = len(cfgs)
    if device.type != "cpu" or fixed_noise or members < 2 or cfgs[0].device.compile:
        return 1
    return max(1, min(members, cpu_count() // max(1, torch.get_num_threads())))


def split(items: list, parts: int) -> list[list]:
    """`items` in `parts` consecutive runs of near-equal length (the first ones longer)."""
    size, extra = divmod(len(items), parts)
    runs, start = [], 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        runs.append(items[start:end])
        start = end
    return runs


class Engines:
    """The engines of one stack, addressed by stack-wide member number."""

    def __init__(self, engines: list[Engine]) -> None:
        self.engines = engines
        self._where = [(e, local) for e in engines for local in range(e.members)]
        self._pool = ThreadPoolExecutor(len(engines)) if len(engines) > 1 else None

    @property
    def data(self):
        return self.engines[0].data

    @property
    def device(self) -> torch.device:
        return self.engines[0].device

    @property
    def latent_dim(self) -> int:
        return self.engines[0].model.latent_dim

    @property
    def batches(self) -> int:
        """Batch boundaries an epoch passes, summed over the engines (the progress bar's)."""
        per_engine = -(-len(self.data.train) // self.engines[0].cfgs[0].batch_size)
        return per_engine * len(self.engines)

    def _each(self, method: str, *per_member: list, **shared) -> list:
        """`method` of every engine, with its members' share of each per-member list, at once
        (threads) when there are several; the results in stack-wide member order."""
        calls, start = [], 0
        for engine in self.engines:
            end = start + engine.members
            calls.append((engine, [values[start:end] for values in per_member]))
            start = end
        if self._pool is None:
            results = [getattr(e, method)(*args, **shared) for e, args in calls]
        else:
            futures = [self._pool.submit(getattr(e, method), *args, **shared) for e, args in calls]
            wait(futures)  # every engine at rest (a stop: each at its next batch boundary)
            results = [f.result() for f in futures]  # then the first failure rises
        return [item for result in results for item in result]

    def train_epoch(
        self, kl_weights: list[float], active: list[bool], progress=None, stop=None
    ) -> list[TrainSums]:
        return self._each("train_epoch", kl_weights, active, progress=progress, stop=stop)

    def evaluate(self, active: list[bool], split: str = "test") -> list[TestSums]:
        return self._each("evaluate", active, split=split)

    def n_parameters(self, member: int) -> int:
        engine, local = self._where[member]
        return sum(p[local].numel() for p in engine.model.parameters())

    def lr(self, member: int) -> float:
        engine, local = self._where[member]
        return engine.lr(local)

    def set_lr(self, member: int, lr: float) -> None:
        engine, local = self._where[member]
        engine.set_lr(local, lr)

    def step_scheduler(self, member: int, watched_loss: float) -> None:
        engine, local = self._where[member]
        engine.step_scheduler(local, watched_loss)

    def member_state(self, member: int) -> dict[str, Any]:
        engine, local = self._where[member]
        return engine.member_state(local)

    def load_member(self, member: int, checkpoint: dict[str, Any]) -> None:
        engine, local = self._where[member]
        engine.load_member(local, checkpoint)

    def member_model(self, member: int):
        engine, local = self._where[member]
        return engine.member_model(local)

    def release_training_state(self) -> None:
        for engine in self.engines:
            engine.release_training_state()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
