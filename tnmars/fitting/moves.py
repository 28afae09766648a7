"""Changing one bond's rank by one, keeping the network's function as intact as possible.

- :func:`shrink` removes the least important index of a bond: for an edge between two
  cores, the smallest singular value of the bond's local product (QR of both sides, then an
  SVD of the small ``r x r`` middle), which is the optimal truncation for trees in canonical
  form and a good one elsewhere; for a hyperedge (CP), the component of smallest weight.
  :func:`canonical_towards` puts a tree in that form first.
- :func:`grow` adds an index to a bond with small random slices in every core that carries
  it: the network's function barely changes, and the least-squares refit that follows moves
  the new index onto whatever the residual still holds.

>>> from tnmars import Network
>>> net = Network.tt((4, 5, 6), (3, 3), seed=0)
>>> shrink(net, "A").ranks, grow(net, "B", seed=0).ranks
((2, 3), (3, 4))
"""
from __future__ import annotations

import numpy as np

from ..network import Network
from .graph import spanning_bonds

__all__ = ["shrink", "grow", "plus_constant", "canonical_towards", "GROW_SCALE"]

#: size of a new index's slices relative to the RMS of the core they join
GROW_SCALE = 1e-2


def _host(net: Network) -> list[np.ndarray]:
    be = net.backend_impl
    return [np.asarray(be.to_numpy(c), dtype=np.float64) for c in net.cores]


def shrink(net: Network, bond: str, drop: int | None = None) -> Network:
    """``net`` with ``bond`` one index smaller (see the module notes). For a hyperedge,
    ``drop`` names the component to remove (default: the one of smallest weight)."""
    holders = net.terms_with(bond)
    cores = _host(net)
    r = net.dims[bond]
    if r <= 1:
        raise ValueError(f"bond {bond!r} has rank {r}; it cannot shrink further")
    if len(holders) == 2:
        i, j = holders
        ai, aj = net.inputs[i].index(bond), net.inputs[j].index(bond)
        a = np.moveaxis(cores[i], ai, -1)
        b = np.moveaxis(cores[j], aj, 0)
        qa, ra = np.linalg.qr(a.reshape(-1, r))
        qb, rb = np.linalg.qr(b.reshape(r, -1).T)
        u, s, vt = np.linalg.svd(ra @ rb.T)
        keep = min(r - 1, len(s))
        root = np.sqrt(s[:keep])
        new_a = (qa @ (u[:, :keep] * root)).reshape(a.shape[:-1] + (keep,))
        new_b = ((root[:, None] * vt[:keep]) @ qb.T).reshape((keep,) + b.shape[1:])
        if keep < r - 1:  # the bond had more indices than its cores can use: pad with zeros
            new_a = np.concatenate([new_a, np.zeros(a.shape[:-1] + (r - 1 - keep,))], axis=-1)
            new_b = np.concatenate([new_b, np.zeros((r - 1 - keep,) + b.shape[1:])], axis=0)
        cores[i] = np.moveaxis(new_a, -1, ai)
        cores[j] = np.moveaxis(new_b, 0, aj)
    else:
        # hyperedge: drop the component with the smallest product of slice norms
        weight = np.ones(r)
        for t in holders:
            ax = net.inputs[t].index(bond)
            other = tuple(k for k in range(cores[t].ndim) if k != ax)
            weight = weight * np.sqrt(np.sum(cores[t] ** 2, axis=other))
        drop = int(np.argmin(weight)) if drop is None else int(drop)
        keep_idx = [k for k in range(r) if k != drop]
        for t in holders:
            cores[t] = np.take(cores[t], keep_idx, axis=net.inputs[t].index(bond))
    return Network(net.spec, cores=cores, optimize=net.optimize)


