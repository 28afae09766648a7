"""Data far from zero: fitted as they are and without their mean; the criterion keeps the better.

Data whose mean is many times the spread of their deviations (event times in Unix seconds,
readings on a large baseline) hold their structure in digits that least squares lose: Gram
matrices and normal equations square the mean's share against the deviations'. A Tucker
(3, 4, 2) with 1% noise plus 1e6 came back at (2, 2, 2), then (4, 4, 3), 10% off its
deviations, and plus 1e7 at (1, 1, 1), 99.8% off (an outside probe, 2026-12-02). The data
minus their mean lose nothing, and :func:`~tnmars.fitting.moves.plus_constant` adds the mean
back exactly, with one index more on the bonds of a spanning tree of the cores (every bond of
a TT or Tucker, all but one of a ring's).

That is not always the better network: data whose mean is a factor of their structure
(``1e6 (1 + e a_i)(1 + e b_j)``) are of low rank as they are, while their deviations need
more indices plus the constant's. So :func:`fit_both_ways` fits both and keeps the one the
criterion prefers on the data as given.
"""
from __future__ import annotations

import contextvars
import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..network import Network
from .criterion import Occam
from .data import Prepared
from .diagnostics import EXTRAPOLATION_LIMIT, extrapolation_ratio
from .graph import degrees_of_freedom
from .moves import canonical_towards, plus_constant, shrink
from .progress import current_label, labelled
from .result import FitResult
from .search import feasible, rank_floor
from .solvers import SPREAD_RESOLVED, FitData

__all__ = ["CENTRE_FROM", "COMPLETION_CENTRE_FROM", "offset_ratio", "centring_allowed", "centred_caps", "fit_both_ways"]

#: data whose mean is more than this many times the standard deviation of their entries about it
#: are also fitted without their mean (:func:`fit_both_ways`). Below it the fits on the data as
#: they are resolve their structure (the Tucker above: 1% off its deviations plus 1e3, 1e5 and
#: 3e5, as without the mean); the proposals' Gram matrices reach their limit near 1e4 (their
#: eigenvalues then span 1e-8, where the proposals switch to QR), and CP came back at rank 6 for
#: 5 with the polish stalled at 1e5.
CENTRE_FROM = 1e4

#: the same for a completion: a mean above the spread (``OFFSET_FROM`` of
#: :mod:`tnmars.fitting.api`, what it calls an offset completion). Masked refits converge slowly
#: away from zero: a Tucker (3, 4, 2) on 20^3 with 1% noise plus 1e3 times its spread, 40%
#: observed, walked down to (6, 9, 8) and stopped (objective -34,356, held-out error 0.0137
#: against the deviations), where (4, 5, 3) is the criterion's choice by 1,334 nats (-35,690,
#: 0.0105). Tuned on ``benchmarks/far_from_zero.py --observed 0.4 --centre-from 0.5`` (TT and
#: Tucker truths 3-11 of ``heldout_random``, 20 dB and noiseless, 2026-12-02): fitted both ways,
#: 21 of 72 fits at 1 and 3 spreads came closer to the truth by more than 10% (a TT from 1.06 to
#: 0.26 of the deviations, a Tucker from 0.63 to 0.10) and 54 of 144 at 10 to 1e4 spreads; none
#: went farther; the fits took 1.7-3.5x the time (medians per format and offset). Held out
#: (truths 20-32 of up to 5,000 entries, 25% observed, offsets 2, 30 and 3000; 108 fits, at
#: 4ecc870): 31 closer, none farther, 1.6-4.5x the time (``far_from_zero_completion0.25.md``)
COMPLETION_CENTRE_FROM = 1.0

#: whether :func:`~tnmars.fitting.api.fit` may fit far-from-zero data both ways: off within
#: :func:`fit_both_ways`'s own two fits (and then their "far from zero" warning is not given)
CENTRING: contextvars.ContextVar[bool] = contextvars.ContextVar("tnmars_fit_centring", default=True)


def offset_ratio(data: FitData) -> float:
    """``|mean| / std`` of the observed entries; 0 when their spread is not resolved (a constant)."""
    spread = data.spread
    if not spread > SPREAD_RESOLVED * data.sq_norm:
        return 0.0
    return abs(data.observed_mean) / math.sqrt(spread / max(data.n_obs, 1))


def centring_allowed(data: FitData, budget: Any, warm: Network | None, bonds: Mapping[str, int],
                     completion: bool = False) -> bool:
    """Whether a fit fits ``data`` both ways: far enough from zero (:data:`CENTRE_FROM`, or
    :data:`COMPLETION_CENTRE_FROM` for a completion), no budget (the mean's indices would have to
    come out of it), no warm start (its cores hold the mean), and bonds to select."""
    return (CENTRING.get() and budget is None and warm is None and bool(bonds)
            and offset_ratio(data) > (COMPLETION_CENTRE_FROM if completion else CENTRE_FROM))


