"""device.graphs (training/graphed_step.py), as far as a machine without a GPU can show it.

The function a CUDA graph captures (StaticStep) is run here as it is, on the CPU in float64 with
the noise handed in, against the engine's eager step: the same per-member sums, weights and
optimizer state, also across a learning-rate change and a KL-weight change, which reach the
step through tensors it already holds. The capture and replay themselves need CUDA:
benchmarks/gpu_check.sh checks them on a GPU.
"""

from __future__ import annotations

import pytest
import torch
from test_stacked_oracle import BASE, MEMBERS, HandedNoise
from torch.utils._python_dispatch import TorchDispatchMode

from vae_runner.config.schema import Config
from vae_runner.data.images import load_data
from vae_runner.training import graphed_step
from vae_runner.training.config_warnings import config_warnings
from vae_runner.training.engine import build_engine
from vae_runner.training.graphed_step import GraphedTraining

from helpers import compose_config, one_line, typed_config, vae_train_in_process

# -- the switch ------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "mps"])
def test_graphs_is_off_by_default_for_every_device(device):
    assert compose_config(f"device={device}").device.graphs is False


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_graphs_on_a_device_without_cuda_is_refused_naming_the_key_and_the_fix(device):
    assert one_line(f"device={device}", "device.graphs=true") == (
        f"device.graphs=true needs CUDA, but device={device}; use device=cuda (or device=auto "
        "on a machine with a GPU), or device.graphs=false"
    )


def test_graphs_with_compile_is_refused():
    words = "device.graphs=true and device.compile=true both capture CUDA graphs"
    assert words in one_line("device=auto", "device.graphs=true", "device.compile=true")


def test_graphs_is_a_bool():
    assert one_line("device.graphs=often") == (
        "device.graphs: Value 'often' is not a valid bool (type str)"
    )


