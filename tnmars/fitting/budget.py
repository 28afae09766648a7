"""Size budgets: "the best network of at most this many parameters".

A budget is a parameter count (an ``int``) or a compression ratio (a string such as
``"20x"``: at least 20 times fewer parameters than the dense tensor). The selection then
considers only networks within it (:class:`~tnmars.fitting.search.RankSearch`'s
``max_params``) and brings its start within it first (:func:`descend_to_params`), so the
returned network never exceeds the budget.

>>> max_params("20x", dense_size=8000), max_params(350, dense_size=8000)
(400, 350)
>>> from tnmars import Network
>>> small = shrink_to_params(Network.tt((8, 9, 8, 9), (3, 5, 4), seed=0), 150)
>>> small.ranks, small.num_params
((2, 2, 3), 127)
"""
from __future__ import annotations

from .._checks import describe_budget as describe
from .._checks import max_params
from ..network import Network
from .criterion import Occam
from .graph import degrees_of_freedom
from .moves import shrink
from .solvers import FitData, als

__all__ = ["max_params", "describe", "shrink_to_params", "descend_to_params", "smallest_params"]


def smallest_params(net: Network, min_rank: int) -> int:
    """Parameters of ``net`` with every bond at ``min_rank`` (at least 1): the smallest network
    a selection can return."""
    return net.num_params_at({b: max(min_rank, 1) for b in net.bonds})


def _floor_within(net: Network, limit: int, min_rank: int) -> int:
    """The smallest rank a bond may take (at least 1); ``ValueError`` when even every bond at
    it exceeds ``limit`` parameters."""
    floor = max(min_rank, 1)
    smallest = smallest_params(net, floor)
    if smallest > limit:
        raise ValueError(f"the budget allows {limit:,} parameters but the smallest {net.spec} network "
                         f"(every bond at rank {floor}) has {smallest:,}")
    return floor


def shrink_to_params(net: Network, limit: int, min_rank: int = 1) -> Network:
    """``net`` with rank indices removed until it has at most ``limit`` parameters.

    Each step removes one index from the largest bond (of those, the one whose removal saves
    the most parameters), as :func:`~tnmars.fitting.proposals.within_budget` does for degrees
    of freedom, by :func:`~tnmars.fitting.moves.shrink`, which drops that bond's least
    important index. (Ranking bonds by their smallest singular value per parameter saved was
    tried: outside a canonical form those values do not compare across bonds, and a TT start
    lost its whole middle bond.) Raises ``ValueError`` when even every bond at ``min_rank``
    exceeds ``limit``.
    """
    floor = _floor_within(net, limit, min_rank)
    while net.num_params > limit:
        bonds = net.bonds
        saving = {b: net.num_params - net.num_params_at({b: r - 1}) for b, r in bonds.items() if r > floor}
        net = shrink(net, max(saving, key=lambda b: (bonds[b], saving[b])))
    return net


def descend_to_params(net: Network, data: FitData, criterion: Occam, limit: int, min_rank: int = 1,
                      sweeps: int = 3) -> Network:
    """``net`` brought within ``limit`` parameters by the data: each step tries one index
    fewer on every bond (:func:`~tnmars.fitting.moves.shrink`, then ``sweeps`` ALS sweeps) and
    keeps the candidate with the lowest MAP objective, until the network fits. Slower than
    :func:`shrink_to_params` (a refit per bond per step), but it asks the data which bond
    can best spare an index; :func:`tnmars.fit` starts its search within a budget this way."""
    floor = _floor_within(net, limit, min_rank)
    while net.num_params > limit:
        best = None
        for bond, r in net.bonds.items():
            if r <= floor:
                continue
            fitted, sse = als(shrink(net, bond), data, sweeps=sweeps)
            objective = criterion.objective(sse, degrees_of_freedom(fitted.spec, fitted.dims))
            if best is None or objective < best[0]:
                best = (objective, fitted)
        net = best[1]
    return net
