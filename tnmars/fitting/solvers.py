"""Alternating least squares for any tensor network.

A network is linear in each core: with the others fixed, ``T = E_k g_k``. Each ALS step
solves for one core exactly. Invariants:

- **Full data**: the normal equations ``(E_k^T E_k + lam) g = E_k^T y``. ``E_k^T E_k`` is the
  identity on the core's open modes times one Gram matrix per connected piece of the network
  left when core ``k`` is removed (for a chain: the left and right environments; for CP: the
  Hadamard product of the other factors' Grams). Each Gram is the contraction of its piece with
  a copy of itself; eigendecomposed, the system is solved exactly and the new residual
  ``||y - T||^2 = ||y||^2 - 2 <g, E^T y> + <g, E^T E g>`` comes free, without forming ``T``.
- **Missing data**: the masked normal equations ``E^T (w * (E g)) + lam g = E^T (w * y)``.
  Where the core's open modes are on no other core, they split into one problem per index of
  those modes (the observed entries of its slice against the environment ``E``, as many
  unknowns as the core's bond volume), solved together by one batched eigendecomposition
  (:meth:`_CoreSolver.solve_direct`) when that is cheap; otherwise conjugate gradients,
  preconditioned by the full-data operator scaled by the observed fraction (exact when entries
  are missing at random), with the estimate ``E g`` updated along with the iterate, so the
  residual is again free.
- Null directions of the Grams (gauge, unused indices) get the minimum-norm solution on
  complete data; with missing data both masked solvers keep the current core's component
  there (CG's warm start, the direct solve's update from it), and add a tiny ridge
  (``RIDGE`` times the largest eigenvalue). Core norms are balanced after every sweep.

Arrays are NumPy or CuPy (``backend.xp``); contractions use the cached plans of
:mod:`tnmars.contract`.

>>> import numpy as np
>>> from tnmars import Network
>>> from tnmars.fitting.solvers import FitData, als
>>> truth = Network.tt((5, 6, 7), (2, 3), seed=1).to_tensor()
>>> start = Network.tt((5, 6, 7), (2, 3), seed=2)
>>> fitted, sse = als(start, FitData.from_arrays(truth), sweeps=50)
>>> float(np.linalg.norm(fitted.to_tensor() - truth) / np.linalg.norm(truth)) < 1e-6
True
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..backends import Backend, get_backend
from ..contract import execute, make_plan
from ..network import Network
from .graph import Branch, CoreLayout, pieces_without, tree_branches

__all__ = ["FitData", "SPREAD_RESOLVED", "als", "residual"]

#: eigenvalues of a Gram below this share of its largest are treated as null directions
PINV_CUTOFF = 1e-13
#: largest Gram matrix (side) the exact solves eigendecompose; larger pieces are solved by CG
MAX_GRAM = 1024
#: relative ridge of the masked normal equations (times the largest eigenvalue of their
#: preconditioner): keeps CG's iterates bounded where few entries are observed
RIDGE = 1e-12
#: a masked update is solved slice by slice (:meth:`_CoreSolver.solve_direct`) when its slices'
#: Grams cost at most this many multiply-adds (entries times the core's bond volume squared)...
DIRECT_MAX_WORK = 2**24
#: ... or its bond volume is at most this (then the Grams cost about what CG's products do)
DIRECT_MAX_BONDS = 16
#: the direct solve's weighted environments hold at most the data's size or this many entries
DIRECT_CHUNK = 2**18
#: ... and its environment and Grams together at most this many times that: the environment
#: holds ``R x B`` entries (``R`` the entries off the core's slice), ``B`` times the data for a
#: Tucker core (K = 1), which CG never forms (an outside review: 2 GB for the core of a 200^3
#: Tucker at ranks (2, 2, 4), where CG takes about 0.3 GB)
DIRECT_MAX_MEMORY = 4
#: a slice's Gram eigenvalues below this share of the largest of any slice are left unsolved,
#: keeping the current core's component there, as CG's warm start does
DIRECT_CUTOFF = 1e-12
#: below this share of ``||y||^2`` the exact solve measures its SSE from the residual instead of
#: ``||y||^2 - 2 <g, E^T y> + <g, E^T E g>``, whose cancellation leaves about 1e-8 of ``||y||^2``
NEAR_EXACT = 1e-6


#: a spread (:attr:`FitData.spread`) above this share of ``||y||^2`` is read as measured: the
#: deviations ``y - mean`` carry rounding of about ``eps |y|``, so the spread's relative error is
#: about ``2 eps sqrt(||y||^2 / spread)``, 0.1 here (a mean 2e14 times the spread). At 1e-24 (a
#: mean 1e12 times the spread) data 1e13 times their spread from zero, whose deviations float64
#: still holds to 1e-3, were read as a constant and fitted at rank 1 without a word (outside
#: probe, 2026-12-02); fitted without their mean they come back 1% off, as their noise
SPREAD_RESOLVED = 2e-29


@dataclass
class FitData:
    """The data a network is fitted to, in working units.

    ``y`` holds the data with unobserved entries set to 0; ``weights`` is the boolean mask of
    observed entries, or ``None`` when every entry is observed (then no mask is stored).
    """

    y: Any
    weights: Any | None
    n_obs: int
    sq_norm: float
    backend: Backend

    @classmethod
    def from_arrays(cls, y: Any, observed: Any | None = None, backend: Backend | None = None) -> FitData:
        be = backend or get_backend("numpy")
        xp = be.xp
        y = xp.asarray(y, dtype=xp.float64)
        if observed is not None:
            w = xp.asarray(observed, dtype=bool)
            if bool(w.all()):
                w = None
            else:
                y = xp.where(w, y, 0.0)
        else:
            w = None
        n_obs = int(y.size if w is None else int(w.sum()))
        return cls(y, w, n_obs, float(xp.vdot(y, y)), be)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.y.shape)

    @property
    def observed_fraction(self) -> float:
        return self.n_obs / max(self.y.size, 1)

    @property
    def observed_mean(self) -> float:
        """Mean of the observed entries (the missing ones are 0 in ``y``)."""
        return float(self.y.sum()) / max(self.n_obs, 1)

    @property
    def spread(self) -> float:
        """Sum of the squared deviations of the observed entries from their mean: what the
        checks judge a fit's error against, since an offset makes the plain relative error
        small whatever the fit. Computed from the deviations themselves (once, then kept):
        ``||y||^2 - n mean^2`` cancels to nothing for data far from zero (a mean 1e8 times the
        spread), where the checks then fell back on the plain error and said nothing."""
        kept = self.__dict__.get("_spread")
        if kept is None:
            xp, mean = self.backend.xp, self.observed_mean
            flat = self.y.reshape(-1)
            mask = None if self.weights is None else self.weights.reshape(-1)
            kept = 0.0
            for start in range(0, flat.shape[0], 1 << 16):  # (in blocks: no data-sized temporary)
                deviations = flat[start:start + (1 << 16)] - mean
                if mask is not None:
                    deviations = xp.where(mask[start:start + (1 << 16)], deviations, 0.0)
                kept += float(xp.vdot(deviations, deviations))
            self.__dict__["_spread"] = kept
        return kept

    def residual(self, net: Network) -> np.ndarray:
        """``y - T`` on the host (with missing entries: over the observed ones, divided by the
        observed fraction), where a new CP component starts from (:func:`~.moves.grow`)."""
        r = self.backend.to_numpy(self.y) - np.asarray(net.numpy().to_tensor())  # (a CuPy network too)
        if self.weights is not None:
            r = r * self.backend.to_numpy(self.weights) / self.observed_fraction
        return r


#: FLOPs from which the solvers' plans run the harder path search on loopy graphs
#: (:func:`tnmars.paths.harder_search`, 10-300 ms of dynamic programming). A search refits
#: each rank vector by a few sweeps, so a plan runs a few dozen times: below this a contraction
#: takes under a millisecond, and the search costs more than any path it finds could save
#: (the Grams of a fully connected network of order 6 at ranks 1-4: 1 s of search per rank
#: vector for sweeps of 8 ms).
ESCALATE_FROM = 1e8
#: largest environment matrix (entries) from which a piece's Gram is built as ``E^T E``
#: (``_CoreSolver._piece_gram``): 128 MB in float64, enough for every Gram the exact solves
#: take (side at most ``MAX_GRAM``) when the piece's modes hold at most 16,384 entries, as on
#: the camera image as 4^8. At 2^23 a network of 10,848 parameters on that image (one core's
#: Gram of side 864) had its sweep's Grams take 9.1 s (17.6 s with planning), at 2^24 7.4 s
ENV_MAX_ENTRIES = 2**24
#: plans whose greedy path costs (:attr:`tnmars.contract.Plan.cost`) less than this keep it;
#: larger ones are planned again with ``"auto"``, which prices several paths (see
#: :func:`_plan_of`)
CAREFUL_PLAN_FROM = 1e7


def _plan_of(terms: tuple[str, ...], output: str, shapes: tuple[tuple[int, ...], ...], careful: bool = True) -> Any:
    """The plan the solvers run: opt_einsum's greedy path, or ``"auto"``'s choice when the
    greedy path costs ``CAREFUL_PLAN_FROM`` or more. Every rank vector a search tries is a
    new set of shapes, so most plans run only for the few sweeps of one refit: ``"auto"``
    took 7-28 ms (two runs) to plan the right-hand sides and Grams of the camera image's
    structure-search networks, which run in 0.1-0.9 ms, the greedy path 2-17 ms for plans that
    run about as fast (``benchmarks/als_sweeps.py``); planning was half of a structure search's
    time within 150 parameters of that image, a quarter after this change (35 of 71 s, then 11
    of 47 s). ``careful=False``: the greedy plan whatever its cost."""
    plan = make_plan(terms, output, shapes, "greedy")
    if not careful or plan.cost < CAREFUL_PLAN_FROM:
        return plan
    return make_plan(terms, output, shapes, "auto", escalate_from=ESCALATE_FROM)


def _planned(terms: Sequence[str], output: str, shapes: Sequence[tuple[int, ...]],
             careful: bool = True) -> tuple[Any, tuple | None]:
    """The cached plan of ``einsum(terms -> output)`` with the indices of size 1 left out, and
    what :func:`_contract` needs to run it: ``None`` when no index has size 1, else the kept
    shapes of the operands and the output's full shape. ``careful=False``: the greedy plan
    only (what :func:`_plan_of` starts from), never the costly searches."""
    # (cached as a whole: every contraction of a sweep asks, about ten times per plan, and
    # finding the sizes again cost more than a small ring's contraction itself)
    # (with the thresholds _plan_of reads: a benchmark or test that sets them gets plans of them)
    return _planned_for(tuple(terms), output, tuple(map(tuple, shapes)), careful, CAREFUL_PLAN_FROM, ESCALATE_FROM)


@lru_cache(maxsize=4096)
def _planned_for(terms: tuple[str, ...], output: str, shapes: tuple[tuple[int, ...], ...],
                 careful: bool, *thresholds: float) -> tuple[Any, tuple | None]:
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        for c, n in zip(term, shape):
            if sizes.get(c, 1) == 1:  # (a size-1 axis may broadcast against a larger one)
                sizes[c] = int(n)
    for c in output:  # on no operand: a size-1 dangling leg of the core being solved for
        sizes.setdefault(c, 1)
    if all(n != 1 for n in sizes.values()):
        return _plan_of(tuple(terms), output, tuple(tuple(int(n) for n in s) for s in shapes), careful), None
    kept = tuple("".join(c for c in term if sizes[c] != 1) for term in terms)
    # each operand keeps its own axis sizes (a broadcast size-1 axis stays as it is)
    kept_shapes = tuple(tuple(int(n) for c, n in zip(t, shape) if sizes[c] != 1) for t, shape in zip(terms, shapes))
    out = "".join(c for c in output if sizes[c] != 1)
    plan = _plan_of(kept, out, kept_shapes, careful)
    return plan, (kept_shapes, tuple(sizes[c] for c in output))


def _contract(terms: Sequence[str], output: str, operands: Sequence[Any], be: Backend,
              careful: bool = True) -> Any:
    """``einsum(terms -> output)`` through a cached plan, with the indices of size 1 left out.

    An index of size 1 everywhere multiplies by one. A structure search keeps most bonds of
    its fully connected network at rank 1; planned with them, every Gram and right-hand side
    is a contraction of a complete graph, and finding its path costs 10-100 times the ALS
    sweeps that use it (a fully connected network of order 6 at ranks 1-4: 1.5 s to plan
    three sweeps that run in 0.03 s). Without them the plan is that of the sparse graph.
    ``careful=False``: the greedy plan only (see :func:`_planned`)."""
    shapes = [tuple(x.shape) for x in operands]  # (Python ints on every backend: NumPy, CuPy, torch.Size)
    plan, squeezed = _planned(terms, output, shapes, careful)
    if squeezed is None:
        return execute(plan, list(operands), be)
    kept_shapes, out_shape = squeezed
    ops = [x if len(ks) == len(s) else be.reshape(x, ks) for x, s, ks in zip(operands, shapes, kept_shapes)]
    result = execute(plan, ops, be)
    return result if len(plan.output) == len(output) else be.reshape(result, out_shape)


def residual(net: Network, data: FitData) -> float:
    """``||w * (T - y)||^2``: the squared error over the observed entries."""
    xp = data.backend.xp
    return _sse(net.inputs, net.output, [xp.asarray(c) for c in net.cores], data)


class _CoreSolver:
    """One core's ALS update, for a fixed graph and fixed index sizes."""

    def __init__(self, inputs: tuple[str, ...], output: str, layout: CoreLayout, data: FitData):
        self.inputs, self.output, self.layout, self.data = inputs, output, layout, data
        k = layout.core
        self.k = k
        self.term = inputs[k]
        self.env_terms = tuple(t for c, t in enumerate(inputs) if c != k) + (output,)
        # axis order of the Kronecker form: open axes first, then each piece's axes
        self.order = tuple(layout.open_axes) + tuple(a for p in layout.pieces for a in p.axes)
        self.inverse = tuple(np.argsort(self.order))

    def small_grams(self, cores: list[Any]) -> bool:
        """Whether the Kronecker form applies and every piece's Gram is small enough to
        eigendecompose (a core of a fully connected network of order 8 at rank 4 would need
        a 16384 x 16384 one): otherwise CG, which only contracts."""
        if not self.layout.separable:
            return False
        shape = cores[self.k].shape
        return all(int(np.prod([shape[a] for a in p.axes])) <= MAX_GRAM for p in self.layout.pieces)

    # -- pieces of the normal equations ------------------------------------------------
    def rhs(self, cores: list[Any]) -> Any:
        """``E_k^T y``: the other cores contracted with the data."""
        ops = [c for i, c in enumerate(cores) if i != self.k] + [self.data.y]
        return _contract(self.env_terms, self.term, ops, self.data.backend)

    def grams(self, cores: list[Any], memo: dict | None = None) -> list[tuple[Any, Any]]:
        """Eigendecomposition ``(w, Q)`` of every piece's Gram matrix. With ``memo`` (a tree
        network), branch Grams are built from their sub-branches and reused while their
        cores are unchanged."""
        xp = self.data.backend.xp
        out = []
        shape = cores[self.k].shape
        branches = tree_branches(self.inputs, self.output) if memo is not None else None
        for piece in self.layout.pieces:
            p = int(np.prod([shape[a] for a in piece.axes]))
            if branches is not None and len(piece.axes) == 1 and piece.cores:
                bond = self.term[piece.axes[0]]
                root = next(c for c in piece.cores if bond in self.inputs[c])
                g = _branch_gram(branches[(bond, root)], cores, memo, self.data.backend)
            elif piece.cores:
                g = self._piece_gram(piece, cores, p)
            else:
                g = xp.ones((p, p))
            w, q = xp.linalg.eigh(0.5 * (g + g.T))
            out.append((xp.maximum(w, 0.0), q))
        return out

    def _piece_gram(self, piece: Any, cores: list[Any], p: int) -> Any:
        """The ``p x p`` Gram matrix of ``piece``: from its environment matrix ``E`` (the
        piece's cores contracted into its open modes times the attaching bonds) as ``E^T E``
        when that costs fewer FLOPs than the doubled contraction by its greedy path and ``E``
        has at most ``ENV_MAX_ENTRIES`` entries; else by the doubled contraction. On graphs with
        loops the doubled contraction is a hard one: for an order-8 fully connected network of
        6,000 parameters (the camera image as 4^8), 14 cores and 1e10-1e11 FLOPs by the greedy
        path; dynamic programming finds paths of 3e8-1e10 but takes 1-6 s to plan each. A
        sweep's Grams then took 2.0 s (22 s with the planning) by the doubled contraction and
        0.9 s (1.5 s) from ``E`` (``benchmarks/als_sweeps.py``). Where ``E`` fits but the greedy
        doubled path is cheaper, that path runs as it is: searching a better one by dynamic
        programming took 60% of a 30 s profile of a search within 4,000 parameters of that image."""
        be = self.data.backend
        ops = [cores[c] for c in piece.cores]
        first = piece.gram_inputs[:len(piece.cores)]
        attach = piece.gram_output[:len(piece.axes)]
        opens = "".join(ch for ch in self.output if any(ch in t for t in first))
        sizes = {ch: int(n) for t, c in zip(first, ops) for ch, n in zip(t, c.shape)}
        m = math.prod(sizes[ch] for ch in opens)
        careful = True
        if opens and m * p <= ENV_MAX_ENTRIES:
            doubled, _ = _planned(piece.gram_inputs, piece.gram_output, [tuple(c.shape) for c in ops] * 2,
                                  careful=False)
            if 2 * m * p * p < doubled.flops:
                env = be.xp.reshape(_contract(first, opens + attach, ops, be), (m, p))
                return env.T @ env
            # the greedy path already beats E^T E: no costlier search for a better one
            careful = False
        g = _contract(piece.gram_inputs, piece.gram_output, ops * 2, be, careful=careful)
        return be.xp.reshape(g, (p, p))

    def _to_kron(self, x: Any, core_shape: tuple[int, ...]) -> Any:
        xp = self.data.backend.xp
        lay = self.layout
        n_open = int(np.prod([core_shape[a] for a in lay.open_axes]))
        dims = [n_open] + [int(np.prod([core_shape[a] for a in p.axes])) for p in lay.pieces]
        return xp.reshape(xp.transpose(x, self.order), dims)

    def _from_kron(self, x: Any, core_shape: tuple[int, ...]) -> Any:
        xp = self.data.backend.xp
        permuted = tuple(core_shape[a] for a in self.order)
        return xp.transpose(xp.reshape(x, permuted), self.inverse)

    def _rotate(self, x: Any, eigs: list[tuple[Any, Any]], transpose: bool) -> Any:
        xp = self.data.backend.xp
        for axis, (_, q) in enumerate(eigs, start=1):
            m = q.T if transpose else q
            x = xp.moveaxis(xp.tensordot(x, m, axes=([axis], [1])), -1, axis)
        return x

    def _spectrum(self, eigs: list[tuple[Any, Any]]) -> Any:
        xp = self.data.backend.xp
        spec = xp.ones((1,))
        for w, _ in eigs:
            spec = xp.multiply.outer(spec, w).reshape(-1)
        return xp.reshape(spec, (1,) + tuple(int(w.shape[0]) for w, _ in eigs))

    # -- the updates ----------------------------------------------------------------------
    def solve_full(self, cores: list[Any], rhs: Any | None = None, memo: dict | None = None) -> tuple[Any, float]:
        """Exact update with every entry observed; returns the new core and the new SSE.
        ``rhs`` is ``E_k^T y`` when the caller has it already (from a sweep's cached prefix)."""
        xp = self.data.backend.xp
        shape = tuple(cores[self.k].shape)
        eigs = self.grams(cores, memo)
        spec = self._spectrum(eigs)
        rhs = self.rhs(cores) if rhs is None else rhs
        z = self._rotate(self._to_kron(rhs, shape), eigs, transpose=True)
        g = z * _pinv(spec, xp)
        sse = self.data.sq_norm - 2.0 * float(xp.vdot(g, z)) + float(xp.vdot(g * g, spec * xp.ones_like(g)))
        core = self._from_kron(self._rotate(g, eigs, transpose=False), shape)
        if sse < NEAR_EXACT * self.data.sq_norm:
            # the formula cancels to its rounding (about 1e-8 of ||y||^2) near an exact fit, where the
            # criterion compares candidates by log(SSE): measure the residual instead (one contraction)
            residual = self.data.y - self._forward(cores, core)
            sse = float(xp.vdot(residual, residual))
        return core, max(sse, 0.0)

    def _forward(self, cores: list[Any], core: Any) -> Any:
        ops = list(cores)
        ops[self.k] = core
        return _contract(self.inputs, self.output, ops, self.data.backend)

    def _env(self, cores: list[Any], t: Any) -> Any:
        ops = [c for i, c in enumerate(cores) if i != self.k] + [t]
        return _contract(self.env_terms, self.term, ops, self.data.backend)

    def direct_layout(self) -> SimpleNamespace | None:
        """How :meth:`solve_direct` reads the data, or None where it does not apply: a core
        whose open modes are on no other core and whose bonds all join another core, with NumPy
        data and a mask. The data are read as ``(K, R)`` matrices, ``K`` the core's open modes,
        ``R`` the others (transposed at each solve: kept, they would hold two copies of the data
        per core)."""
        cached = self.__dict__.get("_direct", False)
        if cached is not False:
            return cached
        self._direct = None
        data, term, output = self.data, self.term, self.output
        others = "".join(t for c, t in enumerate(self.inputs) if c != self.k)
        opens = [c for c in term if c in output]
        bonds = [c for c in term if c not in output]
        if (data.weights is None or data.backend.name != "numpy" or len(self.inputs) < 2
                or len(set(term)) != len(term) or any(c in others for c in opens)
                or any(c not in others for c in bonds)):
            return None
        rest = [c for c in output if c not in term]
        sizes = dict(zip(output, data.shape))
        self._direct = SimpleNamespace(
            env_out="".join(rest + bonds), core_order=tuple(term.index(c) for c in opens + bonds),
            data_order=tuple(output.index(c) for c in opens + rest),
            k_size=math.prod(sizes[c] for c in opens), r_size=math.prod(sizes[c] for c in rest))
        return self._direct

    def direct_pays(self, cores: list[Any]) -> bool:
        """Whether :meth:`solve_direct` applies and costs about what CG does or less: its
        slices' Grams take ``entries x B^2`` multiply-adds (``B`` the core's bond volume), CG
        about ten products of about ``entries x B`` each and a hundred array calls per update.
        So: at most ``DIRECT_MAX_WORK`` multiply-adds, or ``B`` at most ``DIRECT_MAX_BONDS``;
        and its environment (``R x B``) and Grams (``K x B^2``) within ``DIRECT_MAX_MEMORY`` times
        the data's size (or ``DIRECT_CHUNK``)."""
        bond_volume = math.prod(int(n) for c, n in zip(self.term, cores[self.k].shape) if c not in self.output)
        entries = int(self.data.y.size)
        if bond_volume > DIRECT_MAX_BONDS and entries * bond_volume**2 > DIRECT_MAX_WORK:
            return False
        lay = self.direct_layout()
        return lay is not None and ((lay.r_size + lay.k_size * bond_volume) * bond_volume
                                    <= DIRECT_MAX_MEMORY * max(entries, DIRECT_CHUNK))

    def solve_direct(self, cores: list[Any]) -> tuple[Any, float]:
        """The masked update solved slice by slice: every index of the core's open modes has its
        own least-squares problem over the entries observed in its slice, ``B`` unknowns (the
        core's bond volume) against the other cores' environment. Each slice's ``B x B`` Gram is
        eigendecomposed and the update ``x0 + (G + lam)^+ (b - (G + lam) x0)`` taken on its
        eigenvalues above ``DIRECT_CUTOFF`` of the largest: the solution :meth:`solve_cg` iterates
        toward (same ridge), with the current core's component kept on directions the
        observations do not determine, as CG's warm start keeps it at the tolerance the fits
        run it at. A few array calls for the whole core, where CG made about a hundred: a
        6x7x6x8 ring completion spent 95% of its time in CG (profiled). The Grams are built in
        chunks of slices whose weighted environments hold at most the data's size (or
        ``DIRECT_CHUNK``) entries. The cutoff and ridge are those of the whole core, as CG's:
        a slice whose Gram is tiny beside the others' (its observations only where the
        environment is small) is damped toward the current core, as under CG, not solved
        exactly (a per-slice cutoff would solve it; how that changes sparse completions was not
        measured)."""
        lay = self.direct_layout()
        data = self.data
        xp = data.backend.xp
        shape = tuple(cores[self.k].shape)
        env = _contract(self.env_terms[:-1], lay.env_out, [c for i, c in enumerate(cores) if i != self.k],
                        data.backend)
        env = xp.reshape(env, (lay.r_size, -1))  # (R, B)
        bonds = env.shape[1]
        mask = xp.reshape(xp.transpose(data.weights, lay.data_order), (lay.k_size, lay.r_size))
        y = xp.reshape(xp.transpose(data.y, lay.data_order), (lay.k_size, lay.r_size))  # (0 where unobserved)
        x0 = xp.reshape(xp.transpose(cores[self.k], lay.core_order), (lay.k_size, bonds))
        step = max(1, max(int(y.size), DIRECT_CHUNK) // (lay.r_size * bonds))
        if step >= lay.k_size:
            gram = xp.matmul(xp.swapaxes(mask[:, :, None] * env, 1, 2), env)  # (K, B, B): E^T W_k E
        else:
            gram = xp.empty((lay.k_size, bonds, bonds))
            for s in range(0, lay.k_size, step):
                gram[s:s + step] = xp.matmul(xp.swapaxes(mask[s:s + step, :, None] * env, 1, 2), env)
        w, q = xp.linalg.eigh(gram)
        top = max(float(w.max()), 1e-300)
        lam = RIDGE * top
        r = y @ env - xp.matmul(gram, x0[:, :, None])[:, :, 0] - lam * x0  # E^T y_k - (G_k + lam) x0
        z = xp.matmul(xp.swapaxes(q, 1, 2), r[:, :, None])[:, :, 0]
        z = xp.where(w > DIRECT_CUTOFF * top, z / (xp.maximum(w, 0.0) + lam), 0.0)
        x = x0 + xp.matmul(q, z[:, :, None])[:, :, 0]
        res = (x @ env.T - y) * mask
        permuted = tuple(shape[i] for i in lay.core_order)
        core = xp.transpose(xp.reshape(x, permuted), tuple(np.argsort(lay.core_order)))
        return core, float(xp.vdot(res, res))

    def solve_cg(self, cores: list[Any], iters: int, tol: float) -> tuple[Any, float]:
        """Preconditioned CG on the masked normal equations, warm-started at the current core."""
        xp = self.data.backend.xp
        w = self.data.weights
        shape = tuple(cores[self.k].shape)
        precond: Callable[[Any], Any]
        if self.small_grams(cores):
            eigs = self.grams(cores)
            spec = self._spectrum(eigs) * self.data.observed_fraction
            lam = RIDGE * max(float(xp.max(spec)), 1e-300)
            inverse = 1.0 / (spec + lam)

            def precond(r: Any) -> Any:
                z = self._rotate(self._to_kron(r, shape), eigs, transpose=True) * inverse
                return self._from_kron(self._rotate(z, eigs, transpose=False), shape)
        else:
            lam = 0.0

            def precond(r: Any) -> Any:
                return r

        def mask(t: Any) -> Any:
            return t if w is None else t * w

        x = cores[self.k]
        ex = self._forward(cores, x)  # E x, kept up to date with x
        b = self.rhs(cores)
        r = b - self._env(cores, mask(ex)) - lam * x
        b_norm = math.sqrt(float(xp.vdot(b, b))) or 1.0
        z = precond(r)
        p = z
        rz = float(xp.vdot(r, z))
        for _ in range(iters):
            if math.sqrt(float(xp.vdot(r, r))) <= tol * b_norm or rz <= 0:
                break
            ep = self._forward(cores, p)
            ap = self._env(cores, mask(ep)) + lam * p
            pap = float(xp.vdot(p, ap))
            if not pap > 0:
                break
            alpha = rz / pap
            x = x + alpha * p
            ex = ex + alpha * ep
            r = r - alpha * ap
            z = precond(r)
            rz_new = float(xp.vdot(r, z))
            p = z + (rz_new / rz) * p
            rz = rz_new
        res = mask(ex - self.data.y)
        return x, float(xp.vdot(res, res))


def _branch_gram(branch: Branch, cores: list[Any], memo: dict, be: Backend) -> Any:
    """The Gram matrix of a tree branch from its root core and its children's Grams, memoised
    on the identity of the branch's cores (an updated core is a new array)."""
    key = (branch.bond, branch.root, tuple(id(cores[c]) for c in branch.cores))
    hit = memo.get(key)
    if hit is not None:
        return hit[0]
    kids = [_branch_gram(kid, cores, memo, be) for kid in branch.children]
    root = cores[branch.root]
    g = _contract(branch.gram_inputs, branch.gram_output, [root, root, *kids], be)
    memo[key] = (g, [cores[c] for c in branch.cores])  # keep the cores alive: their ids stay unique
    return g


def _sweep_order(inputs: tuple[str, ...], output: str) -> list[int]:
    """Cores carrying open modes first (in spec order), then the others: absorbing the data's
    modes early keeps the cached prefix of a sweep small (a Tucker core comes last)."""
    return sorted(range(len(inputs)), key=lambda k: (not any(c in output for c in inputs[k]), k))


def _exact_sweep(inputs, output, order, cores, solvers, data: FitData, frozen, sse: float,
                 prefixed: bool = True) -> float:
    """One full-data sweep in ``order``, updating ``cores`` in place. With ``prefixed``, the
    data contracted with the cores already visited is kept and grown one core at a time, so
    each core's right-hand side ``E_k^T y`` contracts only that prefix with the cores not
    visited yet (a chain costs about two passes over the data per sweep instead of one per
    core); without, each right-hand side contracts the data with every other core
    (:func:`_prefix_pays` chooses)."""
    be = data.backend
    prefix, prefix_term = data.y, output
    memo: dict = {}
    for pos, k in enumerate(order):
        rest = [c for c in order[pos + 1:]]
        if k not in frozen:
            rhs = None
            if prefixed:
                rhs = _contract((prefix_term,) + tuple(inputs[c] for c in rest), inputs[k],
                                [prefix] + [cores[c] for c in rest], be)
            cores[k], sse = solvers[k].solve_full(cores, rhs, memo)
        if prefixed and rest:
            term = _prefix_term(prefix_term, inputs[k], [inputs[c] for c in rest])
            prefix = _contract((prefix_term, inputs[k]), term, [prefix, cores[k]], be)
            prefix_term = term
    return sse


def _prefix_term(prefix_term: str, core_term: str, rest: Sequence[str]) -> str:
    """The indices of the prefix once ``core_term`` is absorbed: those the cores in ``rest``
    still carry."""
    needed = set("".join(rest))
    return "".join(dict.fromkeys(c for c in prefix_term + core_term if c in needed))


#: the prefix of a sweep (:func:`_exact_sweep`) is kept while it stays within this many times
#: the data's entries; a larger one is the sign of a graph with loops (see :func:`_prefix_pays`)
PREFIX_MAX_GROWTH = 16


def _prefix_pays(inputs: tuple[str, ...], output: str, order: Sequence[int],
                 core_shapes: Sequence[tuple[int, ...]], data_shape: tuple[int, ...]) -> bool:
    """Whether a sweep's right-hand sides go through the growing prefix of
    :func:`_exact_sweep`: while no prefix exceeds ``PREFIX_MAX_GROWTH`` times the data.

    The prefix carries every bond cut between the visited and the unvisited cores. On a chain
    or a tree that is one or a few bonds, and neither route wins everywhere: sweeps from the
    data took 0.5-0.7x the time of sweeps by the prefix on TT networks, 2x on Tucker and CP
    ones (``benchmarks/als_sweeps.py``). On a fully connected network it can carry many: the
    camera image as 4^8 within 2,000 parameters has prefixes of 360x the data, and its sweep
    takes 0.62 s by the prefix against 0.03 s from the data. The rule is a guard against that
    case, not a cost model: on random fully connected networks of orders 5-7 with prefixes
    of 0.7-144x the data, the faster route was the other one in half the cases (0.54-1.31x).
    Counting entries costs nothing; comparing the two routes' planned costs would plan every
    contraction twice, and the plans' costs did not predict the faster route either."""
    sizes: dict[str, int] = {}
    for term, shape in zip(inputs, core_shapes):
        for c, n in zip(term, shape):
            sizes[c] = max(sizes.get(c, 1), int(n))
    sizes.update(zip(output, (int(n) for n in data_shape)))
    limit = PREFIX_MAX_GROWTH * math.prod(int(n) for n in data_shape)
    prefix_term = output
    for pos, k in enumerate(order[:-1]):
        prefix_term = _prefix_term(prefix_term, inputs[k], [inputs[c] for c in order[pos + 1:]])
        if math.prod(sizes[c] for c in prefix_term) > limit:
            return False
    return True


def _sse(inputs: tuple[str, ...], output: str, cores: list[Any], data: FitData) -> float:
    xp = data.backend.xp
    r = _contract(inputs, output, cores, data.backend)
    if len(inputs) == 1:  # the result may be the core itself: never subtract in place into it
        r = r.copy()
    r -= data.y
    if data.weights is not None:
        r *= data.weights
    return float(xp.vdot(r, r))


def _pinv(spectrum: Any, xp: Any) -> Any:
    """Inverse of the Gram spectrum with the null directions (gauge, unused indices) set to 0:
    the minimum-norm least-squares solution, with no bias on the directions that matter."""
    cut = PINV_CUTOFF * max(float(xp.max(spectrum)), 1e-300)
    return xp.where(spectrum > cut, 1.0 / xp.maximum(spectrum, cut), 0.0)


def _balance(cores: list[Any], xp: Any) -> list[Any]:
    """Rescale the cores to equal Frobenius norms (their product, hence the network, unchanged)."""
    norms = [float(xp.linalg.norm(c)) for c in cores]
    if any(n == 0 or not math.isfinite(n) for n in norms) or len(cores) < 2:
        return cores
    geo = math.exp(sum(math.log(n) for n in norms) / len(norms))
    return [c * (geo / n) for c, n in zip(cores, norms)]


#: a sweep whose squared error exceeds the previous one's by more than this share of the data's
#: squared norm is a rise (smaller ones are the rounding of fits near exact)
RISE_FLOOR = 1e-8


def _two_core_bonds(inputs: Sequence[str], output: str) -> list[tuple[int, int, int, int]]:
    """``(core a, its axis, core b, its axis)`` of every bond that joins exactly two cores (not a
    hyperedge such as CP's shared rank)."""
    out = []
    for c in dict.fromkeys(ch for t in inputs for ch in t):
        holders = [k for k, t in enumerate(inputs) if c in t]
        if c not in output and len(holders) == 2 and all(inputs[k].count(c) == 1 for k in holders):
            a, b = holders
            out.append((a, inputs[a].index(c), b, inputs[b].index(c)))
    return out


def _split_bonds(cores: list[Any], bonds: Sequence[tuple[int, int, int, int]], xp: Any) -> list[Any]:
    """The same network with every two-core bond in its symmetric gauge: the two cores ``A``, ``B``
    it joins become ``Q_A P sqrt(S)`` and ``Q_B V sqrt(S)`` from ``A = Q_A R_A``, ``B = Q_B R_B``
    (bond last) and ``R_A R_B^T = P S V^T``, so their product over the bond is unchanged and the
    bond's weight is shared equally, each side's Gram ``S``. ALS solves each core in the gauge its
    neighbours leave, which drifts: after many sweeps a core's Gram can span 13 orders of magnitude
    (``1.2e11`` to ``1.2e-2`` on the ring of ``api._polish``), and the pseudo-inverse's cutoff then
    drops a direction the fit needs. Bonds whose cores are too small to factor (fewer rows than the
    rank) are left as they are."""
    cores = list(cores)
    for a, ia, b, ib in bonds:
        r = cores[a].shape[ia]
        ma, mb = xp.moveaxis(cores[a], ia, -1), xp.moveaxis(cores[b], ib, -1)
        left, right = xp.reshape(ma, (-1, r)), xp.reshape(mb, (-1, r))
        if left.shape[0] < r or right.shape[0] < r:
            continue
        qa, ra = xp.linalg.qr(left)
        qb, rb = xp.linalg.qr(right)
        p, s, vt = xp.linalg.svd(ra @ rb.T)
        if not (math.isfinite(float(s[0])) and float(s[0]) > 0):
            continue
        root = xp.sqrt(s)
        cores[a] = xp.moveaxis(xp.reshape(qa @ (p * root), ma.shape), -1, ia)
        cores[b] = xp.moveaxis(xp.reshape(qb @ (vt.T * root), mb.shape), -1, ib)
    return cores


def als(
    net: Network,
    data: FitData,
    *,
    sweeps: int = 30,
    tol: float = 1e-4,
    cg_iters: int = 25,
    cg_tol: float = 1e-6,
    frozen: Sequence[int] = (),
    floor: float = 1e-12,
    line_search: bool = True,
    should_stop: Callable[[], bool] | None = None,
    on_sweep: Callable[[int, float], Any] | None = None,
) -> tuple[Network, float]:
    """Refit every core of ``net`` to ``data`` by alternating least squares.

    Sweeps stop when a sweep improves the squared error by less than ``tol`` times itself
    (or than ``floor`` times the data's squared norm), after ``sweeps`` sweeps, or when
    ``should_stop()`` is true. ``on_sweep(sweep, sse)`` is called after every sweep (progress
    of long refits). Returns the
    refitted network (NumPy/CuPy, float64) and its squared error over the observed entries.
    Cores listed in ``frozen`` are left as they are.
    """
    be = data.backend
    xp = be.xp
    if 0 in net.ranks or net.num_params == 0:
        return net, data.sq_norm
    cores = [xp.asarray(c, dtype=xp.float64) for c in _host_cores(net)]
    layouts = pieces_without(net.inputs, net.output)
    solvers = [_CoreSolver(net.inputs, net.output, lay, data) for lay in layouts]
    sse = math.inf
    least = max(floor * data.sq_norm, 1e-300)
    order = _sweep_order(net.inputs, net.output)
    exact = data.weights is None and all(sv.small_grams(cores) for sv in solvers)
    prefixed = exact and _prefix_pays(net.inputs, net.output, order, [tuple(c.shape) for c in cores], data.shape)
    bonds = _two_core_bonds(net.inputs, net.output) if not frozen else []
    rise = max(RISE_FLOOR * data.sq_norm, 1e-300)

    def one_sweep(start: list[Any], sse: float, sweep: int) -> tuple[list[Any], float]:
        cores = list(start)
        if exact:
            sse = _exact_sweep(net.inputs, net.output, order, cores, solvers, data, frozen, sse, prefixed)
        else:
            for k in order:
                if k not in frozen:
                    solver = solvers[k]
                    if solver.direct_pays(cores):
                        cores[k], sse = solver.solve_direct(cores)
                    else:
                        cores[k], sse = solver.solve_cg(cores, cg_iters, cg_tol)
        if not frozen:
            cores = _balance(cores, xp)
            if line_search and sweep > 2:
                # extrapolate along the sweep's change (Bro's ALS line search): it carries the fit
                # through the slow valleys ("swamps") where plain ALS crawls, as CP's often are
                step = sweep ** (1.0 / 3.0)
                trial = [a + step * (b - a) for a, b in zip(start, cores)]
                trial_sse = _sse(net.inputs, net.output, trial, data)
                if trial_sse < sse:
                    cores, sse = trial, trial_sse
        return cores, sse

    for sweep in range(1, max(int(sweeps), 1) + 1):
        prev = sse
        start = cores
        cores, sse = one_sweep(start, sse, sweep)
        if bonds and sse > prev + rise:
            # a least-squares sweep raised the error: a Gram's pseudo-inverse dropped a direction
            # the fit uses, in a gauge that made it look like rounding. Sweep again from the same
            # network in the bonds' symmetric gauge (:func:`_split_bonds`), where it does not.
            start = _balance(_split_bonds(start, bonds, xp), xp)
            cores, sse = one_sweep(start, prev, sweep)
        if on_sweep is not None:
            on_sweep(sweep, float(sse))
        if prev - sse < tol * max(sse, least) or (should_stop is not None and should_stop()):
            break
    return Network(net.spec, cores=cores, optimize=net.optimize), float(sse)


def _host_cores(net: Network) -> list[Any]:
    """The network's cores as arrays of the solver's module (NumPy unless they are CuPy)."""
    be = net.backend_impl
    if be.name in ("numpy", "cupy"):
        return net.cores
    return [np.asarray(be.to_numpy(c), dtype=np.float64) for c in net.cores]
