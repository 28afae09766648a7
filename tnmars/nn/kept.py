"""When the results a layer keeps between inference calls go stale.

Under ``torch.no_grad`` a layer keeps what depends on its parameters only (merged cores,
contiguous kernels, constant contraction steps) and reuses it while a key of those
parameters is unchanged. A parameter's ``_version`` counter moves with every in-place
change PyTorch sees, but not with all of them: the fused optimizers (``Adam(fused=True)``,
which :meth:`tnmars.nn.MarsLoss.optimizer` uses by default, fused SGD and Adagrad; torch
2.13 on the CPU) update parameters without moving it, and writes through ``param.data``
never move it. So every key also holds :func:`generation`, a count that every optimizer
step moves (a global step hook on ``torch.optim.Optimizer``, registered when this module
is imported), and that :func:`invalidate_caches` moves for writes no step makes. Writes
through ``param.data`` into CPU tensors are also seen without it: every key holds
:class:`Contents`, the parameters' bytes (an outside probe, 2026-12-04: a hand-written SGD loop,
``p.data -= lr * p.grad``, validated under ``torch.no_grad`` at a loss of 1.86 while the model's
was 0.0086, every call served the cores kept before the first update).

>>> import torch
>>> before = generation()
>>> p = torch.nn.Parameter(torch.ones(2)); p.grad = torch.ones(2)
>>> torch.optim.Adam([p], fused=True).step()
>>> generation() > before
True
"""
from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

__all__ = ["generation", "invalidate_caches", "Same", "Contents"]

_generation = 0


def generation() -> int:
    """How many times kept inference results have been declared stale (optimizer steps and
    :func:`invalidate_caches` calls)."""
    return _generation


def invalidate_caches() -> None:
    """Make every tensorized layer recompute what it keeps for inference. Needed only after
    changing parameters off the CPU in a way PyTorch does not count: writing through
    ``param.data`` (in place), or a custom update outside ``torch.optim``, on a GPU (on the
    CPU the parameters' bytes are part of every key: :class:`Contents`). Optimizer steps,
    ``load_state_dict`` and in-place changes of the parameters themselves are noticed without
    it."""
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


#: a CPU tensor of up to this many elements is compared whole by :class:`Contents`; a larger one
#: by an evenly strided sample of about this many (a write through ``.data`` that moves every
#: entry, an optimizer's update or a re-initialisation, moves the sample; one into a few entries
#: may miss it: :func:`invalidate_caches`). 65,536 took a low-rank 800x500 layer at batch 1 from
#: 0.65x to 1.14x ``nn.Linear``'s time in ``benchmarks/nn_overhead.py`` (2026-12-04), copying
#: its 26,000 entries at every call
WHOLE_ELEMENTS = 1 << 12

#: id(tensor) -> (weak reference, data_ptr, numel, NumPy view of its values or None)
_VIEWS: dict[int, tuple[weakref.ref, int, int, np.ndarray | None]] = {}


def _host_view(t: torch.Tensor) -> np.ndarray | None:
    """A NumPy view of what :class:`Contents` reads of ``t`` (``None`` off the CPU, where reading
    would synchronise), made once per tensor and storage."""
    key, ptr, n = id(t), t.data_ptr(), t.numel()
    got = _VIEWS.get(key)
    if got is not None and got[0]() is t and got[1] == ptr and got[2] == n:
        return got[3]
    view = None
    if t.device.type == "cpu" and t.is_contiguous() and t.layout is torch.strided:
        flat = t.detach().reshape(-1)
        if flat.dtype in (torch.bfloat16, torch.float16):  # (NumPy has no bfloat16: their bits)
            flat = flat.view(torch.int16)
        try:
            view = flat.numpy()
        except (TypeError, RuntimeError):  # a dtype NumPy cannot view: not compared
            view = None
        if view is not None and view.size > WHOLE_ELEMENTS:
            view = view[:: -(-view.size // WHOLE_ELEMENTS)]
    _VIEWS[key] = (weakref.ref(t, lambda _, key=key: _VIEWS.pop(key, None)), ptr, n, view)
    return view


class Contents:
    """A key part that equals another when the CPU tensors it was made of held the same bytes
    (whole, or a strided sample of a large tensor): writes through ``param.data`` move no
    version counter and no optimizer step, but do change these. Cheap: one ``tobytes`` of a
    kept NumPy view per tensor. Tensors off the CPU are not read (a transfer per call); writes
    into them through ``.data`` still need :func:`invalidate_caches`."""

    __slots__ = ("values",)

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        values = []
        for t in tensors:
            view = _host_view(t)
            values.append(None if view is None else view.tobytes())
        self.values = tuple(values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Contents) and other.values == self.values

    def __hash__(self) -> int:
        return hash(self.values)


def _after_step(optimizer: Any, args: Any, kwargs: Any) -> None:
    invalidate_caches()


_HOOK = register_optimizer_step_post_hook(_after_step)
