"""Environment gradients: d loss / d core without autograd (NumPy and CuPy training).

For a network ``T = contract(G_1, ..., G_K)`` and a loss with gradient ``dL/dT`` the
gradient of core ``k`` is the contraction of *the rest of the network* with ``dL/dT``:

    dL/dG_k = contract(G_1, .., G_{k-1}, G_{k+1}, .., G_K, dL/dT  ->  term_k)

because ``T`` is multilinear in the cores. This holds for any einsum graph, hyperedges
(CP's shared rank index) included: an index shared by three cores simply stays shared in
the environment. :func:`environment` evaluates this formula literally, one core at a time.

:func:`vjp` gets all ``K`` environments at once by running the network's cached pairwise
plan backwards (reverse mode over the recorded ``transpose -> reshape -> matmul`` steps),
so the intermediates are shared and the cost is about twice one contraction instead of
``K`` contractions. The tests check both against each other, against torch autograd and
against central finite differences.

MARS masks are folded into one core per bond (:meth:`tnmars.Network.mask_site`):
``M_c = G_c * m`` along the bond's axis. The chain rule then gives
``dL/dG_c = dL/dM_c * m`` and ``dL/dm = sum over the other axes of dL/dM_c * G_c``; the
derivative with respect to the mask *logits* follows from
:func:`tnmars.masks.hard_concrete_grad` (see :func:`logit_gradients`).

>>> import numpy as np, tnmars
>>> from tnmars.gradients import vjp
>>> net = tnmars.Network.tt((3, 4, 5), 2, seed=0)
>>> target = np.zeros(net.shape)
>>> out, grads, _ = vjp(net, lambda t: t - target)   # gradient of 0.5 ||T - target||^2
>>> [g.shape for g in grads] == [c.shape for c in net.cores]
True
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .backends import Backend
from .contract import Plan, execute
from .network import Network

__all__ = ["Tape", "forward", "backward", "vjp", "environment", "logit_gradients"]


@dataclass
class Tape:
    """What the reverse sweep needs from one forward contraction."""

    plan: Plan
    backend: Backend
    #: operand shapes before the pre-sums
    operand_shapes: list[tuple[int, ...]]
    #: per step: (a as a (nb, m, k) array, b as (nb, k, n), a's transposed shape, b's transposed shape)
    saved: list[tuple[Any, Any, tuple[int, ...], tuple[int, ...]]]
    #: shape of the result before the final transpose
    final_shape: tuple[int, ...]


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def forward(plan: Plan, operands: list[Any], backend: Backend) -> tuple[Any, Tape]:
    """Contract ``operands`` along ``plan`` (exactly like :func:`tnmars.contract.execute`)
    and record what :func:`backward` needs."""
    be = backend
    live = []
    for x, squeeze, axes in zip(operands, plan.squeezes, plan.presums):
        if squeeze is not None:
            x = be.reshape(x, squeeze)
        live.append(be.sum(x, axes) if axes else x)
    saved = []
    for step in plan.steps:
        a, b = live[step.first], live[step.second]
        at = be.transpose(a, step.perm_a)
        bt = be.transpose(b, step.perm_b)
        a3 = be.reshape(at, step.shape_a)
        b3 = be.reshape(bt, step.shape_b)
        c = be.matmul(a3, b3)
        saved.append((a3, b3, tuple(at.shape), tuple(bt.shape)))
        c = be.reshape(c, step.out_shape)
        live = [t for k, t in enumerate(live) if k not in (step.first, step.second)] + [c]
    out = live[0]
    final_shape = tuple(out.shape)
    if plan.final_perm != tuple(range(len(plan.final_perm))):
        out = be.transpose(out, plan.final_perm)
    tape = Tape(plan, be, [tuple(int(n) for n in x.shape) for x in operands], saved, final_shape)
    return out, tape


def _swap_last(x: Any, be: Backend) -> Any:
    return be.transpose(x, (0, 2, 1))


def backward(tape: Tape, grad_out: Any) -> list[Any]:
    """Gradients of ``<grad_out, contraction>`` with respect to every operand (a VJP)."""
    plan, be = tape.plan, tape.backend
    g = grad_out
    if plan.final_perm != tuple(range(len(plan.final_perm))):
        g = be.transpose(g, _inverse(plan.final_perm))
    n = len(plan.presums)
    # node ids: 0..n-1 are the (pre-summed) operands, n + s is the result of step s
    live = list(range(n))
    grads: dict[int, Any] = {n + len(plan.steps) - 1 if plan.steps else 0: g}
    records = []
    for s, step in enumerate(plan.steps):
        ia, ib = live[step.first], live[step.second]
        records.append((ia, ib))
        live = [t for k, t in enumerate(live) if k not in (step.first, step.second)] + [n + s]
    for s in range(len(plan.steps) - 1, -1, -1):
        step = plan.steps[s]
        a3, b3, at_shape, bt_shape = tape.saved[s]
        gc = be.reshape(grads.pop(n + s), (step.shape_a[0], step.shape_a[1], step.shape_b[2]))
        ga = be.matmul(gc, _swap_last(b3, be))
        gb = be.matmul(_swap_last(a3, be), gc)
        ia, ib = records[s]
        grads[ia] = be.transpose(be.reshape(ga, at_shape), _inverse(step.perm_a))
        grads[ib] = be.transpose(be.reshape(gb, bt_shape), _inverse(step.perm_b))
    out = []
    for k in range(n):
        gk = grads[k]
        shape = tape.operand_shapes[k]
        squeezed = plan.squeezes[k] if plan.squeezes[k] is not None else shape
        axes = plan.presums[k]
        if axes:  # undo the pre-sum: broadcast back along the summed axes
            view = [1 if i in axes else squeezed[i] for i in range(len(squeezed))]
            gk = be.reshape(gk, view) + be.zeros(squeezed, be.dtype_name(gk), _device(gk, be))
        if plan.squeezes[k] is not None:  # a broadcast size-1 axis gets the sum over the broadcast
            gk = be.reshape(gk, shape)
        out.append(gk)
    return out


def _device(x: Any, be: Backend) -> str | None:
    return None if be.name == "numpy" else be.device_of(x)


def _as_mask_dict(net: Network, masks: Any) -> dict[str, Any]:
    if masks is None:
        return {}
    if not isinstance(masks, Mapping):
        masks = list(masks)
        if len(masks) != len(net.bonds):
            raise ValueError(f"{len(masks)} masks given for {len(net.bonds)} bonds")
        masks = dict(zip(net.bonds, masks))
    # the arrays masked_cores multiplies in (backend, device, the core's floating dtype), so the
    # chain rule below uses the same values and a float64 mask gives float32 cores float32 gradients
    cores = net.cores
    return {b: net._mask_array(m, cores[net.mask_site(b)[0]], b) for b, m in masks.items() if m is not None}


def vjp(
    net: Network, grad_fn: Callable[[Any], Any], masks: Mapping[str, Any] | None = None
) -> tuple[Any, list[Any], dict[str, Any]]:
    """Contract ``net`` (with ``masks`` folded in) and pull a gradient back through it.

    ``grad_fn(T)`` receives the full tensor and returns ``dL/dT``. Returns
    ``(T, [dL/dG_k for every core], {bond: dL/dmask})``; the core gradients are with
    respect to the *unmasked* cores.
    """
    be = net.backend_impl
    masks = _as_mask_dict(net, masks)
    masked = net.masked_cores(masks)
    out, tape = forward(net.plan(), masked, be)
    grad_out = grad_fn(out)
    shape = tuple(getattr(grad_out, "shape", ()))
    if shape != tuple(net.shape):  # (a reshape deep in the backward said "cannot reshape array of size 4")
        raise ValueError(f"vjp: grad_fn returned a gradient of shape {shape}; dL/dT has the network's shape "
                         f"{tuple(net.shape)}")
    grads = backward(tape, grad_out)
    return (out, *_chain_masks(net, masks, grads))


def _chain_masks(net: Network, masks: dict[str, Any], masked_grads: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    """From gradients w.r.t. masked cores to gradients w.r.t. raw cores and masks."""
    be = net.backend_impl
    cores = net.cores
    core_grads = list(masked_grads)
    mask_grads: dict[str, Any] = {}
    # several masks may sit on one core: M_c = G_c * prod_b m_b (along different axes)
    by_core: dict[int, list[tuple[str, int]]] = {}
    for bond in masks:
        core, axis = net.mask_site(bond)
        by_core.setdefault(core, []).append((bond, axis))
    for core, entries in by_core.items():
        gm = masked_grads[core]
        ndim = len(cores[core].shape)
        views = {}
        for bond, axis in entries:
            view = [1] * ndim
            view[axis] = -1
            views[bond] = be.reshape(masks[bond], view)
        scale_all = None
        for bond, _ in entries:
            scale_all = views[bond] if scale_all is None else scale_all * views[bond]
        core_grads[core] = gm * scale_all
        for bond, axis in entries:
            other = cores[core]
            for b2, _ in entries:
                if b2 != bond:
                    other = other * views[b2]
            prod = gm * other
            axes = tuple(i for i in range(ndim) if i != axis)
            mask_grads[bond] = be.sum(prod, axes) if axes else prod
    return core_grads, mask_grads


def environment(net: Network, core: int, grad_out: Any, masks: Mapping[str, Any] | None = None) -> Any:
    """The literal environment formula for one core: contract every *other* (masked) core
    with ``grad_out`` into the core's own indices. This is ``dL/dM_core`` (the gradient
    with respect to the masked core); multiply by the core's masks for ``dL/dG_core``.

    >>> import numpy as np, tnmars
    >>> net = tnmars.Network.cp((3, 4, 5), 2, seed=0)
    >>> environment(net, 0, np.ones(net.shape)).shape
    (3, 2)
    """
    if not 0 <= core < net.num_cores:
        raise ValueError(f"core must lie in [0, {net.num_cores}); got {core}")
    masked = net.masked_cores(_as_mask_dict(net, masks))
    terms = [t for k, t in enumerate(net.inputs) if k != core] + [net.output]
    operands = [c for k, c in enumerate(masked) if k != core] + [grad_out]
    from .contract import make_plan

    own = net.inputs[core]
    if len(set(own)) != len(own):
        raise ValueError(f"core {core}'s term {own!r} repeats an index (a diagonal): its environment is not one "
                         "array of the core's shape; use vjp for its gradient")
    # an index summed in this core alone (a size-1 boundary leg such as tntorch's 'xaA,...'):
    # nothing else carries it, so the environment is constant along it, broadcast at the end
    elsewhere = set("".join(terms))
    kept = "".join(c for c in own if c in elsewhere)
    shapes = tuple(tuple(int(n) for n in x.shape) for x in operands)
    plan = make_plan(tuple(terms), kept, shapes, net.optimize)
    env = execute(plan, operands, net.backend_impl)
    if kept == own:
        return env
    be = net.backend_impl
    core_shape = tuple(int(n) for n in masked[core].shape)
    env = be.reshape(env, [n if c in elsewhere else 1 for c, n in zip(own, core_shape)])
    return be.zeros(core_shape, be.dtype_name(env), be.device_of(env)) + env


def logit_gradients(mask_grads: Mapping[str, Any], dsample: Mapping[str, Any]) -> dict[str, Any]:
    """``dL/dlogit = dL/dmask * dmask/dlogit`` with ``dmask/dlogit`` from
    :func:`tnmars.masks.hard_concrete_grad` (zero where the hard clamp is active)."""
    return {b: mask_grads[b] * dsample[b] for b in mask_grads}
