"""Tensor approximation and completion with automatic rank selection (MARS).

:func:`fit` puts a MARS mask on every bond of a network (a built-in CP / Tucker / TT / TR
format at ``max_rank`` or any :class:`~tnmars.Network`), trains cores and mask logits by
relaxed MAP, reads the ranks off the MAP masks (``phi > 0.5``) and returns the *physically
pruned* network.

>>> import numpy as np, tnmars
>>> rng = np.random.default_rng(1)
>>> core, U = rng.standard_normal((2, 3, 4)), [rng.standard_normal((8, r)) for r in (2, 3, 4)]
>>> x = np.einsum("abc,ia,jb,kc->ijk", core, *U)
>>> res = tnmars.fit(x, "tucker", max_rank=6, seed=0, progress=False)
>>> res.ranks
(2, 3, 4)

The recipe (DESIGN.md "MARS, exactly")
--------------------------------------
- logits ``N(alpha, 0.01^2)`` per bond; one hard-concrete sample per step (stretch
  (-0.1, 1.1)), folded into one core per bond; temperature decayed exponentially 0.1 -> 0.01;
- objective = mean Gaussian NLL over the observed entries
  ``- (1/N) [sum_b sum_j phi log pi + (1 - phi) log(1 - pi) + sum_k log N(G_k | 0, 100)]``,
  ``N`` = number of observed entries, no entropy term;
- Adam on cores and logits; MAP mask ``phi > 0.5``; ``Network.prune``.
With the default ``prior="bic"`` this MARS phase is followed by an Occam (BIC) selection of
the ranks (see "Mask priors" below); ``prior="bernoulli"`` stops here (plus polish/refine).
NumPy and CuPy get their gradients from :mod:`tnmars.gradients` (environments), torch from
autograd; the maths is identical (tested).

Choices that are ours, and why (measured; benchmarks/results/rank_recovery*.md)
-------------------------------------------------------------------------------
- **Units and noise variance.** The data are divided by their RMS over the observed entries
  (results are returned in the data's units), so ranks do not depend on the unit of the
  data. The likelihood is the paper's Appendix D choice, log-likelihood = -MSE, on those
  normalised data: a Gaussian with variance 1/2 of the data's mean square
  (``noise_variance="mse"``). A *learned* variance (``"learn"``, the maximum-likelihood value
  updated every step) makes the data term grow without bound as the fit improves and
  measured worse (masks stayed open or closed wholesale on the Appendix D tensor: 0/3 exact
  recoveries in every setting tried). With Gaussian noise the MAP itself keeps rank indices
  whose noise-fitting gain beats ``log((1-pi)/pi)/N``; a larger ``noise_variance`` (or a
  smaller ``pi``) removes more of them.
- **Two time scales.** Cores learn at ``lr`` and logits at ``mask_lr = 10 lr``. With one
  learning rate for both (the paper), the cores learn to back each other up against the
  random mask dropouts, all components become needed and masks do not close: on the
  Appendix D tensor one lr (1e-2, 3000 steps, SVD or random start) kept ranks 6-8 in every
  seed tried. The paper's full recipe (random start, alpha=-0.5, lr 1e-2, 10^4 steps) does
  recover (4, 4, 4, 4) in 10/10 seeds with the current code, at a worse fit (mean
  log-likelihood -8.8e-3; the paper reports mean ranks (4.7, 4.4, 4.6, 4.2)); the defaults
  (10x faster logits, SVD start) recover (4, 4, 4, 4) in 10/10 seeds at -7.7e-4 (paper's
  prior) or -1e-14 (bic), in far fewer steps.
- **SVD initialisation** (tensorly HOSVD/HOOI, TT-SVD, TR-SVD at the maximal ranks) for
  Tucker, TT and TR: the energy sits in the leading components from the start, so the extra
  ones can close without a fight. Random starts at the same settings closed every mask
  (cores too slow to fit before the prior wins) or kept all of them. CP starts at random:
  an over-complete CP-ALS start is an overfit of cancelling components that never close.
- **alpha.** With an SVD start, ``alpha = 0.5`` (masks start mostly open) recovered the
  Appendix D ranks in 10/10 seeds; ``alpha = -0.5`` in 6/10 (it missed one weak component
  in the other four), but is better on noisy data (10 dB Tucker: -0.5 gave the true ranks
  3/3, +0.5 kept all 8 because the SVD start had already fitted the noise; noisy 32^4
  Tucker: -0.5 exact, +0.5 kept the maximal ranks). Random starts use
  ``alpha = -0.5`` (open only what the data ask for).
- **lr decay, polish and refine.** ``lr`` decays exponentially by ``lr_decay`` (0.1) over
  training; after pruning, ``polish`` deterministic Adam steps (default ``steps // 5``) refit
  the pruned cores (same objective, masks fixed), which is what brings the error of an exact
  rank to ~1e-3. ``refine`` (default on for random / network starts) is coordinate descent
  on the *deterministic* MAP objective seeded by MARS: each kept rank index, least probable
  first, is removed, the network refitted (``refine_steps``) and the removal kept if the
  objective drops. It merges duplicated components (CP) that the relaxed problem cannot.

Mask priors: the paper's Bernoulli prior and the Occam (BIC) prior
-----------------------------------------------------------------
``prior="bernoulli"`` is the paper's: each kept rank index costs ``log((1 - pi)/pi)`` nats,
whatever the number of parameters it controls. Under Gaussian noise an extra index gains
about (parameters it controls) x 1/2 nat by fitting noise, so indices that control many
parameters (Tucker 8^4 at rank 8, TT/TR middle bonds, CP components in completion) pay for
themselves unless ``pi`` is astronomically small: the paper's prior over-selects on noisy
data (10 dB CP completion: 11 components for a true 3, in 20/20 seeds).

``prior="bic"`` charges instead ``(c/2) log N`` per *parameter* of the network at the
selected ranks, ``log p(m) = -(c/2) log(N) P(r(m))`` (``c = prior_strength``, 1 = BIC), with a
proper Gaussian likelihood: the noise variance is the residual's, corrected for degrees of
freedom, ``SSE / (N - P)`` (:func:`residual_variance`). A noise-fitting index gains ~1/2 nat
per parameter and costs ``(1/2) log N`` (4.3 nats at N = 5400), so it goes; a real component
gains its energy over the noise variance and stays. ``fit`` runs MARS with the paper's
relaxation first (it opens and trains the components), estimates the noise variance from
the selected network, then does MAP coordinate descent under the BIC prior: each kept index
(least probable first) is removed, the network refitted (``refine_steps``, default 500; a
removal still far worse after a fifth of them is dropped early) and the removal kept when
the BIC objective drops; two passes. Measured (benchmarks/results/rank_recovery*.md): CP
completion 30^3, 20% observed, 10 dB: true rank 3 in 20/20 seeds, held-out error 1.000x the
oracle-rank parafac (paper's prior: 0/20, 3.0x).

``prior="bic-relaxed"`` puts the BIC prior into the relaxed MAP itself. Its expectation
under ``q(m) = prod Bernoulli(phi)`` is exact, ``E_q[P(r(m))] = P(E[r])`` with
``E[r_b] = sum_j phi_bj`` (:func:`tnmars.masks.expected_num_params`), so it is the same
"expected log prior, no entropy" construction as the paper's. It needs the noise variance
*during* training (``noise_variance="residual"``: the MAP network's residual, DOF-corrected,
updated every record). Measured worse than ``"bic"`` in trials: the BIC prior is ~100x
stronger per index than the paper's, and a weak true component whose mask closes early
(when the variance estimate still contains the misfit of a start far from the data)
never reopens; an estimate taken from hard-concrete samples (dropout misfit included)
collapsed ranks, one taken from the MAP network under-estimated the noise of networks
with as many parameters as observations and over-selected; random CP starts closed every
mask. It is offered for experiments; ``"bic"`` is the recommended Occam option.

Known limits (measured, see the results files)
----------------------------------------------
With the paper's prior, noisy data are over-selected (above). With ``"bic"``: TR stays
over-selected (order 4, 20 dB: the TR fits themselves are poorly optimised, error vs truth
3x the noise-free TT case) and the extra refits cost time (a 32^4 Tucker: about twice the
paper's prior). The noise-variance estimate needs ``N - P`` to be a sizeable share of
``N`` at the ranks MARS first selects (it divides by at least ``N/10``).

Choosing the prior, pi and alpha
--------------------------------
``prior="bic"`` is the default because it measured at least as good as the paper's prior
on every experiment of benchmarks/rank_recovery.py, and better under noise: Appendix D
(noiseless Tucker 8^4) 10/10 exact for both (log-likelihood -1e-14 vs -7.7e-4); Tucker
10 dB 2/3 exact vs 0/3 (the paper's prior kept rank 8); TT order 5 at 20 dB 3/3 vs 0/3; TR
0/3 for both (mean ranks (3.0, 4.7, 4.3, 7.0) vs (8, 8, 8, 8)); CP completion 20/20 vs 0/20;
the noisy 32^4 Tucker (2, 3, 4, 3) in 3/3 vs (6, 6, 6, 6), 3.35x faster than a HOOI grid
search. It costs time (about 1.3-2.5x the paper's prior: the refits of the selection). Use
``prior="bernoulli"`` for the paper's exact objective, for speed, or to trade fit against
size with ``pi``; ``prior_strength`` plays that role for ``"bic"`` (above 1 prunes more).

``pi`` is the Bernoulli prior probability that a rank index is kept; each kept index costs
``log((1 - pi)/pi) / N`` in the objective (4.6/N for the default 1e-2). Smaller ``pi``
prunes more; ``pi`` enters only logarithmically, so change it by decades (1e-2, 1e-3,
1e-4). With ``"bic"`` it acts in the MARS phase only. ``alpha`` sets where the masks start:
``phi = sigmoid(alpha)``. Start open (``alpha >= 0``) when the initial network already
represents the data well (SVD start, little noise); start closed (``alpha < 0``, the paper's
-0.5 to -1.75) when components must earn their place (random starts, noisy data); with the
paper's prior ``alpha=-0.5`` fixed the 10 dB Tucker (3/3) and is the fastest exact option on
the noisy 32^4 Tucker (8.6x faster than the grid). ``noise_variance`` trades data fit
against the prior under ``"bernoulli"``: larger values give smaller ranks.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import masks as mars
from ._checks import positive_int
from .backends import Backend, get_backend, infer_backend
from .gradients import vjp
from .network import Network

__all__ = ["fit", "FitResult", "Adam", "FORMATS"]

FORMATS = ("cp", "tucker", "tt", "tr")

#: defaults chosen by measurement (see the module docstring and benchmarks/results/rank_recovery*.md)
DEFAULT_ALPHA = {"svd": 0.5, "random": -0.5, "network": -0.5}
DEFAULT_INIT = {"tucker": "svd", "tt": "svd", "tr": "svd", "cp": "random"}
DEFAULT_STEPS = 3000
DEFAULT_LR = {"svd": 1e-3, "random": 3e-3, "network": 3e-3}
DEFAULT_MASK_LR_RATIO = 10.0
DEFAULT_LR_DECAY = 0.1
#: the residual variance divides by at least this share of N (the model may have more parameters than N)
MIN_DOF_SHARE = 0.1
#: coordinate-descent passes of the Occam selection (prior="bic"); each pass tries every kept index
BIC_REFINE_PASSES = 2
#: refit steps per tried removal (``refine_steps`` default) for each prior
DEFAULT_REFINE_STEPS = {"bernoulli": 200, "bic": 500, "bic-relaxed": 500}
#: a tried removal whose objective, after a short refit (1/5 of the steps), rose by more than this
#: many times what the prior would save is rejected without the full refit (measured ratios:
#: accepted removals <= 53, rejected >= 18 on TR and >= 256 on TT)
REFINE_HOPELESS = 200.0
#: floor of the estimated noise variance, in units of the data's mean square (a 60 dB SNR)
RESIDUAL_FLOOR = 1e-6
#: ``noise_variance="residual"``: weight of the previous estimate when a new one is taken (every record)
RESIDUAL_EMA = 0.5


def residual_variance(sse: float, n_obs: int, num_params: float) -> float:
    """Degrees-of-freedom corrected noise variance ``SSE / (N - P)`` (the denominator is kept
    at least ``MIN_DOF_SHARE * N``: a model with as many parameters as observations says
    nothing about the noise), floored at ``RESIDUAL_FLOOR`` (data scaled to unit RMS)."""
    return max(float(sse) / max(n_obs - float(num_params), MIN_DOF_SHARE * n_obs), RESIDUAL_FLOOR)


# ---------------------------------------------------------------------------------- Adam
class Adam:
    """Adam (Kingma & Ba, 2015) on NumPy or CuPy arrays, updated in place.

    The same maths as ``torch.optim.Adam`` with default betas; used where gradients come
    from :mod:`tnmars.gradients` instead of autograd.

    >>> import numpy as np
    >>> x = [np.array([3.0])]
    >>> opt = Adam(x, lr=0.1)
    >>> for _ in range(200):
    ...     opt.step([2 * x[0]])          # minimise x^2
    >>> abs(float(x[0][0])) < 0.05
    True
    """

    def __init__(self, params: list[Any], lr: float = 1e-2, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be positive; got {lr}")
        self.params = params
        self.lr = float(lr)
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.t = 0
        self.m = [p * 0.0 for p in params]
        self.v = [p * 0.0 for p in params]

    def step(self, grads: Sequence[Any]) -> None:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        c1 = 1.0 - b1**self.t
        c2 = 1.0 - b2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            p -= self.lr * (m / c1) / ((v / c2) ** 0.5 + self.eps)


# ---------------------------------------------------------------------------------- result
@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    network: the **pruned** network at the selected ranks, in the data's units and backend.
    full_network: the trained network at the maximal ranks (masks not applied).
    bonds: bond names, in the order of :attr:`ranks`.
    ranks: selected rank per bond (number of mask entries with ``phi > 0.5``).
    max_ranks: the bond sizes the fit started from.
    probabilities: bond -> final ``phi = sigmoid(logit)`` (NumPy arrays).
    relative_error: ``||T - data|| / ||data||`` over the observed entries, pruned network.
    heldout_error: the same over the unobserved (finite) entries, or ``None`` when all
        entries were observed or the unobserved ones hold no values.
    log_likelihood: ``-mean((T - data)^2)`` over the observed entries (the paper's
        Appendix D definition, data units).
    noise_variance: the Gaussian noise variance of the likelihood at the end (data units).
    compression: dense size / parameters of the pruned network.
    num_params: parameters of the pruned network.
    history: ``{"step", "loss", "nll", "map_loss", "ranks", "temperature"}`` lists, recorded
        every ``record_every`` steps (``ranks`` are MAP ranks at that step).
    interrupted: ``True`` when training stopped on Ctrl-C (the best recorded state is returned).
    steps_run: optimiser steps actually taken; seconds: wall time of the fit.
    settings: the hyperparameters used.
    """

    network: Network
    full_network: Network
    bonds: tuple[str, ...]
    ranks: tuple[int, ...]
    max_ranks: tuple[int, ...]
    probabilities: dict[str, np.ndarray]
    relative_error: float
    heldout_error: float | None
    log_likelihood: float
    noise_variance: float
    compression: float
    num_params: int
    history: dict[str, list]
    interrupted: bool
    steps_run: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def ranks_by_bond(self) -> dict[str, int]:
        return dict(zip(self.bonds, self.ranks))

    def summary(self) -> str:
        """A short human-readable report."""
        lines = [
            f"tnmars.fit: {self.network.spec}  ({self.settings.get('backend')}, {self.steps_run} steps, "
            f"{self.seconds:.1f} s{', interrupted' if self.interrupted else ''})",
            "  ranks     " + ", ".join(f"{b}={r}/{m}" for b, r, m in zip(self.bonds, self.ranks, self.max_ranks)),
            f"  relative error {self.relative_error:.4g} on observed entries"
            + (f", {self.heldout_error:.4g} held out" if self.heldout_error is not None else ""),
            f"  log-likelihood (-MSE) {self.log_likelihood:.4g}, noise variance {self.noise_variance:.4g}",
            f"  {self.num_params:,} parameters for {self.network.dense_size:,} entries: "
            f"compression {self.compression:.2f}x",
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"FitResult(ranks={self.ranks}, relative_error={self.relative_error:.4g}, "
                f"compression={self.compression:.3g}, interrupted={self.interrupted})")


