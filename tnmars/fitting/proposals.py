"""Where the selection starts: a network at proposed ranks, with cores that already fit.

- ``"spectral"`` (Tucker, TT, TR): ranks read off the unfolding spectra by EVBMF
  (:mod:`tnmars.fitting.spectral`), cores from HOSVD / TT-SVD / TR-SVD at those ranks;
- ``"greedy"`` (any network): every bond at rank 1; the search then adds what the data ask
  for, one index at a time (greedy rank increments);
- ``"mars"`` (any network): the MARS relaxation (:mod:`tnmars.fitting.relaxation`) from a
  least-squares fit at the maximal ranks, masks open; its MAP masks (at least one index
  per bond) give the ranks.

With missing entries, the spectral proposals read the zero-filled data divided by the
observed fraction (an unbiased estimate of the full tensor); its spectra over-state the
ranks, so the start is a generous one that the search prunes.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..network import Network
from .criterion import MAX_DOF_SHARE
from .graph import degrees_of_freedom
from .solvers import FitData, als
from .spectral import tr_proposal, tt_proposal, tucker_proposal

__all__ = ["PROPOSALS", "spectral_start", "rank_one_start", "filled", "ring_bonds"]

PROPOSALS = ("auto", "spectral", "greedy", "mars")



def filled(data: FitData) -> np.ndarray:
    """The full-tensor estimate the spectral proposals read: the data, or with missing
    entries the zero-filled data over the observed fraction."""
    y = data.backend.to_numpy(data.y)
    return y if data.weights is None else y / data.observed_fraction


def _capped(ranks: tuple[int, ...], template: Network) -> dict[str, int]:
    return {b: max(1, min(int(r), m)) for (b, m), r in zip(template.bonds.items(), ranks)}


def within_budget(template: Network, max_dof: float) -> Network:
    """``template`` with its largest bonds lowered, one index at a time, until its degrees of
    freedom fit in ``max_dof`` (a start the data can still determine)."""
    dims = dict(template.dims)
    bonds = list(template.bonds)
    while degrees_of_freedom(template.spec, dims) > max_dof:
        largest = max(bonds, key=lambda b: dims[b])
        if dims[largest] <= 1:
            break
        dims[largest] -= 1
    if dims == template.dims:
        return template
    return template.prune({b: list(range(dims[b])) for b in bonds})


def spectral_start(fmt: str, template: Network, data: FitData, selector: str = "evbmf") -> Network:
    """A network of format ``fmt`` at the ranks the selector reads off the spectra, with
    the classical SVD cores at those ranks (never above ``template``'s ranks), within the
    degrees of freedom the criterion trusts (``MAX_DOF_SHARE`` of the observations).

    With missing entries the spectra over-state the ranks (the zero filling adds
    heteroscedastic noise): the proposal is then an upper start that the search prunes."""
    y = filled(data)
    template = within_budget(template, MAX_DOF_SHARE * data.n_obs)
    caps = list(template.ranks)
    if fmt == "tucker":
        ranks = _capped(tucker_proposal(y, selector, caps), template)
        factors = []
        for k, b in enumerate(template.bonds):
            m = np.moveaxis(y, k, 0).reshape(y.shape[k], -1)
            w, q = np.linalg.eigh(m @ m.T)
            factors.append(q[:, ::-1][:, : ranks[b]])
        core = y
        for k, u in enumerate(factors):
            core = np.moveaxis(np.tensordot(core, u, axes=([k], [0])), -1, k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = Network.tucker(y.shape, [ranks[b] for b in template.bonds])
        return net.with_cores([core, *factors])
    if fmt == "tt":
        ranks, cores = tt_proposal(y, selector, caps)
        return Network(template.spec, cores=cores, optimize=template.optimize)
    if fmt == "tr":
        order = ring_bonds(template)
        ranks = tr_proposal(y, selector, [template.dims[b] for b in order])
        ranks = {b: max(1, min(int(r), template.dims[b])) for b, r in zip(order, ranks)}
        from ..interop.init import svd_init

        try:  # TR-SVD when its first unfolding can hold r_0 r_1, else least squares from random values
            cores = svd_init("tr", y, [ranks[b] for b in order]).cores
            start = Network(template.spec, cores=cores, optimize=template.optimize)
        except ValueError:
            start = Network(template.spec, {**template.dims, **ranks}, seed=0, optimize=template.optimize)
        return start
    raise ValueError(f"no spectral proposal for format {fmt!r}")


def ring_bonds(net: Network) -> list[str]:
    """A ring's bonds in ring order: bond ``k`` (the last index of core ``k``) joins cores
    ``k`` and ``k + 1``."""
    return [term[-1] for term in net.inputs]


def rank_one_start(template: Network, data: FitData, seed: Any = None) -> Network:
    """Every bond at rank 1, cores fitted by least squares (from random values; with
    missing entries, first to the zero-filled estimate, which keeps completion away from the
    poor local minima of a random start)."""
    ranks = {b: 1 for b in template.bonds}
    net = Network(template.spec, {**template.dims, **ranks}, seed=seed, optimize=template.optimize)
    if data.weights is not None:
        net, _ = als(net, FitData.from_arrays(filled(data), backend=data.backend), sweeps=10)
    return net
