"""Honest baselines for rank selection: what a practitioner would use instead of tnmars.fit.

Each selector returns ranks in tnmars's bond order (Tucker: one per mode; TT: the internal
ranks; TR: core k's left rank first, as Network.tr; CP: one). Each *fitter* fits a format at given
ranks with tensorly at its best settings (the "oracle" is the fitter at the true ranks):

- Tucker: HOOI (``tensorly.decomposition.tucker``, SVD start, 200 iterations, tol 1e-10);
  with missing entries its masked EM variant.
- TT: TT-SVD (``tensor_train``), the standard; with missing entries not offered by tensorly.
- TR: the better (on the noisy data) of TR-SVD and TR-ALS (``tensor_ring_als``, 300 sweeps).
- CP: ``parafac`` with line search, 3000 iterations, from the SVD start and 4 random starts,
  the best fit kept; with missing entries its masked variant.
- any other network: tnmars's own ALS at the true ranks from 5 random starts (no library
  fits arbitrary networks), the best fit kept.

Selectors (the rank-selection methods compared):
- per-mode EVBMF and MDL on the unfoldings (Tucker), on the TT-SVD sweep's unfoldings (TT),
  on the contiguous cuts (TR; products of two ranks, solved in least squares);
- truncated HOSVD / TT-SVD with the **true** noise level: the singular values of each
  unfolding above the largest singular value pure noise would give (``sigma (sqrt L + sqrt
  M)``, the Marchenko-Pastur edge): the oracle-informed classical rule (the energy rule
  "discard at most the noise energy" keeps nearly every index under noise, so the edge is
  the stronger setting);
- CP: a cross-validated grid (3 folds of 10% held-out entries, masked parafac at every rank
  from 1 to the maximum; the rank with the smallest mean held-out error), and BCPF-style ARD
  (variational Bayes CP with automatic relevance determination, Zhao, Zhang & Cichocki 2015),
  written here for complete data;
- completion (Tucker): cross-validated greedy rank increments (10% of the observed entries
  held out; from rank 1, raise the mode, or where one alone is infeasible the pair of
  modes, whose increment lowers the held-out error most; stop when none does), then masked
  HOOI on every observed entry at the chosen ranks.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import tensorly as tl
from tensorly.decomposition import parafac, tensor_ring, tensor_ring_als, tensor_train, tucker

import tnmars
from tnmars.fitting.solvers import FitData, als
from tnmars.fitting.spectral import evbmf_rank, mdl_rank, singular_values, tr_proposal, tt_proposal

tl.set_backend("numpy")


# ------------------------------------------------------------------------------ fitters
def fit_tucker(y, ranks, observed=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mask = None if observed is None else observed.astype(float)
        core, factors = tucker(np.where(observed, y, 0.0) if observed is not None else y, list(ranks),
                               n_iter_max=200, tol=1e-10, init="svd", mask=mask)
    return tl.tucker_to_tensor((core, factors))


def fit_tt(y, ranks):
    return tl.tt_to_tensor(tensor_train(y, [1, *ranks, 1]))


def fit_tr(y, ranks):
    """``ranks[k]`` is core k's left rank, as ``Network.tr`` and TR fits order them (tensorly's
    order; its rank list repeats the closing bond at the end)."""
    tl_ranks = [*ranks, ranks[0]]
    best = None
    for make in (lambda: tensor_ring(y, rank=tl_ranks), lambda: tensor_ring_als(y, rank=tl_ranks, n_iter_max=300,
                                                                              random_state=0)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est = tl.tr_to_tensor(make())
        except Exception:  # TR-SVD refuses ranks whose product exceeds the first mode
            continue
        err = np.linalg.norm(est - y)
        if best is None or err < best[0]:
            best = (err, est)
    return best[1]


def fit_cp(y, rank, observed=None, starts=4, iters=3000):
    best = None
    mask = None if observed is None else observed.astype(float)
    data = y if observed is None else np.where(observed, y, 0.0)
    for init in ["svd"] + list(range(starts)):
        kwargs = dict(init="svd" if init == "svd" else "random", random_state=None if init == "svd" else init,
                      n_iter_max=iters, tol=1e-12, linesearch=observed is None, mask=mask)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                cp = parafac(data, rank, **kwargs)
            except np.linalg.LinAlgError:  # more components than the data hold: a tiny ridge
                cp = parafac(data, rank, l2_reg=1e-10, **kwargs)
        est = tl.cp_to_tensor(cp)
        r = est - y if observed is None else (est - y)[observed]
        err = float(np.linalg.norm(r))
        if best is None or err < best[0]:
            best = (err, est)
    return best[1]


def fit_network(y, spec, shape, ranks, observed=None, starts=5):
    """tnmars ALS at given ranks from several random starts (the best fit to the data)."""
    data = FitData.from_arrays(y / np.sqrt(np.mean(y**2)), observed)
    best = None
    for s in range(starts):
        net = tnmars.Network(spec, shape=shape, ranks=ranks, seed=100 + s)
        net, sse = als(net, data, sweeps=500, tol=1e-9)
        if best is None or sse < best[0]:
            best = (sse, net)
    return best[1].to_tensor() * np.sqrt(np.mean(y**2))


# ------------------------------------------------------------------------------ selectors
def _unfold(y, k):
    return np.moveaxis(y, k, 0).reshape(y.shape[k], -1)


def tucker_evbmf(y, max_rank):
    return tuple(min(max(evbmf_rank(singular_values(_unfold(y, k)), *_unfold(y, k).shape)[0], 1), max_rank)
                 for k in range(y.ndim))


def tucker_mdl(y, max_rank):
    out = []
    for k in range(y.ndim):
        m = _unfold(y, k)
        out.append(min(max(mdl_rank(singular_values(m) ** 2, m.shape[1]), 1), max_rank))
    return tuple(out)


def edge_rank(s, L, M, sigma2):
    """Singular values above the largest one pure noise of variance ``sigma2`` would give an
    ``L x M`` matrix, ``sigma (sqrt L + sqrt M)`` (the Marchenko-Pastur edge); with no noise,
    above 1e-10 of the largest (rounding)."""
    s = np.asarray(s)
    edge = max(math.sqrt(sigma2) * (math.sqrt(L) + math.sqrt(M)), 1e-10 * float(s.max()))
    return int(np.sum(s > edge))


def tucker_noise_truncation(y, max_rank, sigma2):
    """Truncated HOSVD with the true noise level: per mode, the singular values of the
    unfolding above the noise edge."""
    return tuple(min(max(edge_rank(singular_values(_unfold(y, k)), *_unfold(y, k).shape, sigma2), 1), max_rank)
                 for k in range(y.ndim))


def tt_evbmf(y, max_rank):
    return tuple(min(r, max_rank) for r in tt_proposal(y, "evbmf", keep_small_cuts=False)[0])


def tt_mdl(y, max_rank):
    return tuple(min(r, max_rank) for r in tt_proposal(y, "mdl", keep_small_cuts=False)[0])


def tt_noise_truncation(y, max_rank, sigma2):
    """TT-SVD with the true noise level: at every step of the sweep, the singular values above
    the noise edge of that step's unfolding (the left factors are orthonormal, so the noise
    keeps its variance)."""
    return tuple(min(r, max_rank) for r in tt_proposal(y, lambda s, L, M: edge_rank(s, L, M, sigma2), keep_small_cuts=False)[0])


def _left_ranks(around):
    """Ranks around the ring (``tr_proposal``: bond k joins cores k and k+1) as core k's left
    ranks (``Network.tr``'s order)."""
    return (around[-1], *around[:-1])


def tr_evbmf(y, max_rank):
    return tuple(min(r, max_rank) for r in _left_ranks(tr_proposal(y, "evbmf")))


def tr_mdl(y, max_rank):
    return tuple(min(r, max_rank) for r in _left_ranks(tr_proposal(y, "mdl")))


def cp_cv_grid(y, max_rank, folds=3, holdout=0.1, seed=0, observed=None):
    """The rank with the smallest mean held-out error of masked parafac over ``folds`` splits."""
    rng = np.random.default_rng(seed)
    base = np.ones(y.shape, dtype=bool) if observed is None else observed
    scores = {}
    splits = []
    for _ in range(folds):
        held = base & (rng.random(y.shape) < holdout)
        splits.append(held)
    for r in range(1, max_rank + 1):
        errs = []
        for held in splits:
            train = base & ~held
            est = fit_cp(y, r, observed=train, starts=1, iters=500)
            errs.append(float(np.linalg.norm((est - y)[held])))
        scores[r] = float(np.mean(errs))
    return (min(scores, key=scores.get),)


def cp_ard(y, max_rank, iters=300, tol=1e-7, a0=1e-6, b0=1e-6):
    """BCPF-style ARD for complete data: variational Bayes CP whose column precisions
    ``lambda_r`` switch off unneeded components. Returns the number of components whose
    energy share stays above 1e-6."""
    d = y.ndim
    shape = y.shape
    yn = y / np.sqrt(np.mean(y**2))
    # SVD start (leading singular vectors scaled), all R columns active
    factors = []
    for k in range(d):
        u, s, _ = np.linalg.svd(_unfold(yn, k), full_matrices=False)
        a = np.zeros((shape[k], max_rank))
        m = min(max_rank, u.shape[1])
        a[:, :m] = u[:, :m] * np.sqrt(s[:m]) ** (2.0 / d)
        factors.append(a)
    covs = [np.eye(max_rank) for _ in range(d)]
    lam = np.ones(max_rank)
    tau = 1.0
    ysq = float(np.sum(yn**2))
    n = yn.size
    prev = None
    letters = "abcdefghij"[:d]
    for _ in range(iters):
        for k in range(d):
            # E[B^T B]: Hadamard product of the other factors' second moments
            gram = np.ones((max_rank, max_rank))
            for j in range(d):
                if j != k:
                    gram *= factors[j].T @ factors[j] + shape[j] * covs[j]
            spec = letters + "," + ",".join(letters[j] + "r" for j in range(d) if j != k) + "->" + letters[k] + "r"
            mttkrp = np.einsum(spec, yn, *[factors[j] for j in range(d) if j != k], optimize=True)
            covs[k] = np.linalg.inv(tau * gram + np.diag(lam))
            factors[k] = tau * mttkrp @ covs[k]
        second = [f.T @ f + shape[k] * c for k, (f, c) in enumerate(zip(factors, covs))]
        lam = (a0 + 0.5 * sum(shape)) / (b0 + 0.5 * np.diag(sum(second)))
        spec = letters + "," + ",".join(letters[j] + "r" for j in range(d)) + "->"
        cross = float(np.einsum(spec, yn, *factors, optimize=True))
        had = np.ones((max_rank, max_rank))
        for sm in second:
            had *= sm
        err2 = ysq - 2 * cross + float(np.sum(had))
        tau = (1e-6 + 0.5 * n) / (1e-6 + 0.5 * max(err2, 1e-12))
        energy = np.prod([np.sum(f**2, axis=0) for f in factors], axis=0)
        if prev is not None and abs(err2 - prev) < tol * ysq:
            break
        prev = err2
    share = energy / max(energy.sum(), 1e-300)
    return (int(np.sum(share > 1e-6)),)


def tucker_cv_greedy(y, observed, max_rank, holdout=0.1, seed=0):
    """Completion: greedy per-mode rank increments judged on held-out observed entries."""
    rng = np.random.default_rng(seed)
    held = observed & (rng.random(y.shape) < holdout)
    train = observed & ~held

    def score(ranks):
        est = fit_tucker(y, ranks, observed=train)
        return float(np.linalg.norm((est - y)[held]))

    def feasible(trial):
        return all(r <= min(max_rank, n) and r <= math.prod(trial[:k] + trial[k + 1:])
                   for k, (r, n) in enumerate(zip(trial, y.shape)))

    ranks = [1] * y.ndim
    current = score(ranks)
    while True:
        # one mode up; where that is infeasible (a Tucker rank cannot exceed the product of
        # the others: from rank 1 nothing is), two modes up together
        trials = []
        for k in range(y.ndim):
            one = list(ranks)
            one[k] += 1
            if feasible(one):
                trials.append(one)
                continue
            for j in range(y.ndim):
                two = list(one)
                two[j] += j != k
                if j != k and feasible(two) and two not in trials:
                    trials.append(two)
        best = None
        for trial in trials:
            s = score(trial)
            if best is None or s < best[0]:
                best = (s, trial)
        if best is None or best[0] >= current:
            return tuple(ranks)
        current, ranks = best


def relative(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    if where is not None:
        a, b = a[where], b[where]
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def rank_error(got: Sequence[int], true: Sequence[int]) -> float:
    return float(np.mean(np.abs(np.asarray(got) - np.asarray(true))))
