"""Structure search: let the data choose the network's topology, not only its ranks.

:func:`search` fits a **fully connected** tensor network (FCTN: one core per mode, a bond
between every pair of cores) with the same engine and criterion as :func:`tnmars.fit`:
every bond starts at rank 1 and the greedy search adds and removes rank indices while the
MAP objective improves. A bond left at rank 1 carries nothing (its two cores multiply as an
outer product): the **edge vanishes**. What survives is the structure the data ask for (a
chain, a ring, a star, a tree, or something in between), reported by
:class:`StructureResult` and drawn by :func:`tnmars.plots.plot_topology`.

Which mode sits on which core does not matter here: every pair of cores is joined, so all
assignments of modes to cores are the same graph (the permutation search of TNLS is only
needed for a fixed topology such as a ring); a discovered chain or ring reports its own
mode order.

>>> import numpy as np, tnmars
>>> ring = tnmars.Network("aAD,AbB,BcC,CdD->abcd", shape=(6, 7, 6, 7), ranks=2, seed=0)
>>> found = tnmars.search(ring.to_tensor(), max_rank=3, seed=0, progress=False)
>>> found.edges
{(0, 1): 2, (0, 3): 2, (1, 2): 2, (2, 3): 2}
>>> found.topology
'ring 0-1-2-3'
"""
from __future__ import annotations

import functools
import itertools
import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np

from .._checks import positive_int
from ..network import Network, compression_text
from .api import fit, internal_fits
from .criterion import MSE_FLOOR
from .data import prepare
from .graph import feasible_ranks
from .moves import shrink
from .progress import labelled
from .result import FitResult, _compression_repr
from .solvers import SPREAD_RESOLVED

__all__ = ["search", "StructureResult", "fctn_spec", "topology_name"]
#: the rank search's settings here: loops make ALS slow to settle, so refits run longer than
#: :func:`tnmars.fit`'s, and exchanges rewire a loop closed through the wrong edge
SELECTION = {"sweeps": 6, "full_sweeps": 100, "exchanges": True}
#: a search without a budget that ends at this relative error or above warns: the network
#: explains at most three quarters of the data's energy, which is either mostly-noise data or a
#: walk stopped far from the truth (dense random graphs: docs/guides/structure.md, Limits); the
#: residual cannot tell them apart (its unfolding spectra look like noise in both)
POOR_FIT_ERROR = 0.5


def fctn_spec(order: int) -> tuple[str, dict[str, tuple[int, int]]]:
    """The fully connected spec of ``order`` cores (core ``k`` carries open mode ``k``) and
    the pair of cores each bond joins.

    >>> fctn_spec(3)
    ('aAB,bAC,cBC->abc', {'A': (0, 1), 'B': (0, 2), 'C': (1, 2)})
    """
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 2:
        raise ValueError(f"a fully connected network needs at least 2 modes; got {order!r}")
    opens = "abcdefghijklmnopqrstuvwxyz"[:order] if order <= 26 else ""
    pairs = list(itertools.combinations(range(order), 2))
    pool = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in opens]
    # specs stay in ASCII letters (52): order 9 uses 45; beyond, every core has order 10 or more
    # and each search step refits 90 or more neighbours
    if not opens or len(pairs) > len(pool):
        raise ValueError(f"a fully connected network of order {order} needs {order + len(pairs)} index letters "
                         f"({len(pairs)} bonds); its spec uses the 52 ASCII letters: orders up to 9 are supported")
    names = dict(zip(pool, pairs))
    terms = [opens[k] + "".join(b for b, (i, j) in names.items() if k in (i, j)) for k in range(order)]
    return ",".join(terms) + "->" + opens, names


