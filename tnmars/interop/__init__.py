"""Interoperability with tensorly: SVD-based initialisations and object conversion.

>>> from tnmars.interop import svd_init, from_tensorly, to_tensorly
"""
from .init import svd_init
from .tensorly import from_tensorly, to_tensorly, topology

__all__ = ["svd_init", "from_tensorly", "to_tensorly", "topology"]
