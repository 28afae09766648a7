"""Start from a trained model: decompose its dense layers into tensorized MARS layers.

Each ``from_*`` constructor reads a trained ``torch.nn`` layer, decomposes its weight at the
maximal ranks (SVD for low-rank and Tucker-2; TT-SVD, HOSVD through tensorly, and a
hierarchical SVD refined by CP-ALS for the matrix formats) and returns the tensorized layer
with those cores, its bias and its convolution settings. At ``rank="full"`` the new layer
computes the same function (to float rounding), for every format, in eval mode (a training
forward draws the masks, which drop an index now and then: :func:`set_warmup` keeps the
converted function while it is on); MARS fine-tuning then
selects the ranks. :func:`tensorize` does it for every matching layer of a model. Each new
layer keeps the relative error of its weight in ``conversion_error``, and a warning says
when it passes :data:`CONVERSION_WARNING` (the layer computes another function until
fine-tuned).

Weight layouts: ``nn.Linear`` stores ``(out, in)``, tnmars's matrix networks ``(in, out)``
(``y = x @ W``); a convolution's kernel matrix has rows ``(kh, kw, C_in)`` row-major.

``rank=None`` (default) picks the largest uniform rank whose layer has at most as many
parameters as the dense one; a float ``f`` in ``(0, 1]`` the largest with at most ``f`` times
as many (as tltorch's fractional ranks); ``"full"`` the ranks at which the decomposition is
exact for any weight (often larger than the dense layer: a warning says so); an int or a
sequence gives the ranks. For CP, ``None`` and a float never exceed the number of terms of
the weight's exact hierarchical-SVD decomposition (a larger CP rank cannot fit it better).

A CP fit below full rank is iterative, and at the default rank slow: a CP layer as large as
the dense one sits just below the generic CP rank of the reshaped weight, where alternating
least squares creeps (a
512 x 512 layer at rank 1365 took 83 s for 200 tensorly sweeps). So the fit starts from the
truncated hierarchical SVD, which already fits, and ALS gets as many sweeps as
:data:`CP_WORK` affords (a few seconds on one core); a bar shows sweeps that run past a
second, and a warning says when not one sweep fits the budget.

>>> import torch
>>> from torch import nn
>>> from tnmars.nn import TensorizedLinear
>>> dense = nn.Linear(12, 20)
>>> layer = TensorizedLinear.from_linear(dense, in_shape=(3, 4), out_shape=(4, 5), rank=12)
>>> x = torch.randn(5, 12)
>>> bool(torch.allclose(layer.eval()(x), dense(x), atol=1e-5))
True
"""
from __future__ import annotations

import copy
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from math import prod
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from .._checks import max_params
from .attention import PROJECTIONS, TensorizedMultiheadAttention
from .base import TensorizedLayer, replace_modules, warn_user
from .budget import allocate_ranks, weight_error
from .layers import (
    FORMATS,
    LowRankLinear,
    TensorizedConv2d,
    TensorizedEmbedding,
    TensorizedLinear,
    Tucker2Conv2d,
    _conv_geometry,
    matrix_params,
)

__all__ = ["from_linear", "lowrank_from_linear", "tucker2_from_conv", "from_conv", "from_embedding", "tensorize",
           "decompose_matrix", "merge_modes", "cp_terms", "cp_als", "cp_sweep_cost", "CP_WORK", "CP_MAX_SWEEPS",
           "CP_MAX_ELEMENTS"]

#: keyword arguments a converted layer passes on to its constructor (MARS settings and mode)
LAYER_OPTIONS = ("mars", "pi", "alpha", "temperature", "min_rank", "mode")
#: CP-ALS stops after at most this many sweeps (earlier when it has converged or stalled)
CP_MAX_SWEEPS = 200
#: the arithmetic CP-ALS may spend on one weight, in estimated floating-point operations (about
#: 2-5 s on one CPU core): the sweeps are ``min(CP_MAX_SWEEPS, CP_WORK // cost of one sweep)``,
#: a count that depends on the shapes only, so a conversion gives the same layer on any machine
CP_WORK = 5e10
#: no ALS sweep whose intermediates would hold more than this many float64 numbers (memory)
CP_MAX_ELEMENTS = 2e8
#: relative weight error of a converted layer above which a conversion (:func:`tensorize`, each
#: ``from_*``) warns that the layer now computes another function (fine-tuning is then needed)
CONVERSION_WARNING = 0.1
#: seconds a CP fit (or :func:`tensorize`) runs before its progress bar shows: short ones stay quiet
PROGRESS_DELAY = 1.0


# ------------------------------------------------------------------------------ ranks
def full_matrix_ranks(fmt: str, in_shape: Sequence[int], out_shape: Sequence[int]) -> list[int]:
    """The bond sizes at which a :func:`matrix_network` of ``fmt`` represents every matrix
    exactly (``rank="full"``): the TT ranks of the matricizations; for TR the same after a
    closing bond of 1 (core ``k``'s left rank first, as :func:`matrix_network` reads them); for Tucker the mode sizes (clipped); for CP the product of the merged
    mode sizes ``i_k o_k`` but the largest (every tensor has a CP decomposition with that many
    terms: the hierarchical SVD of :func:`cp_terms`).

    >>> full_matrix_ranks("cp", (8, 8, 8), (8, 8, 8)), full_matrix_ranks("tt", (8, 8, 8), (8, 8, 8))
    ([4096], [64, 64])
    """
    sizes = [int(i) * int(o) for i, o in zip(in_shape, out_shape)]
    d = len(sizes)
    if fmt in ("tt", "tr"):
        ranks = [min(prod(sizes[:k + 1]), prod(sizes[k + 1:])) for k in range(d - 1)]
        return [1] + ranks if fmt == "tr" else ranks
    if fmt == "tucker":
        return [min(n, prod(sizes[:k] + sizes[k + 1:])) if d > 1 else n for k, n in enumerate(sizes)]
    if fmt == "cp":
        return [prod(sizes) // max(sizes)]
    raise ValueError(f"unknown format {fmt!r}; use one of {FORMATS}")


def budget_rank(params_at: Callable[[int], int], dense: int, rank: Any, ceiling: int) -> Any:
    """``rank`` unchanged if it is an int or a sequence; else the largest uniform rank ``r <=
    ceiling`` with ``params_at(r) <= fraction * dense`` (``rank=None``: fraction 1), at least 1."""
    if isinstance(rank, str):
        raise ValueError(f"rank must be an int, a sequence of ints, a float share, None or 'full'; got {rank!r}")
    if isinstance(rank, (bool, np.bool_)):
        raise TypeError(f"rank must be an int, a sequence of ints, a float share, None or 'full'; got {rank!r}")
    if rank is None:
        fraction = 1.0
    elif is_share(rank):
        fraction = float(rank)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"a fractional rank is the share of the dense layer's parameters, in (0, 1]; got {rank}")
    else:
        return rank
    best, lo, hi = 1, 1, max(int(ceiling), 1)
    while lo <= hi:  # params_at grows with r
        mid = (lo + hi) // 2
        if params_at(mid) <= fraction * dense:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    if rank is not None and params_at(best) > fraction * dense:
        warn_user(f"a rank share of {fraction:g} cannot be met: rank 1 already has {params_at(best):,} parameters, "
                  f"more than {fraction:g} x {dense:,} of the dense layer; the layer is built at rank 1")
    return best


RANK_FORMS = "an int, a sequence of ints (one per bond), a float share in (0, 1], None or 'full'"


def check_rank_argument(rank: Any, who: str) -> None:
    """Refuse a ``rank`` no layer can take before any layer is converted: checked per layer, a
    typo (``rank="Full"``) or a share above 1 made every layer "left dense" with a warning, and
    the model came back unchanged."""
    if rank is None or (isinstance(rank, str) and rank == "full"):
        return
    if isinstance(rank, str):
        raise ValueError(f"{who}: rank must be {RANK_FORMS}; got {rank!r}")
    if isinstance(rank, (bool, np.bool_)):
        raise TypeError(f"{who}: rank must be {RANK_FORMS}; got {rank!r}")
    if isinstance(rank, Mapping):
        raise TypeError(f"{who}: rank must be {RANK_FORMS}; got a mapping {dict(rank)!r} (ranks by bond name belong "
                        "to one layer: give them as a list in the order of that layer's .ranks)")
    if is_share(rank) and not 0.0 < float(rank) <= 1.0:
        raise ValueError(f"{who}: a fractional rank is the share of each dense layer's parameters, in (0, 1]; got {rank}")
    # an int, or ranks per bond: below 1 no layer can take it (checked per layer, rank=0 left every
    # layer dense with a warning each, and the model came back unchanged)
    values = [rank] if isinstance(rank, (int, np.integer)) else (
        list(rank) if isinstance(rank, (list, tuple)) and all(isinstance(r, (int, np.integer)) for r in rank) else [])
    if any(int(r) < 1 and not isinstance(r, (bool, np.bool_)) for r in values):
        raise ValueError(f"{who}: rank must be >= 1 on every bond; got {rank!r}")


def is_share(rank: Any) -> bool:
    """Whether ``rank`` is a fractional rank (a Python or NumPy float), not an int or ranks."""
    return isinstance(rank, (float, np.floating))


def _matrix_rank(fmt: str, shapes: tuple[Sequence[int], Sequence[int]], rank: Any, dense: int,
                 cp_count: int | None = None) -> Any:
    """The ranks for a matrix layer: as given, ``"full"``, or the budget's uniform rank clipped
    per bond to what the format can use (so no clipping warning for a rank the user did not give).
    For CP the budget's rank is also clipped to ``cp_count``, the number of terms of the
    weight's exact hierarchical SVD (:func:`cp_terms`): past it, more indices are zero
    columns that cost parameters and fit nothing better."""
    if rank == "full":
        return full_matrix_ranks(fmt, *shapes)
    if rank is not None and not is_share(rank):
        return rank
    r = budget_rank(lambda r: matrix_params(fmt, *shapes, r), dense, rank, ceiling=dense)
    if fmt in ("tt", "tucker"):
        return [min(r, n) for n in full_matrix_ranks(fmt, *shapes)]
    if fmt == "cp" and cp_count:  # (a zero weight has no terms: the budget's rank, all of it trainable)
        return max(1, min(r, cp_count))
    return r