@dataclass
class StructureResult:
    """The discovered structure.

    Attributes
    ----------
    network: the pruned network: vanished edges (rank 1) removed from the spec, the surviving
        bonds at their selected ranks (data units, the data's backend and dtype).
    edges: ``{(i, j): rank}`` for every surviving edge (cores ``i < j``; core ``k`` carries
        mode ``k``).
    topology: the graph's name: ``"chain 0-1-2-3"`` (a tensor train in that mode order),
        ``"ring ..."``, ``"star around k"``, ``"tree"``, ``"graph with loops"``, ``"fully
        connected"``, ``"no edges (rank 1)"``; disconnected parts are counted.
    fit: the :class:`~tnmars.FitResult` of the selection on the fully connected network
        (its bonds include the vanished ones at rank 1; history, selection path, settings).
    order: number of modes.
    """

    network: Network
    edges: dict[tuple[int, int], int]
    topology: str
    fit: FitResult
    order: int
    bond_pairs: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def spec(self) -> str:
        return self.network.spec

    @property
    def relative_error(self) -> float:
        return self.fit.relative_error

    @property
    def num_params(self) -> int:
        return self.network.num_params

    @property
    def compression(self) -> float:
        return self.network.compression

    @property
    def seconds(self) -> float:
        return self.fit.seconds

    @property
    def evaluations(self) -> int:
        return self.fit.evaluations

    def summary(self) -> str:
        edges = ", ".join(f"{i}-{j}:{r}" for (i, j), r in self.edges.items()) or "none"
        stopped = "  INTERRUPTED: the best structure so far, not a finished search" if self.fit.interrupted else ""
        return "\n".join([
            f"tnmars.search: {self.topology}  ({self.fit.evaluations} refits, {self.fit.seconds:.1f} s){stopped}",
            f"  edges (rank)   {edges}",
            f"  spec           {self.spec}",
            f"  relative error {self.relative_error:.4g}; {self.num_params:,} parameters for "
            f"{self.network.dense_size:,} entries: {compression_text(self.network)}",
            *(f"  WARNING   {message}" for message in self.fit.diagnostics),
        ])

    def plot(self, **kwargs: Any):
        """Draw the discovered graph (:func:`tnmars.plots.plot_topology`)."""
        from ..plots import plot_topology

        return plot_topology(self, **kwargs)

    def __repr__(self) -> str:
        return (f"StructureResult(topology={self.topology!r}, edges={self.edges}, "
                f"relative_error={self.relative_error:.4g}, compression={_compression_repr(self.network)}"
                + (", interrupted=True)" if self.fit.interrupted else ")"))


