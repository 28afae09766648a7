"""Contraction plans, the pairwise executor, and :func:`contract` (a drop-in for opt_einsum's).

A :class:`Plan` is made once per ``(inputs, output, shapes, optimize, memory_limit)`` and
cached; it holds only integers and index strings, never arrays. Executing a plan is a fixed
sequence of ``reshape``/``sum``/``transpose``/``matmul`` calls on the caller's backend, so
results stay in the caller's framework, dtype and device, and torch autograd sees plain
differentiable ops. Shared indices that must survive a pairwise step (CP's hyperedge, batch
indices) become the batch dimension of a batched matmul; a size-1 axis broadcast against a
larger one is reshaped away and an index on one operand only is summed before the first step.
:func:`contract` adds what is einsum but not a network around the same plans: the interleaved
form, ``...``, traces, scalars and lists, mixed dtypes, booleans and ``out=``.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from math import prod
from typing import Any

import numpy as np
import opt_einsum

from ._checks import host_memory
from .backends import Backend, _name_of_class, backend_name_of, get_backend, infer_backend
from .backends.torch_backend import TALL_SKINNY_RATIO
from .paths import (
    MIN_TERMS_FOR_ESCALATION,
    Optimize,
    cheapest_paths,
    find_path,
    greedy_variants,
    harder_search,
    is_loopy,
    normalize_memory_limit,
    normalize_optimize,
    pairwise_path,
    star_paths,
)
from .spec import einsum_terms, labels_to_spec


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
    #: where the operands and the result live in the executor's slot list (operand k in slot
    #: k, the result of step s in slot n + s), so no list is rebuilt per step
    slot_a: int = 0
    slot_b: int = 0
    slot_out: int = 0
    #: the contracted axes of a and b, paired, when the step is one ``tensordot`` (no batch
    #: index, free indices in their own order, not a tall-skinny matrix product, which
    #: torch's backend runs transposed, a result of at most ``MAX_FUSED_ENTRIES``): backends with a
    #: fused tensordot (torch) run it as one call instead of permute/reshape/matmul/reshape
    axes_a: tuple[int, ...] | None = None
    axes_b: tuple[int, ...] | None = None
    #: 1 or 2: make operand a or b contiguous before a plain GEMM in which both are transposed
    #: views (torch's GEMM ran about 2x slower with two transposed operands); 0: neither
    copy_first: int = 0


@dataclass(frozen=True)
class Plan:
    """A cached contraction plan: the pairwise path plus its cost figures."""

    inputs: tuple[str, ...]
    output: str
    shapes: tuple[tuple[int, ...], ...]
    #: pairwise steps, in opt_einsum's linear form (the two operands leave, their product is appended)
    path: tuple[tuple[int, ...], ...]
    #: per operand: its shape once size-1 axes broadcast against larger ones are dropped (None: unchanged)
    squeezes: tuple[tuple[int, ...] | None, ...]
    #: per-operand sums over indices that appear in that operand only (axes after the squeeze)
    presums: tuple[tuple[int, ...], ...]
    steps: tuple[_Step, ...]
    final_perm: tuple[int, ...]
    #: opt_einsum's FLOP count of the path
    flops: int
    largest_intermediate: int
    optimize: Any
    #: how the path was found, and why it departs from the first search when it does
    note: str = ""
    #: the transposes' cost, in plain-copy entries (:func:`_permute_cost`): the memory traffic
    #: that ``flops`` leaves out, which decides between plans of similar FLOPs
    copy_cost: float = 0.0
    #: entries written by the pairwise steps (intermediates and result)
    written: int = 0
    #: the copies and writes priced in FLOPs (:func:`_traffic_price`), plus the extra time of
    #: narrow matrix products (``NARROW_GEMM``)
    traffic: float = 0.0

    @property
    def cost(self) -> float:
        """FLOPs plus memory traffic (copied and written entries, priced by the size of the
        array they belong to) and the slowness of narrow matrix products: what path and
        evaluation-order choices compare."""
        return self.flops + self.traffic

    @property
    def identity_perm(self) -> tuple[int, ...]:
        return tuple(range(len(self.output)))

    @property
    def spec(self) -> str:
        return ",".join(self.inputs) + "->" + self.output

    @cached_property
    def info_text(self) -> str:
        """opt_einsum's report of the path (scaling, FLOPs, every step), then :attr:`note`."""
        if not self.steps:
            return f"single operand {self.spec}\n  {self.note}"
        terms = [t for t in self._terms]
        eq = ",".join(terms) + "->" + self.output
        shapes = [tuple(_planning_size(self._sizes[c]) for c in t) for t in terms]
        _, info = opt_einsum.contract_path(eq, *shapes, shapes=True, optimize=[list(p) for p in self.path])
        return f"{info}\n  {self.note}"

    @cached_property
    def peak_entries(self) -> int:
        """The entries of the result or of the largest step, whichever is larger (0 for an
        empty result): what one array of the contraction must hold (:func:`_check_host_memory`)."""
        if any(0 in shape for shape in self.shapes):
            return 0
        return max(prod(self._sizes[c] for c in self.output), self.largest_intermediate)

    @cached_property
    def _sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for term, shape in zip(self.inputs, self.shapes):
            for c, n in zip(term, shape):
                if sizes.get(c, 1) == 1:
                    sizes[c] = n
        return sizes

    @cached_property
    def _terms(self) -> list[str]:
        """The terms the steps start from (after the squeezes and pre-sums)."""
        out = []
        for term, shape, axes in zip(self.inputs, self.shapes, self.presums):
            kept = "".join(c for c, n in zip(term, shape) if not (n == 1 and self._sizes[c] != 1))
            out.append("".join(c for k, c in enumerate(kept) if k not in axes))
        return out

    def __repr__(self) -> str:
        spec = self.spec if len(self.spec) <= 80 else self.spec[:60] + "…" + self.spec[-12:]
        return (
            f"Plan({spec!r}, flops={self.flops:.3g}, largest_intermediate={self.largest_intermediate}, "
            f"steps={len(self.steps)})"
        )


def _planning_size(n: int) -> int:
    # a pruned-away bond has size 0; plan as if 1 (costs only), execute with the real size
    return max(int(n), 1)


