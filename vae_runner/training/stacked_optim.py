"""One optimizer for K models trained as one stacked model (every parameter tensor has a leading
member axis M): member m's slices follow its own Adam, AdamW or SGD, with torch.optim's
single-tensor arithmetic (torch/optim/adam.py, sgd.py), its own hyper-parameters and step count.

The per-member hyper-parameters are [M] tensors broadcast over each parameter's shape, so a step
costs a few kernels per parameter tensor whatever M is. Members of the two families (Adam/AdamW,
SGD) live in groups of their own: a stack of one family works on the whole tensors (no gathers);
a mixed stack gathers each group's rows and scatters them back.
"""

from __future__ import annotations

import torch

from vae_runner.config.schema import OptimizerConfig
from vae_runner.training.build import build_optimizer
from vae_runner.training.stacked_optim_state import (
    MemberHyper,
    member_hyper,
    member_state_from_torch,
    torch_param_group,
)

# torch.nn.utils.clip_grad_norm_'s guard against a zero norm
CLIP_EPS = 1e-6


def _col(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """An [M] tensor viewed to broadcast over [M, *shape] (ndim dimensions)."""
    return v.view(-1, *([1] * (ndim - 1)))


class _Group:
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
            l2 = [h.weight_decay if h.kind == "adam" else 0.0 for h in hs]
            decay = [1 - h.lr * h.weight_decay if h.kind == "adamw" else 1.0 for h in hs]
            self.l2, self.decoupled = any(l2), any(d != 1.0 for d in decay)
            self.c = {
                "l2": t(l2),
                "decay": t(decay),
                "1-b1": t([1 - h.betas[0] for h in hs]),
                "b2": t([h.betas[1] for h in hs]),
                "1-b2": t([1 - h.betas[1] for h in hs]),
            }
            s = self.scalar_dtype
            self.h = {
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
            self.c = {
                "l2": t([h.weight_decay for h in hs]),
                "momentum": t([h.momentum for h in hs]),
                "-lr": t([-h.lr for h in hs]),
                # mixed nesterov: direction = c1 * grad + c2 * buf, c1 = 1, c2 = momentum for a
                # nesterov member, c1 = 0, c2 = 1 (the buffer) for the others
                "c1": t([1.0 if n else 0.0 for n in nesterov]),
                "c2": t([h.momentum if h.nesterov else 1.0 for h in hs]),
            }

    def state_names(self) -> tuple[str, ...]:
        if self.family == "adam":
            return ("exp_avg", "exp_avg_sq")
        return ("momentum_buffer",) if self.momentum else ()

    def _state(self, i: int) -> list[torch.Tensor]:
        """Parameter i's state tensors, made (zeros) when it first gets a gradient, as torch."""
        st = self.state[i]
        for name in self.state_names():
            if name not in st:
                st[name] = torch.zeros(self.shapes[i], dtype=self.dtype, device=self.device)
        return [st[name] for name in self.state_names()]

    def step(self, params, rows: list[int], active: torch.Tensor | None) -> None:
        inc = 1.0 if active is None else active.to(self.scalar_dtype)
        if len(rows) == len(params):
            self.steps.add_(inc)
        else:  # torch skips a parameter without a gradient: its count stays
            self.steps[rows] += inc
        table = self._adam_table() if self.family == "adam" else None
        for i in rows:
            self._step_param(params[i], i, table, active)

    def _step_param(self, p_full, i, table, active) -> None:
        whole = self.idx is None
        p = p_full if whole else p_full.index_select(0, self.idx)
        g = p_full.grad if whole else p_full.grad.index_select(0, self.idx)
        kept = [p, *self._state(i)]
        # With a mask, work on copies and keep the inactive rows' old values (torch.where also
        # keeps a NaN an inactive member's gradient may hold out of the others' rows).
        work = kept if active is None else [k.clone() for k in kept]
        if self.family == "adam":
            self._adam(*work, g=g, scale=table["scale"][i], eps=table["eps"][i])
        else:
            self._sgd(*work, g=g)
        if active is not None:
            keep = _col(active, p.dim())
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
            g = torch.addcmul(g, p, _col(c["l2"], n))
        if self.decoupled:
            p.mul_(_col(c["decay"], n))
        exp_avg.lerp_(g, _col(c["1-b1"], n))
        exp_avg_sq.mul_(_col(c["b2"], n)).addcmul_(g * _col(c["1-b2"], n), g)
        denom = exp_avg_sq.sqrt().div_(_col(scale, n)).add_(_col(eps, n))
        p.addcdiv_(exp_avg, denom)

    def _sgd(self, p, *buf, g) -> None:
        c, n = self.c, p.dim()
        if self.l2:
            g = torch.addcmul(g, p, _col(c["l2"], n))
        if self.momentum:
            # A buffer starts at zero, so its first update is the gradient itself (torch's rule);
            # a member with momentum 0 gets buf = grad every step.
            (b,) = buf
            b.mul_(_col(c["momentum"], n)).add_(g)
            if self.nesterov == "all":
                g = torch.addcmul(g, b, _col(c["momentum"], n))
            elif self.nesterov == "mixed":
                g = torch.addcmul(g * _col(c["c1"], n), b, _col(c["c2"], n))
            else:
                g = b
        p.addcmul_(g, _col(c["-lr"], n))


class StackedOptimizer:
    """Adam, AdamW or SGD per member over parameters with a leading member axis; see the module
    docstring. member_state_dict / load_member_state_dict speak torch.optim's state dicts, so a
    member's state is what a single run's checkpoint holds."""

    def __init__(
        self, params: list[torch.Tensor], configs: list[OptimizerConfig], lrs: list[float]
    ):
        self._params = list(params)
        if not self._params:
            raise ValueError("StackedOptimizer got no parameters")
        first = self._params[0]
        self.size = first.shape[0] if first.dim() else 0
        if len(configs) != self.size or len(lrs) != self.size:
            raise ValueError(
                f"StackedOptimizer: the parameters stack {self.size} members but there are "
                f"{len(configs)} optimizer configs and {len(lrs)} learning rates"
            )
        for i, p in enumerate(self._params):
            if (
                p.dim() == 0
                or p.shape[0] != self.size
                or (p.dtype, p.device)
                != (
                    first.dtype,
                    first.device,
                )
            ):
                raise ValueError(
                    f"StackedOptimizer: parameter {i} ({tuple(p.shape)}, {p.dtype}, {p.device}) "
                    f"is not [{self.size}, ...] on {first.device} in {first.dtype} as parameter 0"
                )
        self._hypers = [member_hyper(c, lr) for c, lr in zip(configs, lrs, strict=True)]
        # What torch writes besides the hyper-parameters (fused, foreach, ...): ask the builder a
        # single run uses, on a stand-in parameter of this device and dtype.
        stand_in = torch.zeros(1, dtype=first.dtype, device=first.device)
        self._templates = [
            build_optimizer(c, [stand_in], lr).state_dict()["param_groups"][0]
            for c, lr in zip(configs, lrs, strict=True)
        ]
        # MPS has no float64: the step counts and step-dependent factors are float32 there.
        scalar_dtype = torch.float32 if first.device.type == "mps" else torch.float64
        families = {}
        for m, h in enumerate(self._hypers):
            families.setdefault(h.family, []).append(m)
        self._groups = []
        self._where: list[tuple[_Group, int]] = [None] * self.size  # member -> (group, row)
        for family, members in families.items():
            idx = None
            if len(families) > 1:
                idx = torch.tensor(members, dtype=torch.long, device=first.device)
            group = _Group(family, members, idx, self._params, scalar_dtype)
            group.refresh(self._hypers)
            self._groups.append(group)
            for row, m in enumerate(members):
                self._where[m] = (group, row)

    def get_lr(self, member: int) -> float:
        return self._hypers[member].lr

    def set_lr(self, member: int, lr: float) -> None:
        self._hypers[member].lr = float(lr)
        self._where[member][0].refresh(self._hypers)

    def zero_grad(self) -> None:
        for p in self._params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        """One step for every member; `active` ([M] bool on the params' device, or None = all):
        an inactive member's parameters, state and step count do not change at all."""
        if active is not None and (active.shape != (self.size,) or active.dtype != torch.bool):
            raise ValueError(
                f"step(active=...) takes a [{self.size}] bool tensor, "
                f"got {tuple(active.shape)} {active.dtype}"
            )
        rows = [i for i, p in enumerate(self._params) if p.grad is not None]
        if not rows:
            return
        for group in self._groups:
            a = active
            if active is not None and group.idx is not None:
                a = active.index_select(0, group.idx)
            group.step(self._params, rows, a)

    def member_state_dict(self, member: int) -> dict:
        """What torch.optim's optimizer (as build_optimizer makes it) over the member's plain
        parameters would hold after the same steps; tensors cloned, on CPU."""
        group, row = self._where[member]
        h = self._hypers[member]
        steps = group.steps[:, row].tolist()
        template = self._templates[member]
        fused = template.get("fused") or template.get("capturable")
        default = torch.get_default_dtype()
        step_dtype = torch.float64 if default == torch.float64 and not fused else torch.float32
        state = {}
        for i, n in enumerate(steps):
            if n == 0 or (h.kind == "sgd" and not h.momentum):
                continue  # torch keeps no state before a parameter's first step, nor for SGD
                # without momentum
            entry = {"step": torch.tensor(n, dtype=step_dtype)} if h.kind != "sgd" else {}
            for name in group.state_names():
                entry[name] = group.state[i][name][row].detach().to("cpu", copy=True)
            state[i] = entry
        return {"state": state, "param_groups": [torch_param_group(template, h, len(steps))]}

    def load_member_state_dict(self, member: int, state: dict) -> None:
        """Take up a torch.optim state dict of the member's kind (as single-run checkpoints
        hold): hyper-parameters from its param group, state tensors into the member's slices.
        Raises ValueError naming what does not fit, before changing anything."""
        group, row = self._where[member]
        shapes = [tuple(p.shape[1:]) for p in self._params]
        hyper, per_param = member_state_from_torch(state, member, self._hypers[member].kind, shapes)
        self._hypers[member] = hyper
        group.refresh(self._hypers)
        with torch.no_grad():
            for i, entry in enumerate(per_param):
                # Adam's count from the dict; SGD: a loaded buffer counts as started (its next
                # update is momentum * buf + grad), a missing one starts at the next gradient.
                group.steps[i, row] = entry.get("step", 1.0) if entry else 0.0
                if not entry and not group.state[i]:
                    continue  # nothing made yet: the zeros it will start from are right
                for name, t in zip(group.state_names(), group._state(i), strict=True):
                    source = (entry or {}).get(name)
                    if source is None:
                        t[row].zero_()
                    else:
                        t[row].copy_(source)

    def clear_state(self) -> None:
        """Free the moments and buffers (the end of training); a later step starts afresh, as
        torch's optimizer.state.clear()."""
        for group in self._groups:
            group.clear()


@torch.no_grad()
def clip_grad_norms(params: list[torch.Tensor], max_norms: torch.Tensor) -> torch.Tensor:
    """Per-member torch.nn.utils.clip_grad_norm_: returns each member's pre-clip gradient norm
    ([M]: the norm of its per-parameter norms over its own slices) and scales its gradients by
    min(max_norm / (norm + 1e-6), 1). A member at max_norm inf is only measured: its gradients
    stay exactly as they are (torch would multiply a NaN norm's gradients by NaN). Gradients
    that are None count as zero."""
    size = params[0].shape[0]
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(size, dtype=params[0].dtype, device=params[0].device)
    per_param = torch.stack([torch.linalg.vector_norm(g.reshape(size, -1), dim=1) for g in grads])
    norms = torch.linalg.vector_norm(per_param, dim=0)
    max_norms = max_norms.to(norms.dtype)
    coef = torch.clamp(max_norms / (norms + CLIP_EPS), max=1.0)
    coef = torch.where(torch.isinf(max_norms), 1.0, coef)
    for g in grads:
        g.mul_(_col(coef.to(g.dtype), g.dim()))
    return norms