def search(
    data: Any,
    *,
    max_rank: int | None = None,
    observed: Any = None,
    budget: int | str | None = None,
    prior_strength: float | None = None,
    start: StructureResult | Network | None = None,
    starts: int | None = None,
    seed: int | np.random.Generator | None = 0,
    backend: str | None = None,
    device: str | None = None,
    dtype: Any = None,
    progress: bool | None = None,
    callback: Callable[[int, dict], Any] | None = None,
) -> StructureResult:
    """Find the network structure of ``data``: which pairs of modes are joined, at what ranks.

    Parameters
    ----------
    data: the tensor (NumPy, torch or CuPy), order 2 to 9.
    max_rank: the largest rank of any edge; every edge is also capped at what it can use
        (:func:`~tnmars.fitting.graph.feasible_ranks`). The fully connected network at these
        ranks is never built: the search grows from rank 1. Default: ``max(data.shape)`` (at
        least the largest edge of a ``start``), then, where the network found has an edge at
        that cap, the walks again with every edge allowed up to :func:`largest_unfolding_rank`
        (64 for a 4^6 tensor, 16 for 2^8), the lowest MAP objective of all the walks winning:
        never worse than the small cap alone, and a second search only where that cap binds
        (``benchmarks/results/search_default_cap.md``). A given ``max_rank`` is the one cap;
        where edges of the result stand at it, the search warns (below).
    observed: boolean mask of observed entries (tensor completion); default all (for a NumPy
        masked array, its unmasked entries; both given: entries observed in both).
    budget: at most this many parameters (``int``) or at least this compression (``"20x"``).
    prior_strength: ``c`` of the Occam criterion (1: BIC; larger prunes more). Default: 1,
        or 0 within a budget (the best fit the budget allows), as in :func:`tnmars.fit`.
    start: a warm start: a previous :class:`StructureResult` of the same data shape (or its
        ``fit.network``, the fully connected network with vanished edges at rank 1), or any
        network whose every core holds one mode and whose every bond joins two cores (a fit's
        TT or ring: the edges it lacks at rank 1). The
        search walks on from its edges and cores instead of from rank 1: :func:`tnmars.sweep`
        starts each budget from the one below, so a larger budget never ends worse than a
        smaller one and never regrows the smaller one's network. A start above ``budget`` is
        first brought within it; one above ``max_rank`` raises ``ValueError``.
    starts: independent searches from different random starts (default 2; 1 from a
        ``start``, which is not random); the one with the lowest MAP objective wins. Least
        squares on networks with loops has poor local minima (on random topologies of order
        4, ALS and Levenberg-Marquardt from random values missed the exact fit at the true
        structure 5 times out of 5); the greedy walk from rank 1 avoids most of them, a
        second walk most of the rest. Without a ``budget``, a winner with loops then walks
        on from its loop edges cut to rank 1, one at a time (:func:`_loops_broken`): a walk
        can close a loop on its way to a tree and never open it again.
    seed, backend, device, dtype, progress, callback: as in :func:`tnmars.fit`.

    Returns
    -------
    StructureResult. Without a ``budget``, a result comes with a ``RuntimeWarning``, also kept
    in ``result.fit.diagnostics``, where

    - edges stand at the ``max_rank`` you gave (it names them): a larger cap may give another
      structure, not only larger ranks (a TT 5x6x5x6 at (2, 3, 2) with ``max_rank=2`` comes
      back fully connected, twice the parameters of the chain ``max_rank=3`` finds). A tree
      that fits exactly does not warn: no cap changes its edges;
    - or it leaves a relative error of :data:`POOR_FIT_ERROR` (0.5) or more against the
      data's deviations from their mean (of the observed entries, for a completion: an offset
      does not hide a poor fit): the data are mostly noise, or the walk stopped far from a
      dense truth, and the search cannot tell which.

    Warnings of the walks' fits are the winning walk's only (a losing walk's described a
    network that is not returned), with the fully connected network's bond letters named as
    edges (``edges 0-3, 1-2``); what ``callback`` itself warns is shown as it said it, from
    every walk. Ctrl-C (or a callback's stop) in any walk ends the search with
    ``result.fit.interrupted`` set.

    Cost: a core of the fully connected network has order ``d`` (its mode and ``d - 1``
    bonds), so a core at ranks ``r`` holds ``n r^(d-1)`` numbers; each step of the search
    refits ``d(d-1)`` neighbours (one index more or fewer on every edge). Starting from rank
    1, most edges stay at 1 and the cores stay small; the solvers plan their contractions
    without the rank-1 edges (a sparse graph, not a complete one), and the exact core solves
    switch to CG when a core's environment exceeds 1024 per side (:mod:`tnmars.fitting.solvers`).
    """
    shape = tuple(int(n) for n in getattr(data, "shape", np.shape(data)))
    if 0 in shape:  # (as fit says it; the caps below divided by the empty mode: ZeroDivisionError)
        raise ValueError(f"data is empty (shape {shape})")
    order = len(shape)
    spec, pairs = fctn_spec(order)
    opens = spec.split("->")[1]
    proposal = "greedy" if start is None else _start_network(start, spec, shape)
    if max_rank is None:  # the small cap first (at least the start's largest edge), wider if it binds
        largest_start = max(proposal.bonds.values(), default=1) if isinstance(proposal, Network) else 1
        caps = _max_rank(max(max(shape), largest_start), spec, opens, shape)
        wider = _max_rank(max(largest_unfolding_rank(shape), largest_start), spec, opens, shape)
    else:
        caps = wider = _max_rank(max_rank, spec, opens, shape)
        if isinstance(proposal, Network):
            _check_start_within(proposal, caps, pairs, max_rank)
    if starts is None:  # a warm start is not random: one walk
        starts = 2 if start is None else 1
    starts = positive_int(starts, "starts")
    rng = np.random.default_rng(seed)
    run_seeds = [int(rng.integers(2**31 - 1)) for _ in range(starts)]
    walk = functools.partial(_walks, data, spec, opens, shape, observed=observed,
                             prior_strength=prior_strength, proposal=proposal, budget=budget, backend=backend,
                             device=device, dtype=dtype, progress=progress, callback=callback)
    walked = walk(run_seeds, caps, "tnmars.search")
    runs = [run for run, _ in walked]
    best = min(runs, key=lambda r: r.objective)
    tried = [max(caps.values())]
    if wider != caps and not _stopped(runs) and best.num_params and _at_cap(best, caps, wider):
        walked += walk(run_seeds, wider, f"tnmars.search, edges up to {max(wider.values())}")
        runs = [run for run, _ in walked]
        tried.append(max(wider.values()))
        if min(runs, key=lambda r: r.objective) is not best:
            best, caps = min(runs, key=lambda r: r.objective), wider
    if budget is None and not _stopped(runs) and best.num_params:
        walked += _loops_broken(best, functools.partial(walk, run_seeds[:1]), caps, pairs, order)
        runs = [run for run, _ in walked]
        best = min(runs, key=lambda r: r.objective)
    res = best
    # Ctrl-C (or a callback's stop) in any walk stops the search: the result is not final, even
    # where an earlier, finished walk won (a sweep stops at it)
    res.interrupted = _stopped(runs)
    res.settings["starts"] = [{"seed": r.settings["seed"], "max_rank": r.settings["search_max_rank"],
                               "objective": r.objective, "ranks": r.ranks, "evaluations": r.evaluations,
                               "seconds": r.seconds} for r in runs]
    res.evaluations = sum(r.evaluations for r in runs)
    res.seconds = sum(r.seconds for r in runs)
    ranks = res.ranks_by_bond
    edges = {pairs[b]: r for b, r in ranks.items() if r > 1}
    edges = dict(sorted(edges.items()))
    res.settings["search"] = {"order": order, "max_rank": max(caps.values()), "max_ranks_tried": tried}
    name = "zero network (all-zero data)" if 0 in res.ranks else topology_name(order, edges)
    result = StructureResult(network=_without_vanished(res.network), edges=edges, topology=name, fit=res,
                             order=order, bond_pairs=pairs)
    # only the winner's warnings: a losing walk's (the observations' limit on a 2^7 TT at error
    # 2e-4) described a network that is not returned, beside an exact result without diagnostics
    res.diagnostics = [_named_by_edges(message, pairs) for message in res.diagnostics]
    for heard in next(caught for run, caught in walked if run is res):
        warnings.warn(_named_by_edges(str(heard.message), pairs), heard.category, stacklevel=2)
    held = _held_by_cap(res, caps, _max_rank(max_rank + 1, spec, opens, shape)) if max_rank is not None else []
    _judge(result, budget, held, pairs, max_rank, lambda: _error_against_spread(result, data, observed))
    return result


