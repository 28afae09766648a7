"""Contraction-path search: what ``optimize=`` means, and when ``"auto"`` searches harder.

A path is opt_einsum's linear form: each step lists positions in the current operand list,
those operands are removed and their product appended. Every path here is reduced to pairwise
steps (:func:`pairwise_path`), the only kind the executor runs. ``optimize`` is ``"auto"``,
``True``/``None`` (the same), ``False`` (left to right, no search), any opt_einsum optimizer
name, an explicit path, an opt_einsum ``PathOptimizer`` (cotengra's ``HyperOptimizer`` is one)
or a callable ``(inputs, output, size_dict, memory_limit) -> path``.

``"auto"`` is opt_einsum's ``"auto"`` (about a millisecond of search), plus, when the graph has
a loop, six or more operands and a path worth at least ``MIN_FLOPS_FOR_ESCALATION``, a harder
search whose path is kept if it is cheaper: dynamic programming up to 16 operands; beyond,
128 randomized greedy trials, or from ``MIN_FLOPS_FOR_COTENGRA`` on cotengra's
hyper-optimizer when it is installed (``pip install tnmars[cotengra]``). Trees (chains,
combs, stars) are left to ``"auto"``: its greedy order is already optimal there. The search
runs once per plan; plans are cached.

>>> pairwise_path([(0, 1, 2)], 3)
((0, 1), (0, 1))
>>> is_loopy(["ab", "bc", "ca"]), is_loopy(["ab", "bc", "cd"])
(True, False)
"""
from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import opt_einsum
import opt_einsum.path_random  # noqa: F401  (registers the "random-greedy" names)
from opt_einsum.paths import _PATH_OPTIONS, PathOptimizer

#: Operand counts up to which the harder search of a loopy graph is dynamic programming.
MAX_TERMS_FOR_DP = 16
#: Loopy graphs with at least this many operands get the harder search (below, "auto" is exact).
MIN_TERMS_FOR_ESCALATION = 6
#: The harder search runs when "auto"'s path costs at least this many FLOPs: below, a
#: contraction takes well under a millisecond and the search would cost more than it saves
#: (dynamic programming on 9-16 operands: 10-300 ms; 128 greedy trials on 25: about 0.3 s).
MIN_FLOPS_FOR_ESCALATION = 1e5
#: cotengra (2-4 s on 25-70 operands) is used from this many FLOPs (a second of work) on.
MIN_FLOPS_FOR_COTENGRA = 1e9

Optimize = Any  # str | bool | None | path | PathOptimizer | callable


def optimizer_names() -> list[str]:
    """Every ``optimize=`` name accepted (opt_einsum's registered path finders)."""
    return sorted(_PATH_OPTIONS)


def normalize_optimize(optimize: Optimize) -> Optimize:
    """``optimize`` in the hashable form plans are cached under; bad values are a
    ``ValueError``/``TypeError`` naming the accepted ones.

    >>> normalize_optimize(True), normalize_optimize(["einsum_path", (0, 1)])
    ('auto', ((0, 1),))
    """
    if optimize is True or optimize is None:
        return "auto"
    if optimize is False:
        return False
    if isinstance(optimize, str):
        name = optimize.lower()
        if name not in _PATH_OPTIONS:
            raise ValueError(f"unknown optimize={optimize!r}; choose one of {', '.join(optimizer_names())}, "
                             "True, False, a path or a PathOptimizer")
        return name
    if isinstance(optimize, PathOptimizer) or callable(optimize):
        return optimize
    if isinstance(optimize, (list, tuple)):
        steps = list(optimize)
        if steps and isinstance(steps[0], str) and steps[0] == "einsum_path":
            steps = steps[1:]  # numpy.einsum_path's form
        path = []
        for step in steps:
            if isinstance(step, (str, bytes)) or not isinstance(step, Sequence) or not step:
                raise TypeError(f"optimize path step {step!r} must be a non-empty tuple of operand positions")
            for p in step:
                if isinstance(p, bool) or not isinstance(p, int) and not hasattr(p, "__index__"):
                    raise TypeError(f"optimize path step {tuple(step)!r} holds {p!r}, not an operand position")
            path.append(tuple(int(p) for p in step))
        return tuple(path)
    raise TypeError(f"optimize must be a name, a bool, a path or a PathOptimizer; got {type(optimize).__name__}")


def normalize_memory_limit(memory_limit: Any) -> int | str | None:
    """``None`` (no limit), ``"max_input"`` or a positive number of entries (``-1``: none)."""
    if memory_limit is None or memory_limit == "max_input":
        return memory_limit
    if isinstance(memory_limit, bool) or not isinstance(memory_limit, (int, float)) and not hasattr(memory_limit, "__index__"):
        raise TypeError(f"memory_limit must be None, 'max_input' or a number of entries; got {memory_limit!r}")
    if memory_limit == -1:
        return None
    if not memory_limit >= 1:
        raise ValueError(f"memory_limit must be at least 1 entry (or -1 / None: no limit); got {memory_limit!r}")
    return int(memory_limit)