def _fit_matrix(fmt: str, shapes: tuple[Sequence[int], Sequence[int]], rank: Any, dense: int, matrix: np.ndarray,
                build: Callable[[Any], nn.Module], progress: bool | None) -> nn.Module:
    """The layer ``build(ranks)`` at the ranks :func:`_matrix_rank` picks, its cores fitted to
    ``matrix`` (the weight in the layer's ``(in, out)`` layout). For CP the hierarchical SVD is
    computed once, for the rank and for the fit, at float64 rounding whatever the weight's dtype:
    a half precision weight's values are exact in float64, so none of its terms is rounding (at
    bfloat16's precision the cut would drop real terms, 250 of 256 for a 64 x 64 layer)."""
    terms = cp_terms(merge_modes(matrix, *shapes)) if fmt == "cp" else None
    layer = build(_matrix_rank(fmt, shapes, rank, dense, None if terms is None else len(terms[0])))
    _copy_into(layer, decompose_matrix(matrix, fmt, *shapes, _core_shapes(layer), progress=progress, terms=terms))
    return layer


# ------------------------------------------------------------------------------ decompositions
def merge_modes(w: np.ndarray, in_shape: Sequence[int], out_shape: Sequence[int]) -> np.ndarray:
    """The matrix ``w`` (``prod(in_shape) x prod(out_shape)``) as the tensor ``(i_1 o_1, ...,
    i_d o_d)`` (float64) whose decompositions give a :func:`matrix_network`'s cores."""
    in_shape, out_shape = tuple(in_shape), tuple(out_shape)
    d = len(in_shape)
    t = np.asarray(w, dtype=np.float64).reshape(in_shape + out_shape)
    return t.transpose([a for k in range(d) for a in (k, d + k)]).reshape([i * o for i, o in zip(in_shape, out_shape)])


