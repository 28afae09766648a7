"""MARS masks as a PyTorch module: learnable logits for a set of bonds.

:class:`BondMasks` is what every tensorized layer (and the tensorized recurrent matrix)
owns. In training mode ``forward()`` returns one hard-concrete sample per bond, shared by
the whole batch; in eval mode it returns the MAP masks (``phi > 0.5``). The maths is that
of :mod:`tnmars.masks` (shared with the NumPy/CuPy fitting code); here the sample (with its
folding into the cores) and the prior are each one fused autograd node with few ops, because
at the sizes of a typical tensorized layer the MARS step's extra cost is per-op overhead, not
arithmetic.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .. import masks as mars

_STRETCH = mars.ZETA - mars.GAMMA

# Every Python scalar in a torch op costs a scalar-to-tensor conversion (4 more dispatcher
# calls), which at the size of a mask is most of the op's cost; the fused nodes below use
# cached 0-d constants and scalar-free ops (addcmul, masked_fill, add with alpha) instead.
_CONSTANTS: dict[tuple, torch.Tensor] = {}


def _const(value: float, like: torch.Tensor) -> torch.Tensor:
    key = (value, like.dtype, like.device)
    got = _CONSTANTS.get(key)
    if got is None:
        if len(_CONSTANTS) > 1024:  # per-step temperature schedules would grow it without bound
            _CONSTANTS.clear()
        got = _CONSTANTS[key] = torch.tensor(value, dtype=like.dtype, device=like.device)
    return got


def _sample(logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A hard-concrete draw with fresh noise: ``(z, stretched, clamped)`` where
    ``z = sigmoid((l + log u - log(1 - u)) / T)``, ``stretched = gamma + (zeta - gamma) z`` and
    the sample is ``clamp(stretched, 0, 1)`` (:func:`tnmars.masks.hard_concrete`)."""
    u = torch.rand(logits.shape, dtype=logits.dtype, device=logits.device)
    z = torch.add(torch.logit(u, eps=1e-6), logits).mul_(_const(1.0 / temperature, logits)).sigmoid_()
    stretched = torch.addcmul(_const(mars.GAMMA, z), z, _const(_STRETCH, z))
    return z, stretched, stretched.clamp(0.0, 1.0)


def _sample_grad(grad: torch.Tensor, z: torch.Tensor, stretched: torch.Tensor, sample: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """``grad * d sample / d logits``: ``(zeta - gamma) z (1 - z) / T`` where the clamp is inactive."""
    slope = torch.addcmul(z, z, z, value=-1.0).mul_(_const(_STRETCH / temperature, z))
    return grad * slope.masked_fill_(sample != stretched, 0.0)


class _HardConcrete(torch.autograd.Function):
    """A hard-concrete sample of ``logits`` with fresh noise, as one autograd node."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        z, stretched, sample = _sample(logits, temperature)
        ctx.save_for_backward(z, stretched, sample)
        ctx.temperature = temperature
        return sample

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        return _sample_grad(grad, *ctx.saved_tensors, ctx.temperature), None


class _SampleAndFold(torch.autograd.Function):
    """One hard-concrete sample for every bond, folded into the cores, as one autograd node.

    ``layout`` is ``(sizes, [(position, view), ...])``: the bonds' mask lengths (their slices
    of the flat logits, in order) and per bond which of ``cores`` it multiplies and the
    broadcast shape there. Several bonds may fold into one core. Returns the masked cores.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, temperature: float, layout: tuple, *cores: torch.Tensor):
        sizes, sites = layout
        z, stretched, sample = _sample(logits, temperature)
        parts = torch.split(sample, sizes) if len(sizes) > 1 else (sample,)
        masked = list(cores)
        for (pos, view), part in zip(sites, parts):
            core = cores[pos]
            masked[pos] = masked[pos] * (part if part.dtype == core.dtype else part.to(core.dtype)).view(view)
        ctx.save_for_backward(z, stretched, sample, *cores)
        ctx.temperature, ctx.layout = temperature, layout
        return tuple(masked)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: torch.Tensor):
        z, stretched, sample, *cores = ctx.saved_tensors
        sizes, sites = ctx.layout
        parts = torch.split(sample, sizes) if len(sizes) > 1 else (sample,)
        views = [(part if part.dtype == cores[pos].dtype else part.to(cores[pos].dtype)).view(view)
                 for (pos, view), part in zip(sites, parts)]
        g_parts = []
        for k, (pos, view) in enumerate(sites):
            g = grads[pos]
            if g is None:
                g_parts.append(torch.zeros_like(parts[k]))
                continue
            t = g * cores[pos]
            for j, (other, _) in enumerate(sites):
                if other == pos and j != k:
                    t = t * views[j]
            axis = view.index(-1)
            dims = [d for d in range(t.ndim) if d != axis]
            g_part = t.sum(dims) if dims else t
            g_parts.append(g_part if g_part.dtype == sample.dtype else g_part.to(sample.dtype))
        g_sample = torch.cat(g_parts) if len(g_parts) > 1 else g_parts[0]
        g_cores: list[torch.Tensor | None] = []
        needs = ctx.needs_input_grad[3:]
        for pos, g in enumerate(grads):
            if g is not None and needs[pos]:
                for j, (other, _) in enumerate(sites):
                    if other == pos:
                        g = g * views[j]
                g_cores.append(g)
            else:
                g_cores.append(None)
        return (_sample_grad(g_sample, z, stretched, sample, ctx.temperature), None, None, *g_cores)