def _walks(data: Any, spec: str, opens: str, shape: tuple[int, ...], seeds: list[int], caps: dict[str, int],
           label: str, **options: Any) -> list[tuple[FitResult, list[warnings.WarningMessage]]]:
    """One greedy walk per seed on the fully connected network with every edge capped at ``caps``
    (stopping early on Ctrl-C or all-zero data), each with the warnings its fit gave: recorded,
    not shown, for :func:`search` shows only the winner's."""
    dims = {**dict(zip(opens, shape)), **caps}
    # the caller's callback speaks for itself: what it warns is shown as it was said, from every
    # walk (recorded apart from the fits' own warnings, which only the winner's reach the caller)
    own = options.get("callback")
    said: list[warnings.WarningMessage] = []
    if callable(own):
        def callback(step: int, info: dict) -> Any:
            with warnings.catch_warnings(record=True) as heard:
                warnings.simplefilter("always")
                try:
                    return own(step, info)
                finally:
                    said.extend(heard)
        options = {**options, "callback": callback}
    # the template only carries the graph and the maximal sizes: cores of zero strides, no memory
    template = Network(spec, cores=[np.broadcast_to(np.zeros(()), tuple(dims[c] for c in term))
                                    for term in spec.split("->")[0].split(",")])
    runs: list[tuple[FitResult, list[warnings.WarningMessage]]] = []
    for i, run_seed in enumerate(seeds):
        with labelled(f"{label}, start {i + 1}/{len(seeds)}"), internal_fits(), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # (all of them: shown again through the caller's filters)
            run = fit(data, template, prior="bic", seed=run_seed, **{"selection": SELECTION, **options})
        run.settings["search_max_rank"] = max(caps.values())
        runs.append((run, caught))
        for heard in said:  # (outside the record: to the caller's filters, at the callback's own line)
            warnings.warn_explicit(heard.message, heard.category, heard.filename, heard.lineno)
        said.clear()
        if run.interrupted or run.num_params == 0:  # zero data: another start gives the same zero
            break
    return runs


#: rounds of :func:`_loops_broken` (each breaks one loop of the best network so far)
LOOP_BREAKS = 3
#: cuts tried per round of :func:`_loops_broken` (its edges on loops of the smallest ranks): each
#: is a walk, which a network whose loops are its truth's pays for nothing. On the ten chains of
#: an outside probe's family (seeds 101-105, modes in order and shuffled) one cut found 8, two
#: 9, three 9
LOOP_CUTS = 2


