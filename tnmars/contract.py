"""Contraction planning (opt_einsum) and a pairwise executor that runs on any backend.

A :class:`Plan` is made once per ``(inputs, output, shapes, optimize)`` and cached; it holds
only integers and index strings, never arrays. Executing a plan is a fixed sequence of
``transpose``/``reshape``/``matmul`` calls on the caller's backend, so results stay in the
caller's framework, dtype and device, and torch autograd sees plain differentiable ops.
Shared indices that must survive a pairwise step (CP's hyperedge, batch indices) become the
batch dimension of a batched matmul.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from math import prod
from typing import Any

import opt_einsum

from .backends import Backend, infer_backend
from .spec import parse_spec


@dataclass(frozen=True)
class _Step:
    """One pairwise contraction, with every permutation and shape fixed in advance."""

    first: int
    second: int
    perm_a: tuple[int, ...]
    shape_a: tuple[int, int, int]
    perm_b: tuple[int, ...]
    shape_b: tuple[int, int, int]
    out_shape: tuple[int, ...]
    result: str
    transpose_a: bool
    transpose_b: bool
    batched: bool
    #: no index is summed: an outer product, done by broadcasting rather than a K=1 matmul
    outer: bool


@dataclass(frozen=True)
class Plan:
    """A cached contraction plan: the pairwise path plus opt_einsum's cost figures."""

    inputs: tuple[str, ...]
    output: str
    shapes: tuple[tuple[int, ...], ...]
    path: tuple[tuple[int, ...], ...]
    #: per-operand pre-sums of indices that appear in that operand only (after parsing)
    presums: tuple[tuple[int, ...], ...]
    steps: tuple[_Step, ...]
    final_perm: tuple[int, ...]
    flops: int
    largest_intermediate: int
    optimize: str
    info_text: str
    #: the transposes' cost, in plain-copy entries (:func:`_permute_cost`): the memory traffic
    #: that ``flops`` leaves out, which decides between plans of similar FLOPs
    copy_cost: float = 0.0
    #: entries written by the pairwise steps (intermediates and result)
    written: int = 0

    @property
    def cost(self) -> float:
        """FLOPs plus memory traffic (``COPY_FLOPS`` per copied or written entry): what path
        and evaluation-order choices compare."""
        return self.flops + COPY_FLOPS * (self.copy_cost + self.written)

    @property
    def identity_perm(self) -> tuple[int, ...]:
        return tuple(range(len(self.output)))

    @property
    def spec(self) -> str:
        return ",".join(self.inputs) + "->" + self.output

    def __repr__(self) -> str:
        return (
            f"Plan({self.spec!r}, flops={self.flops:.3g}, largest_intermediate={self.largest_intermediate}, "
            f"steps={len(self.steps)})"
        )


def _planning_size(n: int) -> int:
    # a pruned-away bond has size 0; plan as if 1 (costs only), execute with the real size
    return max(int(n), 1)


