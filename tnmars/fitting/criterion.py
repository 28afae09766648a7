"""The one criterion that decides the ranks: the MAP objective under an Occam prior.

For a network fitted to ``N`` observed entries with squared error ``SSE`` and ``D`` degrees
of freedom (parameters minus gauge, :func:`~tnmars.fitting.graph.degrees_of_freedom`), the
negative log posterior with the noise variance profiled out and the Occam (BIC) prior
``log p(ranks) = -(c/2) D log N`` is, up to constants,

    objective = (N/2) log(SSE / N) + (c/2) D log N.

An index that only fits noise lowers ``SSE`` by about ``D_index`` noise variances, i.e. gains
about ``D_index / 2`` nats, and pays ``(c/2) D_index log N``; a real component gains its energy
over the noise variance. ``c`` (``strength``) is 1 for BIC; larger values prune more.
``SSE / N`` is floored at ``floor`` (data scaled to unit mean square; :func:`tnmars.fit` gives
``MSE_FLOOR`` times the share of the mean square spread about the mean, see
:func:`~tnmars.fitting.api.criterion_floor`): below a relative error of 1e-4 of the spread every
fit counts as exact, so on noiseless data the smallest exact network wins instead of the one
whose rounding error happens to be lowest.

>>> c = Occam(n_obs=1000)
>>> c.objective(sse=10.0, dof=20) < c.objective(sse=9.9, dof=30)   # 10 more dof for 1% of SSE: no
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Occam", "MSE_FLOOR", "MAX_DOF_SHARE"]

#: smallest mean squared error the criterion distinguishes, as a share of the data's spread about their mean
MSE_FLOOR = 1e-8
#: the criterion is trusted for networks with at most this share of the observations as degrees
#: of freedom: near ``D = N`` a fit interpolates the data and the profile likelihood loses its meaning
MAX_DOF_SHARE = 0.5
#: nats per degree of freedom that order exact fits (at the floor) when the prior's strength is 0
#: (a budget fit): far below any difference of fit the criterion resolves, so only ties move
EXACT_TIE_BREAK = 1e-6


@dataclass(frozen=True)
class Occam:
    """The MAP objective with an Occam prior; lower is better (nats)."""

    n_obs: int
    strength: float = 1.0
    floor: float = MSE_FLOOR

    def objective(self, sse: float, dof: int) -> float:
        mse = float(sse) / self.n_obs
        if mse <= self.floor and self.strength == 0.0:
            # exact fits tie at the floor; without the prior's penalty (a budget fit) the fewer
            # degrees of freedom win, as the floor's purpose asks: a budget above the data's exact
            # network returned a larger exact one (TT (3, 3), 84 parameters, for the exact (2, 3), 61)
            return 0.5 * self.n_obs * math.log(self.floor) + EXACT_TIE_BREAK * dof
        return 0.5 * self.n_obs * math.log(max(mse, self.floor)) + 0.5 * self.strength * dof * math.log(self.n_obs)

    def penalty_per_dof(self) -> float:
        """What one degree of freedom costs, in nats."""
        return 0.5 * self.strength * math.log(self.n_obs)

    @property
    def max_dof(self) -> float:
        """The most degrees of freedom a candidate may have (``MAX_DOF_SHARE`` of ``N``)."""
        return MAX_DOF_SHARE * self.n_obs

    def noise_variance(self, sse: float, dof: int) -> float:
        """Noise variance implied by a fit: ``SSE / (N - D)`` (at least a tenth of ``N`` in the
        denominator, and at least the floor)."""
        return max(float(sse) / max(self.n_obs - dof, 0.1 * self.n_obs), self.floor)