#: How many FLOPs one entry copied by a transpose or written by a step is worth when choosing
#: a path, for arrays larger than ``CACHED_ENTRIES`` (memory-bound copies) and for smaller
#: ones, which stay in cache; and ``NARROW_GEMM``: a matrix product whose smallest side is
#: ``s`` (at least 4; a vector product is memory-bound, not slower without end) is charged
#: ``NARROW_GEMM / s`` of its FLOPs extra. Fitted by ``benchmarks/contraction_prices.py``
#: (results in ``benchmarks/results/contraction_prices.md``): every candidate path of the
#: benchmark's tuning rows of up to eight operands timed on NumPy and torch (one core, CPU
#: time); these values minimise the worst slowdown of the chosen path against the fastest
#: candidate, then the mean, then the change from the values before (50 / 2 / 8, fitted when
#: transposed views were still charged as copies, which over-priced the copy of a 729x729
#: TT-matrix weight and chose a path 1.57x slower on NumPy). A plain copy of a large array
#: measured about 13 FLOPs of a single-threaded GEMM per entry on the benchmark machine.
COPY_FLOPS = 10.0
CACHED_COPY_FLOPS = 2.0
CACHED_ENTRIES = 2**19
NARROW_GEMM = 8.0
#: A plain matrix product at least ``TALL_SKINNY_RATIO`` times taller than wide with a short
#: inner side (which torch's backend runs as it is, not transposed) is charged this fraction
#: of its FLOPs extra: torch ran (6561 x 10) @ (10 x 81) in 1.39 ms and (81 x 10) @ (10 x 6561),
#: the same FLOPs and result entries, in 0.73 ms (NumPy: 0.59 and 0.63). Fitted with the
#: prices above (worst slowdown of the chosen path over the tuning rows 1.20x, mean 1.014x;
#: held out: 1.29x, 1.053x; before this fit 1.36x, 1.046x and 1.29x, 1.062x).
TALL_GEMM = 0.25


#: Steps whose result has more entries than this run as transpose/reshape/matmul even where a
#: fused tensordot exists: the fused call saves dispatch time, which only matters for small
#: steps, and on large ones torch's tensordot ran 1.75x slower than the explicit steps (a
#: Tucker 12^6 reconstruction: 81 ms against 46 ms).
MAX_FUSED_ENTRIES = 2**16


def _traffic_price(entries: int) -> float:
    """FLOPs one moved entry of an array of ``entries`` entries is worth."""
    return COPY_FLOPS if entries > CACHED_ENTRIES else CACHED_COPY_FLOPS
#: Up to this many operands every pairwise path is priced (945 trees for 6).
MAX_TERMS_FOR_COPY_AWARE_PATHS = 6


@lru_cache(maxsize=4096)
def make_plan(
    inputs: tuple[str, ...],
    output: str,
    shapes: tuple[tuple[int, ...], ...],
    optimize: Optimize = "auto",
    memory_limit: int | str | None = None,
    escalate_from: float | None = None,
) -> Plan:
    """Plan the contraction of terms ``inputs`` with ``shapes`` into ``output`` (cached).

    No index may repeat inside a term (take diagonals first, as :func:`contract` does).
    ``optimize`` is anything :func:`tnmars.paths.normalize_optimize` accepts, in its hashable
    form (a path as a tuple of tuples). ``escalate_from``: the FLOPs from which ``"auto"``
    runs its harder search on a loopy graph (default
    :data:`tnmars.paths.MIN_FLOPS_FOR_ESCALATION`); a caller that runs each plan only a few
    times sets it higher, since the search costs 10-300 ms.

    >>> make_plan(("ij", "jk"), "ik", ((2, 3), (3, 4))).flops
    48
    """
    optimize = normalize_optimize(optimize)
    memory_limit = normalize_memory_limit(memory_limit)
    if len(inputs) != len(shapes):
        raise ValueError(f"{len(inputs)} terms but {len(shapes)} operands")
    sizes: dict[str, int] = {}
    for pos, (term, shape) in enumerate(zip(inputs, shapes)):
        if len(term) != len(shape):
            raise ValueError(f"term {term!r} has {len(term)} indices but operand {pos} has shape {tuple(shape)}")
        if len(set(term)) != len(term):
            raise ValueError(f"term {term!r} repeats an index: take the diagonal first (tnmars.contract does)")
        for c, n in zip(term, shape):
            before = sizes.get(c)
            if before is None or before == 1:
                sizes[c] = int(n)
            elif n != 1 and n != before:
                raise ValueError(f"index {c!r} has inconsistent sizes {before} and {n}")
    if len(set(output)) != len(output) or any(c not in sizes for c in output):
        raise ValueError(f"output {output!r} must name distinct indices of the inputs {inputs}")

    # broadcasting: drop the size-1 axes of an index that is larger on another operand
    terms: list[str] = []
    squeezes: list[tuple[int, ...] | None] = []
    for term, shape in zip(inputs, shapes):
        kept = "".join(c for c, n in zip(term, shape) if not (n == 1 and sizes[c] != 1))
        squeezes.append(tuple(sizes[c] for c in kept) if len(kept) < len(term) else None)
        terms.append(kept)
    # sum away indices that occur in one operand only and not in the output
    counts: dict[str, int] = {}
    for term in terms:
        for c in term:
            counts[c] = counts.get(c, 0) + 1
    presums = []
    for k, term in enumerate(terms):
        axes = tuple(i for i, c in enumerate(term) if counts[c] == 1 and c not in output)
        presums.append(axes)
        if axes:
            terms[k] = "".join(c for c in term if not (counts[c] == 1 and c not in output))

    plan_sizes = {c: _planning_size(n) for c, n in sizes.items()}
    best, note = _choose_path(terms, output, sizes, plan_sizes, optimize, memory_limit, escalate_from)
    if len(terms) == 1:
        best.flops = prod(plan_sizes[c] for c in inputs[0])
        best.largest = prod(plan_sizes[c] for c in output) if output else 1
    limit = _limit_entries(terms, output, plan_sizes, memory_limit)
    if limit is not None and best.largest > limit:
        warnings.warn(
            f"no pairwise path of {','.join(inputs)}->{output} keeps intermediates within memory_limit={memory_limit} "
            f"({limit} entries); the plan's largest holds {best.largest}", stacklevel=3)
    return Plan(
        inputs=tuple(inputs),
        output=output,
        shapes=tuple(tuple(int(n) for n in s) for s in shapes),
        path=best.path,
        squeezes=tuple(squeezes),
        presums=tuple(presums),
        steps=best.steps,
        final_perm=best.final_perm,
        flops=best.flops,
        largest_intermediate=best.largest,
        optimize=optimize,
        note=note,
        copy_cost=best.copy_cost,
        written=best.written,
        traffic=best.traffic,
    )