def _loops_broken(best: FitResult, walk: Callable[..., list], caps: dict[str, int],
                  pairs: dict[str, tuple[int, int]],
                  order: int) -> list[tuple[FitResult, list[warnings.WarningMessage]]]:
    """Walks from ``best``'s network with one edge of a loop cut to rank 1 (truncated: the
    other edges keep their cores) and held there, the other edges free to grow; the first that
    the criterion prefers replaces it, and its loops are tried in turn (up to
    :data:`LOOP_BREAKS` rounds of at most :data:`LOOP_CUTS` cuts). Each of the walks from
    rank 1 adds one index at a time, so it can close a loop on the way to a tree and never
    open it again: an outside probe's chain
    0-2-1-3 at ranks (3, 4, 2), 1% noise, came back as a loopy graph of 180 parameters in 3 of
    3 seeds with its modes shuffled, where the chain has 150 at the same error; cutting its
    rank-2 edge 0-1 walks to the chain, lower by 63 nats. Edges on a loop are tried from the
    smallest rank (the cheapest cut), each walk with the seed of the first start and without
    the final random restarts of a network with loops (``loop_restarts``: a cut is for ending
    with fewer loops; with them the cuts took the order-4 searches of a network with loops to
    2.3-2.8x their refits). Returns every walk run, with its warnings."""
    walked: list[tuple[FitResult, list[warnings.WarningMessage]]] = []
    current = best
    for _ in range(LOOP_BREAKS):
        bonds = current.network.bonds
        edges = {pairs[b]: r for b, r in bonds.items() if r > 1}
        on_loops = sorted((r, b) for b, r in bonds.items() if r > 1 and _on_a_loop(order, edges, pairs[b]))
        improved = False
        for _, bond in on_loops[:LOOP_CUTS]:
            start = current.network
            while start.bonds[bond] > 1:
                start = shrink(start, bond)
            tried = walk({**caps, bond: 1}, f"tnmars.search, a loop cut at edge {'-'.join(map(str, pairs[bond]))}",
                         proposal=start, selection={**SELECTION, "loop_restarts": False})
            walked += tried
            run = tried[0][0]
            if run.interrupted:
                return walked
            if run.objective < current.objective:
                current, improved = run, True
                break
        if not improved:
            break
    return walked


def _on_a_loop(order: int, edges: dict[tuple[int, int], int], edge: tuple[int, int]) -> bool:
    """Whether ``edge`` lies on a cycle of the graph: its ends stay joined without it."""
    adj: dict[int, set[int]] = {k: set() for k in range(order)}
    for i, j in edges:
        if (i, j) != edge:
            adj[i].add(j)
            adj[j].add(i)
    seen, todo = {edge[0]}, [edge[0]]
    while todo:
        for k in adj[todo.pop()] - seen:
            seen.add(k)
            todo.append(k)
    return edge[1] in seen


def _stopped(runs: Sequence[FitResult]) -> bool:
    return any(r.interrupted for r in runs)


def _at_cap(res: FitResult, caps: dict[str, int], wider: dict[str, int]) -> bool:
    """Whether some edge of ``res`` stands at its cap where the wider caps would let it grow."""
    return bool(_held_by_cap(res, caps, wider))


def _held_by_cap(res: FitResult, caps: dict[str, int], wider: dict[str, int]) -> list[str]:
    """The bonds of ``res`` standing at their cap where the wider caps would let them grow."""
    return [b for b, r in res.ranks_by_bond.items() if r >= caps[b] and wider[b] > caps[b]]


def _named_by_edges(message: str, pairs: dict[str, tuple[int, int]]) -> str:
    """``message`` with the fully connected network's bond letters (``bonds 'C', 'F'``), which
    a caller of :func:`search` never sees, named by the edges they are (``edges 0-3, 1-2``)."""
    def edges(match: re.Match) -> str:
        return f"edge{match.group(1)} '" if match.group(2) in pairs else match.group(0)

    def edge(match: re.Match) -> str:
        return "{}-{}".format(*pairs[match.group(1)]) if match.group(1) in pairs else match.group(0)

    message = re.sub(r"\bbond(s?) '(?=([A-Za-z])')", edges, message)
    return re.sub(r"'([A-Za-z])'", edge, message)


def _error_against_spread(result: StructureResult, data: Any, observed: Any) -> float:
    """The result's relative error against the data's deviations from their mean (the observed
    entries' mean in a completion), as :func:`tnmars.fit` judges its fits: an offset makes the
    plain relative error small whatever the fit (3 plus unit noise on 5x6x5x6: 0.32 at rank 1,
    0.98 against the deviations)."""
    fitted = prepare(data, observed).data
    spread = fitted.spread
    rel = result.relative_error
    return rel * math.sqrt(fitted.sq_norm / spread) if spread > SPREAD_RESOLVED * fitted.sq_norm else rel


