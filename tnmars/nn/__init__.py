"""Tensorized PyTorch layers that select their own ranks with MARS.

Importing this package imports torch. Everything here is built on :class:`tnmars.Network`.
Layers live in :mod:`.layers`, training helpers in :mod:`.training`, recurrent models in
:mod:`.recurrent`; names are exported lazily from those modules (see ``_LAZY``).
"""
from importlib import import_module
from typing import Any

from .masks import BondMasks

# name -> module; each module's owner adds its public names here
_LAZY: dict[str, str] = {
    "TensorizedLinear": ".layers",
    "LowRankLinear": ".layers",
    "Tucker2Conv2d": ".layers",
    "TensorizedConv2d": ".layers",
    "TensorizedEmbedding": ".layers",
    "factorize": ".layers",
    "suggest_shape": ".layers",
    "matrix_network": ".layers",
    "matrix_params": ".layers",
    "tensorize": ".convert",
    "TensorizedMultiheadAttention": ".attention",
    "invalidate_caches": ".kept",
    "PRESETS": ".masks",
    "rank_modules": ".training",
    "TensorizedLayer": ".base",
    "NetworkMatmul": ".base",
    "tt_matmul": ".base",
    "MarsLoss": ".training",
    "MarsTemperature": ".training",
    "mars_penalty": ".training",
    "log_prior": ".training",
    "compress": ".training",
    "load_compressed": ".training",
    "summary": ".training",
    "ModelSummary": ".training",
    "set_temperature": ".training",
    "get_temperature": ".training",
    "set_pi": ".training",
    "set_alpha": ".training",
    "set_warmup": ".training",
    "mars_layers": ".training",
    "mars_modules": ".training",
    "tensorized_layers": ".training",
    # recurrent models and stability tools (issue 5)
    "LinearRNN": ".recurrent",
    "TanhRNN": ".recurrent",
    "LSTM": ".recurrent",
    "TTRecurrentMatrix": ".recurrent",
    "enforce_stability": ".recurrent",
    "register_stability_hook": ".recurrent",
    "LSTM_L1_BOUNDS": ".recurrent",
    "power_iteration": ".stability",
    "spectral_norm": ".stability",
    "project_spectral": ".stability",
    "effective_stability": ".stability",
    "StabilityReport": ".stability",
    # Occam (BIC) pruning after MARS training (issue 4)
    "occam_prune": ".occam",
    "OccamReport": ".occam",
    "classification_nll": ".occam",
    "regression_nll": ".occam",
}

__all__ = ["BondMasks", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tnmars.nn' has no attribute {name!r}")