def _choose_path(terms: list[str], output: str, sizes: dict[str, int], plan_sizes: dict[str, int],
                 optimize: Optimize, memory_limit: int | str | None,
                 escalate_from: float | None = None) -> tuple[_Priced, str]:
    """The path to run, priced, and a note on how it was found. ``optimize="auto"`` lets
    several searches compete (see :mod:`tnmars.paths`); the cheapest by :attr:`Plan.cost` wins."""
    raw, found_by = find_path(terms, output, plan_sizes, optimize, memory_limit)
    path = pairwise_path(raw, len(terms))
    best = _priced(path, terms, output, sizes)
    note = f"path from {found_by}"
    if optimize == "auto" and 2 < len(terms) <= MAX_TERMS_FOR_COPY_AWARE_PATHS:
        # price opt_einsum's path and the other cheap ones with their memory traffic too
        limit = _limit_entries(terms, output, plan_sizes, memory_limit)
        first = best
        for cand, cand_flops in cheapest_paths(terms, output, plan_sizes):
            if cand == path or cand_flops >= best.cost:
                continue
            priced = _priced(cand, terms, output, sizes)
            if priced.cost < best.cost and (limit is None or priced.largest <= limit):
                best = priced
        if best is not first:
            note += (f"; tnmars chose path {list(best.path)} instead: {best.flops:.4g} FLOPs and transposes worth "
                     f"{best.copy_cost:.4g} copied entries, against {first.flops:.4g} FLOPs and {first.copy_cost:.4g}")
    elif optimize == "auto" and len(terms) > MAX_TERMS_FOR_COPY_AWARE_PATHS:
        first = best
        for alt, name in greedy_variants(terms, output, plan_sizes, memory_limit):
            priced = _priced(pairwise_path(alt, len(terms)), terms, output, sizes)
            if priced.cost < best.cost:
                best, found_by = priced, name
        if best is not first:
            note += f"; {found_by} found {best.flops:.4g} FLOPs against {first.flops:.4g}, and its path is used"
    if optimize == "auto":
        limit = _limit_entries(terms, output, plan_sizes, memory_limit)
        first = best
        for alt, name in star_paths(terms, output):
            priced = _priced(alt, terms, output, sizes)
            if priced.cost < best.cost and (limit is None or priced.largest <= limit):
                best, found_by = priced, name
        if best is not first:
            note += (f"; the network is a star: the leaves taken into the centre ({found_by}) cost "
                     f"{best.flops:.4g} FLOPs and transposes worth {best.copy_cost:.4g} copied entries, against "
                     f"{first.flops:.4g} and {first.copy_cost:.4g}")
    if optimize == "auto" and len(terms) >= MIN_TERMS_FOR_ESCALATION and is_loopy(terms):
        found, searched = harder_search(terms, output, plan_sizes, memory_limit, best.flops, escalate_from)
        if not found:
            note += f"; the graph has loops ({searched})"
        else:
            first = best
            for alt, name in found:
                priced = _priced(pairwise_path(alt, len(terms)), terms, output, sizes)
                if priced.cost < best.cost:
                    best, found_by = priced, name
            if best is first:
                note += f"; the graph has loops: {searched} found nothing cheaper"
            else:
                note += (f"; the graph has loops: {found_by} found {best.flops:.4g} FLOPs against "
                         f"{first.flops:.4g} (and cheaper copies), and its path is used")
    return best, note


def _limit_entries(terms, output, sizes, memory_limit) -> int | None:
    if memory_limit == "max_input":
        return max(prod(sizes[c] for c in t) for t in [*terms, output])
    return memory_limit


class _Priced:
    """A path with its executor steps and costs (see :func:`_build_steps`)."""

    def __init__(self, path, steps, final_perm, copy_cost, written, flops, largest, traffic) -> None:
        self.path, self.steps, self.final_perm = path, steps, final_perm
        self.copy_cost, self.written, self.flops, self.largest = copy_cost, written, flops, largest
        self.traffic = traffic

    @property
    def cost(self) -> float:
        return self.flops + self.traffic


def _priced(path, terms, output, sizes) -> _Priced:
    return _Priced(tuple(path), *_build_steps(path, terms, output, sizes))


def _build_steps(path: Sequence[Sequence[int]], terms: Sequence[str], output: str, sizes: dict[str, int]):
    """The executor's steps for a pairwise ``path`` (layouts chosen by :func:`_layout`), the
    final permutation, the total transpose cost in copied entries, the entries the steps
    write, the path's FLOPs (opt_einsum's count), its largest intermediate, and the copies
    and writes priced in FLOPs.

    A step's layout is chosen for that step alone; where both operands could be the left
    side at the same price, the choice decides which later steps can read their operand as
    a transposed view (a Tucker core taking its factors last index first: the factor must be
    on the left every time), so the steps are built a second time with ties going the other
    way, and the cheaper of the two is kept."""
    first = _build_steps_once(path, terms, output, sizes, swap=False)
    if not first[-1] or first[2] == 0:  # no tie, or nothing copied: nothing to gain
        return first[:-1]
    second = _build_steps_once(path, terms, output, sizes, swap=True)
    # compare flops + traffic
    return (second if second[4] + second[6] < first[4] + first[6] else first)[:-1]


