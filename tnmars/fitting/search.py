"""Local search over ranks: from a proposal, add or remove rank indices while the MAP
criterion improves.

Every step tries, on every bond, one index fewer (:func:`~tnmars.fitting.moves.shrink`; also
a quarter of the rank fewer when the rank is large, so a generous start comes down in few
steps; with ``descend_together``, as in the ring's walks from random cores at the largest
ranks the data determine, every bond one index fewer at once) and one more
(:func:`~tnmars.fitting.moves.grow`, within the feasible and the caller's maximal ranks and
the degrees of freedom the criterion trusts), refits each candidate by a few ALS sweeps and
moves to the best one if it lowers the objective. A short
refit only over-estimates a candidate's error (ALS never increases it), so a candidate that
already wins is a real improvement. When none wins, the most promising ones are refitted
fully, ``second_look`` of them by objective and as many again among those whose error was
still falling fastest when their short refit ended (a new index grows from small slices over
several sweeps: :attr:`Candidate.trend`); the search may then walk on through up to
``patience`` steps that do not pay alone (a weak component may need indices on several bonds
before it pays). On nearly exact data a
last pass tries every removal again with refits run to convergence. The best network seen
is returned; rank vectors already evaluated are not evaluated again by the walk.

This is greedy rank adaptation for arbitrary networks (Hashemizadeh et al., "Adaptive
Learning of Tensor Network Structures") with removals as well as additions, under one
Bayesian criterion.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..network import Network
from .criterion import Occam
from .graph import degrees_of_freedom, feasible_ranks, has_loop
from .moves import grow, shrink
from .solvers import FitData, als

__all__ = ["Candidate", "RankSearch", "SEARCH_SETTINGS", "rank_floor"]

#: the last removal pass runs when the best fit's mean squared error (data at unit mean
#: square) is below this: nearly exact data, where refits must converge far
PRUNE_BELOW = 1e-4
#: within a budget, networks of at most this many bonds also try removals followed by a
#: greedy refill (``RankSearch._removed_and_refilled``); more bonds make it too costly
REFILL_MAX_BONDS = 8
#: networks of at most this many bonds (fully connected up to order 6) are searched as the
#: module notes say; with more (order 7 and up: 21 bonds at order 7, 28 at order 8) every
#: step evaluates twice as many neighbours, each refit costs more, and the search economises
#: where a count grows with the bonds (``RankSearch`` notes "Many bonds"). The order-6 and
#: smaller networks of the validated benchmarks never take those paths. Within a budget, all
#: exchanges times all bonds is too costly at order 8 (28 bonds: an image search within 1,000
#: parameters spent more than 40 minutes in one round of exchanges) but worth its cost at
#: order 6: a 20 dB order-6 truth within 300 parameters reached relative error 0.16 with
#: every refill (517 s) and 0.24 with the best four (79 s)
MANY_BONDS = 15
#: on more than :data:`MANY_BONDS` bonds the random restarts of the final refit are screened:
#: every start gets this many sweeps; the best :data:`RESTART_FINALISTS` by objective, and the
#: best :data:`RESTART_TREND_FINALISTS` others by the objective extrapolated from the gain
#: since sweep :data:`RESTART_TREND_FROM`, go on to ``final_sweeps`` (``RankSearch._restarted``)
RESTART_SCREEN_SWEEPS = 300
RESTART_FINALISTS = 2
RESTART_TREND_FINALISTS = 2
RESTART_TREND_FROM = 100
#: sweeps of the walk's own removal refitted again on a loop (``RankSearch._fresh_removals``)
LOOP_REMOVAL_SWEEPS = 100
#: with ``descend_together``, the walk tries every bond one index fewer at once after this many
#: removals in a row (steps whose best move removed indices): the walk is then coming down
#: through ranks far above what the data support. Tried from the first step, the move won at
#: once from random starts near a ring's truth (their short refits are poor at every
#: neighbour, so the largest cut in degrees of freedom wins): 5 of 120 held-out rings ended
#: farther from the truth (one exact ring at 0.78), where one index at a time had found it
DESCENT_BEFORE_ALL = 3
#: the settings ``tnmars.fit(selection=...)`` may change
SEARCH_SETTINGS = ("sweeps", "full_sweeps", "final_sweeps", "second_look", "patience", "exchanges")


def rank_floor(min_rank: int | Mapping[str, int], bond: str) -> int:
    """The smallest rank the search may leave ``bond`` at: ``min_rank`` (one floor for every
    bond) or its entry (a floor per bond, 1 for a bond it does not name), and never below 1:
    a shrink cannot remove a bond's last index (rank 0 zeroes the whole network, which the
    search has no move to reach).

    >>> rank_floor(3, "A"), rank_floor({"A": 2}, "A"), rank_floor({"A": 2}, "B"), rank_floor(0, "A")
    (3, 2, 1, 1)
    """
    floor = min_rank.get(bond, 1) if isinstance(min_rank, Mapping) else min_rank
    return max(int(floor), 1)


def feasible(net: Network) -> Network:
    """Shrink every bond a smaller neighbour has made useless (a bond larger than the product
    of a core's other indices), so no candidate carries an infeasible rank."""
    while True:
        caps = feasible_ranks(net.spec, net.dims)
        over = [b for b, r in net.bonds.items() if r > caps[b]]
        if not over:
            return net
        net = shrink(net, over[0])


def _same_cores(a: Network, b: Network) -> bool:
    """Whether two starts hold the same values (a deterministic start built twice)."""
    if a.dims != b.dims:
        return False
    be_a, be_b = a.backend_impl, b.backend_impl
    return all(np.array_equal(be_a.to_numpy(x), be_b.to_numpy(y)) for x, y in zip(a.cores, b.cores))


#: the largest ratio of successive improvements :func:`trend_sse` extrapolates with (a sum of
#: at most ``r / (1 - r) = 4`` more of the last improvement)
TREND_RATIO = 0.8


def trend_sse(history: Sequence[float]) -> float:
    """Where a refit's squared error was heading: the last value minus the rest of a geometric
    series fitted to the last two improvements (ratio at most :data:`TREND_RATIO`); the last
    value when those do not shrink (converged, or not contracting).

    >>> round(trend_sse([4.0, 2.0, 1.0]), 6)  # improvements 2, 1: ratio 1/2, one more to come
    0.0
    >>> trend_sse([4.0, 3.0, 3.0])
    3.0
    """
    s1, s2, s3 = history[-3:]
    d1, d2 = s1 - s2, s2 - s3
    if not (d1 > 0.0 and 0.0 < d2 < d1):
        return float(s3)
    r = min(d2 / d1, TREND_RATIO)
    return float(max(s3 - d2 * r / (1.0 - r), 0.0))


@dataclass
class Candidate:
    """A fitted network with its squared error and MAP objective."""

    network: Network
    sse: float
    objective: float
    dof: int
    move: str = "start"
    #: ALS sweeps of the refit that gave ``sse`` (at most: a refit stops when it stalls)
    sweeps: int = 0
    #: for a short refit (three sweeps or more), the objective where its last sweeps' geometric
    #: trend of the squared error leads (:func:`trend_sse`; ``objective`` when it had converged);
    #: None for a long refit
    trend: float | None = None
    #: the share of the squared error a CP's final polish gained in its last sweeps when it
    #: stopped at its sweep limit still improving (0: it converged, or no such polish)
    unconverged: float = 0.0

    @property
    def ranks(self) -> tuple[int, ...]:
        return self.network.ranks


@dataclass
class RankSearch:
    """Greedy +-1 rank search under ``criterion``; see the module notes.

    ``descend_together``: after :data:`DESCENT_BEFORE_ALL` removals in a row, every step also
    tries every bond above its floor one index fewer at once (move ``"-all"``). For walks from
    generous random starts on data they may not explain: a ring of 2^10 pure noise from rank 7
    came down one index per step (the whole fit: 1,418 refits, 40 s); with the move, 646
    refits and 15 s, to the same end. Off elsewhere: from a spectral start the walk is near its
    end and the move would only add a refit per step.
    ``max_ranks`` caps every bond; ``min_rank`` (1 by default; one for every bond or a dict
    by bond, :func:`rank_floor`) is the smallest rank the search removes indices down to. It
    never adds indices to reach it: the start must already be at or above it
    (:func:`tnmars.fit` raises its proposal first), and bonds the start holds below it are
    left there rather than refused. ``max_params`` (a size budget, see
    :mod:`~tnmars.fitting.budget`) excludes every candidate with more parameters; the start
    must already be within it. ``exchanges``: after the search, also try moving one index
    from a bond to another bond of a shared core (:meth:`_rewire`; structure search).
    ``report(candidate, phase)`` is called after
    every evaluation (progress bars, callbacks); it may return True to stop the search.
    ``on_refit(move, sweep, sweeps, sse)``, when given, is called after every ALS sweep of the
    long refits (more than ``full_sweeps`` sweeps: the final refit, restarts), which on a large
    network run for many minutes between two reports.
    ``fresh(ranks)``, when given, builds new starts at those ranks: on loops the ALS
    landscape has poor local minima, and a removal refitted from the current cores can stay
    in one where a fresh start at the smaller ranks does not (see ``_fresh_removals``).
    ``imputed(ranks)``, when given (completion with few observations), builds EM starts:
    the start's ranks are refitted from them once the walk ends (:meth:`_revisited`), and an
    EM start that does not beat the walk's end is walked down where ``doubtful(end)`` (None:
    always) says the end is worth it (:meth:`_descended`).
    ``restarts(ranks)``, when given, builds the starts of the final refit at the selected
    ranks instead (``_restarted`` only: networks with loops other than rings, and a user's
    tree networks, where fresh starts for every removal would cost too much). ``classical(ranks)``, when given, builds
    the format's truncation start (HOSVD, TT-SVD, TR-SVD) at given ranks: for the final refit at the
    selected ranks (the walk's cores can sit in a poor ALS minimum at the right ranks:
    noiseless Tucker 2^6 at (2,1,2,1,2,2), relative error 0.049 from the walk, 6e-16 from
    HOSVD), and for every growing move once the walk ends (:meth:`_classical_additions`;
    a completion's EM starts there instead). The start is first made feasible (:func:`feasible`).

    Many bonds (more than :data:`MANY_BONDS`): the exchanges are screened
    (:meth:`_exchange_pairs`) and their finalists refitted in two stages, and the random
    restarts of the final refit run once per search, not again after every improving
    exchange. (Growing several indices in one walk step was tried and not kept: from rank 1
    on an exact order-5 network with the threshold lowered, it grew spurious edges and
    stopped at error 3e-5 and 2.0x compression, against the exact ring at 7.3x.)
    """

    data: FitData
    criterion: Occam
    max_ranks: dict[str, int]
    sweeps: int = 3
    full_sweeps: int = 30
    final_sweeps: int = 1000
    second_look: int = 2
    patience: int = 2
    min_rank: int | Mapping[str, int] = 1
    max_params: int | None = None
    exchanges: bool = False
    descend_together: bool = False
    seed: int | None = 0
    report: Callable[[Candidate, str], Any] | None = None
    on_refit: Callable[[str, int, int, float], Any] | None = None
    fresh: Callable[[dict[str, int]], list[Network]] | None = None
    restarts: Callable[[dict[str, int]], list[Network]] | None = None
    imputed: Callable[[dict[str, int]], list[Network]] | None = None
    doubtful: Callable[[Candidate], bool] | None = None
    classical: Callable[[dict[str, int]], list[Network]] | None = None
    evaluations: int = 0
    path: list[Candidate] = field(default_factory=list)
    trail: list[Candidate] = field(default_factory=list)
    _restarted_at: set = field(default_factory=set, repr=False)
    _removals_in_a_row: int = field(default=0, repr=False)
    stopped: bool = False
    #: the candidate of lowest objective evaluated so far within the budget (taken or not)
    best_seen: Candidate | None = None

    def interrupted_best(self, fallback: Candidate | None = None) -> Candidate | None:
        """What an interrupted search returns: the best candidate it evaluated (within the
        budget), whether or not the walk had taken it yet; ``fallback`` if none is better.
        Ctrl-C in a CP fit's walk kept rank 11 (objective -1.491e6) after rank 12 (-1.579e6)
        had been evaluated as a neighbour."""
        found = [c for c in (*self.path, self.best_seen, fallback) if c is not None]
        best = min(found, key=lambda c: c.objective, default=None)
        if best is not None and best is self.best_seen and all(c is not best for c in self.path):
            self.path.append(best)  # (the selection lists it)
        return best

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    # -- evaluation ---------------------------------------------------------------------
    def evaluate(self, net: Network, sweeps: int, move: str,
                 on_sweep: Callable[[int, float], Any] | None = None) -> Candidate:
        """``net`` refitted by ``sweeps`` ALS sweeps; ``on_sweep(sweep, sse)`` follows them."""
        if self.on_refit is not None and sweeps > self.full_sweeps:
            inner = on_sweep

            def on_sweep(sweep: int, sse: float) -> None:
                self.on_refit(move, sweep, sweeps, sse)
                if inner is not None:
                    inner(sweep, sse)
        history: list[float] = []
        if sweeps <= 3 * self.sweeps:  # a short refit: its trend tells where it was going
            inner_sweep = on_sweep

            def on_sweep(sweep: int, sse: float) -> None:
                history.append(sse)
                if inner_sweep is not None:
                    inner_sweep(sweep, sse)
        fitted, sse = als(net, self.data, sweeps=sweeps, on_sweep=on_sweep)
        dof = degrees_of_freedom(fitted.spec, fitted.dims)
        cand = Candidate(fitted, sse, self.criterion.objective(sse, dof), dof, move, sweeps)
        if len(history) >= 3:
            cand.trend = self.criterion.objective(trend_sse(history), dof)
        self.evaluations += 1
        if (self.max_params is None or fitted.num_params <= self.max_params) and (
                self.best_seen is None or cand.objective < self.best_seen.objective):
            self.best_seen = cand  # (what Ctrl-C keeps: a walk's neighbours are seen before one is taken)
        if self.report is not None and self.report(cand, "selection"):
            self.stopped = True
        return cand

    def _fits(self, net: Network, grown: dict[str, int]) -> bool:
        trial = dict(net.dims)
        trial.update(grown)
        if any(r > self.max_ranks.get(b, r) for b, r in grown.items()):
            return False
        if degrees_of_freedom(net.spec, trial) > self.criterion.max_dof:
            return False
        if self.max_params is not None and net.num_params_at(grown) > self.max_params:
            return False
        caps = feasible_ranks(net.spec, trial)
        return all(caps[b] >= r for b, r in grown.items())

    def _neighbours(self, net: Network) -> list[tuple[str, Network]]:
        """One index fewer on each bond; one more on each bond, or, where one more is not
        feasible alone (Tucker from rank 1: a core rank cannot exceed the product of the
        others), one more on it and on one bond sharing a core with it."""
        out = []
        bonds = net.bonds
        for bond, r in bonds.items():
            floor = rank_floor(self.min_rank, bond)
            if r > floor:
                out.append((f"-{bond}", feasible(shrink(net, bond))))
            jump = (r - floor) // 4
            if jump >= 2:  # far above where the data seem to be: also try a quarter of the way down
                smaller = net
                for _ in range(jump):
                    smaller = shrink(smaller, bond)
                out.append((f"-{jump}{bond}", feasible(smaller)))
        above = [b for b, r in bonds.items() if r > rank_floor(self.min_rank, b)]
        if self.descend_together and self._removals_in_a_row >= DESCENT_BEFORE_ALL and len(above) > 1:
            together = net
            for bond in above:
                together = shrink(together, bond)
            out.append(("-all", feasible(together)))
        residual = None
        for move, grown in self._additions(net):
            if len(grown) == 1:
                (bond,) = grown
                if residual is None and len(net.terms_with(bond)) > 2:
                    residual = self.data.residual(net)
                out.append((move, grow(net, bond, self._rng, residual=residual)))
            else:
                bond, other = grown
                out.append((move, grow(grow(net, bond, self._rng), other, self._rng)))
        return out

    def _additions(self, net: Network) -> list[tuple[str, dict[str, int]]]:
        """The growing moves of :meth:`_neighbours` as ``(move, {bond: new rank})``: one more
        index on each bond, or, where that is not feasible alone, on it and on one bond sharing
        a core with it."""
        out = []
        bonds = net.bonds
        for bond, r in bonds.items():
            if self._fits(net, {bond: r + 1}):
                out.append((f"+{bond}", {bond: r + 1}))
                continue
            partners = {c for t in net.terms_with(bond) for c in net.inputs[t] if c in bonds and c != bond}
            for other in sorted(partners):
                if self._fits(net, {bond: r + 1, other: bonds[other] + 1}):
                    out.append((f"+{bond}+{other}", {bond: r + 1, other: bonds[other] + 1}))
        return out

    # -- the search ---------------------------------------------------------------------
    def run(self, start: Network, evaluated: Candidate | None = None) -> Candidate:
        """Search from ``start``; returns the best candidate seen (``path`` lists each
        improvement on the way, ``trail`` every step taken). ``evaluated``: ``start`` already
        refitted and recorded (a walk going on from a move taken after the last one)."""
        if self.max_params is not None and start.num_params > self.max_params:
            raise ValueError(f"the start has {start.num_params:,} parameters, above the budget of "
                             f"{self.max_params:,}: bring it within (tnmars.fitting.budget.descend_to_params)")
        # a start with a rank no network of this graph can use (a proposal's Tucker ranks (1, 2, 3):
        # 3 > 1 * 2) carries dead indices that ALS keeps at zero, and a move from it can mark the
        # right ranks as seen while stuck at the dead state's error
        current = evaluated if evaluated is not None else self.evaluate(feasible(start), self.full_sweeps, "start")
        # few observations (EM starts pay at the start's ranks): the walk's short-refit trends are
        # not followed there; the EM start, refitted after the walk, is what rescues a poor minimum
        # (following them, a Tucker (4, 2, 3) completion 18x16x14 at 10% observed, 10 dB, walked on
        # to a poorer minimum at (4, 2, 3) that the EM start (4, 4, 4) did not beat, and ended at
        # (3, 2, 2), error 1.08 against 0.39)
        # (at the first start's ranks, as _revisited asks: a walk on from a rewired network builds no other)
        first = self.path[0] if self.path else current
        follow_trends = self.imputed is None or not self.imputed(dict(first.network.bonds))
        best = current
        if evaluated is None:
            self.path.append(best)
            self.trail.append(current)
        seen = {current.ranks}
        uphill: list[str] = []
        self._removals_in_a_row = 0
        while not self.stopped:
            tried = []
            for move, net in self._neighbours(current.network):
                if net.ranks in seen:
                    continue
                seen.add(net.ranks)
                tried.append(self.evaluate(net, self.sweeps, move))
                if self.stopped:
                    break
            if not tried:
                break
            tried.sort(key=lambda c: c.objective)
            step = tried[0]
            if self.stopped:  # asked to stop: keep what the short refits found, evaluate nothing more
                if step.objective < best.objective:
                    best = step
                    self.path.append(best)
                break
            if step.objective < current.objective:
                step = self.evaluate(step.network, self.full_sweeps, step.move)
            else:
                # short refits over-estimate the error: look again, fully, at the most promising,
                # and at those still improving fastest (by their trend): a new index grows from small
                # slices over several sweeps (a ring completion's +1 on one bond looked the worst but
                # one of its five moves after 3 sweeps, and was the one that paid, after 18)
                looks = tried[: self.second_look]
                trending = sorted((c for c in tried[self.second_look:] if c.trend is not None and c.trend < c.objective),
                                  key=lambda c: c.trend) if follow_trends else []
                for cand in looks + trending[: self.second_look]:
                    again = self.evaluate(cand.network, self.full_sweeps, cand.move)
                    if again.objective < step.objective:
                        step = again
            self.trail.append(step)
            current = step
            self._removals_in_a_row = self._removals_in_a_row + 1 if step.move.startswith("-") else 0
            if step.objective < best.objective:
                if uphill:  # reached through steps that did not pay alone: name them all
                    step.move = ",".join(uphill + [step.move])
                    uphill = []
                best = step
                self.path.append(best)
            else:
                # several indices may be needed before any pays (a component spread over bonds):
                # walk on a little before giving up, then return the best network seen
                uphill.append(step.move)
                if len(uphill) > self.patience:
                    break
        grown = self._grown_everywhere(best)
        if grown is not best:
            return self.run(grown.network, grown)  # walk on from there
        best = self._restarted(self._prune(self._classical_additions(self._fresh_removals(self._revisited(best)))))
        if self.exchanges and not self.stopped:
            best = self._converged(best)  # refitted as the exchanges' candidates will be
            rewired = self._rewire(best)
            if rewired is not best and not self.stopped:
                return self.run(rewired.network)  # walk on from the rewired network
            return rewired
        return best

    def _exchange_pairs(self, best: Candidate, pairs: list[tuple[str, str]],
                        smaller: dict[str, Network]) -> list[tuple[str, str]]:
        """Many bonds: the exchanges worth a refit, at most one per bond. Each donor's removal
        and each receiver's addition is refitted alone (short refits; an addition beyond
        the budget is only measured, never taken), and the exchanges are ranked by the sum of
        their two objectives, a first-order estimate of the exchange's own. At order 8 every
        pair is about 300 exchanges against about 60 single moves. ``smaller``: each donor's
        network with one index fewer."""
        net = best.network
        donors = sorted({a for a, _ in pairs})
        receivers = sorted({b for _, b in pairs})
        if len(pairs) <= len(donors) + len(receivers):
            return pairs
        removed = {}
        for a in donors:
            removed[a] = self.evaluate(smaller[a], self.sweeps, f"-{a} (exchange screen)").objective
            if self.stopped:
                return []
        added = {}
        for b in receivers:
            added[b] = self.evaluate(grow(net, b, self._rng), self.sweeps, f"+{b} (exchange screen)").objective
            if self.stopped:
                return []
        pairs = sorted(pairs, key=lambda ab: removed[ab[0]] + added[ab[1]])
        return pairs[:len(net.bonds)]

    def _rewire(self, best: Candidate) -> Candidate:
        """Exchanges: one index fewer on a bond and one more on another bond of a core it
        touches, for every such pair that does not add degrees of freedom (with a budget: that
        stays within it, where indices must be traded to be spent well). A greedy walk from
        rank 1 may close a loop through the wrong edge first and pay for it with extra
        indices elsewhere; no single +-1 step undoes that, one exchange does. Candidates get
        short refits, the most promising ``final_sweeps`` ones; the first that lowers the
        objective of ``best`` (refitted alike: :meth:`_converged`) is taken (then the removal
        pass again), until none does. Within a budget, exchanges are refilled
        (:meth:`_refills`): every one on networks of at most :data:`MANY_BONDS` bonds, the
        ``2 * second_look`` best after their short refits on larger ones.

        On more than :data:`MANY_BONDS` bonds only the exchanges :meth:`_exchange_pairs`
        ranks first are refitted, by ``sweeps`` sweeps (three times as many on fewer bonds),
        and the ``2 * second_look`` finalists get ``full_sweeps`` sweeps before the best
        ``second_look`` of them get ``final_sweeps``. At order 8 the screen then costs about 80
        short refits a round instead of about 300 three times as long; the refills and the
        finalists' refits are what remains. Within 4,000 parameters on the image (4^8, one
        thread) a round of every exchange refitted by 18 sweeps took about 40 minutes; with
        the screen the whole search took 47 minutes, 26 of them in exchanges."""
        net_seen = {best.ranks}
        while not self.stopped:
            net = best.network
            bonds = net.bonds
            tried = []
            many = len(bonds) > MANY_BONDS
            pairs, keys, smaller = [], {}, {}
            for a, ra in bonds.items():
                if ra <= rank_floor(self.min_rank, a):
                    continue
                small = None  # one index fewer on a: the same for every receiver
                near = {c for t in net.terms_with(a) for c in net.inputs[t] if c in bonds and c != a}
                for b in sorted(near):
                    dims = {**net.dims, a: ra - 1, b: bonds[b] + 1}
                    key = tuple(dims[c] for c in bonds)
                    # without a budget only exchanges that lower the degrees of freedom (loops
                    # closed through the wrong edge); within a budget, any that fits in it
                    if key in net_seen or (self.max_params is None and degrees_of_freedom(net.spec, dims) > best.dof):
                        continue
                    if small is None:
                        small = smaller[a] = feasible(shrink(net, a))
                    if small.dims[b] != bonds[b] or not self._fits(small, {b: bonds[b] + 1}):
                        continue
                    pairs.append((a, b))
                    keys[a, b] = key
            if many:
                pairs = self._exchange_pairs(best, pairs, smaller)
                if self.stopped:
                    return best
            for a, b in pairs:
                cand = grow(smaller[a], b, self._rng)
                net_seen.add(keys[a, b])
                tried.append(self.evaluate(cand, self.sweeps if many else 3 * self.sweeps, f"{a}>{b}"))
                if self.stopped:
                    return best
                if not many:
                    tried.extend(self._refills(cand, f"{a}>{b}", net_seen))
                    if self.stopped:
                        return best
            if many:  # refill only the most promising exchanges
                for exchange in sorted(tried, key=lambda c: c.objective)[: 2 * self.second_look]:
                    tried.extend(self._refills(exchange.network, exchange.move, net_seen))
                    if self.stopped:
                        return best
            tried.extend(self._removed_and_refilled(net, net_seen))
            if self.stopped:
                return best
            tried.sort(key=lambda c: c.objective)
            finalists = tried[: 2 * self.second_look]
            if many:  # two stages: full_sweeps for the finalists, final_sweeps for the best of them
                finalists = [self.evaluate(c.network, self.full_sweeps, c.move) for c in finalists]
                if self.stopped:
                    return best
                finalists = sorted(finalists, key=lambda c: c.objective)[: self.second_look]
            improved = False
            for cand in finalists:
                again = self.evaluate(cand.network, self.final_sweeps, cand.move)
                if again.objective < best.objective:
                    best = again
                    self.path.append(best)
                    self.trail.append(best)
                    improved = True
                    break
                if self.stopped:
                    return best
            if not improved:
                return best
            best = self._prune(best)
        return best

    def _converged(self, best: Candidate) -> Candidate:
        """``best`` refitted by ``final_sweeps`` sweeps, as :meth:`_rewire`'s candidates are
        before they are compared with it. A shorter refit over-states the incumbent's error
        and lets a worse network win: TR 6^4 at 20 dB within 306 parameters, (5,3,2,4) after
        30 sweeps (0.331) lost to (6,2,2,4) after 1,000 (0.319), which it beats when refitted
        alike (0.297); the walk then ended at (5,2,2,5), 0.311, 1.07x the grid's best."""
        if best.sweeps >= self.final_sweeps:
            return best
        again = self.evaluate(best.network, self.final_sweeps, best.move)
        return again if again.objective <= best.objective else best

    def _refills(self, exchanged: Network, move: str, seen: set) -> list[Candidate]:
        """Within a budget, an exchange may free parameters (the bond losing an index costs
        more per index than the one gaining it): each way of spending them on one more index
        somewhere, short refits. Near the ceiling no single step reaches the best network of
        the budget from a worse one of the same size; an exchange followed by a refill does
        (Tucker 6^4 within 306 parameters: (4,3,5,3) -> (5,3,5,2) -> (5,4,5,2), error 0.42 -> 0.37)."""
        if self.max_params is None or exchanged.num_params >= self.max_params:
            return []
        out = []
        for c, rc in exchanged.bonds.items():
            if not self._fits(exchanged, {c: rc + 1}):
                continue
            key = tuple(rc + 1 if d == c else r for d, r in exchanged.bonds.items())
            if key in seen:
                continue
            seen.add(key)
            out.append(self.evaluate(grow(exchanged, c, self._rng), 3 * self.sweeps, f"{move}+{c}"))
            if self.stopped:
                break
        return out

    def _removed_and_refilled(self, net: Network, seen: set) -> list[Candidate]:
        """Within a budget (networks of at most ``REFILL_MAX_BONDS`` bonds): one or two
        indices fewer on a bond, or one fewer on each of two bonds, then the freed parameters
        spent again greedily (:meth:`_fill`: one index at a time, where the short refit gains
        most per parameter) until no index fits. This reaches the budget's best network across bonds that share no core
        and through "two for one" trades, which +-1 steps and exchanges cannot: TR 6^4 within
        198 parameters, (6,2,2,2) -> (4,2,2,2) -> (4,3,2,2), relative error 0.15 -> 0.11."""
        if self.max_params is None or len(net.bonds) > REFILL_MAX_BONDS:
            return []
        bonds = [b for b, r in net.bonds.items() if r > rank_floor(self.min_rank, b)]
        removals = [(b,) for b in bonds] + [(b, b) for b in bonds if net.bonds[b] - 2 >= rank_floor(self.min_rank, b)]
        removals += [(a, b) for k, a in enumerate(bonds) for b in bonds[k + 1:]]
        out = []
        for removal in removals:
            smaller = net
            for b in removal:
                if smaller.bonds[b] <= rank_floor(self.min_rank, b):  # the first shrink's feasibility
                    smaller = None                                   # clipping took this bond down already
                    break
                smaller = feasible(shrink(smaller, b))
            if smaller is None:
                continue
            filled = self._fill(smaller, "-" + "-".join(removal))
            if filled is not None and filled.ranks not in seen:
                seen.add(filled.ranks)
                out.append(filled)
            if self.stopped:
                break
        return out

    def _fill(self, net: Network, move: str) -> Candidate | None:
        """``net`` grown one index at a time while an index fits in the budget, each time the
        one whose short refit gains most per parameter it adds (the index that gains most
        outright can take the room of two that gain more together); None when none fits."""
        filled = None
        base = None
        while not self.stopped:
            grown = [(c, r) for c, r in net.bonds.items() if self._fits(net, {c: r + 1})]
            if not grown:
                break
            if base is None:
                base = self.evaluate(net, self.sweeps, move)
            options = []
            for c, _ in grown:
                cand = self.evaluate(grow(net, c, self._rng), self.sweeps, f"{move}+{c}")
                added = cand.network.num_params - net.num_params
                options.append(((base.objective - cand.objective) / max(added, 1), cand))
            filled = max(options, key=lambda o: o[0])[1]
            base, net, move = filled, filled.network, filled.move
        return filled

    def _restarted(self, best: Candidate) -> Candidate:
        """The best network refitted from fresh starts at its own ranks, when one fits better:
        the walk's cores can sit in a poor ALS minimum at the right ranks. Rings (``fresh``;
        TR 6^4 at (4,3,2,2): relative error 0.13 from the walk, 0.11 from a fresh start) refit
        their starts by ``full_sweeps``. Other loops (``restarts``) refit theirs, and the
        incumbent, by ``final_sweeps``: on a fully connected order-4 network at its true ranks
        3 of 16 random starts reached the exact fit after 1,000 sweeps, and none of them was
        among the best after 30. On more than :data:`MANY_BONDS` bonds the restarts run once
        per search, and are screened (:meth:`_screened`): each start gets
        :data:`RESTART_SCREEN_SWEEPS` sweeps, and the best :data:`RESTART_FINALISTS` by
        objective and the best :data:`RESTART_TREND_FINALISTS` by trend get ``final_sweeps``:
        7,600 sweeps for 12 starts instead of 12,000. Measured by
        ``benchmarks/restart_screen.py`` (``results/restart_screen.md``; order 7, 21 bonds,
        sparse random truths at 20 dB, every restart refitted by 1,000 sweeps): on seeds
        13-25, keeping only the best 2 after 300 sweeps (the rule before, chosen on seeds 0-12
        of an earlier study whose script was not kept) kept the winner of 8 of the 10 rounds a
        restart won, and only 17% and 66% of the gain in the two others (seed 22, gains of 1.1%
        and 6.9% of the objective; the winners were 9th and 6th after 300 sweeps); the trend
        rule, chosen on those seeds, kept all 10. On seeds 26-70, run after that choice, both
        kept all 32 won rounds: no held-out start was slow enough to tell them apart, so such
        a miss is rare (one seed of 58). The trend's finalists include the best 2, so it never
        keeps less; it costs 2,000 sweeps more per restart phase.
        On the image's order-8 search 12 restarts of 1,000 sweeps
        cost 6-8 minutes each at 8,000 parameters, and none had won there."""
        if self.stopped:
            return best
        if self.restarts is not None:
            if best.ranks in self._restarted_at:  # the walk came back to ranks already restarted
                return best
            if self._restarted_at and len(best.network.bonds) > MANY_BONDS:
                # many bonds: once per search. At order 8 within 4,000 parameters the 12
                # restarts took about 18 minutes, and each improving exchange starts a new walk
                return best
            self._restarted_at.add(best.ranks)
            starts, sweeps = self.restarts(dict(best.network.bonds)), self.final_sweeps
            if starts:
                best = self._converged(best)
        elif self.fresh is not None or self.imputed is not None or self.classical is not None:
            starts, sweeps = self._fresh_and_imputed(dict(best.network.bonds)), self.full_sweeps
        else:
            return best
        finalists = RESTART_FINALISTS + RESTART_TREND_FINALISTS
        if self.restarts is not None and len(best.network.bonds) > MANY_BONDS and len(starts) > finalists:
            starts = self._screened(starts)
            if self.stopped:
                return best
        for start in starts:
            cand = self.evaluate(start, sweeps, "restart")
            # (at the same ranks a tie is two fits under the criterion's floor: the closer one wins;
            # a noiseless TT 2^10 kept the walk's 4e-5 over TT-SVD's 1e-15 at its true ranks, and
            # 3.8e-11 without the ALS variant that led the walk there)
            if cand.objective < best.objective or (cand.objective == best.objective and cand.sse < best.sse):
                best = cand
                self.path.append(best)
                self.trail.append(best)
            if self.stopped:
                break
        return best

    def _screened(self, starts: list[Network]) -> list[Network]:
        """The restarts worth ``final_sweeps``: each refitted by :data:`RESTART_SCREEN_SWEEPS`
        sweeps; the best :data:`RESTART_FINALISTS` by objective, then the best
        :data:`RESTART_TREND_FINALISTS` others by ``objective - (objective at sweep
        RESTART_TREND_FROM - objective)``: the gain of the last sweeps taken once more (100 to
        300 sweeps and 300 to 1,000 are about the same step in log sweeps). A start still
        crossing a slow valley ("swamp") ranks low at 300 sweeps and can end best: on order 7
        (``benchmarks/restart_screen.py``) the winner of one round was 9th of 12 after 300
        sweeps, 100 to 300 sweeps having gained it 10 times what the others gained."""
        screened = []
        for start in starts:
            early: dict[str, float] = {}

            def note(sweep: int, sse: float, early: dict = early) -> None:
                if sweep == RESTART_TREND_FROM:
                    early["sse"] = sse
            cand = self.evaluate(start, RESTART_SCREEN_SWEEPS, "restart (screen)", on_sweep=note)
            # a refit that stalled before RESTART_TREND_FROM gains nothing more: no trend
            then = self.criterion.objective(early["sse"], cand.dof) if "sse" in early else cand.objective
            screened.append((cand, cand.objective - (then - cand.objective)))
            if self.stopped:
                return []
        by_objective = sorted(range(len(screened)), key=lambda i: screened[i][0].objective)
        by_trend = sorted(range(len(screened)), key=lambda i: screened[i][1])
        kept = by_objective[:RESTART_FINALISTS]
        kept += [i for i in by_trend if i not in kept][:RESTART_TREND_FINALISTS]
        return [screened[i][0].network for i in kept]

    def _fresh_and_imputed(self, ranks: dict[str, int]) -> list[Network]:
        """The ``fresh``, ``imputed`` and ``classical`` starts at ``ranks``, each start once (the
        EM start of a Tucker or TT completion is both fresh and imputed; a ring's TR-SVD start
        both fresh and classical)."""
        starts = self.fresh(ranks) if self.fresh is not None else []
        extra = [*(self.imputed(ranks) if self.imputed is not None else []),  # (a new list: the builders
                 *(self.classical(ranks) if self.classical is not None else [])]  # may keep theirs)
        return [*starts, *(s for s in extra if all(s is not t and not _same_cores(s, t) for t in starts))]

    def _revisited(self, best: Candidate) -> Candidate:
        """The start's ranks refitted from the ``imputed`` starts (EM imputation, completion
        with few observations), when that fits better than ``best``. The walk leaves a
        rank vector whose refit sits in a poor minimum, and at few observations the spectral
        start at the true ranks often does: a TT (2,3) 15x16x17 at 10% observed ended at
        (1,2), relative error 0.42, after the spectral start's 0.24 at (2,3); from the EM
        start (2,3) is exact."""
        if self.imputed is None or not self.path:
            return best
        for start in self.imputed(dict(self.path[0].network.bonds)):
            cand = self.evaluate(start, self.full_sweeps, "start (EM)")
            if cand.objective < best.objective:
                best = cand
                self.path.append(best)
                self.trail.append(best)
            elif not self.stopped and (self.doubtful is None or self.doubtful(best)):
                best = self._descended(cand, best)
        return best

    def _descended(self, start: Candidate, best: Candidate) -> Candidate:
        """The removals from fresh starts (:meth:`_fresh_removals`) walked from ``start``, an EM
        start that did not beat the walk's ``best``; the end of that walk where it beats ``best``.
        Compared only at the start, the EM start lost on the rounding of the walk's refits: a
        Tucker (4, 2, 3) completion 18x16x14 at 10% observed, 10 dB, walked to (3, 3, 5), objective
        -88 (and 49 times the truth's norm away from it off the observed entries), under OpenBLAS's
        Haswell kernels; the EM start at (4, 4, 4) had -60, and its removals reach (4, 2, 3) at
        -142, error 0.39 against the truth, which the walk and the EM start found under its
        SkylakeX kernels. Walked after every walk, the descent changed no other selection of the
        72 completions of ``benchmarks/rank_selectors.py`` and cost 1.35-1.59x their time (median
        by observed share); :func:`tnmars.fit` asks for it only where the walk's end extrapolates
        or leaves most of the data's deviations from their mean unexplained (``doubtful``), as
        both rescued fits did."""
        kept = len(self.path)
        self.path.append(start)
        self.trail.append(start)
        end = self._fresh_removals(start)
        branch = self.path[kept:]
        del self.path[kept:]  # (the trail keeps every step taken)
        if not end.objective < best.objective:
            return best
        # the selection lists improvements only: the steps that did not beat the walk's best are
        # named in the first that does, as the walk names its uphill steps
        wins = [c for c in branch if c.objective < best.objective]
        first = branch.index(wins[0])
        wins[0].move = ",".join([c.move for c in branch[:first]] + [wins[0].move])
        self.path.extend(wins)
        return end

    def _fresh_removals(self, best: Candidate) -> Candidate:
        """Every removal again, each from fresh starts at the smaller ranks (``fresh``; the
        best of them), refitted fully; repeated while one wins. On a ring the search can
        reach the true ranks' neighbourhood from below and grow past them; every removal
        refitted from those cores may then land in a worse local minimum than a fresh start
        at the true ranks (a 30 dB TR 7x8x9x8 stopped at (5,3,3,4), 1.5x the oracle's error).
        On a loop the walk's own removal (its cores, the bond truncated by :func:`shrink`) is
        refitted again too, by :data:`LOOP_REMOVAL_SWEEPS` sweeps: ring ALS converges slowly,
        and 30 sweeps left a 10^3 ring, 30 dB, at (3, 7, 3) or (4, 6, 3) for its true (2, 6, 3)
        (objective -2236 and -2148 against -2550 and -2563) on two of three seeds; fresh starts
        refitted that long did not help, the walk's removal did."""
        if self.fresh is None:
            return best
        loops = has_loop(best.network.inputs, best.network.bonds)

        def from_fresh_starts(net: Network, bond: str, rank: int) -> Candidate | None:
            starts = self.fresh({**net.bonds, bond: rank - 1})
            found = [self.evaluate(start, self.full_sweeps, f"-{bond} (fresh start)") for start in starts]
            if loops and not self.stopped:
                found.append(self.evaluate(feasible(shrink(net, bond)), LOOP_REMOVAL_SWEEPS, f"-{bond} (longer refit)"))
            return min(found, key=lambda c: c.objective) if found else None

        return self._removal_passes(best, from_fresh_starts)

    def _classical_additions(self, best: Candidate) -> Candidate:
        """Every growing move again, each refitted from the format's truncation start at the
        larger ranks (``classical``: HOSVD, TT-SVD, TR-SVD) rather than from the walk's cores; the best
        is taken while one lowers the objective. The walk judges a move by a few sweeps from its
        current cores and looks again only at the best two: on a noiseless TT 2^8 at ranks
        (2,3,4,4,4,3,2) it judged the move to the true ranks poorly and stopped one index short
        (relative error 0.0038; TT-SVD at the true ranks is exact). One more move is tried here:
        an index more on every bond at once, for a component spread over all bonds, which no
        single index captures: from TT ranks all 1 on a noiseless 2^6 at (2,3,3,3,2) no single
        move paid (error 0.73, 0.72 after one), TT-SVD at ranks all 2 has error 0.19.

        A completion has no truncation of its data: its EM starts (``imputed``, where they pay)
        take that part. The walk of a noiseless Tucker (3, 2, 2) completion 11x7x9 plus an
        offset (true ranks (4, 3, 3)), 30% observed, never tried the index that reached them
        (from its spectral start (3, 4, 4) the first bond's growth broke the degrees-of-freedom
        cap) and stopped at (3, 3, 4), 0.89 of the spread from the truth at the missing entries,
        silently; the EM start at (4, 3, 4) leads to the exact (4, 3, 3)."""
        starts, label = (self.classical, "truncation start") if self.classical is not None else (self.imputed, "EM start")
        if starts is None:
            return best
        if self.classical is None and best.sse / self.criterion.n_obs <= self.criterion.floor:
            return best  # (at the criterion's floor no growth pays: EM starts cost 1.3x on exact ring completions)
        tried: set[tuple[int, ...]] = set()
        improved = True
        while improved and not self.stopped:
            improved = False
            found = []
            moves = self._additions(best.network) + self._room_making(best.network)
            everywhere = self._everywhere(best.network)
            if len(everywhere) > 1 and self._fits(best.network, everywhere):
                moves.append(("+all", everywhere))
            for move, grown in moves:
                ranks = {**best.network.bonds, **grown}
                key = tuple(ranks.values())
                if key in tried:
                    continue
                tried.add(key)
                for start in starts(ranks):
                    found.append(self.evaluate(start, self.full_sweeps, f"{move} ({label})"))
                if self.stopped:
                    break
            if found:
                cand = min(found, key=lambda c: c.objective)
                if cand.objective < best.objective:
                    best = cand
                    self.path.append(best)
                    self.trail.append(best)
                    improved = True
        return best

    def _room_making(self, net: Network) -> list[tuple[str, dict[str, int]]]:
        """Growing moves the criterion's degrees-of-freedom cap refuses alone, each with one index
        fewer on another bond to make room: ``(move, {bond: new rank, other: new rank})``. A walk
        that starts at the observations' limit cannot grow the bond it needs before some removal
        pays on its own, and whether a removal's short refit pays is luck: a noiseless Tucker
        (4, 2, 3) completion 18x16x14 at 10% observed (415 entries, at most 207.5 degrees of
        freedom) started at (3, 4, 4), where (4, 4, 4) has 208, and ended at (3, 4, 5), 1.76 from
        the truth with relative error 0.016 on the data; every rank vector with 4 on the first
        bond fits it exactly. Tried with the other growing moves of :meth:`_classical_additions`
        (from EM starts for a completion), so only where a growth is refused at the limit."""
        out = []
        bonds = net.bonds
        for bond, r in bonds.items():
            if r + 1 > self.max_ranks.get(bond, r + 1) or self._fits(net, {bond: r + 1}):
                continue
            trial = {**net.dims, bond: r + 1}
            if degrees_of_freedom(net.spec, trial) <= self.criterion.max_dof:
                continue  # refused for another reason (feasibility, a budget): not the cap's doing
            for other, q in bonds.items():
                if other == bond or q <= max(rank_floor(self.min_rank, other), 1):
                    continue
                if self._fits(net, {bond: r + 1, other: q - 1}):
                    out.append((f"+{bond}-{other}", {bond: r + 1, other: q - 1}))
        return out

    def _grown_everywhere(self, best: Candidate) -> Candidate:
        """On a graph without the format's starts (``classical``, ``imputed`` and ``fresh``
        all absent: a user's spec or a structure search's network on complete data), one index
        more on every bond at once from the walk's end, refitted fully; returned where it
        lowers the objective (the walk then goes on from it), else ``best``. A component of the
        data runs through every bond of a chain or tree, and no single index, nor the walk's
        few steps that do not pay, captures it: a CP rank-3 tensor 5x6x7x8 with 1% noise, fitted
        as the chain ``"iA,jAB,kBC,lC"``, stayed at its start (1, 1, 1) at relative error 0.21,
        silently, where ``"tt"`` (whose truncation starts try this move) reached (3, 3, 3) at 0.0096."""
        if self.stopped or any(f is not None for f in (self.classical, self.imputed, self.fresh)):
            return best
        everywhere = self._everywhere(best.network)
        if len(everywhere) < 2 or not self._fits(best.network, everywhere):
            return best
        net = best.network
        for bond in everywhere:
            net = grow(net, bond, self._rng)
        cand = self.evaluate(feasible(net), self.full_sweeps, "+all")
        if cand.objective < best.objective:
            self.path.append(cand)
            self.trail.append(cand)
            return cand
        return best

    def _everywhere(self, net: Network) -> dict[str, int]:
        """One index more on every bond that can take one (below its maximal rank and its
        feasible size with the others grown too): a bond already at its cap (a TT bond next to
        a mode of size 2) must not stop the move for the others (a noiseless TT 2^8 at
        (2, 3, 3, 3, 3, 3, 2) stopped at (2, 2, 2, 3, 3, 3, 2), relative error 0.02, with every
        single move tried and "+all" never, its first bond being at 2)."""
        grown = {b: r + 1 for b, r in net.bonds.items() if r + 1 <= self.max_ranks.get(b, r + 1)}
        caps = feasible_ranks(net.spec, {**net.dims, **grown})
        return {b: r for b, r in grown.items() if caps[b] >= r}

    def _prune(self, best: Candidate) -> Candidate:
        """A last look at every removal with a refit run to convergence: on clean data the
        short refits of the search may not reach the precision at which a removal is free.
        Under noise (a fit worse than ``PRUNE_BELOW`` mean squared error) the short refits'
        over-estimate is small against what a removal costs, and the pass is skipped."""
        if best.sse / self.criterion.n_obs > PRUNE_BELOW:
            return best

        def refitted_to_convergence(net: Network, bond: str, rank: int) -> Candidate:
            if len(net.terms_with(bond)) > 2:
                # a hyperedge's components are not ordered by a spectrum: on correlated data
                # the weakest one is not always the superfluous one, so try each (short refits)
                tried = [self.evaluate(shrink(net, bond, drop=j), self.full_sweeps, f"-{bond}") for j in range(rank)]
                start = min(tried, key=lambda c: c.objective).network
            else:
                start = feasible(shrink(net, bond))
            return self.evaluate(start, self.final_sweeps, f"-{bond}")

        return self._removal_passes(best, refitted_to_convergence)

    def _removal_passes(self, best: Candidate,
                        removal: Callable[[Network, str, int], Candidate | None]) -> Candidate:
        """Passes over the bonds: ``removal(network, bond, rank)`` fits the network with one
        index of ``bond`` fewer (or gives None); the first that lowers the objective is taken
        and the pass starts again, until none does."""
        improved = True
        while improved and not self.stopped:
            improved = False
            for bond, r in best.network.bonds.items():
                if r <= rank_floor(self.min_rank, bond):
                    continue
                cand = removal(best.network, bond, r)
                if cand is not None and cand.objective < best.objective:
                    best = cand
                    self.path.append(best)
                    self.trail.append(best)
                    improved = True
                    break
                if self.stopped:
                    break
        return best