@lru_cache(maxsize=4096)
def make_plan(
    inputs: tuple[str, ...], output: str, shapes: tuple[tuple[int, ...], ...], optimize: str = "auto"
) -> Plan:
    """Plan the contraction of terms ``inputs`` with ``shapes`` into ``output`` (cached)."""
    if len(inputs) != len(shapes):
        raise ValueError(f"{len(inputs)} terms but {len(shapes)} operands")
    sizes: dict[str, int] = {}
    for term, shape in zip(inputs, shapes):
        if len(term) != len(shape):
            raise ValueError(f"term {term!r} has {len(term)} indices but its operand has shape {tuple(shape)}")
        for c, n in zip(term, shape):
            if sizes.setdefault(c, n) != n:
                raise ValueError(f"index {c!r} has inconsistent sizes {sizes[c]} and {n}")

    # sum away indices that occur in one operand only and not in the output
    counts: dict[str, int] = {}
    for term in inputs:
        for c in term:
            counts[c] = counts.get(c, 0) + 1
    terms = list(inputs)
    presums = []
    for k, term in enumerate(terms):
        axes = tuple(i for i, c in enumerate(term) if counts[c] == 1 and c not in output)
        presums.append(axes)
        if axes:
            terms[k] = "".join(c for c in term if not (counts[c] == 1 and c not in output))

    if len(terms) == 1:
        path: tuple[tuple[int, ...], ...] = ()
        flops = prod(_planning_size(sizes[c]) for c in inputs[0])
        largest = prod(_planning_size(sizes[c]) for c in output) if output else 1
        info_text = f"single operand {inputs[0]}->{output}"
    else:
        plan_shapes = [tuple(_planning_size(sizes[c]) for c in t) for t in terms]
        eq = ",".join(terms) + "->" + output
        path_list, info = opt_einsum.contract_path(eq, *plan_shapes, shapes=True, optimize=optimize)
        path = tuple(tuple(p) for p in path_list)
        flops = int(info.opt_cost)
        largest = int(info.largest_intermediate)
        info_text = str(info)

    steps, final_perm, copy_cost, written = _build_steps(path, terms, output, sizes)
    if optimize == "auto" and 2 < len(terms) <= MAX_TERMS_FOR_COPY_AWARE_PATHS:
        # price opt_einsum's path and the other cheap ones with their memory traffic too
        best = (flops + COPY_FLOPS * (copy_cost + written), path, steps, final_perm, copy_cost, flops, written)
        for cand_path, cand_flops in _cheap_paths(terms, output, sizes):
            if cand_path == path or cand_flops >= best[0]:
                continue
            c_steps, c_final, c_copy, c_written = _build_steps(cand_path, terms, output, sizes)
            total = cand_flops + COPY_FLOPS * (c_copy + c_written)
            if total < best[0]:
                best = (total, cand_path, c_steps, c_final, c_copy, cand_flops, c_written)
        if best[1] != path:
            info_text += (f"\n  tnmars chose path {list(best[1])} instead: {best[5]:.4g} FLOPs and transposes "
                          f"worth {best[4]:.4g} copied entries, against {flops:.4g} FLOPs and {copy_cost:.4g}")
            _, path, steps, final_perm, copy_cost, flops, written = best
            largest = max(prod(_planning_size(n) for n in st.out_shape) for st in steps)
    return Plan(
        inputs=tuple(inputs),
        output=output,
        shapes=tuple(tuple(s) for s in shapes),
        path=path,
        presums=tuple(presums),
        steps=steps,
        final_perm=final_perm,
        flops=flops,
        largest_intermediate=largest,
        optimize=optimize,
        info_text=info_text,
        copy_cost=copy_cost,
        written=written,
    )


#: How many FLOPs one entry copied by a transpose or written by a step is worth when choosing
#: a path. Moving a large array is memory-bound (and its fresh output page-faults), so it is
#: worth far more than its arithmetic: 100 reproduced the faster of the measured paths of a TT-matrix
#: layer's weight and batch contractions (784x625, ranks 2-20, batch 1-512) on one CPU core.
COPY_FLOPS = 100.0
#: Up to this many operands every pairwise path is priced (180 paths for 5).
MAX_TERMS_FOR_COPY_AWARE_PATHS = 5


def _cheap_paths(terms: Sequence[str], output: str, sizes: dict[str, int], keep: int = 4) -> list:
    """Every pairwise contraction order with its FLOPs (opt_einsum's count), cheapest first,
    the ``keep`` cheapest within 2x of the best: the candidates whose transposes are priced."""
    found: list[tuple[int, tuple[tuple[int, int], ...]]] = []
    plan_sizes = {c: _planning_size(n) for c, n in sizes.items()}
    n_terms = len(terms)
    # a merged operand is fixed by the set of original operands in it (a bitmask): its indices
    # are computed once per set, the cost of a merge once per pair of sets
    kept_of: dict[int, str] = {1 << k: t for k, t in enumerate(terms)}
    step_cost: dict[tuple[int, int], int] = {}

    def merge(mask_a: int, mask_b: int) -> int:
        got = step_cost.get((mask_a, mask_b))
        if got is None:
            union_mask = mask_a | mask_b
            union = set(kept_of[mask_a]) | set(kept_of[mask_b])
            if union_mask not in kept_of:
                outside = set(output)
                for k in range(n_terms):
                    if not union_mask >> k & 1:
                        outside.update(terms[k])
                kept_of[union_mask] = "".join(sorted(c for c in union if c in outside))
            inner = len(kept_of[union_mask]) < len(union)
            got = step_cost[(mask_a, mask_b)] = opt_einsum.helpers.flop_count(union, inner, 2, plan_sizes)
        return got

    trees: set[frozenset] = set()  # orders of the same tree of merges cost the same: keep one

    def walk(live: list[int], path: tuple, cost: int, tree: frozenset) -> None:
        if len(live) == 1:
            if tree not in trees:
                trees.add(tree)
                found.append((cost, path))
            return
        for i in range(len(live)):
            for j in range(i + 1, len(live)):
                step = merge(live[i], live[j])
                walk([t for k, t in enumerate(live) if k not in (i, j)] + [live[i] | live[j]], path + ((i, j),),
                     cost + step, tree | {live[i] | live[j]})

    walk([1 << k for k in range(n_terms)], (), 0, frozenset())
    found.sort()
    best = found[0][0]
    return [(p, c) for c, p in found[:keep] if c <= 2 * best]


