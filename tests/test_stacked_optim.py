"""The stacked optimizer against its oracle: K plain parameter sets, each with its own
torch.optim optimizer, fed the same gradients (float64, CPU). Every test runs on both paths:
torch's fused kernels (the default on the CPU) and the vectorised fallback (MPS's)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from vae_runner.config.schema import AdamConfig, AdamWConfig, SGDConfig
from vae_runner.training import stacked_optim
from vae_runner.training.build import build_optimizer
from vae_runner.training.stacked_optim import StackedOptimizer, clip_grad_norms
from vae_runner.training.stacked_optim_fused import fused_kernels_apply
from vae_runner.training.stacked_optim_state import member_hyper, torch_fuses, torch_param_group

# A member's parameter shapes: a matrix, a vector, a 3-d tensor and a scalar
SHAPES = [(3, 4), (4,), (2, 3, 2), ()]
CLOSE = dict(rtol=1e-12, atol=1e-15)


@pytest.fixture(autouse=True, params=["fused", "vectorised"])
def path(request, monkeypatch):
    """The optimizer's path: the default one (fused on the CPU), or the fallback forced through
    the one function that chooses."""
    if request.param == "vectorised":
        monkeypatch.setattr(stacked_optim, "fused_kernels_apply", lambda params: False)
    return request.param


def adam(wd=0.0, betas=(0.9, 0.999)):
    return AdamConfig(name="adam", weight_decay=wd, betas=list(betas))


def adamw(wd=0.01, betas=(0.9, 0.999)):
    return AdamWConfig(name="adamw", weight_decay=wd, betas=list(betas))


def sgd(momentum=0.0, nesterov=False, wd=0.0):
    return SGDConfig(name="sgd", weight_decay=wd, momentum=momentum, nesterov=nesterov)


def single_tensor_torch(cfg, params, lr):
    """The oracle: torch.optim with the options of the schema's documented meaning, on its
    single-tensor path (the arithmetic the stacked optimizer follows)."""
    if isinstance(cfg, SGDConfig):
        return torch.optim.SGD(
            params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay, foreach=False,
        )  # fmt: skip
    kind = torch.optim.AdamW if isinstance(cfg, AdamWConfig) else torch.optim.Adam
    return kind(params, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, foreach=False)


class Pair:
    """A stacked optimizer and its oracle, from the same starting weights."""

    def __init__(self, configs, lrs, seed=0, make=single_tensor_torch, dtype=torch.float64):
        gen = torch.Generator().manual_seed(seed)
        self.k, self.dtype = len(configs), dtype
        start = [torch.randn(self.k, *s, generator=gen, dtype=dtype) for s in SHAPES]
        self.stacked = [w.clone().requires_grad_(True) for w in start]
        self.plain = [[w[m].clone().requires_grad_(True) for w in start] for m in range(self.k)]
        self.opt = StackedOptimizer(self.stacked, configs, lrs)
        self.oracle = [make(c, ps, lr) for c, ps, lr in zip(configs, self.plain, lrs, strict=True)]
        self.gen = torch.Generator().manual_seed(seed + 1)

    def grads(self):
        return [torch.randn(self.k, *s, generator=self.gen, dtype=self.dtype) for s in SHAPES]

    def step(self, active=None, grads=None, stacked=True, mask_as=torch.tensor):
        """One step of both with the same gradients; an inactive member's oracle does not step.
        stacked=False: only the oracle steps. mask_as: the form the stacked step gets `active`
        in (a bool tensor, or list: the list itself)."""
        grads = self.grads() if grads is None else grads
        if stacked:
            for p, g in zip(self.stacked, grads, strict=True):
                p.grad = g.clone()
            self.opt.step(None if active is None else mask_as(active))
        for m, opt in enumerate(self.oracle):
            if active is None or active[m]:
                for p, g in zip(self.plain[m], grads, strict=True):
                    p.grad = g[m].clone()
                opt.step()

    def assert_equal_to_oracle(self, **close):
        for m in range(self.k):
            for i, p in enumerate(self.plain[m]):
                torch.testing.assert_close(
                    self.stacked[i].detach()[m], p.detach(), **(close or CLOSE)
                )


STACKS = {
    "adam, lrs and betas differ": ([adam(), adam(betas=(0.8, 0.99)), adam()], [1e-2, 3e-3, 0.1]),
    "adam with L2 weight decay": ([adam(wd=0.1), adam(), adam(wd=1e-3)], [1e-2, 1e-2, 5e-2]),
    "adamw": ([adamw(), adamw(wd=0.0), adamw(0.3, (0.5, 0.9))], [1e-2, 2e-2, 1e-1]),
    "sgd without momentum": ([sgd(), sgd(wd=0.1)], [0.1, 0.05]),
    "sgd momentum": ([sgd(0.9), sgd(0.5, wd=0.01)], [0.1, 0.05]),
    "sgd nesterov": ([sgd(0.9, True), sgd(0.8, True, wd=0.1)], [0.1, 0.02]),
    "sgd: nesterov, plain momentum and none in one stack": (
        [sgd(0.9, True), sgd(0.9), sgd(), sgd(0.7, True, 0.1)],
        [0.1, 0.05, 0.02, 0.03],
    ),
    "mixed kinds": (
        [adam(), sgd(0.9, True), adamw(0.1), sgd(), adam(wd=0.01), sgd(0.5)],
        [1e-2, 0.1, 3e-2, 0.05, 2e-2, 0.08],
    ),
}


@pytest.mark.parametrize("name", STACKS)
def test_twenty_steps_equal_each_members_own_torch_optimizer(name):
    pair = Pair(*STACKS[name])
    for _ in range(20):
        pair.step()
    pair.assert_equal_to_oracle()
    assert [pair.opt.get_lr(m) for m in range(pair.k)] == STACKS[name][1]


@pytest.mark.parametrize("mask_as", [torch.tensor, list], ids=["tensor mask", "list mask"])
@pytest.mark.parametrize("name", ["adam, lrs and betas differ", "sgd momentum", "mixed kinds"])
def test_an_inactive_member_does_not_change_at_all_while_the_others_move(name, mask_as):
    configs, lrs = STACKS[name]
    pair = Pair(configs, lrs)
    k = pair.k
    for _ in range(3):
        pair.step()
    frozen = 1  # from here on member 1 is inactive, and its gradients are NaN
    before = [p.detach()[frozen].clone() for p in pair.stacked]
    state_before = pair.opt.member_state_dict(frozen)
    for t in range(10):
        grads = pair.grads()
        for g in grads:
            g[frozen] = math.nan
        # member 0 is also inactive on odd steps: each member counts its own steps
        active = [m != frozen and (m != 0 or t % 2 == 0) for m in range(k)]
        pair.step(active, grads, mask_as=mask_as)
    for p, b in zip(pair.stacked, before, strict=True):
        assert torch.equal(p.detach()[frozen], b)  # bit-identical
    state_after = pair.opt.member_state_dict(frozen)
    for i, entry in state_before["state"].items():
        for key, value in entry.items():
            assert torch.equal(state_after["state"][i][key], value), (i, key)
    if "step" in state_before["state"][0]:
        assert state_after["state"][0]["step"].item() == 3
        assert pair.opt.member_state_dict(0)["state"][0]["step"].item() == 3 + 5
    pair.assert_equal_to_oracle()  # the oracle of the frozen member stopped after 3 steps


def test_a_member_inactive_from_the_start_holds_no_state():
    pair = Pair([adam(), sgd(0.9)], [1e-2, 0.1])
    pair.step([True, False])
    pair.step([True, False])
    assert pair.opt.member_state_dict(1)["state"] == {}  # torch's, before any step
    pair.step()  # its first step sets its buffer to the gradient, as torch's first does
    pair.step()
    pair.assert_equal_to_oracle()


def test_a_parameter_without_gradient_is_skipped_as_torch_skips_it():
    pair = Pair([adam(), adamw(0.1)], [1e-2, 2e-2])
    pair.step()
    grads = pair.grads()
    for p, g in zip(pair.stacked, grads, strict=True):
        p.grad = g.clone()
    pair.stacked[1].grad = None
    pair.opt.step()
    for m, opt in enumerate(pair.oracle):
        for p, g in zip(pair.plain[m], grads, strict=True):
            p.grad = g[m].clone()
        pair.plain[m][1].grad = None
        opt.step()
    pair.step()
    pair.assert_equal_to_oracle()
    steps = [e["step"].item() for e in pair.opt.member_state_dict(0)["state"].values()]
    assert steps == [3, 2, 3, 3]


@pytest.mark.parametrize("name", ["adam with L2 weight decay", "adamw", "mixed kinds"])
def test_member_state_dict_is_build_optimizers_state_dict(name):
    configs, lrs = STACKS[name]
    pair = Pair(configs, lrs, make=build_optimizer)  # the optimizer a single run builds
    for _ in range(5):
        pair.step()
    for m, opt in enumerate(pair.oracle):
        ours, torchs = pair.opt.member_state_dict(m), opt.state_dict()
        assert ours["param_groups"] == torchs["param_groups"]
        assert ours["state"].keys() == torchs["state"].keys()
        for i, entry in torchs["state"].items():
            assert ours["state"][i].keys() == entry.keys()
            for key, value in entry.items():
                assert ours["state"][i][key].device.type == "cpu"
                assert ours["state"][i][key].dtype == value.dtype
                torch.testing.assert_close(ours["state"][i][key], value, **CLOSE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("cfg", [adam(wd=0.1, betas=(0.8, 0.99)), adamw(), sgd(0.9, True, 0.01)])
def test_a_members_param_group_is_the_one_torch_writes_fused_or_foreach(cfg, fused, dtype):
    """torch_param_group writes torch's keys out (building a torch optimizer would import
    torch._dynamo): held here against the installed torch, on both of build_optimizer's paths."""
    param = torch.zeros(3, dtype=dtype, requires_grad=True)
    if fused:
        torchs = build_optimizer(cfg, [param], 3e-3)
    else:
        kind = {AdamConfig: torch.optim.Adam, AdamWConfig: torch.optim.AdamW}.get(type(cfg))
        options = dict(betas=tuple(cfg.betas)) if kind else dict(momentum=cfg.momentum)
        if kind is None:
            kind, options["nesterov"] = torch.optim.SGD, cfg.nesterov
        torchs = kind([param], lr=3e-3, weight_decay=cfg.weight_decay, foreach=True, **options)
    ours = torch_param_group(member_hyper(cfg, 3e-3), fused, n_params=1)
    assert ours == torchs.state_dict()["param_groups"][0]