def _build_steps_once(path, terms, output, sizes, swap: bool):
    steps = []
    live = list(terms)
    ids = list(range(len(terms)))  # the slot of each live operand
    copy_cost = 0.0
    written = 0
    traffic = 0.0
    flops = 0
    largest = 0
    tied = False
    plan_sizes = {c: _planning_size(n) for c, n in sizes.items()}
    # the prices are read here, not fixed: benchmarks/contraction_prices.py fits them by setting them
    prices = (COPY_FLOPS, CACHED_COPY_FLOPS, CACHED_ENTRIES, NARROW_GEMM, TALL_GEMM, TALL_SKINNY_RATIO,
              MAX_FUSED_ENTRIES)
    for pair in path:
        i, j = sorted(pair)
        rest = "".join(t for k, t in enumerate(live) if k not in (i, j)) + output
        a, b = live[i], live[j]
        last = len(live) == 2
        key = (a, b, tuple(c in rest for c in a + b), output if last else None, tuple(sizes[c] for c in a + b), swap,
               prices)
        part = _STEPS.get(key)
        if part is None:
            part = _step_parts(a, b, rest, output, sizes, plan_sizes, last, swap)
            if len(_STEPS) >= STEP_CACHE_SIZE:
                _STEPS.clear()
            _STEPS[key] = part
        i_first, fields, result, moved, entries, written_price, step_flops, extra, step_tied = part
        if not i_first:
            i, j = j, i
        tied = tied or step_tied
        steps.append(_Step(first=i, second=j, slot_a=ids[i], slot_b=ids[j], slot_out=len(terms) + len(steps),
                           **fields))
        ids = [t for k, t in enumerate(ids) if k not in (i, j)] + [len(terms) + len(steps) - 1]
        for cost, price in moved:  # (in the order the sums always took: the same rounding)
            copy_cost += cost
            traffic += price
        written += entries
        traffic += written_price
        largest = max(largest, entries)
        flops += step_flops
        for price in extra:
            traffic += price
        live = [t for k, t in enumerate(live) if k not in (i, j)] + [result]
    final = live[0]
    final_perm = tuple(final.index(c) for c in output)
    moved = _permute_cost([sizes[c] for c in final], final_perm)
    copy_cost += moved
    traffic += moved * _traffic_price(prod(plan_sizes[c] for c in final))
    return tuple(steps), final_perm, copy_cost, written, flops, largest, traffic, tied


#: :func:`_step_parts` by everything it reads (see there), the module's prices included; cleared
#: when it holds more than this (an entry takes about 2 KB: at most about 30 MB)
STEP_CACHE_SIZE = 2**14
_STEPS: dict[tuple, tuple] = {}


def _step_parts(a0: str, b0: str, rest: str, output: str, sizes: dict[str, int], plan_sizes: dict[str, int],
                last: bool, swap: bool) -> tuple:
    """One step of :func:`_build_steps_once`, contracting operands ``a0`` and ``b0`` (in the
    order they are live): whether ``a0`` is the matmul's left side, the :class:`_Step` fields
    that do not depend on the operands' slots, the result's indices, the copies and their
    prices, the entries written and their price, the FLOPs, the narrow and tall products'
    prices, and whether the layout was tied (see :func:`_layout`). It reads only the two
    operands' indices and sizes, which of their indices ``rest`` (the later terms and the
    output) holds, at the last step the output's order, and the module's prices (``COPY_FLOPS``
    and the others), by which it is remembered: a fit
    plans thousands of contractions that differ in a few bond sizes (a ring's Grams ask for
    each step about 11 times), and building the steps was most of their planning time."""
    (first, _, batch, a_free, contracted, b_free), step_tied = _layout(0, 1, [a0, b0], rest, output, sizes, last,
                                                                      swap)
    a, b = (a0, b0) if first == 0 else (b0, a0)
    # every live index is shared or needed later: lone ones were pre-summed
    perm_a = tuple(a.index(c) for c in batch + a_free + contracted)
    perm_b = tuple(b.index(c) for c in batch + contracted + b_free)
    nb = prod(sizes[c] for c in batch)
    m = prod(sizes[c] for c in a_free)
    kk = prod(sizes[c] for c in contracted)
    n = prod(sizes[c] for c in b_free)
    result = "".join(batch + a_free + b_free)
    plain = nb == 1 and kk != 1
    cost_a, cost_b, copy_first = _gemm_copies([sizes[c] for c in a], perm_a, len(batch) + len(a_free),
                                              [sizes[c] for c in b], perm_b, len(batch) + len(contracted), plain)
    fused = (not batch and kk != 1 and (m < 16 * n or n == 1) and nb * m * n <= MAX_FUSED_ENTRIES
             and a_free == [c for c in a if c in a_free] and b_free == [c for c in b if c in b_free]
             and not copy_first)
    fields = {
        "perm_a": perm_a,
        "shape_a": (nb, m, kk),
        "perm_b": perm_b,
        "shape_b": (nb, kk, n),
        "out_shape": tuple(sizes[c] for c in result),
        "result": result,
        "transpose_a": perm_a != tuple(range(len(perm_a))),
        "transpose_b": perm_b != tuple(range(len(perm_b))),
        "batched": nb != 1,
        "outer": kk == 1,
        "axes_a": tuple(a.index(c) for c in contracted) if fused else None,
        "axes_b": tuple(b.index(c) for c in contracted) if fused else None,
        "copy_first": copy_first,
    }
    moved = tuple((cost, cost * _traffic_price(prod(plan_sizes[c] for c in term)))
                  for term, cost in ((a, cost_a), (b, cost_b)))
    entries = prod(plan_sizes[c] for c in result)
    step_flops = opt_einsum.helpers.flop_count(set(a) | set(b), bool(contracted), 2, plan_sizes)
    extra = []
    if not kk == 1:  # a narrow matrix product runs slower per FLOP than a wide one
        narrowest = max(min(_planning_size(m), _planning_size(kk), _planning_size(n)), 4)
        extra.append(step_flops * NARROW_GEMM / narrowest)
        if nb == 1 and m >= TALL_SKINNY_RATIO * n and kk < max(64, 2 * n):
            extra.append(step_flops * TALL_GEMM)  # torch runs it directly, and slowly
    return (first == 0, fields, result, moved, entries, entries * _traffic_price(entries), step_flops, tuple(extra),
            step_tied)


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