def _build_steps(path: Sequence[Sequence[int]], terms: Sequence[str], output: str, sizes: dict[str, int]):
    """The executor's steps for ``path`` (layouts chosen by :func:`_layout`), the final
    permutation, the total transpose cost in copied entries, and the entries the steps write."""
    steps = []
    live = list(terms)
    copy_cost = 0.0
    written = 0
    for pair in path:
        if len(pair) != 2:  # pragma: no cover - lone indices are pre-summed, so opt_einsum pairs all
            raise AssertionError(f"unexpected contraction step {pair} in plan for {terms}->{output}")
        i, j = sorted(pair)
        rest = "".join(t for k, t in enumerate(live) if k not in (i, j)) + output
        i, j, batch, a_free, contracted, b_free = _layout(i, j, live, rest, output, sizes, len(live) == 2)
        a, b = live[i], live[j]
        # every live index is shared or needed later: lone ones were pre-summed above
        perm_a = tuple(a.index(c) for c in batch + a_free + contracted)
        perm_b = tuple(b.index(c) for c in batch + contracted + b_free)
        nb = prod(sizes[c] for c in batch)
        m = prod(sizes[c] for c in a_free)
        kk = prod(sizes[c] for c in contracted)
        n = prod(sizes[c] for c in b_free)
        result = "".join(batch + a_free + b_free)
        steps.append(
            _Step(
                first=i,
                second=j,
                perm_a=perm_a,
                shape_a=(nb, m, kk),
                perm_b=perm_b,
                shape_b=(nb, kk, n),
                out_shape=tuple(sizes[c] for c in result),
                result=result,
                transpose_a=perm_a != tuple(range(len(perm_a))),
                transpose_b=perm_b != tuple(range(len(perm_b))),
                batched=nb != 1,
                outer=kk == 1,
            )
        )
        copy_cost += _permute_cost([sizes[c] for c in a], perm_a) + _permute_cost([sizes[c] for c in b], perm_b)
        written += prod(_planning_size(sizes[c]) for c in result)
        live = [t for k, t in enumerate(live) if k not in (i, j)] + [result]
    final = live[0]
    final_perm = tuple(final.index(c) for c in output)
    copy_cost += _permute_cost([sizes[c] for c in final], final_perm)
    return tuple(steps), final_perm, copy_cost, written


def _permute_cost(sizes: Sequence[int], perm: Sequence[int]) -> float:
    """Relative cost of copying an array of ``sizes`` into the axis order ``perm``.

    A copy is cheap when long runs stay contiguous and expensive when the inner run is short
    and spread over many axes (measured on torch and NumPy CPU copies, in units of a plain
    copy per entry: a 2-D transpose ~4, an 8-axis permutation with inner runs of 5 ~14, a
    4-axis block swap with inner runs of 25 ~1.5). Zero when nothing moves.
    """
    if list(perm) == list(range(len(perm))) or 0 in sizes:
        return 0.0
    # coalesce axes that stay adjacent and in order; the last group is the contiguous run
    groups: list[int] = []
    prev = None
    for ax in perm:
        n = sizes[ax]
        if n == 1:
            continue
        if prev is not None and ax == prev + 1:
            groups[-1] *= n
        else:
            groups.append(n)
        prev = ax
    entries = prod(sizes)
    if len(groups) <= 1:
        return 0.0
    tail = perm[-1]
    run = groups[-1] if tail == len(sizes) - 1 or all(sizes[a] == 1 for a in range(tail + 1, len(sizes))) else 1
    dims = len(groups)
    if run == 1:
        per_entry = 4.0 + (dims - 2)
    else:
        per_entry = 1.0 + 16.0 / run + 1.5 * max(0, dims - 3)
    return entries * per_entry


