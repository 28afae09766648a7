"""The MARS relaxation: the paper's relaxed MAP objective, trained by Adam.

Masks on every bond, one hard-concrete sample per step folded into one core per bond;
objective = Gaussian NLL of the observed entries (per entry)
``- (1/N) [sum_b sum_j phi_bj log pi + (1 - phi_bj) log(1 - pi) + sum_k log N(G_k | 0, 100)]``;
Adam on cores and logits (logits ``mask_lr / lr`` times faster); MAP mask ``phi > 0.5``.
NumPy and CuPy get their gradients from :mod:`tnmars.gradients` (environments), torch from
autograd: this is the one place where ``tnmars.fit`` trains on the caller's backend.

Gradients are the only way here (the masks are stochastic), so Adam stays; every refit of a
network at fixed ranks is done by the exact solvers of :mod:`tnmars.fitting.solvers`.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import masks as mars
from .._checks import positive_int
from ..backends import Backend, get_backend
from ..gradients import vjp
from ..network import Network

__all__ = ["Relaxation", "RelaxationResult", "Adam", "relax"]


# ---------------------------------------------------------------------------------- settings
def _positive_float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a positive number; got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive number; got {value!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number; got {value}")
    return value


#: a relaxation whose loss never falls below its first record and rises above it by this many
#: times its size has diverged (:func:`relax` warns)
DIVERGED_BY = 10.0


@dataclass(frozen=True)
class Relaxation:
    """Settings of the MARS relaxation (the options that travel together).

    pi: Bernoulli prior probability of keeping a rank index, in (0, 0.5]; each kept index
        costs ``log((1 - pi) / pi)`` nats. alpha: mean of the initial logits (std 0.01);
        ``None`` picks 0.5 (masks open) for a fitted start and -0.5 for a random one.
    steps: Adam steps. lr: core learning rate (``None``: 1e-3 for a fitted start, 3e-3 for a
        random one), decayed exponentially to ``lr * lr_decay``; mask_lr: logit learning
        rate (``None``: ``10 lr``).
    temperature: hard-concrete temperature, ``(start, end)`` decayed exponentially over the
        steps, a constant, or a :class:`tnmars.masks.TemperatureSchedule`.
    noise_variance: the likelihood's variance in working units (data scaled to unit mean
        square): ``"mse"`` (the paper's Appendix D, log-likelihood ``-MSE``: 0.5) or a number.
    start: ``"fitted"`` (SVD / least squares at the maximal ranks: the masks only have to
        remove) or ``"random"`` (random cores, as in the paper's Appendix D).

    >>> Relaxation(pi=1e-3).pi
    0.001
    """

    pi: float = 1e-2
    alpha: float | None = None
    steps: int = 3000
    lr: float | None = None
    mask_lr: float | None = None
    lr_decay: float = 0.1
    temperature: Any = (0.1, 0.01)
    noise_variance: float | str = "mse"
    start: str = "fitted"

    def __post_init__(self) -> None:
        if self.start not in ("fitted", "random"):
            raise ValueError(f"start must be 'fitted' or 'random'; got {self.start!r}")
        mars.check_pi(self.pi)
        if self.alpha is not None and (isinstance(self.alpha, bool) or not math.isfinite(float(self.alpha))):
            raise ValueError(f"alpha must be a finite number; got {self.alpha!r}")
        positive_int(self.steps, "steps")
        for name in ("lr", "mask_lr"):
            if getattr(self, name) is not None:
                _positive_float(getattr(self, name), name)
        _positive_float(self.lr_decay, "lr_decay")
        schedule(self.temperature, 1)
        if isinstance(self.noise_variance, str):
            if self.noise_variance != "mse":
                raise ValueError(f"noise_variance must be 'mse' or a positive number; got {self.noise_variance!r}")
        else:
            _positive_float(self.noise_variance, "noise_variance")


def schedule(temperature: Any, steps: int) -> mars.TemperatureSchedule:
    """A temperature schedule from a number, a ``(start, end)`` pair or a schedule."""
    if isinstance(temperature, mars.TemperatureSchedule):
        return temperature
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        t = mars.check_temperature(temperature)
        return mars.TemperatureSchedule(t, t, steps)
    try:
        start, end = temperature
    except (TypeError, ValueError):
        raise TypeError(f"temperature must be a number, a (start, end) pair or a TemperatureSchedule; "
                        f"got {temperature!r}") from None
    return mars.TemperatureSchedule(float(start), float(end), steps)


@dataclass
class RelaxationResult:
    """Trained cores and logits (NumPy, working units), the MAP ranks, and the record."""

    cores: list[np.ndarray]
    logits: dict[str, np.ndarray]
    history: dict[str, list] = field(default_factory=dict)
    steps_run: int = 0
    interrupted: bool = False

    @property
    def probabilities(self) -> dict[str, np.ndarray]:
        return {b: 1.0 / (1.0 + np.exp(-v)) for b, v in self.logits.items()}

    def keep(self, min_rank: int | Mapping[str, int] = 1) -> dict[str, np.ndarray]:
        """MAP masks ``phi > 0.5``, with at least ``min_rank`` indices per bond (the most
        probable; one int for every bond, or bond -> int, 1 for a bond it does not name): a
        closed bond would zero the whole network."""
        out = {}
        for b, lg in self.logits.items():
            least = min_rank.get(b, 1) if isinstance(min_rank, Mapping) else min_rank
            k = lg > 0
            if k.sum() < least:
                k = np.zeros_like(k)
                k[np.argsort(-lg)[:least]] = True
            out[b] = k
        return out


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


# ---------------------------------------------------------------------------------- trainers
class _ArrayTrainer:
    """NumPy / CuPy: environment gradients and :class:`Adam`."""

    def __init__(self, be: Backend, spec: str, cores, logits, y, weights, dtype, device, lr, seed, mask_lr_ratio):
        self.be, self.spec = be, spec
        self.bonds = tuple(logits)
        # np.array copies: Adam updates in place and must never touch the caller's arrays
        self.cores = [be.asarray(np.array(c), dtype=dtype, device=device) for c in cores]
        self.logits = [be.asarray(np.array(logits[b]), dtype=dtype, device=device) for b in self.bonds]
        self.y = be.asarray(y, dtype=dtype, device=device)
        self.w = None if weights is None else be.asarray(weights, device=device)
        self.rng = be.rng(seed, device)
        self.dtype, self.device = dtype, device
        self.opt = Adam(self.cores, lr=lr)
        self.mask_opt = Adam(self.logits, lr=lr * mask_lr_ratio) if self.logits else None
        self.mask_lr_ratio = mask_lr_ratio

    def numpy_state(self):
        to = self.be.to_numpy
        return ([np.array(to(c), dtype=np.float64) for c in self.cores],
                {b: np.array(to(v), dtype=np.float64) for b, v in zip(self.bonds, self.logits)})

    def step(self, temp: float, sigma2: float, pi: float, n_obs: int, lr: float) -> float:
        be = self.be
        self.opt.lr = lr
        if self.mask_opt is not None:
            self.mask_opt.lr = lr * self.mask_lr_ratio
        samples, dsamples = {}, {}
        for b, lg in zip(self.bonds, self.logits):
            noise = be.uniform(self.rng, lg.shape, self.dtype, self.device)
            samples[b], dsamples[b] = mars.hard_concrete_grad(lg, temp, noise, be)
        net = Network(self.spec, cores=self.cores)
        box = {}

        def grad_fn(t):
            r = t - self.y
            if self.w is not None:
                r = r * self.w
            box["sse"] = float(be.sum(r * r))
            return r / (sigma2 * n_obs)

        _, gcores, gmasks = vjp(net, grad_fn, samples)
        var = mars.CORE_PRIOR_VARIANCE
        grads = [g + c / (var * n_obs) for g, c in zip(gcores, self.cores)]
        logits = dict(zip(self.bonds, self.logits))
        log_prior = float(mars.gaussian_log_prior(self.cores, be))
        if logits:
            grads += [gmasks[b] * dsamples[b] - mars.bernoulli_log_prior_grad(logits[b], pi, be) / n_obs
                      for b in self.bonds]
            log_prior += sum(float(mars.bernoulli_log_prior(lg, pi, be)) for lg in logits.values())
        k = len(self.cores)
        self.opt.step(grads[:k])
        if self.mask_opt is not None:
            self.mask_opt.step(grads[k:])
        return box["sse"] / (2 * sigma2 * n_obs) - log_prior / n_obs


class _TorchTrainer:
    """PyTorch: autograd and ``torch.optim.Adam`` (reached through the backend object, so this
    module never imports torch itself). Gradients are on whatever the caller's mode: a fit
    called under ``torch.no_grad()`` or ``torch.inference_mode()`` (an evaluation block)
    failed at its first backward ("element 0 of tensors does not require grad")."""

    def __init__(self, be: Backend, spec: str, cores, logits, y, weights, dtype, device, lr, seed, mask_lr_ratio):
        with self._grad_on(be):
            self._build(be, spec, cores, logits, y, weights, dtype, device, lr, seed, mask_lr_ratio)

    @staticmethod
    def _grad_on(be: Backend):
        from contextlib import ExitStack

        stack = ExitStack()
        stack.enter_context(be.torch.inference_mode(False))
        stack.enter_context(be.torch.enable_grad())
        return stack

    def _build(self, be: Backend, spec: str, cores, logits, y, weights, dtype, device, lr, seed, mask_lr_ratio):
        torch = be.torch
        self.be, self.spec = be, spec
        self.bonds = tuple(logits)
        self.cores = [be.asarray(c, dtype=dtype, device=device).clone().requires_grad_(True) for c in cores]
        self.logits = [be.asarray(logits[b], dtype=dtype, device=device).clone().requires_grad_(True)
                       for b in self.bonds]
        # (copies: a caller's inference tensors cannot enter autograd)
        self.y = be.asarray(y, dtype=dtype, device=device).clone()
        self.w = None if weights is None else be.asarray(weights, device=device).clone()
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

    def step(self, temp: float, sigma2: float, pi: float, n_obs: int, lr: float) -> float:
        with self._grad_on(self.be):
            return self._step(temp, sigma2, pi, n_obs, lr)

    def _step(self, temp: float, sigma2: float, pi: float, n_obs: int, lr: float) -> float:
        be = self.be
        for k, group in enumerate(self.opt.param_groups):
            group["lr"] = lr if k == 0 else lr * self.mask_lr_ratio
        samples = {}
        for b, lg in zip(self.bonds, self.logits):
            noise = be.uniform(self.rng, lg.shape, self.dtype, self.device)
            samples[b] = mars.hard_concrete(lg, temp, noise, be)
        net = Network(self.spec, cores=self.cores)
        r = net.to_tensor(samples) - self.y
        if self.w is not None:
            r = r * self.w
        nll = (r * r).sum() / (2 * sigma2 * n_obs)
        log_prior = mars.gaussian_log_prior(self.cores, be)
        for lg in self.logits:
            log_prior = log_prior + mars.bernoulli_log_prior(lg, pi, be)
        loss = nll - log_prior / n_obs
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


# ---------------------------------------------------------------------------------- the loop
def relax(
    template: Network,
    cores: list[np.ndarray],
    y: np.ndarray,
    weights: np.ndarray | None,
    settings: Relaxation,
    *,
    fitted_start: bool,
    backend: Backend | None = None,
    device: str | None = None,
    dtype: str = "float64",
    seed: int | None = None,
    report: Callable[[int, float, tuple[int, ...], float], Any] | None = None,
    record_every: int | None = None,
) -> RelaxationResult:
    """Train cores and mask logits of ``template``'s graph from ``cores`` on ``y`` (working
    units, zeros where ``weights`` is False). ``report(step, loss, map_ranks, temperature)``
    is called at every record; returning True stops. Ctrl-C stops too and keeps the record
    with the best MAP objective (``interrupted=True``)."""
    be = backend or get_backend("numpy")
    n_obs = int(y.size if weights is None else weights.sum())
    alpha = settings.alpha if settings.alpha is not None else (0.5 if fitted_start else -0.5)
    lr = settings.lr if settings.lr is not None else (1e-3 if fitted_start else 3e-3)
    mask_lr = settings.mask_lr if settings.mask_lr is not None else 10 * lr
    sigma2 = 0.5 if settings.noise_variance == "mse" else float(settings.noise_variance)
    steps = int(settings.steps)
    sched = schedule(settings.temperature, steps)
    record_every = record_every or max(1, steps // 200)
    logit_seed = None if seed is None else seed + 1
    logits = {b: np.asarray(v) for b, v in
              mars.init_logits(template.bonds, alpha, get_backend("numpy"), seed=logit_seed).items()}
    cls = _TorchTrainer if be.autograd else _ArrayTrainer
    trainer = cls(be, template.spec, cores, logits, y, weights, dtype, device, lr, seed, mask_lr / lr)
    history: dict[str, list] = {k: [] for k in ("step", "loss", "ranks", "temperature")}
    best, best_loss = None, math.inf
    interrupted = False
    step = 0
    try:
        for step in range(steps):
            temp = sched(step)
            loss = trainer.step(temp, sigma2, settings.pi, n_obs, lr * settings.lr_decay ** (step / steps))
            if not math.isfinite(loss):
                raise FloatingPointError(f"the MARS relaxation diverged at step {step} (loss {loss}); "
                                         "lower the learning rate (Relaxation(lr=...))")
            if step % record_every == 0 or step == steps - 1:
                state = trainer.numpy_state()
                ranks = tuple(int((state[1][b] > 0).sum()) for b in template.bonds)
                history["step"].append(step)
                history["loss"].append(loss)
                history["ranks"].append(ranks)
                history["temperature"].append(temp)
                if loss < best_loss:
                    best_loss, best = loss, state
                if report is not None and report(step, loss, ranks, temp):
                    step += 1
                    break
        else:
            step = steps
    except KeyboardInterrupt:
        interrupted = True
    losses = history["loss"]
    if len(losses) > 1 and min(losses[1:]) >= losses[0] and max(losses) > losses[0] + DIVERGED_BY * abs(losses[0]):
        # (an outside probe's lr=1e6: 0.88 -> 6.9e8 at step 15, masks all closed, said only by NumPy's overflows)
        worst = int(np.argmax(losses))
        warnings.warn(f"tnmars.fit: the MARS relaxation diverged: its loss rose from {losses[0]:.3g} to "
                      f"{losses[worst]:.3g} (step {history['step'][worst]}) and never came back below its start, so "
                      f"its masks (ranks {history['ranks'][-1]}) say nothing of the data. Lower the learning rate "
                      f"(relaxation={{'lr': ...}}; it was {lr:g})", RuntimeWarning, stacklevel=4)
    final = best if (interrupted and best is not None) else trainer.numpy_state()
    return RelaxationResult(final[0], final[1], history, step, interrupted)
