"""Error against size in one call: the best network within each of several budgets.

:func:`sweep` runs the selection (:func:`tnmars.fit`, or :func:`tnmars.search` for
``network="fctn"``) once per budget, smallest first, and returns the curve as a
:class:`SweepResult` (parameters, relative errors, every result), which
:func:`tnmars.plots.plot_sweep` draws. Each point is the best network by the MAP criterion
within its budget: where the data need fewer parameters than a budget allows, the point
stays at the size the criterion chose (the curve flattens there). The structure search
starts each budget from the network of the budget below (``tnmars.search(start=)``): it
walks on from there instead of regrowing it from rank 1, and (at the default
``prior_strength`` 0) its error never rises with the budget.

>>> import numpy as np, tnmars
>>> x = tnmars.Network.tt((6, 7, 8, 7), (2, 4, 3), seed=0).to_tensor()
>>> curve = tnmars.sweep(x, "tt", budgets=[60, 120, "10x"], seed=0, progress=False)
>>> all(p <= b for p, b in zip(curve.params, curve.limits))
True
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..network import Network
from .budget import describe, max_params

__all__ = ["sweep", "SweepResult"]


@dataclass
class SweepResult:
    """The error-vs-parameters curve of a :func:`sweep`, one point per budget (ascending).

    Attributes
    ----------
    budgets: the budgets as given; limits: the parameter count each allows.
    params, errors: parameters and relative error of the network selected within each.
    ranks: its ranks (for ``"fctn"``: the surviving edges ``{(i, j): rank}``).
    results: the :class:`~tnmars.FitResult` (or :class:`~tnmars.fitting.structure.StructureResult`) of each budget.
    """

    budgets: list[Any]
    limits: list[int]
    params: list[int]
    errors: list[float]
    ranks: list[Any]
    results: list[Any] = field(default_factory=list)

    def plot(self, *, path: str | os.PathLike | None = None, title: str | None = None, **kwargs: Any):
        """Relative error against parameters (:func:`tnmars.plots.plot_sweep`), each point
        labelled with its ranks."""
        from ..plots import plot_sweep

        labels = [_label(r) for r in self.ranks]
        return plot_sweep(self.params, self.errors, labels=labels, path=path, title=title, **kwargs)

    def summary(self) -> str:
        lines = ["budget                 parameters  relative error  ranks"]
        for b, p, e, r in zip(self.budgets, self.params, self.errors, self.ranks):
            lines.append(f"{describe(b):<22} {p:>10,}  {e:>14.4g}  {_label(r)}")
        return "\n".join(lines)


def _label(ranks: Any) -> str:
    if isinstance(ranks, dict):
        return " ".join(f"{i}-{j}:{r}" for (i, j), r in ranks.items()) or "rank 1"
    return ",".join(map(str, ranks))


def sweep(data: Any, network: str | Network = "tucker", *, budgets: Sequence[Any], **kwargs: Any) -> SweepResult:
    """Select the best network within each budget of ``budgets``.

    Parameters
    ----------
    data: the tensor.
    network: a format name or a :class:`~tnmars.Network`, as for :func:`tnmars.fit`, or
        ``"fctn"``: structure search (:func:`tnmars.search`) within each budget.
    budgets: parameter counts (``int``) and/or compression ratios (``"20x"``); they are
        run from the smallest allowance to the largest.
    kwargs: passed to :func:`tnmars.fit` (or :func:`tnmars.search`) for every budget. For
        ``"fctn"``, a ``start`` starts the smallest budget; each larger one starts from the
        result below it.

    Returns
    -------
    SweepResult
    """
    if "budget" in kwargs:
        raise TypeError("sweep takes budgets=[...]; a single budget= belongs to tnmars.fit or tnmars.search")
    if isinstance(budgets, (str, int)) or not isinstance(budgets, Sequence) or len(budgets) == 0:
        raise ValueError(f"budgets must be a non-empty list of parameter counts or ratios such as '20x'; "
                         f"got {budgets!r}")
    shape = tuple(int(n) for n in getattr(data, "shape", None) or np.shape(data))
    dense = math.prod(shape)
    limits = [max_params(b, dense) for b in budgets]
    order = sorted(range(len(budgets)), key=lambda k: limits[k])
    structure = isinstance(network, str) and network.lower() == "fctn"
    out = SweepResult([], [], [], [], [], [])
    start = kwargs.pop("start", None) if structure else None
    for k in order:
        if structure:
            from .structure import search

            res = search(data, budget=budgets[k], start=start, **kwargs)
            start = res
            ranks = res.edges
        else:
            from .api import fit

            res = fit(data, network, budget=budgets[k], **kwargs)
            ranks = res.ranks
        out.budgets.append(budgets[k])
        out.limits.append(limits[k])
        out.params.append(int(res.num_params))
        out.errors.append(float(res.relative_error))
        out.ranks.append(ranks)
        out.results.append(res)
    return out
