"""What the selection engine needs to know about a network's graph: the pieces left when a
core is removed, the ranks each bond can usefully take, and the degrees of freedom.

Everything here works on the spec and the index sizes only (no arrays), so it serves every
topology: chains, rings, trees, grids and hyperedges (CP's shared rank).

>>> from tnmars import Network
>>> net = Network.tucker((6, 7, 8), (2, 3, 4))
>>> degrees_of_freedom(net.spec, net.dims)   # 2*3*4 + 6*2 + 7*3 + 8*4 - (4 + 9 + 16)
60
>>> feasible_ranks(Network.tucker((2, 3, 4), (2, 3, 4)).spec, {"a": 2, "b": 3, "c": 4, "A": 9, "B": 9, "C": 9})
{'A': 2, 'B': 3, 'C': 4}
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from math import prod

from opt_einsum import get_symbol

from ..spec import parse_spec

__all__ = ["Piece", "Branch", "tree_branches", "pieces_without", "feasible_ranks", "degrees_of_freedom",
           "judged_rank", "fresh_symbols", "bond_degree"]


def fresh_symbols(used: set[str] | frozenset[str], count: int) -> list[str]:
    """``count`` index symbols that are not in ``used`` (opt_einsum's unbounded alphabet)."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        s = get_symbol(i)
        if s not in used:
            out.append(s)
        i += 1
    return out


@dataclass(frozen=True)
class Piece:
    """A connected piece of the network without core ``core``: the cores in it and the axes
    of ``core`` (its bond indices) that attach to it."""

    cores: tuple[int, ...]
    axes: tuple[int, ...]
    #: the doubled spec whose contraction is this piece's Gram matrix (bond indices of the
    #: second copy renamed), output = the attaching indices, then their renamed copies
    gram_inputs: tuple[str, ...]
    gram_output: str


@dataclass(frozen=True)
class CoreLayout:
    """How core ``core``'s least-squares normal equations factor: the identity on its open
    axes times one Gram matrix per piece. ``separable`` is False when an open index of the
    core is shared with another core (then no Kronecker form exists)."""

    core: int
    open_axes: tuple[int, ...]
    pieces: tuple[Piece, ...]
    separable: bool


def _union_find(nodes: Iterable[int]) -> tuple[Callable[[int], int], Callable[[int, int], bool]]:
    """``(find, union)`` over ``nodes``: ``find`` gives a node's root, ``union`` joins two nodes'
    sets and says whether they were apart."""
    parent = {c: c for c in nodes}

    def find(c: int) -> int:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    def union(a: int, b: int) -> bool:
        ra, rb = find(a), find(b)
        parent[ra] = rb
        return ra != rb

    return find, union


def _components(nodes: list[int], groups) -> Callable[[int], int]:
    """Union-find over ``nodes`` joined within every group; returns the root-of function."""
    find, union = _union_find(nodes)
    for group in groups:
        for c in group[1:]:
            union(c, group[0])
    return find


def connected_parts(inputs: Sequence[str], bonds: Sequence[str]) -> list[list[int]]:
    """The cores ``inputs`` grouped by the bonds that join them (indices of ``inputs``, in order).

    >>> connected_parts(("iA", "AjB", "Ck"), "A"), connected_parts(("iA", "AjB", "Bk"), "AB")
    ([[0, 1], [2]], [[0, 1, 2]])
    """
    find = _components(list(range(len(inputs))), [[k for k, t in enumerate(inputs) if b in t] for b in bonds])
    parts: dict[int, list[int]] = {}
    for k in range(len(inputs)):
        parts.setdefault(find(k), []).append(k)
    return list(parts.values())


def spanning_bonds(inputs: Sequence[str], bonds: Sequence[str]) -> list[str] | None:
    """The bonds of a spanning tree of the cores ``inputs``, taken greedily in the order given
    (Kruskal: give the largest first); None when a bond joins more than two cores or ``bonds``
    do not connect every core.

    >>> spanning_bonds(("aAB", "bBC", "cCA"), "ABC")
    ['A', 'B']
    """
    find, union = _union_find(range(len(inputs)))
    tree = []
    for b in bonds:
        ends = [k for k, term in enumerate(inputs) if b in term]
        if len(ends) != 2:
            return None
        if union(*ends):
            tree.append(b)
    return tree if len(tree) == len(inputs) - 1 else None


@lru_cache(maxsize=512)
def pieces_without(inputs: tuple[str, ...], output: str) -> tuple[CoreLayout, ...]:
    """The :class:`CoreLayout` of every core of the einsum graph ``inputs -> output``."""
    layouts = []
    all_indices = set("".join(inputs)) | set(output)
    for k, term in enumerate(inputs):
        others = [c for c in range(len(inputs)) if c != k]
        owners: dict[str, list[int]] = {}
        for c in others:
            for ch in inputs[c]:
                owners.setdefault(ch, []).append(c)
        find = _components(others, owners.values())
        open_axes = tuple(i for i, ch in enumerate(term) if ch in output)
        separable = all(not owners.get(term[i]) for i in open_axes)
        groups: dict[int, list[int]] = {}
        for i, ch in enumerate(term):
            if ch in output:
                continue
            holders = owners.get(ch, [])
            root = find(holders[0]) if holders else -1 - i  # a dangling summed index: its own piece
            groups.setdefault(root, []).append(i)
        for c in others:  # a piece not attached to this core (a disconnected network) scales it
            groups.setdefault(find(c), [])
        pieces = []
        for root, axes in groups.items():
            cores = tuple(sorted(c for c in others if root >= 0 and find(c) == root))
            attach = "".join(term[i] for i in axes)
            piece_indices = set("".join(inputs[c] for c in cores))
            bonds = sorted(ch for ch in piece_indices if ch not in output)
            renamed = dict(zip(bonds, fresh_symbols(all_indices | piece_indices, len(bonds))))
            first = tuple(inputs[c] for c in cores)
            second = tuple("".join(renamed.get(ch, ch) for ch in inputs[c]) for c in cores)
            if not cores:  # a dangling summed index: its Gram is the all-ones matrix
                first, second = (), ()
            pieces.append(Piece(cores, tuple(axes), first + second,
                                attach + "".join(renamed.get(ch, ch) for ch in attach)))
        layouts.append(CoreLayout(k, open_axes, tuple(pieces), separable))
    return tuple(layouts)


@dataclass(frozen=True)
class Branch:
    """The part of a tree network hanging off ``bond`` on the side of core ``root``: the
    Gram matrix of a piece attached by ``bond`` is built from ``root`` and the Grams of its
    own branches (``children``), so a sweep can reuse the branches whose cores did not move."""

    bond: str
    root: int
    children: tuple[Branch, ...]
    cores: tuple[int, ...]
    #: the contraction that makes the Gram: root, its renamed copy, each child's Gram
    gram_inputs: tuple[str, ...]
    gram_output: str


@lru_cache(maxsize=512)
def tree_branches(inputs: tuple[str, ...], output: str) -> dict[tuple[str, int], Branch] | None:
    """Every ``(bond, root)`` branch of a tree network, or ``None`` when the network has a
    loop, a hyperedge or an open mode shared by several cores (then Grams are contracted whole)."""
    holders: dict[str, list[int]] = {}
    for k, term in enumerate(inputs):
        for c in term:
            holders.setdefault(c, []).append(k)
    if any(len(h) > 2 for h in holders.values()) or any(len(holders[c]) > 1 for c in output):
        return None
    bonds = [c for c, h in holders.items() if len(h) == 2 and c not in output]
    if any(c not in output and len(h) == 1 for c, h in holders.items()):
        return None  # a dangling summed index
    if has_loop(inputs, bonds):
        return None
    used = set("".join(inputs)) | set(output)
    out: dict[tuple[str, int], Branch] = {}

    def build(bond: str, root: int) -> Branch:
        key = (bond, root)
        if key in out:
            return out[key]
        term = inputs[root]
        kids = tuple(build(c, next(h for h in holders[c] if h != root)) for c in term if c in bonds and c != bond)
        own = [c for c in term if c in bonds]
        renamed = dict(zip(own, fresh_symbols(used, len(own))))
        gram_inputs = (term, "".join(renamed.get(c, c) for c in term)) + tuple(
            kid.bond + renamed[kid.bond] for kid in kids)
        cores = tuple(sorted({root, *(c for kid in kids for c in kid.cores)}))
        out[key] = Branch(bond, root, kids, cores, gram_inputs, bond + renamed[bond])
        return out[key]

    for b in bonds:
        for root in holders[b]:
            build(b, root)
    return out


def has_loop(inputs: Sequence[str], bonds: Iterable[str]) -> bool:
    """Whether ``bonds`` (each joining two of the cores ``inputs``) close a loop: at ranks where
    they are the bonds in use, ALS minima depend on the start (rings, fully connected networks).

    >>> has_loop(("aAB", "bBC", "cCA"), "ABC"), has_loop(("aAB", "bBC", "cCA"), "AB")
    (True, False)
    """
    edges = [ends for b in bonds if len(ends := [k for k, term in enumerate(inputs) if b in term]) == 2]
    find = _components(list(range(len(inputs))), edges)
    pieces = len({find(k) for k in range(len(inputs))})
    return len(edges) > len(inputs) - pieces  # a forest has (cores - pieces) edges, a loop more


def bond_degree(spec: str, bond: str) -> int:
    """How many cores carry ``bond`` (2 for an edge, 3 or more for a hyperedge)."""
    return len(parse_spec(spec).terms_with(bond))


def _cut_sides(inputs: tuple[str, ...], bond: str, also: str | None = None) -> tuple[set[int], set[int]] | None:
    """The two sets of cores that removing ``bond`` (and ``also``, if given) separates, or
    ``None`` when the cores holding ``bond`` stay connected."""
    holders = [k for k, t in enumerate(inputs) if bond in t]
    if len(holders) != 2:
        return None
    removed = {bond} if also is None else {bond, also}
    start, goal = holders
    seen = {start}
    stack = [start]
    while stack:  # walk the graph without the removed bonds: reaching the other end means a loop
        c = stack.pop()
        for k, t in enumerate(inputs):
            if k not in seen and (set(t) & set(inputs[c])) - removed:
                seen.add(k)
                stack.append(k)
    if goal in seen:
        return None
    return seen, set(range(len(inputs))) - seen


@lru_cache(maxsize=512)
def _cuts(inputs: tuple[str, ...], output: str, bond: str
          ) -> tuple[tuple[str | None, tuple[frozenset[str], frozenset[str]]], ...]:
    """Every cut made of ``bond`` alone (a bridge; ``None``) or of ``bond`` and one other edge
    (``bond`` on a loop, e.g. two bonds of a ring), with the open modes on either side."""
    out = []
    edges = [c for c in dict.fromkeys("".join(inputs)) if c not in output
             and sum(c in t for t in inputs) == 2]
    for also in [None] + [c for c in edges if c != bond]:
        sides = _cut_sides(inputs, bond, also)
        if sides is not None:
            out.append((also, tuple(frozenset(c for k in side for c in inputs[k] if c in output) for side in sides)))
            if also is None:
                break  # a bridge: its own cut is the tightest
    return tuple(out)


def raised_floors(spec: str, dims: Mapping[str, int], floors: Mapping[str, int],
                  caps: Mapping[str, int]) -> dict[str, int]:
    """``floors`` (bond -> smallest rank, at least 1) with other bonds raised, within ``caps``,
    until each floor is a useful rank (:func:`feasible_ranks`) where the caps allow it: a floor
    of 4 on a Tucker core's bond with the other two at 1 is no rank (at most 1 x 1), and the
    search's feasibility step would shrink it back. Each round raises by one the bond that lifts
    a short floor's bound and has the lowest floor (where none does alone, as for a train's bond
    bounded on both of its cores, the lowest of the bonds sharing a core with it).

    >>> raised_floors("ABC,aA,bB,cC->abc", {"a": 6, "b": 7, "c": 8}, {"A": 1, "B": 4, "C": 1},
    ...               {"A": 5, "B": 5, "C": 5})
    {'A': 2, 'B': 4, 'C': 2}
    """
    floors = {b: int(f) for b, f in floors.items()}
    parsed = parse_spec(spec)
    while True:
        bounds = feasible_ranks(spec, {**dims, **floors})
        short = [b for b in floors if bounds[b] < floors[b]]
        if not short:
            return floors
        raised = False
        for b in short:
            lifting = []
            for other in floors:
                if other == b or floors[other] >= caps[other]:
                    continue
                if feasible_ranks(spec, {**dims, **floors, other: floors[other] + 1})[b] > bounds[b]:
                    lifting.append(other)
            if not lifting:  # bounded on both of its cores: one neighbour alone lifts nothing yet
                lifting = [c for k in parsed.terms_with(b) for c in parsed.inputs[k]
                           if c in floors and c != b and floors[c] < caps[c]]
            if lifting:
                other = min(lifting, key=lambda c: floors[c])
                floors[other] += 1
                raised = True
                break
        if not raised:
            return floors


def feasible_ranks(spec: str, dims: Mapping[str, int], max_rank: Mapping[str, int] | None = None) -> dict[str, int]:
    """The largest useful size of every bond, given the other sizes in ``dims``.

    A bond larger than the product of a core's other indices, or than the product of the
    open modes on either side of a cut through it (the bond alone when it splits the network
    in two), adds parameters but no expressive power: such ranks are clipped, repeatedly,
    until every bond fits. A bond on a loop, cut together with one other edge ``e`` (two
    bonds of a ring), is bounded by the product of a side's open modes times ``e``'s size: the
    side's subnetwork, as a matrix from the bond to its open modes and ``e``, has no larger
    rank. (Bounding it by the open modes alone capped a ring's ranks at its mode sizes: a
    noiseless ring 4^5 at ranks (3, 5, 4, 3, 5) came back at (3, 4, 4, 3, 4) with 20% error.)
    Hyperedges (CP) are bounded by the volume of the tensor over its largest mode.
    """
    parsed = parse_spec(spec)
    sizes = {c: int(n) for c, n in dims.items()}
    if max_rank is not None:
        for b, r in max_rank.items():
            sizes[b] = min(sizes[b], int(r))
    out_volume = prod(sizes[c] for c in parsed.output)
    changed = True
    while changed:
        changed = False
        for b in parsed.bonds:
            holders = parsed.terms_with(b)
            bound = sizes[b]
            if len(holders) == 2:
                for k in holders:
                    term = parsed.inputs[k]
                    bound = min(bound, prod(sizes[c] for c in term if c != b))
                for also, sides in _cuts(parsed.inputs, parsed.output, b):
                    across = 1 if also is None else sizes[also]
                    for opens in sides:
                        bound = min(bound, prod(sizes[c] for c in opens) * across)
            else:
                largest = max((sizes[c] for c in parsed.output), default=1)
                bound = min(bound, max(1, out_volume // max(largest, 1)))
            bound = max(bound, 1) if sizes[b] >= 1 else 0
            if bound < sizes[b]:
                sizes[b] = bound
                changed = True
    return {b: sizes[b] for b in parsed.bonds}


def degrees_of_freedom(spec: str, dims: Mapping[str, int]) -> int:
    """Parameters of the network at ``dims`` minus its gauge freedom.

    An edge of size ``r`` can absorb any invertible ``r x r`` matrix and its inverse into its
    two cores, so it removes ``r^2`` degrees of freedom; a hyperedge over ``m`` cores admits
    only diagonal rescalings, ``(m - 1) r``. This gives the manifold dimensions of the
    classical formats (Tucker ``prod r + sum n_k r_k - sum r_k^2``; TT ``sum r_{k-1} n_k r_k -
    sum r_k^2``; CP ``R (sum n_k - d + 1)``) and is the count an Occam criterion charges.
    A hyperedge on which only two cores hold more than the bond (a CP of a tensor with all
    but two modes of size 1: a rank-``R`` matrix times scalars) also admits any invertible
    ``r x r`` matrix between those two: ``r^2 + (m - 2) r``, the matrix manifold's
    ``R (m + n - R)`` (a CP 10x1x12 at rank 3 was charged 63 for 57, and the
    degrees-of-freedom cap refused its exact rank).

    Around a loop of edges one scalar on every edge at once changes no core (each core on the
    loop takes it from one edge and its inverse from the next), so each independent loop gives
    one back: ``edges - cores + components`` of the graph of two-core edges. Without it a ring
    was charged one less than the same function as a train (a TR (1, 1, 5) on 1x10x10 74, the TT
    (1, 5) 75: an outside probe, 2026-12-02).

    Edges that join the same two cores (a ring of two cores, ``"iAB,jAB"``) are one edge of
    their sizes' product, while the cores can carry it: any invertible matrix of that size acts
    on the pair of indices (a TR of order 2 at ranks (2, 2) is a rank-4 matrix, ``4 (m + n -
    4)``; it was charged ``r_A^2 + r_B^2 - 1`` of gauge, 9 more degrees of freedom than it has
    on 12 x 14). Past that (ranks (8, 4) on 12 x 14, whose product count falls to 0) each edge
    is charged alone, as before, which is more.

    >>> degrees_of_freedom("CaA,AbB,BcC->abc", {"a": 1, "b": 10, "c": 10, "A": 1, "B": 5, "C": 1})
    75
    >>> degrees_of_freedom("BiA,AjB->ij", {"i": 12, "j": 14, "A": 2, "B": 2})  # the rank-4 matrices' 4 (12 + 14 - 4)
    88
    >>> degrees_of_freedom("aA,AbB,Bc->abc", {"a": 1, "b": 10, "c": 10, "A": 1, "B": 5})
    75
    """
    parsed = parse_spec(spec)
    params = sum(prod(int(dims[c]) for c in term) for term in parsed.inputs)
    gauge = 0
    joined: dict[tuple[int, ...], list[str]] = {}  # two-core edges by the cores they join
    for b in parsed.bonds:
        holders = parsed.terms_with(b)
        m = len(holders)
        r = int(dims[b])
        if m == 2:
            joined.setdefault(holders, []).append(b)
            continue
        carrying = sum(prod(int(dims[c]) for c in parsed.inputs[k] if c != b) > 1 for k in holders)
        gauge += r * r + (m - 2) * r if carrying == 2 else (m - 1) * r
    edges = []
    for holders, group in joined.items():
        sizes = [int(dims[b]) for b in group]
        size = prod(sizes)
        carried = min(prod(int(dims[c]) for c in parsed.inputs[k] if c not in group) for k in holders)
        if len(group) == 1 or size <= carried:  # parallel edges: one edge of their sizes' product
            gauge += size * size
            edges += [holders] if size > 0 else []
        else:  # (past what the cores carry the product's count does not hold: each edge alone, which charges more)
            gauge += sum(r * r for r in sizes)
            edges += [holders for r in sizes if r > 0]
    if edges:
        find = _components(list(range(len(parsed.inputs))), edges)
        gauge -= len(edges) - len(parsed.inputs) + len({find(k) for k in range(len(parsed.inputs))})
    return max(params - gauge, 0)


def judged_rank(spec: str, open_dims: Mapping[str, int], max_dof: float, least: int) -> int:
    """The largest rank ``r >= least`` at which the network, every bond at ``r`` (or the
    feasible size below it, :func:`feasible_ranks`), has at most ``max_dof`` degrees of
    freedom; ``least`` when it already has more there, and the largest useful rank when no
    rank reaches ``max_dof``. A default cap for rank selection near the criterion's own limit
    on what the observations determine: ``max(shape)`` alone capped a TT of 2^10 (a quantized
    tensor) at rank 2 where its middle bonds can use 32. It is one rank for every bond: a
    single bond may still pay past it within that limit while the others stay small (the fit
    then raises that bond's cap and walks on: ``tnmars.fitting.api._widened_caps``).

    >>> from tnmars import Network
    >>> net = Network.tt((2,) * 10, 1)
    >>> judged_rank(net.spec, dict(zip(net.output, net.shape)), 512, 2)
    11
    >>> judged_rank(Network.tucker((6, 7, 8), 1).spec, {"a": 6, "b": 7, "c": 8}, 168, 8)  # capped by the modes
    8
    """
    parsed = parse_spec(spec)

    def dof_at(rank: int) -> tuple[int, dict[str, int]]:
        dims = {**open_dims, **{b: rank for b in parsed.bonds}}
        caps = feasible_ranks(spec, dims)
        return degrees_of_freedom(spec, {**dims, **caps}), caps

    if not parsed.bonds or dof_at(least)[0] > max_dof:
        return least
    top = max(dof_at(max(prod(open_dims.values()), least))[1].values())  # the largest rank any bond can use
    if dof_at(top)[0] <= max_dof:
        return max(top, least)
    low, high = least, top  # dof(low) <= max_dof < dof(high)
    while high - low > 1:
        mid = (low + high) // 2
        if dof_at(mid)[0] <= max_dof:
            low = mid
        else:
            high = mid
    return low
