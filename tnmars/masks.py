"""MARS mask mathematics on any backend: logits, hard-concrete samples, MAP masks, priors.

MARS (Kodryan et al., AISTATS 2023) puts a binary mask ``m_b`` on every bond ``b``. Its
relaxed MAP objective, per observation (what :func:`mars_objective` builds), is

    mean NLL over the batch
      - (1/N) * [ sum_b sum_j phi_bj log(pi) + (1 - phi_bj) log(1 - pi)
                  + sum_cores log N(core | 0, sigma^2) ]

with ``phi = sigmoid(logit)``, ``N`` the number of observations and ``sigma^2 = 100``. There
is no entropy term. Masks are sampled from the hard concrete distribution during training
and rounded (``phi > 0.5``) afterwards.

All functions take a :class:`~tnmars.backends.Backend` and arrays of that backend, so the
same code serves NumPy (with environment gradients, see :func:`hard_concrete_grad`),
CuPy and PyTorch (autograd).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends import Backend

#: stretch interval of the hard concrete distribution (Louizos et al., 2018)
GAMMA = -0.1
ZETA = 1.1
#: variance of the Gaussian prior on core entries (the reference code's sigma_inv = 0.1)
CORE_PRIOR_VARIANCE = 100.0
#: the logistic noise is clamped away from 0 and 1 like torch's ``clamp_probs``
_EPS = 1e-6


def check_pi(pi: float) -> float:
    """Validate the Bernoulli prior parameter: MARS needs ``0 < pi <= 0.5``."""
    try:
        pi = float(pi)
    except (TypeError, ValueError):
        raise TypeError(f"pi must be a number in (0, 0.5]; got {pi!r}") from None
    if not (0.0 < pi <= 0.5) or math.isnan(pi):
        raise ValueError(f"pi must lie in (0, 0.5] (a prior favouring closed masks); got {pi}")
    return pi


def check_temperature(temperature: float) -> float:
    temperature = float(temperature)
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be positive and finite; got {temperature}")
    return temperature


def init_logits(
    sizes: Mapping[str, int], alpha: float, backend: Backend, *, seed: int | None = None,
    dtype: str = "float64", device: str | None = None, std: float = 0.01,
) -> dict[str, Any]:
    """One logit vector per bond, i.i.d. ``N(alpha, std^2)`` (the paper's initialisation)."""
    rng = np.random.default_rng(seed)
    return {
        bond: backend.asarray(alpha + std * rng.standard_normal(int(n)), dtype=dtype, device=device)
        for bond, n in sizes.items()
    }


def probabilities(logits: Any, backend: Backend) -> Any:
    """``phi = sigmoid(logit)``: the probability that each rank index is kept."""
    return backend.sigmoid(logits)


def map_mask(logits: Any, backend: Backend) -> Any:
    """The MAP (rounded) mask ``phi > 0.5``, as 0/1 values of the logits' dtype."""
    return (logits > 0) * 1.0 if backend.name != "torch" else (logits > 0).to(logits.dtype)


def hard_concrete(logits: Any, temperature: float, noise: Any, backend: Backend) -> Any:
    """A hard-concrete sample given uniform ``noise`` of the logits' shape.

    ``s = clamp(sigmoid((l + log u - log(1 - u)) / T) * (zeta - gamma) + gamma, 0, 1)``.
    Differentiable in ``logits`` (zero gradient where the clamp is active).
    """
    u = backend.clip(noise, _EPS, 1.0 - _EPS)
    s = backend.sigmoid((logits + backend.log(u) - backend.log(1.0 - u)) / temperature)
    return backend.clip(s * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def hard_concrete_grad(logits: Any, temperature: float, noise: Any, backend: Backend) -> tuple[Any, Any]:
    """The sample of :func:`hard_concrete` and its derivative d sample / d logit (elementwise),
    for backends without autograd."""
    u = backend.clip(noise, _EPS, 1.0 - _EPS)
    s = backend.sigmoid((logits + backend.log(u) - backend.log(1.0 - u)) / temperature)
    stretched = s * (ZETA - GAMMA) + GAMMA
    inside = (stretched > 0.0) * (stretched < 1.0)
    ds = s * (1.0 - s) * (ZETA - GAMMA) / temperature * inside
    return backend.clip(stretched, 0.0, 1.0), ds


def sample_probabilities(logits: Any, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ``P(s = 0)`` and ``P(s = 1)`` of a hard-concrete sample with logit ``l``.

    ``P(s=0) = sigmoid(-l + T log(-gamma/zeta))`` and ``P(s=1) = sigmoid(l + T log((zeta-1)/(1-gamma)))``;
    for the stretch (-0.1, 1.1) both shifts equal ``-T ln 11``. Used to test the sampler.
    """
    logits = np.asarray(logits, dtype=float)
    shift0 = temperature * math.log(-GAMMA / ZETA)  # = -T ln 11
    shift1 = temperature * math.log((ZETA - 1.0) / (1.0 - GAMMA))  # = -T ln 11
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    return sig(-logits + shift0), sig(logits + shift1)


def bernoulli_log_prior(logits: Any, pi: float, backend: Backend) -> Any:
    """``sum_j phi_j log(pi) + (1 - phi_j) log(1 - pi)``: expected log prior of one mask."""
    phi = backend.sigmoid(logits)
    return backend.sum(phi * math.log(pi) + (1.0 - phi) * math.log1p(-pi))


def gaussian_log_prior(cores: Sequence[Any], backend: Backend, variance: float = CORE_PRIOR_VARIANCE) -> Any:
    """``sum_cores log N(core | 0, variance)`` without the constant: ``-||G||^2 / (2 variance)``."""
    total = 0.0
    for core in cores:
        total = total + backend.sum(core * core)
    return -total / (2.0 * variance)


@dataclass(frozen=True)
class TemperatureSchedule:
    """Exponential decay from ``start`` to ``end`` over ``steps`` steps (then held at ``end``).

    >>> sched = TemperatureSchedule(0.1, 0.01, 100)
    >>> round(sched(0), 4), round(sched(50), 4), round(sched(100), 4), round(sched(500), 4)
    (0.1, 0.0316, 0.01, 0.01)
    """

    start: float = 0.1
    end: float = 0.01
    steps: int = 1000

    def __post_init__(self) -> None:
        check_temperature(self.start)
        check_temperature(self.end)
        if int(self.steps) < 1:
            raise ValueError(f"the temperature schedule needs at least one step; got {self.steps}")

    def __call__(self, step: int) -> float:
        frac = min(max(step, 0) / self.steps, 1.0)
        return self.start * (self.end / self.start) ** frac


def compression_ratio(other_params: int, dense_sizes: Sequence[int], selected_params: Sequence[int]) -> float:
    """The paper's whole-model compression: (other + sum dense) / (other + sum selected).

    Mask logits belong to neither side; biases and plain layers are ``other_params``.
    """
    den = other_params + sum(selected_params)
    return float("inf") if den == 0 else (other_params + sum(dense_sizes)) / den