def _layout(i: int, j: int, live: list[str], rest: str, output: str, sizes: dict[str, int], last: bool):
    """Choose which operand is the matmul's left side and the order of the batch, free and
    contracted indices, so that the transposes (copies) cost least by :func:`_permute_cost`.
    At the last step the result's own transpose to the output order is counted too: a few
    small operand transposes can turn a shredded permutation of a large result into a cheap
    block swap (measured 10x cheaper for a TT-matrix weight)."""
    rank = {c: output.index(c) for c in output}
    best = None
    for first, second in ((i, j), (j, i)):
        a, b = live[first], live[second]
        shared = [c for c in a if c in b]
        batch_sets = {tuple(c for c in a if c in shared and c in rest), tuple(c for c in b if c in shared and c in rest)}
        contr_sets = {tuple(c for c in a if c in shared and c not in rest), tuple(c for c in b if c in shared and c not in rest)}
        free_a = [c for c in a if c not in shared]
        free_b = [c for c in b if c not in shared]
        free_options = [(free_a, free_b)]
        if last:
            free_options.append((sorted(free_a, key=rank.__getitem__), sorted(free_b, key=rank.__getitem__)))
        for batch in batch_sets:
            for contracted in contr_sets:
                for fa, fb in free_options:
                    order_a = list(batch) + fa + list(contracted)
                    order_b = list(batch) + list(contracted) + fb
                    cost = _permute_cost([sizes[c] for c in a], [a.index(c) for c in order_a]) + _permute_cost(
                        [sizes[c] for c in b], [b.index(c) for c in order_b])
                    if last:
                        result = list(batch) + fa + fb
                        cost += _permute_cost([sizes[c] for c in result], [result.index(c) for c in output])
                    key = (cost, first != i)
                    if best is None or key < best[0]:
                        best = (key, (first, second, list(batch), list(fa), list(contracted), list(fb)))
    return best[1]


def execute(plan: Plan, operands: Sequence[Any], backend: Backend) -> Any:
    """Run ``plan`` on ``operands`` with ``backend``'s transpose/reshape/matmul."""
    live = []
    for x, axes in zip(operands, plan.presums):
        live.append(backend.sum(x, axes) if axes else x)
    for step in plan.steps:
        a = live[step.first]
        b = live[step.second]
        if step.transpose_a:
            a = backend.transpose(a, step.perm_a)
        if step.transpose_b:
            b = backend.transpose(b, step.perm_b)
        if step.outer:
            c = backend.reshape(a, step.shape_a) * backend.reshape(b, (step.shape_b[0], 1, step.shape_b[2]))
        elif step.batched:
            c = backend.matmul(backend.reshape(a, step.shape_a), backend.reshape(b, step.shape_b))
        else:  # a plain GEMM
            c = backend.matmul(backend.reshape(a, step.shape_a[1:]), backend.reshape(b, step.shape_b[1:]))
        c = backend.reshape(c, step.out_shape)
        live = [t for k, t in enumerate(live) if k not in (step.first, step.second)] + [c]
    out = live[0]
    if plan.final_perm != plan.identity_perm:
        out = backend.transpose(out, plan.final_perm)
    return out


def contract(spec: str, *operands: Any, optimize: str = "auto", backend: Backend | str | None = None) -> Any:
    """Contract ``operands`` according to ``spec`` with a cached plan.

    Equivalent to ``numpy.einsum(spec, *operands)`` for specs without traces, but planned by
    opt_einsum once per shape signature and executed on the operands' own backend.

    >>> import numpy as np
    >>> a, b = np.ones((2, 3)), np.ones((3, 4))
    >>> contract("ij,jk->ik", a, b).shape
    (2, 4)
    """
    parsed = parse_spec(spec)
    if len(parsed.inputs) != len(operands):
        raise ValueError(f"spec {spec!r} has {len(parsed.inputs)} terms but {len(operands)} operands were given")
    be = infer_backend(operands) if backend is None else _as_backend(backend)
    shapes = tuple(tuple(int(n) for n in x.shape) for x in operands)
    plan = make_plan(parsed.inputs, parsed.output, shapes, optimize)
    return execute(plan, operands, be)


def _as_backend(backend: Backend | str) -> Backend:
    from .backends import get_backend

    return backend if isinstance(backend, Backend) else get_backend(backend)