def _judge(result: StructureResult, budget: Any, held: Sequence[str], pairs: dict[str, tuple[int, int]],
           max_rank: Any, error_against_spread: Callable[[], float]) -> None:
    """Warn (and add to ``result.fit.diagnostics``) when a search left to the criterion (no
    ``budget``: there a large error, or edges held small, is what the user asked for) ends

    - with edges ``held`` at the caller's ``max_rank``: a larger cap may give another structure,
      not only larger ranks (a TT 5x6x5x6 at (2, 3, 2) with ``max_rank=2`` came back fully
      connected at the cap, 176 parameters, where ``max_rank=3`` finds the chain of 88, both
      exact; a ring 5^4 at rank 3 came back fully connected at relative error 0.29, silently).
      Whether it would is known only by searching again, which the caller's cap rules out: the
      edges at the cap are named instead, at no cost. Not for a tree that fits exactly (as far as
      the criterion tells, :data:`~tnmars.fitting.criterion.MSE_FLOOR`): each of its edges then
      carries its unfolding's rank, which no cap changes (that chain with ``max_rank=3``, its
      middle edge at 3, said nothing before and says nothing now). A truth with loops, or noisy
      data, whose ranks equal the cap still warns: only a second search could tell;
    - or else at relative error :data:`POOR_FIT_ERROR` or above against the data's deviations
      from their mean (an offset hides a poor fit from the plain relative error, as in
      :func:`tnmars.fit`). At relative error 1 and above :func:`tnmars.fit` has warned already.

    Within a ``budget``, only the first, for the edges at the cap that one more index would
    leave within the budget: the cap, not the budget, held them (``max_rank=2, budget=1000``
    kept a fully connected 176 parameters at the cap, silently; an outside probe).

    An interrupted search says so itself; the zero network of all-zero data is exact."""
    if result.fit.interrupted or 0 in result.fit.ranks:
        return
    limit = result.fit.settings.get("max_params") if budget is not None else None
    if budget is not None:
        net = result.fit.network
        held = [b for b in held if limit is not None and net.num_params_at({b: net.bonds[b] + 1}) <= limit]
        if not held:
            return
    rel = result.relative_error
    against_spread = error_against_spread()
    exact_tree = against_spread <= math.sqrt(MSE_FLOOR) and not _has_loops(result.order, result.edges)
    if held and not exact_tree:
        names = ["{}-{}".format(*pairs[b]) for b in held]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        message = (f"{len(held)} of the {len(pairs)} edges stand at max_rank={max_rank}, the cap you set "
                   f"({shown}): a larger cap may change the structure found ({result.topology}, "
                   f"{result.num_params:,} parameters at relative error {rel:.2g}), not only its ranks. Raise "
                   "max_rank (or leave it out) to let the data choose.")
        if limit is not None:
            message += (f" The budget of {limit:,} parameters would allow one more index on each of them (within a "
                        "budget max_rank still caps every edge).")
    elif budget is None and POOR_FIT_ERROR <= against_spread and rel < 1.0 - 1e-9:
        if against_spread <= 1.5 * rel:
            words = f"leaves relative error {rel:.2g}: it explains {100 * (1 - rel ** 2):.0f}% of the data's energy"
        else:
            words = (f"leaves relative error {rel:.2g}, but {against_spread:.2g} against the data's deviations "
                     f"from their mean: it explains {100 * max(0.0, 1 - against_spread ** 2):.0f}% of what "
                     "varies, little more than the mean")
        message = (f"the structure found ({result.topology}, {result.num_params:,} parameters for "
                   f"{result.network.dense_size:,} entries) {words}. Either the data are mostly noise at this "
                   "size, or the search stopped far from the truth, as it does on dense random graphs "
                   "(docs/guides/structure.md, Limits). Compare with tnmars.fit(data, 'tt') and 'tucker', or "
                   "search within a budget (budget=...: the best fit it finds at that size).")
    else:
        return
    result.fit.diagnostics.append(message)
    warnings.warn(f"tnmars.search: {message}", RuntimeWarning, stacklevel=3)


def _has_loops(order: int, edges: dict[tuple[int, int], int]) -> bool:
    """Whether the graph of ``order`` nodes and ``edges`` has a cycle (a forest has one edge
    fewer than nodes in each part)."""
    adj: dict[int, set[int]] = {k: set() for k in range(order)}
    for i, j in edges:
        adj[i].add(j)
        adj[j].add(i)
    return len(edges) > order - len(_components(adj))


def _check_start_within(start: Network, caps: dict[str, int], pairs: dict[str, tuple[int, int]],
                        max_rank: Any) -> None:
    """Refuse a warm ``start`` with edges above the caller's ``max_rank``, naming them as edges
    (the fit below named a bond letter of the fully connected network and its "proposal")."""
    over = {pairs[b]: (r, caps[b]) for b, r in start.bonds.items() if r > caps[b]}
    if over:
        where = ", ".join(f"{i}-{j} at rank {r}" + (f" (at most {cap} there)" if cap < max_rank else "")
                          for (i, j), (r, cap) in sorted(over.items()))
        raise ValueError(f"the start has edge{'s' if len(over) > 1 else ''} {where}, above max_rank={max_rank}: "
                         f"raise max_rank to at least {max(r for r, _ in over.values())}, or leave it out (the "
                         "default cap admits the start's edges)")