def _is_transposed_view(sizes: Sequence[int], perm: Sequence[int], rows: int) -> bool:
    """Whether an array of ``sizes`` permuted by ``perm`` and read as a matrix (rows: the first
    ``rows`` axes of ``perm``, columns: the rest) is the transpose of a contiguous matrix: the
    reshape keeps it a view and BLAS reads it with its transpose flag, so nothing is copied.

    >>> _is_transposed_view((5, 5, 5), (2, 0, 1), 1), _is_transposed_view((5, 5, 5), (2, 1, 0), 1)
    (True, False)
    """
    r = [ax for ax in perm[:rows] if sizes[ax] != 1]
    c = [ax for ax in perm[rows:] if sizes[ax] != 1]
    return c + r == [ax for ax in range(len(sizes)) if sizes[ax] != 1]


def _gemm_copies(sizes_a, perm_a, rows_a, sizes_b, perm_b, rows_b, plain: bool) -> tuple[float, float, int]:
    """The copy costs (:func:`_permute_cost`) of a step's operands ``a`` (a matrix of
    ``rows_a`` row axes after ``perm_a``) and ``b``, and which one the executor copies first
    (:attr:`_Step.copy_first`). In a plain GEMM (``plain``: no batch index, something summed) an
    operand that is a transposed view costs nothing; when both are, the smaller is copied.
    Tucker 10^6 rank 5 as such products, the core's last index first (the factor times the
    core read as a transposed matrix, no copy): 2.6 ms on NumPy and 4.9 ms on torch, against
    7.2 and 14.3 ms with the copies the plan made before (one run, shared machine)."""
    cost_a, cost_b = _permute_cost(sizes_a, perm_a), _permute_cost(sizes_b, perm_b)
    if not plain:
        return cost_a, cost_b, 0
    view_a = cost_a > 0 and _is_transposed_view(sizes_a, perm_a, rows_a)
    view_b = cost_b > 0 and _is_transposed_view(sizes_b, perm_b, rows_b)
    if view_a and view_b:
        return (cost_a, 0.0, 1) if prod(sizes_a) <= prod(sizes_b) else (0.0, cost_b, 2)
    return (0.0 if view_a else cost_a), (0.0 if view_b else cost_b), 0


def _layout(i: int, j: int, live: list[str], rest: str, output: str, sizes: dict[str, int], last: bool,
            swap: bool = False):
    """Choose which operand is the matmul's left side and the order of the batch, free and
    contracted indices, so that the transposes (copies) cost least by :func:`_gemm_copies`;
    also say whether the other choice of left side cost as much (ties put operand ``i`` on
    the left, or with ``swap`` the smaller operand: :func:`_build_steps` tries both).
    At the last step the result's own transpose to the output order is counted too: a few
    small operand transposes can turn a shredded permutation of a large result into a cheap
    block swap (measured 10x cheaper for a TT-matrix weight)."""
    rank = {c: output.index(c) for c in output}
    best = None
    tied = False
    small = j if prod(sizes[c] for c in live[j]) < prod(sizes[c] for c in live[i]) else i
    for first, second in ((i, j), (j, i)):
        a, b = live[first], live[second]
        shared = [c for c in a if c in b]
        # the two operands' orders, once each, in a fixed order: a set of tuples of index letters
        # iterates in an order that Python's per-process string hashing decides, and on a cost
        # tie the first candidate wins, so plans (and the rounding of their sums) changed from
        # one process to the next
        batch_sets = dict.fromkeys((tuple(c for c in a if c in shared and c in rest),
                                    tuple(c for c in b if c in shared and c in rest)))
        contr_sets = dict.fromkeys((tuple(c for c in a if c in shared and c not in rest),
                                    tuple(c for c in b if c in shared and c not in rest)))
        free_a = [c for c in a if c not in shared]
        free_b = [c for c in b if c not in shared]
        kk = prod(sizes[c] for c in shared if c not in rest)
        free_options = [(free_a, free_b)]
        if last:
            free_options.append((sorted(free_a, key=rank.__getitem__), sorted(free_b, key=rank.__getitem__)))
        for batch in batch_sets:
            for contracted in contr_sets:
                for fa, fb in free_options:
                    order_a = list(batch) + fa + list(contracted)
                    order_b = list(batch) + list(contracted) + fb
                    plain = kk != 1 and prod(sizes[c] for c in batch) == 1
                    cost_a, cost_b, _ = _gemm_copies(
                        [sizes[c] for c in a], [a.index(c) for c in order_a], len(batch) + len(fa),
                        [sizes[c] for c in b], [b.index(c) for c in order_b], len(batch) + len(contracted), plain)
                    cost = cost_a + cost_b
                    if last:
                        result = list(batch) + fa + fb
                        cost += _permute_cost([sizes[c] for c in result], [result.index(c) for c in output])
                    key = (cost, (first != small) if swap else (first != i))
                    if best is not None and cost == best[0][0] and first != best[1][0]:
                        tied = True
                    if best is None or key < best[0]:
                        best = (key, (first, second, list(batch), list(fa), list(contracted), list(fb)))
    return best[1], tied


def execute(plan: Plan, operands: Sequence[Any], backend: Backend) -> Any:
    """Run ``plan`` on ``operands`` with ``backend``'s reshape/sum/transpose/matmul. The
    result may be a transposed view; :func:`contract` and ``Network.to_tensor`` make it
    contiguous."""
    slots: list[Any] = [None] * (len(plan.inputs) + len(plan.steps))
    for k, (x, squeeze, axes) in enumerate(zip(operands, plan.squeezes, plan.presums)):
        if squeeze is not None:
            x = backend.reshape(x, squeeze)
        if axes and all(x.shape[a] == 1 for a in axes):  # size-1 legs (TT boundary ranks): a reshape, exact
            slots[k] = backend.reshape(x, [n for a, n in enumerate(x.shape) if a not in axes])  # in every dtype
        else:  # (torch's sum makes bool and small integers int64)
            slots[k] = backend.sum(x, axes) if axes else x
    fused = backend.fused_tensordot
    for step in plan.steps:
        a = slots[step.slot_a]
        b = slots[step.slot_b]
        slots[step.slot_a] = slots[step.slot_b] = None  # intermediates are freed as soon as used
        if fused and step.axes_a is not None:
            slots[step.slot_out] = backend.tensordot(a, b, step.axes_a, step.axes_b)
            continue
        if step.transpose_a:
            a = backend.transpose(a, step.perm_a)
        if step.transpose_b:
            b = backend.transpose(b, step.perm_b)
        if step.outer:
            c = backend.reshape(a, step.shape_a) * backend.reshape(b, (step.shape_b[0], 1, step.shape_b[2]))
        elif step.batched:
            c = backend.matmul(backend.reshape(a, step.shape_a), backend.reshape(b, step.shape_b))
        else:  # a plain GEMM
            a = backend.reshape(a, step.shape_a[1:])
            b = backend.reshape(b, step.shape_b[1:])
            if step.copy_first:
                a, b = (backend.contiguous(a), b) if step.copy_first == 1 else (a, backend.contiguous(b))
            c = backend.matmul(a, b)
        slots[step.slot_out] = backend.reshape(c, step.out_shape)
    out = slots[-1]
    if plan.final_perm != plan.identity_perm:
        out = backend.transpose(out, plan.final_perm)
    return out