def test_cli_refuses_graphs_on_the_cpu_with_exit_2_and_no_run_directory(
    monkeypatch, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    code = vae_train_in_process(
        monkeypatch, "device=cpu", "device.graphs=true", f"hydra.run.dir={run_dir}"
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "device.graphs=true needs CUDA, but device=cpu" in err[0]
    assert not run_dir.exists()


def test_graphs_with_auto_on_a_machine_without_cuda_trains_eagerly_and_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = typed_config("device=auto", "device.graphs=true")
    assert config_warnings(cfg) == [
        "device.graphs=true does nothing here: device=auto found no CUDA GPU, so the training "
        "step runs eagerly; CUDA graphs are CUDA's (device.graphs=false says so)"
    ]
    data = load_data(cfg.data, cfg.likelihood)
    assert build_engine([cfg], data, torch.device("cpu")).graphed is None
    assert config_warnings(typed_config("device=auto")) == []


# -- the static step against the eager one ---------------------------------------------------


def engine_pair(cfgs: list[Config]):
    """Two engines of the same members (float64, noise handed in): one trains with the eager
    step, the other with the static step run as it is (no capture: the CPU)."""
    data = load_data(cfgs[0].data, cfgs[0].likelihood)
    seeds = [cfg.seed for cfg in cfgs]
    cpu = torch.device("cpu")
    eager = build_engine(cfgs, data, cpu, HandedNoise(seeds), torch.float64)
    static = build_engine(cfgs, data, cpu, HandedNoise(seeds), torch.float64)
    static.graphed = GraphedTraining(static, capture=False)
    return eager, static


def assert_same_members(eager, static, rel=1e-9):
    for m in range(eager.members):
        a, b = eager.member_state(m), static.member_state(m)
        for key, value in a["model"].items():
            torch.testing.assert_close(b["model"][key], value, rtol=rel, atol=1e-12, equal_nan=True)
        sa, sb = a["optimizer"], b["optimizer"]
        assert sb["param_groups"] == sa["param_groups"]
        assert sb["state"].keys() == sa["state"].keys()
        for i, entry in sa["state"].items():
            for name, value in entry.items():
                got = sb["state"][i][name]
                torch.testing.assert_close(
                    got, value, rtol=rel, atol=1e-12, check_dtype=False, equal_nan=True
                )
        assert torch.equal(a["rng"]["noise"], b["rng"]["noise"])  # the same draws were taken
        assert torch.equal(a["rng"]["shuffle"], b["rng"]["shuffle"])


def train_both(eager, static, kl_weights, active, rel=1e-9):
    expected = eager.train_epoch(kl_weights, active)
    got = static.train_epoch(kl_weights, active)
    for m, (e, g) in enumerate(zip(expected, got, strict=True)):
        if not active[m]:
            continue
        assert g.first_bad_batch == e.first_bad_batch
        assert g[:4] == pytest.approx(e[:4], rel=rel, abs=0, nan_ok=True), m
    assert_same_members(eager, static, rel)
    return got


STACK = [typed_config(*BASE, "batch_size=100", *overrides) for overrides in MEMBERS.values()]


def test_the_static_step_trains_a_stack_as_the_eager_step_does_lr_and_kl_changes_included():
    eager, static = engine_pair(STACK)
    m = len(STACK)
    steps_of = static.graphed._steps
    train_both(eager, static, [1.0] * m, [True] * m)
    # digits: 1438 training images in batches of 100, so a partial batch of 38 ran too
    assert sorted(steps_of) == [38, 100]
    made = dict(steps_of)
    kl_buffer = static.graphed.kl_weights.data_ptr()
    lr_buffers = [g.h["lr"].data_ptr() for g in static.optimizer._groups if g.family == "adam"]
    for engine in (eager, static):
        engine.set_lr(0, 3e-3)  # as a scheduler's step does, between epochs
        engine.set_lr(2, 5e-4)
    train_both(eager, static, [0.25, 0.5, 1.0, 2.0, 0.0], [True] * m)
    # the same steps read the new values from the tensors they held: nothing was made again,
    # which is what a captured graph needs
    assert dict(steps_of) == made and static.graphed.kl_weights.data_ptr() == kl_buffer
    assert lr_buffers == [
        g.h["lr"].data_ptr() for g in static.optimizer._groups if g.family == "adam"
    ]
    assert static.lr(0) == 3e-3 and static.lr(2) == 5e-4


def test_a_member_sitting_out_does_not_move_and_the_others_match():
    eager, static = engine_pair(STACK)
    m = len(STACK)
    train_both(eager, static, [1.0] * m, [True] * m)
    before = static.member_state(1)
    active = [True, False, True, True, True]
    train_both(eager, static, [1.0] * m, active)
    after = static.member_state(1)
    for key, value in before["model"].items():
        assert torch.equal(after["model"][key], value)
    assert static.graphed._active == tuple(active)  # a graph per active set: captured again


def test_the_static_step_trains_a_single_run_as_the_eager_step_does():
    cfg = typed_config(*BASE, "batch_size=128", "grad_clip=1.0", "annealing=linear")
    eager, static = engine_pair([cfg])
    for epoch, kl in enumerate((0.1, 0.6), start=1):
        if epoch == 2:
            for engine in (eager, static):
                engine.set_lr(0, cfg.lr / 4)
        train_both(eager, static, [kl], [True])


def test_a_non_finite_batch_is_recorded_as_the_eager_step_records_it():
    cfgs = [typed_config(*BASE, "batch_size=100", f"seed={s}", "lr=1e3") for s in (0, 1)]
    eager, static = engine_pair(cfgs)
    got = train_both(eager, static, [1.0, 1.0], [True, True])
    assert all(s.first_bad_batch is not None for s in got)  # lr=1e3 diverged: it was tested


def test_the_warm_up_before_a_capture_leaves_no_trace():
    eager, static = engine_pair(STACK[:3])
    train_both(eager, static, [1.0] * 3, [True] * 3)  # optimizer state and counts exist
    step = static.graphed._steps[100]
    step.index.copy_(torch.arange(300).view(3, 100))
    graphed_step.warm_up(step)
    assert static.optimizer._groups[0].steps.max() > 0
    assert_same_members(eager, static, rel=0)  # weights, optimizer state, generators
    assert all(not t.any() for t in (step.sums.recon, step.sums.batch, step.sums.norm_max))
    train_both(eager, static, [1.0] * 3, [True] * 3)  # and training goes on as before


def test_the_graph_path_is_cuda_only():
    cfg = typed_config(*BASE)
    data = load_data(cfg.data, cfg.likelihood)
    assert build_engine([cfg], data, torch.device("cpu")).graphed is None


# Operators that read a tensor's values on the host (a sync, and a branch a capture would
# freeze): a scalar's value, a mask's true positions, an output whose size the values decide.
HOST_READS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select")


class _RefuseHostReads(TorchDispatchMode):
    """Every operator the step runs, down to torch's own (what Tensor.item, a boolean mask or a
    list index does inside C++): a host read, or a copy to another device, is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        moves = name == "aten::_to_copy" and kwargs.get("device") not in (None, args[0].device)
        masks = name == "aten::index" and any(
            i is not None and i.dtype == torch.bool for i in args[1]
        )
        if name in HOST_READS or moves or masks:
            self.reads.append(name)
        return func(*args, **kwargs)


@pytest.mark.parametrize(
    "members",
    [
        [("optimizer=adam", "grad_clip=1.0", "seed=0")] * 2,
        [  # both optimizer families in one stack, free bits, a member sitting out (below)
            ("optimizer=adam", "grad_clip=1.0", "seed=0"),
            ("optimizer=sgd", "optimizer.momentum=0.9", "grad_clip=0", "seed=1"),
            ("optimizer=adamw", "annealing.free_bits=0.5", "seed=2"),
        ],
    ],
    ids=["adam", "mixed"],
)
def test_the_static_step_reads_nothing_back_to_the_host(monkeypatch, members):
    """A CUDA graph replays kernels only: a step that read a tensor's value on the host would
    sync every batch, and its Python branch would be frozen into the capture. The captured
    function is run here with every such read refused, at Python's level (.item(), .tolist(), a
    tensor as a bool or number, a copy to the CPU) and at torch's operators' (the profiler's
    sync check needs a GPU)."""
    cfgs = [typed_config(*BASE, "batch_size=100", *member) for member in members]
    data = load_data(cfgs[0].data, cfgs[0].likelihood)
    engine = build_engine(cfgs, data, torch.device("cpu"))  # its own seeded generators
    engine.graphed = GraphedTraining(engine, capture=False)
    active = tuple(m != 1 for m in range(len(cfgs)))  # member 1 sits out (a mask) when present
    engine.graphed.train_epoch([1.0] * len(cfgs), list(active))  # optimizer state exists
    step = engine.graphed._step(100, active)
    step.index.copy_(torch.arange(100 * len(cfgs)).view(len(cfgs), 100))
    batches = engine.graphed.sums.batch.item()
    reads = []

    def refused(name):
        def read(self, *args, **kwargs):
            reads.append(name)
            raise AssertionError(f"the step read a tensor on the host: Tensor.{name}")

        return read

    with monkeypatch.context() as patched, _RefuseHostReads() as dispatched:
        for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy", "cpu"):
            patched.setattr(torch.Tensor, name, refused(name))
        step()
        step()
    assert reads == [] and dispatched.reads == []
    assert engine.graphed.sums.batch.item() == batches + 2  # both steps ran whole