def _start_network(start: Any, spec: str, shape: tuple[int, ...]) -> Network:
    """The fully connected network of a warm ``start`` (see :func:`search`)."""
    net = start.fit.network if isinstance(start, StructureResult) else start
    if not isinstance(net, Network):
        raise TypeError(f"start must be a StructureResult or a Network; got {type(start).__name__}")
    if net.shape != shape:
        raise ValueError(f"the start has shape {net.shape} but the data have shape {shape}")
    if net.spec != spec:
        return _as_fully_connected(net, spec, pairs_of(spec))
    return net


def pairs_of(spec: str) -> dict[str, tuple[int, int]]:
    """The pair of cores each bond of the fully connected ``spec`` joins."""
    return fctn_spec(len(spec.split("->")[1]))[1]


def _as_fully_connected(net: Network, spec: str, pairs: dict[str, tuple[int, int]]) -> Network:
    """``net`` as the fully connected network ``spec`` (the same tensor): a network whose every
    core holds one open mode, and whose every bond joins two cores, is that network with the
    edges it lacks at rank 1; several bonds between the same two cores become one edge of their
    sizes' product. Any other network (a Tucker core without a mode, CP's hyperedge) is refused,
    saying why."""
    opens, terms = net.output, net.inputs
    why = None
    owner: dict[str, int] = {}
    for k, term in enumerate(terms):
        modes = [c for c in term if c in opens]
        if len(modes) != 1:
            why = f"core {k} ({term!r}) holds {len(modes)} open modes, not one"
            break
        if len(set(term)) != len(term):
            why = f"core {k} ({term!r}) repeats an index (a trace)"
            break
        if modes[0] in owner:
            why = f"mode {modes[0]!r} is held by cores {owner[modes[0]]} and {k}"
            break
        owner[modes[0]] = k
    mode_of_core = {k: opens.index(c) for c, k in owner.items()}
    between: dict[tuple[int, int], list[str]] = {}
    if why is None:
        for b in sorted({c for term in terms for c in term if c not in opens}):
            holders = [k for k, term in enumerate(terms) if b in term]
            if len(holders) != 2:
                why = f"bond {b!r} joins {len(holders)} cores, not two"
                break
            between.setdefault(tuple(sorted(mode_of_core[k] for k in holders)), []).append(b)
    if why is not None:
        raise ValueError(f"a start must be a network whose every core holds one mode of the data and whose every "
                         f"bond joins two cores (a TT, a ring, a StructureResult's fit.network); {net.spec!r}: {why}")
    from ..backends import get_backend

    be = get_backend(net.backend)
    dims = net.dims
    cores = []
    for m, fterm in enumerate(spec.split("->")[0].split(",")):
        k = owner[opens[m]]
        term, axes, shape = terms[k], [terms[k].index(opens[m])], [dims[opens[m]]]
        for edge in fterm[1:]:
            bonds = between.get(pairs[edge], [])
            axes += [term.index(b) for b in bonds]
            shape.append(prod(dims[b] for b in bonds))
        cores.append(be.reshape(be.transpose(net.cores[k], axes), shape))
    return Network.from_cores(spec, cores)


def _max_rank(max_rank: Any, spec: str, opens: str, shape: tuple[int, ...]) -> dict[str, int]:
    """Every bond's cap: ``max_rank``, clipped to what each bond can use."""
    r = positive_int(max_rank, "max_rank")
    bonds = list(dict.fromkeys(c for c in spec.split("->")[0] if c not in opens and c != ","))
    return feasible_ranks(spec, {**dict(zip(opens, shape)), **{b: r for b in bonds}})


#: the most entries a core of the search's template may describe (its cores have zero strides and
#: take no memory, but NumPy refuses views of more than ``2**63`` entries)
_TEMPLATE_ENTRIES = 2**60


