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
import warnings
from collections.abc import Iterable, Mapping
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
    interrupted: whether each point's selection was interrupted (Ctrl-C, or a callback that
        asked to stop): its network is where the selection stood, not its choice. A sweep stops
        at the first such budget, so only the last point can be.
    heldout_errors: for a completion, each point's cross-validated error (the median error of
        refits without a random tenth of the observed entries, on those entries, against their
        deviations from the mean: ``settings["cross_validation"]``), else None. ``errors`` are
        on the entries fitted and fall as the budget grows; these tell when a larger network
        predicts the missing entries worse (a Tucker completion at 30% observed: 0.36 -> 0.23
        fitted from 278 to 513 parameters, while its error on the whole tensor rose 0.45 -> 0.49;
        held out 0.57 -> 0.53, each well above the fitted).
    """

    budgets: list[Any]
    limits: list[int]
    params: list[int]
    errors: list[float]
    ranks: list[Any]
    results: list[Any] = field(default_factory=list)

    def plot(self, *, path: str | os.PathLike | None = None, title: str | None = None, **kwargs: Any):
        """Relative error against parameters (:func:`tnmars.plots.plot_sweep`), each point
        labelled with its ranks (or with ``labels=``, one per point)."""
        from ..plots import plot_sweep

        return plot_sweep(self, path=path, title=title, **kwargs)  # (its labels and held-out errors)

    @property
    def heldout_errors(self) -> list[float | None]:
        out = []
        for res in self.results:
            checked = (getattr(_fit_of(res), "settings", None) or {}).get("cross_validation")
            out.append(None if not checked else float(checked["median_error"]))
        return out + [None] * (len(self.params) - len(out))

    @property
    def interrupted(self) -> list[bool]:
        stopped = [bool(_fit_of(res).interrupted) for res in self.results]
        return stopped + [False] * (len(self.params) - len(stopped))  # (a curve built without its results)

    def labels(self) -> list[str]:
        """Each point's label in the summary and the plot: its ranks (its edges for ``"fctn"``),
        ``"zero network"`` at 0 parameters, ``"(interrupted)"`` after an interrupted point's."""
        return [_label(r, p, stopped) for r, p, stopped in zip(self.ranks, self.params, self.interrupted)]

    def summary(self) -> str:
        held = self.heldout_errors
        if not any(h is not None for h in held):
            lines = ["budget                 parameters  relative error  ranks"]
            for b, p, e, label in zip(self.budgets, self.params, self.errors, self.labels()):
                lines.append(f"{describe(b):<22} {p:>10,}  {e:>14.4g}  {label}")
            return "\n".join(lines)
        lines = ["budget                 parameters  relative error  held out  ranks"]
        for b, p, e, h, label in zip(self.budgets, self.params, self.errors, held, self.labels()):
            lines.append(f"{describe(b):<22} {p:>10,}  {e:>14.4g}  {'-' if h is None else format(h, '8.4g'):>8}  {label}")
        lines.append("(held out: the median error of refits without a random tenth of the observed entries, on those "
                     "entries, against their deviations from the mean)")
        return "\n".join(lines)


def _fit_of(result: Any) -> Any:
    """The :class:`~tnmars.FitResult` of a budget's result (a structure search's ``fit``)."""
    return getattr(result, "fit", result)


def _label(ranks: Any, params: int | None = None, interrupted: bool = False) -> str:
    """A point's ranks, named as :func:`tnmars.search` names them where they have no edges (the
    0-parameter point of all-zero data read "rank 1" in a sweep and "zero network" in the
    search); an interrupted point says so (it looked like any other)."""
    if params == 0:
        text = "zero network"
    elif isinstance(ranks, dict):
        text = " ".join(f"{i}-{j}:{r}" for (i, j), r in ranks.items()) or "no edges (rank 1)"
    else:
        text = ",".join(map(str, ranks))
    return text + " (interrupted)" if interrupted else text