def test_a_members_torch_optimizer_is_fused_where_torch_fuses_it():
    """The fused-or-foreach choice a member's state dict records is torch's own: fused for a
    floating-point parameter on a device of torch's fused kernels (mps among them), else not."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    assert torch_fuses(torch.zeros(2)) and torch_fuses(torch.zeros(2, dtype=torch.bfloat16))
    assert not torch_fuses(torch.zeros(2, dtype=torch.long))
    assert not torch_fuses(torch.zeros(2, device="meta"))  # no fused kernels there
    assert "mps" in _get_fused_kernels_supported_devices()  # fused in torch's state dict there
    fused = build_optimizer(adam(), [torch.zeros(2, requires_grad=True)], 1e-3)
    assert fused.state_dict()["param_groups"][0]["fused"] is True


@pytest.mark.parametrize("name", ["sgd nesterov", "mixed kinds"])
def test_a_torch_optimizer_loading_a_members_state_steps_as_the_member(name):
    configs, lrs = STACKS[name]
    pair = Pair(configs, lrs)
    for _ in range(4):
        pair.step()
    # fresh torch optimizers over copies of the members' weights, loaded from member_state_dict
    weights = [[p.detach()[m].clone().requires_grad_(True) for p in pair.stacked] for m in
               range(pair.k)]  # fmt: skip
    pair.plain = weights
    pair.oracle = []
    for m, (cfg, ps) in enumerate(zip(configs, weights, strict=True)):
        opt = single_tensor_torch(cfg, ps, 1.0)
        opt.load_state_dict(pair.opt.member_state_dict(m))
        pair.oracle.append(opt)
    assert [o.param_groups[0]["lr"] for o in pair.oracle] == lrs  # the lr travelled
    for _ in range(6):
        pair.step()
    pair.assert_equal_to_oracle()


@pytest.mark.parametrize("name", ["adam, lrs and betas differ", "sgd momentum", "mixed kinds"])
def test_loading_torchs_state_dicts_then_stepping_continues_as_torch(name):
    configs, lrs = STACKS[name]
    pair = Pair(configs, lrs)
    for _ in range(5):
        pair.step(stacked=False)
    # a stack with other lrs (and betas), then each member loaded from its torch state dict
    weights = [torch.stack([ps[i].detach() for ps in pair.plain]) for i in range(len(SHAPES))]
    pair.stacked = [w.clone().requires_grad_(True) for w in weights]
    pair.opt = StackedOptimizer(pair.stacked, configs, [0.5] * pair.k)
    for m, opt in enumerate(pair.oracle):
        pair.opt.load_member_state_dict(m, opt.state_dict())
    assert [pair.opt.get_lr(m) for m in range(pair.k)] == lrs
    for _ in range(10):
        pair.step()
    pair.assert_equal_to_oracle()


def test_loading_takes_the_dicts_hyper_parameters():
    pair = Pair([adam(), sgd(0.0)], [1e-2, 0.1])
    donors = [
        torch.optim.Adam(pair.plain[0], lr=3e-3, betas=(0.7, 0.95), eps=1e-6, weight_decay=0.2),
        torch.optim.SGD(pair.plain[1], lr=0.2, momentum=0.8, nesterov=True, weight_decay=0.1),
    ]
    pair.oracle = donors
    for _ in range(3):
        pair.step(stacked=False)
    for m, opt in enumerate(donors):
        pair.opt.load_member_state_dict(m, opt.state_dict())
    with torch.no_grad():
        for i, p in enumerate(pair.stacked):
            p.copy_(torch.stack([ps[i] for ps in pair.plain]))
    assert pair.opt.member_state_dict(1)["param_groups"][0]["momentum"] == 0.8
    for _ in range(10):
        pair.step()
    pair.assert_equal_to_oracle()


def test_set_lr_changes_one_members_steps_from_then_on():
    pair = Pair(*STACKS["mixed kinds"])
    for _ in range(3):
        pair.step()
    for m, lr in [(0, 1e-3), (1, 0.3), (2, 0.0)]:
        pair.opt.set_lr(m, lr)
        pair.oracle[m].param_groups[0]["lr"] = lr
    assert pair.opt.get_lr(1) == 0.3
    assert pair.opt.member_state_dict(2)["param_groups"][0]["lr"] == 0.0
    for _ in range(5):
        pair.step()
    pair.assert_equal_to_oracle()


def test_clear_state_frees_the_moments_and_starts_afresh():
    pair = Pair(*STACKS["mixed kinds"])
    for _ in range(3):
        pair.step()
    pair.opt.clear_state()
    assert all(pair.opt.member_state_dict(m)["state"] == {} for m in range(pair.k))
    for opt in pair.oracle:
        opt.state.clear()
    for _ in range(3):
        pair.step()
    pair.assert_equal_to_oracle()


def test_zero_grad_sets_grads_to_none():
    pair = Pair([adam()], [1e-2])
    pair.step()
    pair.opt.zero_grad()
    assert all(p.grad is None for p in pair.stacked)


FUSED_KERNELS = {"adam": "aten::_fused_adam_", "adamw": "aten::_fused_adamw_",
                 "sgd": "aten::_fused_sgd_"}  # fmt: skip


def fused_kernel_calls(step) -> dict[str, int]:
    """How many times step() called each of torch's fused optimizer kernels."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    names = [event.name for event in prof.events()]
    return {kind: names.count(op) for kind, op in FUSED_KERNELS.items()}


