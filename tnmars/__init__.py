"""tnmars: tensor networks that select their own ranks (MARS), on NumPy, CuPy and PyTorch."""
from .backends import available_backends, get_backend
from .contract import Plan, contract
from .network import Network

__version__ = "0.1.0"

__all__ = ["Network", "Plan", "contract", "get_backend", "available_backends", "__version__"]
