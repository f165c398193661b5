"""The stacked optimizer's fast path: torch's fused Adam, AdamW and SGD kernels (the ones
`torch.optim.Adam(fused=True)` calls), once per active member over that member's slices of every
parameter, with its own hyper-parameters. A step then costs one kernel call per member instead
of a few [M]-broadcast kernels per parameter tensor, which is what a single run (a stack of one)
paid before the stacked optimizer. The state stays the family group's own tensors (one row per
member), so member_state_dict and the vectorised fallback read and write the same layout."""

from __future__ import annotations

import torch

from vae_runner.training.stacked_optim_group import FamilyGroup
from vae_runner.training.stacked_optim_state import MemberHyper

# Where torch's fused kernels run and are tested here. MPS has fused kernels too, but counts
# steps in float32 and is not tested: it keeps the vectorised path.
FUSED_DEVICES = ("cpu", "cuda")
FUSED_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


def fused_kernels_apply(params: list[torch.Tensor]) -> bool:
    """Whether the fused kernels can update these stacked parameters. They walk each tensor's
    memory in order (a strided one would be updated wrongly, silently), so every parameter must
    be contiguous: then each member's slice p[m] is too."""
    first = params[0]
    return (
        first.device.type in FUSED_DEVICES
        and first.dtype in FUSED_DTYPES
        and all(p.is_contiguous() for p in params)
    )


class FusedFamilyStep:
    """The fused update of one family group's members."""

    def __init__(self, group: FamilyGroup):
        self.group = group
        self._mask_key: tuple[bool, ...] | None = None
        self._mask: torch.Tensor | None = None
        self._counts_of: torch.Tensor | None = None  # the group.steps the views below follow
        self._kept: dict[tuple, tuple] = {}  # _slices

    def step(self, params, rows: list[int], active: list[bool] | None, hypers: list[MemberHyper]):
        """One step of the group's members for the parameters in `rows` (those with a gradient);
        `active`: per member of the whole stack, or None for all."""
        g = self.group
        on = [True] * len(g.members) if active is None else [active[m] for m in g.members]
        if not any(on):
            return
        g.count_steps(rows, 1.0 if all(on) else self._active_rows(on))
        counts = self._step_counts() if g.family == "adam" else None
        # Each tensor split once into its members' slices (cheap views); p[m] of the whole
        # stack, the state's rows in the group's order.
        # The parameters' and the state's slices are kept while those tensors are the same
        # (the state is made at the first step, and anew after clear()); the gradients are new
        # at every step.
        p_of, g_of, s_of = {}, {}, {}
        for i in rows:
            grad = params[i].grad
            p_of[i] = self._slices(("param", i), params[i])
            g_of[i] = (grad if grad.is_contiguous() else grad.contiguous()).unbind(0)
            s_of[i] = [self._slices(("state", i, k), t) for k, t in enumerate(g.state_tensors(i))]
        for row, m in enumerate(g.members):
            if not on[row]:
                continue  # an inactive member's slices, state and counts stay as they are
            ps = [p_of[i][m] for i in rows]
            gs = [g_of[i][m] for i in rows]
            states = [[s_of[i][k][row] for i in rows] for k in range(len(g.state_names()))]
            h = hypers[m]
            if g.family == "adam":
                steps = [counts[row][i] for i in rows]
                _adam(h, ps, gs, *states, steps)
            else:
                _sgd(h, ps, gs, states[0] if states and h.momentum else [])

    def _slices(self, key: tuple, tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """tensor.unbind(0), kept under `key` while it is that same tensor."""
        kept = self._kept.get(key)
        if kept is None or kept[0] is not tensor:
            kept = self._kept[key] = (tensor, tensor.unbind(0))
        return kept[1]

    def forget(self) -> None:
        """Let go of the kept slices (and so of the tensors they view): the state is freed."""
        self._kept.clear()

    def _active_rows(self, on: list[bool]) -> torch.Tensor:
        """The [rows] 0/1 increment of the step counts; it changes only between epochs, so the
        last one is kept (building it is a host-to-device copy)."""
        key = tuple(on)
        if key != self._mask_key:
            g = self.group
            self._mask = torch.tensor(on, dtype=g.scalar_dtype, device=g.device)
            self._mask_key = key
        return self._mask

    def _step_counts(self) -> list[list[torch.Tensor]]:
        """Per member row, per parameter, a 0-d float32 view of its step count, refreshed from
        group.steps: the CUDA kernels read a step count as float32 memory (the CPU ones convert
        it), so a float32 copy serves both; it is exact below 2**24 steps, as torch's own."""
        g = self.group
        if self._counts_of is not g.steps:  # made anew by clear()
            self._counts_of = g.steps
            self._counts32 = torch.empty(g.steps.shape, dtype=torch.float32, device=g.device)
            self._views = [list(column.unbind(0)) for column in self._counts32.unbind(1)]
        self._counts32.copy_(g.steps)
        return self._views


def _adam(h: MemberHyper, ps, gs, exp_avgs, exp_avg_sqs, steps) -> None:
    """torch.optim.Adam / AdamW (fused=True)'s kernel call, as torch/optim/adam.py makes it
    after counting the step, without grad scaling."""
    kernel = torch._fused_adamw_ if h.kind == "adamw" else torch._fused_adam_
    kernel(
        ps, gs, exp_avgs, exp_avg_sqs, [], steps,
        lr=h.lr, beta1=h.betas[0], beta2=h.betas[1], weight_decay=h.weight_decay, eps=h.eps,
        amsgrad=False, maximize=False,
    )  # fmt: skip


def _sgd(h: MemberHyper, ps, gs, buffers) -> None:
    """torch.optim.SGD (fused=True)'s kernel call (torch/optim/sgd.py). A buffer here starts at
    zero, so every step may be a later one (buf = momentum * buf + grad): the first gives
    buf = grad, what torch's first step (is_first_step, buf = grad) sets."""
    torch._fused_sgd_(
        ps, gs, buffers,
        weight_decay=h.weight_decay, momentum=h.momentum, lr=h.lr, dampening=0.0,
        nesterov=h.nesterov, maximize=False, is_first_step=False,
    )  # fmt: skip