class _JointLogPrior(torch.autograd.Function):
    """``scale`` times the MARS log prior of several mask sets and their cores, as one node:

    ``sum_sets [ sum_j phi_j log pi + (1 - phi_j) log(1 - pi) ] - sum_cores ||G||^2 / (2 variance)``

    with its analytic gradient. ``meta = (sizes, pis, variance, scale)``: one logit tensor per
    entry of ``sizes``/``pis`` comes first in ``tensors``, the cores follow.
    """

    @staticmethod
    def forward(ctx, meta: tuple, *tensors: torch.Tensor) -> torch.Tensor:
        sizes, pis, variance, scale = meta
        logits, cores = tensors[:len(sizes)], tensors[len(sizes):]
        flat = torch.cat(logits) if len(logits) > 1 else logits[0]
        phi = torch.sigmoid(flat)
        # sum_j phi_j log(pi) + (1 - phi_j) log(1 - pi) = sum_j log(1 - pi) + phi_j log(pi / (1 - pi))
        log_odds, constant = _prior_constants(meta, phi)
        total = torch.dot(phi, log_odds)
        if cores:
            norms = _norms(cores)
            squares = torch.dot(norms, norms).to(total.dtype)
            total = torch.add(total, squares, alpha=-0.5 * scale / variance)
        ctx.save_for_backward(phi, log_odds, *cores)
        ctx.meta = meta
        return total.add_(constant)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        sizes, _, variance, scale = ctx.meta
        phi, log_odds, *cores = ctx.saved_tensors
        g_flat = torch.addcmul(phi, phi, phi, value=-1.0).mul_(log_odds).mul_(grad.to(phi.dtype))
        g_logits = torch.split(g_flat, sizes) if len(sizes) > 1 else (g_flat,)
        g_cores = _scaled(cores, grad * _const(-scale / variance, grad)) if cores else []
        needs = ctx.needs_input_grad[1:]
        out = [g if need else None for g, need in zip([*g_logits, *g_cores], needs)]
        return (None, *out)


