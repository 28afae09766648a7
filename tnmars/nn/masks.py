"""MARS masks as a PyTorch module: learnable logits for a set of bonds.

:class:`BondMasks` is what every tensorized layer (and the tensorized recurrent matrix)
owns. In training mode ``forward()`` returns one hard-concrete sample per bond, shared by
the whole batch; in eval mode it returns the MAP masks (``phi > 0.5``). The maths is that
of :mod:`tnmars.masks` (shared with the NumPy/CuPy fitting code), written here with as few
torch calls as possible: at the sizes of a typical tensorized layer the MARS step's extra
cost is per-call overhead, not arithmetic (one logit vector per layer, one prior expression
for a whole model, scalar-free ops).
"""
from __future__ import annotations

import array
import math
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import masks as mars
from . import native as _native
from .program import is_recording

_STRETCH = mars.ZETA - mars.GAMMA

# Every Python scalar in a torch op costs a scalar-to-tensor conversion (4 more dispatcher
# calls), which at the size of a mask is most of the op's cost; the code below uses cached
# 0-d constants and scalar-free ops (addcmul, add with alpha) instead.
_CONSTANTS: dict[tuple, torch.Tensor] = {}
#: ``torch.compiler.is_compiling`` (PyTorch >= 2.3; earlier versions have no compiler to ask)
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)


def _const(value: float, like: torch.Tensor) -> torch.Tensor:
    if _is_compiling():  # traced: a constant of the graph (filling the cache there made torch.compile
        return torch.tensor(value, dtype=like.dtype, device=like.device)  # recompile after the first call)
    key = (value, like.dtype, like.device)
    got = _CONSTANTS.get(key)
    if got is None:
        if len(_CONSTANTS) > 1024:  # per-step temperature schedules would grow it without bound
            _CONSTANTS.clear()
        got = _CONSTANTS[key] = torch.tensor(value, dtype=like.dtype, device=like.device)
    return got


#: typecodes of :mod:`array` for the dtypes :func:`_host_tensor` builds through a buffer
_ARRAY_CODES = {torch.float32: "f", torch.float64: "d", torch.long: "q"}


