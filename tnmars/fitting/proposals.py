"""Where the selection starts: a network at proposed ranks, with cores that already fit.

- ``"spectral"`` (Tucker, TT, TR): ranks read off the unfolding spectra by EVBMF and by MDL
  (:mod:`tnmars.fitting.spectral`), cores from HOSVD / TT-SVD / TR-SVD at those ranks; the
  fit starts from the one its criterion prefers (:data:`SPECTRAL_SELECTORS`);
- ``"greedy"`` (any network): every bond at rank 1 (at ``min_rank``); the search then adds
  what the data ask for, one index at a time (greedy rank increments);
- ``"mars"`` (any network): the MARS relaxation (:mod:`tnmars.fitting.relaxation`) from a
  least-squares fit at the maximal ranks, masks open; its MAP masks (at least one index
  per bond) give the ranks.

With missing entries, the spectral proposals read the zero-filled data divided by the
observed fraction (an unbiased estimate of the full tensor); its spectra over-state the
ranks, so the start is a generous one that the search prunes.

Every proposal is then brought up to the caller's ``min_rank`` (:func:`raised_to`): the
search only refuses to remove indices below it, so a start below it would stay below.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..network import Network
from .criterion import MAX_DOF_SHARE
from .graph import degrees_of_freedom, has_loop
from .moves import grow
from .solvers import FitData, als
from .spectral import left_singular_vectors, ring_small_cuts_decide, tr_proposals, tt_proposal, tucker_proposals

__all__ = ["PROPOSALS", "SPECTRAL_SELECTORS", "spectral_start", "spectral_starts", "ring_layout", "ring_spectral_starts", "SpectralStart", "fresh_start", "loop_restarts", "rank_one_start", "raised_to", "filled",
           "ring_bonds", "truncated", "em_start", "em_starts", "em_pays", "EM_BELOW", "EM_ITERATIONS"]

PROPOSALS = ("auto", "spectral", "greedy", "mars")



def filled(data: FitData) -> np.ndarray:
    """The full-tensor estimate the spectral proposals read: the data, or with missing
    entries the observed mean plus the zero-filled deviations from it over the observed
    fraction (for zero-mean data the zero-filled data over that fraction).

    Why the mean: zero filling turns a constant offset into a mask pattern of its size at
    every unobserved entry, full rank, which buried the structure: a Tucker (3, 4, 2) plus
    100, half observed, read (1, 1, 1) off the spectra, and the fit kept the mean alone
    (error to the structure 1.0; 0.016 at the ranks the criterion prefers). The constant is
    rank 1 in every format, so filled with the mean it is one component more, not noise."""
    y = data.backend.to_numpy(data.y)
    if data.weights is None:
        return y
    observed = data.backend.to_numpy(data.weights).astype(bool)
    mean = float(y.sum()) / max(data.n_obs, 1)  # (unobserved entries are 0 in y)
    if mean == 0.0:
        return y / data.observed_fraction
    return np.where(observed, mean + (y - mean) / data.observed_fraction, mean)


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


def spectral_start(fmt: str, template: Network, data: FitData, selector: str = "evbmf",
                   floors: Mapping[str, int] | None = None) -> Network:
    """A network of format ``fmt`` at the ranks the selector reads off the spectra, with
    the classical SVD cores at those ranks (:func:`spectral_starts` for one selector)."""
    return spectral_starts(fmt, template, data, floors, selectors=(selector,))[0][0].network


#: the classical rank selectors whose proposals :func:`tnmars.fit` starts from, each judged by its
#: criterion: EVBMF is the stronger on most spectra; MDL holds where the ranks come near the
#: unfoldings' sizes, where EVBMF takes the top singular values for noise (a Tucker 8x8x8 at
#: (6, 6, 6), noiseless or at 30 dB: EVBMF (6, 1, 1), MDL (6, 6, 6); the search from EVBMF's
#: feasible (1, 1, 1) ended there at 93% error: no single index paid)
SPECTRAL_SELECTORS = ("evbmf", "mdl")


class SpectralStart(NamedTuple):
    """A start read off the spectra: the selector's name and the network (classical SVD cores).
    ``second_reading``: a ring's small cuts read as the selector reads them, where they decide
    the proposal (:func:`spectral_starts`; :func:`tnmars.fit` runs a second search from the
    best of these)."""

    selector: str
    network: Network
    second_reading: bool = False


def _proposals(fmt: str, template: Network, y: np.ndarray, selectors: Sequence[str]) -> list[dict[str, int]]:
    """Each selector's ranks (by bond) for format ``fmt``, within ``template``'s ranks."""
    caps = list(template.ranks)
    if fmt == "tucker":
        return [_capped(r, template) for r in tucker_proposals(y, selectors, caps)]
    if fmt == "tt":
        return [_capped(tt_proposal(y, selector, caps)[0], template) for selector in selectors]
    if fmt == "tr":
        order = ring_bonds(template)
        return [{b: max(1, min(int(r), template.dims[b])) for b, r in zip(order, picked)}
                for picked in tr_proposals(y, selectors, [template.dims[b] for b in order])]
    raise ValueError(f"no spectral proposal for format {fmt!r}")


def spectral_starts(fmt: str, template: Network, data: FitData, floors: Mapping[str, int] | None = None,
                    selectors: Sequence[str] = SPECTRAL_SELECTORS
                    ) -> tuple[list[SpectralStart], dict[str, dict[str, int]]]:
    """A start for each selector with distinct ranks, and every selector's reading (by bond,
    within ``template``'s ranks but not the observations' cap): a network of format ``fmt`` at the ranks
    the selector reads off the spectra (each unfolding's spectrum computed once for all
    selectors), with the classical SVD cores at those ranks (never above ``template``'s ranks),
    within the degrees of freedom the criterion trusts (``MAX_DOF_SHARE`` of the
    observations). A bond below its entry of ``floors`` (``min_rank``, feasible) is raised to
    it before the SVD truncation, whose cores there are exact where the data allow (a start
    grown by small random slices left ALS near a saddle: Tucker (4,5,6) at its full ranks ended
    at 11-27%).

    With missing entries the spectra over-state the ranks (the zero filling adds
    heteroscedastic noise): the proposal is then an upper start that the search prunes.
    With few observations the search also refits these ranks from the EM start
    (:func:`em_starts`)."""
    y = filled(data)
    budgeted = within_budget(template, MAX_DOF_SHARE * data.n_obs)
    # each selector's reading within the maximal ranks, every spectrum computed once; the starts
    # take it within the observations' cap (what it read beyond is for the fit's diagnostics: a
    # selection made under the cap may leave most of the data unexplained)
    readings = dict(zip(selectors, _proposals(fmt, template, y, selectors)))
    starts: list[SpectralStart] = []
    seen: list[dict[str, int]] = []
    bases = None
    for selector, read in readings.items():
        ranks = {b: max(1, min(r, budgeted.dims[b])) for b, r in read.items()}
        if floors:
            ranks = {b: max(r, int(floors.get(b, 0))) for b, r in ranks.items()}
        if ranks in seen:
            continue
        seen.append(ranks)
        if fmt == "tucker":
            bases = tucker_bases(y) if bases is None else bases  # every mode's basis, for all ranks: once
            start = tucker_truncation(budgeted, y, bases, ranks)
        else:
            start = truncated(fmt, budgeted, y, ranks)
        if start is None:  # TR-SVD cannot hold these ranks: least squares from random values
            start = Network(budgeted.spec, {**budgeted.dims, **ranks}, seed=0, optimize=budgeted.optimize)
        starts.append(SpectralStart(selector, start))
    if fmt == "tr" and len(y.shape) > 2 and ring_small_cuts_decide(y.shape):
        # the reading hinges on the small cuts, read against the larger cuts' noise level above:
        # read as each selector reads them too, one more start each where that differs (on rings
        # 20x3x20, 2x30x5, 25x4x25, 3x20x20 (2026-12-01) either reading led the search to the
        # better end on some; tnmars.fit searches from both)
        order = ring_bonds(template)
        raw = tr_proposals(y, selectors, [template.dims[b] for b in order], small_cuts=False)
        for selector, picked in zip(selectors, raw):
            ranks = {b: max(1, min(int(r), budgeted.dims[b], template.dims[b])) for b, r in zip(order, picked)}
            if floors:
                ranks = {b: max(r, int(floors.get(b, 0))) for b, r in ranks.items()}
            if ranks in seen:
                continue
            seen.append(ranks)
            start = truncated(fmt, budgeted, y, ranks)
            if start is None:
                start = Network(budgeted.spec, {**budgeted.dims, **ranks}, seed=0, optimize=budgeted.optimize)
            starts.append(SpectralStart(selector, start, second_reading=True))
    return starts, readings


def ring_layout(template: Network) -> list[tuple[int, str, str, str]] | None:
    """A user's spec that is a tensor ring in its modes' order (each core one open mode and two
    bonds; the cores of modes ``k`` and ``k + 1`` share a bond, cyclically; order 3 or more),
    as ``(term, previous bond, open index, next bond)`` per mode, or None. Such a spec
    (``"iab,jbc,kca"``) is the TR format up to names and axis order: it gets the TR format's
    spectral starts (:func:`ring_spectral_starts`) instead of growing from rank 1, where no
    single index of a ring pays (a 20x3x20 ring at (3, 3, 6) stayed at (1, 1, 1), error 0.89)."""
    terms, output = template.inputs, template.output
    d = len(output)
    if d < 3 or len(terms) != d:
        return None
    bonds = set(template.bonds)
    holder = {}
    for k, term in enumerate(terms):
        opened = [c for c in term if c in output]
        if len(opened) != 1 or len(term) != 3 or sum(c in bonds for c in term) != 2 or len(set(term)) != 3:
            return None
        holder[opened[0]] = k
    if sorted(holder.values()) != list(range(d)) or any(len(template.terms_with(b)) != 2 for b in bonds):
        return None
    layout = []
    for k, mode in enumerate(output):
        here, after = terms[holder[mode]], terms[holder[output[(k + 1) % d]]]
        shared = [c for c in here if c in bonds and c in after]
        if len(shared) != 1:
            return None
        layout.append((holder[mode], "", mode, shared[0]))
    return [(t, layout[k - 1][3], mode, nxt) for k, (t, _, mode, nxt) in enumerate(layout)]


def ring_spectral_starts(template: Network, data: FitData, layout: Sequence[tuple[int, str, str, str]],
                         floors: Mapping[str, int] | None = None
                         ) -> tuple[list[SpectralStart], dict[str, dict[str, int]]]:
    """:func:`spectral_starts` of the TR format for a user's ring spec (:func:`ring_layout`):
    read and truncated as ``"tr"``, each start's cores then put in the spec's axis order, and
    the readings named by the spec's bonds."""
    from ..network import tr_spec

    canonical = tr_spec(len(layout))
    canon_terms = canonical.split("->")[0].split(",")
    to_user = {canon_terms[k][-1]: nxt for k, (_, _, _, nxt) in enumerate(layout)}  # canonical bond k -> user's
    to_canon = {u: c for c, u in to_user.items()}
    dims = {**dict(zip(canonical.split("->")[1], template.shape)),
            **{c: template.dims[u] for c, u in to_user.items()}}
    ring = Network(canonical, dims, seed=0, optimize=template.optimize)
    starts, readings = spectral_starts("tr", ring, data, None if floors is None else
                                       {to_canon[b]: f for b, f in floors.items() if b in to_canon})
    out = [start._replace(network=_in_layout(template, layout, start.network.cores)) for start in starts]
    return out, {name: {to_user[c]: r for c, r in read.items()} for name, read in readings.items()}


def _in_layout(template: Network, layout: Sequence[tuple[int, str, str, str]], cores: Sequence[Any]) -> Network:
    """A ring spec's network from TR cores in :meth:`Network.tr`'s layout (core ``k``: left
    bond, mode ``k``, right bond), each put in its term's axis order."""
    placed: list[Any] = [None] * len(layout)
    for k, (term, prev, mode, nxt) in enumerate(layout):
        axes = {prev: 0, mode: 1, nxt: 2}
        placed[term] = np.transpose(np.asarray(cores[k]), [axes[c] for c in template.inputs[term]])
    return Network(template.spec, cores=placed, optimize=template.optimize)


def truncated(fmt: str, template: Network, y: np.ndarray, ranks: Mapping[str, int]) -> Network | None:
    """The classical SVD truncation of ``y`` at ``ranks`` (by bond name): HOSVD (Tucker),
    TT-SVD (TT) or TR-SVD (TR; None when its first unfolding cannot hold ``r_0 r_1``)."""
    if fmt == "tucker":
        return tucker_truncation(template, y, tucker_bases(y), ranks)
    if fmt == "tt":
        caps = [ranks[b] for b in template.bonds]
        _, cores = tt_proposal(y, lambda s, rows, cols: len(s), caps)
        return Network(template.spec, cores=cores, optimize=template.optimize)
    if fmt == "tr":
        return _tr_svd(template, y, dict(ranks))
    raise ValueError(f"no SVD truncation for format {fmt!r}")


def tucker_bases(y: np.ndarray) -> list[np.ndarray]:
    """Every mode's left singular vectors of ``y``'s unfolding, largest first, one unfolding
    alive at a time. A mode no longer than the others' product takes them from its unfolding's
    triangle of a QR of the unfolding (n x n, :func:`left_singular_vectors`); a longer one from
    the unfolding's thin SVD, which gives only as many
    vectors as the others' product (no feasible Tucker rank of that mode is larger;
    :func:`tucker_truncation` completes the basis if asked for more). The Gram of a long mode
    costs its size cubed: 1797 images of 8x8 pixels spent about 0.8 s per HOSVD in its
    eigendecomposition, 80 s per EM start of 100 HOSVDs (:func:`em_start`), against a
    fraction of a second from the 1797x64 unfolding's SVD."""
    bases = []
    for k in range(y.ndim):
        m = np.moveaxis(y, k, 0).reshape(y.shape[k], -1)
        if m.shape[0] <= m.shape[1]:  # (to full precision: not the Gram's eigenvectors, see left_singular_vectors)
            q = left_singular_vectors(m)
        else:
            q = np.linalg.svd(m, full_matrices=False)[0]
        del m  # before the next mode's copy: two unfoldings alive at once are a third data size
        bases.append(q)
    return bases


def _widened(basis: np.ndarray, rank: int) -> np.ndarray:
    """``basis`` with orthonormal columns added up to ``rank`` (directions of zero singular
    value, so any orthonormal completion gives the same truncation)."""
    missing = rank - basis.shape[1]
    if missing <= 0:
        return basis
    from scipy.linalg import null_space

    return np.hstack([basis, null_space(basis.T)[:, :missing]])


def tucker_truncation(template: Network, y: np.ndarray, bases: Sequence[np.ndarray],
                      ranks: Mapping[str, int]) -> Network:
    """HOSVD of ``y`` at ``ranks`` (by bond name) from :func:`tucker_bases`."""
    factors = [_widened(q, ranks[b])[:, : ranks[b]] for q, b in zip(bases, template.bonds)]
    core = y
    for k, u in enumerate(factors):
        core = np.moveaxis(np.tensordot(core, u, axes=([k], [0])), -1, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (ranks above a mode's size, widened)
        # the template's own spec: a Tucker written with other letters keeps its names
        return Network(template.spec, cores=[core, *factors], optimize=template.optimize)


#: EM iterations of :func:`em_start`: on the tuning cases (TT (2,3) and Tucker (2,3,2)
#: 15x16x17 at 5-10% observed, masks of seeds 0-2) 100, 300, 1,000 and 3,000 iterations
#: followed by ALS recovered the same masks (2026-11-29, /tmp/exp-em/emvar.py)
EM_ITERATIONS = 100
#: observations per degree of freedom (at the ranks of a start) below which completion also
#: tries EM starts (:func:`em_pays`). At the true ranks EM then ALS recovered masks that every
#: other start missed at 1.9 (Tucker (2,3,2), 5% observed) and 2.5 (TT (2,3), 10%); from 3.8
#: up (Tucker 10-20%, TT 20%) the spectral start already recovered them in the fit and the EM
#: starts only cost time (measured 2026-11-29 on the tuning cases of ``EM_ITERATIONS``)
EM_BELOW = 4.0


def em_pays(template: Network, data: FitData, ranks: Mapping[str, int]) -> bool:
    """Whether EM starts are worth their cost at ``ranks``: few observations per degree of
    freedom (:data:`EM_BELOW`), where masked ALS from the spectral or random starts often
    stalls at the true ranks."""
    dof = degrees_of_freedom(template.spec, {**template.dims, **ranks})
    return data.n_obs < EM_BELOW * max(dof, 1)


def em_start(fmt: str, template: Network, data: FitData, ranks: Mapping[str, int],
             iterations: int = EM_ITERATIONS) -> Network:
    """The SVD truncation at ``ranks`` (:func:`truncated`) of the data with its missing
    entries imputed by EM ("hard impute"): from the spectral start's estimate (the zero-filled
    data over the observed fraction), fill the missing entries with the current estimate,
    truncate, and take the truncation as the next estimate, ``iterations`` times.

    Why: with few observations masked ALS at the true ranks stalls in poor minima from
    spectral and random starts (TT (2,3) 15x16x17, 10% observed: relative error 0.12-0.31
    after 1,000 sweeps from each of 3 starts on 3 masks); EM moves the whole tensor at once
    and reached the exact fit on one of those masks (one of three also for Tucker (2,3,2)
    at 5%). Not every mask: it is one more start, judged by the criterion like the others."""
    y = data.backend.to_numpy(data.y)
    observed = data.backend.to_numpy(data.weights).astype(bool)
    estimate = filled(data)
    net = None
    for _ in range(iterations):
        step = truncated(fmt, template, np.where(observed, y, estimate), ranks)
        if step is None:  # TR-SVD cannot hold these ranks
            break
        net = step
        estimate = np.asarray(net.to_tensor())
    if net is None:
        return Network(template.spec, {**template.dims, **ranks}, seed=0, optimize=template.optimize)
    return net


def em_starts(fmt: str | None, template: Network, data: FitData
              ) -> Callable[[dict[str, int]], list[Network]] | None:
    """A builder of EM starts at given ranks for completion in Tucker, TT and TR: the EM
    start (:func:`em_start`) where :func:`em_pays`, else none; each computed once per rank
    vector. None on complete data and other networks."""
    if fmt not in ("tucker", "tt", "tr") or data.weights is None:
        return None
    cache: dict[tuple[tuple[str, int], ...], list[Network]] = {}

    def starts(ranks: dict[str, int]) -> list[Network]:
        key = tuple(sorted(ranks.items()))
        if key not in cache:
            cache[key] = [em_start(fmt, template, data, ranks)] if em_pays(template, data, ranks) else []
        return cache[key]

    return starts


def _tr_svd(template: Network, y: np.ndarray, ranks: dict[str, int]) -> Network | None:
    """TR-SVD cores at ``ranks`` (by bond name), or None when its first unfolding cannot
    hold ``r_0 r_1``. ``template`` is the TR format's, or a spec that is a ring in its modes'
    order (:func:`ring_layout`; the cores then put in its axis order)."""
    from ..interop.init import svd_init
    from ..network import tr_spec

    layout = None if template.spec == tr_spec(len(template.shape)) else ring_layout(template)
    # Network.tr's rank order: bond d-1 (core 0's left), then bonds 0 .. d-2
    order = list(template.bonds) if layout is None else [layout[k - 1][3] for k in range(len(layout))]
    try:
        with warnings.catch_warnings():  # an order-2 ring is a matrix: tensorly says so at every call
            warnings.filterwarnings("ignore", message="Determining the TR-rank for the trivial case")
            cores = svd_init("tr", y, [ranks[b] for b in order]).cores  # (Network.tr's order)
    except ValueError:
        return None
    if layout is not None:
        return _in_layout(template, layout, cores)
    return Network(template.spec, cores=cores, optimize=template.optimize)


#: random starts per fresh look at a ring's removal, beside TR-SVD
RANDOM_RESTARTS = 2


def fresh_start(fmt: str | None, template: Network, data: FitData, seed: Any = None
                ) -> Callable[[dict[str, int]], list[Network]] | None:
    """A builder of fresh starts at given ranks for the search's last look at removals
    (:meth:`RankSearch._fresh_removals`), where a format's ALS has poor local minima. For
    rings: TR-SVD and ``RANDOM_RESTARTS`` random starts, since each wins on some data (a
    20 dB TR 9x7x8x6 at its true ranks: 13x the oracle's error from TR-SVD, the oracle's
    from each of three random starts; at ranks one above on two bonds, two of three random
    starts stopped at 5x). Tucker and TT need none on complete data: their truncations are
    the classical starts already. In completion with few observations every format also gets
    the EM start (:func:`em_starts`). Every call draws new random values from ``seed``."""
    imputed = em_starts(fmt, template, data)
    if fmt != "tr":
        return imputed
    y = filled(data)
    rng = np.random.default_rng(seed)

    def starts(ranks: dict[str, int]) -> list[Network]:
        out = [] if (svd := _tr_svd(template, y, ranks)) is None else [svd]
        out += [Network(template.spec, {**template.dims, **ranks}, seed=rng, optimize=template.optimize)
                for _ in range(RANDOM_RESTARTS)]
        return out

    return starts


def truncation_start(fmt: str | None, template: Network, data: FitData
                     ) -> Callable[[dict[str, int]], list[Network]] | None:
    """A builder of the classical start at given ranks, for the final refit at the selected
    ranks (:meth:`RankSearch._restarted`) and the last look at growing moves
    (:meth:`RankSearch._classical_additions`) of a Tucker (HOSVD), TT (TT-SVD) or TR (TR-SVD)
    fit of complete data: the search's own cores can sit in a poor ALS minimum at the right
    ranks, where the truncation is close to optimal (a noiseless Tucker 2^6 at (2,1,2,1,2,2):
    0.049 from the walk, 6e-16 from HOSVD), and on a ring no single index may pay from the
    walk's cores (a 10^3 ring at (2, 6, 3), 30 dB, with those ranks as ``max_rank``: (1, 2, 2)
    at relative error 0.76 from the spectral start (2, 2, 2); (2, 6, 3) from TR-SVD starts).
    None for other formats and for completion (its EM starts, :func:`em_starts`, play that
    part, in both places)."""
    if fmt not in ("tucker", "tt", "tr") or data.weights is not None:
        return None
    kept: dict[str, Any] = {}  # the data on the host and HOSVD's bases, made at the first call

    def starts(ranks: dict[str, int]) -> list[Network]:
        if "y" not in kept:
            kept["y"] = filled(data)
        if fmt == "tr":
            return [] if (svd := _tr_svd(template, kept["y"], ranks)) is None else [svd]
        if fmt == "tucker":
            if "bases" not in kept:  # every mode's singular vectors, whatever the ranks: computed once
                kept["bases"] = tucker_bases(kept["y"])
            return [tucker_truncation(template, kept["y"], kept["bases"], ranks)]
        return [truncated(fmt, template, kept["y"], ranks)]

    return starts


#: random starts of the final refit of a network with loops (other than the TR format)
LOOP_RESTARTS = 12
#: random starts of the final refit of a user's tree network (two bonds above rank 1 or more)
TREE_RESTARTS = 3


def loop_restarts(fmt: str | None, template: Network, seed: Any = None
                  ) -> Callable[[dict[str, int]], list[Network]] | None:
    """A builder of random starts for the final refit at the selected ranks
    (:meth:`RankSearch._restarted`) of a network whose bonds close a loop (a fully connected
    or other user network; the TR format has :func:`fresh_start`). ALS on loops lands in
    start-dependent minima: a fully connected order-4 network at 20 dB at its true ranks
    reached the best error (0.088) from 4 of 12 random starts, 0.13-0.17 from the others,
    and the search's own cores stopped at 0.126; without noise 3 of 16 random starts reached
    the exact network (error 0) after 1,000 sweeps, the others 0.09-0.13. At ranks where
    the bonds above 1 of a loopy network form a tree it returns no starts (a structure
    search's fully connected graph: it would pay them after every improving exchange). A user's
    tree network (no loop at any ranks, not a format) gets :data:`TREE_RESTARTS` starts where
    two or more bonds are above 1: a star whose hub core has an open leg, noiseless at its true
    ranks, stopped at relative error 0.0079 from the walk's cores, where other starts are exact
    (held-out evaluation, 2026-11-30). Every call draws new random values from ``seed``."""
    if fmt is not None:
        return None
    loopy = has_loop(template.inputs, template.bonds)
    rng = np.random.default_rng(seed)

    def starts(ranks: dict[str, int]) -> list[Network]:
        used = [b for b, r in ranks.items() if r > 1]
        if loopy:
            count = LOOP_RESTARTS if has_loop(template.inputs, used) else 0
        else:
            count = TREE_RESTARTS if len(used) > 1 else 0
        return [Network(template.spec, {**template.dims, **ranks}, seed=rng, optimize=template.optimize)
                for _ in range(count)]

    return starts


def ring_bonds(net: Network) -> list[str]:
    """A ring's bonds in ring order: bond ``k`` (the last index of core ``k``) joins cores
    ``k`` and ``k + 1``."""
    return [term[-1] for term in net.inputs]


def rank_one_start(template: Network, data: FitData, seed: Any = None,
                   floors: Mapping[str, int] | None = None) -> Network:
    """Every bond at rank 1 (or at its entry of ``floors``, the caller's ``min_rank``, when
    above 1), cores fitted by least squares (from random values; with missing entries, first
    to the zero-filled estimate, which keeps completion away from the poor local minima of a
    random start)."""
    ranks = {b: max(1, min(int((floors or {}).get(b, 1)), r)) for b, r in template.bonds.items()}
    net = Network(template.spec, {**template.dims, **ranks}, seed=seed, optimize=template.optimize)
    if data.weights is not None:
        net, _ = als(net, FitData.from_arrays(filled(data), backend=data.backend), sweeps=10)
    return net


def raised_to(net: Network, floors: Mapping[str, int], seed: Any = None) -> Network:
    """``net`` with every bond below its entry of ``floors`` grown to it, one index at a time
    by :func:`~tnmars.fitting.moves.grow` (small random slices: the function barely changes,
    and the search's first refit fills them). The search never adds indices to reach
    ``min_rank``, it only refuses to remove them below it, so a proposal below ``min_rank``
    (spectral ranks of low-rank data, the greedy rank 1, a warm start) must be raised before
    it starts. ``floors`` must be feasible together (:func:`tnmars.fit` makes them so)."""
    low = {b: int(floors[b]) - r for b, r in net.bonds.items() if r < int(floors.get(b, 0))}
    if not low:
        return net
    rng = np.random.default_rng(seed)
    for bond, missing in low.items():
        for _ in range(missing):
            net = grow(net, bond, rng)
    return net
