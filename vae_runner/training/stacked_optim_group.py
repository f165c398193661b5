"""The update of one family of a stacked optimizer's members (Adam and AdamW, or SGD): torch.optim's
single-tensor arithmetic (torch/optim/adam.py, sgd.py) with each member's hyper-parameters as an
[M] tensor broadcast over the parameter's shape, and an optional mask of active members."""

from __future__ import annotations

import torch

from vae_runner.training.stacked_optim_state import MemberHyper


def col(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """An [M] tensor viewed to broadcast over [M, *shape] (ndim dimensions)."""
    return v.view(-1, *([1] * (ndim - 1)))


def _in_place(old: dict | None, new: dict) -> dict:
    """`new`'s values copied into `old`'s tensors (same keys and shapes), else `new` itself."""
    if old is None or old.keys() != new.keys():
        return new
    for key, value in new.items():
        old[key].copy_(value)
    return old


class FamilyGroup:
    """The members of one family ("adam": Adam and AdamW, or "sgd"): their state tensors hold
    only their rows, [len(members), *shape], and `idx` gathers those rows from the stack (None
    when the group is the whole stack)."""

    def __init__(self, family, members, idx, params, scalar_dtype):
        self.family, self.members, self.idx = family, members, idx
        self.dtype, self.device = params[0].dtype, params[0].device
        self.scalar_dtype = scalar_dtype  # the step counts and step-dependent factors
        self.shapes = [(len(members), *p.shape[1:]) for p in params]
        self.clear()

    def clear(self) -> None:
        # steps[i, j]: how many updates member members[j] made to parameter i: Adam's bias
        # correction; for SGD, whether its momentum buffer holds a first gradient yet.
        self.steps = torch.zeros(
            len(self.shapes), len(self.members), dtype=self.scalar_dtype, device=self.device
        )
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in self.shapes]

    def refresh(self, hypers: list[MemberHyper]) -> None:
        """The device copies of the members' hyper-parameters, and which kernels a step needs."""
        hs = [hypers[m] for m in self.members]

        def t(values, dtype=self.dtype):
            return torch.tensor(values, dtype=dtype, device=self.device)

        if self.family == "adam":
            # Adam adds weight_decay * param to the grad; AdamW scales param by 1 - lr * wd.
            # Which kernels run depends on the options only, never on the lr (a captured step
            # keeps its kernels while set_lr changes the lr; x * 1.0 is x exactly).
            l2 = [h.weight_decay if h.kind == "adam" else 0.0 for h in hs]
            decay = [1 - h.lr * h.weight_decay if h.kind == "adamw" else 1.0 for h in hs]
            self.l2 = any(l2)
            self.decoupled = any(h.kind == "adamw" and h.weight_decay for h in hs)
            consts = {
                "l2": t(l2),
                "decay": t(decay),
                "1-b1": t([1 - h.betas[0] for h in hs]),
                "b2": t([h.betas[1] for h in hs]),
                "1-b2": t([1 - h.betas[1] for h in hs]),
            }
            s = self.scalar_dtype
            scalars = {
                "lr": t([h.lr for h in hs], s),
                "b1": t([h.betas[0] for h in hs], s),
                "b2": t([h.betas[1] for h in hs], s),
                "eps": t([h.eps for h in hs], s),
            }
        else:
            self.l2 = any(h.weight_decay for h in hs)
            self.momentum = any(h.momentum for h in hs)
            nesterov = [h.nesterov for h in hs]
            self.nesterov = "all" if all(nesterov) else "mixed" if any(nesterov) else "none"
            consts, scalars = (
                {
                    "l2": t([h.weight_decay for h in hs]),
                    "momentum": t([h.momentum for h in hs]),
                    "-lr": t([-h.lr for h in hs]),
                    # mixed nesterov: direction = c1 * grad + c2 * buf, c1 = 1, c2 = momentum for a
                    # nesterov member, c1 = 0, c2 = 1 (the buffer) for the others
                    "c1": t([1.0 if n else 0.0 for n in nesterov]),
                    "c2": t([h.momentum if h.nesterov else 1.0 for h in hs]),
                },
                {},
            )
        # Into the tensors a step already reads, when there are some: a CUDA graph that captured
        # the step sees a new lr without being captured again (training/graphed_step.py).
        self.c = _in_place(getattr(self, "c", None), consts)
        self.h = _in_place(getattr(self, "h", None), scalars)

    def state_names(self) -> tuple[str, ...]:
        if self.family == "adam":
            return ("exp_avg", "exp_avg_sq")
        return ("momentum_buffer",) if self.momentum else ()

    def state_tensors(self, i: int) -> list[torch.Tensor]:
        """Parameter i's state tensors, made (zeros) when it first gets a gradient, as torch."""
        st = self.state[i]
        for name in self.state_names():
            if name not in st:
                st[name] = torch.zeros(self.shapes[i], dtype=self.dtype, device=self.device)
        return [st[name] for name in self.state_names()]

    def count_steps(self, rows: list[int], inc: float | torch.Tensor) -> None:
        """Count a step of the parameters in `rows` (those with a gradient): by `inc`, 1 or a
        [members] 0/1 tensor of the active ones."""
        if len(rows) == len(self.shapes):
            self.steps.add_(inc)
        else:  # torch skips a parameter without a gradient: its count stays
            self.steps[rows] += inc

    def step(self, params, rows: list[int], active: torch.Tensor | None) -> None:
        self.count_steps(rows, 1.0 if active is None else active.to(self.scalar_dtype))
        table = self._adam_table() if self.family == "adam" else None
        for i in rows:
            self._step_param(params[i], i, table, active)

    def _step_param(self, p_full, i, table, active) -> None:
        whole = self.idx is None
        p = p_full if whole else p_full.index_select(0, self.idx)
        g = p_full.grad if whole else p_full.grad.index_select(0, self.idx)
        kept = [p, *self.state_tensors(i)]
        # With a mask, work on copies and keep the inactive rows' old values (torch.where also
        # keeps a NaN an inactive member's gradient may hold out of the others' rows).
        work = kept if active is None else [k.clone() for k in kept]
        if self.family == "adam":
            self._adam(*work, g=g, scale=table["scale"][i], eps=table["eps"][i])
        else:
            self._sgd(*work, g=g)
        if active is not None:
            keep = col(active, p.dim())
            for k, w in zip(kept, work, strict=True):
                torch.where(keep, w, k, out=k)
        if not whole:
            p_full.index_copy_(0, self.idx, p)

    def _adam_table(self) -> dict[str, torch.Tensor]:
        """Per parameter and member, the step-dependent factors of torch's capturable Adam (the
        form it uses for a tensor step count): param += exp_avg / denom with denom =
        sqrt(exp_avg_sq) / (sqrt(bc2) * -step_size) + eps / -step_size."""
        h = self.h
        neg_step_size = -h["lr"] / (1 - h["b1"] ** self.steps)
        scale = (1 - h["b2"] ** self.steps).sqrt() * neg_step_size
        return {"scale": scale.to(self.dtype), "eps": (h["eps"] / neg_step_size).to(self.dtype)}

    def _adam(self, p, exp_avg, exp_avg_sq, *, g, scale, eps) -> None:
        c, n = self.c, p.dim()
        if self.l2:
            g = torch.addcmul(g, p, col(c["l2"], n))
        if self.decoupled:
            p.mul_(col(c["decay"], n))
        exp_avg.lerp_(g, col(c["1-b1"], n))
        exp_avg_sq.mul_(col(c["b2"], n)).addcmul_(g * col(c["1-b2"], n), g)
        denom = exp_avg_sq.sqrt().div_(col(scale, n)).add_(col(eps, n))
        p.addcdiv_(exp_avg, denom)

    def _sgd(self, p, *buf, g) -> None:
        c, n = self.c, p.dim()
        if self.l2:
            g = torch.addcmul(g, p, col(c["l2"], n))
        if self.momentum:
            # A buffer starts at zero, so its first update is the gradient itself (torch's rule);
            # a member with momentum 0 gets buf = grad every step.
            (b,) = buf
            b.mul_(col(c["momentum"], n)).add_(g)
            if self.nesterov == "all":
                g = torch.addcmul(g, b, col(c["momentum"], n))
            elif self.nesterov == "mixed":
                g = torch.addcmul(g * col(c["c1"], n), b, col(c["c2"], n))
            else:
                g = b
        p.addcmul_(g, col(c["-lr"], n))
