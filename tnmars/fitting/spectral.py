"""Rank proposals from the spectra of unfoldings: fast, classical, and a strong start.

A format's ranks are ranks of matrices made from the data: Tucker's are the ranks of the
mode unfoldings, TT's those of the unfoldings of a TT-SVD sweep, a tensor ring's are
square roots of products read from contiguous cuts. Under Gaussian noise a *rank selector*
reads a matrix's rank off its singular values:

- :func:`evbmf_rank`: empirical variational Bayes matrix factorisation (Nakajima et al.,
  JMLR 2013), which also estimates the noise variance; the strongest classical choice;
- :func:`mdl_rank`: minimum description length on the eigenvalues (Wax & Kailath, 1985);
- :func:`energy_rank`: the smallest rank whose discarded energy stays under a known noise
  budget (the truncation rule of TT-SVD / truncated HOSVD).

:func:`tucker_proposal`, :func:`tt_proposal` and :func:`tr_proposal` apply a selector to a
format and return its ranks (TT also its TT-SVD cores). :func:`tnmars.fit` uses them as the
start of its selection; the final decision is the MAP criterion's
(:mod:`tnmars.fitting.criterion`).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> m = rng.standard_normal((40, 3)) @ rng.standard_normal((3, 60)) + 0.01 * rng.standard_normal((40, 60))
>>> s = np.linalg.svd(m, compute_uv=False)
>>> evbmf_rank(s, 40, 60)[0], mdl_rank(s**2, 60)
(3, 3)
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from math import prod

import numpy as np

__all__ = [
    "SELECTORS",
    "singular_values",
    "evbmf_rank",
    "mdl_rank",
    "energy_rank",
    "tucker_proposal",
    "tucker_proposals",
    "tt_proposal",
    "tr_proposal",
    "tr_proposals",
]

Selector = Callable[[np.ndarray, int, int], int]


def singular_values(matrix: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """Singular values (descending), to full relative precision (no singular vectors are
    formed: LAPACK's values-only SVD; a Gram matrix would lose the small ones below
    ``sqrt(eps)`` of the largest, which the selectors need on exact data).

    ``overwrite=True`` lets LAPACK work in ``matrix``'s own memory (a private unfolding):
    NumPy's SVD copies its input, a third data-sized array beside the data and the
    unfolding. The transposed view is handed over, Fortran-ordered as LAPACK wants it,
    with the same singular values."""
    from scipy.linalg import svd

    a = np.asarray(matrix, dtype=np.float64)
    if a.size == 0:
        return np.zeros(0)
    view = a.T if a.flags.c_contiguous else a
    return svd(view, compute_uv=False, overwrite_a=overwrite and view.flags.f_contiguous, check_finite=False)


def left_singular_vectors(matrix: np.ndarray) -> np.ndarray:
    """The left singular vectors of a wide matrix (rows <= columns), largest first, to full
    precision. The eigenvectors of the Gram matrix ``M M^T`` are lost below ``sqrt(eps)`` of the
    largest singular value; where its eigenvalues reach that far down (exact low-rank data, data
    far from zero), they come from the SVD of the triangle ``R`` of ``M^T = Q R`` instead, built
    block by block (:data:`GRAM_RESOLVES`). Data far from zero put their structure there: with a
    mean 1e6 times their spread, a Tucker (3, 4, 2) plus noise has singular values 5e-7 of the
    offset's, and the Gram's vectors gave a start at 62% of the deviations unexplained, from
    which the fit went to (2, 2, 2). The Gram is the usual path: a QR of a 64 x 262,144
    unfolding took 237 ms against 47 ms for the Gram (2026-12-02).

    >>> m = np.random.default_rng(0).standard_normal((3, 8)) + 1e6
    >>> u = left_singular_vectors(m)
    >>> bool(np.allclose(u.T @ u, np.eye(3))), bool(np.allclose(np.abs(u[:, 0]), 3 ** -0.5))
    (True, True)
    """
    a = np.asarray(matrix, dtype=np.float64)
    w, u = np.linalg.eigh(a @ a.T)
    if w[-1] <= 0.0 or w[0] >= GRAM_RESOLVES * w[-1]:
        return u[:, ::-1]
    from scipy.linalg import qr, svd

    rows, cols = a.shape
    # R of the columns block by block (R of [R so far; next block^T]): the same R as one QR, in the
    # memory of a block, not the copies a QR of the whole transposed unfolding makes (3.7x it)
    block = max(4 * rows, (1 << 16) // max(rows, 1))
    r = np.zeros((0, rows))
    for start in range(0, cols, block):
        stacked = np.vstack([r, a[:, start:start + block].T])
        r = qr(stacked, mode="r", overwrite_a=True, check_finite=False)[0][:rows]
    return svd(r.T, full_matrices=False, check_finite=False)[0]


#: a Gram matrix whose smallest eigenvalue is at least this share of its largest gives its
#: eigenvectors to about ``eps / GRAM_RESOLVES`` (1e-8); below, :func:`left_singular_vectors`
#: takes the QR path
GRAM_RESOLVES = 1e-8


def _spectrum_of_unfolding(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """Singular values of an unfolding of ``whole`` with one data-sized array beside it: the
    unfolding's own copy when it had to move axes, else a copy made here, worked on in place
    (LAPACK's tall path on a view still allocates about 1.6 data sizes of its own)."""
    private = part if not np.shares_memory(part, whole) else np.array(part, dtype=np.float64, order="C")
    return singular_values(private, overwrite=True)


# ------------------------------------------------------------------------------------ selectors
def _evb_objective(sigma2: float, L: int, M: int, s: np.ndarray, residual: float, xubar: float) -> float:
    """The EVB free energy as a function of the noise variance (Nakajima et al. 2013, sec. 4)."""
    alpha = L / M
    x = s**2 / (M * sigma2)
    z1 = x[x > xubar]
    z2 = x[x <= xubar]
    tau = 0.5 * (z1 - (1 + alpha) + np.sqrt(np.maximum((z1 - (1 + alpha)) ** 2 - 4 * alpha, 0.0)))
    return float(np.sum(z2 - np.log(np.maximum(z2, 1e-300))) + np.sum(z1 - tau)
                 + np.sum(np.log((tau + 1) / z1)) + alpha * np.sum(np.log(tau / alpha + 1))
                 + residual / (M * sigma2) + (L - len(s)) * math.log(sigma2))


def evbmf_rank(s: np.ndarray, L: int, M: int, residual: float = 0.0) -> tuple[int, float]:
    """Rank and noise variance of an ``L x M`` matrix from its singular values ``s`` by
    empirical variational Bayes (EVBMF, analytic global solution).

    ``residual`` is the energy outside the given singular values (when only the leading
    ones are passed). Returns ``(rank, noise_variance)``.
    """
    from scipy.optimize import minimize_scalar

    if L > M:
        L, M = M, L
    s = np.sort(np.asarray(s, dtype=np.float64))[::-1][:L]
    H = len(s)
    if H == 0 or s[0] <= 0:
        return 0, 0.0
    alpha = L / M
    tauubar = 2.5129 * math.sqrt(alpha)
    xubar = (1 + tauubar) * (1 + alpha / tauubar)
    upper = (float(np.sum(s**2)) + residual) / (L * M)
    eh_ub = int(min(math.ceil(L / (1 + alpha)) - 1, H)) - 1
    tail = s[eh_ub + 1:] if eh_ub + 1 < H else s[-1:]
    lower = max(float(s[min(eh_ub + 1, H - 1)] ** 2) / (M * xubar), float(np.mean(tail**2)) / M)
    lower = min(lower, upper)
    if upper <= 0:
        return 0, 0.0
    if lower <= 0 or not lower < upper:
        sigma2 = upper
    else:
        res = minimize_scalar(_evb_objective, bounds=(lower, upper), method="bounded",
                              args=(L, M, s, residual, xubar), options={"xatol": 1e-10 * upper})
        sigma2 = float(res.x)
    threshold = math.sqrt(M * sigma2 * (1 + tauubar) * (1 + alpha / tauubar))
    return int(np.sum(s > threshold)), sigma2


def mdl_rank(eigenvalues: np.ndarray, n_samples: int) -> int:
    """Minimum description length rank (Wax & Kailath) from the eigenvalues of a sample
    covariance estimated from ``n_samples`` samples."""
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    p = len(lam)
    lam = np.maximum(lam, 1e-300 * max(lam[0], 1e-300))
    best, best_k = math.inf, 0
    for k in range(p):
        tail = lam[k:]
        geo = float(np.exp(np.mean(np.log(tail))))
        ari = float(np.mean(tail))
        value = -n_samples * (p - k) * math.log(geo / ari) + 0.5 * k * (2 * p - k) * math.log(n_samples)
        if value < best:
            best, best_k = value, k
    return best_k


def energy_rank(s: np.ndarray, budget: float) -> int:
    """The smallest rank whose discarded energy ``sum_{j > r} s_j^2`` is at most ``budget``."""
    s2 = np.sort(np.asarray(s, dtype=np.float64) ** 2)[::-1]
    tails = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])
    return int(np.argmax(tails <= budget))


