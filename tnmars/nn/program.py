"""A contraction plan as the shortest list of torch calls: the per-call cost of small layers.

:func:`tnmars.contract.execute` runs any plan on any backend; at the sizes of a compressed
layer at batch 1 its cost is the calls themselves (a reshape or permute costs about as much
as a small matmul), not the arithmetic. A :class:`Program` is made once per plan: every
shape is fixed by the plan, so reshapes to the shape an operand already has and identity
permutes are dropped ahead of time, and each step is a few direct torch calls. The result
and its autograd graph are those of ``execute`` (the same ops, minus the no-ops).

>>> import torch
>>> from tnmars.contract import execute, make_plan
>>> from tnmars.backends import get_backend
>>> plan = make_plan(("ab", "bc", "cd"), "ad", ((2, 3), (3, 4), (4, 5)))
>>> ops = [torch.randn(2, 3), torch.randn(3, 4), torch.randn(4, 5)]
>>> bool(torch.allclose(Program(plan)(ops), execute(plan, ops, get_backend("torch"))))
True
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..contract import Plan
from .kept import Contents, Same, generation


class Program:
    """``plan`` compiled to direct torch calls; call it with the operands (torch tensors).

    :attr:`code` is the program as nested tuples of ints and flags only (so ``torch.compile``
    can hold it as a constant): ``(presums, steps, final_perm, squeezes)``, each step
    ``(first, second, perm_a, shape_a, perm_b, shape_b, out_shape, outer, tall)`` with
    ``None`` for a dropped permute or reshape; ``tall`` marks a tall-skinny 2-D product
    (M >= 16 N), computed on the CPU as ``(B^T A^T)^T`` (torch's GEMM is about 2x faster that
    way; the torch backend's rule). ``squeezes`` are the plan's (``None`` when it has none): per
    operand ``None`` or the shape it is reshaped to first, without its size-1 axes that broadcast against a larger
    size of the same index elsewhere (as ``execute`` does; ignored, such plans crashed).

    ``flat_output``: the caller reshapes the result itself (only its entries' order matters), so
    a final reshape is dropped. Operands are reshaped by the steps that use them; an operand
    may be passed in any shape with the same entries in the same order when its first use
    only reshapes it (:attr:`reshapes_data`).

    ``constants``: how many leading operands are parameters (the cores; the rest is data).
    When no gradient is recorded (``torch.no_grad``, inference) and autocast is off, the values that depend on
    the parameters only (their permuted copies, products of two cores) are kept between calls
    and reused while the parameters are unchanged (the same tensor objects, which the kept
    entry holds, and the same version counters): a
    compressed layer at batch 1 then copies only the data's intermediates. The kept values
    are core-sized, never the dense weight.
    """

    def __init__(self, plan: Plan, constants: int = 0, *, flat_output: bool = False) -> None:
        self.plan = plan
        self.constants = constants
        self._kept: tuple | None = None
        shapes = []
        for shape, squeeze, axes in zip(plan.shapes, plan.squeezes, plan.presums):
            shape = shape if squeeze is None else squeeze
            shapes.append(tuple(n for k, n in enumerate(shape) if k not in axes))
        steps = []
        const = [k < constants and not plan.presums[k] for k in range(len(plan.shapes))]
        self._const_inputs = []
        for st in plan.steps:
            sa, sb = shapes[st.first], shapes[st.second]
            perm_a = st.perm_a if st.transpose_a else None
            perm_b = st.perm_b if st.transpose_b else None
            pa = tuple(sa[i] for i in perm_a) if perm_a else sa
            pb = tuple(sb[i] for i in perm_b) if perm_b else sb
            # a permute that only moves axes of size 1 keeps the entries in order: a reshape does it
            perm_a = None if perm_a and _moves_only_ones(sa, perm_a) else perm_a
            perm_b = None if perm_b and _moves_only_ones(sb, perm_b) else perm_b
            if st.outer:
                want_a, want_b = st.shape_a, (st.shape_b[0], 1, st.shape_b[2])
                result = (st.shape_a[0], st.shape_a[1], st.shape_b[2])
            elif st.batched:
                want_a, want_b = st.shape_a, st.shape_b
                result = (st.shape_a[0], st.shape_a[1], st.shape_b[2])
            else:
                want_a, want_b = st.shape_a[1:], st.shape_b[1:]
                result = (st.shape_a[1], st.shape_b[2])
            tall = not st.outer and not st.batched and want_a[0] >= 16 * want_b[1]
            held_a = pa if perm_a else sa  # the shape of the operand after its (kept) permute
            held_b = pb if perm_b else sb
            steps.append((st.first, st.second, perm_a, None if held_a == tuple(want_a) else tuple(want_a),
                          perm_b, None if held_b == tuple(want_b) else tuple(want_b),
                          None if result == st.out_shape else st.out_shape, st.outer, tall))
            ca, cb = const[st.first], const[st.second]
            self._const_inputs.append((ca, cb))
            const = [c for k, c in enumerate(const) if k not in (st.first, st.second)] + [ca and cb]
            shapes = [s for k, s in enumerate(shapes) if k not in (st.first, st.second)] + [st.out_shape]
        final_perm = None if plan.final_perm == plan.identity_perm else plan.final_perm
        if flat_output and final_perm is None and steps:  # the caller reshapes the result anyway
            steps[-1] = steps[-1][:6] + (None,) + steps[-1][7:]
        squeezes = (None if all(sq is None for sq in plan.squeezes) else  # (None: the usual case, no work per call)
                    tuple(None if sq is None else tuple(sq) for sq in plan.squeezes))
        self.code = (tuple(plan.presums), tuple(steps), final_perm, squeezes)
        self.cacheable = constants > 0 and any(a or b for a, b in self._const_inputs)
        self.reshapes_data = self._first_use_reshapes(len(plan.shapes) - 1)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_kept"] = None  # products of the operands of the last call: rebuilt on the next one
        return state

    def _first_use_reshapes(self, operand: int) -> bool:
        """Whether ``operand`` is consumed (unsummed) by a step that reshapes it without permuting."""
        presums, steps, _, squeezes = self.code
        if presums[operand] or (squeezes is not None and squeezes[operand] is not None):
            return False
        position = operand
        for first, second, perm_a, shape_a, perm_b, shape_b, *_ in steps:
            if position in (first, second):
                perm, shape = (perm_a, shape_a) if position == first else (perm_b, shape_b)
                return perm is None and shape is not None
            position -= sum(1 for k in (first, second) if k < position)
        return False

    def __call__(self, operands: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.cacheable and not torch.is_grad_enabled() and not is_recording() and not _autocasting(operands[0]):
            return self._run_kept(operands)
        return run(self.code, operands)

    def _run_kept(self, operands: Sequence[torch.Tensor]) -> torch.Tensor:
        params = operands[:self.constants]
        # generation(): fused optimizer steps move no _version counter (:mod:`.kept`)
        # Same(p): the key holds the operands (often fresh slices of the cores), so no new tensor can
        # take their id and address while their kept products are served (:class:`~.kept.Same`)
        try:
            key = (generation(), *((Same(p), p._version, p.data_ptr(), p.dtype, p.shape) for p in params),
                   Contents(params))  # (writes through .data move no counter: the bytes, see :mod:`.kept`)
        except RuntimeError:  # an inference tensor (made under torch.inference_mode) has no version
            return run(self.code, operands)  # counter to key on: computed afresh, as with gradients
        kept = self._kept
        if kept is None or kept[0] != key:
            kept = self._kept = (key, {})
        store = kept[1]
        presums, steps, final_perm, squeezes = self.code
        live = [x.sum(axes) if axes else x for x, axes in zip(operands, presums)] if squeezes is None else \
            _enter(operands, presums, squeezes)
        cpu = live[0].device.type == "cpu"
        for n, (step, (ca, cb)) in enumerate(zip(steps, self._const_inputs)):
            first, second, perm_a, shape_a, perm_b, shape_b = step[:6]
            if ca and cb:
                c = store.get((n, "c"))
                if c is None:
                    c = store[(n, "c")] = _step(step, _prepare(live[first], perm_a, shape_a),
                                                _prepare(live[second], perm_b, shape_b), cpu)
            else:
                a = _kept_input(store, (n, "a"), live[first], perm_a, shape_a, ca)
                b = _kept_input(store, (n, "b"), live[second], perm_b, shape_b, cb)
                c = _step(step, a, b, cpu)
            del live[max(first, second)], live[min(first, second)]
            live.append(c)
        out = live[0]
        return out if final_perm is None else out.permute(final_perm)


def run(code: tuple, operands: Sequence[torch.Tensor]) -> torch.Tensor:
    """Execute :attr:`Program.code` on ``operands``."""
    presums, steps, final_perm, squeezes = code
    live = [x.sum(axes) if axes else x for x, axes in zip(operands, presums)] if squeezes is None else \
        _enter(operands, presums, squeezes)
    cpu = live[0].device.type == "cpu"
    for step in steps:
        first, second, perm_a, shape_a, perm_b, shape_b = step[:6]
        c = _step(step, _prepare(live[first], perm_a, shape_a), _prepare(live[second], perm_b, shape_b), cpu)
        del live[max(first, second)], live[min(first, second)]
        live.append(c)
    out = live[0]
    return out if final_perm is None else out.permute(final_perm)


def _enter(operands: Sequence[torch.Tensor], presums: tuple, squeezes: tuple) -> list[torch.Tensor]:
    """The operands as the steps take them: broadcast size-1 axes dropped, lone indices summed."""
    live = []
    for x, axes, squeeze in zip(operands, presums, squeezes):
        if squeeze is not None:
            x = x.reshape(squeeze)
        live.append(x.sum(axes) if axes else x)
    return live


def _autocasting(x: torch.Tensor) -> bool:
    """Whether autocast is on for ``x``'s device: kept values made under it have its dtype and
    must not be reused outside it (nor kept ones inside it)."""
    try:
        return torch.is_autocast_enabled(x.device.type)
    except TypeError:  # older PyTorch: no device argument
        return torch.is_autocast_enabled()


def _moves_only_ones(shape: Sequence[int], perm: Sequence[int]) -> bool:
    kept = [axis for axis in perm if shape[axis] != 1]
    return kept == sorted(kept)


def is_recording() -> bool:
    """True while torch.jit traces or torch.compile traces (no Python-side caches there)."""
    if torch.jit.is_tracing():
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


def _prepare(x: torch.Tensor, perm: tuple[int, ...] | None, shape: tuple[int, ...] | None) -> torch.Tensor:
    if perm is not None:
        x = x.permute(perm)
    return x if shape is None else x.reshape(shape)


def _kept_input(store: dict, key: tuple, x: torch.Tensor, perm, shape, constant: bool) -> torch.Tensor:
    if not constant or (perm is None and shape is None):
        return _prepare(x, perm, shape)
    got = store.get(key)
    if got is None:
        got = store[key] = _prepare(x, perm, shape).contiguous()
    return got


def _step(step: tuple, a: torch.Tensor, b: torch.Tensor, cpu: bool) -> torch.Tensor:
    out_shape, outer, tall = step[6:]
    if outer:
        c = a * b
    elif tall and cpu:
        c = torch.matmul(b.mT, a.mT).mT
    else:
        c = torch.matmul(a, b)
    return c if out_shape is None else c.reshape(out_shape)
