"""Contraction-path search: what ``optimize=`` means, and when ``"auto"`` searches harder.

A path is opt_einsum's linear form: each step lists positions in the current operand list,
those operands are removed and their product appended. Every path here is reduced to pairwise
steps (:func:`pairwise_path`), the only kind the executor runs. ``optimize`` is ``"auto"``,
``True``/``None`` (the same), ``False`` (left to right, no search), any opt_einsum optimizer
name, an explicit path, an opt_einsum ``PathOptimizer`` (cotengra's ``HyperOptimizer`` is one)
or a callable ``(inputs, output, size_dict, memory_limit) -> path``.

``"auto"`` is opt_einsum's ``"auto"`` (about a millisecond of search); from six operands on,
two variants of its greedy search (:func:`greedy_variants`) compete with it; and when the graph
has a loop, six or more operands and a path worth at least ``MIN_FLOPS_FOR_ESCALATION``, a harder
search whose path is kept if it is cheaper: dynamic programming up to 16 operands; beyond,
128 randomized greedy trials for the fewest FLOPs and 128 for the smallest intermediate, or
from ``MIN_FLOPS_FOR_COTENGRA`` on cotengra's hyper-optimizer when it is installed
(``pip install tnmars[cotengra]``). Trees (chains, combs, stars) are left to ``"auto"``: its
greedy order is already optimal there. The search
runs once per plan; plans are cached. The randomized trials are seeded, and get the index
letters as numbers, so a contraction gets the same path in every process.

>>> pairwise_path([(0, 1, 2)], 3)
((0, 1), (0, 1))
>>> is_loopy(["ab", "bc", "ca"]), is_loopy(["ab", "bc", "cd"])
(True, False)
"""
from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from math import prod
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
    if memory_limit == -1 or memory_limit == float("inf"):  # (no limit, said either way)
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
                  flops: float, min_flops: float | None = None
                  ) -> tuple[list[tuple[tuple[tuple[int, ...], ...], str]], str]:
    """The escalated search of a loopy graph whose "auto" path costs ``flops`` (see the
    module notes): ``([(path, name), ...], note)``; no paths when it is not worth running
    (under ``min_flops``, default ``MIN_FLOPS_FOR_ESCALATION``).
    Dynamic programming runs twice, minimizing FLOPs and FLOPs plus writes: on an 11-tensor
    MERA the second path has 1.3x the FLOPs, half the copies, and runs faster."""
    floor = MIN_FLOPS_FOR_ESCALATION if min_flops is None else min_flops
    if flops < floor:
        return [], f"no harder search under {floor:.0e} FLOPs"
    if len(terms) <= MAX_TERMS_FOR_DP:
        optimizers: list[tuple[Any, str]] = [(opt_einsum.DynamicProgramming(minimize="flops"), "dynamic programming"),
                                             (opt_einsum.DynamicProgramming(minimize="combo"),
                                              "dynamic programming (FLOPs and writes)")]
    elif cotengra_available() and flops >= MIN_FLOPS_FOR_COTENGRA:
        optimizers = [(_cotengra_optimizer(), "cotengra")]
    else:
        # run r is seeded with r: reproducible. Twice, minimizing FLOPs and the largest intermediate:
        # on a 5x5 PEPS with open legs (D=4, d=2) the second path has 1.05x the FLOPs, half the
        # largest intermediate, and runs 2.7x faster (NumPy and torch); the prices choose
        optimizers = [(opt_einsum.RandomGreedy(max_repeats=128), "random-greedy-128"),
                      (opt_einsum.RandomGreedy(max_repeats=128, minimize="size"), "random-greedy-128 (size)")]
    found = []
    for optimizer, name in optimizers:
        try:
            found.append((_opt_einsum_path(terms, output, sizes, optimizer, memory_limit), name))
        except RuntimeError:  # no path within memory_limit: the caller keeps its own
            pass
    return found, " and ".join(name for _, name in optimizers)