def test_on_the_cpu_a_step_is_one_fused_kernel_call_per_active_member(path):
    pair = Pair(*STACKS["mixed kinds"])  # adam, sgd, adamw, sgd, adam, sgd
    active = [True, True, True, False, False, True]
    calls = fused_kernel_calls(lambda: pair.step(active, mask_as=list))
    if path == "fused":
        assert calls == {"adam": 1, "adamw": 1, "sgd": 2}
    else:
        assert calls == {"adam": 0, "adamw": 0, "sgd": 0}
    assert pair.opt.fused == (path == "fused")
    pair.assert_equal_to_oracle()


def test_the_fused_kernels_are_chosen_for_contiguous_cpu_tensors_of_a_float_dtype():
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        assert fused_kernels_apply([torch.zeros(2, 3, dtype=dtype), torch.zeros(2, dtype=dtype)])
    # the kernels walk each tensor's memory in order: a strided parameter would be garbled
    assert not fused_kernels_apply([torch.zeros(2, 3), torch.zeros(3, 2).t()])
    assert not fused_kernels_apply([torch.zeros(2, 3, device="meta")])  # no kernels there


def test_a_strided_gradient_steps_as_the_same_values_in_order():
    pair = Pair([adam(), sgd(0.9), adamw()], [1e-2, 0.1, 1e-2])
    for _ in range(3):
        grads = pair.grads()
        grads[0] = grads[0].transpose(1, 2).contiguous().transpose(1, 2)  # same values, strided
        pair.step(grads=grads)
        assert not pair.stacked[0].grad.is_contiguous()
    pair.assert_equal_to_oracle()