def largest_unfolding_rank(shape: Sequence[int]) -> int:
    """The wider cap :func:`search` tries when the largest mode size holds an edge: the largest
    rank of any unfolding of the data (``min(prod(S), prod(rest))`` over the ways to split the
    modes in two), which no edge of a tree can exceed. Lowered where needed so that a core of
    the fully connected template (its mode and ``d - 1`` edges at the cap) stays describable.

    Why: ``max(shape)`` alone held every edge of a tensor with small modes at tiny ranks. A
    noiseless TT of 4^6 at ranks (3, 5, 5, 5, 3) came back as a loopy graph of 620 parameters
    at relative error 9e-4 (every edge capped at 4; 3e-6 with edges up to 64), a TT of 2^8 at
    ranks up to 4 at 2.5e-3 (cap 2; 3.3e-5 at 16). The wider cap is not better everywhere (the
    walk is greedy: on some cases it took a larger edge early and ended worse), so it is a
    second search whose result must beat the first by the criterion.

    >>> [largest_unfolding_rank(shape) for shape in ((4,) * 6, (2,) * 8, (30, 40, 50))]
    [64, 16, 50]
    """
    shape = [int(n) for n in shape]
    total = prod(shape)
    best = max(shape)
    for k in range(1, len(shape)):
        for side in itertools.combinations(range(1, len(shape)), k - 1):  # mode 0 on the first side: each split once
            part = shape[0] * prod(shape[i] for i in side)
            best = max(best, min(part, total // part))
    # a core of the fully connected template has its mode and len(shape) - 1 edges at the cap
    while best > 1 and max(shape) * best ** (len(shape) - 1) > _TEMPLATE_ENTRIES:
        best -= 1
    return best


def _without_vanished(net: Network) -> Network:
    """``net`` with its size-1 bonds removed from the spec and squeezed out of the cores."""
    gone = {b for b, r in net.bonds.items() if r == 1}
    if not gone:
        return net
    terms = ["".join(c for c in term if c not in gone) for term in net.inputs]
    cores = [c.reshape(tuple(int(n) for n, ch in zip(c.shape, term) if ch not in gone))
             for c, term in zip(net.cores, net.inputs)]
    return Network(",".join(terms) + "->" + net.output, cores=cores, optimize=net.optimize)


def topology_name(order: int, edges: dict[tuple[int, int], int]) -> str:
    """A name for the graph of ``order`` nodes with ``edges`` (see :class:`StructureResult`).

    >>> topology_name(4, {(0, 2): 3, (1, 2): 2, (1, 3): 2})
    'chain 0-2-1-3'
    >>> topology_name(4, {(0, 1): 2, (0, 2): 2, (0, 3): 2})
    'star around 0'
    """
    if not edges:
        return "no edges (rank 1)"
    adj: dict[int, set[int]] = {k: set() for k in range(order)}
    for i, j in edges:
        adj[i].add(j)
        adj[j].add(i)
    parts = _components(adj)
    touched = [p for p in parts if len(p) > 1]
    note = ""
    if len(parts) > 1:
        note = f" ({len(parts)} separate parts)"
    if len(touched) > 1:  # a forest only when no part has a loop (two triangles are two rings)
        loops = any(sum(len(adj[k]) for k in part) // 2 >= len(part) for part in touched)
        return ("separate parts, some with loops" if loops else "forest") + note
    part = touched[0]
    n_edges = sum(len(adj[k]) for k in part) // 2
    degrees = sorted(len(adj[k]) for k in part)
    if n_edges == len(part) * (len(part) - 1) // 2 and len(part) > 3:
        return "fully connected" + note
    if n_edges == len(part) - 1:  # a tree
        if degrees[-1] <= 2:
            return "chain " + "-".join(map(str, _walk(adj, part))) + note
        if degrees[-1] == len(part) - 1 and len(part) > 3:
            hub = next(k for k in part if len(adj[k]) == len(part) - 1)
            return f"star around {hub}" + note
        return "tree" + note
    if n_edges == len(part) and degrees[0] == degrees[-1] == 2:
        return "ring " + "-".join(map(str, _walk(adj, part))) + note
    return "graph with loops" + note


def _components(adj: dict[int, set[int]]) -> list[list[int]]:
    seen: set[int] = set()
    parts = []
    for k in adj:
        if k in seen:
            continue
        stack, part = [k], []
        seen.add(k)
        while stack:
            c = stack.pop()
            part.append(c)
            for m in adj[c] - seen:
                seen.add(m)
                stack.append(m)
        parts.append(sorted(part))
    return parts


def _walk(adj: dict[int, set[int]], part: list[int]) -> list[int]:
    """The nodes of a chain from its smaller end, or of a ring from its smallest node."""
    ends = [k for k in part if len(adj[k]) == 1]
    start = min(ends) if ends else min(part)
    path, prev = [start], None
    while True:
        nxt = sorted(adj[path[-1]] - ({prev} if prev is not None else set()))
        if not nxt or nxt[0] == start or len(path) == len(part):
            break
        prev = path[-1]
        path.append(nxt[0])
    return path