def decompose_matrix(w: np.ndarray, fmt: str, in_shape: Sequence[int], out_shape: Sequence[int],
                     core_shapes: Sequence[Sequence[int]], *, eps: float = float(np.finfo(np.float64).eps),
                     progress: bool | None = None,
                     terms: tuple[np.ndarray, list[np.ndarray]] | None = None) -> list[np.ndarray]:
    """Cores (float64) of shapes ``core_shapes`` in the layout of
    :func:`tnmars.nn.layers.matrix_network` ``(fmt, in_shape, out_shape)``, fitted to the matrix
    ``w`` (``prod(in_shape) x prod(out_shape)``).

    The matrix is reshaped to ``in_shape + out_shape`` and regrouped as ``(i_1 o_1, ..., i_d
    o_d)`` (:func:`merge_modes`); its TT-SVD / HOSVD (+ HOOI, tensorly) / CP fit gives the
    cores, and each merged mode is split back into ``(i_k, o_k)``. A tensor ring starts as the
    TT-SVD chain closed through index 0 of its closing bond. Rank slices the SVD cannot fill are
    zero (the function is unchanged; the copy into a layer makes them trainable,
    :func:`_trainable`). TT, TR and Tucker are exact when the ranks are large enough. CP is exact when its rank is at least the number of terms of the exact hierarchical
    SVD (:func:`cp_terms`; terms below ``eps`` times the weight's norm, scaled by the largest
    mode, are rounding and dropped), always at ``rank="full"``; below it, the largest terms are
    refined by CP-ALS (:func:`cp_als`) within :data:`CP_WORK`. ``progress``: a bar for ALS
    sweeps that run past a second (``None``: unless ``TQDM_DISABLE`` is set). ``terms``: the
    :func:`cp_terms` of the merged matrix when the caller has them already (not recomputed).
    """
    import tensorly as tl
    from tensorly.decomposition import tucker

    in_shape, out_shape = tuple(in_shape), tuple(out_shape)
    d = len(in_shape)
    merged = merge_modes(w, in_shape, out_shape)
    shapes = [tuple(int(n) for n in s) for s in core_shapes]
    if fmt == "cp":
        factors = _cp_factors(merged, shapes[0][-1], cp_terms(merged, eps) if terms is None else terms, progress)
        cores = [f.reshape(i, o, f.shape[1]) for f, i, o in zip(factors, in_shape, out_shape)]
        return [_zero_pad(c, s) for c, s in zip(cores, shapes)]
    with tl.backend_context("numpy"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Trying to compute SVD with n_eigenvecs")  # rank > a mode size
        if fmt in ("tt", "tr"):
            # TT-SVD; a ring gets the chain in index 0 of its closing bond (exact whenever the
            # chain's ranks suffice; the other closing indices start at zero)
            tt_ranks = [shapes[k][-1] for k in range(d - 1)]
            cores = _tt_svd(merged, tt_ranks)
            cores = [c.reshape(c.shape[0], i, o, c.shape[-1]) for c, i, o in zip(cores, in_shape, out_shape)]
            if fmt == "tt":
                cores[0] = cores[0][0]
                cores[-1] = cores[-1][..., 0]
        elif fmt == "tucker":
            if not merged.any():  # (HOOI's error ratios divide by the zero norm: ten numpy warnings)
                warnings.filterwarnings("ignore", message="invalid value encountered", category=RuntimeWarning)
            core, factors = tucker(merged, rank=list(shapes[0]), init="svd", n_iter_max=10)
            cores = [np.asarray(core)] + [np.asarray(f).reshape(i, o, -1)
                                          for f, i, o in zip(factors, in_shape, out_shape)]
        else:
            raise ValueError(f"unknown format {fmt!r}; use one of {FORMATS}")
    return [_zero_pad(c, s) for c, s in zip(cores, shapes)]


# ------------------------------------------------------------------------------ CP
def cp_terms(x: np.ndarray, eps: float = float(np.finfo(np.float64).eps)) -> tuple[np.ndarray, list[np.ndarray]]:
    """An exact CP decomposition of ``x``: weights (descending) and unit-column factors
    ``(n_k, T)``, ``x = sum_t weights[t] * outer(factors[0][:, t], ..., factors[-1][:, t])``.

    Hierarchical SVD: the smallest mode is split off by an SVD, each right singular vector
    (a tensor of the remaining modes) is split the same way, down to the last two modes. So
    ``T`` is at most the product of the mode sizes but the largest, and the terms are
    mutually orthogonal: keeping the ``R`` largest leaves an error of exactly the norm of the
    others, which makes them the starting point of a rank-``R`` fit. Terms whose weight is at
    most ``eps * max(x.shape) * ||x||`` (rounding, as ``numpy.linalg.matrix_rank`` judges it)
    are dropped: ``T`` is the CP rank past which a layer cannot fit ``x`` any better.

    >>> rng = np.random.default_rng(0)
    >>> a, b, c = rng.standard_normal((3, 5, 2))
    >>> x = np.einsum("ir,jr,kr->ijk", a, b, c)     # CP rank 2
    >>> weights, factors = cp_terms(x)
    >>> len(weights) <= 4, bool(np.allclose(np.einsum("r,ir,jr,kr->ijk", weights, *factors), x))
    (True, True)
    """
    x = np.asarray(x, dtype=np.float64)
    d = x.ndim
    tol = eps * max(x.shape) * float(np.linalg.norm(x))
    if tol == 0.0:  # x == 0: no terms
        return np.zeros(0), [np.zeros((n, 0)) for n in x.shape]
    order = sorted(range(d), key=lambda k: x.shape[k])  # smallest first: at most prod / max terms
    rest = x.transpose(order).reshape((1,) + tuple(x.shape[k] for k in order))
    weights = np.ones(1)
    vectors: dict[int, np.ndarray] = {}  # mode -> (terms, n_mode)
    for k in order[:-1]:
        terms, n = rest.shape[0], rest.shape[1]
        u, s, vt = np.linalg.svd(rest.reshape(terms, n, -1), full_matrices=False)
        m = s.shape[1]
        split = (weights[:, None] * s).ravel()
        keep = split > tol  # a dropped term's subtree weighs at most its own weight
        weights = split[keep]
        vectors = {j: np.repeat(v, m, axis=0)[keep] for j, v in vectors.items()}
        vectors[k] = u.transpose(0, 2, 1).reshape(terms * m, n)[keep]
        rest = vt.reshape((terms * m,) + rest.shape[2:])[keep]
    last = rest.reshape(rest.shape[0], -1)
    norms = np.linalg.norm(last, axis=1)  # 1 after an SVD; the norm of x when d == 1
    weights = weights * norms
    keep = weights > tol
    vectors[order[-1]] = last / np.where(norms > 0, norms, 1.0)[:, None]
    rank = np.argsort(-weights[keep], kind="stable")
    return weights[keep][rank], [vectors[k][keep][rank].T.copy() for k in range(d)]


def cp_als(x: np.ndarray, factors: list[np.ndarray], sweeps: int, *, bar: Any = None) -> tuple[list[np.ndarray], float]:
    """Alternating least squares for ``x ~ sum_r outer(factors[0][:, r], ...)`` from
    ``factors`` (``(n_k, R)``, updated in place): at most ``sweeps`` sweeps, fewer once the
    relative error stops falling (by less than ``1e-10`` of itself) or reaches rounding.
    Returns the factors and the relative error ``||x - fit|| / ||x||``.

    Each mode's product of the unfolding with the other factors' Khatri-Rao product is
    contracted mode by mode, the largest first by a GEMM, so the Khatri-Rao matrix (as large
    as ``x`` times ``R / n_k``) is never formed; the normal equations are solved by Cholesky;
    the error comes from the Gram matrices without rebuilding the tensor (rebuilt only near
    rounding, where the short formula cancels). ``bar`` (tqdm) advances once per sweep.
    """
    d = x.ndim
    norm2 = float(np.vdot(x, x))
    grams = [f.T @ f for f in factors]
    error = np.inf
    for _ in range(sweeps):
        for k in range(d):
            mttkrp = _mttkrp(x, factors, k)
            v = np.ones_like(grams[0])
            for j in range(d):
                if j != k:
                    v *= grams[j]
            factors[k] = _spd_solve(v, mttkrp.T).T
            grams[k] = factors[k].T @ factors[k]
        residual2 = norm2 - 2.0 * float(np.vdot(mttkrp, factors[-1])) + float(np.vdot(v, grams[-1]))
        new = np.sqrt(max(residual2, 0.0) / norm2) if norm2 > 0 else 0.0
        if new < 1e-6 and norm2 > 0:  # the short formula has lost its digits: measure
            new = float(np.linalg.norm(x - _cp_full(factors))) / np.sqrt(norm2)
        if bar is not None:
            bar.set_postfix_str(f"error {new:.4g}", refresh=False)
            bar.update()
        stalled = np.isfinite(error) and error - new <= 1e-10 * error
        error = new
        if stalled or error <= 1e-13:
            break
    if not np.isfinite(error):  # no sweep run
        error = float(np.linalg.norm(x - _cp_full(factors)) / np.sqrt(norm2)) if norm2 > 0 else 0.0
    return factors, float(error)


def cp_sweep_cost(shape: Sequence[int], rank: int) -> tuple[float, float]:
    """Estimated floating-point operations of one :func:`cp_als` sweep on a tensor of
    ``shape`` at ``rank`` (per mode: the GEMM ``2 N R``, the Cholesky ``R^3 / 3``, its solve
    and the Gram matrix ``4 n_k R^2``, and a fixed ``2e7`` for the calls around them), and
    the float64 numbers its largest intermediates hold."""
    n, r = prod(shape), int(rank)
    flops = sum(2.0 * n * r + r ** 3 / 3.0 + 4.0 * nk * r * r + 2e7 for nk in shape)
    second = sorted(shape)[-2] if len(shape) > 1 else shape[0]  # the mode contracted first for the largest
    return flops, n / second * r + 4.0 * r * r


def _cp_factors(x: np.ndarray, rank: int, terms: tuple[np.ndarray, list[np.ndarray]],
                progress: bool | None) -> list[np.ndarray]:
    """``(n_k, R')`` factors with ``R' <= rank`` (the caller pads): the exact hierarchical SVD
    ``terms`` of ``x`` when it has at most ``rank`` terms, else its ``rank`` largest terms
    refined by ALS within :data:`CP_WORK`; the scale is spread evenly over the factors."""
    weights, factors = terms
    if len(weights) == 0:  # a zero weight: unit vectors and one zero factor, so the cores still train
        factors = [np.eye(n, 1) for n in x.shape]
        factors[0][:] = 0.0
        return factors
    if len(weights) <= rank:
        return _balanced(weights, factors)
    weights, factors = weights[:rank], [f[:, :rank].copy() for f in factors]
    flops, elements = cp_sweep_cost(x.shape, rank)
    sweeps = 0 if elements > CP_MAX_ELEMENTS else int(min(CP_MAX_SWEEPS, CP_WORK // flops))
    if sweeps == 0:
        # the terms are orthogonal: the dropped ones' weights are the error
        start_error = float(np.sqrt(max(1.0 - np.sum(weights ** 2) / max(float(np.vdot(x, x)), 1e-300), 0.0)))
        limit = (f"hold {elements:.1e} float64 numbers, more than tnmars.nn.convert.CP_MAX_ELEMENTS = "
                 f"{CP_MAX_ELEMENTS:.0e}" if elements > CP_MAX_ELEMENTS else
                 f"take about {flops:.1e} floating-point operations, more than tnmars.nn.convert.CP_WORK = "
                 f"{CP_WORK:.0e}")
        warn_user(f"CP rank {rank} on the {x.shape} tensor of the weight: one ALS sweep would {limit}; the layer "
                  f"starts from the {rank} largest terms of the weight's hierarchical SVD (relative weight error "
                  f"{start_error:.3g}). Give a smaller rank for an ALS fit, or raise that limit")
        return _balanced(weights, factors)
    from tqdm.auto import tqdm

    from ..fitting.progress import progress_enabled

    factors[0] = factors[0] * weights[None, :]
    with tqdm(total=sweeps, desc=f"CP-ALS rank {rank}", unit="sweep", delay=PROGRESS_DELAY, leave=False,
              disable=not progress_enabled(progress)) as bar:
        factors, _ = cp_als(x, factors, sweeps, bar=bar)
    return _balanced(np.ones(rank), factors)


def _balanced(weights: np.ndarray, factors: list[np.ndarray]) -> list[np.ndarray]:
    """The factors with ``weights`` multiplied in and every column's scale spread evenly over
    the modes (geometric mean of the column norms), so no core starts orders larger than another."""
    norms = [np.linalg.norm(f, axis=0) for f in factors]
    scale = (np.abs(weights) * np.prod(norms, axis=0)) ** (1.0 / len(factors))
    out = [f / np.where(nr > 0, nr, 1.0) * scale for f, nr in zip(factors, norms)]
    out[0] = out[0] * np.sign(weights)
    return out


def _mttkrp(x: np.ndarray, factors: list[np.ndarray], k: int) -> np.ndarray:
    """``x``'s mode-``k`` unfolding times the Khatri-Rao product of the other factors,
    ``(n_k, R)``: the largest other mode contracted by a GEMM, the rest elementwise."""
    others = sorted((j for j in range(x.ndim) if j != k), key=lambda j: -x.shape[j])
    y = np.tensordot(x, factors[others[0]], axes=([others[0]], [0]))  # modes but others[0], then R
    labels = [j for j in range(x.ndim) if j != others[0]]
    for j in others[1:]:
        a = labels.index(j)
        y = np.einsum(y, list(range(y.ndim)), factors[j], [a, y.ndim - 1],
                      [b for b in range(y.ndim) if b != a])
        labels.pop(a)
    return y


def _spd_solve(v: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``v^{-1} b`` for the positive semi-definite ``v`` (Cholesky, with a ridge of ``1e-12``
    of its mean diagonal; least squares if even that fails)."""
    import scipy.linalg

    ridge = 1e-12 * float(np.trace(v)) / len(v) + np.finfo(np.float64).tiny
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(v + ridge * np.eye(len(v)), check_finite=False), b,
                                      check_finite=False)
    except np.linalg.LinAlgError:
        return scipy.linalg.lstsq(v, b, check_finite=False)[0]


def _cp_full(factors: list[np.ndarray]) -> np.ndarray:
    letters = "abcdefghijklm"[:len(factors)]
    return np.einsum(",".join(c + "z" for c in letters) + "->" + letters, *factors, optimize="greedy")


def _tt_svd(x: np.ndarray, ranks: Sequence[int]) -> list[np.ndarray]:
    """TT-SVD (Oseledets 2011) with economy SVDs: cores ``(r_{k-1}, n_k, r_k)``, each internal
    rank at most ``ranks[k]`` (fewer where the unfolding's rank is lower)."""
    shape = x.shape
    cores, rest, r_prev = [], x.reshape(1, -1), 1
    for k, n in enumerate(shape[:-1]):
        u, sv, vt = np.linalg.svd(rest.reshape(r_prev * n, -1), full_matrices=False)
        r = min(int(ranks[k]), len(sv))
        cores.append(u[:, :r].reshape(r_prev, n, r))
        rest, r_prev = sv[:r, None] * vt[:r], r
    cores.append(rest.reshape(r_prev, shape[-1], 1))
    return cores


def _zero_pad(core: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if core.shape == shape:
        return core
    if len(core.shape) != len(shape) or any(a > b for a, b in zip(core.shape, shape)):
        raise AssertionError(f"decomposed core of shape {core.shape} does not fit the layer's {shape}")
    out = np.zeros(shape)
    out[tuple(slice(0, n) for n in core.shape)] = core
    return out


def _core_shapes(layer: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(c.shape) for c in layer.cores]


def _copy_into(layer: nn.Module, cores: Sequence[np.ndarray]) -> None:
    cores = _trainable(layer, cores)
    with torch.no_grad():
        for param, core in zip(layer.cores, cores):
            if tuple(param.shape) != tuple(core.shape):
                raise AssertionError(f"decomposed core has shape {core.shape}, the layer's {tuple(param.shape)}")
            param.copy_(torch.as_tensor(core, dtype=param.dtype, device=param.device))


def _trainable(layer: nn.Module, cores: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``cores`` with every bond index that is zero in all the cores it joins made trainable,
    computing the same function exactly.

    Such an index (a rank slice the weight's decomposition cannot fill: a zero or exactly
    low-rank weight, a rank above the weight's) is a saddle point: each core's slice is
    multiplied by the others' zeros, so neither gets a gradient and fine-tuning can never use
    it (a zero-initialised ``nn.Linear`` made a ``LowRankLinear`` that stayed zero for good).
    Its slices take the layer's fresh random initialisation in every core but the last on the
    bond, which stays zero: every term through the index still has a zero factor, and that last
    slice now gets a gradient. When a whole bond is such indices the weight is zero: the cores
    are then the layer's fresh initialisation with the last core zero."""
    bond_axes = getattr(layer, "bond_axes", None)
    if not bond_axes:
        return list(cores)
    dead: dict[str, np.ndarray] = {}
    for bond, places in bond_axes.items():
        if len(places) < 2:
            continue
        zero = None
        for k, axis in places:
            c = np.asarray(cores[k])
            empty = ~np.any(np.moveaxis(c, axis, 0).reshape(c.shape[axis], -1) != 0, axis=1)
            zero = empty if zero is None else zero & empty
        if zero is not None and zero.any():
            dead[bond] = zero
    if not dead:
        return list(cores)
    fresh = [p.detach().double().cpu().numpy() for p in layer.cores]
    if any(zero.all() for zero in dead.values()):  # a zero weight: nothing of the decomposition to keep
        return fresh[:-1] + [np.zeros_like(fresh[-1])]
    out = [np.array(c, dtype=np.float64) for c in cores]

    def where(k: int, axis: int, zero: np.ndarray) -> tuple:
        index: list[Any] = [slice(None)] * out[k].ndim
        index[axis] = zero
        return tuple(index)

    for bond, zero in dead.items():
        for k, axis in bond_axes[bond][:-1]:
            at = where(k, axis, zero)
            out[k][at] = np.where(out[k][at] == 0, fresh[k][at], out[k][at])
    for bond, zero in dead.items():  # (after every fill: a slice filled for another bond is zeroed again)
        k, axis = bond_axes[bond][-1]
        out[k][where(k, axis, zero)] = 0.0
    return out


def _copy_bias(layer: nn.Module, bias: torch.Tensor | None) -> None:
    if bias is None:
        return
    with torch.no_grad():
        layer.bias.copy_(bias.detach().to(layer.bias.dtype))


def _options(kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = set(kwargs) - set(LAYER_OPTIONS)
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}; the layer options are {LAYER_OPTIONS}")
    return kwargs


def _quiet(build: Callable[[], nn.Module]) -> nn.Module:
    """Build a layer whose size warning is issued by the caller (once, with the final ranks)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*more than the dense.*")
        return build()


def _check_type(module: Any, cls: type, what: str) -> None:
    if not isinstance(module, cls):
        raise TypeError(f"{what} needs a torch.nn.{cls.__name__}; got {type(module).__name__}")


def _finite_weight(module: nn.Module, what: str) -> torch.Tensor:
    """``module.weight`` (detached), after checking that it and the bias are finite: a NaN or
    an infinity would otherwise surface as "SVD did not converge" from the decomposition, or
    as a layer that outputs NaN."""
    if getattr(module.weight, "is_meta", False):
        raise ValueError(f"{what}: the {type(module).__name__} is on the meta device, which holds shapes but no "
                         "values, and a decomposition needs its weight: load the weights first (to_empty, then "
                         "load_state_dict), or build the tensorized layer itself under the meta device")
    for name in ("weight", "bias"):
        t = getattr(module, name, None)
        if t is not None and not bool(torch.isfinite(t.detach()).all()):
            bad = int((~torch.isfinite(t.detach())).sum())
            raise ValueError(f"{what}: the {type(module).__name__}'s {name} has {bad} NaN or infinite "
                             f"entr{'y' if bad == 1 else 'ies'}; a decomposition of it would be meaningless")
    return module.weight.detach()


#: how a conversion says that a layer's masks start closed (tensorize gathers these by layer name)
START_CLOSED = "its masks start closed"


def _inherit_modes(layer: nn.Module, source: nn.Module) -> None:
    """What the user set on the layer being replaced carries over: its train or eval mode (a
    replacement left in training mode would draw random masks under a model in ``eval()``) and
    which of its parameters are frozen. A frozen weight freezes the cores and removes the
    masks (frozen logits that start closed, as a negative ``alpha`` starts them, would cut the
    layer to ``min_rank`` for good): the layer keeps the ranks it was decomposed at. A frozen
    bias stays frozen. A layer in eval mode whose masks start closed (a negative ``alpha``: the
    paper's presets) is said to compute at ``min_rank`` until trained (not that MARS closed it)."""
    with warnings.catch_warnings():  # (nothing was trained: the closed start is said below)
        warnings.filterwarnings("ignore", message=".*(MARS closed every index|every mask of bond)")
        layer.train(source.training)
    masks = getattr(layer, "masks", None)
    closed = masks.closed_bonds() if masks is not None and not layer.training else []
    if closed:
        warn_user(f"{type(layer).__name__}: {START_CLOSED} (alpha={masks.alpha:g}): in eval mode, until trained, it "
                  f"computes at rank {masks.min_rank} on bond(s) {closed} (the paper's 'soft' and 'hard' presets start "
                  "closed and train with a warm-up, see set_warmup; the default mars=True starts open)", RuntimeWarning)
    weight = getattr(source, "weight", None)
    if isinstance(weight, torch.Tensor) and not weight.requires_grad:
        for p in layer.cores:
            p.requires_grad_(False)
        layer.masks = None
    bias = getattr(source, "bias", None)
    if isinstance(bias, torch.Tensor) and not bias.requires_grad and getattr(layer, "bias", None) is not None:
        layer.bias.requires_grad_(False)


def _warn_size(layer: nn.Module) -> None:
    if layer.num_params > layer.dense_size:
        warn_user(f"{type(layer).__name__} at ranks {layer.max_ranks} has {layer.num_params:,} parameters, more "
                  f"than the dense layer's {layer.dense_size:,}")


#: how a conversion says that it changed a layer's weight (tensorize and from_attention gather these)
CHANGED_WEIGHT = "changed the weight by"


def _report_conversion(layer: nn.Module, source: nn.Module, what: str) -> None:
    """Record in ``layer.conversion_error`` how far the decomposed weight (at the MAP masks) is
    from ``source``'s, relative to it, and warn past :data:`CONVERSION_WARNING`: the layer then
    computes another function until fine-tuned, which the default rank (at most the dense
    layer's parameters) gives for most weights (a 16 x 8 x 3 x 3 convolution with random
    weights moved by 32%, its outputs by up to 0.7, without a word). Masks that start closed
    are said by :data:`START_CLOSED` instead (their MAP weight is cut until trained: not a
    conversion error)."""
    error = layer.conversion_error = math.sqrt(weight_error(source, layer))
    masks = getattr(layer, "masks", None)
    if error <= CONVERSION_WARNING or (masks is not None and masks.closed_bonds()):
        return
    frozen = not source.weight.requires_grad
    warn_user(f"{what} {CHANGED_WEIGHT} {error:.0%} (relative error of the weight at ranks {dict(layer.max_ranks)}): "
              "the layer no longer computes the dense layer's function. "
              + ("Its weight was frozen (requires_grad=False), so its cores are frozen too and fine-tuning will NOT "
                 "recover it: unfreeze the weight first, or give a larger rank (rank='full': exact)" if frozen else
                 "Fine-tune it (MarsLoss) to recover, or give rank='full' for an exact conversion")
              + "; the error is in its conversion_error attribute")


def changed_weights_message(who: str, changed: Mapping[str, float], frozen: bool = False) -> str:
    """One warning for the layers of a conversion whose weights moved past
    :data:`CONVERSION_WARNING` (name -> relative error), frozen or not."""
    moved = ", ".join(f"{n!r} by {e:.0%}" for n, e in changed.items())
    if frozen:
        return (f"{who} changed the weights of the frozen layers {moved} (relative error at their new ranks): their "
                "weights were frozen (requires_grad=False), so their cores are frozen too and fine-tuning will NOT "
                "recover them. Unfreeze them before converting, leave them dense, or give them a larger rank "
                "(rank='full': exact)")
    return (f"{who} changed the weights of {moved} (relative error of each layer's weight at its new ranks): the "
            "model no longer computes the same function. Fine-tune it (MarsLoss) to recover, or give rank='full' for "
            "an exact conversion; each new layer's error is in its conversion_error attribute")


# ------------------------------------------------------------------------------ linear
def linear_shapes(n_in: int, n_out: int, format: str, in_shape: Sequence[int] | None = None,
                  out_shape: Sequence[int] | None = None, *, d: int | None = None, dtype: torch.dtype | None = None,
                  device: Any = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The factorisations ``(in_shape, out_shape)`` of a ``TensorizedLinear(n_in, n_out, format)``
    (the given ones, checked, or the layer's defaults): the budgets of :func:`_matrix_rank` are
    counted on them. Read from a quiet rank-1 layer, so that they are the constructor's own."""
    probe = _quiet(lambda: TensorizedLinear(n_in, n_out, format, 1, in_shape, out_shape, d=d, mars=False,
                                            dtype=dtype, device=device))
    return probe.in_shape, probe.out_shape


def linear_ranks(n_in: int, n_out: int, format: str, rank: Any, *, d: int | None = None) -> Any:
    """``rank`` for a fresh ``TensorizedLinear(n_in, n_out, format)`` as :func:`from_linear`
    reads it: ``"full"`` the ranks at which any weight is exact, a float share of the dense
    parameters the budget's uniform rank, anything else unchanged (the constructor takes it)."""
    if rank != "full" and not is_share(rank):
        return rank
    return _matrix_rank(format, linear_shapes(n_in, n_out, format, d=d), rank, n_in * n_out)


def from_linear(linear: nn.Linear, format: str = "tt", rank: Any = None, in_shape: Sequence[int] | None = None,
                out_shape: Sequence[int] | None = None, *, d: int | None = None, progress: bool | None = None,
                **options: Any) -> TensorizedLinear:
    """:meth:`TensorizedLinear.from_linear`: ``linear``'s weight decomposed in ``format``
    (``progress``: a bar for a CP fit that runs past a second, see :func:`decompose_matrix`)."""
    _check_type(linear, nn.Linear, "TensorizedLinear.from_linear")
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; use one of {FORMATS}")
    options = _options(options)
    w = _finite_weight(linear, "TensorizedLinear.from_linear")
    n_in, n_out = linear.in_features, linear.out_features
    shapes = linear_shapes(n_in, n_out, format, in_shape, out_shape, d=d, dtype=w.dtype, device=w.device)

    def build(ranks: Any) -> TensorizedLinear:
        return _quiet(lambda: TensorizedLinear(n_in, n_out, format, ranks, *shapes, bias=linear.bias is not None,
                                               dtype=w.dtype, device=w.device, **options))

    layer = _fit_matrix(format, shapes, rank, n_in * n_out, w.t().double().cpu().numpy(), build, progress)
    _copy_bias(layer, linear.bias)
    _inherit_modes(layer, linear)
    _warn_size(layer)
    _report_conversion(layer, linear, "TensorizedLinear.from_linear")
    return layer


def lowrank_from_linear(linear: nn.Linear, rank: Any = None, **options: Any) -> LowRankLinear:
    """:meth:`LowRankLinear.from_linear`: ``W = U V`` from the SVD of ``linear``'s weight, the
    singular values split evenly between ``U`` and ``V``."""
    _check_type(linear, nn.Linear, "LowRankLinear.from_linear")
    options = _options(options)
    n_in, n_out = linear.in_features, linear.out_features
    rank = min(n_in, n_out) if rank == "full" else rank
    rank = budget_rank(lambda r: r * (n_in + n_out), n_in * n_out, rank, ceiling=min(n_in, n_out))
    if not isinstance(rank, (int, np.integer)):
        raise TypeError(f"LowRankLinear has one bond: rank must be an int, a float share or None; got {rank!r}")
    if rank > min(n_in, n_out):  # (as the matrix formats clip theirs: rank 1000 of a 24x30 weight built 54,000 parameters)
        warn_user(f"LowRankLinear rank {rank} clipped to {min(n_in, n_out)}, the rank a {n_in}x{n_out} weight can have")
        rank = min(n_in, n_out)
    w = _finite_weight(linear, "LowRankLinear.from_linear")
    layer = _quiet(lambda: LowRankLinear(n_in, n_out, rank=int(rank), bias=linear.bias is not None, dtype=w.dtype,
                                         device=w.device, **options))
    u, s, vt = np.linalg.svd(w.t().double().cpu().numpy(), full_matrices=False)
    r = min(int(rank), len(s))
    root = np.sqrt(s[:r])
    cu = np.zeros((n_in, int(rank)))
    cv = np.zeros((int(rank), n_out))
    cu[:, :r] = u[:, :r] * root
    cv[:r] = root[:, None] * vt[:r]
    _copy_into(layer, [cu, cv])
    _copy_bias(layer, linear.bias)
    _inherit_modes(layer, linear)
    _warn_size(layer)
    _report_conversion(layer, linear, "LowRankLinear.from_linear")
    return layer


# ------------------------------------------------------------------------------ convolutions
def _conv_settings(conv: nn.Conv2d, what: str) -> dict[str, Any]:
    _check_type(conv, nn.Conv2d, what)
    if conv.groups != 1:
        raise ValueError(f"{what}: grouped convolutions (groups={conv.groups}) have no tensorized counterpart")
    if conv.padding_mode != "zeros":
        raise ValueError(f"{what}: padding_mode={conv.padding_mode!r} is not supported (only 'zeros')")
    try:  # padding="same" / "valid" in whole pixels, checked before any decomposition runs
        _, stride, padding, dilation = _conv_geometry(conv.kernel_size, conv.stride, conv.padding, conv.dilation)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None
    return {"stride": stride, "padding": padding, "dilation": dilation, "bias": conv.bias is not None}


def tucker2_from_conv(conv: nn.Conv2d, rank: Any = None, **options: Any) -> Tucker2Conv2d:
    """:meth:`Tucker2Conv2d.from_conv`: the kernel's Tucker-2 decomposition over its channel
    modes (HOSVD: leading singular vectors of the two channel unfoldings, then the core)."""
    settings = _conv_settings(conv, "Tucker2Conv2d.from_conv")
    options = _options(options)
    k = _finite_weight(conv, "Tucker2Conv2d.from_conv")
    c_out, c_in, kh, kw = k.shape
    if rank == "full":
        rank = (c_in, c_out)
    if rank is None or is_share(rank):
        r = budget_rank(lambda r: c_in * min(r, c_in) + min(r, c_in) * min(r, c_out) * kh * kw + c_out * min(r, c_out),
                        c_out * c_in * kh * kw, rank, ceiling=max(c_in, c_out))
        rank = (min(r, c_in), min(r, c_out))
    layer = _quiet(lambda: Tucker2Conv2d(c_in, c_out, (kh, kw), rank=rank, dtype=k.dtype, device=k.device,
                                         **settings, **options))
    r1, r2 = layer.dims["A"], layer.dims["B"]
    kernel = k.double().cpu().numpy()
    u_out = _leading(kernel.reshape(c_out, -1), r2)                      # (C_out, r2)
    u_in = _leading(kernel.transpose(1, 0, 2, 3).reshape(c_in, -1), r1)  # (C_in, r1)
    core = np.einsum("oihw,oB,iA->ABhw", kernel, u_out, u_in)
    _copy_into(layer, [u_in, core, u_out])
    _copy_bias(layer, conv.bias)
    _inherit_modes(layer, conv)
    _warn_size(layer)
    _report_conversion(layer, conv, "Tucker2Conv2d.from_conv")
    return layer


def _leading(m: np.ndarray, r: int) -> np.ndarray:
    """The ``r`` leading left singular vectors of ``m`` (zero columns past its rank)."""
    u, _, _ = np.linalg.svd(m, full_matrices=False)
    out = np.zeros((m.shape[0], r))
    out[:, :min(r, u.shape[1])] = u[:, :r]
    return out


def from_conv(conv: nn.Conv2d, format: str = "tt", rank: Any = None, in_shape: Sequence[int] | None = None,
              out_shape: Sequence[int] | None = None, *, d: int = 3, progress: bool | None = None,
              **options: Any) -> TensorizedConv2d:
    """:meth:`TensorizedConv2d.from_conv`: the ``(kh kw C_in) x C_out`` kernel matrix decomposed in ``format``."""
    settings = _conv_settings(conv, "TensorizedConv2d.from_conv")
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; use one of {FORMATS}")
    options = _options(options)
    k = _finite_weight(conv, "TensorizedConv2d.from_conv")
    c_out, c_in, kh, kw = k.shape
    probe = _quiet(lambda: TensorizedConv2d(c_in, c_out, (kh, kw), 1, in_shape, out_shape, format=format, d=d,
                                            mars=False, dtype=k.dtype, device=k.device))
    shapes = (probe.in_shape, probe.out_shape)
    matrix = k.double().cpu().numpy().transpose(2, 3, 1, 0).reshape(kh * kw * c_in, c_out)

    def build(ranks: Any) -> TensorizedConv2d:
        return _quiet(lambda: TensorizedConv2d(c_in, c_out, (kh, kw), ranks, *shapes, format=format, d=d,
                                               dtype=k.dtype, device=k.device, **settings, **options))

    layer = _fit_matrix(format, shapes, rank, c_out * c_in * kh * kw, matrix, build, progress)
    _copy_bias(layer, conv.bias)
    _inherit_modes(layer, conv)
    _warn_size(layer)
    _report_conversion(layer, conv, "TensorizedConv2d.from_conv")
    return layer


# ------------------------------------------------------------------------------ embedding
def from_embedding(embedding: nn.Embedding, format: str = "tt", rank: Any = None,
                   voc_shape: Sequence[int] | None = None, emb_shape: Sequence[int] | None = None, *, d: int = 3,
                   progress: bool | None = None, **options: Any) -> TensorizedEmbedding:
    """:meth:`TensorizedEmbedding.from_embedding`: the table (zero-padded to ``prod(voc_shape)``
    rows) decomposed in ``format``; ``padding_idx`` is kept."""
    _check_type(embedding, nn.Embedding, "TensorizedEmbedding.from_embedding")
    if embedding.max_norm is not None:
        raise ValueError("TensorizedEmbedding.from_embedding: max_norm renormalises rows at lookup; a tensorized "
                         "table has no rows to renormalise")
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; use one of {FORMATS}")
    dropped = [name for name in ("sparse", "scale_grad_by_freq") if getattr(embedding, name, False)]
    if dropped:
        why = {"sparse": "the cores are shared by every row, so their gradients are dense",
               "scale_grad_by_freq": "the cores' gradients are not scaled by how often a row is looked up"}
        warn_user(f"TensorizedEmbedding.from_embedding: {' and '.join(f'{n}=True' for n in dropped)} not carried over: "
                  + "; ".join(why[n] for n in dropped))
    options = _options(options)
    w = _finite_weight(embedding, "TensorizedEmbedding.from_embedding")
    n, dim = w.shape
    pad = embedding.padding_idx
    if pad is not None and bool(w[pad].detach().abs().max() > 0):
        warn_user(f"TensorizedEmbedding.from_embedding: row padding_idx={pad} of the table is not zero (largest "
                  f"magnitude {float(w[pad].detach().abs().max()):.3g}), but a TensorizedEmbedding outputs zeros "
                  "there, as nn.Embedding's padding row starts: lookups of that index change. Zero the row first, or "
                  "convert without padding_idx")
    probe = _quiet(lambda: TensorizedEmbedding(n, dim, format, 1, voc_shape, emb_shape, d=d, mars=False,
                                               dtype=w.dtype, device=w.device))
    shapes = (probe.voc_shape, probe.emb_shape)
    table = np.zeros((prod(shapes[0]), dim))
    table[:n] = w.double().cpu().numpy()

    def build(ranks: Any) -> TensorizedEmbedding:
        return _quiet(lambda: TensorizedEmbedding(n, dim, format, ranks, *shapes, d=d,
                                                  padding_idx=embedding.padding_idx, dtype=w.dtype, device=w.device,
                                                  **options))

    layer = _fit_matrix(format, shapes, rank, n * dim, table, build, progress)
    _inherit_modes(layer, embedding)
    _warn_size(layer)
    _report_conversion(layer, embedding, "TensorizedEmbedding.from_embedding")
    return layer


# ------------------------------------------------------------------------------ whole models
def tensorize(model: nn.Module, filter: Callable[[str, nn.Module], bool] | Iterable[str] | None = None, *,
              linear: str | None = "tt", conv: str | None = "tucker2", embedding: str | None = "tt",
              attention: str | None = "tt", rank: Any = None, budget: int | str | None = None, inplace: bool = False,
              progress: bool | None = None, **options: Any) -> nn.Module:
    """Replace the ``nn.Linear``, ``nn.Conv2d``, ``nn.Embedding`` and ``nn.MultiheadAttention``
    layers of ``model`` by their decomposed tensorized counterparts (a copy unless ``inplace``).

    Parameters
    ----------
    filter:
        Which layers: a callable ``filter(name, module) -> bool`` or an iterable of module
        names (``dict(model.named_modules())`` keys); default every layer of the four types
        that can be converted (grouped convolutions, a ``padding="same"`` that pads unevenly
        (an odd ``dilation * (kernel_size - 1)``, as an even kernel gives; ``"valid"`` and
        every other ``"same"`` are converted, in whole pixels), a ``padding_mode`` other than
        ``"zeros"``, subclasses such as a
        ``MultiheadAttention``'s ``out_proj`` when the attention itself is not selected,
        layers whose weight or bias another module shares, such as tied input and output
        embeddings, and the layers inside a tnmars recurrent model (:class:`~tnmars.nn.LSTM`,
        :class:`~tnmars.nn.TanhRNN`, :class:`~tnmars.nn.LinearRNN`, or any module whose class
        sets ``tensorize_keeps_dense = True``: its stability projection reads and writes their
        dense weights) are skipped with a warning; named layers that cannot be converted,
        including modules of other types, raise before anything changes). A selected
        ``MultiheadAttention`` has all four of its projections converted.
    linear:
        ``"tt"``, ``"tr"``, ``"cp"``, ``"tucker"`` (:meth:`TensorizedLinear.from_linear`),
        ``"lowrank"`` (:meth:`LowRankLinear.from_linear`) or ``None`` (leave linears alone).
    conv:
        ``"tucker2"`` (:meth:`Tucker2Conv2d.from_conv`), a matrix format
        (:meth:`TensorizedConv2d.from_conv`) or ``None``.
    embedding:
        A matrix format (:meth:`TensorizedEmbedding.from_embedding`) or ``None``.
    attention:
        The format of the query, key, value and output projections of each
        ``nn.MultiheadAttention``, which becomes a
        :class:`~tnmars.nn.TensorizedMultiheadAttention` (as ``linear``; ``None`` leaves
        attention dense). Its projections are converted like linear layers (``rank``,
        ``budget``, the warnings), under the names ``<attention>.q_proj``, ``k_proj``,
        ``v_proj`` and ``out_proj``.
    rank:
        Passed to every conversion (``None``: each layer at most as large as the dense one; with
        ``None`` or a share such as ``0.5``, a layer whose tensorized form is larger even at rank
        1, such as a small or prime-sized one, is left dense with a warning, unless ``filter``
        names it). A layer given as ``model`` (an ``nn.Linear`` itself) comes back converted.
    budget:
        Instead of ``rank``: the converted layers together get at most this many parameters
        (``int``, cores only) or at least this compression of their dense weights (``"10x"``);
        each layer's rank is chosen where its weight's error falls most per parameter
        (:mod:`tnmars.nn.budget`). MARS fine-tuning only closes indices, so the model stays
        within it. Unless ``filter`` names them, layers larger than dense even at rank 1 and
        layers with a frozen weight (fine-tuning could not recover their loss) stay dense,
        with a warning, and are not counted in the budget. :func:`summary` counts the same in
        its "tensorized layers (cores)" row (``ModelSummary.layer_params``); its model total
        adds the biases and plain layers.
    progress:
        A bar over the layers, and one per CP fit, shown once one runs past a second (a CP
        conversion of a large layer takes seconds); ``None``: on unless ``TQDM_DISABLE`` is set.
    options:
        MARS settings and mode for every new layer (``mars``, ``pi``, ``alpha``,
        ``temperature``, ``min_rank``, ``mode``).

    Each new layer keeps the train or eval mode of the layer it replaces, and its frozen
    parameters: a frozen weight gives frozen cores and no masks (the layer keeps the ranks it
    is decomposed at; MARS selects none there), a frozen bias a frozen bias.

    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    >>> small = tensorize(model, lambda name, m: isinstance(m, nn.Linear), rank=4)
    >>> [type(m).__name__ for m in small]
    ['Conv2d', 'Flatten', 'TensorizedLinear']
    >>> within = tensorize(model, budget="8x")
    >>> sum(m.num_params for m in within.modules() if hasattr(m, "dense_size")) <= (8 * 3 * 9 + 128 * 10) // 8
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if type(model) in (*_CONVERTIBLE, nn.MultiheadAttention):  # a layer itself, not a model holding it
        if inplace:
            raise ValueError(f"tensorize replaces layers inside a model, and cannot replace the {type(model).__name__} "
                             "it was given in place: pass inplace=False (the tensorized copy is returned), or use the "
                             "layer's converter (TensorizedLinear.from_linear and the like)")
        key = type(model).__name__  # (the warnings name the layer by it)
        if filter is not None and not callable(filter) and not isinstance(filter, str):
            filter = [key + ("." + name if name else "") for name in filter]  # (names within the layer)
        elif callable(filter):
            given = filter
            filter = lambda name, module: given(name[len(key) + 1:] if name.startswith(key + ".") else "", module)  # noqa: E731
        with warnings.catch_warnings(record=True) as caught:  # (said again at the caller's line)
            warnings.simplefilter("always")
            out = tensorize(nn.Sequential(OrderedDict([(key, model)])), filter, linear=linear, conv=conv,
                            embedding=embedding, attention=attention, rank=rank, budget=budget, progress=progress,
                            **options)[0]
        for w in caught:
            warnings.warn(w.message, w.category, stacklevel=2)
        return out
    if linear not in (None, "lowrank", *FORMATS):
        raise ValueError(f"linear must be one of {(*FORMATS, 'lowrank')} or None; got {linear!r}")
    if conv not in (None, "tucker2", *FORMATS):
        raise ValueError(f"conv must be one of {('tucker2', *FORMATS)} or None; got {conv!r}")
    if embedding not in (None, *FORMATS):
        raise ValueError(f"embedding must be one of {FORMATS} or None; got {embedding!r}")
    if attention not in (None, "lowrank", *FORMATS):
        raise ValueError(f"attention must be one of {(*FORMATS, 'lowrank')} or None; got {attention!r}")
    options = _options(options)
    if options:  # checked once, as every layer would check them: a typo ('Soft', pi=0) left every layer dense
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            TensorizedLinear(4, 4, rank=1, in_shape=(2, 2), out_shape=(2, 2), **options)
    named: set[str] | None = None
    if filter is not None and not callable(filter):
        if isinstance(filter, str):
            raise TypeError("filter must be a callable or an iterable of module names (a list, not a string)")
        named = set(filter)
        if "" in named:
            raise ValueError("the filter names '' (the model itself): tensorize replaces layers inside the model; name "
                             "its layers (dict(model.named_modules()) keys other than '')")
        known = {name for name, _ in model.named_modules(remove_duplicate=False)}  # (every name of a shared layer)
        missing = named - known
        if missing:
            raise ValueError(f"no modules named {sorted(missing)} in the model")
    if budget is not None and rank is not None:
        raise ValueError("give rank= or budget=, not both: a budget chooses every layer's rank")
    check_rank_argument(rank, "tensorize")
    try:
        new = model if inplace else copy.deepcopy(model)
    except RuntimeError as err:  # torch cannot deep-copy the computed weights of old-style reparametrisations
        hooked = [f"{name!r} ({kind})" for name, m in model.named_modules() if (kind := _reparametrised(m))]
        if not hooked:
            raise
        raise ValueError(f"tensorize copies the model (inplace=False), and torch cannot deep-copy the layers "
                         f"{', '.join(hooked)}, whose weight an old-style torch.nn.utils hook recomputes: remove those "
                         "hooks first (torch.nn.utils.remove_spectral_norm / remove_weight_norm / prune.remove; the "
                         "layers then hold their current weight), or pass inplace=True. (Layers under the newer "
                         "torch.nn.utils.parametrizations are left dense too: remove the parametrization first.)") from err
    aliases = _aliases(new)  # a layer shared under several names: wanted under any of them
    chosen = [(name, module) for name, module in list(new.named_modules())
              if name and any(_wanted(a, module, filter, named) for a in aliases.get(id(module), [name]) if a)]
    # attentions are converted whole (their projections, below); what is inside them is not a target
    attentions = [(n, m) for n, m in chosen if type(m) is nn.MultiheadAttention and attention is not None]
    inside = {id(sub) for _, m in attentions for sub in m.modules() if sub is not m}
    targets = [(n, m) for n, m in chosen if id(m) not in inside and not any(m is a for _, a in attentions)]
    # the layers inside a module whose own logic reads and writes their dense weights (a tnmars
    # recurrent model's stability projection) stay dense: converted, they escaped it silently
    holders = {id(sub): (name, m) for name, m in new.named_modules() if _keeps_dense(m)
               for sub in m.modules() if sub is not m}
    held = [(n, m) for n, m in targets if id(m) in holders]
    if named is not None and held:
        raise ValueError("tensorize cannot convert " + "; ".join(f"{n!r}: {_held_why(*holders[id(m)])}"
                                                                 for n, m in held))
    targets = [(n, m) for n, m in targets if id(m) not in holders]
    refused = [(name, module) for name, module in targets if not _would_convert(module, linear, conv, embedding)]
    if named is not None and refused:
        raise ValueError("tensorize cannot convert " + "; ".join(
            f"{name!r}: {_why_not(module, linear, conv, embedding, attention)}" for name, module in refused))
    # a subclass of a converted type that the walk (or a callable filter) met: said, not silent
    skipped = [f"{name}: {_why_not(module, linear, conv, embedding, attention)}" for name, module in refused
               if isinstance(module, _CONVERTIBLE) and type(module) not in _CONVERTIBLE]
    skipped += [f"{n}: {_held_why(*holders[id(m)])}" for n, m in held if _would_convert(m, linear, conv, embedding)]
    tied = _tied_parameters(new, [(n, m) for n, m in targets if _would_convert(m, linear, conv, embedding)])
    tied.update((n, why) for n, m in attentions if (why := _shared_outside(new, m)))
    if tied and named is not None:
        raise ValueError("tensorize cannot convert " + "; ".join(f"{n!r} ({o})" for n, o in tied.items())
                         + ": a tied parameter is one tensor that several layers share, and a decomposed layer "
                         "would untie it. Leave these layers out (or untie them yourself first)")
    for name, others in tied.items():
        skipped.append(f"{name}: {others} (tied parameters); converting it would untie them")
    targets = [(name, module) for name, module in targets if name not in tied]
    for name, module in attentions:
        reparam = _reparametrised(module)
        if reparam:
            why = f"its weights are recomputed at each forward by a {reparam} hook; remove it first"
            if named is not None:
                raise ValueError(f"tensorize cannot convert {name!r}: {why}")
            skipped.append(f"{name}: {why}")
            tied[name] = why
    # checked: now each attention with its projections as nn.Linear (the same function), to convert as linears
    hooked: list[str] = []
    start_closed: list[str] = []
    opened, originals = _open_attention(new, [m for n, m in attentions if n not in tied], hooked)
    try:  # (from here the model holds the opened attentions: a failure puts the originals back)
        projections = {id(getattr(m, p)) for m in opened for p in (*PROJECTIONS, "out_proj")}
        if opened:
            kept = {id(m) for _, m in targets}
            targets = [(name, module) for name, module in new.named_modules()
                       if name and (id(module) in kept or id(module) in projections)]

        def linear_format(module: nn.Module) -> str | None:  # a projection's format is attention's
            return attention if id(module) in projections else linear

        errors: dict[str, float] = {}
        frozen_names: set[str] = set()
        closed_at_start: set[str] = set()
        converted: dict[int, nn.Module] = {}
        ranks: dict[str, int] = {}
        dense_left: dict[str, str] = {}
        if budget is not None:
            ranks, dense_left = _budget_ranks(
                targets, budget, lambda m, r: _convert(m, linear_format(m), conv, embedding, r, options, progress),
                strict=named is not None)
        from tqdm.auto import tqdm

        from ..fitting.progress import progress_enabled

        with tqdm(targets, desc="tensorize", unit="layer", delay=PROGRESS_DELAY, leave=False,
                  disable=not progress_enabled(progress)) as bar:
            for name, module in bar:
                bar.set_postfix_str(name, refresh=False)
                if name in dense_left:  # (a budget's rule, as rank=None's below)
                    skipped.append(f"{name}: {dense_left[name]}")
                    continue
                reparam = _reparametrised(module)
                if reparam:  # its weight is recomputed by a hook from other tensors: the stored one may be stale
                    why = (f"its weight is recomputed at each forward by a {reparam} hook (torch.nn.utils' old-style "
                           "reparametrisation), so the stored weight may be stale and the hook would be lost; remove "
                           f"it first ({_REMOVE[reparam]}) to convert the layer")
                    if named is not None:
                        raise ValueError(f"tensorize cannot convert {name!r}: {why}")
                    skipped.append(f"{name}: {why}")
                    continue
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        replacement = _convert(module, linear_format(module), conv, embedding, ranks.get(name, rank),
                                               options, progress)
                    except ValueError as err:
                        if named is not None:
                            raise
                        skipped.append(f"{name}: {err}")
                        replacement = None
                # default ranks promise a layer no larger than the dense one: where even the smallest
                # ranks cannot keep it (a small or prime-sized layer), the walk leaves the layer dense
                # (a share of the dense size, rank=0.5, promises it too: a Linear(97, 101) came back larger)
                larger = (replacement is not None and (rank is None or is_share(rank)) and budget is None
                          and named is None and replacement.num_params > replacement.dense_size)
                for w in caught:  # (a layer left dense: what its conversion would have lost does not apply)
                    if START_CLOSED in str(w.message):
                        if not larger:
                            start_closed.append(name)
                    elif CHANGED_WEIGHT in str(w.message):
                        pass  # (said once for every layer below, from conversion_error)
                    elif budget is not None and "clipped to the" in str(w.message):
                        pass  # (the budget's uniform ranks, not the user's: each layer takes what it can use)
                    elif not (larger and issubclass(w.category, UserWarning)
                              and ("more than" in str(w.message) or "not carried over" in str(w.message))):
                        # (named: "TT ranks (4, 4) clipped ..." said nothing of which layer)
                        warnings.warn(f"tensorize, layer {name!r}: {w.message}", w.category, stacklevel=2)
                if larger:
                    skipped.append(f"{name}: even at ranks {dict(replacement.max_ranks)} its {type(replacement).__name__} "
                                   f"has {replacement.num_params:,} parameters, more than the dense layer's "
                                   f"{replacement.dense_size:,} (name it, or give an integer rank=, to convert it anyway)")
                    continue
                if replacement is None:
                    continue
                errors[name] = replacement.conversion_error  # (set by the conversion: _report_conversion)
                if not module.weight.requires_grad:
                    frozen_names.add(name)
                if getattr(replacement, "masks", None) is not None and replacement.masks.closed_bonds():
                    closed_at_start.add(name)  # (its MAP weight is cut to min_rank until trained: not a conversion error)
                converted[id(module)] = replacement
                if _carry_hooks(module, replacement):
                    hooked.append(name)
        # under every name of each converted module: a layer shared by two names stays shared
        replace_modules(new, lambda name, m: converted.get(id(m)))
    except BaseException:
        replace_modules(new, lambda name, m: originals.get(id(m)))
        raise
    if skipped:
        warnings.warn("tensorize left these layers dense: " + "; ".join(skipped), UserWarning, stacklevel=2)
    if named is None:  # layers of other types with weights (a Conv1d, a ConvTranspose2d): said, not silent
        picked = None if filter is None else {id(m) for _, m in chosen}
        others = _other_weighted_layers(new, picked)
        if others:
            shown = ", ".join(others[:6]) + (f" and {len(others) - 6} more" if len(others) > 6 else "")
            warnings.warn(f"tensorize converts nn.Linear, nn.Conv2d, nn.Embedding and nn.MultiheadAttention only; these "
                          f"layers{' the filter selected' if picked is not None else ''} stay dense: {shown}",
                          UserWarning, stacklevel=2)
    if start_closed:
        warnings.warn(f"tensorize: the masks of {', '.join(map(repr, start_closed))} start closed (a negative alpha, as "
                      "the paper's 'soft' and 'hard' presets): in eval mode, until trained, those layers compute at "
                      "min_rank (train them with MarsLoss, with the presets' warm-up, see set_warmup; the default "
                      "mars=True starts open)", RuntimeWarning, stacklevel=2)
    if hooked:
        warnings.warn("tensorize moved the forward / backward hooks of " + ", ".join(map(repr, hooked))
                      + " to their tensorized layers (they were dropped before); a hook that reads attributes of "
                      "the dense layer other than weight / bias may not find them there", UserWarning, stacklevel=2)
    if not converted:  # the model comes back unchanged: not silently
        kinds = [f"nn.{t.__name__}" for t, fmt in zip((*_CONVERTIBLE, nn.MultiheadAttention),
                                                      (linear, conv, embedding, attention)) if fmt is not None]
        already = [name for name, m in new.named_modules() if isinstance(m, TensorizedLayer)]
        why = ("every layer it met was left dense (see the warning above)" if skipped else
               f"the model has no {' / '.join(kinds) or 'layer type with a format'} layer"
               + (" that the filter selects" if filter is not None else "")
               + (f" (its layers {', '.join(map(repr, already[:3]))}{' ...' if len(already) > 3 else ''} are "
                  "tensorized already)" if already else ""))
        warnings.warn(f"tensorize converted no layer: {why}; the model is returned unchanged", UserWarning,
                      stacklevel=2)
    # (a layer whose masks start closed computes at min_rank until trained: not a conversion error)
    changed = {name: e for name, e in errors.items() if e > CONVERSION_WARNING and name not in closed_at_start}
    # a frozen weight gives frozen cores (_inherit_modes): fine-tuning cannot recover those layers
    frozen = {name: e for name, e in changed.items() if name in frozen_names}
    changed = {name: e for name, e in changed.items() if name not in frozen}
    if changed:
        warnings.warn(changed_weights_message("tensorize", changed), UserWarning, stacklevel=2)
    if frozen:
        warnings.warn(changed_weights_message("tensorize", frozen, frozen=True), UserWarning, stacklevel=2)
    from .training import name_owners  # (training's walk of the model; it does not import this module)

    name_owners(new)  # a closed bond's warning then names the layer by its path, before any MarsLoss exists
    return new


#: how to remove each old-style reparametrisation :func:`_reparametrised` names
_REMOVE = {"spectral_norm": "torch.nn.utils.remove_spectral_norm(layer)",
           "weight_norm": "torch.nn.utils.remove_weight_norm(layer)",
           "prune": "torch.nn.utils.prune.remove(layer, 'weight')"}

#: the hook tables of ``nn.Module`` that :func:`tensorize` moves to a layer's replacement
_HOOK_TABLES = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
                "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")


def _carry_hooks(old: nn.Module, new: nn.Module) -> bool:
    """Give ``new`` the hooks registered on ``old`` (feature capture, input scaling, gradient
    hooks): without them a converted model silently computed something else, or stopped
    reporting, even at full rank. Whether any hook was there."""
    moved = False
    for table in _HOOK_TABLES:
        hooks = getattr(old, table, None)
        if hooks:
            mine = getattr(new, table)
            if mine:
                mine.update(hooks)
            else:  # the same table object: the hooks' RemovableHandles (weak references to it) still remove them
                object.__setattr__(new, table, hooks)
            moved = True
    if moved and getattr(old, "_is_full_backward_hook", None) is not None:
        new._is_full_backward_hook = old._is_full_backward_hook
    return moved


def _reparametrised(module: nn.Module) -> str | None:
    """The old-style ``torch.nn.utils`` reparametrisation whose forward pre-hook recomputes
    ``module.weight`` (``spectral_norm``, ``weight_norm``, ``prune``), or None."""
    for hook in getattr(module, "_forward_pre_hooks", {}).values():
        kind = type(hook).__name__
        if kind == "SpectralNorm":
            return "spectral_norm"
        if kind == "WeightNorm":
            return "weight_norm"
        if isinstance(hook, prune.BasePruningMethod):  # (L1Unstructured etc. and a PruningContainer alike)
            return "prune"
    return None


def _tied_parameters(model: nn.Module, targets: list[tuple[str, nn.Module]]) -> dict[str, str]:
    """Target name -> which of its parameters another module also holds, and where (tied input
    and output embeddings, a shared bias). The same module under two names is not a tie: it is
    replaced once, under both."""
    holders: dict[int, list[tuple[str, int]]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for key, param in module._parameters.items():
            if param is not None:
                holders.setdefault(id(param), []).append((f"{name}.{key}" if name else key, id(module)))
    tied = {}
    for name, module in targets:
        shared = []
        for key, param in module._parameters.items():
            others = sorted({where for where, owner in holders.get(id(param), ()) if owner != id(module)})
            if param is not None and others:
                shared.append(f"its {key} is also {', '.join(map(repr, others))}")
        if shared:
            tied[name] = "; ".join(shared)
    return tied


def _aliases(model: nn.Module) -> dict[int, list[str]]:
    """Module id -> every name it has in ``model`` (a layer shared under several names)."""
    aliases: dict[int, list[str]] = {}
    for alias, module in model.named_modules(remove_duplicate=False):
        aliases.setdefault(id(module), []).append(alias)
    return aliases


def _open_attention(model: nn.Module, chosen: list[nn.Module], hooked: list[str]
                    ) -> tuple[list[TensorizedMultiheadAttention], dict[int, nn.Module]]:
    """Replace each ``nn.MultiheadAttention`` in ``chosen`` by a :class:`TensorizedMultiheadAttention`
    whose projections are ``nn.Linear`` copies of its weights (the same function), for the walk
    to convert like other linears. Hooks move to the new module (its names in ``hooked``).
    Returns the new modules and, by the id of each, the module it replaced (to put back)."""
    replaced: dict[int, TensorizedMultiheadAttention] = {}
    for module in chosen:
        replaced[id(module)] = new = TensorizedMultiheadAttention.with_dense_projections(module)
        if _carry_hooks(module, new):
            hooked.append(next(name for name, m in model.named_modules() if m is module))
    replace_modules(model, lambda name, m: replaced.get(id(m)))
    return list(replaced.values()), {id(new): old for old in chosen for new in [replaced[id(old)]]}


def _shared_outside(model: nn.Module, module: nn.Module) -> str | None:
    """Which parameters of ``module`` (its submodules' included) a module outside it also holds,
    and where; None when none is."""
    inside = {id(m) for m in module.modules()}
    own = {id(p): n for n, p in module.named_parameters()}
    shared = [f"its {own[id(p)]} is also {(f'{name}.{key}' if name else key)!r}"
              for name, m in model.named_modules(remove_duplicate=False) if id(m) not in inside
              for key, p in m._parameters.items() if p is not None and id(p) in own]
    return "; ".join(shared) or None


def _keeps_dense(module: nn.Module) -> bool:
    """Whether ``module``'s own logic reads and writes the dense weights of the layers inside it,
    which :func:`tensorize` then leaves dense: its class sets ``tensorize_keeps_dense = True``
    (the tnmars recurrent models, whose stability projection bounds ``input.weight``)."""
    return getattr(type(module), "tensorize_keeps_dense", False) is True


def _held_why(owner_name: str, owner: nn.Module) -> str:
    """Why a layer inside ``owner`` (a :func:`_keeps_dense` module) stays dense."""
    return (f"it is inside {owner_name or '(the model)'!r}, a tnmars {type(owner).__name__} whose own logic (its "
            "stability projection: project_, enforce_stability, register_stability_hook) reads and writes the dense "
            "weights of the layers inside it; a tensorized layer there would escape the projection silently, so "
            "tnmars recurrent models are left whole (tensorize the layers around them)")


def _would_convert(module: nn.Module, linear: str | None, conv: str | None, embedding: str | None) -> bool:
    """Whether :func:`_convert` replaces ``module`` (its type, and that type's format not None)."""
    return _format_for(module, linear, conv, embedding) is not None


#: the layer types :func:`tensorize` converts (exactly these types, not their subclasses) and
#: the keyword that gives each one's format
_OPTION_OF = {nn.Linear: "linear", nn.Conv2d: "conv", nn.Embedding: "embedding"}
_CONVERTIBLE = tuple(_OPTION_OF)


def _why_not(module: nn.Module, linear: str | None, conv: str | None, embedding: str | None,
             attention: str | None = None) -> str:
    """Why :func:`tensorize` leaves ``module`` as it is (it does not convert it)."""
    kind = type(module).__name__
    if _keeps_dense(module):
        return (f"a tnmars {kind}, whose own logic (its stability projection) reads and writes the dense weights of "
                "the layers inside it: it and they are left whole (tensorize the layers around it)")
    if type(module) is nn.MultiheadAttention and attention is None:
        return "attention=None leaves nn.MultiheadAttention layers alone"
    base = next((t for t in _CONVERTIBLE if isinstance(module, t)), None)
    if base is None:
        inside = "; name the layers inside it" if next(module.children(), None) is not None else ""
        return (f"a {kind}; tensorize converts nn.Linear, nn.Conv2d, nn.Embedding and nn.MultiheadAttention "
                f"layers{inside}")
    if parametrize.is_parametrized(module):
        return (f"a {kind}: its weight is computed by a torch.nn.utils.parametrize parametrization, which a tensorized "
                "layer cannot carry; remove it first (torch.nn.utils.parametrize.remove_parametrizations(layer, "
                "'weight'), which keeps the current weight)")
    if type(module) is not base:
        return (f"a {kind}, a subclass of nn.{base.__name__}: only the exact type is converted, since the module "
                f"that owns a subclass may use its weight directly (a MultiheadAttention reads out_proj.weight: "
                f"select the MultiheadAttention itself, with attention= a format, to convert its projections)")
    return f"{_OPTION_OF[base]}=None leaves nn.{base.__name__} layers alone"


def _format_for(module: nn.Module, linear: str | None, conv: str | None, embedding: str | None) -> str | None:
    """The format ``module``'s exact type is converted to (None: left alone; subclasses too)."""
    option = _OPTION_OF.get(type(module))
    return None if option is None else {"linear": linear, "conv": conv, "embedding": embedding}[option]


def _budget_ranks(targets: list[tuple[str, nn.Module]], budget: Any, build: Callable[[nn.Module, int], Any],
                  strict: bool) -> tuple[dict[str, int], dict[str, str]]:
    """Every convertible target's rank within ``budget`` (:func:`tnmars.nn.budget.allocate_ranks`),
    and the targets to leave dense, with why; other layers that cannot be converted are left to
    the conversion loop (which skips or raises).

    Unless the filter names them (``strict``), two kinds of layer get no share of the budget
    and stay dense, as ``rank=None`` leaves them: one whose tensorized form is larger than the
    dense layer even at rank 1 (it would spend the budget to grow, and lose accuracy), and
    one whose weight is frozen (``requires_grad=False``: its cores stay frozen, so fine-tuning
    could never recover what a lossy rank loses; its user asked for it unchanged)."""
    convertible = {}
    dense_left: dict[str, str] = {}
    dense = 0
    for name, module in targets:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                smallest = build(module, 1)
        except ValueError:
            if strict:
                raise
            continue
        if smallest is None:
            continue
        if not strict and not module.weight.requires_grad:
            dense_left[name] = ("its weight is frozen (requires_grad=False), so fine-tuning could not recover what a "
                                "budget's ranks lose: it gets no share of the budget (unfreeze it first, or name it "
                                "in the filter, to convert it anyway)")
            continue
        if not strict and smallest.num_params > smallest.dense_size:
            dense_left[name] = (f"even at ranks {dict(smallest.max_ranks)} its {type(smallest).__name__} has "
                                f"{smallest.num_params:,} parameters, more than the dense layer's "
                                f"{smallest.dense_size:,} (it gets no share of the budget; name it to convert it "
                                "anyway)")
            continue
        convertible[name] = module
        dense += smallest.dense_size
    if not convertible:
        why = "; ".join(f"{n}: {w}" for n, w in dense_left.items())
        raise ValueError("budget= given but no layer of the model can be converted" + (f" ({why})" if why else ""))
    return allocate_ranks(convertible, build, max_params(budget, dense)), dense_left


def _other_weighted_layers(model: nn.Module, picked: set[int] | None) -> list[str]:
    """The modules (among ``picked`` ids, when given) of types :func:`tensorize` does not convert
    that hold a weight matrix of their own (``nn.Conv1d``, ``nn.ConvTranspose2d``, torch's
    ``nn.LSTM``, a custom module's 2-D parameter), as ``"'name' (Type, n weights)"``; tnmars
    modules and what they hold are not listed."""
    inside = {id(sub) for m in model.modules() if type(m).__module__.startswith("tnmars.") for sub in m.modules()}
    found = []
    for name, module in model.named_modules():
        if not name or id(module) in inside or isinstance(module, (*_CONVERTIBLE, nn.MultiheadAttention)):
            continue
        if picked is not None and id(module) not in picked:
            continue
        weights = sum(p.numel() for p in module.parameters(recurse=False) if p.ndim >= 2)
        if weights:
            found.append(f"{name!r} ({type(module).__name__}, {weights:,} weights)")
    return found


def _wanted(name: str, module: nn.Module, filter: Any, named: set[str] | None) -> bool:
    if named is not None:
        return name in named
    if filter is not None:
        return bool(filter(name, module))
    return True


def _convert(module: nn.Module, linear: str | None, conv: str | None, embedding: str | None, rank: Any,
             options: dict[str, Any], progress: bool | None = None) -> nn.Module | None:
    """The tensorized replacement of ``module``, or None when it is not converted
    (:func:`_would_convert` says which)."""
    fmt = _format_for(module, linear, conv, embedding)
    if fmt is None:
        return None
    if type(module) is nn.Linear:
        if fmt == "lowrank":
            return lowrank_from_linear(module, rank, **options)
        return from_linear(module, fmt, rank, progress=progress, **options)
    if type(module) is nn.Conv2d:
        if fmt == "tucker2":
            return tucker2_from_conv(module, rank, **options)
        return from_conv(module, fmt, rank, progress=progress, **options)
    return from_embedding(module, fmt, rank, progress=progress, **options)