def rank_one(tensor: np.ndarray, iters: int = 15) -> list[np.ndarray]:
    """The leading rank-1 term of ``tensor`` (higher-order power iteration started from the
    leading singular vectors of its unfoldings): vectors whose outer product approximates it."""
    d = tensor.ndim
    vecs = []
    for k in range(d):
        m = np.moveaxis(tensor, k, 0).reshape(tensor.shape[k], -1)
        if m.shape[0] <= m.shape[1]:
            vecs.append(np.linalg.eigh(m @ m.T)[1][:, -1])
        else:  # the small side's Gram, then back to this side
            u = m @ np.linalg.eigh(m.T @ m)[1][:, -1]
            vecs.append(u / max(np.linalg.norm(u), 1e-300))
    for _ in range(iters):
        for k in range(d):
            v = tensor
            for j in reversed(range(d)):  # contract every other mode, last first (axes stay put)
                if j != k:
                    v = np.tensordot(v, vecs[j], axes=([j], [0]))
            norm = np.linalg.norm(v)
            vecs[k] = v / norm if norm > 0 else v
    weight = tensor
    for j in reversed(range(d)):
        weight = np.tensordot(weight, vecs[j], axes=([j], [0]))
    weight = float(weight)
    scale = abs(weight) ** (1.0 / d)
    if weight < 0:
        vecs[0] = -vecs[0]
    return [v * scale for v in vecs]


def grow(net: Network, bond: str, seed: int | np.random.Generator | None = None,
         residual: np.ndarray | None = None) -> Network:
    """``net`` with ``bond`` one index larger. The new slices are small and random, except
    for a hyperedge whose cores carry one open mode each (CP) when the ``residual`` tensor is
    given: the new component is then the residual's leading rank-1 term (greedy CP)."""
    rng = np.random.default_rng(seed)
    cores = _host(net)
    holders = net.terms_with(bond)
    if residual is not None and len(holders) > 2 and _is_cp_like(net, bond):
        vecs = rank_one(np.asarray(residual, dtype=np.float64))
        for t in holders:
            term = net.inputs[t]
            mode = next(c for c in term if c in net.output)
            new = vecs[net.output.index(mode)]
            shape = [1] * len(term)
            shape[term.index(mode)] = -1
            cores[t] = np.concatenate([cores[t], new.reshape(shape)], axis=term.index(bond))
        return Network(net.spec, cores=cores, optimize=net.optimize)
    for t in net.terms_with(bond):
        ax = net.inputs[t].index(bond)
        c = cores[t]
        shape = list(c.shape)
        shape[ax] = 1
        rms = float(np.sqrt(np.mean(c**2))) if c.size else 1.0
        new = rng.standard_normal(shape) * GROW_SCALE * (rms if rms > 0 else 1.0)
        cores[t] = np.concatenate([c, new], axis=ax)
    return Network(net.spec, cores=cores, optimize=net.optimize)


def canonical_towards(net: Network, bond: str) -> Network:
    """The same tensor with every core of a tree network orthonormal towards ``bond`` (each
    core, as a matrix from its indices away from the bond to the index towards it, has
    orthonormal columns; QR from the leaves in), so that :func:`shrink` of ``bond`` is the
    optimal truncation of it. Without that form a local truncation's error is weighted by the
    rest of the network: a TT plus a constant 1e7 (the constant in the first core) lost
    ``2.4e7`` of squared error to a truncation of its second bond that costs ``0.15`` in this
    form. A network that is not a tree of edges between two cores (a loop, a hyperedge) comes
    back as it is.

    >>> net = Network.tt((4, 5, 6), (3, 3), seed=0)
    >>> same = canonical_towards(net, "B")
    >>> bool(np.allclose(same.to_tensor(), net.to_tensor()))
    True
    """
    tree = spanning_bonds(net.inputs, list(net.bonds))
    if tree is None or len(tree) != len(net.bonds):  # (a hyperedge, a loop, or pieces apart)
        return net
    holders = {b: net.terms_with(b) for b in net.bonds}
    neighbours: dict[int, list[tuple[int, str]]] = {k: [] for k in range(net.num_cores)}
    for b, (i, j) in holders.items():
        neighbours[i].append((j, b))
        neighbours[j].append((i, b))
    cores = _host(net)
    order: list[tuple[int, int, str]] = []  # (core, its neighbour towards the bond, the edge between them)
    seen = set(holders[bond])
    frontier = list(holders[bond])
    while frontier:
        node = frontier.pop()
        for other, b in neighbours[node]:
            if b != bond and other not in seen:
                seen.add(other)
                order.append((other, node, b))
                frontier.append(other)
    for core, towards, b in reversed(order):  # leaves first
        axis = net.inputs[core].index(b)
        moved = np.moveaxis(cores[core], axis, -1)
        r = moved.shape[-1]
        q, weight = np.linalg.qr(moved.reshape(-1, r))
        if q.shape[1] < r:  # fewer rows than the bond's size: pad (those directions carry nothing)
            q = np.concatenate([q, np.zeros((q.shape[0], r - q.shape[1]))], axis=1)
            weight = np.concatenate([weight, np.zeros((r - weight.shape[0], r))], axis=0)
        cores[core] = np.moveaxis(q.reshape(moved.shape), -1, axis)
        at = net.inputs[towards].index(b)
        cores[towards] = np.moveaxis(np.tensordot(weight, cores[towards], axes=(1, at)), 0, at)
    return Network(net.spec, cores=cores, optimize=net.optimize)


