"""Checks of a finished fit that its error on the observed entries cannot show.

:func:`capped_by_observations`: a fit may not have more degrees of freedom than a share of
its observed entries can determine (``criterion.MAX_DOF_SHARE``); on small data that limit,
not the criterion, can set the ranks (a growth the cap refused would have lowered the
criterion's objective), and the fit then says so.

The rest concerns completions.

A completion is judged by its error on the observed entries, but what a user wants are the
values at the others, where nothing measures it. Two failures leave the observed error looking
fine:

- **under-determined slices.** With the other cores fixed, the entries of a core that carry
  one value of its open indices (a factor's row, a TT core's slice) only reach the data
  entries with that value. When fewer of those are observed than such a slice has
  parameters, the data leave part of it free, and the completion's values on the slice's
  unobserved entries are whatever the solver left there.
- **extrapolation.** With few observations the least-squares landscape has directions in
  which huge, cancelling components fit the observed entries and not the rest: a completion
  can match the observed entries and reach values thousands of times larger anywhere else.

:func:`completion_diagnostics` returns a message for each (the fit warns with them and the
result keeps them). A third check needs refits, so the fit runs it apart:
:func:`held_out_errors` refits the selected network without a tenth of the observed entries
(:data:`HOLDOUT_FOLDS` times, from the fit) and measures its error on them;
:func:`generalization_message` warns when that error is worse than predicting zero there.
Such a completion fits the entries it saw and predicts the rest worse than nothing: on the
fits of the EM-start study (TT and Tucker 15x16x17 at 10-20% observed) it caught the one poor
completion neither check above flagged (relative error 2.1 at the unobserved entries, median
held-out error 1.12 against 0.10-0.17 for the good ones). All three are necessary
conditions only: a completion that passes can still be wrong, and ``heldout_error`` (with
known values at the unobserved entries) is the real test.

>>> import numpy as np
>>> from tnmars import Network
>>> net = Network.tucker((6, 7, 8), (2, 2, 2), seed=0)
>>> observed = np.ones((6, 7, 8), dtype=bool); observed[3, :, :] = False; observed[3, 0, 0] = True
>>> est = net.to_tensor()
>>> [m.split(":")[0] for m in completion_diagnostics(net, observed, est, est * observed)]
['under-determined slices']
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from math import prod
from typing import Any

import numpy as np

from ..network import Network
from .criterion import Occam
from .graph import degrees_of_freedom, feasible_ranks
from .moves import grow
from .solvers import FitData, als

__all__ = ["EXACT_FIT_ERROR", "EXTRAPOLATION_LIMIT", "HOLDOUT_FOLDS", "capped_by_observations", "capped_message",
           "spectra_beyond_cap", "spectra_capped_message", "spectra_above_selection", "spectra_above_message",
           "SPECTRA_ABOVE_SHARE", "SPECTRA_ABOVE_MIN", "POOR_FIT_FROM", "poor_fit_message", "unexplained_message", "FAR_FROM_ZERO", "far_from_zero_message", "HEAVY_TAILS", "heavy_tailed", "heavy_tail_message", "ISOLATED_LEVERAGE", "ISOLATED_SIZE", "isolated_entries", "isolated_message", "UNEVEN_NOISE", "UNEVEN_SCALES", "UNEVEN_SCALES_RANKS", "uneven_noise", "uneven_noise_message", "uneven_scales_message", "slice_structure_message", "white_once_slices_scaled", "residual_is_white",
           "residual_has_structure",
           "WEAK_GENERALIZATION", "WEAK_GAP", "OVERFIT_GAP", "OVERFIT_FROM", "expected_gap", "stopped_by_max_rank", "max_rank_message",
           "completion_diagnostics", "extrapolation_ratio", "generalization_message", "held_out_errors",
           "series_bonds", "underdetermined_slices"]

#: ALS sweeps of the refit that tells whether a growth the cap refused would have paid
CAP_CHECK_SWEEPS = 100

#: random starts of that refit (the new slices): from one, a noiseless ring 3x7x5 at (2, 2, 2),
#: error 0.34, read as not capped in 3 of 10 seeds (the growth that pays found from the others),
#: so ``fit(x, "tr")`` kept quiet where the same ring written as a spec warned
CAP_CHECK_STARTS = 3

#: relative error below which a fit reproduces its data: no larger rank has anything left to
#: explain, so a cap on the ranks is not worth a warning
EXACT_FIT_ERROR = 1e-6

#: largest ratio of the completion's largest deviation from the observed mean at unobserved
#: entries to the largest observed deviation that passes without a warning
#: (:func:`extrapolation_ratio`): a low-rank completion of values of one scale stays within a
#: few times the observed range (Gaussian-like values: under 2)
EXTRAPOLATION_LIMIT = 10.0


def underdetermined_slices(network: Network, observed: np.ndarray) -> list[dict[str, Any]]:
    """Per core with open indices: the slices (one value of its open indices) that have fewer
    observed entries than parameters, capped by the slice's number of entries (a fully
    observed slice is determined). Each record: ``core``, ``indices`` (the core's open
    letters), ``slices`` (how many are under-determined, of ``of``), ``fewest`` (the smallest
    observed count among them) and ``needed`` (the slice's parameters)."""
    observed = np.asarray(observed, dtype=bool)
    output = network.output
    dims = network.dims
    found = []
    for k, term in enumerate(network.inputs):
        open_letters = [c for c in term if c in output]
        if not open_letters:
            continue
        axes_kept = [output.index(c) for c in open_letters]
        others = tuple(a for a in range(len(output)) if a not in axes_kept)
        counts = observed.sum(axis=others) if others else observed.astype(np.int64)  # one count per slice
        per_slice = prod(dims[c] for c in term if c not in output)
        slice_size = prod(dims[c] for c in output if c not in open_letters)
        needed = min(per_slice, slice_size)
        short = counts < needed
        if short.any():
            found.append({"core": k, "indices": "".join(open_letters), "slices": int(short.sum()),
                          "of": int(short.size), "fewest": int(counts[short].min()), "needed": int(needed)})
    return found


def extrapolation_ratio(estimate: np.ndarray, data: np.ndarray, observed: np.ndarray) -> float:
    """Largest deviation of ``estimate`` at the unobserved entries from the observed entries'
    mean, over the largest deviation of ``data`` from it at the observed ones (0 when every
    entry is observed; ``inf`` for constant data the estimate leaves). Measured from the mean,
    not from zero, which an offset dominates: a Tucker (3, 3, 3) completion of 10x7x7 at 20 dB
    plus 50 times its spread, 30% observed, 5.8 times the spread from its truth, reached 36 times
    the largest observed deviation and 1.5 times the largest observed magnitude."""
    observed = np.asarray(observed, dtype=bool)
    if observed.all() or not observed.any():
        return 0.0
    values = np.asarray(data)[observed]
    center = float(np.mean(values))
    unseen = float(np.max(np.abs(np.asarray(estimate) - center), where=~observed, initial=0.0))
    seen = float(np.max(np.abs(values - center)))
    # constant data: deviations of the estimate at the rounding of the values are not extrapolation
    seen = max(seen, 1e-12 * float(np.max(np.abs(values))))
    if seen == 0.0:
        return 0.0 if unseen == 0.0 else float("inf")
    return unseen / seen


def disconnected_modes(observed: np.ndarray) -> list[tuple[int, int, int]]:
    """``(p, q, blocks)`` for every pair of modes whose observed index pairs ``(i_p, i_q)`` split
    into ``blocks`` > 1 groups that share no index (e.g. sensors 0-5 observed in one period only,
    6-11 in another). Every entry of a tensor network is a product in which the slices of modes
    ``p`` and ``q`` enter once each, so scaling one group's slices of mode ``p`` by ``s`` and its
    partners' of mode ``q`` by ``1 / s`` leaves every observed entry unchanged and moves the
    entries between the groups: the data do not determine them, whatever the slice counts.

    >>> m = np.zeros((4, 3, 4), bool); m[:2, :, :2] = True; m[2:, :, 2:] = True
    >>> disconnected_modes(m)
    [(0, 2, 2)]
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    observed = np.asarray(observed, dtype=bool)
    d = observed.ndim
    found = []
    for p in range(d):
        for q in range(p + 1, d):
            pairs = observed.any(axis=tuple(k for k in range(d) if k not in (p, q)))  # (n_p, n_q)
            rows, cols = np.nonzero(pairs)
            if rows.size == 0:
                continue
            used_r, r = np.unique(rows, return_inverse=True)  # (indices never observed: the slice check's)
            used_c, c = np.unique(cols, return_inverse=True)
            n = len(used_r) + len(used_c)
            graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c + len(used_r))), shape=(n, n))
            blocks, _ = connected_components(graph, directed=False)
            if blocks > 1:
                found.append((p, q, int(blocks)))
    return found


def completion_diagnostics(network: Network, observed: np.ndarray, estimate: np.ndarray,
                           data: np.ndarray, can_lower: bool = True) -> list[str]:
    """Messages about a completion the observed entries do not determine (see the module).
    ``network``: the fitted network (its ranks and structure); ``estimate``: its dense tensor,
    ``data``: the data (any values at unobserved entries), both in the same units; ``can_lower``:
    whether a bond can go lower (at rank 1 everywhere, "lower the ranks" cannot be followed: an
    outside probe's Tucker completion at 2% observed, (1, 1, 1) and 2e4 from the truth, was
    told so, and max_rank=1 gave the same)."""
    messages = []
    n_obs = int(np.count_nonzero(observed))
    short = underdetermined_slices(network, observed)
    if short:
        parts = [f"core {s['core']} ({s['indices']}): {s['slices']} of {s['of']} slices, the sparsest with "
                 f"{s['fewest']} observed entries for {s['needed']} parameters" for s in short]
        messages.append(
            "under-determined slices: " + "; ".join(parts) + ". With the other cores fixed, such a slice is not "
            "determined by the data, nor are the completion's values on its unobserved entries. Observe more "
            "entries there" + (", or lower the ranks (max_rank)." if can_lower else f" ({_AT_LOWEST})."))
    split = disconnected_modes(observed)
    if split:
        parts = [f"modes {p} and {q} ({k} blocks)" for p, q, k in split]
        messages.append(
            "unconnected observations: the observed entries of " + ", ".join(parts) + " split into blocks of "
            "indices that are never observed together, so the completion's values between the blocks are not "
            "determined by the data (a scale can move between them without changing any observed entry), "
            "however many entries each slice has. Observe some entries across the blocks.")
    ratio = extrapolation_ratio(estimate, data, observed)
    if ratio > EXTRAPOLATION_LIMIT:
        remedy = ("observe more entries, or compare with a fit at lower ranks, max_rank=, where values that come "
                  "from the ranks and not the data change" if can_lower else
                  "observe more entries; the ranks are already at their lowest")
        messages.append(
            f"extrapolation: at unobserved entries the completion departs from the observed entries' mean by up "
            f"to {ratio:.3g} times as far as any observed entry does, so no observed entry checks those values. "
            f"Either the {n_obs:,} observed entries do not pin the network down (then its values away from them are "
            f"not to be trusted: {remedy}), or the missing entries are not missing at random: when the largest are "
            "the ones withheld, large values there are what the structure predicts (an outside probe's Tucker with "
            "its 30% largest entries missing was completed 0.005 from the truth, and lowering the ranks made that "
            "0.67).")
    return messages


#: refits of :func:`held_out_errors`, each without a different random tenth of the observed entries,
#: at least; a completion with few observed entries gets more (:func:`holdout_folds`)
HOLDOUT_FOLDS = 3
#: ... up to this many, until the refits leave out :data:`HOLDOUT_ENTRIES` entries in all: with
#: 43-291 observed entries, 4 of 44 held-out completions (2026-12-02; orders 3-4, Tucker, TT and
#: TR, 5-50% observed, noiseless to 10 dB, with and without an offset) whose missing entries were
#: 0.9-12 times the spread off read a median under the thresholds over 3 refits of 4-29 entries,
#: silently, and over 10 refits were all warned; no good completion warned either way (29 of 29).
#: Judged on 45 fresh ones: 12 of 13 more than 0.6 of the spread off warned (11 with 3 refits),
#: every one more than the spread off, no good one (32)
HOLDOUT_MAX_FOLDS = 10
HOLDOUT_ENTRIES = 300
#: share of the observed entries each refit leaves out
HOLDOUT_SHARE = 0.1
#: ALS sweeps of each refit (from the fitted network, which is close: most stop earlier)
HOLDOUT_SWEEPS = 100


def holdout_folds(n_obs: int, share: float = HOLDOUT_SHARE) -> int:
    """Refits for :func:`held_out_errors`: :data:`HOLDOUT_FOLDS`, more (up to
    :data:`HOLDOUT_MAX_FOLDS`) until they leave out :data:`HOLDOUT_ENTRIES` entries in all: the
    median of three refits scoring a few entries each missed poor completions.

    >>> holdout_folds(5000), holdout_folds(500), holdout_folds(60)
    (3, 6, 10)
    """
    per_fold = max(int(share * n_obs), 1)
    return int(min(HOLDOUT_MAX_FOLDS, max(HOLDOUT_FOLDS, -(-HOLDOUT_ENTRIES // per_fold))))


def held_out_errors(network: Network, data: FitData, seed: int | np.random.Generator | None = 0,
                    folds: int | None = None, share: float = HOLDOUT_SHARE, sweeps: int = HOLDOUT_SWEEPS,
                    should_stop: Callable[[], bool] | None = None) -> list[float]:
    """Cross-validation of a completion at its ranks: ``folds`` times (default
    :func:`holdout_folds`), leave a random ``share`` of the observed entries out, refit ``network`` to the rest (ALS from ``network``) and
    measure its relative error on the entries left out against their deviations from the mean
    of the entries the refit saw, ``||T - y|| / ||y - mean||`` there (against ``||y||``, a large
    offset hid a completion that predicted the left-out entries' variation no better than their
    mean: 0.017 "held out" for 0.89 of the spread, no warning). The
    refits start from a fit that saw those entries, so the errors lean optimistic: a large
    one is a finding, a small one proves nothing. Empty when ``data`` is fully observed or
    has fewer than ``2 / share`` observed entries, or when ``should_stop()`` (asked after
    every ALS sweep: the fit's progress bar and callback) turns true."""
    if data.weights is None or data.n_obs * share < 2:
        return []
    if folds is None:
        folds = holdout_folds(data.n_obs, share)
    be = data.backend
    xp = be.xp
    observed = np.asarray(be.to_numpy(data.weights), dtype=bool)
    where = np.flatnonzero(observed)
    y = np.asarray(be.to_numpy(data.y))
    rng = np.random.default_rng(seed)
    stopped = False

    def stop() -> bool:  # asked once per sweep, remembered: a stop ends every refit
        nonlocal stopped
        stopped = stopped or bool(should_stop is not None and should_stop())
        return stopped

    errors = []
    for _ in range(folds):
        left_out = np.zeros(observed.shape, dtype=bool)
        left_out.flat[rng.choice(where, int(share * where.size), replace=False)] = True
        kept = FitData.from_arrays(data.y, xp.asarray(observed & ~left_out), be)
        refit, _ = als(network, kept, sweeps=sweeps, should_stop=stop)
        if stopped:
            return []
        estimate = np.asarray(be.to_numpy(refit.to_tensor()))
        truth = y[left_out]
        seen = y[observed & ~left_out]
        norm = float(np.linalg.norm(truth - (seen.mean() if seen.size else 0.0)))
        errors.append(float(np.linalg.norm(estimate[left_out] - truth)) / norm if norm > 0 else 0.0)
    return errors


#: held-out error (median of :func:`held_out_errors`) above which, at more than
#: :data:`WEAK_GAP` times the error on the fitted entries, a completion is said to explain little
#: of what it did not see (a Tucker (3, 4, 2) at 5% observed, 20 dB: 0.92 held out against 0.28
#: fitted, no warning before; an over-fit at half the observations as degrees of freedom stays
#: near 1.7x, a good completion near 1x). 0.8 until 2026-12-01: two offset completions at 10-20%
#: observed, 0.68 and 1.15 of the spread from the truth at their missing entries, read 0.72 and
#: 0.80 against 0.34 and 0.36 fitted, silently. At 0.6, of the 72 completions of
#: ``benchmarks/rank_selectors.py`` one more warns (a Tucker at 10% observed and 10 dB, 0.40
#: from the truth, 0.745 held out against 0.26), of 64 mixed completions at 20-50% observed
#: three more, all 0.35-0.81 from the truth and warned already for another reason
WEAK_GENERALIZATION = 0.6
#: see :data:`WEAK_GENERALIZATION`
WEAK_GAP = 2.0
#: a held-out error (median of :func:`held_out_errors`) above :data:`OVERFIT_FROM` and more than
#: this many times what the error on the fitted entries leads to expect, however far under
#: :data:`WEAK_GENERALIZATION`, is an over-fit. A fit of ``p`` degrees of freedom to ``n``
#: entries leaves about ``1 - p/n`` of the noise's variance on them and ``1 + p/n`` on entries it
#: did not see (least squares), so the expected ratio of the errors is
#: ``sqrt((1 + p/n) / (1 - p/n))``: 1.6 at ``p/n = 0.44`` (a TT completion at its true ranks near
#: the observations' limit read 0.104 held out against 0.043 fitted, 2.4x). Found by an outside
#: probe (2026-12-02): a Tucker (3, 4, 2) completion, 50% observed, noise 0.1-10x by slice, came
#: back at (5, 7, 7), 0.18 from the truth at the missing entries (the true ranks: 0.012), held
#: out 0.185 against 0.057 fitted (3.2x, 3.0x its expected ratio), and at (7, 12, 9), 0.66 from
#: the truth (7.5x; 6.4x), both without a word. Tuned on 61 completions of random truths
#: (``heldout_random`` seeds 40-47, TT, Tucker, TR, 30% and 60% observed, 10 and 20 dB): the fits
#: within twice the noise of their truth at the missing entries read at most 1.37x their
#: expected ratio; one fit more warns here that no generalization rule warned of (0.22 from the
#: truth at 20 dB, 1.81x)
OVERFIT_GAP = 1.75
#: see :data:`OVERFIT_GAP`: under this held-out error a gap is the noise-free scale's, not a warning
OVERFIT_FROM = 0.1


def expected_gap(dof_share: float) -> float:
    """The ratio of held-out to fitted error that least squares with ``p/n = dof_share`` leads to
    expect of a fit that generalizes (:data:`OVERFIT_GAP`)."""
    share = min(max(float(dof_share), 0.0), 0.9)
    return math.sqrt((1.0 + share) / (1.0 - share))


#: what the warnings say instead of "lower the ranks" when no bond can go lower
_AT_LOWEST = "the ranks are already at their lowest, so lowering them is no remedy"


def generalization_message(errors: Sequence[float], relative_error: float, dof_share: float = 0.0,
                           can_lower: bool = True) -> str | None:
    """A warning when the median of :func:`held_out_errors` exceeds 1 (the refitted completion
    predicts observed entries it did not see worse than their mean would; a good fit's held-out
    error is about its noise level, under 1 at any signal-to-noise ratio), or exceeds
    :data:`WEAK_GENERALIZATION` and :data:`WEAK_GAP` times ``relative_error`` (the fit's error
    against the data's deviations from their mean: it explains much less of the entries it did not
    see while fitting the others well), or exceeds :data:`OVERFIT_FROM` and :data:`OVERFIT_GAP`
    times the gap ``dof_share`` (the fit's degrees of freedom per observed entry) leads to expect
    (:func:`expected_gap`): an over-fit, said only where the ranks ``can_lower`` (at rank 1, or
    at ``min_rank``, a gap is the refits' instability on few entries: a noiseless Tucker
    completion of 49 entries at (1, 1, 1) read 2.8x). ``None`` otherwise."""
    if not errors:
        return None
    median = float(np.median(errors))
    remedy = ("observe more entries, or lower the ranks (max_rank)." if can_lower else
              f"observe more entries ({_AT_LOWEST}).")
    refitted = (f"refitted {len(errors)} times without a random {HOLDOUT_SHARE:.0%} of the observed entries, the "
                f"network predicts those entries with a median relative error of {median:.3g}")
    if median > 1.0:
        return (f"poor generalization: {refitted} (against their deviations from the mean), worse than predicting "
                f"the mean, against {relative_error:.3g} on the "
                f"entries it fits. Its values at the unobserved entries are not to be trusted: {remedy}")
    if median > WEAK_GENERALIZATION and median > WEAK_GAP * relative_error:
        return (f"weak generalization: {refitted} (against their deviations from the mean), against "
                f"{relative_error:.3g} on the entries it fits: it explains only about "
                f"{max(0.0, 1.0 - median**2):.0%} of the variation of what it did not see. Its values at "
                f"the unobserved entries are rough at best: {remedy}")
    expected = expected_gap(dof_share)
    if can_lower and median > OVERFIT_FROM and median > OVERFIT_GAP * expected * relative_error:
        return (f"over-fitting: {refitted} (against their deviations from the mean), "
                f"{median / max(relative_error, 1e-300):.2g} times its error on the entries it fits "
                f"({relative_error:.3g}), where a completion that generalizes stays near {expected:.2g} times "
                f"at its {dof_share:.2g} degrees of freedom per observed entry. Its ranks "
                "likely fit noise (noise whose level differs between slices, or heavy-tailed noise, mislead the "
                "criterion), and its values at the unobserved entries are farther off than its fit suggests: "
                "compare lower ranks (max_rank=...) by their held-out error.")
    return None


def capped_by_observations(network: Network, max_ranks: Mapping[str, int], max_dof: float, data: FitData,
                           criterion: Occam, objective: float, seed: int | None = 0) -> tuple[list[str], bool]:
    """The bonds whose growth by one index the degrees-of-freedom cap refused although the
    criterion would have taken it: ``network`` (its objective ``objective``) is at a bond
    below its maximal rank whose growth exceeds ``max_dof``, and that grown network, refitted
    (:data:`CAP_CHECK_SWEEPS` ALS sweeps from ``network`` plus a small random slice, up to
    :data:`CAP_CHECK_STARTS` slices), has a lower ``criterion`` objective. Empty when every growth fits within the cap (the criterion
    stopped the ranks) or none the cap refused would pay: a fit whose true ranks sit just
    below the cap is not reported.

    When no single growth is refused and pays, bonds in series (bridges of the graph that cut
    the same open modes, as ``a`` and ``b`` of ``ia,ab,bj``) are grown together the same way:
    one at a time they add nothing, so the search stops at a rank the data could not raise;
    such a group is returned, and the flag is True. So is a pair: a bond whose growth alone the
    other sizes make useless (:func:`feasible_ranks`), with another that makes it useful."""
    ranks = network.bonds
    dims = network.dims
    growable = [b for b, r in ranks.items() if r < max_ranks.get(b, r)]
    blocked = [b for b in growable if degrees_of_freedom(network.spec, {**dims, b: dims[b] + 1}) > max_dof]

    def pays(grown: Callable[[np.random.Generator], Network], starts: int) -> bool:
        rng = np.random.default_rng(seed)  # (the first start draws what grow(network, bond, seed) draws)
        for _ in range(starts):
            fitted, sse = als(grown(rng), data, sweeps=CAP_CHECK_SWEEPS)
            if criterion.objective(sse, degrees_of_freedom(fitted.spec, fitted.dims)) < objective:
                return True
        return False

    paying = []
    for bond in blocked:
        # a CP component starts from the residual's leading rank-1 term, as in the search: from
        # small random slices, ALS can fail to raise it at all (size-1 modes multiply them); that
        # start is not random, so one is enough
        residual = data.residual(network) if len(network.terms_with(bond)) > 2 else None
        if pays(lambda rng, b=bond, r=residual: grow(network, b, rng, residual=r),
                1 if residual is not None else CAP_CHECK_STARTS):
            paying.append(bond)
    if paying:
        return paying, False

    def grown_together(group: Sequence[str]) -> Callable[[np.random.Generator], Network]:
        def build(rng: np.random.Generator) -> Network:
            together = network
            for bond in group:
                together = grow(together, bond, rng)
            return together
        return build

    for group in series_bonds(network, growable):
        if degrees_of_freedom(network.spec, {**dims, **{b: dims[b] + 1 for b in group}}) <= max_dof:
            continue
        if pays(grown_together(group), CAP_CHECK_STARTS):
            return group, True
    # a bond whose growth alone is no rank at all (Tucker's (2, 1, 1): a mode's rank is at most the
    # product of the others'), grown with each other bond that makes it one: an outside probe's
    # n x 2 x 2 Tucker (2, 2, 1) came back at (1, 1, 1), 0.45 off, without a word
    # (each pair once; one start for a completion, whose refits are conjugate-gradient solves: three
    # starts of three pairs took 30 s of a 2%-observed Tucker completion's 50)
    useless = [b for b in growable if feasible_ranks(network.spec, {**dims, b: dims[b] + 1})[b] <= dims[b]]
    tried: set[frozenset[str]] = set()
    for bond in useless:
        for other in growable:
            pair = frozenset((bond, other))
            if other == bond or pair in tried:
                continue
            tried.add(pair)
            grown_dims = {**dims, bond: dims[bond] + 1, other: dims[other] + 1}
            if (feasible_ranks(network.spec, grown_dims)[bond] <= dims[bond]
                    or degrees_of_freedom(network.spec, grown_dims) <= max_dof):
                continue
            if pays(grown_together([bond, other]), CAP_CHECK_STARTS if data.weights is None else 1):
                return [bond, other], True
    return [], False


def series_bonds(network: Network, bonds: Sequence[str]) -> list[list[str]]:
    """Groups of two or more of ``bonds`` in series: bridges of the core graph (a bond between
    two cores whose removal disconnects it) that split the open modes the same way. Only all
    of a group together can raise the rank across that cut. Open modes of size 1 do not count:
    on data of shape (1, 6, 6) the Tucker bonds of the two 6-modes cut the same matrix."""
    terms, output = network.inputs, set(network.output)
    sized = frozenset(c for c in output if network.dims[c] > 1)
    groups: dict[frozenset, list[str]] = {}
    for bond in bonds:
        holders = [k for k, term in enumerate(terms) if bond in term]
        if len(holders) != 2:
            continue  # a hyperedge
        seen, stack = {holders[0]}, [holders[0]]
        while stack:
            for index in terms[stack.pop()]:
                if index == bond or index in output:
                    continue
                for k, term in enumerate(terms):
                    if k not in seen and index in term:
                        seen.add(k)
                        stack.append(k)
        if holders[1] in seen:
            continue  # on a loop: not a bridge
        side = frozenset(c for k in seen for c in terms[k] if c in sized)
        if not side or side == sized:
            continue  # it cuts off only size-1 modes: no rank across it but 1
        key = min(side, sized - side, key=sorted)
        groups.setdefault(key, []).append(bond)
    return [group for group in groups.values() if len(group) > 1]


def capped_message(bonds: Sequence[str], n_obs: int, max_dof: float, relative_error: float,
                   together: bool = False, complete: bool = False) -> str:
    """The warning of :func:`capped_by_observations`. ``complete``: the data are the whole tensor,
    so more observations cannot be had (an outside probe: "larger ranks need more data" was said
    of an n x 2 x 2 tensor, capped alike at every n)."""
    names = ", ".join(repr(b) for b in bonds)
    where = (f"one more index on each of bonds {names} together (none alone helps)" if together else
             f"one more index on bond{'s' if len(bonds) > 1 else ''} {names}")
    last = ("The data are the whole tensor: its size, not missing entries, sets the limit (ranks that large would "
            "leave it under two entries per degree of freedom, little to compress), so no selection can go past "
            "it. If you know the ranks, fit them as max_rank=... with min_rank=... at those ranks (one per bond; "
            "fitted as asked, past the limit, with a warning)." if complete else "Larger ranks need more data.")
    return (f"ranks capped by the {'size of the data' if complete else 'number of observations'}: {where} "
            f"would fit the data better by the criterion, but would give the network more than "
            f"{max_dof:g} degrees of freedom, the most a fit lets {n_obs:,} observed entries determine. The ranks "
            f"were set by that limit, not chosen; the fit's relative error is {relative_error:.3g}. {last}")


def spectra_beyond_cap(spectral_ranks: Mapping[str, Sequence[int]] | None, template: Network,
                       max_dof: float) -> tuple[str, tuple[int, ...], int] | None:
    """The spectral proposal (selector, ranks, degrees of freedom) with the fewest degrees of
    freedom among those with more than ``max_dof``, or None: the unfolding spectra then show
    more structure than the observations let the criterion judge, and the selection, made below
    the cap, may leave it out (a noiseless Tucker 10x10x10 at (8, 8, 8): 560 degrees of freedom
    for 1,000 entries; the search stopped at (1, 1, 1) with relative error 0.95, without a
    word). The most modest reading past the limit is the one named: on noiseless data MDL can
    read far past the truth (17 for a CP matrix of rank 9, where EVBMF read 9)."""
    beyond = []
    for selector, ranks in (spectral_ranks or {}).items():
        dof = degrees_of_freedom(template.spec, {**template.dims, **dict(zip(template.bonds, ranks))})
        if dof > max_dof:
            beyond.append((dof, selector, tuple(ranks)))
    if not beyond:
        return None
    dof, selector, ranks = min(beyond, key=lambda item: item[0])
    return selector, ranks, dof


def spectra_capped_message(selector: str, ranks: Sequence[int], dof: int, n_obs: int, max_dof: float,
                           relative_error: float) -> str:
    return (f"the unfolding spectra read ranks {tuple(ranks)} ({selector.upper()}), a network of {dof:,} degrees "
            f"of freedom, more than the {max_dof:g} that {n_obs:,} observed entries let the criterion judge; the "
            f"ranks were selected below that limit and the fit's relative error is {relative_error:.3g}. The data "
            "may hold structure this many entries cannot determine: larger ranks need more data (or give them "
            "yourself, as max_rank=... with min_rank=..., and judge the fit on held-out data).")


#: a bond selected at most this share of the rank every spectral selector read for it (and
#: :data:`SPECTRA_ABOVE_MIN` indices or more below) is said to leave out structure the spectra
#: show (:func:`spectra_above_selection`)
SPECTRA_ABOVE_SHARE = 0.5
#: see :data:`SPECTRA_ABOVE_SHARE`
SPECTRA_ABOVE_MIN = 3


def spectra_above_selection(spectral_ranks: Mapping[str, Sequence[int]] | None, bonds: Sequence[str],
                            ranks: Sequence[int]) -> list[tuple[str, int, int]]:
    """``(bond, selected, lowest reading)`` for every bond whose selected rank is at most
    :data:`SPECTRA_ABOVE_SHARE` of what each spectral selector (EVBMF, MDL) read on its
    unfolding, and at least :data:`SPECTRA_ABOVE_MIN` indices below it: data whose spectrum
    decays without a clear rank (natural images, power laws), where the criterion charges an
    index more than it explains long before the spectrum reaches the noise. An outside probe
    (2026-12-02): a 400x300 matrix with singular values 100/k plus noise at 0.05 came back at
    rank 11, 0.228 from the truth, without a word, where EVBMF read 39 (0.133), MDL 22, and the
    best truncation is rank 66 (0.123). On data of an exact rank the selectors read about it
    and the criterion selects it: nothing is said (none of 129 fits of random TT, Tucker and TR
    truths at 0, 10 and 30 dB, ``heldout_random`` seeds 40-55)."""
    readings = [list(r) for r in (spectral_ranks or {}).values() if len(r) == len(bonds)]
    if not readings:
        return []
    out = []
    for i, (bond, rank) in enumerate(zip(bonds, ranks)):
        lowest = min(int(r[i]) for r in readings)
        if rank <= SPECTRA_ABOVE_SHARE * lowest and lowest - rank >= SPECTRA_ABOVE_MIN:
            out.append((bond, int(rank), lowest))
    return out


def spectra_above_message(found: Sequence[tuple[str, int, int]], relative_error: float) -> str:
    bonds = ", ".join(f"{b!r} at {r} where the spectra read {lowest} or more" for b, r, lowest in found)
    return (f"the ranks may leave out structure the unfolding spectra show: {bonds} (EVBMF and MDL, as the "
            f"proposals read them); relative error {relative_error:.3g}. Data whose spectrum decays without a "
            "clear rank (natural images, power laws) have no rank to find, and the criterion stops where one "
            "more index costs more parameters than it explains, well before the spectrum reaches the noise. "
            "To approximate or denoise rather than select, lower prior_strength (0.5 or 0.2 keep more), or give "
            "the ranks (max_rank=... with min_rank=...) and judge them on held-out data.")


#: excess kurtosis of a fit's residuals from which it warns that the noise is not Gaussian. On a
#: Tucker 20x18x16 at (3, 4, 2), 10 and 20 dB, seeds 0-1 (2026-11-30): Gaussian noise -0.03-0.09,
#: uniform -1.2, heteroscedastic (scales 0.2-2) 1.7-1.9, Laplace 2.4-3.7, Student t(5) 3.0-3.4, all
#: at the true ranks; t(3) 10.5 (one index more per mode) and 23.8 (true ranks), noise proportional
#: to the signal 10.7-11.4, 1% outliers of 10x 61-82, t(2) 71-76, each but one over-selected
HEAVY_TAILS = 6.0


def heavy_tailed(kurtosis: float, n_obs: int) -> bool:
    """Whether residuals with this excess kurtosis are heavy-tailed beyond doubt: above
    :data:`HEAVY_TAILS`, and above eight standard errors of a Gaussian sample's (``sqrt(24/n)``)."""
    return n_obs >= 50 and kurtosis > max(HEAVY_TAILS, 8.0 * math.sqrt(24.0 / n_obs))


def heavy_tail_message(kurtosis: float, positive: bool = True) -> str:
    """``positive``: the data are all above zero, where a logarithm is a remedy (said of 0/1 data
    and of counts with zeros, it could not be followed: an outside probe)."""
    return (f"the residuals are heavy-tailed (excess kurtosis {kurtosis:.3g}; Gaussian noise has 0): the criterion "
            "models the noise as Gaussian, and with outliers, heavy-tailed noise or noise that grows with the signal it "
            "can keep rank indices that only fit the largest residuals (on such data the ranks came out above the "
            "signal's). Look at the largest residuals (entries known to be corrupted can be left out with "
            "observed=False)" + ("; noise that grows with positive data's values is closer to Gaussian on their "
                                 "logarithm." if positive else "."))


#: leverage of an index in the column space of a mode's unfolding of the fit from which the index
#: is that space's own direction (:func:`isolated_entries`), in modes of rank at most ``n - 2``. A
#: random r-dimensional space of n indices gives leverages of mean r / n, distributed as
#: Beta(r / 2, (n - r) / 2): at rank n - 2 above this with probability about 5e-4 (n - 2); on clean
#: fits of Tucker, TT and CP 20x25x15 (4 seeds) the largest was 0.69; at 0.99 and rank n - 1 two
#: of 200 random rings (ranks 9 of 10 and 6 of 7) had entries counted. On the outlier probe's fit
#: (10 entries of 8,000 moved by 20x the data's spread) every moved index's was above 1 - 1e-6
ISOLATED_LEVERAGE = 0.999
#: the fitted value's size, over the fit's RMS, from which an entry counts as isolated
ISOLATED_SIZE = 4.0
#: a mode's unfolding is read when ``entries x its size`` is at most this (Gram matrix flops)
ISOLATED_WORK = 2e9


def isolated_entries(estimate: np.ndarray, observed: np.ndarray | None = None, limit: int = 5
                     ) -> tuple[int, list[tuple[int, ...]]]:
    """``(count, entries)``: observed entries that the fit gives directions of their own, and up
    to ``limit`` of them, largest first. The modes read are those whose unfolding of the fit has
    a rank at most two below full (at least two such modes, or nothing is said). An entry counts
    when in every one of them its index is (nearly) a direction of that unfolding's column space
    (leverage above :data:`ISOLATED_LEVERAGE`), and its fitted value is above
    :data:`ISOLATED_SIZE` times the fit's RMS: a rank index per mode spent on one entry. Nothing
    is said when such indices take every direction of a mode (a narrow separable bump at rank 1,
    or data that are a few entries: then those entries are the structure).

    That is how a few outlying entries look once fitted: an outside probe (2026-12-02) moved 10
    of 8,000 entries of a Tucker (3, 4, 2) with 1% noise by 20x its spread, and every format
    selected near-full ranks (Tucker (12, 12, 11), CP 14) at a relative error of 0.007,
    0.71 from the truth, with residuals too small for any check of their tails.

    >>> rng = np.random.default_rng(0)
    >>> x = np.einsum("ia,ja,ka->ijk", *(rng.standard_normal((12, 2)) for _ in range(3)))
    >>> isolated_entries(x)[0]
    0
    >>> x[3, 4, 5] += 40.0
    >>> isolated_entries(x)
    (1, [(3, 4, 5)])
    """
    est = np.asarray(estimate, dtype=np.float64)
    if est.ndim < 2 or est.size == 0:
        return 0, []
    rms = math.sqrt(float(np.vdot(est, est)) / est.size)
    if not rms > 0:
        return 0, []
    localised: list[tuple[int, np.ndarray]] = []
    for k, n in enumerate(est.shape):
        if n < 2 or est.size * n > ISOLATED_WORK or est.size // n < 2:
            continue
        w, v = np.linalg.eigh(_mode_gram(est, k))
        rank = int((w > 1e-10 * max(float(w[-1]), 0.0)).sum())
        if rank > n - 2 or rank == 0:  # (at full rank every index is a direction of it; one below, nearly)
            continue
        flags = np.einsum("ij,ij->i", v[:, -rank:], v[:, -rank:]) > ISOLATED_LEVERAGE
        if int(flags.sum()) >= rank:  # (no direction left for structure besides them: a narrow bump at rank
            return 0, []              # 1, or sparse data, is what the data are, not outliers on structure)
        localised.append((k, flags))
    if len(localised) < 2:
        return 0, []
    if len(localised) == est.ndim and all(int(flags.sum()) == 1 for _, flags in localised):
        # one index per mode, in every mode: one entry, whatever its fitted value (an entry of exact data
        # set to 0, a missing value written as 0, took a rank index per bond at a fitted value of 0)
        entry = tuple(int(np.flatnonzero(flags)[0]) for _, flags in localised)
        if observed is None or bool(observed[entry]):
            return 1, [entry]
        return 0, []
    # the large entries, a block of mode 0 at a time (an array of |estimate| took the fit's peak memory
    # from 2.6 to 4.0 times the data's)
    threshold = ISOLATED_SIZE * rms
    found_blocks = []
    for start, stop in _blocks(est):
        block = est[start:stop]
        large = (block > threshold) | (block < -threshold)
        if observed is not None:
            large &= np.asarray(observed[start:stop], dtype=bool)
        at = np.argwhere(large)
        at[:, 0] += start
        found_blocks.append(at)
    entries = np.concatenate(found_blocks)
    if entries.size == 0:
        return 0, []
    keep = np.ones(len(entries), dtype=bool)
    for k, flags in localised:
        keep &= flags[entries[:, k]]
    found = entries[keep]
    order = np.argsort(-np.abs(est[tuple(found.T)]), kind="stable")
    return len(found), [tuple(int(i) for i in found[j]) for j in order[:limit]]


#: entries of the data-sized temporaries of :func:`isolated_entries`, at most (a block of mode 0)
_BLOCK_ENTRIES = 1 << 16


def _blocks(x: np.ndarray) -> list[tuple[int, int]]:
    """Ranges of mode 0 whose slabs hold about :data:`_BLOCK_ENTRIES` entries (one slice at least)."""
    step = max(1, _BLOCK_ENTRIES // max(x.size // max(x.shape[0], 1), 1))
    return [(i, min(i + step, x.shape[0])) for i in range(0, x.shape[0], step)]


def _mode_gram(x: np.ndarray, k: int) -> np.ndarray:
    """``X_(k) X_(k)^T`` of mode ``k``'s unfolding, summed over slabs of mode 0 (mode 0's own
    unfolding is a view): no copy of ``x`` the size of the data."""
    n = x.shape[k]
    if k == 0:
        m = x.reshape(n, -1)
        return m @ m.T
    gram = np.zeros((n, n))
    for start, stop in _blocks(x):
        m = np.moveaxis(x[start:stop], k, 0).reshape(n, -1)
        gram += m @ m.T
    return gram


#: at most this many entries holding :data:`DOMINANT_SHARE` of the data's squared norm make the data
#: "dominated" (:func:`dominant_entries`)
DOMINANT_MOST = 10
DOMINANT_SHARE = 0.9
#: the fit's relative error on the other entries from which :func:`dominant_entries` reads their residual
DOMINANT_BULK_ERROR = 0.1


def dominant_entries(y: np.ndarray, residual: np.ndarray, observed: np.ndarray | None = None, seed: Any = 0
                     ) -> tuple[list[tuple[int, ...]], float, float] | None:
    """``(entries, share, error)`` when at most :data:`DOMINANT_MOST` observed entries of the data
    ``y`` hold :data:`DOMINANT_SHARE` of its squared norm (``share``), the fit's relative
    ``error`` on every other entry is above :data:`DOMINANT_BULK_ERROR` (and ten times the
    overall one), and what the fit leaves on those entries is structure
    (:func:`residual_has_structure`), not noise; ``None`` otherwise. The relative error is then
    the error on those few entries: an outside probe (2026-12-04) set one entry of an exact
    Tucker 10^3 at (2, 2, 2) to 1e6, a sentinel; the fit came back at (1, 1, 1), the spike alone,
    with a relative error of 3e-5 and 0.99 of the truth off on every other entry, without a word
    (its one direction was the spike's, which no outlier check can flag). A real peak on noise
    leaves noise on the other entries, and nothing is said.

    >>> rng = np.random.default_rng(0)
    >>> y = np.einsum("ia,ja,ka->ijk", *(rng.standard_normal((10, 2)) for _ in range(3)))
    >>> y[2, 2, 2] = 1e6
    >>> fit = np.zeros_like(y); fit[2, 2, 2] = 1e6
    >>> entries, share, error = dominant_entries(y, fit - y)
    >>> entries, round(error, 3)
    ([(2, 2, 2)], 1.0)
    """
    y = np.asarray(y)
    if y.ndim < 2 or y.size <= DOMINANT_MOST:
        return None
    yy = y.reshape(-1)
    seen = None if observed is None else np.asarray(observed, dtype=bool).reshape(-1)
    total = float(np.vdot(yy, yy))
    if not total > 0:
        return None
    # the largest entries, a block at a time (no data-sized temporary: this runs after every fit)
    candidates, values = [], []
    for start in range(0, yy.size, _BLOCK_ENTRIES):
        block = np.abs(yy[start:start + _BLOCK_ENTRIES], dtype=np.float64)
        if seen is not None:
            block[~seen[start:start + _BLOCK_ENTRIES]] = 0.0
        k = min(DOMINANT_MOST, block.size)
        at = np.argpartition(block, -k)[-k:]
        candidates.append(at + start)
        values.append(block[at])
    index, value = np.concatenate(candidates), np.concatenate(values)
    order = np.argsort(-value, kind="stable")[:DOMINANT_MOST]
    held = np.cumsum(value[order] ** 2)
    count = int(np.searchsorted(held, DOMINANT_SHARE * total)) + 1
    if count > DOMINANT_MOST:
        return None
    chosen = index[order[:count]]
    rr = np.asarray(residual).reshape(-1)
    rest, rest_residual = 0.0, 0.0
    for start in range(0, yy.size, _BLOCK_ENTRIES):  # the other entries' norms, exactly (subtracting the
        stop = start + _BLOCK_ENTRIES                  # dominant entries' squares would cancel: 1e12 - 1e12)
        yb, rb = np.array(yy[start:stop], dtype=np.float64), np.array(rr[start:stop], dtype=np.float64)
        inside = chosen[(chosen >= start) & (chosen < stop)] - start
        yb[inside] = 0.0
        rb[inside] = 0.0
        rest += float(np.vdot(yb, yb))
        rest_residual += float(np.vdot(rb, rb))
    if not rest > 0:  # (the data are those entries)
        return None
    error = math.sqrt(rest_residual / rest)
    overall = math.sqrt(float(np.vdot(rr, rr)) / total)
    if not (error > DOMINANT_BULK_ERROR and error > 10.0 * overall):
        return None
    others = np.ones(y.size, dtype=bool) if seen is None else seen.copy()
    others[chosen] = False
    left = np.array(rr, dtype=np.float64)
    left[chosen] = 0.0
    if not residual_has_structure(left.reshape(y.shape), others.reshape(y.shape), seed):
        return None
    entries = [tuple(int(i) for i in np.unravel_index(int(j), y.shape)) for j in chosen]
    return entries, float(held[count - 1] / total), error


def dominant_message(entries: Sequence[tuple[int, ...]], share: float, error: float, relative_error: float) -> str:
    one = len(entries) == 1
    shown = ", ".join(str(e) for e in entries)
    held = f"all but {1.0 - share:.2g}" if share > 0.9999 else f"{share:.1%}"
    return (f"{len(entries)} entr{'y' if one else 'ies'} ({shown}) hold{'s' if one else ''} {held} of the data's "
            f"squared norm, and the fit follows {'it' if one else 'them'}: its relative error ({relative_error:.3g}) "
            f"is that of {'this entry' if one else 'these entries'}; on every other entry it is {error:.3g}, and what "
            f"it leaves there is structure, not noise, so the ranks were chosen for {'it' if one else 'them'}. A "
            f"sentinel value (1e6, -999) or a unit error does this: if {'it is' if one else 'they are'} corrupted, "
            f"leave {'it' if one else 'them'} out (observed=False there) and fit again.")


def isolated_message(count: int, entries: Sequence[tuple[int, ...]], relative_error: float) -> str:
    shown = ", ".join(str(e) for e in entries) + (", ..." if count > len(entries) else "")
    one = count == 1
    return (f"{count} entr{'y' if one else 'ies'} ({shown}) {'has' if one else 'have'} rank directions of "
            f"{'its' if one else 'their'} own: in the unfoldings of the fit, the index of {'it' if one else 'each'} "
            "is a direction by itself, so the fit spends a rank index per mode on single entries far from what the "
            "rest of the data say, as it does on outliers. The ranks are then above the structure of the other "
            f"entries, and the relative error ({relative_error:.3g}) does not say how far the fit is from it. If "
            f"{'it is' if one else 'these entries are'} corrupted, leave {'it' if one else 'them'} out "
            "(observed=False there) and fit again; if real, so are the ranks.")


#: the residual's mean square per slice of a mode, 90th over 10th percentile of the slices, above
#: which the fit warns that the noise level differs across them. Gaussian noise of one level gives
#: about 2.3 with 20 entries a slice, less with more. An outside probe (2026-12-02): a Tucker
#: (3, 4, 2) on 15x16x17 with 1% noise, its 15 slices of mode 0 scaled from 10^-1 to 10^1, came
#: back at (3, 5, 3); from 10^-2 to 10^2 at (7, 16, 17), 1.6x "compression", without a word (the
#: noise fails no other check: kurtosis 7.4-21, but the residual is not white by slices only)
UNEVEN_NOISE = 10.0
#: fewest slices, and fewest observed entries in a slice, for :func:`uneven_noise` to judge
UNEVEN_NOISE_SLICES, UNEVEN_NOISE_ENTRIES = 5, 20


#: the data's own mean square per slice, 90th over 10th percentile, above which the fit warns that
#: the slices differ in scale (1e4: a factor 100 in RMS; that Tucker's own slices span 22 in mean
#: square, 379 scaled 10^-1 ... 10^1, 2.4e5 scaled 10^-2 ... 10^2). In the last case the fit took
#: the noise into near-full ranks, leaving a residual too small to judge (relative error 1.2e-4).
#: Only said of such ranks (a bond at :data:`UNEVEN_SCALES_RANKS` of its cap or more): slices in
#: different units with one noise level were fitted at the true ranks, 1.8e-4 from the truth, and
#: standardizing them as the warning said made that 0.056 (an outside probe, 2026-12-02)
UNEVEN_SCALES = 1e4
#: see :data:`UNEVEN_SCALES`
UNEVEN_SCALES_RANKS = 0.75


def uneven_noise(residual: np.ndarray, observed: np.ndarray | None = None,
                 threshold: float = UNEVEN_NOISE) -> tuple[int, float] | None:
    """``(mode, spread)`` for the mode whose slices' residual mean squares differ most, where
    that spread (90th over 10th percentile, slices of at least :data:`UNEVEN_NOISE_ENTRIES`
    observed entries, not all zero) exceeds ``threshold``; None otherwise. ``residual`` is zero where not
    observed (given the data, with :data:`UNEVEN_SCALES`, it reads the slices' scales).

    >>> rng = np.random.default_rng(0)
    >>> even = rng.standard_normal((12, 30, 30))
    >>> uneven_noise(even) is None, uneven_noise(even * np.logspace(-1, 1, 12)[:, None, None])[0]
    (True, 0)
    """
    r = np.asarray(residual, dtype=np.float64)
    letters = "abcdefghijklmnopqrstuvwxyz"[:r.ndim] if r.ndim <= 26 else None
    worst: tuple[int, float] | None = None
    for k in range(r.ndim if letters else 0):
        others = tuple(j for j in range(r.ndim) if j != k)
        # each slice's sum of squares without a data-sized array of squares (einsum sums the products)
        sums = np.einsum(f"{letters},{letters}->{letters[k]}", r, r, optimize=False)
        counts = (np.full(r.shape[k], r.size // max(r.shape[k], 1)) if observed is None
                  else observed.sum(axis=others))
        # (a slice that is exactly zero, in the data or in the residual of an exact fit of it, has no scale to
        # compare: three all-zero slices of a Tucker read "span infx", and dividing them by their standard
        # deviation, as the warning said, gave NaNs; an outside probe)
        valid = (counts >= UNEVEN_NOISE_ENTRIES) & (sums > 0)
        if int(valid.sum()) < UNEVEN_NOISE_SLICES:
            continue
        low, high = np.percentile(sums[valid] / counts[valid], [10, 90])
        spread = float(high / low) if low > 0 else (math.inf if high > 0 else 1.0)
        if spread > threshold and (worst is None or spread > worst[1]):
            worst = (k, spread)
    return worst


def white_once_slices_scaled(residual: np.ndarray, mode: int, seed: Any = 0) -> bool:
    """Whether ``residual`` looks like noise (:func:`residual_is_white`) once each slice of
    ``mode`` is divided by its RMS: noise whose level differs by slice does, a component the fit
    missed does not (an outside probe, 2026-12-02: a ``prior="bernoulli"`` fit at (2, 2, 2) of a
    Tucker (2, 3, 2) with one noise level had slices spanning 26x, and was told to standardize
    them)."""
    r = np.moveaxis(np.asarray(residual, dtype=np.float64), mode, 0)
    rms = np.sqrt(np.mean(r.reshape(r.shape[0], -1) ** 2, axis=1))
    scaled = r / np.where(rms > 0, rms, 1.0).reshape((-1,) + (1,) * (r.ndim - 1))
    return residual_is_white(np.moveaxis(scaled, 0, mode), None, seed)


def uneven_scales_message(mode: int, spread: float) -> str:
    return (f"the slices of mode {mode} differ in scale by about {math.sqrt(spread):.3g}x in RMS (10th to 90th "
            "percentile of the slices): the criterion weighs every entry alike, so the largest slices set the fit and "
            "their noise can be taken for structure (near-full ranks). If the slices are in different units or noise "
            "levels, standardize each (divide it by its standard deviation) before fitting; data spanning decades may "
            "fit better as their logarithm.")


def uneven_noise_message(mode: int, spread: float) -> str:
    return (f"the residual's size differs across the slices of mode {mode} (their mean squares span {spread:.3g}x "
            "between the 10th and the 90th percentile of the slices), and it looks like noise once each slice is "
            "scaled to one size: the noise level differs by slice, where the criterion assumes one for every entry, "
            "and the noisier slices read as structure (the ranks come out above the data's). If the slices are in "
            "different units or noise levels, standardize each (divide it by its standard deviation) before fitting.")


def slice_structure_message(mode: int, spread: float) -> str:
    return (f"the residual is larger in some slices of mode {mode} than in others (their mean squares span "
            f"{spread:.3g}x between the 10th and the 90th percentile of the slices) and is not noise there: the fit "
            "left structure in those slices, a component the selection missed (the default criterion, "
            "prior=\"bic\", may find it).")


#: ALS sweeps of the refit past ``max_rank`` (:func:`stopped_by_max_rank`; run for every bond a fit
#: leaves at ``max_rank``: a component the cap left out pays within a few sweeps)
MAX_RANK_CHECK_SWEEPS = 30


def stopped_by_max_rank(network: Network, max_ranks: Mapping[str, int], max_dof: float, data: FitData,
                        criterion: Occam, objective: float, seed: int | None = 0,
                        floors: Mapping[str, int] | None = None) -> list[str]:
    """The bonds selected at their maximal rank (``max_rank``) whose growth by one index past
    it, refitted as in :func:`capped_by_observations`, has a lower ``criterion`` objective
    (within ``max_dof`` and the bond's feasible size): the ranks there were set by ``max_rank``,
    not chosen (a Tucker 12^3 at (9, 9, 9) with ``max_rank=8`` came back at (8, 8, 8) with
    relative error 0.38, without a word). Bonds whose ``floors`` entry (``min_rank``) equals
    their maximal rank above 1 were fixed on purpose and are not checked (every bond's floor is
    at least 1, so ``max_rank=1`` is checked: a TT at (3, 4) fitted at (1, 1) with error 0.82
    said nothing, where ``max_rank=2`` warned). All candidate bonds are first
    grown together in one refit, and one by one only when that pays (one refit, not one per
    bond, in the usual case). Refitted by :data:`MAX_RANK_CHECK_SWEEPS` sweeps."""
    dims = network.dims
    candidates = []
    paired = []  # at the cap, but one more index there is useless alone (Tucker from rank 1)
    for bond, rank in network.bonds.items():
        if rank != max_ranks.get(bond) or (rank > 1 and (floors or {}).get(bond, 0) >= rank):
            continue
        grown_dims = {**dims, bond: rank + 1}
        if degrees_of_freedom(network.spec, grown_dims) > max_dof:
            continue
        if feasible_ranks(network.spec, grown_dims)[bond] <= rank:
            paired.append(bond)
            continue
        candidates.append(bond)
    if not candidates and len(paired) > 1:
        grown_dims = {**dims, **{b: dims[b] + 1 for b in paired}}
        caps = feasible_ranks(network.spec, grown_dims)
        if all(caps[b] > dims[b] for b in paired):  # together they can grow (a Tucker core from (1, 1, 1))
            candidates = paired

    def pays(bonds: Sequence[str]) -> bool:
        grown = network
        for bond in bonds:
            residual = data.residual(grown) if len(grown.terms_with(bond)) > 2 else None
            grown = grow(grown, bond, seed, residual=residual)
        if degrees_of_freedom(grown.spec, grown.dims) > max_dof:
            return False
        fitted, sse = als(grown, data, sweeps=MAX_RANK_CHECK_SWEEPS)
        return criterion.objective(sse, degrees_of_freedom(fitted.spec, fitted.dims)) < objective

    if not candidates:
        return []
    if len(candidates) > 1 and _grown_dof(network, candidates) > max_dof:
        # together past what the observations determine: each alone (a TT 2^8 at its default caps
        # (2, 4, 5, 5, 5, 4, 2) sat there at error 0.040 without a word, where one bond more paid)
        return [bond for bond in candidates if pays([bond])]
    if not pays(candidates):
        return []
    if len(candidates) == 1:
        return candidates
    return [bond for bond in candidates if pays([bond])] or candidates  # (else they pay only together)


def _grown_dof(network: Network, bonds: Sequence[str]) -> int:
    """Degrees of freedom of ``network`` with one index more on each of ``bonds``."""
    return degrees_of_freedom(network.spec, {**network.dims, **{b: network.dims[b] + 1 for b in bonds}})


def max_rank_message(bonds: Sequence[str], max_ranks: Mapping[str, int], relative_error: float,
                     network_given: bool = False, label_of: Mapping[str, Any] | None = None) -> str:
    """The bonds whose caps stopped the selection. A Network given to the fit has no
    ``max_rank`` (it is refused there): its bond sizes are the caps, and the advice says so."""
    label_of = label_of or {}
    where = ", ".join(f"{label_of.get(b, b)!r} (at {max_ranks[b]})" for b in bonds)
    cap = "the network's bond sizes" if network_given else "max_rank"
    advice = ("Give the network larger bonds (its bond sizes are its maximal ranks) to let the data choose."
              if network_given else "Raise max_rank to let the data choose.")
    return (f"ranks stopped by {cap}: one more index on bond{'s' if len(bonds) > 1 else ''} {where} would fit the "
            f"data better by the criterion; those ranks were set by {cap}, not chosen, and the fit's relative error "
            f"is {relative_error:.3g}. {advice}")


#: relative error from which a fit whose residual is structure, not noise, warns that it leaves
#: most of the data's structure out (as :func:`tnmars.search` does from the same error)
POOR_FIT_FROM = 0.5


def _error_words(relative_error: float, spread_error: float) -> str:
    """The relative error, and the one against the data's deviations from their mean where an
    offset makes them differ."""
    if spread_error <= 1.5 * relative_error:
        return (f"relative error {relative_error:.3g}: it holds about {max(0.0, 1.0 - relative_error**2):.0%} of "
                "the data's energy")
    return (f"relative error {relative_error:.3g}, but {spread_error:.3g} against the data's deviations from their "
            f"mean: it holds about {max(0.0, 1.0 - spread_error**2):.0%} of what varies, little more than the mean")


def poor_fit_message(relative_error: float, spread_error: float | None = None, loop: bool = False) -> str:
    """A poor fit whose residual is structure. The advice on short refits is for networks with a
    loop (rings), where they make removals look better; on trees (CP, Tucker, chains) it misled
    (an outside probe, 2026-12-02)."""
    words = _error_words(relative_error, relative_error if spread_error is None else spread_error)
    cause = ("a poor start, or short refits that make removals look better: try selection={'sweeps': 20}" if loop
             else "a poor start, or a minimum of ALS that no single index leaves")
    return (f"the selected network leaves most of the data unexplained ({words}), and what it leaves is "
            "structure, not noise (the residual's unfoldings stand above the same values shuffled). The search may "
            f"have stopped far from the data's network ({cause}), or the structure may need more degrees of freedom "
            "than the observations determine. Compare fits at candidate ranks (max_rank=... with min_rank=...) by "
            "their objective, or another network.")


#: data whose mean is more than this many times the standard deviation of their entries about
#: it are fitted at the edge of float64 least squares: their structure is below about 1e-10 of
#: their energy, and the normal equations the fits solve drop directions under 1e-13 of the
#: largest (an outside probe, 2026-12-02: a Tucker (3, 4, 2) with 1% noise, fitted 1% off at a
#: mean 1e5 times its spread, after the proposals' precision fix 12% off at 1e6 and 97% at 1e7,
#: with no word; event times in Unix seconds are such data). Fits that can also fit the data
#: without their mean do (:mod:`tnmars.fitting.centring`) and do not warn; this is said of the
#: others (a budget, a warm start, a cap of 1)
FAR_FROM_ZERO = 1e5


def far_from_zero_message(ratio: float, relative_error: float, spread_error: float) -> str:
    """Data far from zero: the fit cannot be trusted to resolve their structure; centre them."""
    return (f"the data sit far from zero: their mean is {ratio:.2g} times the spread of their deviations, so their "
            f"structure is about {1 / ratio**2:.1g} of their energy, at the edge of what the fit's float64 least squares "
            f"resolve (relative error {relative_error:.3g}, but {spread_error:.3g} against the deviations from the mean). "
            "A fit without a budget, warm start or cap of 1 also fits such data without their mean and keeps the "
            "better (tnmars.fitting.centring); this one could not. Fit the data minus their mean (x - x.mean()) "
            "and add it back (tnmars.fitting.moves.plus_constant): one more index on the bonds of a spanning tree of "
            "the cores, as a fit of the raw data would need at best")


def unexplained_message(relative_error: float, spread_error: float, n_obs: int, max_dof: float,
                        completion: bool = True, loop: bool = True) -> str:
    """A fit that leaves most of the data unexplained where its residual does not show structure
    (a completion's, zero at the missing entries, rarely can; a small tensor's unfoldings have
    few singular values to compare). The rings seen to do so are cited for networks with a
    ``loop`` only."""
    entries = f"on the {n_obs:,} observed entries, " if completion else ""
    data = "observed data" if completion else "data"
    seen = ("" if not loop else
            " (ring completions whose truth needed more came back at rank 1, with 67-91% of the observed data "
            "unexplained)" if completion else
            " (a noiseless ring (3, 4, 5) on 5x6x5, 205 degrees of freedom for 150 entries, came back at rank 1 with "
            "relative error 0.83)")
    more = "Observe more entries, or give" if completion else "Give"
    return (f"the selected network leaves most of the {data} unexplained ({entries}"
            f"{_error_words(relative_error, spread_error)}), and its residual "
            "cannot be told from noise: the data may be mostly noise, or hold structure that needs more than the "
            f"{max_dof:g} degrees of freedom {n_obs:,} entries determine{seen}. {more} "
            "larger ranks yourself (max_rank=... with min_rank=...) and judge them on held-out entries.")


#: how far the top singular value of a residual's unfolding may exceed that of the same values
#: shuffled before :func:`residual_is_white` calls the residual structured
STRUCTURE_RATIO = 1.5


def residual_is_white(residual: np.ndarray, observed: np.ndarray | None = None, seed: Any = 0) -> bool:
    """Whether a fit's residual looks like noise rather than structure the network left out:
    the largest singular value of each mode's unfolding stays within :data:`STRUCTURE_RATIO`
    of that of the same values shuffled over the (observed) entries, which keeps their
    distribution, heavy tails included, and destroys any structure. A missed component, a
    local minimum or an approximation's smooth error is far above; independent noise of any
    distribution is not (heavy tails alone were blamed for local minima of trees and for the
    smooth error of noiseless functions)."""
    rng = np.random.default_rng(seed)
    shuffled = np.array(residual, dtype=np.float64)
    if observed is None:
        rng.shuffle(shuffled.reshape(-1))
    else:
        shuffled[observed] = rng.permutation(shuffled[observed])
    # the chain's cuts too (the first modes against the rest): a mode of size 2 unfolds into two
    # rows, whose top singular value hardly tells structure from noise (a TT 2^8 stuck one index
    # short, residual structure at relative error 0.02, was called heavy-tailed noise)
    for unfold in _unfoldings(residual.shape):
        m = unfold(residual)
        if min(m.shape) < 2:
            continue
        if _top_singular_value(m) > STRUCTURE_RATIO * _top_singular_value(unfold(shuffled)):
            return False
    return True


#: how far the share of a residual unfolding's energy in its top ``k`` singular values
#: (``k`` a quarter of its smaller side, at least 2) may exceed the largest share among
#: :data:`STRUCTURE_SHUFFLES` shufflings of the same values before :func:`residual_has_structure`
#: calls it structure. Under the null (independent noise: Gaussian, uniform, Laplace, Student t
#: with 1-3 degrees of freedom, 1% outliers of 10x, heteroscedastic; orders 2-8, sizes 2-60, full
#: and 30% / 70% observed; 216 residuals per distribution, 2026-12-01) the ratio reached 1.29;
#: a ring completion stopped at (1, 2, 3) for (2, 4, 5), error 0.50, read 1.58 (its top singular
#: values only 1.24-1.42 above the shuffled ones: spread over several components)
STRUCTURE_ENERGY_RATIO = 1.4
STRUCTURE_SHUFFLES = 4


def residual_has_structure(residual: np.ndarray, observed: np.ndarray | None = None, seed: Any = 0) -> bool:
    """Whether a fit's residual holds structure: :func:`residual_is_white` says it is not
    white, or some unfolding's top singular values hold a clearly larger share of its energy
    than they do in any of a few shufflings of the same values. The second test catches what
    the first misses, structure spread over several components (the residual of a network far
    below the data's ranks), at the cost of a few more eigen-decompositions; it is what the
    warning about poor fits asks.

    Both tests read one eigen-decomposition of each unfolding and of each shuffling's (the
    first shuffling is :func:`residual_is_white`'s), and an unfolding whose smaller side has
    :data:`LARGE_UNFOLDING` or more rows compares with that shuffling alone: the top share of
    so many independent values varies little between shufflings (a 3000 x 3000 fit's checks
    took 28 s, 5 of its 7 decompositions being shufflings')."""
    rng = np.random.default_rng(seed)
    values = np.asarray(residual, dtype=np.float64)
    shuffles: list[np.ndarray] = []

    def shuffled(i: int) -> np.ndarray:
        while len(shuffles) <= i:  # (drawn in order: the same shufflings whichever unfolding asks first)
            copy = values.copy()
            if observed is None:
                rng.shuffle(copy.reshape(-1))
            else:
                copy[observed] = rng.permutation(copy[observed])
            shuffles.append(copy)
        return shuffles[i]

    unfoldings = _unfoldings(values.shape)
    spectra = []
    for unfold in unfoldings:  # residual_is_white's test first, on every unfolding
        m = unfold(values)
        if min(m.shape) < 2:
            spectra.append(None)
            continue
        own, first = _gram_eigenvalues(m), _gram_eigenvalues(unfold(shuffled(0)))
        spectra.append((own, first))
        if math.sqrt(own[-1]) > STRUCTURE_RATIO * math.sqrt(first[-1]):
            return True
    for unfold, spectrum in zip(unfoldings, spectra):
        if spectrum is None or min(unfold(values).shape) < 4:
            continue
        own, first = spectrum
        k = max(2, len(own) // 4)
        count = STRUCTURE_SHUFFLES if len(own) < LARGE_UNFOLDING else 1
        null = max([_share(first, k)] + [_share(_gram_eigenvalues(unfold(shuffled(i))), k) for i in range(1, count)])
        if _share(own, k) > STRUCTURE_ENERGY_RATIO * null:
            return True
    return False


#: the smaller side from which an unfolding's top share is compared with one shuffling, not
#: :data:`STRUCTURE_SHUFFLES` (:func:`residual_has_structure`)
LARGE_UNFOLDING = 256


def _gram_eigenvalues(m: np.ndarray) -> np.ndarray:
    """The squared singular values of ``m`` (ascending, clipped at 0), from its smaller Gram matrix."""
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    return np.clip(np.linalg.eigvalsh(gram), 0.0, None)


def _share(eig: np.ndarray, k: int) -> float:
    """The share of the total in the top ``k`` of ascending ``eig``."""
    total = float(eig.sum())
    return float(eig[-k:].sum()) / total if total > 0 else 0.0


def _unfoldings(shape: Sequence[int]) -> list[Callable[[np.ndarray], np.ndarray]]:
    """Each mode's unfolding, and the chain's cuts (the first modes against the rest); a matrix
    once (its second unfolding is its transpose, of the same singular values: the checks of a
    3000 x 3000 fit spent half their 28 s on it)."""
    if len(shape) == 2:
        return [lambda r: r]
    out = [(lambda r, k=k: np.moveaxis(r, k, 0).reshape(shape[k], -1)) for k in range(len(shape))]
    return out + [(lambda r, k=k: r.reshape(int(np.prod(shape[:k])), -1)) for k in range(2, len(shape) - 1)]


def _top_singular_value(m: np.ndarray) -> float:
    """The largest singular value, from the smaller Gram matrix."""
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    return math.sqrt(max(float(np.linalg.eigvalsh(gram)[-1]), 0.0))
