"""deferred_dynamo_import: torch.optim without the torch._dynamo import, and nothing else changed.

Whether torch._dynamo gets imported is process-wide and other tests import it, so what is
asserted about the import runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from vae_runner.lazy_dynamo import deferred_dynamo_import


def _fresh_python(code: str, cwd=None) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# Three steps of each optimizer the runner builds, with a plateau scheduler and a state_dict
# round trip: the parameters it ends with, and whether torch._dynamo was imported.
STEPS = """
    import json, sys
    import torch
    from vae_runner.lazy_dynamo import deferred_dynamo_import

    def train(kind, **options):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        opt = kind(model.parameters(), lr=0.1, **options)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            model(torch.ones(2, 4)).square().sum().backward()
            opt.step()
            plateau.step(1.0)
        opt.load_state_dict(opt.state_dict())
        opt.step()
        return [round(v, 12) for v in torch.cat([p.flatten() for p in model.parameters()]).tolist()]

    kinds = [(torch.optim.Adam, {"fused": True}), (torch.optim.AdamW, {"foreach": True}),
             (torch.optim.SGD, {"momentum": 0.9})]
    with deferred_dynamo_import():
        lazy = [train(kind, **options) for kind, options in kinds]
        grad_mode = torch.is_grad_enabled()
    imported = "torch._dynamo" in sys.modules
    plain = [train(kind, **options) for kind, options in kinds]  # torch's own, imports dynamo
    print(json.dumps({"imported": imported, "grad_mode": grad_mode, "lazy": lazy,
                      "plain": plain, "imported_after": "torch._dynamo" in sys.modules}))
"""


def test_optimizers_train_identically_without_importing_dynamo():
    result = _fresh_python(STEPS)
    assert result["imported"] is False
    assert result["grad_mode"] is True  # the step's no-grad mode was undone
    assert result["lazy"] == result["plain"]  # Adam, AdamW, SGD: the same parameters, exactly
    assert result["imported_after"] is True  # the reference really is torch's own code path


def test_a_default_run_trains_without_importing_dynamo(tmp_path):
    # Who first imports torch._dynamo: the stack at that import. torchvision does, when the
    # image grids are saved after training; torch.optim must not, before it.
    result = _fresh_python(
        f"""
        import json, sys, traceback
        first = []
        class Watch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch._dynamo" and not first:
                    first.append([frame.filename for frame in traceback.extract_stack()])
        sys.meta_path.insert(0, Watch())
        from vae_runner.cli import main
        sys.argv = ["vae-train", "epochs=2", "eval.iw_samples=0", "hydra.run.dir={tmp_path}/run"]
        try:
            main()
        except SystemExit as exit:
            code = exit.code
        print(json.dumps({{"code": code, "importers": first[0] if first else []}}))
        """,
        cwd=tmp_path,
    )
    assert result["code"] == 0
    importers = [path.replace("\\", "/") for path in result["importers"]]
    assert not [path for path in importers if "/torch/optim/" in path]
    assert [path for path in importers if path.endswith("vae_runner/images.py")], importers
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["status"] == "completed" and len(history["epoch"]) == 2


# Optimizers first built inside nested blocks (as in a fresh `vae-train`), stepped inside and
# after: what torch's classes and caches look like after, and which step hooks ran.
RESTORE = """
    import json, sys
    import torch
    from torch.optim import SGD, Adam, AdamW, Optimizer
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from vae_runner.lazy_dynamo import deferred_dynamo_import

    names = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")
    methods = [getattr(Optimizer, name).__wrapped__ for name in names]
    calls = []
    register_optimizer_step_post_hook(lambda opt, args, kwargs: calls.append("global"))
    model = torch.nn.Linear(2, 2)

    def step(opt):
        model(torch.ones(1, 2)).sum().backward()
        opt.step()
        opt.zero_grad()

    with deferred_dynamo_import():
        with deferred_dynamo_import():
            opts = [kind(model.parameters(), lr=0.1) for kind in (Adam, AdamW, SGD)]
        for opt in opts:
            opt.register_step_post_hook(lambda o, args, kwargs: calls.append(type(o).__name__))
            step(opt)
        inside, calls[:] = list(calls), []
    caches = [getattr(fn, "__dynamo_disable", None) is None for fn in methods]
    imported = "torch._dynamo" in sys.modules
    for opt in opts:
        step(opt)  # torch's own code again: this imports dynamo
    print(json.dumps({
        "inside": inside,
        "after": calls,
        "own": [all("step" in kind.__dict__ for kind in (Adam, SGD)), "step" in AdamW.__dict__],
        "torch_step": [kind.step.hooked and kind.step.__wrapped__.__code__.co_name
                       for kind in (Adam, AdamW, SGD)],
        "caches": caches,
        "imported": imported,
        "imported_after": "torch._dynamo" in sys.modules,
    }))
