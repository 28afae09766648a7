"""When the results a layer keeps between inference calls go stale.

Under ``torch.no_grad`` a layer keeps what depends on its parameters only (merged cores,
contiguous kernels, constant contraction steps) and reuses it while a key of those
parameters is unchanged. A parameter's ``_version`` counter moves with every in-place
change PyTorch sees, but not with all of them: the fused optimizers (``Adam(fused=True)``,
which :meth:`tnmars.nn.MarsLoss.optimizer` uses by default, fused SGD and Adagrad; torch
2.13 on the CPU) update parameters without moving it, and writes through ``param.data``
never move it. So every key also holds :func:`generation`, a count that every optimizer
step moves (a global step hook on ``torch.optim.Optimizer``, registered when this module
is imported), and that :func:`invalidate_caches` moves for writes no step makes.

>>> import torch
>>> before = generation()
>>> p = torch.nn.Parameter(torch.ones(2)); p.grad = torch.ones(2)
>>> torch.optim.Adam([p], fused=True).step()
>>> generation() > before
True
"""
from __future__ import annotations

from typing import Any

from torch.optim.optimizer import register_optimizer_step_post_hook

__all__ = ["generation", "invalidate_caches", "Same"]

_generation = 0


def generation() -> int:
    """How many times kept inference results have been declared stale (optimizer steps and
    :func:`invalidate_caches` calls)."""
    return _generation


def invalidate_caches() -> None:
    """Make every tensorized layer recompute what it keeps for inference. Needed only after
    changing parameters in a way PyTorch does not count: writing through ``param.data`` (in
    place), or a custom update outside ``torch.optim``. Optimizer steps, ``load_state_dict``
    and in-place changes of the parameters themselves are noticed without it."""
    global _generation
    _generation += 1


class Same:
    """A key part that holds a tensor and equals only a part holding that same object.

    Keys built from ``id(t)`` and ``t.data_ptr()`` alone go wrong once ``t`` is freed: a new
    tensor can get its id and address back (CPython and the caching allocators reuse both at
    once), with the same version count, and a kept result of the old values would be served
    for the new ones. Holding the tensor in the key keeps both in use while the key lives.
    """

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


def _after_step(optimizer: Any, args: Any, kwargs: Any) -> None:
    invalidate_caches()


_HOOK = register_optimizer_step_post_hook(_after_step)
