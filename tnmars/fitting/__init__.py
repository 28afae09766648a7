"""Tensor approximation and completion with automatic rank selection.

One job per module, in the order a fit runs them:

- :mod:`~tnmars.fitting.data`: check the data and scale it to unit mean square;
- :mod:`~tnmars.fitting.proposals`: where the selection starts (unfolding spectra, rank 1, or
  the MARS relaxation of :mod:`~tnmars.fitting.relaxation`);
- :mod:`~tnmars.fitting.search`: add and remove rank indices (:mod:`~tnmars.fitting.moves`)
  while the MAP criterion of :mod:`~tnmars.fitting.criterion` improves, every candidate
  refitted by the exact solvers of :mod:`~tnmars.fitting.solvers`;
- :mod:`~tnmars.fitting.api`: :func:`fit`, which orchestrates them and returns a
  :class:`~tnmars.fitting.result.FitResult`.

:mod:`~tnmars.fitting.spectral` holds the classical rank selectors (EVBMF, MDL, energy
truncation) and :mod:`~tnmars.fitting.graph` what the engine knows about any topology
(feasible ranks, degrees of freedom, the pieces of a core's environment).
(The package is ``fitting`` so that ``tnmars.fit`` stays the function.)
"""
from .api import FORMATS, PRIORS, fit
from .criterion import Occam
from .relaxation import Adam, Relaxation
from .result import FitResult

__all__ = ["fit", "FitResult", "Relaxation", "Occam", "Adam", "FORMATS", "PRIORS"]
