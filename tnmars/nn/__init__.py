"""Tensorized PyTorch layers that select their own ranks with MARS.

Importing this package imports torch. Everything here is built on :class:`tnmars.Network`.
Layers live in :mod:`.layers`, training helpers in :mod:`.training`, recurrent models in
:mod:`.recurrent`; names are exported lazily from those modules (see ``_LAZY``).
"""
from importlib import import_module
from typing import Any

from .masks import BondMasks

# name -> module; each module's owner adds its public names here
_LAZY: dict[str, str] = {}

__all__ = ["BondMasks", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tnmars.nn' has no attribute {name!r}")