def greedy_variants(terms: Sequence[str], output: str, sizes: dict[str, int], memory_limit: int | str | None):
    """opt_einsum's greedy search with two other costs, ``(path, name)`` each: a step costs
    ``size(result) - alpha * (size(a) + size(b))`` with alpha 0 and 2 (opt_einsum's is 1,
    "remove the most memory first"). On a train contracted with vectors, alpha 1 multiplies
    the cores into matrices and the matrices together (``r**3`` per site); alpha 0 sweeps a
    vector along the train (``r**2``): 18x fewer FLOPs on a 12-site train of rank 64."""
    inputs = [frozenset(t) for t in terms]
    limit = _memory_arg(terms, output, sizes, memory_limit)
    found = []
    for alpha in (0.0, 2.0):
        def cost(size12, size1, size2, k12, k1, k2, alpha=alpha):
            return size12 - alpha * (size1 + size2)

        path = opt_einsum.paths.greedy(inputs, frozenset(output), dict(sizes), limit, cost_fn=cost)
        found.append((tuple(tuple(int(p) for p in step) for step in path), f"greedy (alpha={alpha:g})"))
    return found


@lru_cache(maxsize=1)
def cotengra_available() -> bool:
    return importlib.util.find_spec("cotengra") is not None


def _cotengra_optimizer() -> PathOptimizer:
    import cotengra

    methods = ["greedy", "kahypar" if importlib.util.find_spec("kahypar") else "labels"]
    return cotengra.HyperOptimizer(methods=methods, max_repeats=32, minimize="flops", parallel=False, progbar=False)


def _opt_einsum_path(terms, output, sizes, optimize, memory_limit) -> tuple[tuple[int, ...], ...]:
    """The path ``opt_einsum.contract_path`` returns for ``optimize`` (a name or a
    ``PathOptimizer``), from the path function it calls, without the contraction list and
    ``PathInfo`` it builds around it: a fit plans thousands of small contractions (every rank
    vector a search visits is new shapes), and that report was half of the call's time. Tested
    equal to ``contract_path``'s path, except for the randomized searches, which get their
    letters as numbers here: the same path in every process, where ``contract_path``'s changed
    with ``PYTHONHASHSEED``."""
    if len(terms) <= 2:  # (what contract_path returns: nothing to optimize)
        return (tuple(range(len(terms))),)
    used = {c: sizes[c] for t in terms for c in t}
    if memory_limit == "max_input":
        memory = max(prod(used[c] for c in t) for t in [*terms, output])
    elif memory_limit is None or memory_limit == -1:
        memory = None
    elif isinstance(memory_limit, str) or memory_limit < 1:  # (contract_path's own message)
        return _contract_path(terms, output, sizes, optimize, memory_limit)
    else:
        memory = int(memory_limit)
    inputs = [frozenset(t) for t in terms]
    out = frozenset(output)
    if _randomized(optimize):
        # numbers for letters, in the letters' order: a set of strings iterates in the order that
        # Python's per-process string hashing decides, and the randomized greedy search's choices
        # followed it, so the same contraction got another path in every process (PYTHONHASHSEED)
        number = {c: k for k, c in enumerate(sorted(used))}
        inputs = [frozenset(number[c] for c in t) for t in terms]
        out = frozenset(number[c] for c in output)
        used = {number[c]: n for c, n in used.items()}
    if isinstance(optimize, PathOptimizer):
        path = optimize(inputs, out, used, memory)
    else:
        path = opt_einsum.paths.get_path_fn(optimize)(inputs, out, used, memory)
    return tuple(tuple(int(p) for p in step) for step in path)


def _randomized(optimize: Any) -> bool:
    """Whether ``optimize`` runs opt_einsum's randomized greedy search (``"auto-hq"`` does on
    more than 16 operands), whose choices follow the iteration order of the index sets."""
    if isinstance(optimize, str):
        return optimize.startswith("random") or optimize == "auto-hq"
    return isinstance(optimize, opt_einsum.path_random.RandomOptimizer)


def _contract_path(terms, output, sizes, optimize, memory_limit) -> tuple[tuple[int, ...], ...]:
    """``opt_einsum.contract_path``'s path (what :func:`_opt_einsum_path` reproduces)."""
    eq = ",".join(terms) + "->" + output
    shapes = [tuple(sizes[c] for c in t) for t in terms]
    path, _ = opt_einsum.contract_path(eq, *shapes, shapes=True, optimize=optimize, memory_limit=memory_limit)
    return tuple(tuple(int(p) for p in step) for step in path)


def _memory_arg(terms, output, sizes, memory_limit) -> int | None:
    if memory_limit != "max_input":
        return memory_limit
    return max(prod(sizes[c] for c in t) for t in [*terms, output])


