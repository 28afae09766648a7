"""NumPy backend, and CuPy through the same code path (the array module is swapped)."""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from .base import Backend


@lru_cache(maxsize=256)
def _dtype_name(dtype: Any) -> str:
    return str(dtype)  # about 9 us on NumPy 2 per call, hence the cache


class NumpyBackend(Backend):
    """Reference CPU backend. :class:`CupyBackend` reuses every method via :attr:`xp`."""

    name = "numpy"
    autograd = False

    @property
    def xp(self):
        return np

    def is_array(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def dtype_name(self, x: Any) -> str:
        return _dtype_name(x.dtype)

    def device_of(self, x: Any) -> str:
        return "cpu"

    def check_device(self, device: str | None) -> None:
        if device is not None and str(device) != "cpu":  # (also torch.device("cpu"))
            raise ValueError(f"the numpy backend runs on the CPU only; got device={device!r}")

    def asarray(self, x: Any, dtype: str | None = None, device: str | None = None) -> Any:
        self.check_device(device)
        if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
            from . import get_backend  # (its to_numpy: bfloat16, lazy conjugate and negative bits)

            x = get_backend("torch").to_numpy(x)
        elif hasattr(x, "get") and type(x).__module__.startswith("cupy"):
            x = x.get()
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any):
        return np.asarray(x)

    def zeros(self, shape: Sequence[int], dtype: str, device: str | None = None) -> Any:
        return self.xp.zeros(tuple(shape), dtype=dtype)

    # the arrays' own methods (NumPy's and CuPy's alike): the module functions wrap them in a
    # Python layer that cost as much as a small array's reshape itself, millions of times in a
    # ring fit's contractions
    def transpose(self, x: Any, axes: Sequence[int]) -> Any:
        try:
            return x.transpose(tuple(axes))
        except AttributeError:  # (a Python number or list)
            return self.xp.transpose(x, tuple(axes))

    def reshape(self, x: Any, shape: Sequence[int]) -> Any:
        try:
            return x.reshape(tuple(shape))
        except AttributeError:
            return self.xp.reshape(x, tuple(shape))

    def matmul(self, a: Any, b: Any) -> Any:
        return self.xp.matmul(a, b)

    def sum(self, x: Any, axis=None) -> Any:
        # integers keep their dtype, as in numpy.einsum ('ij->i' on int8 is int8; np.sum widens to
        # int64, so a contraction's dtype depended on whether its spec summed an operand alone)
        dtype = x.dtype if x.dtype.kind in "iu" else None
        return self.xp.sum(x, axis=tuple(axis) if isinstance(axis, (list, tuple)) else axis, dtype=dtype)

    def take(self, x: Any, indices: Sequence[int], axis: int) -> Any:
        return self.xp.take(x, self.xp.asarray(indices, dtype=np.int64), axis=axis)

    def tensordot(self, a: Any, b: Any, axes_a: Sequence[int], axes_b: Sequence[int]) -> Any:
        return self.xp.tensordot(a, b, axes=(list(axes_a), list(axes_b)))

    def contiguous(self, x: Any) -> Any:
        # ascontiguousarray would turn a 0-d result into shape (1,)
        return x if x.flags.c_contiguous else self.xp.ascontiguousarray(x)

    def copy(self, x: Any) -> Any:
        return self.xp.array(x, copy=True, order="C")

    def result_dtype(self, arrays: Sequence[Any]) -> str:
        return str(self.xp.result_type(*arrays))

    def exp(self, x: Any) -> Any:
        return self.xp.exp(x)

    def log(self, x: Any) -> Any:
        return self.xp.log(x)

    def sigmoid(self, x: Any) -> Any:
        xp = self.xp
        # numerically stable for large |x|
        return xp.where(x >= 0, 1.0 / (1.0 + xp.exp(-xp.abs(x))), xp.exp(-xp.abs(x)) / (1.0 + xp.exp(-xp.abs(x))))

    def clip(self, x: Any, low: float, high: float) -> Any:
        return self.xp.clip(x, low, high)

    def isfinite_all(self, x: Any) -> bool:
        return bool(self.xp.all(self.xp.isfinite(x)))

    def rng(self, seed: int | None, device: str | None = None) -> Any:
        return self.xp.random.default_rng(seed)

    def uniform(self, rng: Any, shape: Sequence[int], dtype: str, device: str | None = None) -> Any:
        return rng.random(tuple(shape)).astype(dtype, copy=False)

    def normal(self, rng: Any, shape: Sequence[int], dtype: str, device: str | None = None) -> Any:
        return rng.standard_normal(tuple(shape)).astype(dtype, copy=False)
