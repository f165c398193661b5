"""A stack's members over one engine, or over several trained at once on the CPU's cores.

On a CPU where each run gets one torch thread (cpu_threads: a small machine), one stack leaves
the other cores idle, while the basic launcher's jobs take turns on one core. Members do not
depend on which others share their engine (tests/test_stacked_oracle.py), so a stack is split
into one part per free core, and their epochs run at once: each part in a forked process of its
own on Linux (training/engine_process.py), else in threads (torch's operations release the GIL,
so each thread keeps a core busy, though every call into torch is a turn at the GIL). Measured
on this project's 2 cores (digits, 12 members): one engine of 12 took 246 ms an epoch, two of 6
in two threads 89-90 ms, in two processes 77 ms.

On CUDA, and for tests that hand in their noise (which counts members stack-wide), it is one
engine. `Engines` answers as an Engine does, by stack-wide member number.
"""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any

import torch

from vae_runner.cpu_threads import cpu_count
from vae_runner.training import engine_process
from vae_runner.training.engine import Engine
from vae_runner.training.engine_process import EngineProcess, from_bytes, gather
from vae_runner.training.epoch import TestSums, TrainSums
from vae_runner.training.epoch_writes import EpochRun, write_epochs
from vae_runner.training.signals import Interrupted


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
    """The engines of one stack, addressed by stack-wide member number. Until `start`, they
    are this process's; then, with several, each trains in a process or a thread of its own."""

    def __init__(self, engines: list[Engine]) -> None:
        self.engines = engines
        self._where = [(i, local) for i, e in enumerate(engines) for local in range(e.members)]
        self._pool: ThreadPoolExecutor | None = None
        self._parts: list[EngineProcess] | None = None  # the engines' processes, once started
        self._flag = None  # the parts' stop flag (engine_process.stop_flag)
        self._batches = -(-len(engines[0].data.train) // engines[0].cfgs[0].batch_size)

    def start(self) -> None:
        """Train the engines at once from here on (once their checkpoints are taken up): each
        in a forked process where engine_process.available(), else in threads. The engines
        here are not trained in processes: they stay for the shapes and the data."""
        if len(self.engines) < 2 or self._pool is not None or self._parts is not None:
            return
        if engine_process.available():
            self._flag = engine_process.stop_flag()
            self._parts = []
            for engine in self.engines:
                part = EngineProcess(engine.members)
                self._parts.append(part)  # before its process exists: close() ends it
                part.fork(engine, self._flag, self._parts[:-1])
        else:
            self._pool = ThreadPoolExecutor(len(self.engines))

    @property
    def in_processes(self) -> bool:
        return self._parts is not None

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
        return self._batches * len(self.engines)

    def _shares(self, per_member: tuple[list, ...]) -> list[list[list]]:
        """Each engine's share of each per-member list."""
        shares, start = [], 0
        for engine in self.engines:
            end = start + engine.members
            shares.append([values[start:end] for values in per_member])
            start = end
        return shares

    def _each(self, method: str, *per_member: list, progress=None, stop=None, **shared) -> list:
        """`method` of every engine, with its members' share of each per-member list, at once
        when there are several; the results in stack-wide member order. Once every engine is
        at rest (a stop: each at its next batch boundary), the first failure rises."""
        shares = self._shares(per_member)
        if self._parts is not None:  # a part's progress and stop are its own
            questions = [
                (part, method, args, shared) for part, args in zip(self._parts, shares, strict=True)
            ]
            results = gather(questions, progress, stop, self._flag)
            return [item for result in results for item in result]
        if method == "train_epoch":
            shared.update(progress=progress, stop=stop)
        if self._pool is None:
            results = [
                getattr(e, method)(*args, **shared)
                for e, args in zip(self.engines, shares, strict=True)
            ]
        else:
            futures = [
                self._pool.submit(getattr(e, method), *args, **shared)
                for e, args in zip(self.engines, shares, strict=True)
            ]
            wait(futures)
            results = [f.result() for f in futures]
        return [item for result in results for item in result]

    def train_epoch(
        self, kl_weights: list[float], active: list[bool], progress=None, stop=None
    ) -> list[TrainSums]:
        return self._each("train_epoch", kl_weights, active, progress=progress, stop=stop)

    def evaluate(self, active: list[bool], split: str = "test") -> list[TestSums]:
        return self._each("evaluate", active, split=split)

    def n_parameters(self, member: int) -> int:
        i, local = self._where[member]
        return sum(p[local].numel() for p in self.engines[i].model.parameters())

    def _ask(self, member: int, method: str, *args: Any) -> Any:
        """One member's `method` of its engine, wherever that engine trains."""
        i, local = self._where[member]
        if self._parts is None:
            return getattr(self.engines[i], method)(local, *args)
        self._parts[i].ask(method, local, *args)
        return self._parts[i].answer()

    def lr(self, member: int) -> float:
        return self._ask(member, "lr")

    def set_lr(self, member: int, lr: float) -> None:
        self._ask(member, "set_lr", lr)

    def step_scheduler(self, member: int, watched_loss: float) -> None:
        self._ask(member, "step_scheduler", watched_loss)

    def member_state(self, member: int) -> dict[str, Any]:
        state = self._ask(member, "member_state")
        return from_bytes(state) if self._parts is not None else state

    def load_member(self, member: int, checkpoint: dict[str, Any]) -> None:
        """Before `start` only: the checkpoints are taken up before the engines train."""
        if self._parts is not None:
            raise RuntimeError("a stack's checkpoints are taken up before it starts")
        i, local = self._where[member]
        self.engines[i].load_member(local, checkpoint)

    def member_model(self, member: int):
        i, local = self._where[member]
        if self._parts is None:
            return self.engines[i].member_model(local)
        weights = from_bytes(self._ask(member, "member_weights"))
        return self.engines[i].member_model(local, weights)

    def write_epochs(self, runs: list[EpochRun], pool) -> list[BaseException | None]:
        """Each run's last.pt then history.json (training/epoch_writes.py), with its member's
        state; per run, None or what failed. In processes, each writes its own members'."""
        if self._parts is None:
            # Every state first, before any thread writes: copying a state out of the stack
            # is a few dozen small torch calls, each of which hands the GIL to a waiting writer.
            for run in runs:
                run.state = self.member_state(run.member)
            return write_epochs(runs, pool)
        asked: dict[int, list[tuple[int, EpochRun]]] = {}  # by part: (number, run as sent)
        for number, run in enumerate(runs):
            i, local = self._where[run.member]
            asked.setdefault(i, []).append((number, replace(run, member=local, state=None)))
        questions = [
            (self._parts[i], "write_epochs", ([run for _, run in its],), {})
            for i, its in asked.items()
        ]
        outcomes: list[BaseException | None] = [None] * len(runs)
        answers = gather(questions, settle=False)
        for its, (kind, answer) in zip(asked.values(), answers, strict=True):
            for position, (number, _) in enumerate(its):
                if kind == "ok":
                    outcomes[number] = answer[position]
                else:  # the part failed as a whole (or died): none of its runs is known written
                    outcomes[number] = answer if kind == "error" else Interrupted(answer)
        return outcomes

    def release_training_state(self) -> None:
        self._end_parts()
        for engine in self.engines:
            engine.release_training_state()

    def _end_parts(self) -> None:
        """The parts' processes end; asking one of them anything then raises. One that still
        trains (the stack ends on a failure or a second signal) stops at its next batch."""
        if self._flag is not None and not self._flag[0]:
            self._flag[0] = signal.SIGTERM
        parts = list(self._parts or [])
        try:
            while parts:
                parts[0].close()
                parts.pop(0)
        finally:
            for part in parts:  # what a second signal cut short: each is still ended
                part.close()

    def close(self) -> None:
        self._end_parts()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
