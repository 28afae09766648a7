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

from collections.abc import Mapping

from .._checks import describe_budget as describe
from .._checks import max_params
from ..network import Network
from .criterion import Occam
from .graph import degrees_of_freedom
from .moves import shrink
from .search import rank_floor
from .solvers import FitData, als

__all__ = ["max_params", "describe", "shrink_to_params", "descend_to_params", "smallest_params", "floors",
           "describe_floors"]


def floors(net: Network, min_rank: int | Mapping[str, int]) -> dict[str, int]:
    """The smallest rank of every bond of ``net`` under ``min_rank`` (one for every bond or a
    dict by bond; at least 1: :func:`~tnmars.fitting.search.rank_floor`). A bond already below
    its floor stays where it is: removing indices never raises a rank."""
    return {b: min(rank_floor(min_rank, b), r) for b, r in net.bonds.items()}


def describe_floors(floor: Mapping[str, int]) -> str:
    """``"every bond at rank 3"``, or the ranks by bond where they differ."""
    values = set(floor.values())
    if len(values) <= 1:
        return f"every bond at rank {values.pop() if values else 1}"
    return "bonds at ranks " + ", ".join(f"{b}={r}" for b, r in floor.items())


def smallest_params(net: Network, min_rank: int | Mapping[str, int]) -> int:
    """Parameters of ``net`` with every bond at ``min_rank`` (at least 1; one for every bond or
    a dict by bond): the smallest network a selection can return."""
    return net.num_params_at(floors(net, min_rank))


def _floor_within(net: Network, limit: int, min_rank: int | Mapping[str, int]) -> dict[str, int]:
    """The smallest rank each bond may take (at least 1); ``ValueError`` when even every bond
    at it exceeds ``limit`` parameters."""
    floor = floors(net, min_rank)
    smallest = net.num_params_at(floor)
    if smallest > limit:
        raise ValueError(f"the budget allows {limit:,} parameters but the smallest {net.spec} network "
                         f"({describe_floors(floor)}) has {smallest:,}")
    return floor


def shrink_to_params(net: Network, limit: int, min_rank: int | Mapping[str, int] = 1) -> Network:
    """``net`` with rank indices removed until it has at most ``limit`` parameters.

    Each step removes one index from the largest bond (of those, the one whose removal saves
    the most parameters), as :func:`~tnmars.fitting.proposals.within_budget` does for degrees
    of freedom, by :func:`~tnmars.fitting.moves.shrink`, which drops that bond's least
    important index. (Ranking bonds by their smallest singular value per parameter saved was
    tried: outside a canonical form those values do not compare across bonds, and a TT start
    lost its whole middle bond.) ``min_rank``: one floor for every bond or a dict by bond.
    Raises ``ValueError`` when even every bond at ``min_rank`` exceeds ``limit``.
    """
    floor = _floor_within(net, limit, min_rank)
    while net.num_params > limit:
        bonds = net.bonds
        saving = {b: net.num_params - net.num_params_at({b: r - 1}) for b, r in bonds.items() if r > floor[b]}
        net = shrink(net, max(saving, key=lambda b: (bonds[b], saving[b])))
    return net


def descend_to_params(net: Network, data: FitData, criterion: Occam, limit: int,
                      min_rank: int | Mapping[str, int] = 1, sweeps: int = 3) -> Network:
    """``net`` brought within ``limit`` parameters by the data: each step tries one index
    fewer on every bond (:func:`~tnmars.fitting.moves.shrink`, then ``sweeps`` ALS sweeps) and
    keeps the candidate with the lowest MAP objective, until the network fits. Slower than
    :func:`shrink_to_params` (a refit per bond per step), but it asks the data which bond
    can best spare an index; :func:`tnmars.fit` starts its search within a budget this way."""
    floor = _floor_within(net, limit, min_rank)
    while net.num_params > limit:
        best = None
        for bond, r in net.bonds.items():
            if r <= floor[bond]:
                continue
            fitted, sse = als(shrink(net, bond), data, sweeps=sweeps)
            objective = criterion.objective(sse, degrees_of_freedom(fitted.spec, fitted.dims))
            if best is None or objective < best[0]:
                best = (objective, fitted)
        net = best[1]
    return net