def test_in_float32_a_member_steps_as_a_single_runs_fused_torch_optimizer(path):
    # build_optimizer gives a single run torch's fused optimizer on the CPU: the fused path
    # calls the same kernel with the same numbers, so each member matches it bit for bit.
    configs, lrs = STACKS["mixed kinds"]
    pair = Pair(configs, lrs, make=build_optimizer, dtype=torch.float32)
    assert all(opt.defaults["fused"] for opt in pair.oracle)
    for t in range(10):
        pair.step([m != t % 3 for m in range(pair.k)], mask_as=list)
    exact = dict(rtol=0, atol=0) if path == "fused" else dict(rtol=1e-5, atol=1e-6)
    pair.assert_equal_to_oracle(**exact)


def other_kind(sd, sgd_sd):
    return sgd_sd


def not_a_state_dict(sd, _):
    return {"state": {}}


def without_exp_avg_sq(sd, _):
    del sd["state"][2]["exp_avg_sq"]
    return sd


def wrong_shape(sd, _):
    sd["state"][1]["exp_avg"] = torch.zeros(5)
    return sd


def one_parameter_short(sd, _):
    sd["param_groups"][0]["params"].pop()
    del sd["state"][3]
    return sd


def amsgrad(sd, _):
    sd["param_groups"][0]["amsgrad"] = True
    return sd