def centred_caps(network: Any, max_rank: Any) -> tuple[Any, Any] | None:
    """The ``network`` and ``max_rank`` arguments for the fit without the mean: every cap the
    caller gave one lower, so that the mean's index keeps the result within it; ``None`` when a
    cap is 1 (no room for the mean's index). Default caps stay default."""
    def lower(r: Any) -> int | None:
        r = int(r)
        return r - 1 if r > 1 else None

    if isinstance(network, Network):
        bonds = {b: lower(r) for b, r in network.bonds.items()}
        if None in bonds.values():
            return None
        smaller = Network(network.spec, {**network.dims, **bonds}, optimize=network.optimize)
        labels = getattr(network, "labels", None)
        if labels:
            smaller.labels = dict(labels)
        return smaller, max_rank
    if max_rank is None:
        return network, None
    if isinstance(max_rank, Mapping):
        caps: Any = {b: lower(r) for b, r in max_rank.items()}
        values = list(caps.values())
    elif isinstance(max_rank, (Sequence, np.ndarray)) and not isinstance(max_rank, str):
        caps = [lower(r) for r in max_rank]
        values = caps
    else:
        caps = lower(max_rank)
        values = [caps]
    return None if None in values else (network, caps)


def fit_both_ways(fit: Callable[..., FitResult], data: Any, network: Any, options: dict[str, Any],
                  prep: Prepared, caps: Mapping[str, int], crit: Occam, centred_args: tuple[Any, Any]) -> FitResult:
    """``fit(data, network, **options)`` and the fit of the data minus their observed mean plus that
    mean (caps from :func:`centred_caps`), the one with the lower objective of ``crit`` on the data
    as given (a ``prior="bernoulli"`` fit is judged by the same criterion); for a completion, one
    that extrapolates loses to one that does not whatever the criterion says. The kept fit's
    warnings are given, the other's dropped; ``settings["offset"]`` records the mean and which
    fit was kept. A fit stopped by Ctrl-C or its callback is returned at once; a fit without the
    mean that fails leaves the fit as given, with a warning."""
    t0 = time.perf_counter()
    token = CENTRING.set(False)
    try:
        with labelled(f"{current_label()}, as given"):
            raw, raw_warnings = _recorded(fit, data, network, options)
        if raw.interrupted:
            return _kept(raw, raw_warnings, t0, prep, False)
        mean = prep.data.observed_mean * prep.scale
        y = np.asarray(prep.raw, dtype=np.float64)
        observed = prep.observed
        centred_data = y - mean if observed is None else np.where(observed, y - mean, np.nan)
        centred_network, centred_max_rank = centred_args
        device = options.get("device") or prep.device
        min_rank = options.get("min_rank", 1)  # (one int, or one per bond of caps, in its order)
        inner_options = {**options, "max_rank": centred_max_rank, "observed": observed,
                         "min_rank": _one_lower(min_rank),
                         "backend": prep.backend.name, "device": device, "dtype": prep.dtype}
        try:
            with labelled(f"{current_label()}, without the mean"):
                centred, centred_warnings = _recorded(fit, centred_data, centred_network, inner_options)
        except Exception as err:  # (the fit as given stands: said, not lost with it)
            raw_warnings.append(warnings.WarningMessage(
                RuntimeWarning(f"tnmars.fit: the data sit far from zero, and their fit without their mean failed "
                               f"({type(err).__name__}: {err}); this is the fit of the data as given"),
                RuntimeWarning, __file__, 0))
            return _kept(raw, raw_warnings, t0, prep, False, mean)
    finally:
        CENTRING.reset(token)
    raw.interrupted = raw.interrupted or centred.interrupted  # (a callback's stop in the second fit)
    if 0 in centred.ranks:  # the deviations fitted by nothing: the constant alone is a fit of the raw data
        return _kept(raw, raw_warnings, t0, prep, False, mean)
    with_mean = _with_mean(centred.network, mean, caps)
    grown = [b for b, r in with_mean.bonds.items() if r > centred.network.bonds[b]]
    floors = min_rank if isinstance(min_rank, int) else dict(zip(caps, min_rank))
    both = prep.returned(_without_repeats(with_mean, grown, prep, crit, floors), device)
    if any(r < min(rank_floor(floors, b), raw.network.bonds.get(b, r)) for b, r in both.bonds.items()):
        # the mean's index reaches only some bonds (a ring: every bond but its smallest), so that fit
        # plus the mean can sit below a floor the fit as given holds: min_rank=(4, 5, 4), max_rank the
        # same, on a ring far from zero came back at (4, 5, 3) (an outside review)
        return _kept(raw, raw_warnings, t0, prep, False, mean)
    raw_estimate, estimate = _estimate(raw.network), _estimate(both)  # (each evaluated once, float64)
    raw_objective = crit.objective(_sse(raw_estimate, prep), _dof(raw.network))
    sse = _sse(estimate, prep)  # (both as returned: in float32 for float32 data, as the raw fit's network)
    objective = crit.objective(sse, _dof(both))
    # a completion that extrapolates loses to one that does not, as in the walks: the criterion reads
    # the observed entries only (a TT completion at 25% observed, both fits poor, kept the fit without
    # the mean at 436 times the deviations off at the missing entries over the other's 1.6)
    wild, raw_wild = _extrapolates(estimate, prep), _extrapolates(raw_estimate, prep)
    if wild != raw_wild:
        better = raw_wild
    else:
        better = objective < raw_objective
    if not better:
        return _kept(raw, raw_warnings, t0, prep, False, mean)
    result = _assembled(centred, both, estimate, mean, sse, prep, crit, objective, caps, device)
    result.settings = dict(raw.settings)  # the caller's (the fit without the mean had its caps one lower)
    # but the cross-validation of the network returned: the fit without the mean's, whose errors are
    # against the deviations from the mean already (the fit as given's described another network)
    result.settings.pop("cross_validation", None)
    if centred.settings.get("cross_validation"):
        result.settings["cross_validation"] = dict(centred.settings["cross_validation"])
    result.diagnostics = [d + _OF_DEVIATIONS for d in result.diagnostics]
    return _kept(result, [_said_of_deviations(w) for w in centred_warnings], t0, prep, True, mean)


