"""MARS masks as a PyTorch module: learnable logits for a set of bonds.

:class:`BondMasks` is what every tensorized layer (and the tensorized recurrent matrix)
owns. In training mode ``forward()`` returns one hard-concrete sample per bond, shared by
the whole batch; in eval mode it returns the MAP masks (``phi > 0.5``). The maths lives in
:mod:`tnmars.masks`, shared with the NumPy/CuPy fitting code.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .. import masks as mars
from ..backends import get_backend

_TORCH = None


def _backend():
    global _TORCH
    if _TORCH is None:
        _TORCH = get_backend("torch")
    return _TORCH


class BondMasks(nn.Module):
    """Mask logits for the bonds named in ``sizes`` (bond -> maximal rank).

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
    """

    def __init__(self, sizes: Mapping[str, int], pi: float = 1e-2, alpha: float = -1.0, temperature: float = 0.1,
                 *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.pi = mars.check_pi(pi)
        self.alpha = float(alpha)
        self.temperature = mars.check_temperature(temperature)
        self.bonds = tuple(sizes)
        self.logits = nn.ParameterDict(
            {b: nn.Parameter(self.alpha + 0.01 * torch.randn(int(n), generator=generator)) for b, n in sizes.items()}
        )

    def extra_repr(self) -> str:
        sizes = {b: p.numel() for b, p in self.logits.items()}
        return f"sizes={sizes}, pi={self.pi}, alpha={self.alpha}, temperature={self.temperature:.4g}"

    def forward(self) -> dict[str, torch.Tensor]:
        """Masks per bond: a hard-concrete sample when training, the MAP mask otherwise."""
        be = _backend()
        out = {}
        for bond, logits in self.logits.items():
            if self.training:
                noise = torch.rand(logits.shape, dtype=logits.dtype, device=logits.device)
                out[bond] = mars.hard_concrete(logits, self.temperature, noise, be)
            else:
                out[bond] = mars.map_mask(logits.detach(), be)
        return out

    def probabilities(self) -> dict[str, torch.Tensor]:
        """``phi = sigmoid(logit)`` per bond (detached)."""
        return {b: torch.sigmoid(p.detach()) for b, p in self.logits.items()}

    def keep(self) -> dict[str, torch.Tensor]:
        """Boolean MAP masks per bond (``phi > 0.5``)."""
        return {b: (p.detach() > 0) for b, p in self.logits.items()}

    def ranks(self) -> dict[str, int]:
        """Selected rank per bond: the number of kept indices."""
        return {b: int((p.detach() > 0).sum()) for b, p in self.logits.items()}

    def log_prior(self) -> torch.Tensor:
        """Expected Bernoulli log prior of all masks (a quantity to maximise)."""
        be = _backend()
        terms = [mars.bernoulli_log_prior(logits, self.pi, be) for logits in self.logits.values()]
        return torch.stack(terms).sum() if terms else torch.zeros(())
