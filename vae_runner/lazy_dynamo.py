"""torch.optim without importing torch._dynamo before anything compiles.

torch.optim marks its methods "do not compile": `add_param_group`, `zero_grad`, `state_dict`
and `load_state_dict` with `torch._disable_dynamo`, which imports torch._dynamo on its first
call, and every optimizer's `step` imports it on each call to place graph breaks around the
update. That import takes about 1.1 s here on top of `import torch` (1.2-1.4 s), paid by any
run before its first batch, and it buys nothing in an eager run: the marks only matter while
dynamo traces, and nothing can trace before torch._dynamo is imported.

`deferred_dynamo_import()` makes both kinds of mark wait for that import instead of causing
it. Once torch._dynamo is loaded (a `device.compile=true` run, torchvision, anyone else in the
process) the replacements hand over to torch's own code, so the optimizers behave exactly as
torch wrote them. The replacements are process-wide while the block is open (other threads
get them too; they compute the same). Only what is recognised is touched: on a torch whose
optimizer code differs from the shape checked here nothing is replaced, and a run is merely
slower to start.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vae_runner.shared_change import SharedChange

DYNAMO = "torch._dynamo"
CACHE = "__dynamo_disable"  # where torch._compile._disable_dynamo caches dynamo.disable(fn)
OPTIMIZERS = ("Adam", "AdamW", "SGD")  # the torch.optim classes build.build_optimizer makes
_undo: list[tuple[Any, ...]] = []


class _DisableOnceLoaded:
    """What `torch._disable_dynamo` calls in place of its cached `torch._dynamo.disable(fn)`.

    Until torch._dynamo is loaded, the plain function (nothing traces yet); after, the real
    disabled wrapper, built the way torch._compile builds it and cached where it caches it.
    """

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        if DYNAMO not in sys.modules:
            return self.fn(*args, **kwargs)
        import torch._dynamo

        disabled = torch._dynamo.disable(self.fn, True, wrapping=False)
        setattr(self.fn, CACHE, disabled)  # torch's own cache: later calls skip this object
        return disabled(*args, **kwargs)


def _use_grad_lazily(torch_use_grad, step):
    """torch.optim's `_use_grad_for_differentiable(step)` that imports nothing.

    The same grad mode around the update. The graph breaks it adds for dynamo come from
    torch's own wrapper, called instead once torch._dynamo is loaded.
    """

    import torch

    @functools.wraps(step)
    def use_grad_lazily(self, *args, **kwargs):
        if DYNAMO in sys.modules:
            return torch_use_grad(self, *args, **kwargs)
        previous = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(self.defaults["differentiable"])
            return step(self, *args, **kwargs)
        finally:
            torch.set_grad_enabled(previous)

    return use_grad_lazily


# The names torch 2.x's `_use_grad` (torch/optim/optimizer.py) uses: anything else means its
# code changed, and the lazy copy below would no longer be a copy.
_USE_GRAD_NAMES = {
    "torch._dynamo", "cast", "Optimizer", "is_grad_enabled", "set_grad_enabled", "defaults",
    "_dynamo", "graph_break",
}  # fmt: skip


def _install() -> None:
    import torch.optim
    from torch.optim import Optimizer

    for method in ("add_param_group", "zero_grad", "state_dict", "load_state_dict"):
        fn = getattr(getattr(Optimizer, method), "__wrapped__", None)
        # Already cached means dynamo is loaded and built the real one: leave it.
        if fn is not None and getattr(fn, CACHE, None) is None:
            setattr(fn, CACHE, _DisableOnceLoaded(fn))
            _undo.append(("cache", fn))
    classes = [getattr(torch.optim, name) for name in OPTIMIZERS]
    for cls in classes:
        # What torch does when a class's first instance is built (`_patch_step_function`), and
        # keeps: step = profile_hook_step(_use_grad(step)), for hooks and the profiler label.
        # Done here, an optimizer first built inside the block keeps them after it.
        if not getattr(cls.step, "hooked", False):
            cls.step = Optimizer.profile_hook_step(cls.step)
            cls.step.hooked = True
    steps = [cls.step for cls in classes]  # all read before any is replaced (AdamW inherits)
    for cls, step in zip(classes, steps, strict=True):
        use_grad = getattr(step, "__wrapped__", None)
        raw = getattr(use_grad, "__wrapped__", None)
        code = getattr(use_grad, "__code__", None)
        if raw is None or code is None or set(code.co_names) != _USE_GRAD_NAMES:
            continue  # not the code this module copies: torch's own step stays
        lazy = Optimizer.profile_hook_step(_use_grad_lazily(use_grad, raw))
        lazy.hooked = True  # so Optimizer.__init__ does not wrap it again
        _undo.append(("step", cls, cls.__dict__.get("step")))
        cls.step = lazy


def _uninstall() -> None:
    while _undo:
        entry = _undo.pop()
        if entry[0] == "cache":
            fn = entry[1]
            if isinstance(getattr(fn, CACHE, None), _DisableOnceLoaded):
                delattr(fn, CACHE)
        else:
            _, cls, previous = entry
            if previous is None:
                del cls.step
            else:
                cls.step = previous


def _install_or_nothing() -> None:
    try:
        _install()
    except Exception:  # an unforeseen torch: undo what was done, train as torch does
        _uninstall()


_INSTALLED = SharedChange(_install_or_nothing, _uninstall)


@contextmanager
def deferred_dynamo_import() -> Iterator[None]:
    """Within this block torch.optim's Adam, AdamW and SGD import no torch._dynamo.

    An optimizer built inside and stepped after it steps the way torch's does (an LR
    scheduler may keep the lazy step: it hands over to torch's once dynamo is loaded). Nested
    and concurrent uses share one installation, removed when the last one leaves.
    """
    with _INSTALLED.block():
        yield