# ---------------------------------------------------------------------------- the einsum front end
def contract(
    *args: Any,
    out: Any = None,
    optimize: Optimize = "auto",
    memory_limit: int | str | None = None,
    backend: Backend | str | None = None,
    dtype: Any = None,
    order: str = "K",
    casting: str = "safe",
    use_blas: bool = True,
) -> Any:
    """Einstein summation with a cached plan, on the operands' own backend: a drop-in for
    ``opt_einsum.contract``.

    Call it as ``contract("ij,jk->ik", a, b)`` or in the interleaved form
    ``contract(a, [0, 1], b, [1, 2], [0, 2])`` (any hashable labels). In a string, indices
    are the ASCII letters and any non-ASCII character (digits and punctuation are refused,
    where ``opt_einsum`` takes them: give such labels in the interleaved form); ``...`` broadcasts, size-1 axes broadcast, a repeated index is
    a trace or diagonal, an empty term is a scalar. Operands may be NumPy, CuPy or torch
    arrays (one framework per call), numbers or nested lists; mixed dtypes are promoted
    as ``numpy.einsum`` promotes them (a Python float among float16 arrays gives float64),
    on torch as ``torch.einsum`` promotes them (Python numbers weakly, as in torch's arithmetic:
    a float32 tensor times 2.5 stays float32; a 0-d tensor as any operand: float32 with a 0-d
    float64 gives float64, where ``*`` would give float32), and booleans give booleans. The
    result is in the operands' framework, dtype and device, and C-contiguous (with the default
    ``order="K"`` too, where ``numpy.einsum`` of Fortran-ordered operands returns a
    Fortran-ordered array; ask ``order="F"`` for that layout). On the host, a result or a step
    larger than the machine's memory is a ``MemoryError`` that says so, before any work.

    Parameters
    ----------
    out:
        An array of the result's shape to write the result into (returned); the result's
        dtype must cast to it safely.
    optimize:
        ``"auto"`` (default; searches harder on loopy graphs, see :mod:`tnmars.paths`),
        ``True``/``None`` (the same), ``False`` (contract left to right), any opt_einsum
        optimizer name (``"optimal"``, ``"dp"``, ``"greedy"``, ``"auto-hq"``, ...), a path
        (``[(0, 1), (0, 1)]``, ``numpy.einsum_path``'s form too) or an optimizer object.
    memory_limit:
        Largest intermediate allowed to the path search, in entries; ``"max_input"``: the
        largest operand; ``None`` or ``-1``: no limit.
    backend:
        ``"numpy"``, ``"torch"`` or ``"cupy"``: contract there (operands are converted) and
        return that framework's array. Default: the operands' framework.
    dtype, casting:
        As in opt_einsum (and ``numpy.einsum``): contract in ``dtype``, each operand cast to it
        under the ``casting`` rule (``"safe"`` by default: ``float64`` operands in ``float32``
        are a ``TypeError``; ``"same_kind"`` or ``"unsafe"`` allow it). NumPy and CuPy only.
    order:
        Memory layout of the result, ``"K"`` (default: C-contiguous here, whatever the
        operands' layout), ``"C"``, ``"F"`` or ``"A"`` (NumPy and CuPy; ``"K"`` only on torch).
    use_blas:
        Accepted for opt_einsum's signature: every pairwise step here is a matrix product
        (BLAS) already, so ``False`` changes nothing but the rounding order opt_einsum would use.

    >>> import numpy as np
    >>> a, b = np.ones((2, 3)), np.ones((3, 4))
    >>> contract("ij,jk->ik", a, b).shape
    (2, 4)
    >>> contract(a, ["row", "k"], b, ["k", "col"], ["col", "row"]).shape
    (4, 2)
    >>> float(contract("ii", np.eye(3))), contract("...j,j->...", np.ones((2, 5, 3)), [1, 2, 3]).shape
    (3.0, (2, 5))
    """
    if not args:
        raise ValueError("contract needs a spec and operands, e.g. contract('ij,jk', a, b)")
    if isinstance(args[0], str):
        spec, operands = args[0], list(args[1:])
    else:
        spec, operands = _interleaved(args)
    if not operands:
        raise ValueError(f"spec {spec!r} was given no operands")
    optimize = normalize_optimize(optimize)
    memory_limit = normalize_memory_limit(memory_limit)
    if not isinstance(use_blas, (bool, np.bool_)):
        raise TypeError(f"use_blas must be True or False; got {use_blas!r}")
    if order not in ("K", "C", "F", "A"):
        raise ValueError(f"order must be 'K', 'C', 'F' or 'A'; got {order!r}")
    be, operands, uniform = _as_operands(operands, backend)
    if (dtype is not None or order != "K") and be.name == "torch":
        raise TypeError("contract: dtype= and order= follow numpy.einsum and apply to NumPy and CuPy arrays; on "
                        "torch convert the operands (x.to(dtype)) and the result (.contiguous()) yourself")
    if dtype is not None:
        operands, uniform = _cast_operands(operands, dtype, casting, be), True
    boolean = False
    if not uniform or be.dtype_name(operands[0]) == "bool":
        operands, boolean = _common_dtype(operands, be)
    shapes = tuple(x.shape for x in operands)
    try:
        inputs, output, traced, plan = _expression(spec, shapes, optimize, memory_limit)
    except TypeError as err:  # an unhashable optimizer object: plan without the caches
        if "unhashable" not in str(err):
            raise
        inputs, output, traced, plan = _expression.__wrapped__(spec, shapes, optimize, memory_limit, cache=False)
    if traced:
        inputs = list(inputs)
        for pos in traced:
            inputs[pos], operands[pos] = _diagonal(inputs[pos], operands[pos], pos, be)
        shapes = tuple(tuple(x.shape) for x in operands)
        plan = make_plan(tuple(inputs), output, shapes, optimize, memory_limit)
    _check_host_memory(plan, operands, be)
    result = execute(plan, operands, be)
    if boolean:
        result = result != 0
    result = be.contiguous(result)
    if order in ("F", "A") and not (order == "A" and not all(_fortran(x) for x in operands)):
        result = be.xp.asfortranarray(result)
    if out is None:
        return result
    return _write_out(out, result, be)


