"""Interoperability with tensorly: SVD-based initialisations (and, later, object conversion).

>>> from tnmars.interop import svd_init
"""
from .init import svd_init

__all__ = ["svd_init"]
