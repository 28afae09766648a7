"""Checking and scaling the data of a fit.

Whatever the caller passes (NumPy, torch or CuPy; any float or integer dtype; values from
1e-300 to 1e300), the fit works on float64 data divided by their root mean square over the
observed entries, so ranks and errors never depend on the data's units or magnitude. The
scale is computed without overflow (the data are divided by their largest magnitude
first). Missing entries are marked by ``observed``; NaN/Inf elsewhere is an error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends import Backend, get_backend, infer_backend
from .solvers import FitData

__all__ = ["Prepared", "prepare"]


@dataclass
class Prepared:
    """Validated data: working-unit :class:`FitData`, the scale back to data units, the
    caller's backend, dtype and device (the data's, where the result goes back to), and the
    data in NumPy (for reporting errors)."""

    data: FitData
    scale: float
    backend: Backend
    dtype: str
    raw: np.ndarray
    observed: np.ndarray | None
    #: the data's device when the result stays on the data's backend (``None``: the backend's default)
    device: str | None = None
    #: the largest magnitude of the observed data (data units)
    peak: float = 0.0
    #: entries held out of a completion whose value is known (finite, not masked by a NumPy
    #: masked array): where the held-out error is measured. ``None`` when every entry is fitted
    heldout: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.raw.shape)

    def returned(self, net: Any, device: str | None) -> Any:
        """``net`` (NumPy) on the caller's backend, device and dtype: what a fit hands back."""
        if self.backend.name == "numpy":
            return net if self.dtype == "float64" else net.to("numpy", dtype=self.dtype)
        return net.to(self.backend.name, device=device, dtype=self.dtype)


def _numpy_of(x: Any, what: str) -> tuple[np.ndarray, Backend | None]:
    if x is None:
        raise TypeError(f"{what} is None; pass an array (NumPy, torch or CuPy)")
    if hasattr(x, "shape") and not isinstance(x, np.ndarray):
        try:
            src = infer_backend([x])
        except (TypeError, ValueError):
            src = None
        if src is not None and src.is_array(x):
            if "meta" in str(getattr(x, "device", "")):
                raise ValueError(f"{what} is on the 'meta' device, which holds shapes but no values: there is "
                                 "nothing to fit; pass the tensor with its values (on the CPU or a GPU)")
            return np.asarray(src.to_numpy(x)), src
    try:
        return np.asarray(x), None
    except Exception as err:  # pragma: no cover - exotic inputs
        raise TypeError(f"{what} must be an array; got {type(x).__name__}") from err


def _dtype_name(dtype: Any) -> str | None:
    """Accept ``"float32"``, ``np.float32`` or ``torch.float32``; refuse what fits cannot use."""
    if dtype is None:
        return None
    name = str(dtype).replace("torch.", "")
    try:
        np_dtype = np.dtype(name)
    except TypeError:
        raise TypeError(f"dtype must name a floating dtype such as 'float32' or 'float64'; got {dtype!r}") from None
    if np_dtype not in (np.float32, np.float64):
        raise ValueError(f"fits run in float32 or float64; got dtype {dtype!r} "
                         "(float16 overflows the least-squares steps, integers cannot hold the cores)")
    return np_dtype.name


def prepare(data: Any, observed: Any = None, backend: str | None = None, dtype: Any = None) -> Prepared:
    """Validate ``data`` and ``observed`` and scale the data to unit mean square. A NumPy masked
    array's masked entries (a ``torch.masked.MaskedTensor``'s unspecified ones) are missing
    (combined with ``observed`` when both are given): fitted as data, a sentinel such as -999
    would silently ruin the fit."""
    masked = hidden = None  # (hidden: not data, not even held out)
    if isinstance(data, np.ma.MaskedArray):
        hidden = np.ma.getmaskarray(data)
        data = np.ma.getdata(data)
    elif type(data).__name__ == "MaskedTensor" and hasattr(data, "get_mask"):  # (torch refused its .numpy())
        hidden = ~np.asarray(get_backend("torch").to_numpy(data.get_mask()), dtype=bool)
        data = data.get_data()
    if hidden is not None:
        masked = hidden
        if not masked.any():
            masked = None
        elif observed is None:
            observed, masked = ~masked, None
    arr, src = _numpy_of(data, "data")
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"data must be a numeric array; got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError("complex data is not supported")
    if arr.ndim < 1:
        raise ValueError("data must have at least one mode")
    if arr.size == 0:
        raise ValueError(f"data is empty (shape {arr.shape})")
    be = get_backend(backend) if backend is not None else (src or get_backend("numpy"))
    dtype = _dtype_name(dtype) or (arr.dtype.name if arr.dtype in (np.float32, np.float64) else "float64")
    arr = arr.astype(np.float64, copy=False)
    if observed is None:
        obs = None
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"data has {int(bad.sum())} NaN/Inf entries; mark missing entries with observed= "
                             "(a boolean mask, True where observed; np.isfinite(data) if those are the missing ones), "
                             "pass np.ma.masked_invalid(data), or clean the data")
    else:
        obs, _ = _numpy_of(observed, "observed")
        if obs.shape != arr.shape:
            raise ValueError(f"observed has shape {obs.shape} but data has shape {arr.shape}")
        if obs.dtype != bool:
            if not np.all(np.isin(obs, (0, 1))):
                raise ValueError("observed must be a boolean mask (or 0/1 values)")
            obs = obs.astype(bool)
        if masked is not None:
            obs = obs & ~masked
        if not obs.any():
            raise ValueError("observed marks no entry as observed; there is nothing to fit")
        bad = obs & ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"data has {int(bad.sum())} NaN/Inf entries at observed positions; "
                             "set observed=False there or clean the data")
        if obs.all():
            obs = None
    # scale without overflow: divide by the largest magnitude first, then by the RMS (in place)
    y = np.array(arr, dtype=np.float64) if obs is None else np.where(obs, arr, 0.0)
    peak = max(abs(float(y.max())), abs(float(y.min())))  # no |y| temporary: fits stay within ~2x the data
    scale = 0.0
    if peak > 0:
        y /= peak
        n_obs = y.size if obs is None else int(obs.sum())
        rms = math.sqrt(float(np.vdot(y, y)) / n_obs)
        y /= rms
        scale = peak * rms
    if not math.isfinite(scale):
        raise ValueError("the data's scale overflows float64")
    work = get_backend("cupy") if be.name == "cupy" else get_backend("numpy")
    xp = work.xp
    y = xp.asarray(y)
    w = None if obs is None else xp.asarray(obs)
    n = int(y.size if w is None else int(obs.sum()))
    device = src.device_of(data) if src is not None and src.name == be.name and be.name != "numpy" else None
    heldout = None
    if obs is not None:
        heldout = ~obs & np.isfinite(arr)
        if hidden is not None:
            heldout &= ~hidden
    return Prepared(FitData(y, w, n, float(xp.vdot(y, y)), work), scale, be, dtype, arr, obs, device, peak,
                    heldout)