def star_paths(terms: Sequence[str], output: str) -> list[tuple[tuple[tuple[int, int], ...], str]]:
    """For a star (one centre sharing an index with every other operand, the leaves sharing
    none among themselves: a Tucker network), the leaves contracted into the centre one at a
    time in the order of the centre's indices, last first and first first: ``(path, name)``
    each; none for other graphs. All orders can tie in FLOPs while their copies differ:
    taking the centre's last index first, every step is a factor times the centre read as a
    transposed matrix, and nothing is copied (see ``tnmars.contract._gemm_copies``).

    >>> star_paths(["abc", "xa", "yb", "zc"], "xyz")[0]
    (((0, 3), (1, 2), (0, 1)), 'star, last index first')
    """
    n = len(terms)
    if n < 3:
        return []
    for centre, core in enumerate(terms):
        leaves = [k for k in range(n) if k != centre]
        owners: dict[str, set[int]] = {}
        for k in leaves:
            for c in terms[k]:
                owners.setdefault(c, set()).add(k)
        if any(len(ks) > 1 for ks in owners.values()):
            continue
        if not all(set(terms[k]) & set(core) for k in leaves):
            continue
        first_index = {k: min(core.index(c) for c in terms[k] if c in core) for k in leaves}
        found = []
        for reverse, name in ((True, "star, last index first"), (False, "star, first index first")):
            order = sorted(leaves, key=first_index.__getitem__, reverse=reverse)
            tree: Any = centre
            for k in order:
                tree = (tree, k)
            found.append((_tree_path(tree, n), name))
        return found
    return []


def cheapest_paths(terms: Sequence[str], output: str, sizes: dict[str, int], keep: int = 8,
                   within: float = 2.0) -> list[tuple[tuple[tuple[int, int], ...], int]]:
    """The ``keep`` cheapest contraction trees by FLOPs (opt_einsum's count), each as a
    pairwise path with its FLOPs, cheapest first, within ``within`` times the best. Exact
    (the k best of every subset of operands are built from the k best of its two parts), for
    a handful of operands: 945 trees for 6.

    >>> cheapest_paths(["ab", "bc", "cd"], "ad", {"a": 9, "b": 2, "c": 9, "d": 2}, keep=1)
    [(((1, 2), (0, 1)), 144)]
    """
    n_terms = len(terms)
    full = (1 << n_terms) - 1
    index_mask: dict[str, int] = {}
    for k, t in enumerate(terms):
        for c in t:
            index_mask[c] = index_mask.get(c, 0) | (1 << k)
    out_set = set(output)

    def legs(mask: int) -> set[str]:
        return {c for c, m in index_mask.items() if m & mask and (c in out_set or m & ~mask)}

    kept = {mask: legs(mask) for mask in range(1, full + 1)}
    # best[mask]: up to `keep` (cost, tree) pairs; a tree is a leaf index or a pair of trees
    best: dict[int, list] = {1 << k: [(0, k)] for k in range(n_terms)}
    for mask in sorted(range(1, full + 1), key=lambda m: bin(m).count("1")):
        if mask in best:
            continue
        low = mask & -mask
        found = []
        sub = (mask - 1) & mask
        while sub:
            if sub & low and sub != mask:  # each unordered split once: the part holding the lowest operand
                other = mask ^ sub
                union = kept[sub] | kept[other]
                step = opt_einsum.helpers.flop_count(union, len(kept[mask]) < len(union), 2, sizes)
                for cost_a, tree_a in best[sub]:
                    for cost_b, tree_b in best[other]:
                        found.append((cost_a + cost_b + step, (tree_a, tree_b)))
            sub = (sub - 1) & mask
        found.sort(key=lambda item: item[0])
        best[mask] = found[:keep]
    top = best[full][0][0]
    return [(_tree_path(tree, n_terms), cost) for cost, tree in best[full] if cost <= within * top]


def _tree_path(tree: Any, n: int) -> tuple[tuple[int, int], ...]:
    """A contraction tree (nested pairs of operand numbers) as a linear pairwise path."""
    live = list(range(n))
    path: list[tuple[int, int]] = []
    counter = [n]

    def run(node: Any) -> int:
        if isinstance(node, int):
            return node
        a, b = run(node[0]), run(node[1])
        i, j = sorted((live.index(a), live.index(b)))
        path.append((i, j))
        live.pop(j)
        live.pop(i)
        live.append(counter[0])
        counter[0] += 1
        return live[-1]

    run(tree)
    return tuple(path)