# ---------------------------------------------------------------------------------- helpers
def _check_positive_float(value: Any, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive number; got {value!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number; got {value}")
    return value


def _schedule(temperature: Any, steps: int) -> mars.TemperatureSchedule:
    if isinstance(temperature, mars.TemperatureSchedule):
        return temperature
    if isinstance(temperature, (int, float)):
        t = mars.check_temperature(temperature)
        return mars.TemperatureSchedule(t, t, steps)
    try:
        start, end = temperature
    except (TypeError, ValueError):
        raise TypeError(f"temperature must be a number, a (start, end) pair or a TemperatureSchedule; "
                        f"got {temperature!r}") from None
    return mars.TemperatureSchedule(float(start), float(end), steps)


def _network_for(fmt: str, shape: tuple[int, ...], max_rank: Any) -> Network:
    if max_rank is None:
        max_rank = max(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clipping an over-large default is expected
        if fmt == "cp":
            return Network.cp(shape, int(max_rank), seed=0)
        if fmt == "tucker":
            return Network.tucker(shape, max_rank, seed=0)
        if fmt == "tt":
            return Network.tt(shape, max_rank, seed=0)
        return Network.tr(shape, max_rank, seed=0)


def _format_of(net: Network) -> str | None:
    """The built-in format whose spec ``net`` has, if any (so ``init="svd"`` can apply)."""
    shape, ranks = net.shape, net.ranks
    candidates = {
        "cp": lambda: Network.cp(shape, ranks[0]) if len(ranks) == 1 else None,
        "tucker": lambda: Network.tucker(shape, ranks),
        "tt": lambda: Network.tt(shape, ranks),
        "tr": lambda: Network.tr(shape, ranks),
    }
    for fmt, make in candidates.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                other = make()
        except (ValueError, TypeError):
            continue
        if other is not None and other.spec == net.spec and other.ranks == ranks:
            return fmt
    return None


def _prepare_data(data: Any, observed: Any, backend: str | None, dtype: str | None):
    """Validate ``data``/``observed``; returns NumPy float data, a boolean mask and the backend."""
    if data is None:
        raise TypeError("data is None; pass an array (NumPy, torch or CuPy)")
    src = infer_backend([data]) if hasattr(data, "shape") and not isinstance(data, np.ndarray) else get_backend("numpy")
    be = get_backend(backend) if backend is not None else src
    try:
        arr = np.asarray(src.to_numpy(data) if src.is_array(data) else data)
    except Exception as err:  # pragma: no cover - exotic inputs
        raise TypeError(f"data must be an array; got {type(data).__name__}") from err
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"data must be a numeric array; got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError("complex data is not supported")
    if arr.size == 0:
        raise ValueError(f"data is empty (shape {arr.shape})")
    if arr.ndim < 1:
        raise ValueError("data must have at least one mode")
    if dtype is None:
        dtype = str(arr.dtype) if arr.dtype in (np.float32, np.float64) else "float64"
    arr = arr.astype(np.float64)
    if observed is None:
        obs = np.ones(arr.shape, dtype=bool)
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ValueError(
                f"data has {int(bad.sum())} NaN/Inf entries; mark missing entries with observed= "
                "(a boolean mask, True where observed) or clean the data"
            )
    else:
        obs_src = infer_backend([observed]) if hasattr(observed, "shape") and not isinstance(observed, np.ndarray) \
            else get_backend("numpy")
        obs = np.asarray(obs_src.to_numpy(observed) if obs_src.is_array(observed) else observed)
        if obs.shape != arr.shape:
            raise ValueError(f"observed has shape {obs.shape} but data has shape {arr.shape}")
        if obs.dtype != bool:
            if not np.all(np.isin(obs, (0, 1))):
                raise ValueError("observed must be a boolean mask (or 0/1 values)")
            obs = obs.astype(bool)
        if not obs.any():
            raise ValueError("observed marks no entry as observed; there is nothing to fit")
        bad = obs & ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"data has {int(bad.sum())} NaN/Inf entries at observed positions; "
                             "set observed=False there or clean the data")
    return arr, obs, be, dtype


def _rel(x: np.ndarray, y: np.ndarray) -> float:
    den = float(np.linalg.norm(y))
    return float(np.linalg.norm(x - y)) / den if den > 0 else float(np.linalg.norm(x - y))


# ---------------------------------------------------------------------------------- mask priors
PRIORS = ("bernoulli", "bic", "bic-relaxed")


class _MaskPrior:
    """The log prior of the masks, in its relaxed (expected under ``q``) and MAP (0/1) forms.

    ``"bernoulli"``: the paper's i.i.d. Bernoulli(pi) prior, ``log((1-pi)/pi)`` per kept index.
    ``"bic"``: the Occam prior ``-(c/2) log(N) P(r(m))`` (:func:`tnmars.masks.bic_log_prior`).
    """

    def __init__(self, kind: str, pi: float, strength: float, template: Network, n_obs: int) -> None:
        self.kind, self.pi, self.strength, self.n_obs = kind, pi, strength, n_obs
        self.terms = mars.param_count_terms(template)
        self.log_pi, self.log_1mpi = math.log(pi), math.log1p(-pi)

    def relaxed(self, logits: dict, be: Backend) -> Any:
        if not logits:
            return 0.0
        if self.kind == "bernoulli":
            return sum((mars.bernoulli_log_prior(lg, self.pi, be) for lg in logits.values()), 0.0)
        return mars.bic_log_prior(self.terms, logits, self.n_obs, be, self.strength)

    def relaxed_grad(self, logits: dict, be: Backend) -> dict:
        if self.kind == "bernoulli":
            return {b: mars.bernoulli_log_prior_grad(lg, self.pi, be) for b, lg in logits.items()}
        return mars.bic_log_prior_grad(self.terms, logits, self.n_obs, be, self.strength)

    def map(self, ranks: dict, max_ranks: dict) -> float:
        """Log prior of 0/1 masks keeping ``ranks[b]`` of ``max_ranks[b]`` indices per bond."""
        if self.kind == "bernoulli":
            kept = sum(ranks.values())
            return kept * self.log_pi + (sum(max_ranks.values()) - kept) * self.log_1mpi
        return -mars.bic_penalty(self.n_obs, self.strength) * mars.num_params_at_ranks(self.terms, ranks)


# ---------------------------------------------------------------------------------- fit
def fit(
    data: Any,
    network: str | Network = "tucker",
    *,
    max_rank: int | Sequence[int] | None = None,
    observed: Any = None,
    pi: float = 1e-2,
    prior: str = "bic",
    prior_strength: float = 1.0,
    alpha: float | None = None,
    steps: int | None = None,
    lr: float | None = None,
    temperature: Any = (0.1, 0.01),
    noise_variance: float | str | None = None,
    init: str | None = None,
    mask_lr: float | None = None,
    lr_decay: float = DEFAULT_LR_DECAY,
    polish: int | None = None,
    refine: bool | None = None,
    refine_steps: int | None = None,
    seed: int | None = None,
    backend: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    progress: bool = True,
    record_every: int | None = None,
    callback: Callable[[int, dict], Any] | None = None,
) -> FitResult:
    """Fit ``data`` with a tensor network and select its ranks with MARS.

    Parameters
    ----------
    data: the tensor (NumPy, torch or CuPy). NaN/Inf are allowed only where ``observed``
        is False.
    network: ``"tucker"``, ``"cp"``, ``"tt"``, ``"tr"`` (built at ``max_rank``), or any
        :class:`~tnmars.Network` whose open modes match ``data.shape``; its bond sizes are
        the maximal ranks and every bond gets a mask.
    max_rank: maximal rank(s) for a format name (int or one per bond); default
        ``max(data.shape)``, clipped to what the format allows.
    observed: boolean mask of observed entries (tensor completion); default all.
    pi: Bernoulli prior probability of keeping a rank index, in (0, 0.5] (the paper's prior;
        with ``prior="bic"`` it still drives the MARS phase that precedes the Occam selection).
    prior: the mask prior. ``"bic"`` (default): Occam, ``(prior_strength/2) log N`` per
        parameter of the network at the selected ranks, with the noise variance estimated
        from the residual (DOF-corrected); selects the true ranks under noise where the
        paper's prior keeps noise-fitting indices, at the cost of refits after MARS.
        ``"bernoulli"``: the paper's, ``log((1-pi)/pi)`` per kept rank index.
        ``"bic-relaxed"``: the Occam prior inside the relaxed MAP (experimental; measured
        worse). See the module notes.
    prior_strength: ``c`` in the Occam prior ``-(c/2) log(N) P``; 1 is BIC, larger prunes more.
    alpha: mean of the initial mask logits (std 0.01); default 0.5 with an SVD start,
        -0.5 otherwise.
    steps: Adam steps of the MARS phase (default 3000).
    lr: core learning rate (default 1e-3 with an SVD start, 3e-3 otherwise); decays
        exponentially to ``lr * lr_decay``. mask_lr: logit learning rate (default ``10 lr``).
    temperature: hard-concrete temperature, ``(start, end)`` decayed exponentially over
        ``steps``, a constant, or a :class:`tnmars.masks.TemperatureSchedule`.
    noise_variance: the Gaussian likelihood's variance: ``"mse"`` (default; the paper's
        log-likelihood ``-MSE`` on data scaled to unit RMS, i.e. half the data's mean
        square), ``"learn"`` (maximum-likelihood estimate, updated every step),
        ``"residual"`` (the MAP network's residual over ``N - P``, updated every record; the
        default of ``prior="bic-relaxed"``) or a number in the data's units. Larger values
        select smaller ranks. With ``prior="bic"`` this sets the MARS phase; the Occam
        selection then uses the residual estimate unless a number is given.
    init: ``"random"``, ``"svd"`` (tensorly HOSVD / TT-SVD / TR-SVD / CP-ALS at the maximal
        ranks; built-in formats only) or ``"network"`` (the given network's cores). Default:
        ``"svd"`` for Tucker, TT and TR, ``"random"`` for CP, ``"network"`` for a Network.
    polish: deterministic Adam steps refitting the pruned network (default ``steps // 5``).
    refine: MAP coordinate descent after MARS (see the module notes); default on unless
        the start is an SVD with the paper's prior (always on with ``"bic"``: it is the
        Occam selection). refine_steps: refit steps per tried removal (default 200 with the
        paper's prior, 500 with ``"bic"``).
    seed: seeds cores, logits and mask noise. backend/device/dtype: where to train
        (default: the data's backend and dtype).
    progress: tqdm bar with the loss and current ranks. record_every: history interval
        (default ``steps // 200``).
    callback: ``callback(step, info)`` at every record (``info``: loss, ranks,
        temperature); returning ``True`` stops early. Ctrl-C (``KeyboardInterrupt``) stops
        training and returns the recorded state with the best MAP objective, flagged
        ``interrupted=True``.

    Returns
    -------
    FitResult
    """
    t0 = time.perf_counter()
    pi = mars.check_pi(pi)
    if not isinstance(prior, str) or prior.lower() not in PRIORS:
        raise ValueError(f"prior must be one of {', '.join(map(repr, PRIORS))}; got {prior!r}")
    prior = prior.lower()
    prior_strength = _check_positive_float(prior_strength, "prior_strength")
    if alpha is not None:
        alpha = float(alpha)
        if not math.isfinite(alpha):
            raise ValueError(f"alpha must be finite; got {alpha}")
    steps = DEFAULT_STEPS if steps is None else positive_int(steps, "steps")
    if lr is not None:
        lr = _check_positive_float(lr, "lr")
    sched = _schedule(temperature, steps)
    lr_decay = _check_positive_float(lr_decay, "lr_decay")
    if mask_lr is not None:
        mask_lr = _check_positive_float(mask_lr, "mask_lr")
    polish = steps // 5 if polish is None else int(polish)
    if polish < 0:
        raise ValueError(f"polish must be >= 0 steps; got {polish}")
    arr, obs, be, dtype = _prepare_data(data, observed, backend, dtype)
    be.check_device(device)

    # ---- the network and its starting cores
    if isinstance(network, Network):
        template = network
        if template.shape != arr.shape:
            raise ValueError(f"data has shape {arr.shape} but the network's open modes have shape {template.shape}")
        fmt = _format_of(template)
        init = "network" if init is None else init
    elif isinstance(network, str):
        fmt = network.lower()
        if fmt not in FORMATS:
            raise ValueError(f"unknown network format {network!r}; choose one of {', '.join(FORMATS)} or pass a Network")
        if arr.ndim < 2:
            raise ValueError(f"a {fmt} network needs data with at least 2 modes; got shape {arr.shape}")
        template = _network_for(fmt, arr.shape, max_rank)
        init = DEFAULT_INIT[fmt] if init is None else init
    else:
        raise TypeError(f"network must be a format name or a Network; got {type(network).__name__}")
    if init not in ("random", "svd", "network"):
        raise ValueError(f"init must be 'random', 'svd' or 'network'; got {init!r}")
    if init == "network" and not isinstance(network, Network):
        raise ValueError("init='network' needs a Network (it keeps that network's cores)")
    alpha = DEFAULT_ALPHA[init] if alpha is None else alpha
    lr = DEFAULT_LR[init] if lr is None else lr
    mask_lr = lr * DEFAULT_MASK_LR_RATIO if mask_lr is None else mask_lr
    refine = (init != "svd" or prior != "bernoulli") if refine is None else bool(refine)
    refine_steps = DEFAULT_REFINE_STEPS[prior] if refine_steps is None else positive_int(refine_steps, "refine_steps")

    scale = float(np.sqrt(np.mean(arr[obs] ** 2)))
    if not scale > 0:
        scale = 1.0
    y = np.where(obs, arr, 0.0) / scale
    n_obs = int(obs.sum())

    if init == "svd":
        if fmt is None:
            raise ValueError("init='svd' needs a CP, Tucker, TT or TR network; use init='random' for this spec")
        from .interop.init import svd_init

        start = svd_init(fmt, y, template.ranks if fmt != "cp" else template.ranks[0],
                         observed=None if obs.all() else obs, seed=seed)
        if start.spec != template.spec or start.ranks != template.ranks:  # pragma: no cover - guarded by _format_of
            raise AssertionError("svd_init built a different network")
        cores_np = [np.asarray(c, dtype=np.float64) for c in start.cores]
    elif init == "random":
        cores_np = [np.asarray(c) for c in Network(template.spec, template.dims, seed=seed).cores]
    else:
        cores_np = [np.asarray(template.backend_impl.to_numpy(c), dtype=np.float64) / scale ** (1 / template.num_cores)
                    for c in template.cores]

    bonds = tuple(template.bonds)
    max_ranks = tuple(template.ranks)
    logit_seed = None if seed is None else seed + 1
    logits_np = {b: np.asarray(v) for b, v in
                 mars.init_logits(template.bonds, alpha, get_backend("numpy"), seed=logit_seed).items()}

    # ---- noise model
    if noise_variance is None:
        noise_variance = "residual" if prior == "bic-relaxed" else "mse"
    noise_mode = "fixed"
    if isinstance(noise_variance, str):
        if noise_variance not in ("mse", "learn", "residual"):
            raise ValueError(f"noise_variance must be 'mse', 'learn', 'residual' or a positive number; "
                             f"got {noise_variance!r}")
        noise_mode = noise_variance
        sigma2 = 0.5 if noise_mode == "mse" else float(np.mean(y[obs] ** 2))
    else:
        sigma2 = _check_positive_float(noise_variance, "noise_variance") / scale**2
    sigma2_floor = 1e-10
    # "bic" selects with the Occam prior after a MARS phase under the paper's relaxation;
    # "bic-relaxed" puts the Occam prior into the relaxed MAP itself
    mask_prior = _MaskPrior("bic" if prior == "bic-relaxed" else "bernoulli", pi, prior_strength, template, n_obs)
    bic_prior = _MaskPrior("bic", pi, prior_strength, template, n_obs)
    max_rank_of = dict(template.bonds)
    if noise_mode == "residual":  # start from the residual of the starting network at its MAP masks
        r0 = (Network(template.spec, cores=cores_np).to_tensor() - y)[obs]
        p0 = template.num_params if alpha > 0 else 0
        sigma2 = residual_variance(float(np.sum(r0 * r0)) if alpha > 0 else float(np.sum(y[obs] ** 2)), n_obs, p0)

    record_every = max(1, steps // 200) if record_every is None else positive_int(record_every, "record_every")
    settings = dict(network=template.spec, format=fmt, max_ranks=max_ranks, pi=pi, alpha=alpha, steps=steps, lr=lr,
                    temperature=(sched.start, sched.end), noise_variance=noise_variance, prior=prior,
                    prior_strength=prior_strength, init=init, seed=seed,
                    backend=be.name, device=device, dtype=dtype, data_scale=scale, lr_decay=lr_decay, mask_lr=mask_lr,
                    polish=polish, refine=refine)

    history: dict[str, list] = {k: [] for k in ("step", "loss", "nll", "map_loss", "ranks", "temperature")}

    trainer = (_TorchTrainer if be.autograd else _ArrayTrainer)(
        be, template, cores_np, logits_np, y, obs, dtype, device, lr, seed, mask_lr / lr)
    map_state: dict[str, Any] = {}

    def map_objective(sig2: float) -> tuple[float, tuple[int, ...]]:
        cores, logits = trainer.numpy_state()
        keep = {b: logits[b] > 0 for b in bonds}
        t = Network(template.spec, cores=cores).to_tensor({b: keep[b].astype(float) for b in bonds})
        r = (t - y)[obs]
        sse = float(np.sum(r * r))
        ranks = {b: int(keep[b].sum()) for b in bonds}
        lp = mask_prior.map(ranks, max_rank_of) - sum(float(np.sum(c * c)) for c in cores) / (
            2 * mars.CORE_PRIOR_VARIANCE)
        map_state.update(sse=sse, ranks=ranks)
        return sse / (2 * sig2 * n_obs) - lp / n_obs, tuple(ranks[b] for b in bonds)

    from tqdm.auto import tqdm

    best = None
    best_obj = math.inf
    interrupted = False
    step = 0
    bar = tqdm(total=steps, disable=not progress, desc="tnmars.fit", leave=False)
    try:
        for step in range(steps):
            temp = sched(step)
            loss, nll, mse = trainer.step(temp, sigma2, mask_prior, n_obs, lr * lr_decay ** (step / steps))
            if noise_mode == "learn":
                sigma2 = max(mse, sigma2_floor)
            elif noise_mode == "residual" and step % record_every == 0:
                # the residual of the MAP-masked network (no dropout error), corrected for its parameters
                map_objective(sigma2)
                est = residual_variance(map_state["sse"], n_obs,
                                        mars.num_params_at_ranks(mask_prior.terms, map_state["ranks"]))
                sigma2 = RESIDUAL_EMA * sigma2 + (1 - RESIDUAL_EMA) * est
            bar.update(1)
            if step % record_every == 0 or step == steps - 1:
                obj, ranks = map_objective(sigma2)
                history["step"].append(step)
                history["loss"].append(loss)
                history["nll"].append(nll)
                history["map_loss"].append(obj)
                history["ranks"].append(ranks)
                history["temperature"].append(temp)
                if obj < best_obj:
                    best_obj, best = obj, (trainer.numpy_state(), sigma2)
                bar.set_postfix(loss=f"{loss:.4g}", ranks=",".join(map(str, ranks)), refresh=False)
                if callback is not None and callback(step, {"loss": loss, "ranks": ranks, "temperature": temp}):
                    step += 1
                    break
        else:
            step = steps
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()

    if interrupted and best is not None:
        (cores_f, logits_f), sigma2 = best
    else:
        cores_f, logits_f = trainer.numpy_state()

    # ---- read out, prune (and optionally polish / refine), rescale to data units
    keep = {b: logits_f[b] > 0 for b in bonds}
    unit = scale ** (1.0 / len(cores_f))
    full_np = Network(template.spec, cores=[c * unit for c in cores_f], optimize=template.optimize)
    pruned_unit = Network(template.spec, cores=cores_f, optimize=template.optimize).prune(keep)
    refit = _Refitter(be, y, obs, dtype, device, sigma2, n_obs, lr, seed, mask_prior)
    try:  # Ctrl-C here keeps the network as it stands after the last completed stage
        if not interrupted and polish > 0:
            pruned_unit = refit(pruned_unit, polish)
        if prior != "bernoulli" and not interrupted:
            # Occam selection: noise variance from the MARS-selected network (DOF-corrected) unless
            # given as a number, then MAP coordinate descent under the BIC prior
            if noise_mode != "fixed" and prior == "bic":
                r_ = (pruned_unit.to_tensor() - y)[obs]
                sigma2 = residual_variance(float(np.sum(r_ * r_)), n_obs, pruned_unit.num_params)
            refit = _Refitter(be, y, obs, dtype, device, sigma2, n_obs, lr, seed, bic_prior)
        if not interrupted and refine:
            refined = _greedy_refine(pruned_unit, refit, keep, logits_f, refine_steps,
                                     passes=1 if prior == "bernoulli" else BIC_REFINE_PASSES,
                                     two_stage=prior != "bernoulli")
            pruned_unit = refit(refined, polish)
    except KeyboardInterrupt:
        interrupted = True

    pruned_np = Network(template.spec, cores=[c * unit for c in pruned_unit.cores], optimize=template.optimize)
    est = pruned_np.to_tensor()
    rel = _rel(est[obs], arr[obs])
    held = ~obs & np.isfinite(arr)
    heldout = _rel(est[held], arr[held]) if held.any() else None
    ll = -float(np.mean((est[obs] - arr[obs]) ** 2))
    to_backend = (lambda n: n) if be.name == "numpy" else (lambda n: n.to(be.name, device=device, dtype=dtype))
    if be.name == "numpy" and dtype != "float64":
        to_backend = lambda n: n.to("numpy", dtype=dtype)  # noqa: E731
    ranks = tuple(pruned_np.ranks)
    return FitResult(
        network=to_backend(pruned_np),
        full_network=to_backend(full_np),
        bonds=bonds,
        ranks=ranks,
        max_ranks=max_ranks,
        probabilities={b: 1.0 / (1.0 + np.exp(-logits_f[b])) for b in bonds},
        relative_error=rel,
        heldout_error=heldout,
        log_likelihood=ll,
        noise_variance=float(sigma2 * scale**2),
        compression=pruned_np.dense_size / max(pruned_np.num_params, 1),
        num_params=pruned_np.num_params,
        history=history,
        interrupted=interrupted,
        steps_run=step,
        seconds=time.perf_counter() - t0,
        settings=settings,
    )


# ---------------------------------------------------------------------------------- polish / refine
class _Refitter:
    """Deterministic Adam refits of a (pruned) network: data NLL + Gaussian core prior, no masks."""

    def __init__(self, be, y, obs, dtype, device, sigma2, n_obs, lr, seed, prior: _MaskPrior):
        self.be, self.y, self.obs, self.dtype, self.device = be, y, obs, dtype, device
        self.sigma2, self.n_obs, self.lr, self.seed, self.prior = sigma2, n_obs, lr, seed, prior

    def __call__(self, net: Network, steps: int) -> Network:
        if net.num_params == 0 or steps <= 0 or 0 in net.ranks:
            return net
        cls = _TorchTrainer if self.be.autograd else _ArrayTrainer
        tr = cls(self.be, net, [np.asarray(c) for c in net.cores], {}, self.y, self.obs, self.dtype,
                 self.device, self.lr, self.seed)
        for k in range(steps):  # lr decays 100x: a refit should land precisely
            tr.step(0.01, self.sigma2, None, self.n_obs, self.lr * 0.01 ** (k / steps))
        return net.with_cores(tr.numpy_state()[0])

    def objective(self, net: Network, max_ranks: dict) -> float:
        """The MAP objective of a pruned network: NLL + (1/N)(-log prior of its masks and cores)."""
        t = net.to_tensor()
        r = (t - self.y)[self.obs]
        nll = float(np.sum(r * r)) / (2 * self.sigma2 * self.n_obs)
        lp = self.prior.map(dict(net.bonds), max_ranks) - sum(float(np.sum(c * c)) for c in net.cores) / (
            2 * mars.CORE_PRIOR_VARIANCE)
        return nll - lp / self.n_obs


def _greedy_refine(net, refit, keep, logits, steps, passes: int = 1, two_stage: bool = False):
    """Coordinate descent on the *deterministic* MAP objective, seeded by MARS: try removing each
    kept rank index (lowest probability first), refit, keep the removal if the objective drops;
    repeat up to ``passes`` times while a pass removes something. ``two_stage``: refit a
    removal for ``steps // 5`` first and skip the rest when it is hopeless (REFINE_HOPELESS)."""
    max_ranks = {b: len(v) for b, v in keep.items()}
    best = net
    best_obj = refit.objective(net, max_ranks)
    # positions shift as indices are removed: track them by their original index
    alive = {b: [int(k) for k in np.flatnonzero(keep[b])] for b in net.bonds}
    for _ in range(passes):
        order = sorted((float(logits[b][orig]), b, orig) for b in alive for orig in alive[b])
        removed = False
        for _, b, orig in order:
            if orig not in alive[b] or len(alive[b]) <= 1:
                continue
            pos = alive[b].index(orig)
            cand = best.prune({b: [k for k in range(len(alive[b])) if k != pos]})
            short = max(1, steps // 5) if two_stage else steps
            cand = refit(cand, short)
            obj = refit.objective(cand, max_ranks)
            if obj >= best_obj and short < steps:
                # not yet better after a short refit: refit fully unless the loss is hopeless, i.e.
                # the objective rose by more than REFINE_HOPELESS times what the prior would save
                saving = (refit.prior.map(dict(best.bonds), max_ranks) - refit.prior.map(dict(cand.bonds), max_ranks))
                if obj - best_obj < -REFINE_HOPELESS * saving / refit.n_obs:
                    cand = refit(cand, steps - short)
                    obj = refit.objective(cand, max_ranks)
            if obj < best_obj:
                best, best_obj = cand, obj
                alive[b].remove(orig)
                removed = True
        if not removed:
            break
    return best


# ---------------------------------------------------------------------------------- trainers
class _ArrayTrainer:
    """NumPy / CuPy: environment gradients and :class:`Adam`."""

    def __init__(self, be: Backend, template: Network, cores, logits, y, obs, dtype, device, lr, seed,
                 mask_lr_ratio: float = 1.0):
        self.be = be
        self.spec = template.spec
        self.optimize = template.optimize
        self.bonds = tuple(logits)
        # np.array copies: Adam updates in place and must never touch the caller's arrays
        self.cores = [be.asarray(np.array(c), dtype=dtype, device=device) for c in cores]
        self.logits = [be.asarray(np.array(logits[b]), dtype=dtype, device=device) for b in self.bonds]
        self.y = be.asarray(y, dtype=dtype, device=device)
        self.w = be.asarray(obs.astype(float), dtype=dtype, device=device)
        self.rng = be.rng(seed, device)
        self.dtype, self.device = dtype, device
        self.opt = Adam(self.cores, lr=lr)
        self.mask_opt = Adam(self.logits, lr=lr * mask_lr_ratio) if self.logits else None
        self.mask_lr_ratio = mask_lr_ratio

    def numpy_state(self):
        to = self.be.to_numpy
        return ([np.array(to(c), dtype=np.float64) for c in self.cores],
                {b: np.array(to(v), dtype=np.float64) for b, v in zip(self.bonds, self.logits)})

    def step(self, temp: float, sigma2: float, prior: _MaskPrior | None, n_obs: int, lr: float | None = None):
        be = self.be
        if lr is not None:
            self.opt.lr = lr
            if self.mask_opt is not None:
                self.mask_opt.lr = lr * self.mask_lr_ratio
        samples, dsamples = {}, {}
        for b, lg in zip(self.bonds, self.logits):
            noise = be.uniform(self.rng, lg.shape, self.dtype, self.device)
            samples[b], dsamples[b] = mars.hard_concrete_grad(lg, temp, noise, be)
        net = Network(self.spec, cores=self.cores, optimize=self.optimize)
        box = {}

        def grad_fn(t):
            r = (t - self.y) * self.w
            box["sse"] = float(be.sum(r * r))
            return r / (sigma2 * n_obs)

        _, gcores, gmasks = vjp(net, grad_fn, samples)
        var = mars.CORE_PRIOR_VARIANCE
        grads = [g + c / (var * n_obs) for g, c in zip(gcores, self.cores)]
        logits = dict(zip(self.bonds, self.logits))
        if logits:
            gprior = prior.relaxed_grad(logits, be)
            grads += [gmasks[b] * dsamples[b] - gprior[b] / n_obs for b in self.bonds]
        mse = box["sse"] / n_obs
        nll = box["sse"] / (2 * sigma2 * n_obs)
        prior = (float(prior.relaxed(logits, be)) if logits else 0.0) + float(mars.gaussian_log_prior(self.cores, be))
        k = len(self.cores)
        self.opt.step(grads[:k])
        if self.mask_opt is not None:
            self.mask_opt.step(grads[k:])
        return nll - prior / n_obs, nll, mse


class _TorchTrainer:
    """PyTorch: autograd and ``torch.optim.Adam`` (reached through the backend object, so this
    module never imports torch itself)."""

    def __init__(self, be: Backend, template: Network, cores, logits, y, obs, dtype, device, lr, seed,
                 mask_lr_ratio: float = 1.0):
        torch = be.torch
        self.be, self.torch = be, torch
        self.spec = template.spec
        self.optimize = template.optimize
        self.bonds = tuple(logits)
        self.cores = [be.asarray(c, dtype=dtype, device=device).clone().requires_grad_(True) for c in cores]
        self.logits = [be.asarray(logits[b], dtype=dtype, device=device).clone().requires_grad_(True)
                       for b in self.bonds]
        self.y = be.asarray(y, dtype=dtype, device=device)
        self.w = be.asarray(obs.astype(float), dtype=dtype, device=device)
        self.rng = be.rng(seed, device)
        self.dtype, self.device = dtype, device
        groups = [{"params": self.cores, "lr": lr}]
        if self.logits:
            groups.append({"params": self.logits, "lr": lr * mask_lr_ratio})
        self.opt = torch.optim.Adam(groups, lr=lr)
        self.mask_lr_ratio = mask_lr_ratio

    def numpy_state(self):
        return ([np.array(c.detach().cpu().numpy(), dtype=np.float64) for c in self.cores],
                {b: np.array(v.detach().cpu().numpy(), dtype=np.float64) for b, v in zip(self.bonds, self.logits)})

    def step(self, temp: float, sigma2: float, prior: _MaskPrior | None, n_obs: int, lr: float | None = None):
        be = self.be
        if lr is not None:
            for k, group in enumerate(self.opt.param_groups):
                group["lr"] = lr if k == 0 else lr * self.mask_lr_ratio
        samples = {}
        for b, lg in zip(self.bonds, self.logits):
            noise = be.uniform(self.rng, lg.shape, self.dtype, self.device)
            samples[b] = mars.hard_concrete(lg, temp, noise, be)
        net = Network(self.spec, cores=self.cores, optimize=self.optimize)
        r = (net.to_tensor(samples) - self.y) * self.w
        sse = (r * r).sum()
        nll = sse / (2 * sigma2 * n_obs)
        logits = dict(zip(self.bonds, self.logits))
        prior = (prior.relaxed(logits, be) if logits else 0.0) + mars.gaussian_log_prior(self.cores, be)
        loss = nll - prior / n_obs
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach()), float(nll.detach()), float(sse.detach()) / n_obs
