"""tnmars: tensor networks that select their own ranks (MARS), on NumPy, CuPy and PyTorch.

>>> import tnmars
>>> net = tnmars.Network.tucker((8, 8, 8), ranks=4, seed=0)
>>> net.bonds
{'A': 4, 'B': 4, 'C': 4}
"""
from importlib import import_module
from typing import Any

from .backends import available_backends, get_backend
from .contract import Plan, contract
from .network import Network

__version__ = "0.1.0"

# heavier modules load on first use, so ``import tnmars`` stays light
_LAZY = {
    "fit": ("tnmars.fitting", "fit"),
    "FitResult": ("tnmars.fitting", "FitResult"),
    "Relaxation": ("tnmars.fitting", "Relaxation"),
    "save": ("tnmars.io", "save"),
    "load": ("tnmars.io", "load"),
}

__all__ = ["Network", "Plan", "contract", "get_backend", "available_backends", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tnmars' has no attribute {name!r}")
