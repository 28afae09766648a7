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

Two mask priors are offered. The paper's :func:`bernoulli_log_prior` charges every kept rank
index the same ``log((1 - pi)/pi)``, whatever the number of parameters it controls. The
Occam (BIC) prior :func:`bic_log_prior` charges ``(c/2) log N`` per *parameter* of the network
at the selected ranks, ``log p(m) = -(c/2) log(N) P(r(m))``; its relaxed form is exact
because a core's size is multilinear in the ranks of its (distinct) bonds and the masks are
independent: ``E_q[P(r(m))] = P(E_q[r])`` with ``E_q[r_b] = sum_j phi_bj``
(:func:`expected_num_params`).
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


def param_count_terms(network: Any) -> tuple[tuple[int, tuple[str, ...]], ...]:
    """Each core's size as ``(constant, bonds)``: ``size = constant * prod(rank[b] for b in bonds)``.

    ``network`` is a :class:`~tnmars.Network` (anything with ``inputs``, ``dims`` and ``bonds``).
    A bond never repeats inside one core (specs refuse traces), so every core's size is
    multilinear in the ranks, which is what makes :func:`expected_num_params` exact.

    >>> import tnmars
    >>> param_count_terms(tnmars.Network.tucker((5, 6, 7), (2, 3, 4)))
    ((1, ('A', 'B', 'C')), (5, ('A',)), (6, ('B',)), (7, ('C',)))
    """
    bonds = set(network.bonds)
    out = []
    for term in network.inputs:
        const = 1
        for c in term:
            if c not in bonds:
                const *= int(network.dims[c])
        out.append((const, tuple(c for c in term if c in bonds)))
    return tuple(out)


def _terms(network_or_terms: Any) -> tuple[tuple[int, tuple[str, ...]], ...]:
    return network_or_terms if isinstance(network_or_terms, tuple) else param_count_terms(network_or_terms)


def num_params_at_ranks(network_or_terms: Any, ranks: Mapping[str, Any]) -> Any:
    """``P(r) = sum_cores constant * prod_b r_b``; ``ranks`` may be real (expected ranks) or
    backend scalars (torch autograd flows through)."""
    total = 0.0
    for const, bonds in _terms(network_or_terms):
        term = float(const)
        for b in bonds:
            term = term * ranks[b]
        total = total + term
    return total


def expected_ranks(logits: Mapping[str, Any], backend: Backend) -> dict[str, Any]:
    """``E_q[r_b] = sum_j phi_bj`` for independent Bernoulli masks ``q(m) = prod Bernoulli(phi)``."""
    return {b: backend.sum(backend.sigmoid(lg)) for b, lg in logits.items()}


def expected_num_params(network_or_terms: Any, logits: Mapping[str, Any], backend: Backend) -> Any:
    """``E_q[P(r(m))]``, the expected parameter count of the network at the masked ranks.

    Exact, not an approximation: ``P`` is a sum over cores of products of *distinct* bonds'
    ranks, and ``r_b = sum_j m_bj`` with independent masks, so the expectation of each
    product is the product of ``E[r_b] = sum_j phi_bj``.

    >>> import numpy as np, tnmars
    >>> from tnmars.backends import get_backend
    >>> net = tnmars.Network.cp((4, 5, 6), 3)
    >>> logits = {"A": np.array([30.0, 30.0, -30.0])}          # two indices (almost) surely kept
    >>> round(float(expected_num_params(net, logits, get_backend("numpy"))), 6)
    30.0
    """
    return num_params_at_ranks(network_or_terms, expected_ranks(logits, backend))


def expected_num_params_rank_grad(network_or_terms: Any, ranks: Mapping[str, float]) -> dict[str, float]:
    """``dP/dr_b`` at real ranks ``r`` (the sum, over cores holding ``b``, of the core's size
    without ``r_b``)."""
    grad = {b: 0.0 for b in ranks}
    for const, bonds in _terms(network_or_terms):
        for k, b in enumerate(bonds):
            term = float(const)
            for j, other in enumerate(bonds):
                if j != k:
                    term *= float(ranks[other])
            grad[b] += term
    return grad


def bic_penalty(n_obs: int, strength: float = 1.0) -> float:
    """Nats charged per parameter by the Occam prior: ``(c/2) log N``."""
    if int(n_obs) < 1:
        raise ValueError(f"the BIC prior needs at least one observation; got n_obs={n_obs}")
    return 0.5 * float(strength) * math.log(int(n_obs))


def bic_log_prior(network_or_terms: Any, logits: Mapping[str, Any], n_obs: int, backend: Backend,
                  strength: float = 1.0) -> Any:
    """Expected Occam (BIC) log prior of the masks: ``-(c/2) log(N) E_q[P(r(m))]``.

    ``c = strength`` (1 is BIC), ``N = n_obs`` the number of observed entries. Like the
    paper's :func:`bernoulli_log_prior` it is the expectation of the log prior under
    ``q(m) = prod Bernoulli(phi)`` (no entropy term), but the cost of a rank index is the
    number of parameters it controls at the current expected ranks, so indices of big cores
    cost more. Differentiable by autograd (torch); :func:`bic_log_prior_grad` gives the
    gradient explicitly for NumPy / CuPy.

    >>> import numpy as np, tnmars
    >>> from tnmars.backends import get_backend
    >>> net = tnmars.Network.cp((4, 5, 6), 2)
    >>> lp = bic_log_prior(net, {"A": np.array([30.0, -30.0])}, 100, get_backend("numpy"))
    >>> bool(np.isclose(lp, -0.5 * np.log(100) * 15))    # one component: 4 + 5 + 6 parameters
    True
    """
    return -bic_penalty(n_obs, strength) * expected_num_params(network_or_terms, logits, backend)


def bic_log_prior_grad(network_or_terms: Any, logits: Mapping[str, Any], n_obs: int, backend: Backend,
                       strength: float = 1.0) -> dict[str, Any]:
    """d :func:`bic_log_prior` / d logit, per bond: ``-(c/2) log N * dP/dr_b * phi (1 - phi)``."""
    ranks = {b: float(backend.to_numpy(v)) for b, v in expected_ranks(logits, backend).items()}
    dp = expected_num_params_rank_grad(network_or_terms, ranks)
    pen = bic_penalty(n_obs, strength)
    out = {}
    for b, lg in logits.items():
        phi = backend.sigmoid(lg)
        out[b] = phi * (1.0 - phi) * (-pen * dp[b])
    return out


def bernoulli_log_prior_grad(logits: Any, pi: float, backend: Backend) -> Any:
    """d :func:`bernoulli_log_prior` / d logit: ``phi (1 - phi) log(pi / (1 - pi))``."""
    phi = backend.sigmoid(logits)
    return phi * (1.0 - phi) * (math.log(pi) - math.log1p(-pi))


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
