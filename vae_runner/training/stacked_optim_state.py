"""A stacked optimizer member's hyper-parameters, and its state in torch.optim's state-dict
format (what a single run's checkpoint holds): the param group a member writes, and the checks
and conversion of one it reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vae_runner.config.schema import AdamConfig, AdamWConfig, OptimizerConfig, SGDConfig

ADAM_EPS = 1e-8  # torch's default; the configs have no eps

# What a member of each kind needs in its param group and in a parameter's state
GROUP_KEYS = {
    "adam": ("lr", "betas", "eps", "weight_decay"),
    "adamw": ("lr", "betas", "eps", "weight_decay"),
    "sgd": ("lr", "momentum", "nesterov", "weight_decay"),
}
STATE_KEYS = {"adam": ("step", "exp_avg", "exp_avg_sq"), "sgd": ("momentum_buffer",)}
STATE_KEYS["adamw"] = STATE_KEYS["adam"]
# torch options the stacked optimizer does not implement, and the value it does
FIXED_OPTIONS = {"amsgrad": False, "maximize": False, "dampening": 0}


@dataclass
class MemberHyper:
    """One member's hyper-parameters as Python numbers (the stacked optimizer's tensors are
    copies of these)."""

    kind: str  # "adam", "adamw" or "sgd": the torch.optim class the member follows
    lr: float
    weight_decay: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = ADAM_EPS
    momentum: float = 0.0
    nesterov: bool = False

    @property
    def family(self) -> str:
        """Adam and AdamW share one update (they differ in where weight decay goes)."""
        return "sgd" if self.kind == "sgd" else "adam"


def member_hyper(cfg: OptimizerConfig, lr: float) -> MemberHyper:
    """The options build_optimizer gives torch for this config."""
    lr = float(lr)
    match cfg:
        # AdamW subclasses Adam's schema: test it first.
        case AdamWConfig():
            return MemberHyper("adamw", lr, cfg.weight_decay, tuple(cfg.betas))
        case AdamConfig():
            return MemberHyper("adam", lr, cfg.weight_decay, tuple(cfg.betas))
        case SGDConfig():
            return MemberHyper(
                "sgd", lr, cfg.weight_decay, momentum=cfg.momentum, nesterov=cfg.nesterov
            )
    raise ValueError(f"StackedOptimizer has no rule for optimizer config {cfg!r}")


def torch_fuses(param: torch.Tensor) -> bool:
    """Whether torch's optimizer built with fused=True (build_optimizer's first choice) is
    fused for a parameter like `param`, as torch decides it: floating point, on a device of
    torch's fused kernels (torch's own list; mps among them, where this project's stacked
    step takes the batched path). Else build_optimizer's optimizer is foreach."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    devices = _get_fused_kernels_supported_devices()
    return param.dtype.is_floating_point and param.device.type in devices


def torch_param_group(h: MemberHyper, fused: bool, n_params: int) -> dict:
    """The param group that torch.optim's optimizer of the member's kind, as build_optimizer
    makes it (`fused`, else foreach), writes in its state dict: its keys as torch 2.14 writes
    them, with the member's hyper-parameters. Written out rather than asked of a torch
    optimizer built for the purpose: building one imports torch._dynamo (training.build.LrShell
    says why that matters). tests/test_stacked_optim.py holds this against the installed
    torch; a key torch adds later is one torch's own load_state_dict fills in. Older torch
    releases, where AdamW was a class of its own, wrote no `decoupled_weight_decay`: it is
    always written here, and it is how a reader tells AdamW's state from Adam's (_kind_of)."""
    paths = dict(foreach=None, fused=True) if fused else dict(foreach=True, fused=None)
    common = dict(weight_decay=h.weight_decay, maximize=FIXED_OPTIONS["maximize"], **paths)
    if h.family == "adam":
        group = dict(lr=h.lr, betas=tuple(h.betas), eps=h.eps, amsgrad=FIXED_OPTIONS["amsgrad"])
        group.update(capturable=False, decoupled_weight_decay=h.kind == "adamw")
    else:
        group = dict(lr=h.lr, momentum=h.momentum, dampening=FIXED_OPTIONS["dampening"])
        group["nesterov"] = h.nesterov
    return {**group, **common, "differentiable": False, "params": list(range(n_params))}


def _kind_of(group: dict) -> str | None:
    if "betas" in group:
        return "adamw" if group.get("decoupled_weight_decay") else "adam"
    return "sgd" if "momentum" in group else None


def member_state_from_torch(
    state: Any, member: int, kind: str, shapes: list[tuple[int, ...]]
) -> tuple[MemberHyper, list[dict[str, Any] | None]]:
    """Check a torch.optim state dict against a member of `kind` whose parameters have these
    shapes (without the member axis); returns its hyper-parameters and, per parameter, its
    state (None where torch holds none; Adam's step as a float). Raises ValueError naming the
    first thing that does not fit."""
    where = f"member {member}'s optimizer state"
    if not isinstance(state, dict) or not {"state", "param_groups"} <= state.keys():
        raise ValueError(f"{where} is not a torch.optim state dict (keys state, param_groups)")
    groups = state["param_groups"]
    if len(groups) != 1:
        raise ValueError(f"{where} has {len(groups)} param groups; a single run's has one")
    (group,) = groups
    found = _kind_of(group)
    if found != kind:
        raise ValueError(
            f"{where} holds {found or 'an unknown optimizer'}'s state, but the member's "
            f"optimizer is {kind}"
        )
    missing = [k for k in (*GROUP_KEYS[kind], "params") if k not in group]
    if missing:
        raise ValueError(f"{where}: its param group lacks {', '.join(missing)}")
    for key, value in FIXED_OPTIONS.items():
        if group.get(key, value) != value:
            raise ValueError(f"{where} has {key}={group[key]}; stacked training needs {value}")
    ids = list(group["params"])
    if len(ids) != len(shapes):
        raise ValueError(f"{where} holds {len(ids)} parameters; the model has {len(shapes)}")
    strays = set(state["state"]) - set(ids)
    if strays:
        raise ValueError(f"{where} has state for parameters {sorted(strays)} not in its group")
    per_param = [
        _param_state(state["state"].get(pid), kind, shape, f"{where}, parameter {i}")
        for i, (pid, shape) in enumerate(zip(ids, shapes, strict=True))
    ]
    hyper = MemberHyper(kind, float(group["lr"]), float(group["weight_decay"]))
    if kind == "sgd":
        hyper.momentum, hyper.nesterov = float(group["momentum"]), bool(group["nesterov"])
    else:
        hyper.betas = (float(group["betas"][0]), float(group["betas"][1]))
        hyper.eps = float(group["eps"])
    return hyper, per_param


def _param_state(entry, kind: str, shape, where: str) -> dict[str, Any] | None:
    if not entry:
        return None  # torch makes a parameter's state at its first step
    entry = {k: v for k, v in entry.items() if v is not None}
    if kind == "sgd":
        keys = [k for k in STATE_KEYS["sgd"] if k in entry]  # may be absent (momentum 0)
    else:
        keys = list(STATE_KEYS[kind])
        missing = [k for k in keys if k not in entry]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(missing)}")
    out = {}
    for k in keys:
        value = entry[k]
        if k == "step":
            out[k] = float(value)
            continue
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(shape):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{where}: {k} is {got}, the parameter's shape is {tuple(shape)}")
        out[k] = value
    return out