#: bytes per entry of the dtypes NumPy does not name
_ITEMSIZE = {"bfloat16": 2}


def _check_host_memory(plan: Plan, operands: Sequence[Any], be: Backend) -> None:
    """Refuse, before any work, a contraction on the host whose result or one of its steps holds
    more bytes than the machine has: an MPS of 40 sites with every leg open computed for 1.6 s
    and then failed inside NumPy ("Unable to allocate 8.00 TiB for an array with shape (1048576,
    1048576)"; an outside probe, 2026-12-04), where ``Network.to_tensor`` refuses at once."""
    # (every call runs this: the usual case is one cached attribute and a comparison)
    entries, total = plan.peak_entries, host_memory()
    if total is None or entries * 16 <= total:  # (16 bytes: the widest dtype, complex128)
        return
    if be.name == "cupy" or str(getattr(operands[0], "device", "cpu")).split(":")[0] != "cpu":
        return  # (device memory is not the host's)
    name = be.dtype_name(operands[0])
    itemsize = max(_ITEMSIZE.get(be.dtype_name(x)) or np.dtype(be.dtype_name(x)).itemsize for x in operands)
    if entries * itemsize > total:
        spec = f"{','.join(plan.inputs)}->{plan.output}"
        spec = repr(spec) if len(spec) <= 60 else f"the {len(plan.inputs)} operands to {len(plan.output)} open indices"
        raise MemoryError(
            f"contract: {'the result' if prod(plan._sizes[c] for c in plan.output) >= entries else 'a step'} of "
            f"{spec} holds {entries:,} entries ({entries * itemsize / 2**30:,.1f} GiB "
            f"as {name}), more than this machine's {total / 2**30:,.1f} GiB of memory; leave fewer indices open "
            "(contract with the vectors or matrices you need), or contract in pieces")


def _fortran(x: Any) -> bool:
    flags = getattr(x, "flags", None)
    return bool(flags is not None and flags.f_contiguous and not flags.c_contiguous)


def _cast_operands(operands: list[Any], dtype: Any, casting: str, be: Backend) -> list[Any]:
    """Every operand in ``dtype`` under NumPy's ``casting`` rule (opt_einsum's ``dtype=``)."""
    if casting not in ("no", "equiv", "safe", "same_kind", "unsafe"):
        raise ValueError(f"casting must be 'no', 'equiv', 'safe', 'same_kind' or 'unsafe'; got {casting!r}")
    target = np.dtype(dtype)
    out = []
    for k, x in enumerate(operands):
        source = np.dtype(be.dtype_name(x))
        if not np.can_cast(source, target, casting=casting):
            raise TypeError(f"contract: operand {k} ({source}) cannot be cast to {target} under casting={casting!r}; "
                            "pass casting='same_kind' or 'unsafe' to allow it")
        out.append(x if source == target else be.asarray(x, dtype=target.name))
    return out


def _interleaved(args: Sequence[Any]) -> tuple[str, list[Any]]:
    """``(a, labels_a, b, labels_b, ..., [output_labels])`` as a spec and operands."""
    if len(args) < 2:
        raise TypeError(
            f"contract's first argument is a spec string, or an operand followed by its list of labels; "
            f"got a lone {type(args[0]).__name__}"
        )
    pairs = len(args) // 2
    operands = [args[2 * k] for k in range(pairs)]
    labels = [_label_list(args[2 * k + 1]) for k in range(pairs)]
    output = _label_list(args[-1]) if len(args) % 2 else None
    spec, _ = labels_to_spec(labels, output)
    return spec, operands


def _label_list(labels: Any) -> Any:
    """A 1-D NumPy array of labels as the list it holds (``np.einsum`` and opt_einsum take
    ``a, np.array([0, 1])``)."""
    return labels.tolist() if isinstance(labels, np.ndarray) and labels.ndim == 1 else labels


_SCALARS = (bool, int, float, complex)


def _as_operands(operands: list[Any], backend: Backend | str | None) -> tuple[Backend, list[Any], bool]:
    """One backend for the call, every operand as its array, and whether they already share
    one dtype. Nested lists and NumPy scalars are read as NumPy reads them; Python numbers
    stay as they are until :func:`_common_dtype` gives them the arrays' dtype. With an
    explicit ``backend``, arrays of another framework are converted."""
    if backend is None or backend == "auto":  # the usual call: arrays of one class and dtype
        cls = type(operands[0])
        be = _backend_of_type(cls)
        if be is not None and all(type(x) is cls for x in operands):
            first = operands[0].dtype
            if all(x.dtype == first for x in operands):
                _check_numeric(be.dtype_name(operands[0]), 0)
                return be, list(operands), True
    arrays = []
    loose = False
    for pos, x in enumerate(operands):
        if isinstance(x, (*_SCALARS, np.generic, list, tuple)):
            loose = True
        elif isinstance(x, (np.matrix, np.ma.MaskedArray)):
            raise TypeError(f"operand {pos} is a {type(x).__name__}, whose products differ from an array's (a matrix "
                            "stays 2-D, a masked array's mask is dropped by some steps and not others); pass "
                            "np.asarray(x), or x.filled(0) for masked data")
        elif backend_name_of(x) is None:
            raise TypeError(
                f"operand {pos} is a {type(x).__name__}; expected a NumPy, CuPy or torch array, a number or a nested list"
            )
        else:
            arrays.append(x)
    if backend is None or backend == "auto":
        be = infer_backend(arrays)
    elif isinstance(backend, (str, Backend)):
        be = get_backend(backend)
    else:
        raise TypeError(f"backend must be 'numpy', 'torch', 'cupy' or None; got {backend!r}")
    if not loose and all(be.is_array(x) for x in operands):  # the usual call: arrays of one framework
        first = operands[0].dtype
        uniform = all(x.dtype == first for x in operands)
        for pos, x in enumerate(operands):
            if pos == 0 or x.dtype != first:
                _check_numeric(be.dtype_name(x), pos)
        return be, list(operands), uniform
    device = next((be.device_of(x) for x in arrays if be.is_array(x)), None)
    out = []
    for pos, x in enumerate(operands):
        if isinstance(x, _SCALARS):
            out.append(x)
            continue
        if not be.is_array(x):
            try:
                x = be.asarray(np.asarray(x) if isinstance(x, (list, tuple, np.generic)) else x, device=device)
            except (TypeError, ValueError, RuntimeError) as err:
                raise TypeError(f"operand {pos} cannot be read as a {be.name} array: {err}") from None
        _check_numeric(be.dtype_name(x), pos)
        out.append(x)
    return be, out, False