def _is_cp_like(net: Network, bond: str) -> bool:
    """Every core carrying ``bond`` has exactly two indices, the bond and one open mode, and
    together they carry every open mode (so a rank-1 term of the residual fits the new slices)."""
    holders = net.terms_with(bond)
    modes = []
    for t in holders:
        term = net.inputs[t]
        if len(term) != 2:
            return False
        modes.append(term.replace(bond, ""))
    return len(holders) == len(net.output) and sorted(modes) == sorted(net.output)


def plus_constant(net: Network, value: float, every_bond: bool = False) -> Network:
    """``net`` plus the constant ``value`` at every entry, exactly: the direct sum of ``net`` and
    the rank-one constant network, with one index more on the bonds of a spanning tree of the
    cores (the largest bonds first; every bond with ``every_bond``, or where a bond joins more
    than two cores, as CP's rank). Every core keeps its entries where its grown bonds take
    their old indices and holds ones (one core ``value``) where they all take the new one,
    with the other bonds at their first index; the tree's bonds tie every core of a term of
    the contraction to one block, so the sum has no cross terms. A ring grows all its bonds but
    its smallest, and a network whose bonds of rank 1 are absent edges (a structure search's)
    keeps them absent where its other edges connect it.

    >>> net = Network.tt((3, 4, 5), (2, 2), seed=0)
    >>> both = plus_constant(net, 7.0)
    >>> both.ranks, bool(np.allclose(both.to_tensor(), net.to_tensor() + 7.0))
    ((3, 3), True)
    >>> plus_constant(Network.tr((3, 4, 5), (2, 3, 4), seed=0), 7.0).ranks
    (2, 4, 5)
    """
    bonds = net.bonds
    grown = set(bonds) if every_bond else _spanning_bonds(net)
    cores = []
    for k, (term, core) in enumerate(zip(net.inputs, _host(net))):
        shape = [net.dims[c] + (c in grown) for c in term]
        out = np.zeros(shape)
        out[tuple(slice(0, net.dims[c]) for c in term)] = core
        new = tuple(net.dims[c] if c in grown else 0 if c in bonds else slice(None) for c in term)
        out[new] = value if k == 0 else 1.0
        cores.append(out)
    return Network(net.spec, cores=cores, optimize=net.optimize)


def _spanning_bonds(net: Network) -> set[str]:
    """The bonds of a spanning tree of the cores, the largest bonds first; every bond when one
    joins more than two cores or the bonds do not connect every core."""
    tree = spanning_bonds(net.inputs, sorted(net.bonds, key=lambda b: -net.bonds[b]))  # (stable: ties in order)
    return set(net.bonds) if tree is None else set(tree)