#: what a warning of the fit without the mean says of itself, when that fit is kept
_OF_DEVIATIONS = (" [said of the fit of the data without their mean, which is returned plus the mean: its caps and "
                  "ranks are one lower (the mean's index), its errors are against the deviations]")


def _said_of_deviations(heard: warnings.WarningMessage) -> warnings.WarningMessage:
    """A warning of the kept fit without the mean, saying so: it speaks of caps one lower ("one
    more index on bond 'B' (at 3)" of a result at 4) and of errors against the deviations (0.0117,
    where the result's relative error on the data as given is 1.2e-8; an outside probe)."""
    message = heard.message
    text = str(message)
    if not text.startswith("tnmars.fit") or not isinstance(message, Warning):
        return heard
    try:
        reworded = type(message)(text + _OF_DEVIATIONS)
    except TypeError:  # (a warning class whose constructor takes other arguments)
        return heard
    return warnings.WarningMessage(reworded, heard.category, heard.filename, heard.lineno)


def _recorded(fit: Callable[..., FitResult], data: Any, network: Any,
              options: dict[str, Any]) -> tuple[FitResult, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        result = fit(data, network, **options)
    return result, heard


def _kept(result: FitResult, heard: list[warnings.WarningMessage], t0: float, prep: Prepared, centred: bool,
          mean: float | None = None) -> FitResult:
    """``result`` with its fit's warnings given again (from the caller's call of ``fit``), the
    time of both fits, and where the mean went."""
    for w in heard:
        if w.filename == __file__:  # said of the call in _recorded: said of the caller's call of fit
            warnings.warn(w.message, w.category, stacklevel=4)
        else:  # (a library's warning, from where it was raised, under the caller's filters)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    result.seconds = time.perf_counter() - t0
    if mean is not None:
        result.settings = {**result.settings, "offset": {"mean": float(mean), "fitted_without_mean": centred}}
    return result


def _with_mean(net: Network, mean: float, caps: Mapping[str, int]) -> Network:
    """``net`` plus ``mean`` (NumPy, float64) within ``caps`` (bonds the mean's index took past
    what their cores can use, or past the caps, dropped to them by :func:`shrink`)."""
    both = feasible(plus_constant(net.numpy(), mean))
    for bond, cap in caps.items():
        while both.bonds.get(bond, 0) > cap:
            both = shrink(both, bond)
    labels = getattr(net, "labels", None)
    if labels:
        both.labels = dict(labels)
    return both


def _one_lower(min_rank: int | Sequence[int]) -> int | tuple[int, ...]:
    """The floors of the fit without the mean: each one lower (the mean's index makes up the
    difference), but not below 1; 0 (a bond the relaxation may close) stays 0.

    >>> _one_lower(3), _one_lower(0), _one_lower((1, 4, 0))
    (2, 0, (1, 3, 0))
    """
    if isinstance(min_rank, int):
        return 0 if min_rank == 0 else max(min_rank - 1, 1)
    return tuple(_one_lower(int(m)) for m in min_rank)


def _without_repeats(net: Network, bonds: Sequence[str], prep: Prepared, crit: Occam,
                     min_rank: int | Mapping[str, int]) -> Network:
    """``net`` with one index fewer on one of ``bonds`` (those the mean grew), each at most once
    (:func:`shrink`, the bond's truncated SVD, in the canonical form of a tree:
    :func:`canonical_towards`), wherever ``crit`` prefers it on the data, down to ``min_rank``.
    The fit of the deviations usually holds a constant already (the mean of its own structure,
    which the data's mean took out): a Tucker (3, 4, 2) plus 1e6 came back at (5, 6, 4), the
    constant twice on every bond, for the data's (4, 5, 3); its repeat is dropped without loss.
    No refit: refits of the data as given are what loses their structure. Each network is judged
    as it is returned (a float32 fit's cores rounded to float32): the canonical form puts the
    mean's magnitude into one core, which float32 rounds more coarsely than the spread-out cores of
    :func:`plus_constant` (a Tucker plus 1e6 times its spread came back 6.7% off its deviations
    instead of 2.4%, an outside probe)."""
    objective = crit.objective(_sse(_estimate(prep.returned(net, None)), prep), _dof(net))
    for bond in bonds:
        if net.bonds[bond] <= rank_floor(min_rank, bond):
            continue
        candidate = shrink(canonical_towards(net, bond), bond)
        value = crit.objective(_sse(_estimate(prep.returned(candidate, None)), prep), _dof(candidate))
        if value < objective:
            net, objective = candidate, value
    return feasible(net)  # (a bond beside one shrunk here may have lost its use: (5, 1, 1, 4) kept a 2 between 1s)


def _estimate(net: Network) -> np.ndarray:
    """The network's tensor in float64 (from its cores as they are: a float32 result's rounding counts)."""
    return np.asarray(net.numpy().to_tensor(), dtype=np.float64)


def _extrapolates(est: np.ndarray, prep: Prepared) -> bool:
    """Whether a completion reaches, at an unobserved entry, more than ``EXTRAPOLATION_LIMIT``
    times the largest observed deviation from the observed mean (what the walks refuse)."""
    if prep.observed is None:
        return False
    y = np.where(prep.observed, np.asarray(prep.raw, dtype=np.float64), 0.0)
    return extrapolation_ratio(est, y, prep.observed) > EXTRAPOLATION_LIMIT


def _sse(est: np.ndarray, prep: Prepared) -> float:
    """Squared error of ``est`` (:func:`_estimate`) over the observed entries, in working units
    (data units over ``prep.scale``: their square overflowed for data near 1e155 and vanished
    near 1e-162, an outside probe)."""
    y = np.asarray(prep.raw, dtype=np.float64)
    diff = (est - y) / prep.scale
    if prep.observed is not None:
        diff = np.where(prep.observed, diff, 0.0)
    return float(np.vdot(diff, diff))


def _dof(net: Network) -> int:
    return degrees_of_freedom(net.spec, net.dims)


def _assembled(centred: FitResult, both: Network, estimate: np.ndarray, mean: float, sse: float, prep: Prepared,
               crit: Occam, objective: float, caps: Mapping[str, int], device: str | None) -> FitResult:
    """The centred fit's result for ``both``, its network plus the mean as returned (``estimate``
    its tensor): errors, sizes and objective of that network on the data as given; its search's record (``selection``, ``history``) is the
    centred fit's, at ranks one index lower."""
    bonds = centred.bonds
    ranks = tuple(both.bonds[b] for b in bonds)
    max_ranks = tuple(max(caps.get(b, r), r) for b, r in zip(bonds, ranks))
    y = np.asarray(prep.raw, dtype=np.float64)
    observed = y if prep.observed is None else y[prep.observed]
    norm = float(np.linalg.norm(observed / prep.scale))  # (working units, as sse: no overflow near 1e154)
    heldout = None
    held = prep.heldout
    if held is not None and held.any():
        est = estimate[held]
        truth = y[held]
        hd = float(np.linalg.norm(truth))
        heldout = float(np.linalg.norm(est - truth)) / hd if hd > 0 else None
    n_obs = prep.data.n_obs
    full = centred.full_network
    return dataclasses.replace(
        centred,
        network=both,
        ranks=ranks,
        max_ranks=max_ranks,
        probabilities={b: (np.arange(m) < r).astype(np.float64) for b, r, m in zip(bonds, ranks, max_ranks)},
        relative_error=math.sqrt(sse) / norm if norm > 0 else 0.0,
        heldout_error=heldout,
        log_likelihood=-sse * prep.scale * prep.scale / n_obs,  # (data units: inf past float range, not an error)
        noise_variance=crit.noise_variance(sse, _dof(both)) * prep.scale * prep.scale,
        compression=both.compression,
        num_params=both.num_params,
        objective=objective if centred.criterion == "bic" else float("nan"),
        # (within the caps, as the network: the relaxation's network at its caps plus the mean was one past them)
        full_network=None if full is None else prep.returned(_with_mean(full, mean, caps), device),
    )