def sweep(data: Any, network: str | Network = "tucker", *, budgets: Iterable[Any], **kwargs: Any) -> SweepResult:
    """Select the best network within each budget of ``budgets``.

    Parameters
    ----------
    data: the tensor.
    network: a format name or a :class:`~tnmars.Network`, as for :func:`tnmars.fit`, or
        ``"fctn"``: structure search (:func:`tnmars.search`) within each budget.
    budgets: parameter counts (``int``) and/or compression ratios (``"20x"``), in any
        iterable (a list, a tuple, a NumPy array, a generator); they are run from the smallest
        allowance to the largest.
    kwargs: passed to :func:`tnmars.fit` (or :func:`tnmars.search`) for every budget. For
        ``"fctn"``, a ``start`` starts the smallest budget; each larger one starts from the
        result below it.

    Returns
    -------
    SweepResult. Ctrl-C (or a callback that asks to stop) stops the sweep, not only the budget
    it interrupts: the budgets done so far come back, with the interrupted one last (marked in
    :attr:`SweepResult.interrupted`, the summary and the plot), and a ``RuntimeWarning`` says
    which budgets did not run. (Each fit takes Ctrl-C as "stop here and return what you have";
    the sweep went on to the next budget, so Ctrl-C had to be pressed once per budget.)
    """
    if "budget" in kwargs:
        raise TypeError("sweep takes budgets=[...]; a single budget= belongs to tnmars.fit or tnmars.search")
    given = budgets
    if isinstance(budgets, (str, bytes, Mapping)) or not isinstance(budgets, Iterable):
        budgets = []
    try:  # (an array, a tuple, a generator: any iterable, consumed once; NumPy scalars as Python's)
        budgets = [b.item() if isinstance(b, np.generic) else b for b in budgets]
    except TypeError:  # (a 0-d array is Iterable but cannot be iterated)
        budgets = []
    if not budgets:
        raise ValueError(f"budgets must be a non-empty list of parameter counts or ratios such as '20x'; "
                         f"got {given!r}")
    shape = tuple(int(n) for n in getattr(data, "shape", None) or np.shape(data))
    dense = math.prod(shape)
    limits = [max_params(b, dense) for b in budgets]
    order = sorted(range(len(budgets)), key=lambda k: limits[k])
    structure = isinstance(network, str) and network.lower() == "fctn"
    out = SweepResult([], [], [], [], [], [])
    start = kwargs.pop("start", None) if structure else None
    for k in order:
        with warnings.catch_warnings(record=True) as caught:  # (said again below, at the caller's line)
            warnings.simplefilter("always")
            if structure:
                from .structure import search

                res = search(data, budget=budgets[k], start=start, **kwargs)
                start = res
                ranks = res.edges
            else:
                from .api import fit
                from .progress import labelled

                # (each budget's bar names the sweep and the budget: "tnmars.fit" alone told them apart by nothing)
                with labelled(f"tnmars.sweep, budget {describe(budgets[k])} ({len(out.results) + 1}/{len(order)})"):
                    res = fit(data, network, budget=budgets[k], **kwargs)
                ranks = res.ranks
        for w in caught:  # (they pointed at this module's line)
            warnings.warn(w.message, w.category, stacklevel=2)
        out.budgets.append(budgets[k])
        out.limits.append(limits[k])
        out.params.append(int(res.num_params))
        out.errors.append(float(res.relative_error))
        out.ranks.append(ranks)
        out.results.append(res)
        if _fit_of(res).interrupted:  # (the fit took Ctrl-C as "stop and return what you have": so does the sweep)
            left = [describe(budgets[j]) for j in order[len(out.results):]]
            done = len(out.results)
            warnings.warn(f"tnmars.sweep: interrupted within budget {describe(budgets[k])}: the sweep stops there, "
                          f"with {done} point{'s' if done > 1 else ''}, the last one where its selection stood when "
                          "interrupted (SweepResult.interrupted)" + (f"; not run: {', '.join(left)}" if left else ""),
                          RuntimeWarning, stacklevel=2)
            break
    return out
