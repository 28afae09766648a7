"""CuPy backend: the NumPy code path with ``cupy`` as the array module.

CuPy needs a CUDA GPU; it is imported only when a CuPy array or ``backend="cupy"`` is
first seen, so tnmars imports and runs without it.
"""
from __future__ import annotations

from typing import Any

from .numpy_backend import NumpyBackend


def _import_cupy():
    try:
        import cupy  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise ImportError(
            "the cupy backend needs CuPy and a CUDA GPU: pip install 'tnmars[cupy]' "
            "(cupy-cuda12x); it is not installed here"
        ) from err
    return cupy


class CupyBackend(NumpyBackend):
    name = "cupy"

    def __init__(self) -> None:
        self._cupy = _import_cupy()

    @property
    def xp(self):
        return self._cupy

    def is_array(self, x: Any) -> bool:
        return isinstance(x, self._cupy.ndarray)

    def device_of(self, x: Any) -> str:
        return f"cuda:{x.device.id}"

    def check_device(self, device: str | None) -> None:
        if device is not None and not str(device).startswith("cuda"):
            raise ValueError(f"the cupy backend runs on CUDA devices; got device={device!r}")

    def asarray(self, x: Any, dtype: str | None = None, device: str | None = None) -> Any:
        self.check_device(device)
        cp = self._cupy
        if hasattr(x, "detach") and hasattr(x, "cpu"):
            from . import get_backend  # (its to_numpy: bfloat16, lazy conjugate and negative bits)

            x = get_backend("torch").to_numpy(x)
        if device is not None and ":" in str(device):
            with cp.cuda.Device(int(str(device).split(":")[1])):
                return cp.asarray(x, dtype=dtype)
        return cp.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any):
        return self._cupy.asnumpy(x)

    def rng(self, seed: int | None, device: str | None = None) -> Any:
        return self._cupy.random.default_rng(seed)

    def uniform(self, rng, shape, dtype, device=None):
        return rng.random(tuple(shape), dtype="float64").astype(dtype, copy=False)

    def normal(self, rng, shape, dtype, device=None):
        return rng.standard_normal(tuple(shape), dtype="float64").astype(dtype, copy=False)