def pairwise_path(path: Sequence[Sequence[int]], n: int) -> tuple[tuple[int, int], ...]:
    """The pairwise steps that carry out ``path`` on ``n`` operands: a step of three or more
    operands contracts them left to right, a one-operand step only moves it to the end (its
    lone indices were summed before). A path that does not end in one result is a ``ValueError``."""
    live = list(range(n))  # the path's operand list (node ids)
    ours = list(range(n))  # the executor's list
    out: list[tuple[int, int]] = []
    new = n
    for step in path:
        if len(set(step)) != len(step) or any(not 0 <= p < len(live) for p in step):
            raise ValueError(f"optimize path step {tuple(step)} is not a set of positions in 0..{len(live) - 1}")
        ids = [live[p] for p in step]
        live = [t for k, t in enumerate(live) if k not in step]
        current = ids[0]
        for other in ids[1:]:
            i, j = sorted((ours.index(current), ours.index(other)))
            out.append((i, j))
            ours = [t for k, t in enumerate(ours) if k not in (i, j)] + [new]
            current, new = new, new + 1
        live.append(current)
    if len(live) != 1:
        raise ValueError(f"the optimize path leaves {len(live)} operands uncontracted; it must end in one result")
    return tuple(out)


def is_loopy(terms: Sequence[str]) -> bool:
    """Whether the graph of ``terms`` (cores joined by shared indices) has a cycle.
    Parallel indices between the same cores are one connection; a hyperedge is one node."""
    edges = {frozenset(k for k, t in enumerate(terms) if c in t) for c in set("".join(terms))}
    parent = list(range(len(terms)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for members in edges:
        if len(members) < 2:
            continue
        roots = {root(k) for k in members}
        if len(roots) < len(members):
            return True
        first, *rest = roots
        for r in rest:
            parent[r] = first
    return False


def find_path(
    terms: Sequence[str], output: str, sizes: dict[str, int], optimize: Optimize, memory_limit: int | str | None
) -> tuple[tuple[tuple[int, ...], ...], str]:
    """A path for ``terms -> output`` and the name of what found it (``optimize`` normalized)."""
    n = len(terms)
    if n == 1:
        return (), "single operand"
    if optimize is False:
        return ((0, 1),) * (n - 1), "left to right (optimize=False)"
    if isinstance(optimize, tuple):
        return optimize, "the given path"
    if isinstance(optimize, PathOptimizer) or isinstance(optimize, str):
        found = _opt_einsum_path(terms, output, sizes, optimize, memory_limit)
        return found, (optimize if isinstance(optimize, str) else type(optimize).__name__)
    inputs = [frozenset(t) for t in terms]
    limit = _memory_arg(terms, output, sizes, memory_limit)
    return tuple(tuple(s) for s in optimize(inputs, frozenset(output), dict(sizes), limit)), getattr(
        optimize, "__name__", type(optimize).__name__)


def harder_search(terms: Sequence[str], output: str, sizes: dict[str, int], memory_limit: int | str | None,
                  flops: float):
    """The escalated search of a loopy graph whose "auto" path costs ``flops`` (see the
    module notes): ``(path, name)``, or ``(None, reason)`` when it is not worth running."""
    if flops < MIN_FLOPS_FOR_ESCALATION:
        return None, f"no harder search under {MIN_FLOPS_FOR_ESCALATION:.0e} FLOPs"
    if len(terms) <= MAX_TERMS_FOR_DP:
        optimizer: Any = opt_einsum.DynamicProgramming(minimize="flops")
        name = "dynamic programming"
    elif cotengra_available() and flops >= MIN_FLOPS_FOR_COTENGRA:
        optimizer = _cotengra_optimizer()
        name = "cotengra"
    else:
        optimizer = opt_einsum.RandomGreedy(max_repeats=128)  # run r is seeded with r: reproducible
        name = "random-greedy-128"
    try:
        return _opt_einsum_path(terms, output, sizes, optimizer, memory_limit), name
    except RuntimeError:  # no path within memory_limit: the caller keeps its own
        return None, f"{name} found no path within memory_limit"


@lru_cache(maxsize=1)
def cotengra_available() -> bool:
    return importlib.util.find_spec("cotengra") is not None


def _cotengra_optimizer() -> PathOptimizer:
    import cotengra

    methods = ["greedy", "kahypar" if importlib.util.find_spec("kahypar") else "labels"]
    return cotengra.HyperOptimizer(methods=methods, max_repeats=32, minimize="flops", parallel=False, progbar=False)


def _opt_einsum_path(terms, output, sizes, optimize, memory_limit) -> tuple[tuple[int, ...], ...]:
    eq = ",".join(terms) + "->" + output
    shapes = [tuple(sizes[c] for c in t) for t in terms]
    path, _ = opt_einsum.contract_path(eq, *shapes, shapes=True, optimize=optimize, memory_limit=memory_limit)
    return tuple(tuple(int(p) for p in step) for step in path)


def _memory_arg(terms, output, sizes, memory_limit) -> int | None:
    if memory_limit != "max_input":
        return memory_limit
    from math import prod

    return max(prod(sizes[c] for c in t) for t in [*terms, output])


def cheapest_paths(terms: Sequence[str], output: str, sizes: dict[str, int], keep: int = 4,
                   within: float = 2.0) -> list[tuple[tuple[tuple[int, int], ...], int]]:
    """Every pairwise contraction order with its FLOPs (opt_einsum's count), cheapest first:
    the ``keep`` cheapest within ``within`` times the best. For a handful of operands only
    (180 trees for 5)."""
    found: list[tuple[int, tuple[tuple[int, int], ...]]] = []
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
            got = step_cost[(mask_a, mask_b)] = opt_einsum.helpers.flop_count(union, inner, 2, sizes)
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
    return [(p, c) for c, p in found[:keep] if c <= within * best]

