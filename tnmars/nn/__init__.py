"""Tensorized PyTorch layers that select their own ranks with MARS.

Importing this package imports torch. Everything here is built on :class:`tnmars.Network`.
"""
from .masks import BondMasks

__all__ = ["BondMasks"]
