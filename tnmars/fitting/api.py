"""``tnmars.fit``: propose ranks, select them under one MAP criterion, polish, report.

>>> import numpy as np, tnmars
>>> rng = np.random.default_rng(1)
>>> core, U = rng.standard_normal((2, 3, 4)), [rng.standard_normal((8, r)) for r in (2, 3, 4)]
>>> x = np.einsum("abc,ia,jb,kc->ijk", core, *U)
>>> res = tnmars.fit(x, "tucker", max_rank=6, seed=0, progress=False)
>>> res.ranks
(2, 3, 4)
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .._checks import dtype_name, positive_int, warn
from ..network import Network, cp_spec, tr_spec, tt_spec, tucker_spec
from ..spec import parse_spec
from .budget import descend_to_params, describe, describe_floors, max_params, smallest_params
from .centring import CENTRING, centred_caps, centring_allowed, fit_both_ways
from .criterion import MAX_DOF_SHARE, MSE_FLOOR, Occam
from .data import Prepared, prepare
from .diagnostics import (
    EXACT_FIT_ERROR,
    EXTRAPOLATION_LIMIT,
    FAR_FROM_ZERO,
    HOLDOUT_SHARE,
    POOR_FIT_FROM,
    UNEVEN_SCALES,
    UNEVEN_SCALES_RANKS,
    capped_by_observations,
    capped_message,
    completion_diagnostics,
    dominant_entries,
    dominant_message,
    extrapolation_ratio,
    far_from_zero_message,
    generalization_message,
    heavy_tail_message,
    heavy_tailed,
    held_out_errors,
    isolated_entries,
    isolated_message,
    max_rank_message,
    poor_fit_message,
    residual_has_structure,
    residual_is_white,
    slice_structure_message,
    spectra_above_message,
    spectra_above_selection,
    spectra_beyond_cap,
    spectra_capped_message,
    stopped_by_max_rank,
    uneven_noise,
    uneven_noise_message,
    uneven_scales_message,
    unexplained_message,
    white_once_slices_scaled,
)
from .graph import connected_parts, degrees_of_freedom, feasible_ranks, has_loop, judged_rank, raised_floors
from .layout import FormatLayout, format_layout
from .moves import plus_constant, shrink
from .progress import Reporter
from .proposals import (
    PROPOSALS,
    SPECTRAL_SELECTORS,
    SpectralStart,
    em_starts,
    filled,
    fresh_start,
    loop_restarts,
    raised_to,
    rank_one_start,
    ring_layout,
    ring_spectral_starts,
    spectral_starts,
    truncated,
    truncation_start,
    within_budget,
)
from .relaxation import Relaxation, RelaxationResult, relax
from .result import FitResult
from .search import SEARCH_SETTINGS, Candidate, RankSearch, feasible, rank_floor
from .solvers import SPREAD_RESOLVED, FitData, als, residual
from .spectral import tucker_proposals

__all__ = ["fit", "FORMATS", "PRIORS"]

FORMATS = ("cp", "tucker", "tt", "tr")
PRIORS = ("bic", "bernoulli")
#: the dtypes a fit can return; half precision data are fitted and returned in float32
FIT_DTYPES = ("float32", "float64")
#: data dtypes too narrow for the least-squares steps (float16 overflows at 65504)
HALF_DTYPES = ("float16", "bfloat16")
#: ALS sweeps of the final polish (it stops earlier once a sweep gains less than 1e-7 of the error)
POLISH_SWEEPS = 300
#: ALS sweeps of the final polish of a CP (a bond on more than two cores) at most; it stops
#: earlier once the gain still to come, judged from the recent sweeps (:func:`_converged_polish`),
#: is below :data:`POLISH_TOL` of the error, and says so when it stops here still improving
CP_POLISH_SWEEPS = 3000
#: relative error still to gain below which the polish stops
POLISH_TOL = 1e-7
#: sweeps per window of the polish's convergence test (two windows compared)
POLISH_WINDOW = 10
#: a polish sweep that gains less than this share of the error has converged (swamps gain
#: 1e-7 to 1e-6 a sweep)
POLISH_STALL = 1e-10
#: steps the search may take without improvement when it grows from rank 1
GREEDY_PATIENCE = 2
#: random starts tried, one after the other, for a ring fit that leaves most of its data unexplained
RING_RANDOM_STARTS = 2
#: a ring fit whose relative error (against the data's deviations from their mean) is above this
#: walks again from random cores, whatever its residual looks like. On tensors this small the
#: residual of a poor minimum passes for noise: held-out rings (``benchmarks/heldout_random.py``)
#: came back silent at (3, 3, 3, 3) with error 0.41 for a noiseless (5, 5, 4, 3) on 6x5x4x7, and
#: at (4, 2, 2, 2) with 0.46 for a (4, 4, 3, 3) on 4x5x4x5. Chosen at 0.3 on the second (seeds
#: 0-129: 0.46 -> 0.14; two undetermined rings 0.32 -> 0.52 and 0.41 -> 0.55, where the criterion
#: preferred the second walk's fewer parameters); held out on seeds 130-199 (280 fits, TR and TR
#: completions, noiseless and 20 dB): 5 closer to the truth (the first ring exact, and at its true
#: ranks at 20 dB), none farther, 1.06-1.10x the time. Noise at about 10 dB or more also starts the
#: walk (its error is about 0.3): on 40 of those TR truths at 10 dB, 2 closer, none farther, 1.11x
#: the time (``benchmarks/ring_restart_threshold.py``).
RING_RESTART_FROM = 0.3
#: ALS sweeps of the rank search's short refits of a completion (3, ``RankSearch.sweeps``, for
#: complete data): with entries missing, ALS moves slower from a neighbour's cores, and three sweeps
#: left a removal that pays looking as if it did not (a noiseless TT completion (10, 11, 12, 9) at
#: (2, 3, 2) plus 50, 20% observed, stopped at (3, 6, 3) where (3, 4, 3) is exact)
COMPLETION_SWEEPS = 10
#: ``selection`` settings: the rank search's, ``random_restart`` (the fit's second walk from
#: random cores for a ring that leaves most of its data unexplained; on by default) and
#: ``widen_caps`` (a bond that ends at its default cap walks on past it; on by default) and
#: ``loop_restarts`` (the final refit of a network with loops from random starts; on by default)
SELECTION_SETTINGS = (*SEARCH_SETTINGS, "random_restart", "widen_caps", "loop_restarts")
#: the Occam prior's strength without a budget (1: BIC)
DEFAULT_STRENGTH = 1.0


def fit(
    data: Any,
    network: str | Network = "tucker",
    *,
    max_rank: int | Sequence[int] | Mapping[str, int] | None = None,
    observed: Any = None,
    prior: str = "bic",
    prior_strength: float | None = None,
    proposal: str | Network = "auto",
    relaxation: Relaxation | Mapping[str, Any] | None = None,
    min_rank: int | Sequence[int] | Mapping[str, int] = 1,
    budget: int | str | None = None,
    selection: Mapping[str, Any] | None = None,
    seed: int | np.random.Generator | None = 0,
    backend: str | None = None,
    device: str | None = None,
    dtype: Any = None,
    progress: bool | None = None,
    callback: Callable[[int, dict], Any] | None = None,
) -> FitResult:
    """Fit ``data`` with a tensor network and select its ranks.

    Parameters
    ----------
    data: the tensor (NumPy, torch or CuPy). NaN/Inf only where ``observed`` is False.
    network: ``"tucker"``, ``"cp"``, ``"tt"``, ``"tr"`` (built at ``max_rank``), an einsum
        spec of any graph such as ``"iab,jbc,kca"`` (every bond at ``max_rank``; the open
        modes take ``data.shape`` in the spec's output order, which without ``->`` is
        einsum's: the indices on one core, alphabetically, here ``ijk``), or any
        :class:`~tnmars.Network` whose open modes match ``data.shape``: its bond sizes are
        the maximal ranks. A spec or network that is a built-in format under other letters,
        term order or axis order (``"iA,jAB,kBC,lC"``: a TT; ``"ia,jb,kc,abc"``: a Tucker) is
        fitted as that format and returned in its own spec
        (:func:`~tnmars.fitting.layout.format_layout`).
    max_rank: the largest rank of every bond of a format or spec: an int, one per bond (a
        spec's bonds in order of first appearance, as :attr:`Network.bonds <tnmars.Network.bonds>`
        lists them), or a mapping bond -> rank (a format's bonds by the names
        :attr:`FitResult.bonds` gives them; a bond it does not name: the default). Ranks are
        clipped to what each bond's cut allows. Default:
        ``max(data.shape)``, raised for the Occam search to the largest rank at which the
        network (every bond there) has at most half as many degrees of freedom as observed
        entries, the most the criterion judges (a TT of a 2^10 tensor: 11, clipped to 2, 4, 8,
        11, ... by the cuts); a bond that ends at that default cap while
        the others stay below theirs walks on past it, within the same limit (a tree's inner bond
        of rank 16 on 6^4, where the default is 10); the MARS relaxation (``prior="bernoulli"``
        or ``proposal="mars"``), which trains at these ranks, keeps ``max(data.shape)``.
    observed: boolean mask of observed entries (tensor completion); default all (for a NumPy
        masked array, its unmasked entries, for a ``torch.masked.MaskedTensor`` its specified
        ones; both given: entries observed in both).
    prior: what decides the ranks. ``"bic"`` (default): the MAP objective under an Occam
        prior, ``(N/2) log(SSE/N) + (c/2) D log N`` with ``D`` the network's degrees of
        freedom (:mod:`tnmars.fitting.criterion`), minimised by a local search that adds and
        removes rank indices, each candidate refitted exactly by ALS. ``"bernoulli"``: the
        paper's MARS objective alone (its relaxation's MAP masks), then an ALS polish.
    prior_strength: ``c`` above; 1 is BIC, larger prunes more, 0 keeps every index that
        lowers the error at all, down to the criterion's floor: fits closer than a relative
        error of about 1e-4 of the data's spread count as exact and tie (no index is added to
        lower the error further). Default: 1, or 0 within a ``budget`` (below).
    proposal: where the search starts: ``"spectral"`` (EVBMF's or MDL's reading of the
        unfolding spectra, whichever the criterion prefers; Tucker, TT, TR, and a spec that is
        a ring in its modes' order such as ``"iab,jbc,kca"``), ``"greedy"``
        (rank 1 everywhere, then add), ``"mars"`` (the MARS relaxation's MAP ranks), or
        ``"auto"``: spectral where it applies, greedy otherwise.
        A :class:`~tnmars.Network` with ``network``'s spec and bond sizes within its maximal
        ranks is a warm start: the search starts from its ranks and cores (a previous
        result's ``network``; :func:`tnmars.sweep` starts each structure-search budget from
        the previous one). The search never grows past half as many degrees of freedom as
        observed entries, but a start above that stays above it, with a warning.
    relaxation: settings of the MARS relaxation (:class:`tnmars.Relaxation` or a dict of its
        fields: ``pi``, ``alpha``, ``steps``, ``lr`` ...); used by ``prior="bernoulli"`` and
        ``proposal="mars"``.
    min_rank: smallest rank every returned bond takes (1): the proposal is raised to it and
        the search removes no index below it. One int for every bond, one per bond in the
        order of ``max_rank``'s (:attr:`Network.bonds <tnmars.Network.bonds>`), or a mapping
        bond -> rank (a spec's bond letters, a format's bonds as :attr:`FitResult.bonds` names
        them, a Network's labels; a bond it does not name: 1). ``max_rank`` and ``min_rank`` at
        the same ranks fit those ranks, selecting nothing:
        ``fit(x, "tt", max_rank=(3, 5, 2), min_rank=(3, 5, 2))``. A floor that needs
        larger neighbours to be a rank at all (4 on a Tucker bond beside two at 1, at most
        1 x 1) raises them as far as it needs. ``min_rank`` above a
        given ``max_rank`` (or a Network's bond size) is a ``ValueError``; above the default
        ``max_rank``, the default rises to it. A bond that cannot use that many indices (its rank is
        capped by the data's dimensions: a TT bond next to a mode of size 2 is useful up to
        rank 2) stays at its cap, with a warning naming it; a network at ``min_rank`` with
        more degrees of freedom than half the observed entries is fitted as asked, with a
        warning (the criterion cannot judge ranks there). Rank 0 zeroes the whole network:
        ``min_rank=0`` lets the relaxation of ``prior="bernoulli"`` close a bond; the Occam
        search never removes a bond's last index.
    budget: a size budget: a parameter count (``int``) or a compression ratio (``"20x"``).
        The selection returns the network that fits the data best among those within it
        (never more parameters; fits under the criterion's floor tie, as above, so a budget
        larger than the data's exact network returns that network): a budget is the size the
        caller chose, so the Occam prior
        is off unless ``prior_strength`` is given (then: the MAP network within the
        budget, which may be smaller). With ``prior="bernoulli"`` (no search) the budget only
        caps the relaxation's ranks (indices are removed until it fits), with a warning.
        See :mod:`tnmars.fitting.budget` and :func:`tnmars.sweep`.
    selection: settings of the rank search, by name (fields of
        :class:`~tnmars.fitting.search.RankSearch`: ``sweeps``, ``full_sweeps``,
        ``final_sweeps``, ``second_look``, ``patience``, ``exchanges``); default: its own,
        with ``exchanges`` on when there is a budget and for a tensor ring. And
        ``random_restart`` (default True): a tensor ring (``"tr"`` or a ring spec) fitted
        without a budget whose relative error against the data's deviations from their mean
        is above ``RING_RESTART_FROM`` (0.3), or whose residual holds structure rather than
        noise, is searched again from random cores at the largest ranks the observations
        determine; the criterion keeps the better end (a completion's only where it does not
        extrapolate), and a fit still above either tries one more random start
        (``RING_RANDOM_STARTS`` in all). ALS on a ring from the spectral start's low ranks can
        stop in minima no single index leaves, and where a random start's walk ends depends on
        the start. A network grown from rank 1 (the greedy proposal: CP, other graphs' specs)
        that ends the same way is searched again from the best of ranks doubled on every bond,
        rung by rung up to the largest mode size: its walk stops where no single index pays,
        as on data whose components are all about as strong (one more pays only once most are
        in). A CP fitted at ranks given (``min_rank`` = ``max_rank``, complete data) also
        polishes a start from the unfoldings' leading singular vectors (tensorly's
        ``init="svd"``) and keeps the closer fit unless its components cancel more.
        ``widen_caps`` (default True): a bond that ends at its default cap (a format's or
        spec's bonds without ``max_rank``, or those a ``max_rank`` mapping does not name; one
        rank for every bond, raised to a ``min_rank`` above it) walks on past it as far as the
        observations' degrees-of-freedom limit allows with the others at their selected ranks
        (``benchmarks/results/default_caps.md``). ``loop_restarts`` (default True): the
        selected network, where its bonds in use close a loop (a user's graph or a structure
        search's), is refitted from random starts and the best fit kept (ALS on loops stops in
        start-dependent minima); False keeps the walk's cores (a structure search's loop cuts
        do: each is one more walk, kept only where it wins as walked).
    seed: an int or a ``numpy.random.Generator``: seeds every random start and mask noise.
        Default 0, so that the same data give the same ranks from one call to the next (a
        ring's second walk starts from random cores, and the search grows bonds by random
        slices: unseeded, a hard ring came back at (4, 4, 3), (3, 5, 3), (4, 5, 2) or
        (5, 3, 4) in four calls). ``None`` draws fresh randomness at every call.
    backend, device, dtype: where the result lives (and where the relaxation trains);
        default: the data's. ``dtype`` is float32 or float64, named by a string, a NumPy dtype
        or scalar type (``np.float32``), Python's ``float`` or a ``torch.dtype``. By default
        float32 data give a float32 result, half precision data (float16, bfloat16) are
        fitted and returned in float32 (half precision would overflow the least-squares
        steps; float32 holds their values exactly), and any other data float64. float32
        for data beyond its range (magnitudes near 1e38 or 1e-38) is refused. The
        selection's least-squares refits run in float64 on NumPy (CuPy for CuPy data).
        For half precision data the criterion counts every fit within the storage's
        rounding (:func:`storage_floor`) as exact: the rounding is not structure to select.
    progress: a bar per phase (relaxation, selection, polish, and for a completion the
        "checks" of its refits without a tenth of the observed entries); ``None``: on unless
        ``TQDM_DISABLE`` is set. callback: ``callback(step, info)`` for every record of every
        phase (``info``: phase, label, ranks, loss or objective; ``label`` names the fit as its
        bar does, e.g. ``"tnmars.fit, without the mean"``); returning ``True`` stops the fit,
        with a warning, and returns the best state so far, as Ctrl-C does
        (``interrupted=True``); in the checks it skips them (the fit is final by then). Any
        other return value goes on (an int, such as ``file.write``'s count, with a warning).

    Data far from zero (a mean more than ``CENTRE_FROM`` = 1e4 times the spread of their
    deviations; for a completion more than ``COMPLETION_CENTRE_FROM`` = 1 times, where masked
    refits slow down) are fitted twice, as given and without their mean plus that mean
    (:mod:`tnmars.fitting.centring`), and the criterion on the data as given keeps the better
    fit: ``settings["offset"]`` says which (not with a ``budget``, a warm start or a cap of 1;
    then such data warn beyond a mean 1e5 times the spread). The bars of the two fits say
    "as given" and "without the mean", and a callback hears both (``info["label"]`` says which).

    Returns
    -------
    FitResult
    """
    t0 = time.perf_counter()
    prior = _choice(prior, PRIORS, "prior")
    warm = proposal if isinstance(proposal, Network) else None
    if warm is None and not isinstance(proposal, str):
        raise TypeError(f"proposal must be one of {', '.join(map(repr, PROPOSALS))} or a Network (a warm start); "
                        f"got {type(proposal).__name__}")
    proposal = "start" if warm is not None else _choice(proposal, PROPOSALS, "proposal")
    if prior_strength is None:
        strength = DEFAULT_STRENGTH if budget is None else 0.0
    else:
        strength = _non_negative_float(prior_strength, "prior_strength")
    settings_relax = _relaxation(relaxation)
    search_settings = _selection(selection)
    random_restart = bool(search_settings.pop("random_restart", True))
    widen_caps = bool(search_settings.pop("widen_caps", True))
    restart_loops = bool(search_settings.pop("loop_restarts", True))
    with _arguments_said():  # (a fit of fit_both_ways: said by the caller's fit, of the caller's arguments)
        _warn_unused(relaxation, prior, proposal, prior_strength, selection, budget)
        min_rank = _checked_min_rank(min_rank)
        seed = _seed(seed)
        prep = prepare(data, observed, backend, _fit_dtype(dtype, data))
        _check_representable_in(prep, data)
        _check_deviations_resolved(prep, data)
        prep.backend.check_device(device)
        if device is not None and str(device).startswith("meta"):
            raise ValueError("device='meta' holds no values: a fit's result would be cores without numbers; fit on the "
                             "CPU or a GPU (a network can be moved to 'meta' afterwards with .to('meta'))")
        if device is None:
            device = prep.device  # GPU data: the relaxation trains there and the result goes back there
        # the Occam search's default caps reach what the observations can determine; the relaxation
        # trains at the caps, whose cost grows with their square: it keeps max(shape)
        judged = prior == "bic" and proposal != "mars"
        template, fmt, asked, layout = _template(network, prep.shape, max_rank,
                                         MAX_DOF_SHARE * prep.data.n_obs if judged else None,
                                         at_least=_largest_floor(min_rank))
        min_rank = _bond_min_ranks(min_rank, template, network)
        floors = _rank_floors(template, asked, min_rank, prep.data.n_obs, uniform=isinstance(network, str),
                              default=max_rank is None)
        default_capped = _default_capped(network, max_rank, template)
        limit = _budget(budget, template, floors)
    settings = {"format": fmt or template.spec, "prior": prior, "prior_strength": strength, "seed": seed,
                "backend": prep.backend.name, "dtype": prep.dtype, "max_ranks": dict(template.bonds),
                "min_rank": min_rank, "budget": budget, "max_params": limit}
    if prep.scale == 0.0:
        return _labelled(_in_user_layout(_zero_result(template, prep, settings, t0), layout), network)
    centred_args = (centred_caps(network, max_rank)
                    if centring_allowed(prep.data, budget, warm, template.bonds, prep.observed is not None) else None)
    if centred_args is not None:  # far from zero: fitted as given and without the mean (tnmars.fitting.centring)
        options = {"max_rank": max_rank, "observed": observed, "prior": prior, "prior_strength": prior_strength,
                   "proposal": proposal, "relaxation": relaxation,
                   "min_rank": _min_rank_argument(min_rank, template), "selection": selection,
                   "seed": seed, "backend": backend, "device": device, "dtype": dtype, "progress": progress,
                   "callback": callback}
        # the judge of both: the criterion's floor at the share of the data's spread, computed without
        # cancellation and under no precision floor of least squares (the errors it compares are evaluated)
        judge = Occam(prep.data.n_obs, strength,
                      max(MSE_FLOOR * prep.data.spread / prep.data.sq_norm, storage_floor(data)))
        return _labelled(fit_both_ways(fit, data, network, options, prep, dict(template.bonds), judge, centred_args),
                         network)
    ring = ring_layout(template) if fmt is None else None  # a user's spec that is a tensor ring
    if proposal == "spectral" and fmt not in ("tucker", "tt", "tr") and ring is None:
        raise ValueError("proposal='spectral' needs a Tucker, TT or TR network (or a ring spec such as "
                         "'iab,jbc,kca'); use 'greedy' or 'mars'")
    if warm is not None:
        if prior == "bernoulli":
            raise ValueError("prior='bernoulli' starts from its own relaxation; a Network proposal needs prior='bic'")
        if layout is not None and warm.spec == layout.user_spec:  # (the user's layout: the fit's)
            warm = layout.to_format(warm)
        warm = _warm_start(warm, template, prep.scale, prep.data)
    reporter = Reporter(progress, callback)
    crit = Occam(prep.data.n_obs, strength, criterion_floor(data, prep.data))
    relaxed: RelaxationResult | None = None
    search: RankSearch | None = None
    with _threads(prep, template, device), contextlib.closing(reporter):
        # 1. proposal: where the selection starts
        if warm is not None:
            start, proposal_used = warm, "start"
        elif prior == "bernoulli" or proposal == "mars":
            relaxed, start = _run_relaxation(template, fmt, prep, settings_relax, seed, device, reporter, min_rank)
            proposal_used = "mars"
        elif proposal == "spectral" or (proposal == "auto" and (fmt in ("tucker", "tt", "tr") or ring is not None)):
            # (said: the unfoldings' SVDs of a 3000 x 3000 matrix took 39 s before any bar showed)
            reporter.start("proposals", note="singular values of the data's unfoldings")
            lowest = {b: max(f, 1) for b, f in floors.items()}
            starts, readings = (spectral_starts(fmt, template, prep.data, floors=lowest) if ring is None else
                                ring_spectral_starts(template, prep.data, ring, floors=lowest))
            # a ring with a small mode has two readings of its small cuts (spectral_starts): the
            # search runs from the preferred start of each, and the criterion keeps the better end
            # (judged as they stand, TR-SVD starts are far from their refits: the one picked that
            # way walked to (1, 1, 1) on a 20x3x20 ring at (3, 3, 6), or missed an exact fit)
            second = [s for s in starts if s.second_reading]
            starts = [s for s in starts if not s.second_reading]
            start, settings["spectral_selector"] = _preferred_start(starts, prep.data, crit)
            alternative = _preferred_start(second, prep.data, crit)[0] if second else None
            settings["spectral_ranks"] = {name: tuple(r[b] for b in template.bonds) for name, r in readings.items()}
            proposal_used = "spectral"
        else:
            start, proposal_used = rank_one_start(template, prep.data, seed, floors), "greedy"
        if proposal_used != "spectral":
            alternative = None
        interrupted = relaxed is not None and (relaxed.interrupted or reporter.stopped)
        # the search removes no index below min_rank but never adds one to reach it: the start
        # is raised first (the Occam search cannot start from a closed bond: at least 1 there)
        start = raised_to(start, floors if prior == "bernoulli" else {b: max(f, 1) for b, f in floors.items()}, seed)
        if limit is not None:  # a budget: the start brought within it by the data
            start = descend_to_params(start, prep.data, crit, limit, floors)
        best = _evaluated(start, prep.data, crit, "proposal")
        # 2. selection under the Occam criterion (the paper's objective stops at its relaxation)
        if prior == "bic" and not interrupted:
            reporter.start("selection", note=f"Occam criterion from the {proposal_used} proposal")
            # walking through steps that do not pay alone is for growing from rank 1; from a
            # spectral or relaxed proposal the neighbours of the start decide; within a budget,
            # and on rings, the search also trades indices between bonds (exchanges): a ring's
            # ranks act through their neighbours' products, and its walk stopped at (4, 4, 3) or
            # (3, 4, 3) for a true (3, 5, 2) (8x9x10, 20 and 40 dB: 0.079 and 0.076 relative error
            # to the truth, 0.057 and 0.006 with exchanges; held out, 2026-11-30: 5 of 36 rings
            # better, none worse, 1.5x the time)
            options = {"patience": GREEDY_PATIENCE if proposal_used in ("greedy", "start") else 0,
                       "exchanges": limit is not None or fmt == "tr" or ring is not None,
                       **({"sweeps": COMPLETION_SWEEPS} if prep.data.weights is not None else {}), **search_settings}
            report, on_refit = _search_reporters(reporter, prep.data)

            # a ring spec gets the TR format's fresh, EM and truncation starts (TR-SVD in its axis order)
            kind = "tr" if ring is not None else fmt

            def new_search(**overrides: Any) -> RankSearch:
                return RankSearch(prep.data, crit, max_ranks=dict(template.bonds), min_rank=floors, seed=seed,
                                  report=report, on_refit=on_refit, max_params=limit,
                                  fresh=fresh_start(kind, template, prep.data, seed),
                                  restarts=loop_restarts(kind, template, seed) if restart_loops else None,
                                  imputed=em_starts(kind, template, prep.data),
                                  doubtful=lambda c: _unexplained(c, prep.data) or _extrapolates(c.network, prep),
                                  classical=truncation_start(kind, template, prep.data), **{**options, **overrides})

            def walk_again(start: Network, accept: Callable[[Candidate], bool] = lambda c: True,
                           **overrides: Any) -> None:
                """A second search from ``start``: its end replaces ``best`` where the criterion
                prefers it (and ``accept`` agrees)."""
                nonlocal best, search, interrupted
                other = new_search(**overrides)
                try:
                    found = other.run(start)
                except KeyboardInterrupt:
                    interrupted = True
                    found = other.interrupted_best(best)
                interrupted = interrupted or other.stopped
                other.evaluations += search.evaluations
                if found.objective < best.objective and accept(found):
                    best, search = found, other
                else:
                    search.evaluations = other.evaluations

            search = new_search()
            try:
                best = search.run(start)
            except KeyboardInterrupt:  # Ctrl-C: the best network seen so far
                interrupted = True
                best = search.interrupted_best(best)
            interrupted = interrupted or search.stopped
            if alternative is not None and not interrupted and limit is None:
                walk_again(raised_to(alternative, {b: max(f, 1) for b, f in floors.items()}, seed))
            if (random_restart and proposal_used == "greedy" and kind != "tr" and not interrupted and limit is None
                    and (_unexplained(best, prep.data, RING_RESTART_FROM) or _structured(best, prep, seed))):
                # a walk grown from rank 1 (CP, a user's graph) stops where no single index pays:
                # with components all about as strong, one more pays only once most are in (an
                # outside probe, 2026-12-02: an 80x60 matrix of rank 10, orthonormal factors, at
                # 40 dB, fitted as "iA,jA->ij", and an orthogonal CP of rank 8 on 10^3, both came
                # back at rank 1 with 93-95% of the data unexplained); the ladder's best rung
                # (_ladder_start) starts a second walk. benchmarks/greedy_restart.py
                reporter.start("selection", note="ranks doubled on every bond, rung by rung: the walk from rank 1 "
                               "leaves much of the data, or structure, unexplained")
                try:
                    rung = _ladder_start(best, template, floors, prep, crit, seed, lambda: reporter.stopped)
                except KeyboardInterrupt:
                    rung, interrupted = None, True
                if rung is not None and not interrupted:
                    walk_again(rung, accept=lambda c: not _extrapolates(c.network, prep))
            if (random_restart and kind == "tr" and not interrupted and limit is None
                    and (_unexplained(best, prep.data, RING_RESTART_FROM) or _structured(best, prep, seed))):
                # a ring that leaves most of its data unexplained: ALS from the spectral start's low
                # ranks stops in poor minima that no single index leaves (a noiseless ring (3, 3, 4)
                # on 9x10x12, 80% observed: (1, 1, 1) at error 0.70, where (3, 4, 4) fits to 0.05);
                # a second walk from random cores at the largest ranks the observations determine,
                # its end kept where the criterion prefers it and it does not extrapolate; it also
                # tries every bond one index fewer at once (from those ranks a walk on noise came
                # down one index per step: a TR of 2^10 noise took 1,418 refits, 646 with the move).
                # Rings that fit better but not well stop in such minima too: noiseless held-out rings
                # came back at errors 0.03-0.3 with a residual that is structure, not noise (held-out
                # TR (3, 2, 2) on 5x6x7: (2, 3, 3) at 0.029); their residual asks for the walk as well;
                # and on small tensors a poor minimum's residual passes for noise, so an error above
                # RING_RESTART_FROM starts it too
                for attempt in range(RING_RANDOM_STARTS):
                    if attempt and (interrupted or not (_unexplained(best, prep.data, RING_RESTART_FROM)
                                                        or _structured(best, prep, seed))):
                        break
                    reporter.start("selection", note="a walk from random cores at the largest ranks the observations "
                                   f"determine ({attempt + 1} of at most {RING_RANDOM_STARTS}): the fit so far "
                                   "leaves much of the data, or structure, unexplained")
                    start_seed = seed if attempt == 0 or seed is None else np.random.default_rng([seed, attempt])
                    walk_again(_random_start(template, crit.max_dof, floors, prep.data, start_seed),
                               accept=lambda c: not _extrapolates(c.network, prep), descend_together=True,
                               **({} if "patience" in search_settings else {"patience": GREEDY_PATIENCE}))
            closed = (_closed_ring_start(best.network, template, floors, fresh_start(kind, template, prep.data, seed))
                      if kind == "tr" and not interrupted and limit is None else None)
            if closed is not None:
                # a ring the walk opened into a train (one bond at rank 1, the others near the
                # products of two ring ranks): a TR (2, ..., 2) on 2^12 came back at (1, 2, 4, ..., 4, 2),
                # exact but with 3x the truth's parameters, and no single index leads back. The walk
                # runs where the closed start, refitted, already beats the train: a train's data fitted
                # as a ring (TT 8^6 at (3, 5, 6, 5, 3)) paid a whole walk for nothing (4.2 s -> 7.3 s)
                reporter.start("selection", note="the fit opened the ring into a train: trying it closed again")
                refitted = new_search().evaluate(closed, search.full_sweeps, "closed ring")
                if refitted.objective < best.objective:
                    walk_again(refitted.network, accept=lambda c: not _extrapolates(c.network, prep))
            if (prep.observed is not None and not interrupted and limit is None and warm is None
                    and _offset(prep.data) and (_unexplained(best, prep.data) or _structured(best, prep, seed)
                                                or _extrapolates(best.network, prep))):
                # a completion whose mean dwarfs its deviations: masked ALS on the data as they are
                # stalls at ranks the same search on the data without their mean leaves (a noiseless
                # TT (3, 2, 2) on 9x11x9x8 plus 50 times its spread, 10% observed: (3, 3, 3) at 0.34
                # of the spread from the truth, silently, where (4, 3, 3) is exact and found
                # without the mean). That fit plus the mean (one index more on a spanning tree's bonds)
                # starts a second walk on the data; the criterion keeps the better end (centred
                # fits alone were farther from the truth on 6 of 18 offset completions). Only for a
                # fit in doubt (most of the data or structure left unexplained, or extrapolating):
                # run after every offset completion, it cost 2-6x their time
                reporter.start("selection", note="fitting the data without their mean, for a walk from that fit "
                               "plus the mean")
                try:
                    centred = _centred_start(network, max_rank, _min_rank_argument(min_rank, template),
                                             prior_strength, selection, seed, prep,
                                             template, crit.max_dof, floors, reporter)
                except KeyboardInterrupt:  # (Ctrl-C, or a callback's stop, in that fit: the fit so far)
                    interrupted, centred = True, None
                if centred is not None:
                    reporter.start("selection", note="a walk from the fit of the data without their mean, plus "
                                   "the mean")
                    walk_again(centred, accept=lambda c: not _extrapolates(c.network, prep))
            if (prep.observed is not None and not interrupted and limit is None and warm is None
                    and kind in ("tucker", "tt", "tr") and _extrapolates(best.network, prep)):
                # a walk that ends extrapolating sits in cores whose removals refit badly: sklearn's
                # digits 300x8x8 with the centre 4x4 missing in half the images ended at (2, 5, 5),
                # 165 times the spread off at the missing entries (values to 7,000 on data of 0-16),
                # where the same search from the truncation of the filled data at those ranks walks
                # to (1, 3, 3), better by the criterion (-8930 against -8525), 0.63 off (an outside
                # probe, 2026-12-01)
                restart = truncated(kind, template, filled(prep.data), dict(best.network.bonds))
                if restart is not None:
                    reporter.start("selection", note="the walk's end extrapolates: a walk from the truncation of the "
                                   "filled data at its ranks")
                    walk_again(feasible(restart), accept=lambda c: not _extrapolates(c.network, prep))
            if (widen_caps and prior == "bic" and default_capped and limit is None
                    and proposal_used != "mars" and not interrupted):  # (the relaxation's caps: max(shape))
                # the default caps are one rank for every bond (judged_rank: every bond there at once
                # reaches the observations' limit); a bond that ends at its cap while the others stay
                # small may pay past it within that limit: a tree "aA,bB,ABC,CcD,dD" on 6^4 at
                # (5, 5, 16, 5), noiseless, came back at (5, 5, 10, 5), 0.06-0.12 off, telling the
                # user to raise a max_rank they never gave. The walk goes on with those caps raised
                for _ in range(CAP_WIDENINGS):
                    wider = _widened_caps(best.network, template, crit.max_dof, default_capped)
                    if not wider or interrupted:
                        break
                    reporter.start("selection", note="bonds at the default cap, which the observations' limit "
                                   "lets grow with the others as selected: walking on past it")
                    template = Network(template.spec, {**template.dims, **wider}, seed=0, optimize=template.optimize)
                    settings["max_ranks"] = dict(template.bonds)
                    before = best
                    walk_again(best.network, accept=lambda c: not _extrapolates(c.network, prep))
                    if best is before:
                        break
            if (fmt == "cp" and random_restart and prior == "bic" and not interrupted and limit is None
                    and prep.observed is None and _ranks_fixed(template, settings.get("min_rank", 1))):
                # ranks given: the start is random cores there, and CP's ALS has poor minima: a CP of
                # rank 8 on 10^3 at 30 dB came back at relative error 0.160 (0.16 from the truth) where
                # tensorly's parafac, from its SVD or any of three random starts, reaches 0.0275 (0.016
                # from the truth). A second start from the unfoldings' leading singular vectors (parafac's
                # init="svd"); both polished, the closer fit kept unless its components cancel more (a
                # swamp's: a refit from random cores took a held-out fixed-rank CP 0.013 -> 0.10 from the
                # truth at a lower error)
                reporter.start("selection", note="ranks given: a second start from the unfoldings' singular vectors")
                try:
                    other = _polish(_evaluated(_svd_cp_start(best.network, prep.data, seed), prep.data, crit,
                                               "svd start"), prep.data, crit, reporter)
                    best = _polish(best, prep.data, crit, reporter)
                except KeyboardInterrupt:
                    interrupted = True
                else:
                    if (other.sse < best.sse * (1.0 - 1e-3)
                            and _cp_cancellation(other.network) <= max(CP_CANCELLATION, _cp_cancellation(best.network))):
                        best = other
        # 3. polish: ALS to convergence at the selected ranks
        polished = not interrupted  # (its record in the history: "result" when it never ran)
        if polished:
            try:
                best = _polish(best, prep.data, crit, reporter)
            except KeyboardInterrupt:
                interrupted = True
            interrupted = interrupted or reporter.stopped
        # 4. a completion's cross-validation refits (the "poor generalization" diagnostic)
        held_out: list[float] = []
        if (prep.observed is not None and not interrupted and _FINAL_CHECKS.get()
                and best.sse > EXACT_FIT_ERROR**2 * _deviations(prep.data)):
            # (against the deviations from the mean: data at 1e5 plus structure and 5% noise read as
            # exact against their norm, and no completion of them was cross-validated)
            reporter.start("checks", note="completion refitted without a tenth of its observed entries")
            try:
                held_out = held_out_errors(best.network, prep.data, seed,
                                           should_stop=lambda: reporter.record({"ranks": best.network.ranks}))
            except KeyboardInterrupt:  # the fit is done: Ctrl-C skips only its check
                held_out = []
    # without max_rank a format's or spec's caps are the observations' limit (judged_rank), not a choice:
    # the check of what that limit refused may grow a bond past them
    grown = feasible_ranks(template.spec, {**template.dims, **dict.fromkeys(template.bonds, prep.data.n_obs)})
    growth_caps = {b: grown[b] if b in default_capped else cap for b, cap in template.bonds.items()}
    if _FINAL_CHECKS.get() and not interrupted:  # (said: 28 s of them after the polish of a 3000 x 3000 matrix)
        reporter.start("checks", note="the fit's checks of its own residual")
    try:
        result = _result(best, template, prep, crit, settings, relaxed, search, proposal_used, prior, interrupted,
                         device, t0, held_out, polished, growth_caps, network_given=isinstance(network, Network),
                         default_capped=default_capped)
    finally:
        reporter.close()
    if interrupted and not reporter.stopped:  # (a callback's stop has warned already)
        # an outside probe (2026-12-04): Ctrl-C returned a fit at relative error 0.76 without a word,
        # its summary reading the error left as a noise variance
        warn(f"{reporter.label}: interrupted (Ctrl-C) in its {reporter.phase or 'first'} phase: the best state so far "
             f"is returned (result.interrupted is True), at relative error {result.relative_error:.3g}; its ranks are "
             "where the search stood, not a selection, and its noise variance is what it left unexplained",
             RuntimeWarning)
    return _labelled(_in_user_layout(result, layout), network)


def _in_user_layout(result: FitResult, layout: FormatLayout | None) -> FitResult:
    """The result's networks in the user's spec when it is a format in another layout."""
    if layout is None or layout.renamed_only:
        return result
    result.network = layout.to_user(result.network)
    if result.full_network is not None:
        result.full_network = layout.to_user(result.full_network)
    return result


def _labelled(result: FitResult, network: Any) -> FitResult:
    """The result's networks with the labels of a labelled :class:`Network` the caller fitted
    (their bonds keep their index symbols: ``result.network.labels`` maps labels to them)."""
    labels = getattr(network, "labels", None) if isinstance(network, Network) else None
    if labels:
        for net in (result.network, result.full_network):
            if net is not None:
                net.labels = dict(labels)
    return result


# ---------------------------------------------------------------------------------- phases
def _run_relaxation(template: Network, fmt: str | None, prep: Prepared, settings: Relaxation, seed: int | None,
                    device: str | None, reporter: Reporter,
                    min_rank: int | Mapping[str, int]) -> tuple[RelaxationResult, Network]:
    """The MARS relaxation from a fitted start at the maximal ranks; returns it and the
    network pruned to its MAP masks (at least ``min_rank`` per bond: one int, or by bond)."""
    data = prep.data
    y = data.backend.to_numpy(data.y)
    weights = None if data.weights is None else data.backend.to_numpy(data.weights)
    if settings.start == "random":
        cores = [np.asarray(c) for c in Network(template.spec, template.dims, seed=seed).cores]
    elif fmt is not None:
        from ..interop.init import svd_init

        try:
            ranks = template.ranks[0] if fmt == "cp" else template.ranks  # (the constructors' order)
            start = svd_init(fmt, y, ranks, observed=weights, seed=seed)
            cores = [np.asarray(c, dtype=np.float64) for c in start.cores]
        except ValueError:
            cores = None
    else:
        cores = None
    if cores is None:  # any other network: least squares at the maximal ranks, from random values
        net = Network(template.spec, template.dims, seed=seed, optimize=template.optimize)
        net, _ = als(net, data, sweeps=20)
        cores = [np.asarray(c) for c in net.cores]
    reporter.start("relaxation", total=settings.steps, note=f"MARS, pi={settings.pi}")
    state = {"last": 0}

    def report(step: int, loss: float, ranks: tuple[int, ...], temp: float) -> bool:
        advance = step + 1 - state["last"]
        state["last"] = step + 1
        return reporter.record({"loss": loss, "ranks": ranks, "temperature": temp}, advance=advance)

    relaxed = relax(template, cores, y, weights, settings, fitted_start=settings.start == "fitted",
                    backend=prep.backend, device=device,
                    dtype=prep.dtype, seed=seed, report=report)
    keep = relaxed.keep(min_rank)
    pruned = Network(template.spec, cores=relaxed.cores, optimize=template.optimize).prune(keep)
    return relaxed, pruned


def _search_reporters(reporter: Reporter, data: FitData) -> tuple[Callable[[Candidate, str], bool],
                                                                  Callable[[str, int, int, float], None]]:
    """The search's ``report`` (one step per evaluated candidate) and ``on_refit`` (a long
    refit's sweeps, shown between two steps). Both show ``best_error``, the relative error of the
    best candidate so far (lowest objective): the last candidate is often a 3-sweep probe, far
    from what the search holds."""
    def error(sse: float) -> float:  # as FitResult.relative_error
        return math.sqrt(max(sse, 0.0) / max(data.sq_norm, 1e-300))

    best: dict[str, float] = {}

    def report(cand: Candidate, phase: str) -> bool:
        if not best or cand.objective < best["objective"]:
            best.update(objective=cand.objective, error=error(cand.sse))
        return reporter.record({"objective": cand.objective, "ranks": cand.ranks, "move": cand.move,
                                "sse": cand.sse, "best_error": best["error"]})

    def on_refit(move: str, sweep: int, sweeps: int, sse: float) -> None:
        reporter.note({"refit": f"{move}: sweep {sweep}/{sweeps}, error {error(sse):.4g}"})
    return report, on_refit


def _polish(best: Candidate, data: FitData, crit: Occam, reporter: Reporter) -> Candidate:
    """ALS to convergence from the selected candidate, kept only where it fits at least as well.

    ALS is not monotone on every network: on a ring at ranks (4, 5, 3, 2) within a budget
    (``structure_search.py``, heldout 101) the polish came down from the selected 0.3026 to
    0.3011 in 192 sweeps, then one exact sweep (after many line-search extrapolations) went to
    0.3902, and the fit returned that silently."""
    net = best.network
    reporter.start("polish", note="ALS to convergence at the selected ranks")
    history: list[float] = []
    cp = any(len(net.terms_with(b)) > 2 for b in net.bonds)  # (CP's swamps: see _converged_polish)
    if cp:
        fitted, sse = als(net, data, sweeps=CP_POLISH_SWEEPS, tol=0.0, cg_iters=100, cg_tol=1e-10,
                          on_sweep=lambda sweep, sse: history.append(sse),
                          should_stop=lambda: reporter.record({"ranks": net.ranks}) or _converged_polish(history))
    else:
        fitted, sse = als(net, data, sweeps=POLISH_SWEEPS, tol=1e-7, cg_iters=100, cg_tol=1e-10,
                          should_stop=lambda: reporter.record({"ranks": net.ranks}))
    if not sse <= best.sse:  # (NaN too)
        fitted, sse = net, best.sse
    dof = degrees_of_freedom(fitted.spec, fitted.dims)
    polished = Candidate(fitted, sse, crit.objective(sse, dof), dof, "polish")
    if cp and len(history) >= CP_POLISH_SWEEPS and not reporter.stopped and not _converged_polish(history):
        polished.unconverged = _still_to_gain(history)
    return polished


def _converged_polish(history: Sequence[float], tol: float = POLISH_TOL, window: int = POLISH_WINDOW) -> bool:
    """Whether the polish may stop: the error's gain still to come, extrapolated from the gains
    of the last two windows of sweeps as a geometric series (``g r / (1 - r)``, ``r`` their
    ratio), is below ``tol`` times the error. A gain per sweep alone misjudges the slow valleys
    ("swamps") of CP's ALS: a rank-2 CP 10^3 with nearly collinear factors, 40 dB, stopped at
    relative error 1.09e-2 when a sweep gained less than 1e-7 of the error, where 20,000 sweeps
    reach 9.56e-3 (tensorly's parafac with line search: 9.56e-3). A gain that is not falling
    (``r >= 1``) counts as still to come; a sweep that gains less than :data:`POLISH_STALL` of
    the error, as converged (an exact fit, a minimum reached: no window needed)."""
    if len(history) >= 2 and history[-2] - history[-1] <= POLISH_STALL * history[-1]:
        return True
    if len(history) < 2 * window + 1:
        return False
    now, before, old = history[-1], history[-1 - window], history[-1 - 2 * window]
    gain, previous = before - now, old - before
    if gain <= tol * max(now, 1e-300):
        return True
    if previous <= 0.0 or gain >= previous:
        return False
    ratio = gain / previous
    return gain * ratio / (1.0 - ratio) < tol * now


def _still_to_gain(history: Sequence[float], window: int = POLISH_WINDOW) -> float:
    """The share of the squared error the polish's last ``window`` sweeps gained."""
    return max(history[-1 - window] - history[-1], 0.0) / max(history[-1], 1e-300)


def _budget(budget: Any, template: Network, floors: Mapping[str, int]) -> int | None:
    """The parameter limit of ``budget`` (``None``: no budget); refused before any work
    when even the smallest network of the template (every bond at its floor) exceeds it."""
    if budget is None:
        return None
    limit = max_params(budget, template.dense_size)
    smallest = smallest_params(template, floors)
    if smallest > limit:
        lowest = {b: max(f, 1) for b, f in floors.items()}
        allows = "" if not isinstance(budget, str) else \
            f" ({limit:,} parameter{'s' if limit != 1 else ''})"  # (a count says it already)
        raise ValueError(f"budget {describe(budget)}{allows} is below the smallest network of "
                         f"this form: {smallest:,} parameters with {describe_floors(lowest)}")
    return limit


def _rank_floors(template: Network, asked: Mapping[str, int], min_rank: int | Mapping[str, int], n_obs: int, *,
                 uniform: bool, default: bool) -> dict[str, int]:
    """The smallest rank of every bond: ``min_rank`` (one for every bond, or bond -> floor),
    or the bond's cap where it cannot use that many indices. ``asked``: the maximal ranks as the
    caller gave them (before they were clipped to what each bond can use); ``uniform``: they
    came from one ``max_rank`` value (``default``: its default). The search only refuses to
    remove indices below a floor, so a floor the bond cannot reach would silently return less:
    such bonds are named in a warning instead."""
    def asked_of(bond: str) -> int:
        return min_rank if isinstance(min_rank, int) else min_rank.get(bond, 1)

    # messages name a bond as the caller did: by its label in a network declared with label lists
    label_of = {symbol: label for label, symbol in (template.labels or {}).items()}
    over = {b: m for b, m in asked.items() if m < asked_of(b)}
    if over:
        if uniform and len(set(asked.values())) == 1:
            where = f"max_rank={next(iter(asked.values()))}" + (" (the default: the largest mode size, or the "
                                                                 "largest rank the observations determine)"
                                                                 if default else "")
        else:
            where = f"the maximal rank of bond{'s' if len(over) > 1 else ''} " + ", ".join(
                f"{label_of.get(b, b)!r} ({m})" for b, m in over.items())
        raise ValueError(f"{_said_floors(min_rank, None if isinstance(min_rank, int) else list(over), label_of)} is above "
                         f"{where}: lower min_rank or raise the maximal ranks")
    floors = _joint_floors(template, asked_of)
    short = {b: f for b, f in floors.items() if f < asked_of(b)}
    if short:
        names = ", ".join(f"{label_of.get(b, b)!r} (at most {f}" + ("" if isinstance(min_rank, int) else f", asked {asked_of(b)}") + ")"
                          for b, f in short.items())
        warn(f"tnmars.fit: {'min_rank' if not isinstance(min_rank, int) else _said_floors(min_rank, None, label_of)} cannot "
             f"hold for bond{'s' if len(short) > 1 else ''} {names}: "
             f"for data of shape {template.shape} a larger rank there adds parameters but no expressive "
             "power, so the fit keeps it at that cap", UserWarning)
    if any(asked_of(b) > 1 for b in template.bonds):
        dof = degrees_of_freedom(template.spec, {**template.dims, **floors})
        if dof > MAX_DOF_SHARE * n_obs:  # (the final diagnostics skip what this said: _floors_past_limit)
            # (below the entries' count the data still determine it: a least-squares fit of D degrees of
            # freedom to N entries takes in about D / N of the noise; a 200 x 6 matrix at rank 3 was told
            # "the data cannot determine it" at 609 for 1,200 entries)
            determined = ("the data cannot determine it" if dof >= n_obs else
                          f"it takes in about {dof / n_obs:.0%} of the noise (its share of the entries)")
            warn(f"tnmars.fit: at {_said_floors(min_rank, None, label_of)} the network has {dof:,} degrees of freedom, more than "
                 f"{MAX_DOF_SHARE:.0%} of the {n_obs:,} observed entries: the criterion cannot judge ranks that "
                 f"large, and {determined}; it is fitted as asked", UserWarning)
    return floors


#: whether :func:`fit` runs its costlier final checks (a refit past ``max_rank``, the residuals'
#: tails, the spectra against the observations' limit): off for the fits a structure search runs
#: (:func:`internal_fits`), whose results it judges itself (and whose bonds a user does not know)
_FINAL_CHECKS: contextvars.ContextVar[bool] = contextvars.ContextVar("tnmars_fit_final_checks", default=True)
#: relative error below which residuals are not judged for heavy tails: a fit this close (60 dB)
#: is an approximation of structure, not a fit of noise (noiseless smooth functions warned)
HEAVY_TAILS_FROM = 1e-3
#: relative error below which a fit does not warn that the spectra read more than the observations
#: determine: 1/(1 + x + y + z) on 20^3 (MDL: ranks (16, 18, 19)) was fitted to 2e-5 at (3, 4, 4)
SPECTRA_CHECK_FROM = 0.1


@contextlib.contextmanager
def _arguments_said() -> Iterator[None]:
    """The checks of :func:`fit`'s arguments, silenced in the two fits of
    :func:`~tnmars.fitting.centring.fit_both_ways`: the caller's fit gave their warnings, of
    the caller's arguments (the fit without the mean would speak of caps and ``min_rank`` one
    lower)."""
    if CENTRING.get():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def internal_fits() -> Iterator[None]:
    """Within the block, :func:`fit` skips the final checks of :data:`_FINAL_CHECKS`."""
    token = _FINAL_CHECKS.set(False)
    try:
        yield
    finally:
        _FINAL_CHECKS.reset(token)


def _excess_kurtosis(residual: np.ndarray, n_obs: int, mse: float) -> float:
    """Excess kurtosis of the residual's ``n_obs`` observed entries (0 elsewhere), by chunks:
    no full-size temporary beside the residual."""
    if not mse > 0:
        return 0.0
    flat = residual.reshape(-1)
    scale = 1.0 / math.sqrt(mse)  # (in units of the RMS: mse**2 underflows below 1e-162)
    fourth = 0.0
    for start in range(0, flat.size, 1 << 16):  # (512 KB temporaries)
        chunk = flat[start:start + (1 << 16)] * scale
        chunk *= chunk
        fourth += float(np.vdot(chunk, chunk))
    return fourth / n_obs - 3.0


def cp_spectral_ranks(y: np.ndarray) -> dict[str, tuple[int]]:
    """Each spectral selector's lower bound on ``y``'s CP rank: the largest rank it reads off a
    mode unfolding (a CP network of rank R has every unfolding's rank at most R). For the final
    check against the observations' limit: a CP matrix 30x25 of rank 12, 30 dB (516 degrees of
    freedom, 750 entries), came back at rank 1 with error 0.85 and no word."""
    return {name: (max(ranks),) for name, ranks in zip(SPECTRAL_SELECTORS, tucker_proposals(y, SPECTRAL_SELECTORS))}


def _preferred_start(starts: Sequence[SpectralStart], data: FitData, crit: Occam) -> tuple[Network, str]:
    """The start (and its selector's name) with the lowest objective, each made feasible first
    and judged as it stands (its truncation's error, no refit). A selector that misreads the
    spectra can leave the search where no single index pays (see
    :data:`~tnmars.fitting.proposals.SPECTRAL_SELECTORS`); under the fit's own criterion the
    other selector's start then wins."""
    judged = [(_evaluated(feasible(s.network), data, crit, "proposal"), s.selector) for s in starts]
    best, selector = min(judged, key=lambda pair: pair[0].objective)
    return best.network, selector


def _structured(best: Candidate, prep: Prepared, seed: int | np.random.Generator | None) -> bool:
    """Whether ``best``'s residual holds structure the network left out (the poor-fit checks'
    :func:`~tnmars.fitting.diagnostics.residual_has_structure`, here at any error): the sign of a
    walk stopped in a poor minimum, not of noise. An exact fit (under the criterion's floor) has
    none to show."""
    data = prep.data
    if best.sse <= MSE_FLOOR * data.sq_norm:
        return False
    to_numpy = data.backend.to_numpy
    residual = np.asarray(to_numpy(data.y), dtype=np.float64) - np.asarray(to_numpy(best.network.to_tensor()))
    obs = prep.observed
    if obs is not None:
        residual *= obs
    return residual_has_structure(residual, obs, seed if isinstance(seed, int) else 0)


#: how many times a fit raises the default caps of the bonds that end at them (_widened_caps)
CAP_WIDENINGS = 3


def _default_capped(network: Any, max_rank: Any, template: Network) -> frozenset[str]:
    """The bonds of a format or spec whose cap is the default (:func:`_default_rank`): every
    bond without ``max_rank``, those a mapping does not name; none for a Network (its bond sizes
    are its caps) or a ``max_rank`` that caps every bond."""
    if not isinstance(network, str):
        return frozenset()
    if max_rank is None:
        return frozenset(template.bonds)
    if isinstance(max_rank, Mapping):
        return frozenset(b for b in template.bonds if b not in max_rank)
    return frozenset()


def _widened_caps(net: Network, template: Network, max_dof: float,
                  default_capped: frozenset[str]) -> dict[str, int]:
    """Raised caps for the bonds of ``net`` at their default cap in ``template`` (``default_capped``:
    not named by ``max_rank``; a ``min_rank`` there raised the default, it fixes nothing: a
    ``min_rank={"C": 12}`` left bond C at 12, 0.03 off, where it needs 16): each to the largest
    rank it can use, with the other bonds at ``net``'s ranks, within ``max_dof`` degrees of
    freedom; empty where no bond can grow."""
    wider = {}
    for bond, rank in net.bonds.items():
        cap = template.bonds[bond]
        if bond not in default_capped or rank < cap:
            continue
        dims = dict(net.dims)
        top = feasible_ranks(net.spec, {**dims, bond: 10**9})[bond]
        best = cap
        for r in range(cap + 1, min(top, 10**6) + 1):  # (dof grows with r until the bond's cut is full)
            if degrees_of_freedom(net.spec, {**dims, bond: r}) > max_dof:
                break
            best = r
        if best > cap:
            wider[bond] = best
    return wider


#: a CP whose components' norms add up to more than this many times its own norm cancel one
#: another (a "swamp" of ALS, degenerate components): :func:`_cp_cancellation`
CP_CANCELLATION = 10.0


def _cp_bond(net: Network) -> str:
    """A CP network's rank bond: its hyperedge (a matrix's one bond)."""
    (bond,) = [b for b in net.bonds if len(net.terms_with(b)) > 2] or [next(iter(net.bonds))]
    return bond


def _cp_components(net: Network) -> list[np.ndarray]:
    """The factor matrices of a CP network (one per core, indices by the hyperedge)."""
    bond = _cp_bond(net)
    return [np.moveaxis(np.asarray(core, dtype=np.float64), term.index(bond), -1).reshape(-1, net.bonds[bond])
            for core, term in zip(net.cores, net.inputs)]


def _cp_cancellation(net: Network) -> float:
    """The sum of a CP's component norms over the norm of the tensor they add up to: near 1 for
    well-separated components, large where they cancel (ALS's swamps)."""
    factors = _cp_components(net)
    norms = np.prod([np.linalg.norm(f, axis=0) for f in factors], axis=0)
    total = float(np.linalg.norm(np.asarray(net.to_tensor())))
    return float(norms.sum()) / total if total > 0 else math.inf


def _svd_cp_start(net: Network, data: FitData, seed: Any) -> Network:
    """``net``'s CP at its rank from each mode unfolding's leading left singular vectors (random
    columns past the mode's size), as tensorly's ``parafac(init="svd")``."""
    y = np.asarray(data.backend.to_numpy(data.y), dtype=np.float64)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(None if seed is None else [seed, 3])
    bond = _cp_bond(net)
    rank = net.bonds[bond]
    cores = []
    for term in net.inputs:
        (mode,) = [c for c in term if c != bond]
        axis = net.output.index(mode)
        unfolded = np.moveaxis(y, axis, 0).reshape(y.shape[axis], -1)
        vectors = np.linalg.svd(unfolded, full_matrices=False)[0][:, :rank]
        if vectors.shape[1] < rank:
            vectors = np.hstack([vectors, rng.standard_normal((vectors.shape[0], rank - vectors.shape[1]))])
        cores.append(vectors if term.index(bond) == 1 else vectors.T)
    return Network(net.spec, cores=cores, optimize=net.optimize)


def _ranks_fixed(template: Network, min_rank: Any) -> bool:
    """Whether every bond's floor is its cap: ranks given, not selected."""
    return all(rank_floor(min_rank, b) >= cap for b, cap in template.bonds.items())


def _near_limit_words(net: Network, max_dof: float, n_obs: int) -> str:
    """A clause for a fit two indices on some bond from the degrees of freedom the observations
    let the criterion judge (else ""): a rank past them cannot be selected. A noiseless CP of
    rank 20 on 10^3 (560 degrees of freedom, the limit 500) came back at rank 16, 0.14 off, in a
    swamp, with a warning that named only the swamp."""
    if not any(degrees_of_freedom(net.spec, {**net.dims, b: r + 2}) > max_dof for b, r in net.bonds.items()):
        return ""
    return (f". It is also near the {max_dof:g} degrees of freedom {n_obs:,} observed entries let the criterion "
            "judge: ranks past them cannot be selected (give them yourself, max_rank=... with min_rank=..., and "
            "judge them on held-out entries)")


def _deviations(data: FitData) -> float:
    """The squared norm the observed entries' deviations from their mean hold (their norm's,
    for data whose spread their dtype cannot resolve): what an error is small against."""
    return data.spread if data.spread > SPREAD_RESOLVED * data.sq_norm else data.sq_norm


def _unexplained(best: Candidate, data: FitData, level: float = POOR_FIT_FROM) -> bool:
    """Whether ``best`` leaves most of the data's deviations from their mean unexplained (the
    poor-fit checks' measure: relative error against that spread above ``level``, by default
    :data:`POOR_FIT_FROM`)."""
    return best.sse > level**2 * _deviations(data)


#: a completion whose observed entries' mean is farther from zero than this many times their
#: standard deviation is also searched without its mean (:func:`_centred_start`)
OFFSET_FROM = 1.0


def _offset(data: FitData) -> bool:
    """Whether the observed entries' mean exceeds :data:`OFFSET_FROM` times their spread."""
    return abs(data.observed_mean) > OFFSET_FROM * math.sqrt(data.spread / data.n_obs)


def _centred_start(network: Any, max_rank: Any, min_rank: int | tuple[int, ...], prior_strength: float | None,
                   selection: Mapping[str, Any] | None, seed: Any, prep: Prepared, template: Network,
                   max_dof: float, floors: Mapping[str, int], reporter: Reporter) -> Network | None:
    """The rank selection of the observed entries minus their mean, plus that mean
    (:func:`~tnmars.fitting.moves.plus_constant`): a start on the data in working units,
    within ``template``'s maximal ranks (a bond the constant's index would take past its cap
    drops its least important index instead) and ``max_dof`` (the largest bonds shrunk, down
    to ``floors``). None when that fit is the zero network or no such start exists. Its steps
    are ``reporter``'s (the bar moves, the callback hears them and may stop it: then
    ``KeyboardInterrupt``, as Ctrl-C in it)."""
    y = np.asarray(prep.data.backend.to_numpy(prep.data.y), dtype=np.float64)
    mean = prep.data.observed_mean
    centred = np.where(prep.observed, y - mean, 0.0)
    relayed: list[warnings.WarningMessage] = []

    def relay(step: int, info: dict[str, Any]) -> bool:
        """The inner fit's steps as the outer fit's (its warnings, such as "the callback returned
        True", the user's: kept apart from the inner fit's own, which are dropped); once the
        user's callback has stopped the fit, the inner fit's last steps are not reported again."""
        if reporter.stopped:
            return True
        with warnings.catch_warnings(record=True) as heard:
            warnings.simplefilter("always")
            stop = reporter.record({k: info[k] for k in ("ranks", "objective") if k in info})
        relayed.extend(heard)
        return stop

    with internal_fits(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the inner fit's warnings concern a fit the user never sees)
        inner = fit(centred, network, observed=prep.observed, max_rank=max_rank, min_rank=min_rank,
                    prior_strength=prior_strength, selection=selection, seed=seed, progress=False,
                    backend="numpy", dtype="float64", callback=relay)
    for message in relayed:
        warnings.warn(message.message, message.category, stacklevel=3)
    if inner.interrupted:
        raise KeyboardInterrupt
    if 0 in inner.network.ranks or inner.network.spec != template.spec:
        return None
    start = plus_constant(Network(template.spec, cores=[np.asarray(c) for c in inner.network.cores],
                                  optimize=template.optimize), mean)
    for bond, cap in template.bonds.items():
        while start.bonds[bond] > cap:
            start = shrink(start, bond)
    # within the degrees of freedom the observations determine, as every start is: the constant's
    # indices took a Tucker completion of 27 entries to (2, 2, 2), 34 degrees of freedom, fitted
    # exactly and so judged by no check
    while degrees_of_freedom(start.spec, start.dims) > max_dof:
        above = {b: r for b, r in start.bonds.items() if r > max(floors.get(b, 1), 1)}
        if not above:
            return None
        start = shrink(start, max(above, key=above.get))
    return feasible(start)


def _random_start(template: Network, max_dof: float, floors: Mapping[str, int], data: FitData,
                  seed: int | np.random.Generator | None) -> Network:
    """Random cores at the largest ranks (as even as the graph allows) whose degrees of freedom
    the observations still determine, raised to the rank floors, scaled to the data."""
    ranks = dict(within_budget(template, max_dof).bonds)
    net = Network(template.spec, {**template.dims, **ranks}, seed=np.random.default_rng(seed),
                  optimize=template.optimize)
    net = raised_to(net, {b: max(f, 1) for b, f in floors.items()}, seed)
    return _warm_start(net, template, 1.0, data)


#: ALS sweeps of each rung of :func:`_ladder_start` (a full refit of the search)
LADDER_SWEEPS = 30


def _ladder_start(best: Candidate, template: Network, floors: Mapping[str, int], prep: Prepared, crit: Occam,
                  seed: int | np.random.Generator | None, stopped: Callable[[], bool]) -> Network | None:
    """A start for a second walk of a fit grown from rank 1, or None: rungs of ranks doubled on
    every bond (2, 4, 8, ... times the walk's end), each refitted fully from random cores, up to
    the largest mode size (and within the caps and the degrees of freedom the observations
    determine); the best rung by the criterion, where it beats ``best``. A walk from rank 1
    stops where no single index pays: with R components about as strong, one more explains 1/R
    of the data and pays only once most are in, while a rung holding them all pays at once. The
    ladder stops at the largest mode size, from where the walk may grow on: a walk from the
    largest ranks the observations determine, as rings have, took a CP of pure noise 60^3 from
    0.7 s to 39 s (rank 606 and down); and no noise test stops it sooner (fitting noise takes its
    largest directions: on a matrix, about 4 times the share of its degrees of freedom, as much
    as a component of 10 equal ones does)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(None if seed is None else [seed, 2])
    data = prep.data
    top = max(template.shape)
    base = dict(best.network.bonds)
    ranks = base
    found: Candidate | None = None
    factor = 1
    while not stopped():
        factor *= 2
        rung = {b: min(max(r, 1) * factor, max(top, r), template.bonds[b]) for b, r in base.items()}
        caps = feasible_ranks(template.spec, {**template.dims, **rung})
        rung = {b: min(r, caps[b]) for b, r in rung.items()}
        shaped = Network(template.spec, {**template.dims, **rung}, seed=rng, optimize=template.optimize)
        shaped = within_budget(shaped, crit.max_dof)
        if dict(shaped.bonds) == ranks:
            break  # (at the caps: no rung higher)
        ranks = dict(shaped.bonds)
        start = _warm_start(raised_to(shaped, {b: max(f, 1) for b, f in floors.items()}, rng), template, 1.0, data)
        net, sse = als(start, data, sweeps=LADDER_SWEEPS, should_stop=stopped)
        dof = degrees_of_freedom(net.spec, net.dims)
        cand = Candidate(net, sse, crit.objective(sse, dof), dof, f"x{factor}")
        if found is None or cand.objective < found.objective:
            found = cand
        if sse <= crit.floor * data.n_obs:
            break  # (exact: no rung higher is better)
    if found is None or found.objective >= best.objective:
        return None
    return found.network


def _closed_ring_start(net: Network, template: Network, floors: Mapping[str, int],
                       fresh: Callable[[dict[str, int]], list[Network]] | None) -> Network | None:
    """A start for a ring that the walk opened into a train, or None: ``net`` has a bond at
    rank 1 and a rank of at least 4 elsewhere. A ring of ranks ``r`` opened at one bond is a
    train whose ranks are products of two of them, up to ``r^2``: the start puts every bond at
    ``ceil(sqrt(max rank))`` (within the floors and caps), the ring's TR-SVD there (``fresh``'s
    first start: random cores where there is none), if that ring has fewer degrees of freedom."""
    ranks = dict(net.bonds)
    if fresh is None or min(ranks.values()) > 1 or max(ranks.values()) < 4:
        return None
    side = math.isqrt(max(ranks.values()) - 1) + 1
    target = {b: min(max(side, floors.get(b, 0), 1), template.bonds[b]) for b in ranks}
    if degrees_of_freedom(template.spec, {**template.dims, **target}) >= degrees_of_freedom(net.spec, net.dims):
        return None
    starts = fresh(target)
    return starts[0] if starts else None


def _extrapolates(net: Network, prep: Prepared) -> bool:
    """Whether a completion reaches, at an unobserved entry, more than
    :data:`~tnmars.fitting.diagnostics.EXTRAPOLATION_LIMIT` times the largest observed deviation
    from their mean (:func:`~tnmars.fitting.diagnostics.extrapolation_ratio`)."""
    if prep.observed is None:
        return False
    estimate = np.asarray(net.backend_impl.to_numpy(net.to_tensor()))
    y = np.asarray(prep.data.backend.to_numpy(prep.data.y))
    return extrapolation_ratio(estimate, y, prep.observed) > EXTRAPOLATION_LIMIT


def _evaluated(net: Network, data: FitData, crit: Occam, move: str) -> Candidate:
    """``net`` as it stands, with its error and objective (no refit)."""
    sse = residual(net, data)
    dof = degrees_of_freedom(net.spec, net.dims)
    return Candidate(net, sse, crit.objective(sse, dof), dof, move)


# ---------------------------------------------------------------------------------- result
def _result(best: Candidate, template: Network, prep: Prepared, crit: Occam, settings: dict,
            relaxed: RelaxationResult | None, search: RankSearch | None, proposal: str, prior: str,
            interrupted: bool, device: str | None, t0: float, held_out: Sequence[float] = (),
            polished: bool = True, growth_caps: Mapping[str, int] | None = None,
            network_given: bool = False, default_capped: frozenset[str] = frozenset()) -> FitResult:
    """The FitResult of ``best``, with the fit's checks of its own answer (``network_given``: the
    caps are a Network's bond sizes, not ``max_rank``, which the advice names; ``default_capped``:
    the bonds whose cap is the default, which a ``min_rank`` at the cap does not fix)."""
    net = best.network
    checks = _FINAL_CHECKS.get()
    seed = settings.get("seed")
    check_seed = 0 if seed is None else seed  # (the checks' outcome does not change from run to run)
    bonds = tuple(template.bonds)  # (a ring's: core k's left rank first, as Network.tr and tensorly order them)
    # errors in working units (data / scale): no overflow or underflow at any magnitude
    be = net.backend_impl
    work_cores = [np.asarray(be.to_numpy(c), dtype=np.float64) for c in net.cores]
    if prep.dtype != "float64":  # the errors of the network returned, its cores rounded to its dtype (a float32
        work_cores = [c.astype(prep.dtype).astype(np.float64) for c in work_cores]  # result: ~1e-7, not 1e-16)
    est = np.asarray(prep.data.backend.to_numpy(Network(template.spec, cores=work_cores).to_tensor()))
    obs = prep.observed
    y = np.asarray(prep.data.backend.to_numpy(prep.data.y))  # data / scale, 0 where unobserved
    heldout = None
    lowest = settings.get("min_rank", 1)
    # (else "lower the ranks" cannot be followed)
    can_lower = any(r > rank_floor(lowest, b) for b, r in net.bonds.items())
    # entries given rank directions of their own (outliers fitted as structure: no residual check sees
    # them), read on the fit itself (for a completion, before its unobserved entries are zeroed below)
    isolated = isolated_entries(est, obs) if checks and not interrupted and can_lower else (0, [])
    if obs is not None:
        held = prep.heldout  # (not the entries a masked array hides: their values are sentinels, not data)
        if held is not None and held.any():
            truth = prep.raw[held] / prep.scale
            hd = float(np.linalg.norm(truth))
            heldout = float(np.linalg.norm(est[held] - truth)) / hd if hd > 0 else None
        diagnostics = completion_diagnostics(net, obs, est, y, can_lower)
        est *= obs
    else:
        diagnostics = []
    # (what the completion checks say of the unobserved entries does not make the residual structure: the
    # heavy-tail check still reads it, as on complete data; a t(3) completion warned of extrapolation only)
    said_of_unobserved = len(diagnostics)
    est -= y  # the residual, in place: no second full-size array
    mse = float(np.vdot(est, est)) / prep.data.n_obs
    rel = math.sqrt(mse * prep.data.n_obs / prep.data.sq_norm)
    # the error against the data's deviations from their mean: a fit that found only an offset
    # (a ring completion plus 20x its norm in a constant: relative error 0.049, the structure
    # entirely missed) is a poor fit of what varies
    spread = prep.data.spread
    rel_spread = math.sqrt(mse * prep.data.n_obs / spread) if spread > SPREAD_RESOLVED * prep.data.sq_norm else rel
    # judged now, the residual freed before the checks below refit anything (peak memory)
    checks = checks and not interrupted  # (Ctrl-C or a callback asked to stop: no more refits or checks)
    kurtosis = _excess_kurtosis(est, prep.data.n_obs, mse) if checks else 0.0
    heavy_tails = (checks and rel > HEAVY_TAILS_FROM and heavy_tailed(kurtosis, prep.data.n_obs)
                   and residual_is_white(est, obs, check_seed))
    # (complete data only: a completion's fit absorbs a share of each slice's few observed entries that
    # differs by slice, so its residual's slices differ whatever the noise: 17.6x on a TT completion at 30%)
    uneven = (uneven_noise(est) if checks and obs is None and rel > HEAVY_TAILS_FROM and not heavy_tails
              else None)
    # noise whose level differs by slice is white once each slice is scaled; a missed component is not
    uneven_noise_level = uneven is not None and white_once_slices_scaled(est, uneven[0], check_seed)
    # (the data's scales, only beside near-full ranks: at low ranks the fit did not take the noise in)
    near_full = any(r >= UNEVEN_SCALES_RANKS * template.bonds[b] for b, r in net.bonds.items() if template.bonds[b] > 1)
    scales = (uneven_noise(y, obs, UNEVEN_SCALES) if checks and uneven is None and near_full
              else None)  # (y: 0 where unobserved)
    # most of the data left out, and what is left is structure: a search stopped far from the data's
    # network (a ring 22x3x18 at (6, 2, 4), 30 dB: (2, 1, 1) at error 0.76, where (5, 2, 4) scores
    # far better by the criterion), said nothing; the residual's structure can be spread over several
    # components (a ring completion at (1, 2, 3) for (2, 4, 5), error 0.50: no top singular value far
    # above noise's), which residual_has_structure also reads
    poor = (checks and search is not None and POOR_FIT_FROM < rel_spread and rel < 1.0 - 1e-9
            and residual_has_structure(est, obs, check_seed))
    # a completion's residual, zero at the missing entries, often cannot show its structure: ring
    # completions whose truth needed more degrees of freedom than the observations determine came
    # back at (1, 1, 1), 67-91% of the observed data unexplained, with a residual that passed for
    # noise; so did small complete rings beyond that limit (a noiseless 5x6x5 at (1, 1, 1), error
    # 0.83): most of the data unexplained is said whatever the residual looks like
    unclear = (checks and search is not None and not poor
               and POOR_FIT_FROM < rel_spread and rel < 1.0 - 1e-9)
    # a few entries holding nearly all the data's norm, fitted, and structure left on the others: the
    # relative error is those entries' (a sentinel 1e6 in an exact Tucker: (1, 1, 1) at 3e-5, the spike alone)
    dominated = dominant_entries(y, est, obs, check_seed) if checks and not poor and not unclear else None
    del est
    if not math.isfinite(rel):
        raise FloatingPointError(f"the fit's relative error is {rel}: the data or the fit overflowed")
    if rel >= 1.0 - 1e-9:
        warnings.warn(f"tnmars.fit: the selected network fits the data no better than the zero tensor "
                      f"(relative error {rel:.3g}); its ranks are {net.ranks}", RuntimeWarning, stacklevel=3)
    if search is not None and rel > EXACT_FIT_ERROR:
        capped, together = capped_by_observations(net, growth_caps or template.bonds, crit.max_dof, prep.data, crit,
                                                  best.objective, settings.get("seed"))
        if capped:
            diagnostics.append(capped_message(capped, prep.data.n_obs, crit.max_dof, rel, together, obs is None))
        elif obs is None and checks and rel > SPECTRA_CHECK_FROM and settings.get("max_params") is None:
            # (with missing entries the zero-filled spectra over-state the ranks; a close fit of a smooth
            # function has spectra that never end; within a budget the budget set the ranks, and the warning
            # blamed the observations for it, an outside probe)
            readings = settings.get("spectral_ranks")
            if readings is None and settings.get("format") == "cp":  # (a CP start has no spectra: read them)
                readings = cp_spectral_ranks(np.asarray(prep.data.backend.to_numpy(prep.data.y)))
            beyond = spectra_beyond_cap(readings, template, crit.max_dof)
            if beyond is not None:
                diagnostics.append(spectra_capped_message(*beyond, prep.data.n_obs, crit.max_dof, rel))
            elif SPECTRA_CHECK_FROM < rel_spread < POOR_FIT_FROM:  # (against the deviations: an offset hides
                # nothing; from POOR_FIT_FROM the checks below say that most of the data is left out, a CP
                # search stalled at rank 2 for 20, 0.72 off, as much as a spectrum without a clear rank)
                above = spectra_above_selection(readings, list(template.bonds), [net.bonds[b] for b in template.bonds])
                if above:
                    diagnostics.append(spectra_above_message(above, rel))
        at_max: list[str] = []
        limit = settings.get("max_params")
        caps = template.bonds
        if limit is not None:
            # within a budget, a cap the budget would let grow (one more index still within it) set
            # those ranks, not the budget: max_rank=2 with budget=1000 kept a TT at 68 parameters and
            # relative error 0.31 where 92 gave 0.019, and said nothing (an outside probe); default
            # caps are the budget's to judge
            caps = {b: c if b not in default_capped and net.num_params_at({b: net.bonds[b] + 1}) <= limit else -1
                    for b, c in template.bonds.items()}
        if checks and any(net.bonds[b] == c for b, c in caps.items()):
            # (a floor at a default cap raised it there: the rank was not fixed, the cap not chosen)
            floors = {b: rank_floor(settings.get("min_rank", 1), b) for b in template.bonds if b not in default_capped}
            try:
                at_max = stopped_by_max_rank(net, caps, crit.max_dof, prep.data, crit, best.objective,
                                             check_seed, floors)
            except KeyboardInterrupt:  # the fit is done: Ctrl-C skips only its check
                at_max = []
        if at_max:
            label_of = {symbol: label for label, symbol in (template.labels or {}).items()}
            message = max_rank_message(at_max, template.bonds, rel, network_given, label_of)
            if limit is not None:
                message += (f" The budget of {limit:,} parameters would allow it: the fit has {net.num_params:,} "
                            "(within a budget max_rank still caps every bond).")
            diagnostics.append(message)
    if (search is not None and best.dof > crit.max_dof and settings.get("max_params") is None
            and not _floors_past_limit(template, settings.get("min_rank", 1), crit.max_dof)):
        # the selection never grows past the limit, but a warm start above it stays there: a Tucker
        # completion of 49 entries started at (5, 5, 5) came back at (3, 3, 3), exact on the observed
        # entries, 1.13 of the truth's norm off at the others, and no check said a word (floors past the
        # limit were warned of at the call: the network is then as large as asked)
        diagnostics.append(f"the selected network has {best.dof:,} degrees of freedom, more than {crit.max_dof:g}, half "
                           f"the {prep.data.n_obs:,} observed entries: "
                           + ("the data cannot determine it and " if best.dof >= prep.data.n_obs else "")
                           + "the criterion cannot judge its ranks, so a close fit of the observed entries says little "
                           "of the others. "
                           "A warm start (proposal=) above that limit stays above it: start lower, or let the fit "
                           "choose its start")
    if search is None and prior == "bernoulli" and best.dof > crit.max_dof:
        # the relaxation's MAP masks are judged by no criterion: open masks on noise kept a Tucker
        # (2, 3, 4) at 10 dB as (7, 9, 10), 919 parameters for 1,320 entries, silently (an outside probe)
        diagnostics.append(f"the MARS relaxation kept ranks {net.ranks} with {best.dof:,} degrees of freedom, more "
                           f"than {crit.max_dof:g}, half the {prep.data.n_obs:,} observed entries: no criterion judged "
                           "them, and a network that large fits the noise with the structure. The default prior='bic' "
                           "selects the ranks by the criterion (or lower max_rank, or train the relaxation longer)")
    if best.unconverged > 0.0:
        # a swamp of CP's ALS: gains of 1e-7 of the error per sweep with 12% of it still to gain
        diagnostics.append(f"the final ALS polish stopped at its limit of {CP_POLISH_SWEEPS:,} sweeps with the error still "
                           f"falling ({best.unconverged:.2g} of the squared error in its last {POLISH_WINDOW} "
                           "sweeps): the fit sits in a slow valley of ALS (a 'swamp': nearly collinear "
                           "components, as in CP), so its error is not final"
                           + ("" if _ranks_fixed(template, settings.get("min_rank", 1)) else
                              ", and a rank one above the data's may have won for that reason")
                           + ". Fit again from this result (proposal=result.network) to go on"
                           + ("" if _ranks_fixed(template, settings.get("min_rank", 1)) else
                              _near_limit_words(net, crit.max_dof, prep.data.n_obs)))
    if search is None and prior == "bernoulli" and best.dof <= crit.max_dof:
        open_bonds = [b for b, r in template.bonds.items() if r > 1]
        if open_bonds and all(net.bonds.get(b, 0) >= template.bonds[b] for b in open_bonds):
            # nothing closed: the ranks are max_rank's, not a selection (a CP 30^3 of rank 5 at 20 dB came
            # back at rank 30 of 30, error 0.089 for noise at 0.10: fitting the noise, silently)
            diagnostics.append(f"the MARS relaxation closed no index: every bond stays at its maximal rank "
                               f"({net.ranks}), so the ranks were set by max_rank, not selected, and may fit noise. "
                               "The default prior='bic' selects the ranks by the criterion (or lower max_rank, train "
                               "the relaxation longer, or give it a smaller pi)")
    under_fitted = bool(diagnostics) or settings.get("max_params") is not None  # (a budget asks for a smaller fit)
    # (both errors against the data's deviations from their mean: an offset hides neither)
    message = (generalization_message(held_out, rel_spread, best.dof / max(prep.data.n_obs, 1),
                                      can_lower=can_lower)
               if rel_spread > EXACT_FIT_ERROR else None)
    if message:
        diagnostics.append(message)
    if held_out:  # (the summary shows it: a noiseless truth the observations cannot pin down reads as noise)
        settings["cross_validation"] = {"refits": len(held_out), "left_out_share": HOLDOUT_SHARE,
                                        "median_error": float(np.median(held_out)), "worst_error": float(max(held_out)),
                                        "fitted_error": rel_spread}
    if heavy_tails and not (len(diagnostics) > said_of_unobserved or settings.get("max_params") is not None):
        lowest_value = float(np.min(prep.raw, where=obs if obs is not None else True, initial=np.inf))
        diagnostics.append(heavy_tail_message(kurtosis, lowest_value > 0.0))
    if uneven is not None and not under_fitted and not poor and not unclear:
        if uneven_noise_level:
            diagnostics.append(uneven_noise_message(*uneven))
        elif any(r < template.bonds[b] for b, r in net.bonds.items()):  # (ranks fixed at their caps: chosen)
            diagnostics.append(slice_structure_message(*uneven))
    elif scales is not None:  # (also beside the caps: it may be why they bind)
        diagnostics.append(uneven_scales_message(*scales))
    # (a constant tensor has no spread to resolve: nothing to say of it)
    resolved = spread > SPREAD_RESOLVED * prep.data.sq_norm
    offset_ratio = abs(prep.data.observed_mean) / math.sqrt(spread / max(prep.data.n_obs, 1)) if resolved else 0.0
    if checks and offset_ratio > FAR_FROM_ZERO and CENTRING.get():  # (not within fit_both_ways: it fits both)
        diagnostics.append(far_from_zero_message(offset_ratio, rel, rel_spread))
    if poor and not under_fitted:
        diagnostics.append(poor_fit_message(rel, rel_spread, has_loop(template.inputs, template.bonds)))
    elif unclear and not under_fitted:
        diagnostics.append(unexplained_message(rel, rel_spread, prep.data.n_obs, crit.max_dof, obs is not None,
                                               has_loop(template.inputs, template.bonds)))
    if isolated[0] and not (dominated is not None and set(isolated[1]) <= set(dominated[0])):
        diagnostics.append(isolated_message(*isolated, rel))  # (the same entries: said below, with their error)
    if dominated is not None:
        diagnostics.append(dominant_message(*dominated, rel))
    for message in diagnostics:
        warnings.warn(f"tnmars.fit: {message}", RuntimeWarning, stacklevel=3)
    unit = prep.scale ** (1.0 / net.num_cores)
    data_net = Network(template.spec, cores=[c * unit for c in work_cores], optimize=template.optimize)
    ranks = tuple(net.bonds[b] for b in bonds)
    max_ranks = tuple(template.bonds[b] for b in bonds)
    probabilities = {b: (np.arange(m) < r).astype(np.float64) for b, r, m in zip(bonds, ranks, max_ranks)}
    history = _history(relaxed, search, best, polished)
    selection = [] if search is None else [
        {"move": c.move, "ranks": list(c.ranks), "objective": c.objective,
         "relative_error": math.sqrt(c.sse / max(prep.data.sq_norm, 1e-300))} for c in search.path]
    n_obs = prep.data.n_obs
    sigma2 = _in_data_units(crit.noise_variance(best.sse, best.dof), prep.scale)
    full = None
    if relaxed is not None:
        full = Network(template.spec, cores=[c * unit for c in relaxed.cores], optimize=template.optimize)
    out_net = prep.returned(data_net, device)
    return FitResult(
        network=out_net,
        bonds=bonds,
        ranks=ranks,
        max_ranks=max_ranks,
        probabilities=probabilities,
        relative_error=rel,
        heldout_error=heldout,
        log_likelihood=-_in_data_units(mse, prep.scale),
        noise_variance=float(sigma2),
        compression=data_net.compression,
        num_params=data_net.num_params,
        criterion=prior,
        objective=best.objective if prior == "bic" else float("nan"),
        proposal=proposal,
        selection=selection,
        relaxation_probabilities={} if relaxed is None else relaxed.probabilities,
        full_network=None if full is None else prep.returned(full, device),
        history=history,
        interrupted=interrupted,
        steps_run=0 if relaxed is None else relaxed.steps_run,
        evaluations=0 if search is None else search.evaluations,
        seconds=time.perf_counter() - t0,
        settings={**settings, "proposal": proposal, "n_obs": n_obs,
                  "noise_floor": _in_data_units(crit.floor, prep.scale)},
        diagnostics=diagnostics,
    )


def _in_data_units(variance: float, scale: float) -> float:
    """A variance in working units times ``scale**2``; ``inf`` where float64 cannot hold it
    (data near 1e160 and above), never an OverflowError."""
    with np.errstate(over="ignore"):
        return float(np.float64(variance) * np.float64(scale) ** 2)


def _history(relaxed: RelaxationResult | None, search: RankSearch | None, best: Candidate,
             polished: bool = True) -> dict[str, list]:
    """The fit's records by phase; the last is the result, ``"polish"`` when the polish ran and
    ``"result"`` after an interruption (which skips it)."""
    cols: dict[str, list] = {"step": [], "phase": [], "loss": [], "ranks": []}
    step = 0
    if relaxed is not None:
        for s, loss, r in zip(relaxed.history["step"], relaxed.history["loss"], relaxed.history["ranks"]):
            cols["step"].append(s)
            cols["phase"].append("relaxation")
            cols["loss"].append(float(loss))
            cols["ranks"].append(tuple(r))
        step = relaxed.steps_run
    if search is not None:
        n = search.criterion.n_obs
        for k, cand in enumerate(search.path):
            cols["step"].append(step + k)
            cols["phase"].append("selection")
            cols["loss"].append(cand.objective / n)
            cols["ranks"].append(tuple(cand.ranks))
        step += len(search.path)
    n = max(getattr(search, "criterion", None).n_obs if search is not None else 1, 1)
    cols["step"].append(step)
    cols["phase"].append("polish" if polished else "result")
    cols["loss"].append(best.objective / n)
    cols["ranks"].append(tuple(best.ranks))
    return cols


def _check_representable_in(prep: Prepared, data: Any) -> None:
    """Refuse a result dtype narrower than the data's own whose range the data exceed
    (``dtype="float32"`` for float64 data near 1e50 or 1e-50): the returned network would hold
    infinities or zeros while the error, computed in working units, looked perfect. Data
    already in float32 (or half precision) are fitted as they are, however near its limits."""
    if prep.dtype == "float64" or prep.scale == 0.0:
        return
    try:
        own = dtype_name(data.dtype)
    except (AttributeError, TypeError):  # lists of Python numbers: float64
        own = "float64"
    if own in ("float32", *HALF_DTYPES):  # no wider than the result
        return
    info = np.finfo(prep.dtype)
    low, high = float(info.tiny) * 100, float(info.max) / 100
    peak = prep.peak
    if not (low <= prep.scale and peak <= high):
        raise ValueError(f"the data's scale does not fit {prep.dtype}: root mean square {prep.scale:.3g}, largest "
                         f"magnitude {peak:.3g}, outside the safe range [{low:.3g}, {high:.3g}]; the network would "
                         f"hold infinities or zeros. Fit in float64 (dtype='float64') or rescale the data.")


#: the share of the deviations' spread (standard deviation) to which the data's own storage may
#: round each entry before :func:`fit` says that it limits what any fit can resolve
ROUNDED_DEVIATIONS = 0.01


def _check_deviations_resolved(prep: Prepared, data: Any) -> None:
    """Warn when the data's own dtype rounds their deviations from the mean to more than
    :data:`ROUNDED_DEVIATIONS` of their spread: a mean about 1e14 times the spread in float64,
    2e5 in float32 (nanosecond timestamps, readings on a large baseline). The structure is then lost
    before the fit starts: a Tucker (3, 4, 2) in float32 plus 1e7 times its spread came back
    68% off its deviations, and data past 2e14 spreads in float64 were read as a constant, fitted
    at rank 1 without a word (outside probe, 2026-12-02). Integer data are exact: not said."""
    try:
        own = dtype_name(data.dtype)
    except (AttributeError, TypeError):  # lists of Python numbers: float64
        own = "float64"
    roundoff = {**_ROUNDOFF, "float64": 2.0**-53}.get(own)
    fitted = prep.data
    if roundoff is None or prep.scale == 0.0 or fitted.n_obs < 2:
        return
    raw = prep.raw if prep.observed is None else prep.raw[prep.observed]
    std = math.sqrt(fitted.spread / fitted.n_obs) * prep.scale
    mean = abs(fitted.observed_mean) * prep.scale
    step = roundoff * mean  # (half the spacing of the stored numbers near the mean)
    if step <= ROUNDED_DEVIATIONS * std or float(np.ptp(raw)) == 0.0:  # (a constant: nothing to resolve)
        return
    ratio = f"{mean / std:.2g} times the spread of their deviations" if std > 0 else "far above their deviations"
    wider = "" if own == "float64" else f", or keep them in float64 (these are {own})"
    warnings.warn(f"tnmars.fit: the data sit so far from zero that their {own} storage rounds their deviations: their "
                  f"mean is {ratio}, and each entry is stored to about {step / max(std, step):.2g} of that spread, so "
                  "no fit resolves their structure more finely. Subtract a baseline before the data are converted to "
                  f"floating point (timestamps from the start of the record, readings from a reference){wider}.",
                  RuntimeWarning, stacklevel=4)


def _zero_result(template: Network, prep: Prepared, settings: dict, t0: float) -> FitResult:
    held, heldout = prep.heldout, None
    if held is not None and held.any():  # the zero network's error on what was held out
        heldout = 1.0 if np.any(prep.raw[held] != 0) else None
    what = "the data are all zero" if prep.observed is None else "the observed entries are all zero"
    if heldout:
        what += " (held-out entries are not: the completion cannot predict them, heldout_error=1)"
    warnings.warn(f"tnmars.fit: {what}: every bond gets rank 0 (the zero network)", RuntimeWarning, stacklevel=3)
    bonds = tuple(template.bonds)
    zero = template.numpy().prune({b: [] for b in bonds})
    return FitResult(network=prep.returned(zero, None), bonds=bonds, ranks=(0,) * len(bonds),
                     max_ranks=tuple(template.ranks), probabilities={b: np.zeros(m) for b, m in template.bonds.items()},
                     relative_error=0.0, heldout_error=heldout, log_likelihood=0.0, noise_variance=0.0,
                     compression=zero.compression, num_params=0, criterion=settings["prior"],
                     proposal="none", seconds=time.perf_counter() - t0, settings=settings)


# ---------------------------------------------------------------------------------- arguments
def _warm_start(start: Network, template: Network, scale: float, data: FitData) -> Network:
    """``start`` in working units (the data divided by ``scale``) on NumPy float64, after
    checking that it is a network the selection may return: ``template``'s graph, bonds
    within its maximal ranks. A start whose size is far from the data's (more than 1,000
    times off) is scaled to it: least squares from cores 1e200 times too large overflow."""
    if start.spec != template.spec:
        raise ValueError(f"a Network proposal must have the fitted network's spec {template.spec!r}; "
                         f"got {start.spec!r}")
    over = {b: r for b, r in start.bonds.items() if r > template.bonds[b]}
    if over:
        raise ValueError(f"the proposal's bonds {over} exceed the maximal ranks "
                         f"{ {b: template.bonds[b] for b in over} }")
    if 0 in start.ranks:
        raise ValueError("the proposal has a bond of rank 0 (a zero network); it cannot start a search")
    if tuple(start.shape) != tuple(template.shape):
        raise ValueError(f"a Network proposal must have the data's shape {tuple(template.shape)}; got "
                         f"{tuple(start.shape)}")
    be = start.backend_impl
    unit = scale ** (1.0 / start.num_cores)
    cores = [np.asarray(be.to_numpy(c), dtype=np.float64) / unit for c in start.cores]
    if not all(np.isfinite(c).all() for c in cores):
        raise ValueError("the proposal's cores are not finite")
    if not all(np.any(c) for c in cores):  # ALS from a zero core divides by zero, then stays at zero
        raise ValueError("the proposal has a core of zeros (a zero network); it cannot start a search")
    net = Network(template.spec, cores=cores, optimize=template.optimize)
    full = np.array(net.to_tensor(), dtype=np.float64)  # (one data-sized array, changed in place below)
    peak = max(abs(float(full.max())), abs(float(full.min())))
    if peak > 0 and np.isfinite(peak):
        full /= peak  # (no overflow in the norm)
        if data.weights is not None:
            full *= data.backend.to_numpy(data.weights)
        size = peak * float(np.linalg.norm(full))
        ratio = math.sqrt(data.sq_norm) / size if size > 0 else 1.0
        if not 1e-3 <= ratio <= 1e3:
            factor = ratio ** (1.0 / len(cores))
            net = net.with_cores([c * factor for c in cores])
    return net


def _choice(value: Any, options: Sequence[str], name: str) -> str:
    if not isinstance(value, str) or value.lower() not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value.lower()


def _non_negative_float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number >= 0; got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number >= 0; got {value!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0; got {value}")
    return value


def _selection(value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"selection must be a dict of RankSearch settings; got {type(value).__name__}")
    unknown = sorted(set(value) - set(SELECTION_SETTINGS))
    if unknown:
        raise TypeError(f"selection: unknown setting {unknown[0]!r}; choose from {', '.join(SELECTION_SETTINGS)}")
    out = dict(value)
    for name in ("sweeps", "full_sweeps", "final_sweeps"):  # refits of at least one sweep
        if name in out:
            out[name] = positive_int(out[name], f"selection[{name!r}]")
    for name in ("second_look", "patience"):  # counts that may be 0
        if name in out:
            v = out[name]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"selection[{name!r}] must be a whole number >= 0; got {v!r}")
            if v < 0:
                raise ValueError(f"selection[{name!r}] must be a whole number >= 0; got {v!r}")
            out[name] = int(v)
    for name in ("exchanges", "random_restart", "widen_caps", "loop_restarts"):
        if name in out and not isinstance(out[name], (bool, np.bool_)):
            raise TypeError(f"selection[{name!r}] must be True or False; got {out[name]!r}")
    return out


def _warn_unused(relaxation: Any, prior: str, proposal: str, prior_strength: Any, selection: Any,
                 budget: Any = None) -> None:
    """Options that this combination of ``prior`` and ``proposal`` never reads: a warning, not a
    silent no-op (a user tuning ``relaxation={"pi": ...}`` with the default prior saw the same
    result whatever the values)."""
    unused = []
    if relaxation is not None and prior != "bernoulli" and proposal != "mars":
        unused.append("relaxation= (the MARS relaxation runs only with prior='bernoulli' or proposal='mars')")
    if prior == "bernoulli":
        if proposal not in ("auto", "mars", "start"):  # (a Network start is refused with prior="bernoulli")
            unused.append(f"proposal={proposal!r} (prior='bernoulli' starts from its relaxation)")
        if prior_strength is not None:
            unused.append("prior_strength= (the Occam prior of the rank search; prior='bernoulli' runs no search)")
        if selection is not None:
            unused.append("selection= (settings of the rank search; prior='bernoulli' runs no search)")
        if budget is not None:
            warnings.warn("tnmars.fit: with prior='bernoulli' budget= only caps the relaxation's ranks (indices are "
                          "removed until the network fits it); no search for the network that fits best within the "
                          "budget runs, which the default prior does", UserWarning, stacklevel=3)
    if unused:
        warnings.warn("tnmars.fit: these options have no effect here and are ignored: " + "; ".join(unused),
                      UserWarning, stacklevel=3)


def _relaxation(value: Relaxation | Mapping[str, Any] | None) -> Relaxation:
    if value is None:
        return Relaxation()
    if isinstance(value, Relaxation):
        return value
    if isinstance(value, Mapping):
        try:
            return Relaxation(**value)
        except TypeError as err:
            raise TypeError(f"relaxation: {err}") from None
    raise TypeError(f"relaxation must be a tnmars.Relaxation or a dict of its settings; got {type(value).__name__}")


def _fit_dtype(dtype: Any, data: Any) -> str | None:
    """The result's dtype as a name: ``dtype`` when given (float32 or float64, in any form
    :func:`~tnmars._checks.dtype_name` reads: ``"float32"``, ``np.float32``,
    ``np.dtype("float32")``, ``float``, ``torch.float32``); by default float32 for half
    precision data, whose values float32 holds exactly (the least-squares steps need more
    range than float16's 65504), and ``None`` for any other data: :func:`prepare` keeps
    float32 and float64 and gives everything else float64."""
    if dtype is not None:
        name = dtype_name(dtype, "dtype")
        if name not in FIT_DTYPES:
            why = ("half precision overflows the least-squares steps; half precision data are fitted in "
                   "float32 by default" if name in HALF_DTYPES else "the cores need a real floating type")
            raise ValueError(f"fits run in float32 or float64; got dtype {name!r} ({why})")
        return name
    try:
        data_dtype = dtype_name(data.dtype)
    except (AttributeError, TypeError):  # lists, or a dtype NumPy cannot name: prepare decides
        return None
    return "float32" if data_dtype in HALF_DTYPES else None


#: unit roundoff (half the machine epsilon) of the storage types narrower than float64
_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24}
#: the lowest floor (data at unit mean square) whatever the data: float64 least squares do not
#: resolve squared errors much below this share of the data's mean square
PRECISION_FLOOR = 1e-20


def storage_floor(data: Any) -> float:
    """The squared unit roundoff of the type ``data`` is stored in (0 for float64 and integers),
    a share of the data's mean square: 2.4e-7 for float16, 1.5e-5 for bfloat16, 3.6e-15 for
    float32. Rounding to half precision leaves an error of about 1e-4 of the values, structured
    by the values themselves, which larger networks fit ever better: under the 1e-8 floor a
    rank-1 tensor stored in float16 selected ranks (4, 4, 4). Nothing below the storage's
    precision is signal.

    >>> storage_floor(np.zeros(3, dtype=np.float16)) > storage_floor(np.zeros(3))
    True
    """
    try:
        name = dtype_name(data.dtype)
    except (AttributeError, TypeError):
        return 0.0
    return _ROUNDOFF.get(name, 0.0) ** 2


def criterion_floor(data: Any, fit_data: FitData) -> float:
    """The criterion's MSE floor (:class:`~tnmars.fitting.criterion.Occam`; data at unit mean
    square): :data:`~tnmars.fitting.criterion.MSE_FLOOR` times the share of the mean square
    that is spread about the mean (1 for zero-mean data), and at least the storage's rounding
    (:func:`storage_floor`) and :data:`PRECISION_FLOOR`. A floor on the mean square alone
    counted the whole structure of a non-centred tensor as exact: with a mean 1e4 times the
    spread, the spread is 1e-4 of the RMS, and a Tucker fit kept only the mean (ranks
    (1, 1, 1), "relative error 1e-4") where EVBMF reads the ranks right.

    >>> y = np.random.default_rng(0).standard_normal(1000)
    >>> centred = FitData.from_arrays(y / np.sqrt(np.mean(y**2)))
    >>> offset = FitData.from_arrays((y + 1e4) / np.sqrt(np.mean((y + 1e4)**2)))
    >>> f"{criterion_floor(y, centred):.2g}", f"{criterion_floor(y, offset):.2g}"
    ('1e-08', '9.5e-17')
    """
    n = max(fit_data.n_obs, 1)
    mean = float(fit_data.backend.xp.sum(fit_data.y)) / n  # (unobserved entries are 0 in y)
    mean_square = fit_data.sq_norm / n
    spread = 1.0 if mean_square <= 0 else min(1.0, max(0.0, 1.0 - mean * mean / mean_square))
    return max(MSE_FLOOR * spread, storage_floor(data), PRECISION_FLOOR)


def _seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(2**31 - 1))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, a numpy Generator or None; got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative; got {seed}")
    return int(seed)


def _max_rank_value(value: Any, name: str = "max_rank") -> int:
    return positive_int(value, name)


def _min_rank_value(value: Any, name: str = "min_rank") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
    return int(value)


def _checked_min_rank(min_rank: Any) -> int | tuple[int, ...] | dict[Any, int]:
    """``min_rank`` checked before the network is built: one non-negative int, one per bond
    (a tuple), or a mapping bond -> int (its keys are checked against the bonds later, by
    :func:`_bond_min_ranks`)."""
    if isinstance(min_rank, Mapping):
        return {key: _min_rank_value(value, f"min_rank[{key!r}]") for key, value in min_rank.items()}
    if (isinstance(min_rank, (bool, int, np.integer, str, bytes)) or not hasattr(min_rank, "__iter__")
            or np.ndim(min_rank) == 0):
        return _min_rank_value(min_rank.item() if isinstance(min_rank, np.ndarray) else min_rank)
    return tuple(_min_rank_value(value, "every entry of min_rank") for value in min_rank)


def _joint_floors(template: Network, asked_of: Callable[[str], int]) -> dict[str, int]:
    """Every bond's floor, jointly: what a bond can use depends on its neighbours' ranks, here at
    their floors, raised where a floor needs it (one floor of 4 beside floors of 1 on a Tucker
    core: the neighbours to 2); a floor of 0, a bond the relaxation may close, counts as 1
    there: at 0 no neighbour could use any index."""
    wanted = raised_floors(template.spec, template.dims,
                           {b: max(min(asked_of(b), r), 1) for b, r in template.bonds.items()}, template.bonds)
    return {b: 0 if asked_of(b) == 0 and wanted[b] == 1 else f
            for b, f in feasible_ranks(template.spec, {**template.dims, **wanted}).items()}


def _floors_past_limit(template: Network, min_rank: int | Mapping[str, int], max_dof: float) -> bool:
    """Whether ``min_rank`` itself asks for more than ``max_dof`` degrees of freedom, which
    :func:`_rank_floors` warned of at the call: a selection above the limit is then the caller's,
    not a warm start that stayed there. Floors of 1 ask for nothing."""
    def asked_of(bond: str) -> int:
        return rank_floor(min_rank, bond)

    if all(asked_of(b) <= 1 for b in template.bonds):
        return False
    return degrees_of_freedom(template.spec, {**template.dims, **_joint_floors(template, asked_of)}) > max_dof


def _largest_floor(min_rank: int | tuple[int, ...] | Mapping[Any, int]) -> int:
    """The largest rank ``min_rank`` asks of any bond (a default ``max_rank`` rises to it)."""
    if isinstance(min_rank, int):
        return min_rank
    return max(min_rank.values() if isinstance(min_rank, Mapping) else min_rank, default=1)


def _bond_min_ranks(min_rank: int | tuple[int, ...] | Mapping[Any, int], template: Network,
                    network: str | Network) -> int | dict[str, int]:
    """``min_rank`` by the template's bonds: one int when it asks the same of every bond (as
    before per-bond floors existed: the same messages, the same settings), else bond -> floor,
    1 for a bond a mapping does not name. A tuple gives one floor per bond in the order of
    :attr:`Network.bonds <tnmars.Network.bonds>` (as ``max_rank``); a mapping names bonds of a
    spec by their letters, of a format as its result names them (``FitResult.bonds``: an outside
    probe was refused ``{"A": 4}`` for the Tucker whose result named its bonds A, B, C), or of a
    :class:`~tnmars.Network` by their symbols or labels."""
    bonds = list(template.bonds)
    if isinstance(min_rank, int):
        return min_rank
    if isinstance(min_rank, Mapping):
        if isinstance(network, Network):
            try:
                named = dict(network._bond_items(min_rank))
            except ValueError as err:
                raise ValueError(f"min_rank: {err}") from None
        else:  # (a format's bonds by the names its result gives them: FitResult.bonds)
            unknown = [key for key in min_rank if key not in bonds]
            if unknown:
                raise ValueError(f"min_rank names {unknown[0]!r}, which is not a bond of {network!r} "
                                 f"(bonds: {', '.join(bonds)})")
            named = dict(min_rank)
        floors = {b: named.get(b, 1) for b in bonds}
    else:
        if len(min_rank) != len(bonds):
            raise ValueError(f"min_rank needs one value per bond ({len(bonds)}: {', '.join(bonds)}, in the order "
                             f"max_rank and the result list them); got {len(min_rank)}")
        floors = dict(zip(bonds, min_rank))
    values = set(floors.values())
    return values.pop() if len(values) == 1 else floors


def _min_rank_argument(min_rank: int | Mapping[str, int], template: Network) -> int | tuple[int, ...]:
    """``min_rank`` as an argument of :func:`fit` on the same network (the fits of
    :mod:`~tnmars.fitting.centring`): one int, or one per bond of ``template`` in its order."""
    if isinstance(min_rank, int):
        return min_rank
    return tuple(min_rank.get(b, 1) for b in template.bonds)


def _said_floors(min_rank: int | Mapping[str, int], bonds: Sequence[str] | None = None,
                 label_of: Mapping[str, Any] | None = None) -> str:
    """``min_rank`` as a message says it: ``min_rank=3``, or the floors of ``bonds`` (default:
    every bond above 1) as ``min_rank 3 on bond 'A'``, each bond by its label where
    ``label_of`` (symbol -> label) has one."""
    label_of = label_of or {}
    if isinstance(min_rank, int):
        return f"min_rank={min_rank}"
    named = [b for b in (bonds if bonds is not None else min_rank) if min_rank.get(b, 1) != 1 or bonds is not None]
    return "min_rank " + ", ".join(f"{min_rank.get(b, 1)} on bond {label_of.get(b, b)!r}" for b in named)


def _template(network: str | Network, shape: tuple[int, ...], max_rank: Any, max_dof: float | None = None,
              at_least: int = 1) -> tuple[Network, str | None, dict[str, int], FormatLayout | None]:
    """The network at its maximal (feasible) ranks, its built-in format if it has one, the
    maximal ranks as asked (before the clipping to what each bond can use), and the layout of
    a user's spec that is a format (:func:`~tnmars.fitting.layout.format_layout`; the template
    is then in the format's layout). Without
    ``max_rank``: every bond at ``max(shape)``, or with ``max_dof`` at the largest rank whose
    network has at most that many degrees of freedom when that is more
    (:func:`~tnmars.fitting.graph.judged_rank`), and at least ``at_least`` (a ``min_rank``
    above the default is the caller's: the default rises to it)."""
    if isinstance(network, Network):
        if network.shape != shape:
            raise ValueError(f"data has shape {shape} but the network's open modes have shape {network.shape}")
        if max_rank is not None:
            raise ValueError("max_rank applies to format names and specs; a Network's bond sizes are its maximal "
                             "ranks")
        spec, dims, fmt = network.spec, network.dims, None
        _check_connected(parse_spec(spec))
    elif isinstance(network, str) and network.strip().lower() not in FORMATS and _looks_like_spec(network):
        spec, dims = _spec_template(network, shape, max_rank, max_dof, at_least)
        fmt = None
    elif isinstance(network, str):
        fmt = network.strip().lower()
        if fmt not in FORMATS:
            raise ValueError(f"unknown network format {network!r}; choose one of {', '.join(FORMATS)}, an einsum "
                             "spec of several cores such as 'ia,ab,bj' (a single core has no bond, no rank to "
                             "select) or pass a Network")
        if len(shape) < 2:
            raise ValueError(f"a {fmt} network needs data with at least 2 modes; got shape {shape}")
        spec = {"cp": cp_spec, "tucker": tucker_spec, "tt": tt_spec, "tr": tr_spec}[fmt](len(shape))
        parsed = parse_spec(spec)
        bonds = parsed.bonds
        dims = dict(zip(parsed.output, shape))
        if max_rank is None:
            max_rank = _default_rank(spec, dims, shape, max_dof, at_least)
        elif isinstance(max_rank, Mapping) and set(max_rank) <= set(bonds):
            # the bonds by the names FitResult.bonds gives them, as min_rank takes them; the others
            # keep the default cap
            default = _default_rank(spec, dims, shape, max_dof, at_least)
            max_rank = {b: max_rank.get(b, default) for b in bonds}
        dims.update(_bond_ranks(max_rank, bonds, shape, f"the {fmt} format of {len(shape)} modes", mapping=True))
    else:
        hint = ""
        if isinstance(network, (list, tuple)) and network and all(isinstance(t, (list, tuple)) for t in network):
            # (label lists leave the output's order open: the data's modes need it named)
            hint = (": label lists, one per core, make a Network, which names the output's order "
                    "(tnmars.Network(labels, dims={...}, output=[...]))")
        raise TypeError(f"network must be a format name, an einsum spec or a Network; got "
                        f"{type(network).__name__}{hint}")
    asked = {b: int(dims[b]) for b in parse_spec(spec).bonds}
    caps = feasible_ranks(spec, dims)
    dims = {**dims, **caps}
    if isinstance(network, Network) and dict(network.bonds) != caps:
        template = network.numpy().prune({b: list(range(caps[b])) for b in caps})
    elif isinstance(network, Network):
        # only the graph and sizes are read: a NumPy network is not copied (tnmars.search
        # passes a fully connected one whose cores take no memory)
        template = network if network.backend == "numpy" else network.numpy()
    else:
        template = Network(spec, dims, seed=0)
    # a format under the user's letters, term and axis order is that format: the fit runs in the
    # format's layout (its proposals build cores there), and the result goes back (fit's end)
    layout = format_layout(spec) if fmt is None else None
    if layout is not None:
        fmt = layout.fmt
        if not layout.renamed_only:
            template = layout.to_format(template) if isinstance(network, Network) else Network(layout.spec, dims, seed=0)
    return template, fmt, asked, layout


def _looks_like_spec(text: str) -> bool:
    """An einsum spec, not a format name: it has several terms or an output."""
    return "," in text or "->" in text


def _check_implicit_order(spec: str, output: Sequence[str]) -> None:
    """Warn when a spec without ``->`` takes the data's modes in einsum's implicit order (the
    open indices sorted, capitals first) and that is not the order they are written in: an
    outside probe's ``xA,AbB,Bc`` put data mode 0 on the middle core (ranks (3, 4) at error
    0.079 for an exact TT (2, 3)), and a term left out (``aA,AbB``) made bond ``B`` an open
    mode, each fitted without a word but a wrong guess of the cause."""
    if "->" in spec:
        return
    written = []
    for index in spec.replace(",", ""):
        if index in output and index not in written:
            written.append(index)
    if written != list(output):
        warn(f"tnmars.fit: the spec {spec!r} has no '->', so its open modes take the data's modes in einsum's "
             f"order, the indices sorted ({''.join(output)!r}: data mode 0 is index {output[0]!r}), not in the "
             f"order written ({''.join(written)!r}). Write the output to say which index is which data mode, e.g. "
             f"{spec + '->' + ''.join(written)!r}", UserWarning)


def _check_connected(parsed: Any) -> None:
    """Warn when a spec's cores fall into parts no bond joins: the fit is then the outer product
    of the parts, rank 1 between them. A letter meant as a bond but written in one term only
    is a summed leg of size 1 (``"iA,AjB,Ck"`` for ``"iA,AjB,Bk"``): its fit came back at error
    0.68 with a warning about structure left out, and no word of the spec."""
    parts = connected_parts(parsed.inputs, parsed.bonds)
    if len(parts) < 2:
        return
    said = "; ".join(",".join(parsed.inputs[k] for k in part) for part in parts)
    lone = (f" ({', '.join(map(repr, parsed.summed))} appear{'s' if len(parsed.summed) == 1 else ''} in one term "
            "only: a leg of size 1 summed over, not a bond, which needs its letter in two terms)") if parsed.summed else ""
    warn(f"tnmars.fit: the cores of {parsed.spec!r} fall into {len(parts)} parts that no bond joins ({said}): the fit "
         f"is their outer product, rank 1 between them{lone}. Join the parts by a bond letter shared by two terms",
         UserWarning)


def _spec_template(spec: str, shape: tuple[int, ...], max_rank: Any, max_dof: float | None = None,
                   at_least: int = 1) -> tuple[str, dict[str, int]]:
    """Sizes of an einsum spec given as ``network``: open modes from the data's shape, every
    bond at ``max_rank`` (an int, one per bond in :attr:`Network.bonds` order, or a mapping
    bond -> rank; default :func:`_default_rank`), clipped later to what each bond's cut allows."""
    parsed = parse_spec(spec)
    if len(parsed.output) != len(shape):
        raise ValueError(f"spec {parsed.spec!r} has {len(parsed.output)} open modes ({''.join(parsed.output)!r}) "
                         f"but the data has {len(shape)} (shape {shape})")
    _check_implicit_order(spec, parsed.output)
    _check_connected(parsed)
    bonds = parsed.bonds
    if not bonds:
        raise ValueError(f"spec {parsed.spec!r} has no bond (an index shared by two cores): there is no rank to select")
    dims = dict(zip(parsed.output, shape))
    dims.update({index: 1 for index in parsed.summed})  # size-1 dangling legs, as Network builds them
    if max_rank is None:
        max_rank = _default_rank(parsed.spec, dims, shape, max_dof, at_least)
    elif isinstance(max_rank, Mapping) and set(max_rank) <= set(bonds) and set(bonds) - set(max_rank):
        # a mapping that names some bonds caps those; the others keep the default cap, as a
        # min_rank mapping leaves the bonds it does not name at 1
        default = _default_rank(parsed.spec, dims, shape, max_dof, at_least)
        max_rank = {b: max_rank.get(b, default) for b in bonds}
    dims.update(_bond_ranks(max_rank, bonds, shape, repr(parsed.spec), mapping=True))
    return parsed.spec, dims


def _default_rank(spec: str, open_dims: Mapping[str, int], shape: tuple[int, ...], max_dof: float | None,
                  at_least: int = 1) -> int:
    """The default ``max_rank``: ``max(shape)``, raised for the Occam search (``max_dof``
    given) to the largest rank at which the whole network still has at most ``max_dof``
    degrees of freedom (the most the criterion judges, :func:`~tnmars.fitting.graph.judged_rank`):
    ``max(shape)`` alone capped a TT of a 2^10 tensor at rank 2 (relative error 0.59 where rank 4
    fitted to the noise). A bond the cap still stops warns (:func:`stopped_by_max_rank`)."""
    least = max(shape)
    return max(least if max_dof is None else judged_rank(spec, open_dims, max_dof, least), at_least)


def _bond_ranks(max_rank: Any, bonds: Sequence[str], shape: tuple[int, ...], what: str,
                mapping: bool) -> dict[str, int]:
    """Bond -> maximal rank from ``max_rank``: None (``max(shape)``), an int, one per bond in
    ``bonds``' order, or (``mapping``: a spec) a mapping bond -> rank naming every bond."""
    if max_rank is None:
        return {b: max(shape) for b in bonds}
    if isinstance(max_rank, (int, np.integer)) and not isinstance(max_rank, bool):
        return {b: _max_rank_value(max_rank) for b in bonds}
    if mapping and isinstance(max_rank, Mapping):
        unknown = sorted(set(max_rank) - set(bonds))
        if unknown:
            raise ValueError(f"max_rank names {unknown[0]!r}, which is not a bond of {what} (bonds: {', '.join(bonds)})")
        missing = [b for b in bonds if b not in max_rank]
        if missing:
            raise ValueError(f"max_rank gives no rank for bond(s) {', '.join(map(repr, missing))} of {what}")
        return {b: _max_rank_value(max_rank[b], f"max_rank[{b!r}]") for b in bonds}
    try:
        values = [_max_rank_value(v) for v in max_rank]
    except TypeError:
        kinds = "a positive int, one per bond" + (" or a mapping bond -> rank" if mapping else "")
        raise TypeError(f"max_rank must be {kinds}; got {max_rank!r}") from None
    if len(values) != len(bonds):
        raise ValueError(f"max_rank needs one value per bond of {what} ({len(bonds)}: {', '.join(bonds)}); "
                         f"got {len(values)}")
    return dict(zip(bonds, values))


def _threads(prep: Prepared, template: Network, device: str | None):
    """The torch relaxation runs with the CPU threads its contraction pays for (one for small
    problems: thread start-up dominated them, a 4x5x6 fit took 185 s with the default
    threads on a 2-core machine); other backends are left alone."""
    if prep.backend.name != "torch":
        return contextlib.nullcontext()
    from ..backends.torch_backend import cpu_threads_for

    return cpu_threads_for(template.path_info().flops, device or "cpu")
