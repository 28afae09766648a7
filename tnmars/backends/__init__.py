"""Backend dispatch: one small class per framework, found by name or from an array's class.

Frameworks are imported lazily: ``import tnmars`` imports NumPy only. Detection looks at
``type(x).__module__`` and never imports torch or cupy to answer "is this a tensor?".

>>> import numpy as np
>>> from tnmars.backends import get_backend, infer_backend
>>> get_backend("numpy").name
'numpy'
>>> infer_backend([np.ones(2)]).name
'numpy'
"""
from __future__ import annotations

from collections.abc import Iterable
from functools import cache, lru_cache
from typing import Any

from .base import Backend

__all__ = ["Backend", "get_backend", "infer_backend", "backend_name_of", "available_backends"]

_MODULE_PREFIX = {"numpy": "numpy", "torch": "torch", "cupy": "cupy"}
BACKEND_NAMES = ("numpy", "torch", "cupy")


@cache
def get_backend(name: str) -> Backend:
    """The backend called ``name`` (``"numpy"``, ``"torch"`` or ``"cupy"``)."""
    if isinstance(name, Backend):
        return name
    if name == "numpy":
        from .numpy_backend import NumpyBackend

        return NumpyBackend()
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend()
    if name == "cupy":
        from .cupy_backend import CupyBackend

        return CupyBackend()
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")


@lru_cache(maxsize=64)
def _name_of_class(cls: type) -> str | None:
    module = cls.__module__.split(".")[0]
    if module == "numpy":
        return "numpy"
    if module == "torch":
        return "torch"
    if module == "cupy" or module == "cupyx":
        return "cupy"
    return None


def backend_name_of(x: Any) -> str | None:
    """The backend name of one array, or None for Python scalars and lists."""
    return _name_of_class(type(x))


def infer_backend(arrays: Iterable[Any], default: str = "numpy") -> Backend:
    """The single backend of ``arrays``; mixing frameworks is refused with a ``TypeError``."""
    names = {n for n in (backend_name_of(a) for a in arrays) if n is not None}
    if len(names) > 1:
        raise TypeError(
            "arrays from different frameworks were mixed: "
            + ", ".join(sorted(names))
            + "; convert them first (e.g. Network.to(backend=...))"
        )
    return get_backend(names.pop() if names else default)


def available_backends() -> list[str]:
    """Backends that can be used on this machine."""
    out = []
    for name in BACKEND_NAMES:
        try:
            get_backend(name)
        except ImportError:
            continue
        out.append(name)
    return out
