"""Size budgets: "the best network of at most this many parameters".

A budget is a parameter count (an ``int``) or a compression ratio (a string such as
``"20x"``: at least 20 times fewer parameters than the dense tensor). The selection then
considers only networks within it (:class:`~tnmars.fitting.search.RankSearch`'s
``max_params``) and brings its start within it first (:func:`shrink_to_params`), so the
returned network never exceeds the budget.

>>> max_params("20x", dense_size=8000), max_params(350, dense_size=8000)
(400, 350)
>>> from tnmars import Network
>>> small = shrink_to_params(Network.tt((6, 6, 6, 6), 5, seed=0), 150)
>>> small.ranks, small.num_params
((3, 3, 3), 144)
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..network import Network
from .moves import shrink

__all__ = ["max_params", "describe", "shrink_to_params", "smallest_params"]


def max_params(budget: Any, dense_size: int) -> int:
    """The largest parameter count ``budget`` allows for a tensor of ``dense_size`` entries."""
    if isinstance(budget, bool):
        raise TypeError(f"budget must be a parameter count (int) or a compression ratio such as '20x'; got {budget!r}")
    if isinstance(budget, (int, np.integer)):
        if budget < 1:
            raise ValueError(f"budget must be a positive parameter count; got {budget}")
        return int(budget)
    if isinstance(budget, str):
        text = budget.strip().lower()
        if text.endswith("x"):
            try:
                ratio = float(text[:-1])
            except ValueError:
                ratio = math.nan
            if not (ratio >= 1 and math.isfinite(ratio)):
                raise ValueError(f"a compression-ratio budget is a number >= 1 followed by 'x', such as '20x'; "
                                 f"got {budget!r}")
            return max(int(dense_size // ratio), 1)
        raise ValueError(f"budget string {budget!r} is not a compression ratio; write it as '20x' "
                         "(or pass an int parameter count)")
    raise TypeError(f"budget must be a parameter count (int) or a compression ratio such as '20x'; "
                    f"got {type(budget).__name__} {budget!r}")


def describe(budget: Any) -> str:
    """How a budget reads in messages and result settings."""
    return f"{budget} compression" if isinstance(budget, str) else f"{int(budget):,} parameters"


def smallest_params(net: Network, min_rank: int) -> int:
    """Parameters of ``net`` with every bond at ``min_rank`` (at least 1): the smallest network
    a selection can return."""
    return net.num_params_at({b: max(min_rank, 1) for b in net.bonds})


def shrink_to_params(net: Network, limit: int, min_rank: int = 1) -> Network:
    """``net`` with rank indices removed until it has at most ``limit`` parameters.

    Each step removes, by :func:`~tnmars.fitting.moves.shrink`, the index that loses the least
    per parameter saved: the smallest singular value of a bond's local product squared (for
    a hyperedge, the smallest component's weight squared), divided by the parameters its
    removal saves. Raises ``ValueError`` when even every bond at ``min_rank`` exceeds ``limit``.
    """
    floor = max(min_rank, 1)
    smallest = smallest_params(net, floor)
    if smallest > limit:
        raise ValueError(f"the budget allows {limit:,} parameters but the smallest {net.spec} network "
                         f"(every bond at rank {floor}) has {smallest:,}")
    while net.num_params > limit:
        bonds = net.bonds
        cores = [np.asarray(net.backend_impl.to_numpy(c), dtype=np.float64) for c in net.cores]
        cost = {}
        for b, r in bonds.items():
            if r > floor:
                saved = net.num_params - net.num_params_at({b: r - 1})
                cost[b] = _weakest(net, cores, b) / max(saved, 1)
        net = shrink(net, min(cost, key=cost.__getitem__))
    return net


def _weakest(net: Network, cores: list[np.ndarray], bond: str) -> float:
    """What removing ``bond``'s least important index loses, squared: the smallest singular
    value of the bond's local product (two cores), or the smallest component's weight (a
    hyperedge), as :func:`~tnmars.fitting.moves.shrink` removes them."""
    holders = net.terms_with(bond)
    r = net.dims[bond]
    if len(holders) == 2:
        i, j = holders
        a = np.moveaxis(cores[i], net.inputs[i].index(bond), -1).reshape(-1, r)
        b = np.moveaxis(cores[j], net.inputs[j].index(bond), 0).reshape(r, -1)
        ra = np.linalg.qr(a, mode="r")
        rb = np.linalg.qr(b.T, mode="r")
        s = np.linalg.svd(ra @ rb.T, compute_uv=False)
        return float(s[-1] ** 2) if len(s) == r else 0.0
    weight = np.ones(r)
    for t in holders:
        ax = net.inputs[t].index(bond)
        weight = weight * np.sqrt(np.sum(cores[t] ** 2, axis=tuple(k for k in range(cores[t].ndim) if k != ax)))
    return float(np.min(weight) ** 2)