def no_betas(sd, _):
    del sd["param_groups"][0]["betas"]
    return sd


@pytest.mark.parametrize(
    "bad, message",
    [
        (other_kind, "holds sgd's state, but the member's optimizer is adam"),
        (not_a_state_dict, "is not a torch.optim state dict"),
        (without_exp_avg_sq, "parameter 2 lacks exp_avg_sq"),
        (wrong_shape, r"parameter 1: exp_avg is \(5,\), the parameter's shape is \(4,\)"),
        (one_parameter_short, "holds 3 parameters; the model has 4"),
        (amsgrad, "has amsgrad=True; stacked training needs False"),
        (no_betas, "holds an unknown optimizer's state"),
    ],
)  # fmt: skip
def test_a_state_dict_that_does_not_fit_raises_naming_what_and_changes_nothing(bad, message):
    pair = Pair([adam(), sgd(0.9)], [1e-2, 0.1])
    pair.step()
    before = pair.opt.member_state_dict(0)
    torch_adam = torch.optim.Adam([p.detach()[0].clone() for p in pair.stacked], lr=0.5)
    for p in torch_adam.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    torch_adam.step()
    torch_sgd = torch.optim.SGD([torch.zeros(s) for s in SHAPES], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=message):
        pair.opt.load_member_state_dict(0, bad(torch_adam.state_dict(), torch_sgd.state_dict()))
    after = pair.opt.member_state_dict(0)
    assert after["param_groups"] == before["param_groups"]
    for i, entry in before["state"].items():
        assert all(torch.equal(after["state"][i][k], v) for k, v in entry.items())


