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

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .. import masks as mars

_STRETCH = mars.ZETA - mars.GAMMA

# Every Python scalar in a torch op costs a scalar-to-tensor conversion (4 more dispatcher
# calls), which at the size of a mask is most of the op's cost; the code below uses cached
# 0-d constants and scalar-free ops (addcmul, add with alpha) instead.
_CONSTANTS: dict[tuple, torch.Tensor] = {}


def _const(value: float, like: torch.Tensor) -> torch.Tensor:
    key = (value, like.dtype, like.device)
    got = _CONSTANTS.get(key)
    if got is None:
        if len(_CONSTANTS) > 1024:  # per-step temperature schedules would grow it without bound
            _CONSTANTS.clear()
        got = _CONSTANTS[key] = torch.tensor(value, dtype=like.dtype, device=like.device)
    return got


def hard_concrete_sample(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """A hard-concrete draw with fresh noise (:func:`tnmars.masks.hard_concrete`):
    ``clamp(gamma + (zeta - gamma) sigmoid((l + log u - log(1 - u)) / T), 0, 1)``."""
    u = torch.rand(logits.shape, dtype=logits.dtype, device=logits.device)
    z = torch.sigmoid(torch.add(torch.logit(u, eps=1e-6), logits) * _const(1.0 / temperature, logits))
    return torch.addcmul(_const(mars.GAMMA, z), z, _const(_STRETCH, z)).clamp(0.0, 1.0)


_PRIOR_CONSTANTS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _prior_constants(meta: tuple, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-entry ``scale * log(pi / (1 - pi))`` and the constant ``scale * sum log(1 - pi)``."""
    key = (meta, like.dtype, like.device)
    got = _PRIOR_CONSTANTS.get(key)
    if got is None:
        sizes, pis, scale = meta
        if len(_PRIOR_CONSTANTS) > 256:
            _PRIOR_CONSTANTS.clear()
        odds = torch.cat([torch.full((n,), scale * (math.log(pi) - math.log1p(-pi)), dtype=like.dtype)
                          for n, pi in zip(sizes, pis)]).to(like.device)
        constant = torch.tensor(scale * sum(n * math.log1p(-pi) for n, pi in zip(sizes, pis)), dtype=like.dtype,
                                device=like.device)
        got = _PRIOR_CONSTANTS[key] = (odds, constant)
    return got


def _norms(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The Frobenius norms as one vector (one fused, differentiable call where PyTorch offers it)."""
    foreach = getattr(torch, "_foreach_norm", None)
    if foreach is not None and len({(t.device, t.dtype) for t in tensors}) == 1:
        return torch.stack(foreach(list(tensors)))
    return torch.stack([torch.linalg.vector_norm(t).to(tensors[0].dtype) for t in tensors])


def joint_log_prior(items: Sequence[tuple[BondMasks, Sequence[torch.Tensor]]], scale: float = 1.0) -> torch.Tensor:
    """``scale`` times the MARS log prior (to maximise) of several ``(masks, cores)`` pairs:

    ``sum_sets [ sum_j phi_j log pi + (1 - phi_j) log(1 - pi) ] - sum_cores ||G||^2 / (2 * 100)``.

    Written as a handful of ops whatever the number of layers (all logits at once, all core
    norms in one call); ``scale = -1/N`` gives the MARS penalty directly.
    """
    logits = [m.logits for m, _ in items]
    cores = [c for _, group in items for c in group]
    flat = torch.cat(logits) if len(logits) > 1 else logits[0]
    # sum_j phi_j log(pi) + (1 - phi_j) log(1 - pi) = sum_j log(1 - pi) + phi_j log(pi / (1 - pi))
    log_odds, constant = _prior_constants((tuple(lg.numel() for lg in logits), tuple(m.pi for m, _ in items),
                                           float(scale)), flat)
    total = torch.dot(torch.sigmoid(flat), log_odds)
    if cores:
        norms = _norms(cores).to(total.dtype)
        total = torch.add(total, torch.dot(norms, norms), alpha=-0.5 * scale / mars.CORE_PRIOR_VARIANCE)
    return total + constant


class BondMasks(nn.Module):
    """Mask logits for the bonds named in ``sizes`` (bond -> maximal rank).

    All logits live in one parameter vector, :attr:`logits` (the bonds' vectors concatenated
    in :attr:`bonds` order): one optimiser entry and one fused sample per layer instead of
    one per bond. :meth:`bond_logits` gives the per-bond views.

    Parameters
    ----------
    sizes: bond index -> length of its mask (the maximal rank).
    pi: Bernoulli prior probability that a rank index is kept, in (0, 0.5].
    alpha: mean of the logits at initialisation (std 0.01). Negative values start with
        closed MAP masks; the paper uses -1.5 ("soft") and -1.75 ("hard") for MNIST.
    temperature: hard-concrete temperature; a :class:`MarsTemperature` scheduler or the
        user updates :attr:`temperature` during training.

    >>> m = BondMasks({"A": 4, "B": 3}, pi=0.01, alpha=0.5)
    >>> _ = m.eval()
    >>> {b: tuple(v.shape) for b, v in m().items()}
    {'A': (4,), 'B': (3,)}
    >>> tuple(m.logits.shape)
    (7,)
    """

    def __init__(self, sizes: Mapping[str, int], pi: float = 1e-2, alpha: float = -1.0, temperature: float = 0.1,
                 *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.pi = mars.check_pi(pi)
        self.alpha = float(alpha)
        self.temperature = mars.check_temperature(temperature)
        self.bonds = tuple(sizes)
        self.sizes = tuple(int(n) for n in sizes.values())
        if any(n < 1 for n in self.sizes):
            raise ValueError(f"every mask needs at least one entry; got sizes {dict(sizes)}")
        self.logits = nn.Parameter(self.alpha + 0.01 * torch.randn(sum(self.sizes), generator=generator))
        self._views: dict[tuple, tuple] = {}

    def extra_repr(self) -> str:
        return (f"sizes={dict(zip(self.bonds, self.sizes))}, pi={self.pi}, alpha={self.alpha}, "
                f"temperature={self.temperature:.4g}")

    def _split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        if len(self.sizes) == 1:
            return {self.bonds[0]: flat}
        return dict(zip(self.bonds, torch.split(flat, self.sizes)))

    def bond_logits(self) -> dict[str, torch.Tensor]:
        """Bond -> its logit vector (views of :attr:`logits`: in-place edits change the parameter)."""
        return self._split(self.logits)

    def forward(self) -> dict[str, torch.Tensor]:
        """Masks per bond: a hard-concrete sample when training, the MAP mask otherwise."""
        if self.training:
            return self._split(hard_concrete_sample(self.logits, float(self.temperature)))
        return self._split((self.logits.detach() > 0).to(self.logits.dtype))

    def fold(self, cores: Sequence[torch.Tensor], sites: Mapping[str, tuple[int, int]]) -> list[torch.Tensor]:
        """``cores`` with this forward's masks folded in: each bond's mask multiplies core
        ``sites[bond][0]`` along axis ``sites[bond][1]`` (one multiplication per bond)."""
        cores = list(cores)
        views = self._views.get(tuple(sites[b] for b in self.bonds))
        if views is None:
            views = self._views[tuple(sites[b] for b in self.bonds)] = tuple(
                tuple(-1 if d == sites[b][1] else 1 for d in range(cores[sites[b][0]].ndim)) for b in self.bonds)
        for (bond, mask), view in zip(self().items(), views):
            k = sites[bond][0]
            cores[k] = cores[k] * (mask if mask.dtype == cores[k].dtype else mask.to(cores[k].dtype)).view(view)
        return cores

    def probabilities(self) -> dict[str, torch.Tensor]:
        """``phi = sigmoid(logit)`` per bond (detached)."""
        return self._split(torch.sigmoid(self.logits.detach()))

    def keep(self) -> dict[str, torch.Tensor]:
        """Boolean MAP masks per bond (``phi > 0.5``)."""
        return self._split(self.logits.detach() > 0)

    def ranks(self) -> dict[str, int]:
        """Selected rank per bond: the number of kept indices."""
        return {b: int(k.sum()) for b, k in self.keep().items()}

    def log_prior(self, cores: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """Expected Bernoulli log prior of all masks (a quantity to maximise), plus the
        Gaussian ``N(0, 100)`` log prior of ``cores`` when given (the layer's whole MARS prior)."""
        return joint_log_prior([(self, cores)])