@lru_cache(maxsize=4096)
def _expression(spec: str, shapes: tuple, optimize: Optimize, memory_limit: Any, cache: bool = True):
    """What one call of ``spec`` on arrays of ``shapes`` needs, cached: the resolved terms and
    output, the terms that repeat an index (traced: their diagonals are taken first), and
    the plan when no term is traced."""
    inputs, output = einsum_terms(spec, tuple(len(s) for s in shapes))
    traced = tuple(pos for pos, term in enumerate(inputs) if len(set(term)) < len(term))
    if traced:
        return inputs, output, traced, None
    planner = make_plan if cache else make_plan.__wrapped__
    return inputs, output, traced, planner(inputs, output, tuple(tuple(s) for s in shapes), optimize, memory_limit)


@lru_cache(maxsize=64)
def _backend_of_type(cls: type) -> Backend | None:
    """The backend whose arrays are of class ``cls`` (None for anything else)."""
    name = _name_of_class(cls)
    if name is None or issubclass(cls, np.generic):
        return None
    be = get_backend(name)
    return be if cls.__name__ in ("ndarray", "Tensor", "Parameter") else None


def _check_numeric(kind: str, pos: int) -> None:
    if not kind.startswith(("float", "int", "uint", "complex", "bool", "bfloat")):
        raise TypeError(f"operand {pos} has dtype {kind}; einsum needs numbers or booleans")


def _common_dtype(operands: list[Any], be: Backend) -> tuple[list[Any], bool]:
    """Operands as arrays of one dtype: the arrays' promoted dtype. Python numbers count as
    ``numpy.einsum`` counts them on NumPy and CuPy (arrays of their default dtype: a float is
    float64, so ``contract(",i->i", 1e5, float16_array)`` is float64, not an overflow to inf),
    and promote weakly on torch, as in torch's own arithmetic (``torch.einsum`` takes no
    numbers). Booleans are summed as int64 (``True`` when any product is), which the caller
    turns back with ``!= 0``."""
    arrays = [x for x in operands if not isinstance(x, _SCALARS)]
    names = [be.dtype_name(x) for x in arrays]
    if len(arrays) == len(operands) and len(set(names)) == 1:
        common = names[0]
    elif be.name in ("numpy", "cupy"):
        common = be.result_dtype([_as_default_array(x) for x in operands])
    else:
        common = be.result_dtype(operands)
    boolean = common == "bool"
    target = "int64" if boolean else common
    device = next((be.device_of(x) for x in arrays), None)
    out = []
    for pos, x in enumerate(operands):
        if isinstance(x, _SCALARS):
            try:
                x = be.asarray(x, dtype=target, device=device)
            except (RuntimeError, OverflowError):  # (torch: "value cannot be converted to type int8 without overflow")
                raise ValueError(f"operand {pos}, the number {x!r}, does not fit {target}, the dtype the operands "
                                 f"promote to on {be.name} (a Python number takes the arrays' dtype, as in "
                                 "torch's arithmetic); pass it as an array of a wider dtype, or convert the "
                                 "arrays first") from None
        elif be.dtype_name(x) != target:
            x = be.asarray(x, dtype=target)
        out.append(x)
    return out, boolean


def _as_default_array(x: Any) -> Any:
    """A Python number as the NumPy array ``numpy.einsum`` makes of it (its default dtype), for
    the promotion only; an int past int64 stays a number (promoted weakly)."""
    if not isinstance(x, _SCALARS):
        return x
    arr = np.asarray(x)
    return x if arr.dtype == object else arr


def _diagonal(term: str, x: Any, pos: int, be: Backend) -> tuple[str, Any]:
    """The diagonal over every index repeated inside ``term`` (opt_einsum's single-operand
    einsum on the operand's own framework), and the term without the repeats."""
    for c in set(term):
        axes = [k for k, t in enumerate(term) if t == c]
        sizes = [int(x.shape[k]) for k in axes]
        if len(set(sizes)) > 1:
            raise ValueError(f"index {c!r} is repeated in term {term!r} but operand {pos} has sizes "
                             f"{sizes} along it (axes {axes}); a diagonal needs equal sizes")
    kept = "".join(dict.fromkeys(term))
    return kept, opt_einsum.contract(term + "->" + kept, x, backend=be.name)


def _write_out(out: Any, result: Any, be: Backend) -> Any:
    if not be.is_array(out):
        raise TypeError(f"out must be a {be.name} array like the result; got {type(out).__name__}")
    if tuple(out.shape) != tuple(result.shape):
        raise ValueError(f"out has shape {tuple(out.shape)} but the result has shape {tuple(result.shape)}")
    have, want = be.dtype_name(result), be.dtype_name(out)
    try:
        ok = np.can_cast(np.dtype(have), np.dtype(want), "safe")
    except TypeError:
        ok = have == want
    if not ok:
        raise TypeError(f"cannot write a {have} result into out of dtype {want} (only safe casts are done)")
    if getattr(out, "requires_grad", False):
        raise ValueError("out= cannot be a tensor that requires grad; use the returned result instead")
    out[...] = result
    return out