def member_grads(k, seed=3):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(k, *s, generator=gen, dtype=torch.float64) for s in SHAPES]


def test_clip_grad_norms_is_clip_grad_norm_per_member():
    k = 5
    grads = member_grads(k)
    grads[2] = grads[2] * 10  # some members above their max norm, some below
    stacked = [torch.zeros(k, *s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    for p, g in zip(stacked, grads, strict=True):
        p.grad = g.clone()
    stacked[3].grad = None  # counts as zero
    max_norms = torch.tensor([1.0, 100.0, 3.0, math.inf, 0.5], dtype=torch.float64)
    norms = clip_grad_norms(stacked, max_norms)
    for m in range(k):
        plain = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES[:3]]
        for p, g in zip(plain, grads, strict=False):
            p.grad = g[m].clone()
        expected = torch.nn.utils.clip_grad_norm_(plain, max_norm=max_norms[m].item())
        torch.testing.assert_close(norms[m], expected, **CLOSE)
        for p, q in zip(stacked[:3], plain, strict=True):
            torch.testing.assert_close(p.grad[m], q.grad, **CLOSE)
    assert stacked[3].grad is None
    for i in range(3):  # max norm inf: measured, not touched
        assert torch.equal(stacked[i].grad[3], grads[i][3])


def test_a_nan_gradient_in_one_member_does_not_leak_into_the_others():
    k = 3
    grads = member_grads(k)
    grads[0][1, 2, 1] = math.nan  # member 1 clipped, its gradient holds a NaN
    grads[1][2, 0] = math.nan  # member 2 only measured (inf), its gradient holds a NaN
    stacked = [torch.zeros(k, *s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    for p, g in zip(stacked, grads, strict=True):
        p.grad = g.clone()
    norms = clip_grad_norms(stacked, torch.tensor([0.5, 0.5, math.inf], dtype=torch.float64))
    assert norms[1].isnan() and norms[2].isnan()
    plain = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    for p, g in zip(plain, grads, strict=True):
        p.grad = g[0].clone()
    torch.testing.assert_close(norms[0], torch.nn.utils.clip_grad_norm_(plain, 0.5), **CLOSE)
    for p, q, g in zip(stacked, plain, grads, strict=True):
        torch.testing.assert_close(p.grad[0], q.grad, **CLOSE)
        assert torch.allclose(p.grad[2], g[2], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("max_norm", [0.5, math.inf])
def test_a_stack_of_one_clips_as_clip_grad_norm_does(max_norm):
    """M = 1 (every single run) takes torch's foreach norms: the same norm and gradients."""
    g = torch.Generator().manual_seed(3)
    shapes = [(4, 3), (3,), (2, 4)]
    grads = [torch.randn(1, *s, generator=g, dtype=torch.float64) for s in shapes]
    stacked = [torch.zeros(1, *s, dtype=torch.float64, requires_grad=True) for s in shapes]
    plain = [torch.zeros(*s, dtype=torch.float64, requires_grad=True) for s in shapes]
    for p, q, grad in zip(stacked, plain, grads, strict=True):
        p.grad, q.grad = grad.clone(), grad[0].clone()
    norm = clip_grad_norms(stacked, torch.tensor([max_norm], dtype=torch.float64))
    expected = torch.nn.utils.clip_grad_norm_(plain, max_norm)
    assert norm.shape == (1,) and norm[0].item() == pytest.approx(expected.item(), rel=1e-15)
    for p, q in zip(stacked, plain, strict=True):
        torch.testing.assert_close(p.grad[0], q.grad, rtol=1e-15, atol=0)