def _evbmf_selector(s: np.ndarray, L: int, M: int) -> int:
    return evbmf_rank(s, L, M)[0]


def _mdl_selector(s: np.ndarray, L: int, M: int) -> int:
    return mdl_rank(s**2, max(L, M))


#: the selectors a proposal can use, by name
SELECTORS: dict[str, Selector] = {"evbmf": _evbmf_selector, "mdl": _mdl_selector}


def _selector(selector: str | Selector) -> Selector:
    if callable(selector):
        return selector
    try:
        return SELECTORS[selector]
    except KeyError:
        raise ValueError(f"unknown rank selector {selector!r}; choose one of {', '.join(SELECTORS)}") from None


# ------------------------------------------------------------------------------------ formats
def _unfold(y: np.ndarray, mode: int) -> np.ndarray:
    return np.moveaxis(y, mode, 0).reshape(y.shape[mode], -1)


def tucker_proposal(y: np.ndarray, selector: str | Selector = "evbmf", max_ranks: Sequence[int] | None = None
                    ) -> tuple[int, ...]:
    """Per-mode ranks: the selector applied to every mode unfolding (at least 1 each)."""
    return tucker_proposals(y, (selector,), max_ranks)[0]


def tucker_proposals(y: np.ndarray, selectors: Sequence[str | Selector], max_ranks: Sequence[int] | None = None
                     ) -> list[tuple[int, ...]]:
    """:func:`tucker_proposal` for each of ``selectors``, every unfolding's spectrum computed once."""
    picks = [_selector(s) for s in selectors]
    ranks: list[list[int]] = [[] for _ in picks]
    for k in range(y.ndim):
        shape = (y.shape[k], y.size // max(y.shape[k], 1))
        s = _spectrum_of_unfolding(_unfold(y, k), y)
        cap = max_ranks[k] if max_ranks is not None else shape[0]
        for out, pick in zip(ranks, picks):
            out.append(int(min(max(pick(s, *shape), 1), cap)))
    return [tuple(r) for r in ranks]


def tt_proposal(y: np.ndarray, selector: str | Selector = "evbmf", max_ranks: Sequence[int] | None = None,
                keep_small_cuts: bool = True) -> tuple[tuple[int, ...], list[np.ndarray]]:
    """A TT-SVD sweep whose rank at every step is chosen by the selector on that step's
    unfolding. Returns the internal ranks and the TT cores (the TT-SVD approximation).

    With ``keep_small_cuts`` (default; False: the classical sweep, every step read by the
    selector) an unfolding with at most :data:`SMALL_CUT` rows or columns keeps every singular value: a
    selector cannot tell signal from noise among two to four values, and a rank read too low
    there caps every later step (the sweep's next unfolding has that rank times one mode as rows).
    A quantized TT 2^16 at rank 6, 1% noise, read rank 1 on every bond this way and walked up
    from there in 47 s (an outside probe, 2026-12-04; 4^8 of the same data: 1.3 s); the search
    removes an index the data do not need."""
    pick = _selector(selector)
    d = y.ndim
    cores: list[np.ndarray] = []
    ranks: list[int] = []
    rest = np.asarray(y, dtype=np.float64)
    left = 1
    for k in range(d - 1):
        m = rest.reshape(left * y.shape[k], -1)
        if m.shape[0] <= m.shape[1]:  # left singular vectors through the small triangle: no full-size V^T
            u = left_singular_vectors(m)
            s = singular_values(m)
        else:
            u, s, _ = np.linalg.svd(m, full_matrices=False)
        r = len(s) if keep_small_cuts and min(m.shape) <= SMALL_CUT else pick(s, *m.shape)
        cap = max_ranks[k] if max_ranks is not None else len(s)
        r = int(min(max(r, 1), cap, len(s)))
        core = u[:, :r].reshape(left, y.shape[k], r)
        cores.append(core[0] if k == 0 else core)
        rest = u[:, :r].T @ m  # = S V^T truncated to r
        ranks.append(r)
        left = r
    cores.append(rest.reshape(left, y.shape[-1]))
    return tuple(ranks), cores


def tr_proposal(y: np.ndarray, selector: str | Selector = "evbmf", max_ranks: Sequence[int] | None = None
                ) -> tuple[int, ...]:
    """Ranks of a tensor ring read from its contiguous cuts.

    The unfolding that separates modes ``i+1 .. j`` from the rest crosses bonds ``i`` and
    ``j`` of the ring, so its rank is ``r_i r_j`` (when the matrix is large enough to show
    it). The logarithms of the selected unfolding ranks are fitted by ``log r_i + log r_j``
    in least squares over every unsaturated cut; the result is rounded (at least 1).
    """
    return tr_proposals(y, (selector,), max_ranks)[0]


#: a cut whose smaller side has at most this many singular values leaves no room for a noise
#: floor: the selectors read it as rank 1 even when every value is signal (a ring 20x3x20 at
#: (3, 3, 6), 40 dB: spectrum (1, 0.69, 0.64) across the size-3 mode, EVBMF and MDL both 1, the
#: proposal (1, 1, 9) and a fit at (1, 1, 1) with error 0.85). Such cuts are read against the
#: noise level of the larger cuts instead (:func:`_noise_variance`).
SMALL_CUT = 4


def _ring_cuts(shape: Sequence[int]) -> list[tuple[int, list[int], int, int]]:
    """A ring's contiguous cuts ``(i, modes, rows, columns)``: ``modes`` (``i+1 ..``, at most
    half the ring) against the rest, each matrix once; the cut crosses bonds ``i`` and
    ``modes[-1]``."""
    d, size = len(shape), prod(shape)
    cuts = []
    for i in range(d):
        for length in range(1, d // 2 + 1):
            modes = [(i + 1 + t) % d for t in range(length)]
            if length * 2 == d and modes[0] > (modes[-1] + 1) % d:
                continue  # the complementary half gives the same matrix
            inside = prod(shape[m] for m in modes)
            cuts.append((i, modes, inside, size // max(inside, 1)))
    return cuts


def ring_small_cuts_decide(shape: Sequence[int]) -> bool:
    """Whether a ring's reading hinges on its small cuts (at most :data:`SMALL_CUT` values on
    a side): without them the larger cuts leave the bonds' log-ranks underdetermined (a ring
    20x3x20: two cuts for three bonds), so how the small cuts are read decides the proposal.
    With every mode small (a quantized 2^8) the longer cuts determine them."""
    d = len(shape)
    rows = []
    for i, modes, inside, outside in _ring_cuts(shape):
        if min(inside, outside) > SMALL_CUT:
            row = np.zeros(d)
            row[i] += 1
            row[modes[-1]] += 1
            rows.append(row)
    return any(min(inside, outside) <= SMALL_CUT for _, _, inside, outside in _ring_cuts(shape)) and (
        not rows or np.linalg.matrix_rank(np.array(rows)) < d)


def _noise_variance(cuts: Sequence[tuple[np.ndarray, int, int]], readings: Sequence[int]) -> float | None:
    """The noise variance per entry that the larger cuts show beyond their readings: the median
    over cuts with more than :data:`SMALL_CUT` values on each side of the energy past the
    reading ``r`` over ``(rows - r)(columns - r)``, the entries a noise matrix of that size
    has left after ``r`` components. None without such a cut."""
    estimates = []
    for (s, inside, outside), r in zip(cuts, readings):
        if min(inside, outside) <= SMALL_CUT or r >= min(inside, outside):
            continue
        estimates.append(float(np.sum(np.asarray(s[r:], dtype=np.float64) ** 2)) / ((inside - r) * (outside - r)))
    return float(np.median(estimates)) if estimates else None


def tr_proposals(y: np.ndarray, selectors: Sequence[str | Selector], max_ranks: Sequence[int] | None = None,
                 small_cuts: bool = True) -> list[tuple[int, ...]]:
    """:func:`tr_proposal` for each of ``selectors``, every cut's spectrum computed once. A cut
    with at most :data:`SMALL_CUT` values on a side counts the values above the noise edge
    ``sigma (sqrt(rows) + sqrt(columns))`` (``sigma^2`` from the larger cuts) instead of the
    selector's reading; without a larger cut it is left out. ``small_cuts=False``: every cut as
    the selector reads it."""
    picks = [_selector(s) for s in selectors]
    d = y.ndim
    rows: list[list[np.ndarray]] = [[] for _ in picks]
    rhs: list[list[float]] = [[] for _ in picks]
    cuts: list[tuple[int, int, np.ndarray, int, int]] = []
    for i, modes, inside, outside in _ring_cuts(y.shape):
        perm = modes + [m for m in range(d) if m not in modes]
        # unnamed: the unfolding (a view or a copy of y) dies before the next one is made
        s = _spectrum_of_unfolding(np.transpose(y, perm).reshape(inside, outside), y)
        cuts.append((i, modes[-1], s, inside, outside))
    for pick, out_rows, out_rhs in zip(picks, rows, rhs):
        readings = [pick(s, inside, outside) for _, _, s, inside, outside in cuts]
        noise = _noise_variance([(s, inside, outside) for _, _, s, inside, outside in cuts], readings)
        for (i, j, s, inside, outside), r in zip(cuts, readings):
            if small_cuts and min(inside, outside) <= SMALL_CUT:
                if noise is None:
                    continue  # no noise level to read it against: says nothing
                r = int(np.sum(s > math.sqrt(noise) * (math.sqrt(inside) + math.sqrt(outside))))
            if r >= min(inside, outside):
                continue  # saturated: says nothing about the product
            row = np.zeros(d)
            row[i] += 1
            row[j] += 1
            out_rows.append(row)
            out_rhs.append(math.log(max(r, 1)))
    proposals = []
    for out_rows, out_rhs in zip(rows, rhs):
        if not out_rows:
            ranks = [1] * d
        else:
            sol, *_ = np.linalg.lstsq(np.array(out_rows), np.array(out_rhs), rcond=None)
            ranks = [max(1, int(round(math.exp(v)))) for v in sol]
        if max_ranks is not None:
            ranks = [min(r, m) for r, m in zip(ranks, max_ranks)]
        proposals.append(tuple(ranks))
    return proposals