def _host_tensor(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.tensor(values, dtype=dtype, device=device)`` for a flat list of numbers, through
    an :mod:`array` buffer where the dtype allows: a few microseconds instead of about ten for
    the tens of entries of a mask (``torch.tensor`` converts a list one Python number at a
    time), in every training step that draws a mask strictly inside (0, 1) or slices a bond.
    On the CPU the tensor shares the private buffer (and keeps it alive); elsewhere it is the
    buffer's transfer.

    >>> _host_tensor([1.0, 0.5], torch.float32, torch.device("cpu"))
    tensor([1.0000, 0.5000])
    """
    code = _ARRAY_CODES.get(dtype)
    if code is None or not values:
        return torch.tensor(values, dtype=dtype, device=device)
    t = torch.frombuffer(array.array(code, values), dtype=dtype)
    return t if device.type == "cpu" else t.to(device)


_NOISE_EPS = 1e-6
#: a draw is exactly 0 when (logit + noise) / T <= this, exactly 1 when >= _ONE (hard-concrete clamps)
_ZERO = math.log(-mars.GAMMA / (mars.ZETA - mars.GAMMA) / (1.0 + mars.GAMMA / (mars.ZETA - mars.GAMMA)))
_ONE = math.log((1.0 - mars.GAMMA) / (mars.ZETA - mars.GAMMA) / (1.0 - (1.0 - mars.GAMMA) / (mars.ZETA - mars.GAMMA)))


def hard_concrete_sample(logits: torch.Tensor, temperature: float | torch.Tensor,
                         noise: torch.Tensor | None = None) -> torch.Tensor:
    """A hard-concrete draw (:func:`tnmars.masks.hard_concrete`):
    ``clamp(gamma + (zeta - gamma) sigmoid((l + log u - log(1 - u)) / T), 0, 1)``, with fresh
    noise unless ``noise`` (``log u - log(1 - u)``, see :func:`logistic_noise`) is given. ``T``
    a 0-d tensor: read when the graph runs (a compiled step's input, not a constant of it)."""
    if noise is None:
        noise = logistic_noise(logits)
    if isinstance(temperature, torch.Tensor):
        z = torch.sigmoid(torch.add(noise, logits) / temperature.to(logits))
    else:
        z = torch.sigmoid(torch.add(noise, logits) * _const(1.0 / temperature, logits))
    return _clamp01(torch.addcmul(_const(mars.GAMMA, z), z, _const(_STRETCH, z)))


def _clamp01(m: torch.Tensor) -> torch.Tensor:
    """``m`` clamped to [0, 1] as ``hardtanh``: the same values as ``clamp``, and a backward of
    one kernel where ``clamp``'s takes four (two comparisons, an and, a select); on a GPU a
    small model's MARS step is bound by kernel launches. The gradient differs only at exactly
    0 or 1, where ``hardtanh`` sends none: the convention of the host-classified draws (a
    clamped draw sends no gradient to its logit), and a set of zero probability for the noise."""
    return F.hardtanh(m, 0.0, 1.0)


def logistic_noise(like: torch.Tensor) -> torch.Tensor:
    """``log u - log(1 - u)`` for ``u ~ U(0, 1)`` (clamped to ``[1e-6, 1 - 1e-6]``), shaped like ``like``."""
    return torch.logit(torch.rand(like.shape, dtype=like.dtype, device=like.device), eps=_NOISE_EPS)


def _draw_codes(uniforms: list[float], logits: list[float], temperature: float) -> list[int]:
    """Per entry of a hard-concrete draw with these uniforms: 0 (exactly 0), 1 (strictly inside
    (0, 1)) or 2 (exactly 1), from ``z = (logit + log u - log(1 - u)) / T`` against the clamp
    points, on the host (a few Python operations per entry instead of six tensor ops).

    >>> _draw_codes([0.5, 0.5, 0.5], [-5.0, 0.0, 5.0], 0.1)
    [0, 1, 2]
    """
    return _classify(uniforms, logits, temperature)[0]


def _classify(uniforms: list[float], logits: list[float], temperature: float) -> tuple[list[int], list[float]]:
    """:func:`_draw_codes` and the noise ``(log u - log(1 - u)) / T`` of every entry (float64).

    An entry is exactly 1 when ``u >= sigmoid(hi - logit)``: every uniform at or above that bound
    for the smallest logit (widened by a margin far above rounding) is such an entry, and only the
    others are classified one by one, so that a draw of open masks with one entry below 1 (the
    usual non-trivial draw late in training) costs a scan of the uniforms, not a logarithm per
    entry. Such entries get noise 0, which no caller reads: the noise is used for entries strictly
    inside (0, 1), and for every entry only when a logit is not finite (every entry is then
    classified). Where the bound passes 1/4 (low logits: most entries are not exactly 1), or a
    quarter of the uniforms fall below it, every entry is classified too.
    """
    lo, hi = _ZERO * temperature, _ONE * temperature
    log, low, high, inv = math.log, _NOISE_EPS, 1.0 - _NOISE_EPS, 1.0 / temperature
    n_entries = len(logits)
    candidates: Iterable[int] = range(n_entries)
    if math.isfinite(sum(logits)):  # no NaN or infinite logit (nor a sum past the float range)
        b = hi - min(logits)
        b += 1e-6 * (1.0 + abs(b))
        bound = 1.0 / (1.0 + math.exp(-b)) if b > -700.0 else 0.0
        # (a uniform clamped to ``high`` is at or above a bound <= high as well; above 1/4, about
        # that share of the entries would be candidates: the per-entry loop, without the scan)
        if bound <= 0.25:
            candidates = [i for i, u in enumerate(uniforms) if u < bound]
            if 4 * len(candidates) > n_entries:
                candidates = range(n_entries)
    if isinstance(candidates, range):
        codes, noise = [], []
        for u, lg in zip(uniforms, logits):
            u = low if u < low else high if u > high else u
            n = log(u / (1.0 - u))
            t = lg + n
            codes.append(0 if t <= lo else 2 if t >= hi else 1)
            noise.append(n * inv)
        return codes, noise
    codes, noise = [2] * n_entries, [0.0] * n_entries
    for i in candidates:
        u = uniforms[i]
        u = low if u < low else high if u > high else u
        n = log(u / (1.0 - u))
        t = logits[i] + n
        codes[i] = 0 if t <= lo else 2 if t >= hi else 1
        noise[i] = n * inv
    return codes, noise


def _all_ones(uniforms: list[float], logits: list[float], temperature: float) -> bool:
    """A sufficient test that every entry of the draw is exactly 1 (:func:`_draw_codes` all 2):
    the smallest logit plus the noise of the smallest uniform already reaches the upper clamp
    point. Two ``min`` calls instead of the per-entry classification, for the usual state of
    open masks.

    >>> _all_ones([0.3, 0.9], [8.0, 9.0], 0.1), _all_ones([1e-4, 0.9], [8.0, 9.0], 0.1)
    (True, False)
    """
    u = min(uniforms)
    u = _NOISE_EPS if u < _NOISE_EPS else 1.0 - _NOISE_EPS if u > 1.0 - _NOISE_EPS else u
    return min(logits) + math.log(u / (1.0 - u)) >= _ONE * temperature


#: Where the mask logits start by default: every mask open (``phi = sigmoid(6) = 0.9975``), so a
#: fresh layer is the full-rank layer and learns as one; the prior then closes the indices that
#: do not pay for themselves (see the "presets" section of the compressing guide). A training
#: draw drops each index with probability ``1 - phi`` (at any temperature): 4.7% at the former
#: default 3, random rank dropout that the eval-mode MAP masks do not have. Measured 2026-11-30
#: (held-out models, default layers, 15 or 6 epochs): a 2-layer TransformerEncoder classifier
#: converted by ``tensorize`` stalled at 60% accuracy on 5 of 6 seeds at alpha 3 (1.0 without
#: masks on all 6; at alpha 6, 1.0 on 5 of the 6 seeds, the sixth still stalled after 15
#: epochs; at alpha 8, 1.0 on the two seeds tried), and a conv autoencoder of four
#: ``Tucker2Conv2d`` reconstructed at MSE 0.36 (alpha 3), 0.11 (alpha 6), 0.10 (alpha 8) against
#: 0.105 without masks. Closing an index from 6 takes about twice the steps it took from 3
#: (Adam moves a logit about ``lr`` per step).
DEFAULT_ALPHA = 6.0

#: Named MARS settings. ``"default"`` starts open; ``"soft"`` and ``"hard"`` are the paper's
#: MNIST settings (masks start closed at their MAP; train with the paper's warm-up).
PRESETS: dict[str, dict[str, float]] = {
    "default": {"pi": 1e-2, "alpha": DEFAULT_ALPHA},
    "soft": {"pi": 0.1, "alpha": -1.5},
    "hard": {"pi": 1e-2, "alpha": -1.75},
}


def _batched_draw_error(u: torch.Tensor) -> RuntimeError | None:
    """The error for a mask draw that cannot be read on the host because ``torch.func.vmap``
    with ``randomness="different"`` draws one per example (None for another cause)."""
    wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)
    if wrapped is None or not wrapped(u):  # (inside vmap, possibly under grad: a functorch wrapper)
        return None
    return RuntimeError("a MARS layer in training mode under torch.func.vmap(randomness='different') would draw its "
                        "masks once per example, and its draws are read on the host: use randomness='same' (one "
                        "draw for the batch, as in a plain forward) or eval mode (MAP masks)")


def _warn_user(message: str, category: type[Warning]) -> None:
    from .base import warn_user  # base imports this module

    warn_user(message, category)


def check_alpha(alpha: float) -> float:
    """``alpha`` as a finite float (a NaN would close every mask silently)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) and not hasattr(alpha, "__float__"):
        raise TypeError(f"alpha must be a real number; got {alpha!r}")
    value = float(alpha)
    if not math.isfinite(value):
        raise ValueError(f"alpha (the initial mean of the mask logits) must be finite; got {alpha}")
    return value


def check_min_rank(min_rank: int) -> int:
    """``min_rank`` as an int >= 0."""
    if isinstance(min_rank, bool) or not isinstance(min_rank, int) and not hasattr(min_rank, "__index__"):
        raise TypeError(f"min_rank must be an int >= 0; got {min_rank!r}")
    value = int(min_rank)
    if value < 0:
        raise ValueError(f"min_rank must be >= 0; got {min_rank}")
    return value


def resolve_preset(mars: bool | str, pi: float, alpha: float) -> tuple[bool, float, float]:
    """``(enabled, pi, alpha)`` from a layer's ``mars=`` (True, False or a :data:`PRESETS` name)
    and its ``pi`` / ``alpha``: a preset replaces the values left at the layers' defaults
    (``pi=0.01``, ``alpha=6``), values given otherwise win."""
    if isinstance(mars, str):
        if mars not in PRESETS:
            raise ValueError(f"unknown MARS preset {mars!r}; use one of {sorted(PRESETS)} (or True / False)")
        preset = PRESETS[mars]
        default = PRESETS["default"]
        return (True, preset["pi"] if pi == default["pi"] else pi,
                preset["alpha"] if alpha == default["alpha"] else alpha)
    if isinstance(mars, (bool, int)) and not isinstance(mars, float):
        return bool(mars), pi, alpha
    raise TypeError(f"mars must be True, False or a preset name {sorted(PRESETS)}; got {mars!r}")


#: In training, the kept indices of a bond are padded to a multiple of this (with indices whose
#: draw is 0): hard-concrete draws change every step, and each new core shape costs a plan.
RANK_BUCKET = 4

_PRIOR_CONSTANTS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _prior_constants(meta: tuple, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-entry ``scale * log(pi / (1 - pi))`` and the constant ``scale * sum log(1 - pi)``."""
    key = (meta, like.dtype, like.device)
    recording = _is_compiling()  # traced: constants of the graph (filling the cache while tracing made
    got = None if recording else _PRIOR_CONSTANTS.get(key)  # dynamo guard on it: a second compile)
    if got is None:
        sizes, pis, scale = meta
        if len(_PRIOR_CONSTANTS) > 256 and not recording:
            _PRIOR_CONSTANTS.clear()
        odds = torch.cat([torch.full((n,), scale * (math.log(pi) - math.log1p(-pi)), dtype=like.dtype)
                          for n, pi in zip(sizes, pis)]).to(like.device)
        constant = torch.tensor(scale * sum(n * math.log1p(-pi) for n, pi in zip(sizes, pis)), dtype=like.dtype,
                                device=like.device)
        got = (odds, constant)
        if not recording:
            _PRIOR_CONSTANTS[key] = got
    return got


def _sum_of_squares(tensors: Sequence[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """``sum_k ||t_k||^2`` in ``like``'s dtype, differentiable: one concatenation and one dot
    product when the tensors share a dtype and device (two graph nodes and one gradient
    product whatever their number), else one norm per tensor."""
    if len({(t.device, t.dtype) for t in tensors}) == 1:
        flat = torch.cat([t.reshape(-1) for t in tensors]) if len(tensors) > 1 else tensors[0].reshape(-1)
        total = torch.dot(flat, flat)
        return total if total.dtype == like.dtype else total.to(like.dtype)  # (a no-op .to costs a call)
    total = None
    for t in tensors:
        sq = torch.linalg.vector_norm(t).square().to(device=like.device, dtype=like.dtype)
        total = sq if total is None else total + sq
    return total


def joint_log_prior(items: Sequence[tuple[BondMasks, Sequence[torch.Tensor]]], scale: float = 1.0) -> torch.Tensor:
    """``scale`` times the MARS log prior (to maximise) of several ``(masks, cores)`` pairs:

    ``sum_sets [ sum_j phi_j log pi + (1 - phi_j) log(1 - pi) ] - sum_cores ||G||^2 / (2 * 100)``.

    A few torch calls whatever the number of layers: all logits in one sigmoid and one dot
    product with their per-entry log odds, all cores in one sum of squares. Plain autograd
    ops (no hand-written graph node): at the size of a mask vector, a Python autograd
    ``Function`` costs more per step than the few small nodes it would replace. ``scale =
    -1/N`` gives the MARS penalty directly.
    """
    logits = [m._parameters["logits"] for m, _ in items]  # (Module.__getattr__ costs more, every step)
    cores = [c for _, group in items for c in group]
    flat = torch.cat(logits) if len(logits) > 1 else logits[0]
    # sum_j phi_j log(pi) + (1 - phi_j) log(1 - pi) = sum_j log(1 - pi) + phi_j log(pi / (1 - pi))
    log_odds, constant = _prior_constants((tuple([lg.numel() for lg in logits]), tuple([m.pi for m, _ in items]),
                                           float(scale)), flat)
    total = torch.add(constant, torch.dot(torch.sigmoid(flat), log_odds))
    if cores:
        total = torch.add(total, _sum_of_squares(cores, total), alpha=-0.5 * float(scale) / mars.CORE_PRIOR_VARIANCE)
    return total


class BondMasks(nn.Module):
    """Mask logits for the bonds named in ``sizes`` (bond -> maximal rank).

    All logits live in one parameter vector, :attr:`logits` (the bonds' vectors concatenated
    in :attr:`bonds` order): one optimiser entry and one fused sample per layer instead of
    one per bond. :meth:`bond_logits` gives the per-bond views.

    Parameters
    ----------
    sizes: bond index -> length of its mask (the maximal rank).
    pi: Bernoulli prior probability that a rank index is kept, in (0, 0.5].
    alpha: mean of the logits at initialisation (std 0.01). The default (:data:`DEFAULT_ALPHA`,
        3) starts every mask open; negative values start with closed MAP masks, as the
        paper's -1.5 ("soft") and -1.75 ("hard") for MNIST (:data:`PRESETS`).
    min_rank: every bond keeps at least this many indices (its largest logits) in training
        draws, MAP masks and compression; 0 lets a bond close whole (the paper's objective).
    temperature: hard-concrete temperature; a :class:`MarsTemperature` scheduler or the
        user updates :attr:`temperature` during training.
    device: where the logits live (a layer passes its cores' device).

    >>> m = BondMasks({"A": 4, "B": 3}, pi=0.01, alpha=0.5)
    >>> _ = m.eval()
    >>> {b: tuple(v.shape) for b, v in m().items()}
    {'A': (4,), 'B': (3,)}
    >>> tuple(m.logits.shape)
    (7,)
    """

    def __init__(self, sizes: Mapping[str, int], pi: float = 1e-2, alpha: float = DEFAULT_ALPHA,
                 temperature: float = 0.1, *, min_rank: int = 1, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.pi = mars.check_pi(pi)
        self.alpha = check_alpha(alpha)
        self.temperature = mars.check_temperature(temperature)
        self.min_rank = check_min_rank(min_rank)
        self.bonds = tuple(sizes)
        self.sizes = tuple(int(n) for n in sizes.values())
        if any(n < 1 for n in self.sizes):
            raise ValueError(f"every mask needs at least one entry; got sizes {dict(sizes)}")
        fixed = [b for b, n in zip(self.bonds, self.sizes) if 1 < n <= self.min_rank]
        if fixed:  # MARS would be on and select nothing there, silently
            _warn_user(f"min_rank={self.min_rank} is at least the size of bond(s) {fixed} "
                       f"({', '.join(str(n) for b, n in zip(self.bonds, self.sizes) if b in fixed)}): MARS cannot "
                       "remove any index there; lower min_rank or start from larger ranks", UserWarning)
        # drawn on the CPU (the generator's device), so a seed gives the same logits on every device
        start = self.alpha + 0.01 * torch.randn(sum(self.sizes), generator=generator)
        self.logits = nn.Parameter(start if device is None else start.to(device))
        self._views: dict[tuple, tuple] = {}
        #: who owns these masks, for warnings (set by the layer; MarsLoss and summary put the model path in)
        self.owner = "a MARS layer"

    def reset_parameters(self) -> None:
        """The logits drawn afresh as the constructor draws them, ``alpha + 0.01 N(0, 1)`` (the
        layer's :meth:`~tnmars.nn.TensorizedLayer.reset_parameters`)."""
        logits = self._parameters["logits"]
        start = self.alpha + 0.01 * torch.randn(logits.shape)
        with torch.no_grad():
            logits.copy_(start)

    @property
    def temperature(self) -> float:
        """The hard-concrete temperature (settable; checked). A compiled step reads it from a
        0-d tensor kept alongside, filled in place at every change: dynamo guarded on the float,
        and a temperature schedule recompiled the step at every change (a fullgraph step failed
        at the recompile limit)."""
        state = self.__dict__
        return state["_temperature"] if "_temperature" in state else state["temperature"]  # (pickled before)

    @temperature.setter
    def temperature(self, value: float) -> None:
        value = mars.check_temperature(value)
        state = self.__dict__
        state["_temperature"] = value
        kept = state.get("_temperature_t")
        if kept is None:
            state["_temperature_t"] = torch.tensor(value, dtype=torch.float64)
        else:
            with torch.no_grad():
                kept.fill_(value)

    @property
    def _temperature_tensor(self) -> torch.Tensor:
        kept = self.__dict__.get("_temperature_t")
        if kept is None:  # a module pickled before it existed
            kept = self.__dict__["_temperature_t"] = torch.tensor(self.temperature, dtype=torch.float64)
        return kept

    def train(self, mode: bool = True) -> BondMasks:
        """Switch mode; switching to eval warns when MARS closed a whole bond (:meth:`warn_if_closed`)."""
        was_training = self.training
        super().train(mode)
        if was_training and not mode and "_owner_in_warmup" not in self.__dict__:  # (see base.train_masked)
            self.warn_if_closed()
        return self

    def warn_if_closed(self) -> list[str]:
        """Warn (``RuntimeWarning``, naming :attr:`owner`) if some bond has every ``phi <= 0.5``;
        return those bonds. With ``min_rank=0`` the layer's weight is then exactly zero."""
        if not bool(torch.isfinite(self.logits.detach()).all()):
            _warn_user(f"{self.owner}: its mask logits hold NaN or infinity (the training diverged: look for a NaN "
                       "loss), and NaN logits read as closed masks: its ranks mean nothing", RuntimeWarning)
            return []
        closed = self.closed_bonds()
        if closed:
            if self.min_rank:
                msg = (f"{self.owner}: MARS closed every index of bond(s) {closed} (phi <= 0.5 on all of them); "
                       f"they are kept at rank {self.min_rank} only because min_rank={self.min_rank}. The prior "
                       "may be too strong for this layer (pi, alpha, or the N given to MarsLoss) or it may not be "
                       "needed")
            else:
                msg = (f"{self.owner}: every mask of bond(s) {closed} is closed, so its weight is zero (min_rank=0): "
                       "a layer outputs only its bias, a recurrent matrix keeps no memory of past steps; use "
                       "min_rank >= 1, a larger pi or alpha")
            _warn_user(msg, RuntimeWarning)
        return closed

    def extra_repr(self) -> str:
        return (f"sizes={dict(zip(self.bonds, self.sizes))}, pi={self.pi}, alpha={self.alpha}, "
                f"temperature={self.temperature:.4g}, min_rank={self.min_rank}")

    def _split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        if len(self.sizes) == 1:
            return {self.bonds[0]: flat}
        return dict(zip(self.bonds, torch.split(flat, self.sizes)))

    def bond_logits(self) -> dict[str, torch.Tensor]:
        """Bond -> its logit vector (views of :attr:`logits`: in-place edits change the parameter)."""
        return self._split(self.logits)

    def _flat_mask(self) -> torch.Tensor:
        """All bonds' masks as one vector: a hard-concrete sample (train) or MAP 0/1 (eval),
        topped up to :attr:`min_rank` kept entries per bond (:meth:`_top_up`)."""
        if self.training:  # (traced: the temperature as a tensor, so a schedule does not recompile the step)
            flat = hard_concrete_sample(self.logits, self._temperature_tensor if _is_compiling() else self.temperature)
        else:
            flat = (self.logits.detach() > 0).to(self.logits.dtype)
        if not self.min_rank:
            return flat
        if flat.device.type != "cpu" or is_recording():  # no host round trip: the same rule on the device
            return self._top_up_on_device(flat)
        forced = self._top_up(flat.detach() != 0)
        return flat.index_fill(0, forced, 1.0) if forced.numel() else flat

    def _top_up_on_device(self, flat: torch.Tensor) -> torch.Tensor:
        """:meth:`_top_up` applied without reading values on the host (GPU, ``torch.compile``),
        the same result. Bonds of one length (a TT or Tucker layer at one rank) go through
        together as the rows of a matrix: eight kernel calls for the layer instead of about
        nine per bond (on a GPU a small model's step is bound by kernel launches)."""
        logits = self.logits.detach()
        sizes = self.sizes
        n = sizes[0]
        if len(sizes) > 1 and all(k == n for k in sizes):
            m = min(self.min_rank, n)
            rows = flat.view(len(sizes), n)
            short = (rows != 0).sum(1, keepdim=True) < m
            # (a stable sort, not topk: tied logits keep their first indices, as the host's top-up does)
            order = logits.view(len(sizes), n).sort(dim=1, descending=True, stable=True).indices[:, :m]
            top = torch.zeros_like(rows, dtype=torch.bool).scatter_(1, order, True)
            return torch.where(top & short, 1.0, rows).view(-1)
        pieces = []
        for seg, lg, n in zip(torch.split(flat, sizes), torch.split(logits, sizes), sizes):
            m = min(self.min_rank, n)
            short = (seg != 0).sum() < m
            order = lg.sort(descending=True, stable=True).indices[:m]
            top = torch.zeros(n, dtype=torch.bool, device=flat.device).index_fill(0, order, True)
            pieces.append(torch.where(top & short, 1.0, seg))
        return torch.cat(pieces) if len(pieces) > 1 else pieces[0]

    def _top_up(self, nonzero: torch.Tensor | list) -> torch.Tensor | list[int]:
        """Positions to force to 1 so that every bond keeps :attr:`min_rank` entries: for each bond
        with fewer non-zero entries than that, its ``min_rank`` largest logits.

        ``nonzero`` is a boolean tensor (a tensor of positions comes back) or a host list of
        truthy codes (a list comes back); the logits are read only for a bond that falls short.
        """
        if isinstance(nonzero, torch.Tensor):
            if not self.min_rank:
                return nonzero.new_zeros(0, dtype=torch.long)
            codes = nonzero.tolist()
            return torch.tensor(self._top_up(codes), dtype=torch.long, device=nonzero.device)
        forced: list[int] = []
        if not self.min_rank or (0 not in nonzero and False not in nonzero):  # every entry kept
            return forced
        logits = None
        start = 0
        for n in self.sizes:
            m = min(self.min_rank, n)
            if n - nonzero[start:start + n].count(0) < m:  # (False == 0: booleans count alike)
                if logits is None:
                    logits = self.logits.detach().tolist()
                seg = logits[start:start + n]
                forced.extend(start + i for i in sorted(range(n), key=seg.__getitem__, reverse=True)[:m])
            start += n
        return forced

    def forward(self) -> dict[str, torch.Tensor]:
        """Masks per bond: a hard-concrete sample when training, the MAP mask otherwise
        (both with at least :attr:`min_rank` kept entries per bond)."""
        return self._split(self._flat_mask())

    def fold(self, cores: Sequence[torch.Tensor], sites: Mapping[str, tuple[int, int]],
             bond_axes: Mapping[str, Sequence[tuple[int, int]]] | None = None) -> list[torch.Tensor]:
        """``cores`` with this forward's masks folded in: each bond's mask multiplies core
        ``sites[bond][0]`` along axis ``sites[bond][1]`` (one multiplication per bond).

        With ``bond_axes`` (bond -> every ``(core, axis)`` it joins), the indices whose mask
        is exactly 0 in this draw are first sliced out of every core on the bond. That
        computes the same function, and the same gradients (a zero mask entry sends no
        gradient to its logit, and zeroes the gradient of every core slice it multiplies),
        at the ranks actually in use: most hard-concrete draws of closed indices are exactly
        0, so a MARS step contracts smaller cores than the fixed-rank layer. In eval mode
        the kept MAP entries are exactly 1 and the multiplication is skipped too, which is
        what the ``compress``-ed layer computes. In training, when no draw lies strictly
        inside (0, 1) (late in training, at a low temperature), no data gradient can reach the
        logits, the draw is not recorded and entries left at exactly 1 are not multiplied: the
        logits then get gradient from the prior only (``MarsLoss``), ``None`` without it. It
        needs the mask values on the host (one transfer per layer and forward). A bond whose
        draw keeps fewer than :attr:`min_rank` entries gets its largest logits' entries set to 1.
        """
        cores = list(cores)
        if bond_axes is None:
            views = self._mask_views(cores, sites)
            flat = self._flat_mask()
            if flat.dtype != cores[0].dtype:
                flat = flat.to(cores[0].dtype)
            for (bond, mask), view in zip(self._split(flat).items(), views):
                k = sites[bond][0]
                cores[k] = cores[k] * mask.view(view)
            return cores
        # draw without recording the graph, read which entries are 0, strictly inside (0, 1) or 1;
        # only a draw strictly inside sends gradient to its logit (clamped ends have none), so the
        # differentiable draw (same noise) is made only when there is one
        logits = self._parameters["logits"]  # (not through Module.__getattr__: this runs every step)
        noise = None
        if self.training:  # classify the draw on the host from its uniform noise (no tensor ops)
            temperature = float(self.temperature)
            native = _native.get()
            u = NotImplemented
            if native is not None and logits.is_cpu:  # the same draw and test, compiled (:mod:`.native`)
                u = native.draw_open(logits, _ONE * temperature, _NOISE_EPS)
                if u is None:  # every entry exactly 1
                    return cores
            if u is NotImplemented:  # (no native ops, or a draw they leave to torch: vmap, modes, GPU)
                # rand_like: the same numbers as torch.rand(shape, dtype=, device=) for this 1-D vector, in
                # half the time of parsing the keyword arguments
                u = torch.rand_like(logits)
            # plain Python on lists: in a training step, NumPy's or more torch's code paths cost
            # more (cold caches between the step's GEMMs) than these few list operations
            try:
                if u.is_cpu:  # (not .device.type: a device object built every step)
                    uniforms, values = u.tolist(), logits.tolist()
                else:  # one device-to-host transfer
                    uniforms, values = torch.stack((u, logits.detach())).tolist()
            except RuntimeError as err:
                batched = _batched_draw_error(u)
                if batched is None:
                    raise
                raise batched from err
            if _all_ones(uniforms, values, temperature):  # the usual case with open masks
                return cores
            codes, noise = _classify(uniforms, values, temperature)
        else:
            values = logits.detach().tolist()
            codes = [2 if v > 0.0 else 0 for v in values]
        if 0 not in codes and 1 not in codes:  # every entry exactly 1: nothing to slice, nothing
            return cores                        # to multiply, no logit can get gradient from the data
        forced = self._top_up(codes)
        for i in forced:
            codes[i] = 2
        views = self._mask_views(cores, sites)
        live = self.training and 1 in codes
        pieces = None
        start = 0
        for j, (bond, view, n) in enumerate(zip(self.bonds, views, self.sizes)):
            state = codes[start:start + n]
            k = sites[bond][0]
            idx = None
            if 0 not in state:  # nothing to slice; multiply unless every entry is exactly 1
                multiply = 1 in state
            else:
                keep = [i for i, c in enumerate(state) if c]
                if self.training and len(keep) % RANK_BUCKET and len(keep) < n:
                    # pad with zero-mask indices to a multiple of RANK_BUCKET (still exact: they are
                    # multiplied by their 0), so that few distinct shapes need a contraction plan
                    pad = min(n, len(keep) + RANK_BUCKET - len(keep) % RANK_BUCKET) - len(keep)
                    keep = sorted(keep + [i for i, c in enumerate(state) if not c][:pad])
                if len(keep) < n:
                    idx = _host_tensor(keep, torch.long, logits.device)
                    for core, axis in bond_axes[bond]:
                        cores[core] = cores[core].index_select(axis, idx)
                # multiply unless every entry left is exactly 1: a bond whose kept draws are all
                # clamped to 1 sends no gradient to its logits, even when another bond's draw is live
                multiply = any(state[i] != 2 for i in keep)
            if multiply:
                if not live:  # values 0 and 1 only, no gradient: this bond's kept entries, built on the host
                    mask = _host_tensor([0.5 * c for c in state] if idx is None else [0.5 * state[i] for i in keep],
                                        cores[0].dtype, logits.device)
                else:
                    if pieces is None:  # one split for all bonds: one backward node (a slice each would be more)
                        flat = self._fold_values(codes, values, noise, forced)
                        if flat.dtype != cores[0].dtype:
                            flat = flat.to(cores[0].dtype)
                        pieces = torch.split(flat, self.sizes) if len(self.sizes) > 1 else (flat,)
                    mask = pieces[j]
                    if idx is not None:
                        mask = mask.index_select(0, idx)
                cores[k] = cores[k] * mask.view(view)
            start += n
        return cores

    def _mask_views(self, cores: Sequence[torch.Tensor], sites: Mapping[str, tuple[int, int]]) -> tuple:
        """Per bond, the shape that broadcasts its mask along its axis of the core it multiplies."""
        key = tuple(sites[b] for b in self.bonds)
        recording = _is_compiling()  # (traced: no cache to read or fill, see _const)
        views = None if recording else self._views.get(key)
        if views is None:
            views = tuple(
                tuple(-1 if d == sites[b][1] else 1 for d in range(cores[sites[b][0]].ndim)) for b in self.bonds)
            if not recording:
                self._views[key] = views
        return views

    def _fold_values(self, codes: list[int], values: list[float], noise: list[float] | None,
                     forced: list[int]) -> torch.Tensor:
        """The mask values :meth:`fold` multiplies in, from the host's classification ``codes``
        (``forced`` entries already 2). Entries at a clamp point are exactly 0 or 1; an entry
        strictly inside (0, 1) (only in training, with ``noise``, already divided by T) gets its
        hard-concrete value ``m = gamma + (zeta - gamma) s``, ``s = sigmoid(l / T + noise)``, and
        the gradient ``dm/dl = (zeta - gamma) s (1 - s) / T``, both computed here in float64, as
        ``m + (l - l) * dm/dl``: the value is exactly ``m`` and the logits get exactly the
        hard-concrete gradient through two graph nodes (one subtraction, one ``addcmul``),
        instead of the sigmoid, stretch and clamp chain and its backward (about ten kernel calls).
        An infinite logit (``l - l`` would be NaN) takes that chain."""
        logits = self.logits
        if noise is None or 1 not in codes:
            return _host_tensor([0.5 * c for c in codes], logits.dtype, logits.device)
        if not -math.inf < min(values) <= max(values) < math.inf:
            scaled = torch.tensor(noise, dtype=logits.dtype, device=logits.device)
            z = torch.sigmoid(torch.add(scaled, logits, alpha=1.0 / float(self.temperature)))
            flat = _clamp01(torch.addcmul(_const(mars.GAMMA, z), z, _const(_STRETCH, z)))
            if forced:
                flat = flat.index_fill(0, torch.tensor(forced, dtype=torch.long, device=flat.device), 1.0)
            return flat
        inv, exp = 1.0 / float(self.temperature), math.exp
        masks, slopes = [0.5 * c for c in codes], [0.0] * len(codes)
        i = codes.index(1)  # the live entries, found by list.index (few, late in training)
        while True:
            z = values[i] * inv + noise[i]
            e = exp(-abs(z))  # the logistic function without overflow on either side
            s = 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)
            m = mars.GAMMA + _STRETCH * s
            masks[i] = 0.0 if m < 0.0 else 1.0 if m > 1.0 else m
            slopes[i] = _STRETCH * s * (1.0 - s) * inv
            try:
                i = codes.index(1, i + 1)
            except ValueError:
                break
        if logits.device.type == "cpu":
            return torch.addcmul(_host_tensor(masks, logits.dtype, logits.device), logits - logits.detach(),
                                 _host_tensor(slopes, logits.dtype, logits.device))
        both = _host_tensor(masks + slopes, logits.dtype, logits.device).view(2, -1)  # one transfer
        return torch.addcmul(both[0], logits - logits.detach(), both[1])

    def kept_share(self) -> float:
        """The share of indices a training draw keeps (not exactly 0) at the current logits and
        temperature, on average over the entries: ``sigmoid(l - T z0)``, ``z0`` the clamp point."""
        logits = self.logits.detach().double()
        return float(torch.sigmoid(logits - _ZERO * float(self.temperature)).mean())

    def probabilities(self) -> dict[str, torch.Tensor]:
        """``phi = sigmoid(logit)`` per bond (detached)."""
        return self._split(torch.sigmoid(self.logits.detach()))

    def keep(self) -> dict[str, torch.Tensor]:
        """Boolean MAP masks per bond: ``phi > 0.5``, topped up to :attr:`min_rank` entries
        (the largest logits) on a bond that keeps fewer."""
        flat = self.logits.detach() > 0
        forced = self._top_up(flat)
        return self._split(flat.index_fill(0, forced, True) if forced.numel() else flat)

    def closed_bonds(self) -> list[str]:
        """Bonds on which every entry has ``phi <= 0.5``: MARS closed them whole. Such a bond is
        kept at :attr:`min_rank` (rank 0 with ``min_rank=0``: the network is then zero)."""
        return [b for b, lg in self._split(self.logits.detach()).items() if not bool((lg > 0).any())]

    def ranks(self) -> dict[str, int]:
        """Selected rank per bond: the number of kept indices."""
        return {b: int(k.sum()) for b, k in self.keep().items()}

    def log_prior(self, cores: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """Expected Bernoulli log prior of all masks (a quantity to maximise), plus the
        Gaussian ``N(0, 100)`` log prior of ``cores`` when given (the layer's whole MARS prior)."""
        return joint_log_prior([(self, cores)])