_PRIOR_CONSTANTS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _prior_constants(meta: tuple, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-entry ``scale * log(pi / (1 - pi))`` and the constant ``scale * sum log(1 - pi)``."""
    key = (meta, like.dtype, like.device)
    got = _PRIOR_CONSTANTS.get(key)
    if got is None:
        sizes, pis, _, scale = meta
        if len(_PRIOR_CONSTANTS) > 256:
            _PRIOR_CONSTANTS.clear()
        odds = torch.cat([torch.full((n,), scale * (math.log(pi) - math.log1p(-pi)), dtype=like.dtype)
                          for n, pi in zip(sizes, pis)]).to(like.device)
        constant = torch.tensor(scale * sum(n * math.log1p(-pi) for n, pi in zip(sizes, pis)), dtype=like.dtype,
                                device=like.device)
        got = _PRIOR_CONSTANTS[key] = (odds, constant)
    return got


def _norms(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The Frobenius norms as one vector (one fused call where PyTorch offers it)."""
    foreach = getattr(torch, "_foreach_norm", None)
    if foreach is not None and len({(t.device, t.dtype) for t in tensors}) == 1:
        return torch.stack(foreach(list(tensors)))
    return torch.stack([torch.linalg.vector_norm(t).to(tensors[0].dtype) for t in tensors])


def _scaled(tensors: Sequence[torch.Tensor], factor: torch.Tensor) -> list[torch.Tensor]:
    """``[t * factor for t in tensors]`` (one fused call where PyTorch offers it)."""
    foreach = getattr(torch, "_foreach_mul", None)
    if foreach is not None and len({(t.device, t.dtype) for t in tensors}) == 1:
        return list(foreach(list(tensors), factor.to(tensors[0].dtype)))
    return [t * factor.to(t.dtype) for t in tensors]


def joint_log_prior(items: Sequence[tuple[BondMasks, Sequence[torch.Tensor]]], scale: float = 1.0) -> torch.Tensor:
    """``scale`` times the MARS log prior (to maximise) of several ``(masks, cores)`` pairs, as
    one autograd node: the expected Bernoulli prior of every mask plus the Gaussian
    ``N(0, 100)`` prior of every core. A model's whole prior costs the same few ops however
    many layers it has; ``scale = -1/N`` gives the MARS penalty directly."""
    meta = (tuple(m.logits.numel() for m, _ in items), tuple(m.pi for m, _ in items), mars.CORE_PRIOR_VARIANCE,
            float(scale))
    tensors = [m.logits for m, _ in items] + [c for _, cores in items for c in cores]
    return _JointLogPrior.apply(meta, *tensors)


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
        self._layouts: dict[tuple, tuple] = {}

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
            return self._split(_HardConcrete.apply(self.logits, float(self.temperature)))
        return self._split((self.logits.detach() > 0).to(self.logits.dtype))

    def fold(self, cores: Sequence[torch.Tensor], sites: Mapping[str, tuple[int, int]]) -> list[torch.Tensor]:
        """``cores`` with this forward's masks folded in: each bond's mask multiplies core
        ``sites[bond][0]`` along axis ``sites[bond][1]``. In training mode the sample and the
        folding are one fused autograd node (same law and gradients as ``forward()`` followed
        by one multiplication per bond); in eval mode the MAP masks are folded."""
        cores = list(cores)
        if not self.training:
            for bond, mask in self().items():
                core, axis = sites[bond]
                view = [1] * cores[core].ndim
                view[axis] = -1
                cores[core] = cores[core] * mask.to(cores[core].dtype).view(view)
            return cores
        key = (tuple(sites[b] for b in self.bonds), tuple(c.ndim for c in cores))
        got = self._layouts.get(key)
        if got is None:
            # the cores that receive a mask, and per bond (local core position, broadcast view)
            touched = tuple(sorted({sites[b][0] for b in self.bonds}))
            places = []
            for bond in self.bonds:
                core, axis = sites[bond]
                view = [1] * cores[core].ndim
                view[axis] = -1
                places.append((touched.index(core), tuple(view)))
            got = self._layouts[key] = (touched, (self.sizes, tuple(places)))
        touched, layout = got
        masked = _SampleAndFold.apply(self.logits, float(self.temperature), layout, *(cores[p] for p in touched))
        for pos, m in zip(touched, masked):
            cores[pos] = m
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
