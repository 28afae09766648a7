"""tnmars: tensor networks that select their own ranks (MARS), on NumPy, CuPy and PyTorch.

tnmars logs through the standard :mod:`logging` module under the ``"tnmars"`` logger and is
silent by default; ``logging.basicConfig(level=logging.INFO)`` (or a handler on
``logging.getLogger("tnmars")``) shows what it does.

>>> import tnmars
>>> net = tnmars.Network.tucker((8, 8, 8), ranks=4, seed=0)
>>> net.bonds
{'A': 4, 'B': 4, 'C': 4}
>>> {"fit", "save", "load"} <= set(dir(tnmars))
True
"""
import logging
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
    "search": ("tnmars.fitting.structure", "search"),
    "sweep": ("tnmars.fitting.sweep", "sweep"),
    "save": ("tnmars.io", "save"),
    "load": ("tnmars.io", "load"),
}

__all__ = ["Network", "Plan", "contract", "get_backend", "available_backends", "__version__", *_LAZY]

# a library never configures logging for its user: no output unless the application asks
logging.getLogger(__name__).addHandler(logging.NullHandler())


#: submodules ``tnmars.<name>`` reaches without importing them first (``tnmars.gradients.vjp``)
_SUBMODULES = ("gradients", "interop", "plots", "io", "fitting", "nn", "masks")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return import_module(f"tnmars.{name}")
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tnmars' has no attribute {name!r}")


def __dir__() -> list[str]:
    """Lazy names are listed before their first use, so completion and ``dir()`` find them."""
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
