"""SVD-based initial networks at the maximal ranks, computed by tensorly.

``svd_init(fmt, data, ranks)`` returns a :class:`tnmars.Network` of format ``fmt`` whose
cores come from the classical decomposition of ``data``:

- ``"tucker"``: HOSVD followed by a few HOOI sweeps (``tensorly.decomposition.tucker``),
- ``"tt"``: TT-SVD (``tensorly.decomposition.tensor_train``),
- ``"tr"``: TR-SVD (``tensorly.decomposition.tensor_ring``),
- ``"cp"``: CP-ALS from an SVD start (``tensorly.decomposition.parafac``).

With ``observed`` (a boolean mask), Tucker and CP use tensorly's masked solvers and TT/TR
work on the data with unobserved entries set to 0 (the mean of normalised data).

Where the SVD cannot fill the requested rank (a TT rank above a matricization's rank, the
TR-SVD constraint ``r_0 r_1 <= n_1``, a Tucker rank above the mode size) the missing slices
are filled with small random values instead of zeros: MARS masks then still see a gradient
there (an all-zero slice on both sides of a bond would have none) but the start stays
within ``pad_scale`` of the SVD fit.

>>> import numpy as np
>>> from tnmars.interop import svd_init
>>> x = np.random.default_rng(0).standard_normal((4, 5, 6))
>>> svd_init("tucker", x, 3).ranks
(3, 3, 3)
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..network import Network

FORMATS = ("cp", "tucker", "tt", "tr")


def _template(fmt: str, shape: Sequence[int], ranks: Any) -> Network:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clipping is reported by fit, not here
        if fmt == "cp":
            r = ranks if isinstance(ranks, (int, np.integer)) else int(np.max(ranks))
            return Network.cp(shape, int(r), seed=0)
        if fmt == "tucker":
            return Network.tucker(shape, ranks, seed=0)
        if fmt == "tt":
            return Network.tt(shape, ranks, seed=0)
        if fmt == "tr":
            return Network.tr(shape, ranks, seed=0)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _pad(core: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator, pad_scale: float) -> np.ndarray:
    """Embed ``core`` in an array of ``shape``; the new entries are small random values."""
    rms = float(np.sqrt(np.mean(core**2))) if core.size else 1.0
    out = rng.standard_normal(shape) * pad_scale * (rms if rms > 0 else 1.0)
    out[tuple(slice(0, n) for n in core.shape)] = core
    return out


def _real_data(data: Any) -> np.ndarray:
    """``data`` as a float array, refusing what the real SVD solvers would silently damage
    (complex values: NumPy drops the imaginary part with only a warning) or fail on deep
    inside tensorly (fewer than two modes: no bond, and TT-SVD unfolds a matrix)."""
    if hasattr(data, "detach"):  # torch: through the CPU (lazy conjugate and negative bits resolved)
        data = data.detach().resolve_conj().resolve_neg().cpu()
    x = np.asarray(data)
    if np.iscomplexobj(x):
        raise TypeError(f"svd_init needs real data; got {x.dtype} (its real SVDs would drop the imaginary part): "
                        "pass data.real, or stack the real and imaginary parts as an extra mode of size 2")
    if x.ndim < 2:
        raise ValueError(f"svd_init needs data with at least 2 modes; got shape {x.shape} (a vector has no bond "
                         "to initialise)")
    return x.astype(float, copy=False)


def _observed_mask(observed: Any, shape: tuple[int, ...]) -> np.ndarray:
    """The boolean mask, of the data's shape and marking at least one entry: with none
    observed the masked solvers divide by zero (CP-ALS: a singular matrix)."""
    observed = np.asarray(observed, dtype=bool)
    if observed.shape != shape:
        raise ValueError(f"observed has shape {observed.shape} but the data have {shape}")
    if not observed.any():
        raise ValueError("observed marks no entry as observed: there is nothing to initialise from")
    return observed


def svd_init(
    fmt: str,
    data: Any,
    ranks: Any,
    *,
    observed: np.ndarray | None = None,
    n_iter_max: int = 10,
    seed: int | None = 0,
    pad_scale: float = 1e-2,
) -> Network:
    """A NumPy network of format ``fmt`` at ``ranks`` initialised from ``data`` by tensorly.

    ``ranks`` follows the constructors (:meth:`Network.tucker` etc.); ranks are clipped to
    what the format allows. ``n_iter_max`` bounds the HOOI / ALS sweeps (Tucker, CP).
    """
    import tensorly as tl
    from tensorly.decomposition import parafac, tensor_ring, tensor_train, tucker

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    x = _real_data(data)
    if observed is not None:
        observed = _observed_mask(observed, x.shape)
        x = np.where(observed, x, 0.0)
    if not np.all(np.isfinite(x)):
        raise ValueError("svd_init needs finite data (mark missing entries with observed=)")
    rng = np.random.default_rng(seed)
    tmpl = _template(fmt, x.shape, ranks)
    shapes = [tuple(c.shape) for c in tmpl.cores]
    # (a context: tensorly's global backend is the caller's, e.g. "pytorch", and stays so)
    with tl.backend_context("numpy"):
        if fmt == "tucker":
            mask = None if observed is None else observed.astype(float)
            feasible = [min(r, n) for r, n in zip(tmpl.ranks, x.shape)]
            core, factors = tucker(x, rank=feasible, n_iter_max=n_iter_max, init="svd", mask=mask,
                                   random_state=seed)
            cores = [np.asarray(core)] + [np.asarray(f) for f in factors]
        elif fmt == "cp":
            mask = None if observed is None else observed.astype(float)
            with warnings.catch_warnings():  # a rank above a mode size: tensorly's SVD start fills the rest at random
                warnings.filterwarnings("ignore", message="Trying to compute SVD with n_eigenvecs")
                try:
                    weights, factors = parafac(x, rank=tmpl.ranks[0], n_iter_max=n_iter_max, init="svd", mask=mask,
                                               random_state=seed)
                except np.linalg.LinAlgError as err:  # (tensorly's ALS solve on zero or degenerate data)
                    raise ValueError(f"svd_init: CP-ALS met a singular system at rank {tmpl.ranks[0]} ({err}): the "
                                     "data are zero or too degenerate for that rank") from err
            factors = [np.asarray(f) for f in factors]
            factors[0] = factors[0] * np.asarray(weights)[None, :]
            # spread the scale evenly over the factors (the Gaussian core prior is per entry)
            norms = [np.linalg.norm(f, axis=0) for f in factors]
            geo = np.prod(norms, axis=0) ** (1.0 / len(factors))
            cores = [f / np.where(nr > 0, nr, 1.0) * geo for f, nr in zip(factors, norms)]
        elif fmt == "tt":
            full = [1, *tmpl.ranks, 1]
            tt = tensor_train(x, rank=full)
            cores = [np.asarray(f) for f in tt]
            cores[0] = cores[0][0]
            cores[-1] = cores[-1][..., 0]
        else:  # tr
            d = x.ndim
            want = [tmpl.dims[term[-1]] for term in tmpl.inputs]  # want[k] joins core k and k+1; want[d-1] closes
            tl_ranks = [want[d - 1], *want[: d - 1], want[d - 1]]
            # TR-SVD needs r_0 r_1 <= n_1: r_1 no larger than n_1 first, then r_0 lowered below (the
            # slices it cannot fill are padded with small random values, as the docstring says)
            tl_ranks[1] = min(tl_ranks[1], x.shape[0])
            while True:
                try:
                    tr = tensor_ring(x, rank=tl_ranks)
                    break
                except ValueError:
                    if tl_ranks[0] <= 1:
                        raise
                    tl_ranks[0] = tl_ranks[-1] = max(1, min(tl_ranks[0] - 1, x.shape[0] // max(tl_ranks[1], 1)))
            cores = [np.asarray(f) for f in tr]
    cores = [_pad(c, s, rng, pad_scale) for c, s in zip(cores, shapes)]
    return tmpl.with_cores(cores)
