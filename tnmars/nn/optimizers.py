"""Optimizers that apply MARS's prior in their step (what :meth:`MarsLoss.optimizer` builds).

The prior's gradient has a closed form: ``G / (100 N)`` on a core ``G`` (coupled weight decay)
and ``-(1 / N) log(pi / (1 - pi)) s (1 - s)``, ``s = sigmoid(l)``, on a mask logit ``l``. Adding
it to ``.grad`` just before the update (a few ``torch._foreach_*`` calls for the whole model)
costs less than building the prior in the loss's graph and backpropagating through it, and lets
every parameter share one parameter group, so that a fused optimizer updates the whole model in
one kernel call (a second group for the cores' decay was a second call, and its Python).

Each optimizer class of :data:`COUPLED_DECAY` has a subclass here (``MarsAdam``, ``MarsSGD``,
...), created at import so that a pickled optimizer finds its class again.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .masks import BondMasks

#: optimizers whose ``weight_decay`` adds ``weight_decay * p`` to the gradient (the gradient of
#: an L2 term): what the prior's decay of the cores is, so their other options keep their meaning
COUPLED_DECAY = (torch.optim.Adam, torch.optim.SGD, torch.optim.RMSprop, torch.optim.Adagrad, torch.optim.Adamax,
                 torch.optim.NAdam, torch.optim.RAdam)


class PriorGradient:
    """The gradient of the MARS prior (divided by ``N``, as in :class:`MarsLoss`) on the given
    cores and mask logits, added to their ``.grad`` by :meth:`add_to` once per optimizer step.

    A core without a gradient (frozen, or not used this step) gets no decay, as an optimizer
    skips it; a logit vector that does not require gradients (frozen during a warm-up) gets no
    push; one whose draws were all clamped (no data gradient) gets the prior's alone. ``pi`` is
    read from the masks at every step."""

    def __init__(self, cores: Sequence[torch.Tensor], masks: Sequence[BondMasks], num_train: int,
                 core_variance: float) -> None:
        self.cores = tuple(cores)
        self.masks = tuple(masks)
        self.num_train = int(num_train)
        self.decay = 1.0 / (core_variance * self.num_train)

    def add_to(self, optimizer: torch.optim.Optimizer) -> None:
        # under AMP, a fused optimizer is handed the gradients still multiplied by the loss
        # scale (``grad_scale``, set by GradScaler.step) and divides them itself: scale alike
        scale = getattr(optimizer, "grad_scale", None)
        with torch.no_grad():
            cores = [c for c in self.cores if c.grad is not None]
            if cores:
                grads = [c.grad for c in cores]
                if scale is None:
                    torch._foreach_add_(grads, cores, alpha=self.decay)
                else:
                    torch._foreach_add_(grads, torch._foreach_mul(cores, scale), alpha=self.decay)
            live = [m for m in self.masks if m._parameters["logits"].requires_grad]
            if not live:
                return
            logits = [m._parameters["logits"] for m in live]
            push = torch._foreach_sigmoid(logits)
            torch._foreach_sub_(push, torch._foreach_mul(push, push))  # s (1 - s)
            n = float(self.num_train)
            torch._foreach_mul_(push, [(math.log1p(-m.pi) - math.log(m.pi)) / n for m in live])
            if scale is not None:
                torch._foreach_mul_(push, scale)
            held, add = [], []
            for lg, g in zip(logits, push):
                if lg.grad is None:
                    lg.grad = g
                else:
                    held.append(lg.grad)
                    add.append(g)
            if held:
                torch._foreach_add_(held, add)


def _unhooked(step: Callable) -> Callable:
    """``step`` without the hook runner torch's ``Optimizer`` wraps around a class's ``step``
    (the subclass's own ``step`` is wrapped, so hooks run once, not twice)."""
    while getattr(step, "hooked", False) and hasattr(step, "__wrapped__"):
        step = step.__wrapped__
    return step


class CarriesMarsPrior:
    """Mixin: the optimizer's step first adds :attr:`mars_prior`'s gradient (after a
    ``closure``'s backward, when given one), then runs the parent class's update. The prior is
    then applied once per step, however many backward calls accumulated the gradients."""

    mars_prior: PriorGradient | None = None
    _mars_parent: type

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        prior = self.mars_prior
        parent = _unhooked(self._mars_parent.step)
        if prior is None:
            return parent(self, closure)
        if closure is None:
            prior.add_to(self)  # type: ignore[arg-type]
            return parent(self)

        def closure_with_prior() -> Any:
            loss = closure()
            prior.add_to(self)  # type: ignore[arg-type]
            return loss
        return parent(self, closure_with_prior)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # type: ignore[misc]
        state["mars_prior"] = self.mars_prior
        return state


def _subclass(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    name = f"Mars{cls.__name__}"
    sub = type(name, (CarriesMarsPrior, cls), {"__module__": __name__, "__qualname__": name, "_mars_parent": cls,
                                                "__doc__": f":class:`torch.optim.{cls.__name__}` that applies the "
                                                           "MARS prior in its step (:class:`CarriesMarsPrior`)."})
    globals()[name] = sub  # pickle finds the class by its module and name
    return sub


#: optimizer class -> its subclass that applies the prior
CARRYING: dict[type, type] = {cls: _subclass(cls) for cls in COUPLED_DECAY}

#: devices whose fused optimizer kernels PyTorch ships for every floating dtype (checked when
#: the optimizer steps, not when it is built: an unsupported parameter would fail later)
_FUSED_DEVICES = ("cpu", "cuda")


def fused_by_default(optimizer_class: type, options: dict[str, Any], params: Sequence[torch.Tensor]) -> bool:
    """Whether :meth:`MarsLoss.optimizer` turns on ``fused=True``: the optimizer has a fused
    kernel, the user chose no implementation (``fused`` / ``foreach``) and nothing it cannot do
    (``differentiable``), and every parameter is a real floating tensor on a device with the
    kernel. One kernel call then updates the whole model (one parameter group), instead of about
    ten small ops per parameter."""
    if "fused" not in inspect.signature(optimizer_class).parameters:
        return False
    if any(options.get(k) is not None for k in ("fused", "foreach")) or options.get("differentiable"):
        return False
    return all(p.is_floating_point() and p.device.type in _FUSED_DEVICES for p in params)
