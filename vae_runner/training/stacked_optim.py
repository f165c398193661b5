"""One optimizer for K models trained as one stacked model (every parameter tensor has a leading
member axis M): member m's slices follow its own Adam, AdamW or SGD, with torch.optim's
single-tensor arithmetic (torch/optim/adam.py, sgd.py), its own hyper-parameters and step count.

Where torch has fused kernels for the device and dtype (CPU, CUDA), a step calls them once per
active member over its slices (stacked_optim_fused.py). Elsewhere (MPS) the vectorised path runs:
the per-member hyper-parameters are [M] tensors broadcast over each parameter's shape, a few
kernels per parameter tensor whatever M is. Members of the two families (Adam/AdamW, SGD) live in
groups of their own; on the vectorised path a stack of one family works on the whole tensors (no
gathers), a mixed stack gathers each group's rows and scatters them back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vae_runner.config.schema import OptimizerConfig
from vae_runner.training.stacked_optim_fused import FusedFamilyStep, fused_kernels_apply
from vae_runner.training.stacked_optim_group import FamilyGroup, col
from vae_runner.training.stacked_optim_state import (
    member_hyper,
    member_state_from_torch,
    torch_fuses,
    torch_param_group,
)

# torch.nn.utils.clip_grad_norm_'s guard against a zero norm
CLIP_EPS = 1e-6


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
        # Whether build_optimizer's torch optimizer for one member would be fused here (else
        # foreach): its state dict says which (stacked_optim_state.torch_param_group).
        self._torch_fused = torch_fuses(first)
        # MPS has no float64: the step counts and step-dependent factors are float32 there.
        scalar_dtype = torch.float32 if first.device.type == "mps" else torch.float64
        families = {}
        for m, h in enumerate(self._hypers):
            families.setdefault(h.family, []).append(m)
        self._groups = []
        self._where: list[tuple[FamilyGroup, int]] = [None] * self.size  # member -> (group, row)
        for family, members in families.items():
            idx = None
            if len(families) > 1:
                idx = torch.tensor(members, dtype=torch.long, device=first.device)
            group = FamilyGroup(family, members, idx, self._params, scalar_dtype)
            group.refresh(self._hypers)
            self._groups.append(group)
            for row, m in enumerate(members):
                self._where[m] = (group, row)
        # The one choice of path, for the optimizer's life (device, dtype and layout are fixed)
        self.fused = fused_kernels_apply(self._params)
        self._fused_steps = [FusedFamilyStep(g) for g in self._groups] if self.fused else []
        self._mask_key: tuple[bool, ...] | None = None
        self._mask: torch.Tensor | None = None

    def get_lr(self, member: int) -> float:
        return self._hypers[member].lr

    def set_lr(self, member: int, lr: float) -> None:
        self._hypers[member].lr = float(lr)
        self._where[member][0].refresh(self._hypers)

    def zero_grad(self) -> None:
        for p in self._params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: torch.Tensor | Sequence[bool] | None = None) -> None:
        """One step for every member; `active` (M bools as a list, or an [M] bool tensor on the
        params' device, or None = all): an inactive member's parameters, state and step count
        do not change at all. The list is the cheaper form: the fused path reads a tensor once
        on the host, the vectorised one builds a tensor from a list only when it changes."""
        if isinstance(active, torch.Tensor):
            if active.shape != (self.size,) or active.dtype != torch.bool:
                raise ValueError(
                    f"step(active=...) takes a [{self.size}] bool tensor, "
                    f"got {tuple(active.shape)} {active.dtype}"
                )
            if self.fused:
                active = active.tolist()
        elif active is not None:
            active = [bool(a) for a in active]
            if len(active) != self.size:
                raise ValueError(
                    f"step(active=...) takes {self.size} bools, one per member, got {len(active)}"
                )
        if isinstance(active, list) and all(active):
            active = None
        rows = [i for i, p in enumerate(self._params) if p.grad is not None]
        if not rows:
            return
        if self.fused:
            for fused in self._fused_steps:
                fused.step(self._params, rows, active, self._hypers)
            return
        if isinstance(active, list):
            active = self._mask_tensor(active)
        self._step_groups(rows, active)

    @torch.no_grad()
    def step_vectorised(self, active: torch.Tensor | None = None) -> None:
        """One step on the vectorised path whatever the device, `active` an [M] bool tensor on
        the params' device (None: all): the step a CUDA graph captures (graphed_step.py). Every
        hyper-parameter and step count is a device tensor that set_lr and the step change in
        place, and nothing is read back on the host."""
        self._step_groups([i for i, p in enumerate(self._params) if p.grad is not None], active)

    def _step_groups(self, rows: list[int], active: torch.Tensor | None) -> None:
        """The vectorised path: each family's group over its members' rows of the mask."""
        for group in self._groups:
            a = active
            if active is not None and group.idx is not None:
                a = active.index_select(0, group.idx)
            group.step(self._params, rows, a)

    def _mask_tensor(self, active: list[bool]) -> torch.Tensor:
        """The vectorised path's [M] mask for a list; it changes only between epochs, so the last
        one is kept (building it is a host-to-device copy)."""
        if tuple(active) != self._mask_key:
            self._mask = torch.tensor(active, device=self._params[0].device)
            self._mask_key = tuple(active)
        return self._mask

    def member_state_dict(self, member: int) -> dict:
        """What torch.optim's optimizer (as build_optimizer makes it) over the member's plain
        parameters would hold after the same steps; tensors cloned, on CPU."""
        group, row = self._where[member]
        h = self._hypers[member]
        steps = group.steps[:, row].tolist()
        default = torch.get_default_dtype()
        fused = self._torch_fused
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
        return {"state": state, "param_groups": [torch_param_group(h, fused, len(steps))]}

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
                for name, t in zip(group.state_names(), group.state_tensors(i), strict=True):
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
        for fused in self._fused_steps:
            fused.forget()


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
    if size == 1:  # a single run: torch's own foreach norms (fewer kernels than per row)
        per_param = torch.stack(torch._foreach_norm(grads)).unsqueeze(1)
    else:
        per_param = torch.stack([_member_norms(g) for g in grads])
    norms = torch.linalg.vector_norm(per_param, dim=0)
    max_norms = max_norms.to(norms.dtype)
    coef = torch.clamp(max_norms / (norms + CLIP_EPS), max=1.0)
    coef = torch.where(torch.isinf(max_norms), 1.0, coef).to(grads[0].dtype)
    if size == 1:
        torch._foreach_mul_(grads, coef.squeeze(0))  # x * 1.0 is x exactly
    else:
        # One call for all of them (each a member's coefficient broadcast over its slice): in
        # a stack trained in several threads, each call into torch is a turn at the GIL.
        by_dim = {n: col(coef, n) for n in {g.dim() for g in grads}}
        torch._foreach_mul_(grads, [by_dim[g.dim()] for g in grads])
    return norms


def _member_norms(g: torch.Tensor) -> torch.Tensor:
    """[M]: each member's 2-norm of its slice of the stacked [M, ...] tensor `g`, in one call."""
    if g.dim() == 1:
        return torch.linalg.vector_norm(g.unsqueeze(1), dim=1)
    return torch.linalg.vector_norm(g, dim=tuple(range(1, g.dim())))