"""


def test_torchs_optimizers_are_put_back_and_keep_their_hooks():
    result = _fresh_python(RESTORE)
    # each step's hooks ran once: the instance's, then the global one (profile_hook_step)
    expected = ["Adam", "global", "AdamW", "global", "SGD", "global"]
    assert result["inside"] == expected
    assert result["after"] == expected  # also for optimizers first built inside the block
    # Adam and SGD own torch's hooked step again; AdamW inherits Adam's, as in plain torch
    assert result["own"] == [True, False]
    assert result["torch_step"] == ["_use_grad", "_use_grad", "_use_grad"]
    assert result["caches"] == [True, True, True, True]  # torch's lazy caches are empty again
    assert result["imported"] is False
    assert result["imported_after"] is True  # torch's own wrappers are back in charge


def test_once_dynamo_is_loaded_torchs_own_wrappers_run(monkeypatch):
    import torch._dynamo

    breaks = []
    monkeypatch.setattr(torch._dynamo, "graph_break", lambda: breaks.append(1))
    model = torch.nn.Linear(2, 2)
    with deferred_dynamo_import():
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        model(torch.ones(1, 2)).sum().backward()
        opt.step()
        opt.zero_grad()
        zero_grad = torch.optim.Optimizer.zero_grad.__wrapped__
        disabled = getattr(zero_grad, "__dynamo_disable")
    assert breaks == [1, 1]  # torch's _use_grad: a graph break on each side of the update
    # the real torch._dynamo.disable wrapper, cached where torch caches it, kept after the block
    assert type(disabled).__name__ != "_DisableOnceLoaded" and callable(disabled)
    assert getattr(zero_grad, "__dynamo_disable") is disabled


# A differentiable step (Adam's and SGD's `differentiable=True`) runs in grad mode, so autograd
# records the update: its derivative with respect to what the gradient was computed from.
DIFFERENTIABLE = """
    import contextlib, json, sys
    import torch
    from vae_runner.lazy_dynamo import deferred_dynamo_import

    def step(block):
        scale = torch.tensor(0.5, requires_grad=True)
        param = torch.ones(3, requires_grad=True).clone()  # differentiable: non-leaf params
        param.grad = scale * torch.arange(3.0)
        with deferred_dynamo_import() if block else contextlib.nullcontext():
            torch.optim.SGD([param], lr=0.1, differentiable=True).step()
        (d_scale,) = torch.autograd.grad(param.sum(), scale, allow_unused=True)
        return [param.detach().tolist(), None if d_scale is None else d_scale.item()]

    lazy = step(block=True)
    imported = "torch._dynamo" in sys.modules
    print(json.dumps({"lazy": lazy, "imported": imported, "plain": step(block=False)}))
"""


def test_a_differentiable_step_is_recorded_by_autograd_as_in_torch():
    result = _fresh_python(DIFFERENTIABLE)
    assert result["imported"] is False  # so the lazy step, not torch's, made `lazy`
    assert result["lazy"] == result["plain"]
    assert result["lazy"][1] == pytest.approx(-0.3)  # -lr * (0 + 1 + 2): the update recorded
