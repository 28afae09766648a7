"""Optimizers that apply MARS's prior in their step (what :meth:`MarsLoss.optimizer` builds).

The prior's gradient has a closed form: ``G / (100 N)`` on a core ``G`` (coupled weight decay)
and ``-(1 / N) log(pi / (1 - pi)) s (1 - s)``, ``s = sigmoid(l)``, on a mask logit ``l``. Adding
it to ``.grad`` just before the update (a few ``torch._foreach_*`` calls for the whole model)
costs less than building the prior in the loss's graph and backpropagating through it, and lets
every parameter share one parameter group, so that a fused optimizer updates the whole model in
one kernel call (a second group for the cores' decay was a second call, and its Python). Fused
Adam on the CPU goes further: its step calls the kernel twice itself, the cores' decay as the
first call's ``weight_decay`` (:meth:`PriorGradient.fused_adam_step`). The
loss adds a zero scalar whose gradient tells the step the weight the loss had in the backward
calls (accumulation, factors, AMP's scale), so that the prior keeps the weight it would have in
the loss (:class:`PriorGradient`).

Each optimizer class of :data:`SUPPORTED` has a subclass here (``MarsAdam``, ``MarsAdamW``,
``MarsSGD``, ...), created at import so that a pickled optimizer finds its class again.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import native as _native
from .masks import BondMasks, _host_tensor, _warn_user

#: what the loss multiplies its probe by (``loss + PROBE_SCALE * probe``), so that the probe's
#: gradient is the loss's weight times this: the probe sits in the optimizer's parameter group
#: (GradScaler's ``unscale_`` and a fused kernel treat its gradient with the others), where
#: clipping over the optimizer's parameters (PyTorch Lightning's ``gradient_clip_val``) sees it
#: too. With a gradient of 1 it set every gradient norm to at least 1 (220 of 220 steps clipped
#: at ``max_norm=1``, 58 without it) and a value clip at 0.01 cut the prior to a hundredth; at
#: 2^-20 it adds 1e-12 to a squared norm and no value clip reaches it. A power of two: the
#: weight read back is exact.
PROBE_SCALE = 2.0**-20
_CPU = torch.device("cpu")

#: the optimizers :meth:`MarsLoss.optimizer` builds: the prior's gradient is added to ``.grad``
#: before their update, so each keeps its own options (a decoupled ``weight_decay`` included)
SUPPORTED = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, torch.optim.RMSprop, torch.optim.Adagrad,
             torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam)


class PriorGradient:
    """The gradient of the MARS prior (divided by ``N``, as in :class:`MarsLoss`) on the given
    cores and mask logits, added to their ``.grad`` by :meth:`add_to` at each optimizer step,
    times the weight the loss had in what was backpropagated.

    That weight is the gradient of ``probe``, a zero scalar the loss adds to its value (times
    :data:`PROBE_SCALE`, divided out here): ``k``
    after k accumulated backward calls of the loss, ``c`` for ``c * loss``, and GradScaler's
    scale under AMP (then unscaled with the other gradients by ``unscale_``, or divided out by a
    fused kernel with them), so the prior gets exactly the weight it has in the loss. The probe's
    gradient is cleared once read; a step after no backward of the loss adds no prior.

    A core that does not require gradients (frozen, now) gets no decay; one that does but has no
    gradient gets the decay alone, as from the loss. A logit vector that does not require
    gradients (frozen during a warm-up) gets no push; one whose draws were all clamped (no data
    gradient) gets the prior's alone. ``pi`` is read from the masks at every step."""

    #: compute the logits' push in Python floats (set per instance; False for one pickled before)
    push_on_host = False

    def __init__(self, cores: Sequence[torch.Tensor], masks: Sequence[BondMasks], num_train: int,
                 core_variance: float, probe: torch.Tensor) -> None:
        self.cores = list(cores)  # (filtered by requires_grad at each step: freezing may come later)
        self.masks = tuple(masks)
        self.logits = [m._parameters["logits"] for m in self.masks]
        self.core_variance = float(core_variance)
        self.set_num_train(num_train)
        self.probe = probe
        # the logits' push in Python floats (CPU) only for the usual tens to hundreds of logits: a
        # loop over thousands would cost more than torch's few ops
        self.push_on_host = sum(lg.numel() for lg in self.logits) <= 1024

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("loss_ref", None)  # (a weak reference: the MarsLoss unpickled with it sets it again)
        return state

    def set_num_train(self, num_train: int) -> None:
        """A new ``N`` (:attr:`MarsLoss.num_train` set after the optimizer was built)."""
        self.num_train = int(num_train)

    @property
    def num_train(self) -> int:
        state = self.__dict__
        return state["_num_train"] if "_num_train" in state else state["num_train"]  # (pickled before)

    @num_train.setter
    def num_train(self, value: int) -> None:  # the cores' decay follows N
        self._num_train = int(value)
        self.decay = 1.0 / (self.core_variance * self._num_train)

    def add_to(self, optimizer: torch.optim.Optimizer) -> None:
        # This runs every training step between the backward's and the update's large kernels,
        # where each Python operation costs several times its microbenchmark (measured: a version
        # with two helper calls and generator checks took 40 us more a step than this one, for
        # 6 us more in a loop): the usual case is written out, the rare ones have fallbacks.
        state = self.__dict__
        ref = state.get("loss_ref")
        if ref is not None and not torch.compiler.is_compiling():
            loss = ref()
            if loss is not None:  # layers replaced between calls of a compiled loss: raises here
                loss.check_layers()
        probe = self.probe
        weight = probe.grad
        if weight is None:  # no backward of the loss since the last step
            if "_applied" not in state:
                self._never_applied()
            return
        if "_applied" not in state:
            state["_applied"] = True
        state["steps_taken"] = state.get("steps_taken", 0) + 1  # (read by the loss: has its optimizer stepped?)
        probe.grad = None  # read once; and the optimizer skips the probe
        enabled = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)  # torch.no_grad() without its object (about 8 us in the step)
        try:
            if weight.is_cpu:  # a number: no kernel for it
                self._add(weight.item() / PROBE_SCALE)
            else:  # a device tensor: no synchronisation
                self._add(weight.reshape(()) / PROBE_SCALE)
        finally:
            torch._C._set_grad_enabled(enabled)

    def fused_adam_step(self, optimizer: torch.optim.Optimizer) -> bool:
        """The whole step of a fused CPU Adam (:class:`MarsAdam`) in two kernel calls, the cores'
        decay folded into the first one's ``weight_decay`` (coupled, as the prior's gradient is:
        ``grad + (wd + w / (100 N)) G``, the same update to rounding); False, having done
        nothing, where that does not apply. The usual path adds the decay with a
        ``_foreach_add_`` over the cores and then runs ``Adam.step``, whose per-parameter Python
        (state lookups, grouping by device and dtype) costs as much again between the step's
        large kernels (measured in ``benchmarks/nn_overhead.py``).

        It applies to the usual setup: one parameter group, ``fused=True`` on the CPU, a float
        ``lr``, neither ``amsgrad``, ``maximize`` nor ``differentiable``, no GradScaler
        (``grad_scale``), not under ``torch.compile``, no core shared by two layers, parameters
        of one dtype with dense gradients, and Adam's state made for every parameter it updates
        (a first step, or one after a parameter is unfrozen, takes the usual path, which makes
        it). A frozen core without a gradient is skipped, as Adam skips it; a core without a
        gradient that still requires one (it gets the decay alone) takes the usual path.

        One difference is visible outside the update: as PyTorch's own ``weight_decay``, the
        kernel applies the decay without writing it into ``.grad``, so after the step the cores'
        ``.grad`` holds the data's gradient alone (the usual path, and the prior in the loss,
        leave the decay in it). Code that reads ``.grad`` after ``step()``, or steps again
        without zeroing the gradients (each step's decay then stays in them on the usual path),
        sees that difference."""
        groups = optimizer.param_groups
        if len(groups) != 1:
            return False
        group = groups[0]
        if (not group["fused"] or group["amsgrad"] or group["maximize"] or group["differentiable"]
                or group.get("decoupled_weight_decay") or type(group["lr"]) is not float
                or getattr(optimizer, "grad_scale", None) is not None or getattr(optimizer, "found_inf", None) is not None
                or torch.compiler.is_compiling()):
            return False
        probe = self.probe
        weight = probe.grad
        if weight is None or not weight.is_cpu:
            return False
        cores_given = self.cores
        core_ids, logit_ids = {id(c) for c in cores_given}, {id(lg) for lg in self.logits}
        if len(core_ids) != len(cores_given):  # a core shared by two layers: its decay counts twice
            return False
        # the parameters to update and their Adam state, read at every step (the state dict may be
        # edited or replaced between steps); as Adam, a parameter without a gradient is not updated,
        # but a logit vector that requires one gets it from the push below
        state = optimizer.state
        dtype = None
        chosen: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])  # (the cores, the others)
        moments: tuple[tuple[list[torch.Tensor], ...], ...] = (([], [], []), ([], [], []))  # (exp_avg, exp_avg_sq, step)
        for p in group["params"]:
            if p is probe:
                continue
            g = p.grad
            is_core = id(p) in core_ids
            if is_core:
                if not p.requires_grad:
                    if g is None:  # a frozen core without a gradient: no decay, no update (as Adam)
                        continue
                    return False  # a frozen core with a gradient: updated without the decay
                if g is None:  # the decay alone: the usual path
                    return False
            elif g is None and (id(p) not in logit_ids or not p.requires_grad):
                continue  # no gradient, no update
            found = state.get(p)
            if not found:  # no state yet: the usual path makes it
                return False
            if dtype is None:
                dtype = p.dtype
            if (p.dtype is not dtype or not p.is_cpu
                    or (g is not None and (g.layout is not torch.strided or g.dtype is not dtype))):
                return False
            k = 0 if is_core else 1
            chosen[k].append(p)
            lists = moments[k]
            lists[0].append(found["exp_avg"])
            lists[1].append(found["exp_avg_sq"])
            lists[2].append(found["step"])
        if not chosen[0]:
            return False
        # from here on the step is taken: the probe's weight, the logits' push, then Adam
        own = self.__dict__
        ref = own.get("loss_ref")
        if ref is not None:
            loss = ref()
            if loss is not None:
                loss.check_layers()
        own["_applied"] = True
        own["steps_taken"] = own.get("steps_taken", 0) + 1
        probe.grad = None
        w = weight.item() / PROBE_SCALE
        enabled = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        try:
            self._push(w)
            torch._foreach_add_(moments[0][2] + moments[1][2], 1)
            beta1, beta2 = group["betas"]
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            for members, (exp_avgs, exp_avg_sqs, steps), decay in zip(
                    chosen, moments, (weight_decay + w * self.decay, weight_decay)):
                if members:
                    torch._fused_adam_(members, [p.grad for p in members], exp_avgs, exp_avg_sqs, [], steps,
                                       amsgrad=False, lr=lr, beta1=beta1, beta2=beta2, weight_decay=decay, eps=eps,
                                       maximize=False)
        finally:
            torch._C._set_grad_enabled(enabled)
        return True

    #: steps without any backward of the loss, from the start, after which the step warns
    MISSED_STEPS = 3

    def _never_applied(self) -> None:
        """Count a step that found no gradient on the probe, before any step found one; warn once
        at :attr:`MISSED_STEPS`: the loss backpropagated is not the MarsLoss that built this
        optimizer (a criterion called directly, say with label smoothing), so no prior is
        applied and MARS selects nothing."""
        missed = self.__dict__.get("_missed", 0) + 1
        self.__dict__["_missed"] = missed
        if missed == self.MISSED_STEPS:
            _warn_user(f"the optimizer of MarsLoss.optimizer() has stepped {missed} times without a backward of that "
                       "MarsLoss, so it applied no prior: MARS selects nothing. Backpropagate the MarsLoss's value "
                       "(give your criterion to MarsLoss(model, N, criterion=...)), not the criterion alone, and "
                       "without backward(inputs=...) (the loss's weight is read from a scalar outside the model's "
                       "parameters).", RuntimeWarning)

    def _add(self, w: float | torch.Tensor) -> None:
        number = isinstance(w, float)
        cores = [c for c in self.cores if c.requires_grad]  # a frozen core gets no decay, like no gradient
        if cores:
            grads = [c.grad for c in cores]
            try:  # (the arguments are checked before anything is added)
                if number:
                    torch._foreach_add_(grads, cores, alpha=w * self.decay)
                else:
                    torch._foreach_add_(grads, torch._foreach_mul(cores, w * self.decay))
            except TypeError:  # a core without a gradient (not used this step): the decay alone
                for c, g in zip(cores, grads):
                    decay = torch.mul(c, w * self.decay)
                    if g is None:
                        c.grad = decay
                    else:
                        g.add_(decay)
        self._push(w)

    def _push(self, w: float | torch.Tensor) -> None:
        """The logits' prior gradient, times ``w``, added to their ``.grad``."""
        number = isinstance(w, float)
        logits = [lg for lg in self.logits if lg.requires_grad]  # frozen logits (warm-up) get no push
        if not logits:
            return
        masks = self.masks if len(logits) == len(self.logits) else [
            m for m, lg in zip(self.masks, self.logits) if lg.requires_grad]
        n = float(self.num_train)
        if number and self.push_on_host and all(lg.is_cpu for lg in logits):
            self._push_on_host(logits, masks, w / n)
            return
        push = torch._foreach_sigmoid(logits)  # s (1 - s) as sigmoid(l) sigmoid(-l): no cancellation in 1 - s,
        torch._foreach_mul_(push, torch._foreach_sigmoid(torch._foreach_neg(logits)))  # as on the host
        if not number:  # a device tensor: its factor stays on the device
            torch._foreach_mul_(push, w)
            w = 1.0
        for lg, p, m in zip(logits, push, masks):
            scale = w * (math.log1p(-m.pi) - math.log(m.pi)) / n  # (pi is read at every step)
            g = lg.grad
            if g is None:  # no gradient from the data (every draw clamped): the prior's alone
                lg.grad = p.mul_(scale)
            else:
                g.add_(p, alpha=scale)

    @staticmethod
    def _push_on_host(logits: Sequence[torch.Tensor], masks: Sequence[BondMasks], factor: float) -> None:
        """The logits' push on CPU tensors, in Python floats: the tens of logits of a model cost
        less as a list than as torch's four or five ops and their dispatch, which between a step's
        large kernels cost several times their microbenchmark (measured in the 2FC-Net's step:
        about 8 us less than the foreach ops, and 40 us less than NumPy's)."""
        scales = [0.5 * factor * (math.log1p(-m.pi) - math.log(m.pi)) for m in masks]  # (pi is read at every step)
        native = _native.get()
        if native is not None and native.push(logits, scales):  # the same push, compiled (:mod:`.native`)
            return
        cosh = math.cosh
        for lg, h in zip(logits, scales):
            values = lg.tolist()
            try:  # s (1 - s) = 1 / (2 + 2 cosh(l)): one call per entry, no cancellation in 1 - s
                push = [h / (1.0 + cosh(v)) for v in values]
            except OverflowError:  # |l| > 710: e^-|l| / (1 + e^-|l|)^2 without overflow
                push = [2.0 * h * e / ((1.0 + e) * (1.0 + e)) for e in (math.exp(-abs(v)) for v in values)]
            p = _host_tensor(push, lg.dtype, _CPU)  # (the caller checked: every vector is on the CPU, and flat)
            g = lg.grad
            if g is None:
                lg.grad = p
            else:
                g.add_(p)


def _unhooked(step: Callable) -> Callable:
    """``step`` without the hook runner torch's ``Optimizer`` wraps around a class's ``step``
    (the subclass's own ``step`` is wrapped, so hooks run once, not twice)."""
    while getattr(step, "hooked", False) and hasattr(step, "__wrapped__"):
        step = step.__wrapped__
    return step


class CarriesMarsPrior:
    """Mixin: the optimizer's step first adds :attr:`mars_prior`'s gradient (after a
    ``closure``'s backward, when given one), with the weight the loss had in the backward calls
    since the last step, then runs the parent class's update."""

    mars_prior: PriorGradient | None = None
    _mars_parent: type

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        prior = self.mars_prior
        parent = _unhooked(self._mars_parent.step)
        if prior is None:
            return parent(self, closure)
        if self._mars_parent is torch.optim.Adam:  # the closure first, as Adam.step calls it, then the step
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            if not prior.fused_adam_step(self):  # type: ignore[arg-type]
                prior.add_to(self)  # type: ignore[arg-type]
                parent(self)
            return loss
        if closure is None:
            prior.add_to(self)  # type: ignore[arg-type]
            return parent(self)

        def closure_with_prior() -> Any:
            loss = closure()
            prior.add_to(self)  # type: ignore[arg-type]
            return loss
        return parent(self, closure_with_prior)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As the parent's, and also a state dict of the plain optimizer over
        ``model.parameters()`` (a model trained with the prior in the loss, or
        :meth:`plain_state_dict`): this optimizer's first group holds those parameters in that
        order, then the prior's probe, which has no state; groups added since
        (``add_param_group``) follow, as in the plain optimizer's state dict."""
        groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        prior = self.mars_prior
        mine = self.param_groups  # type: ignore[attr-defined]
        if (prior is not None and isinstance(groups, list) and len(groups) == len(mine) >= 1
                and all(isinstance(g, dict) for g in groups)
                and len(groups[0].get("params", ())) == len(mine[0]["params"]) - 1
                and all(len(g.get("params", ())) == len(m["params"]) for g, m in zip(groups[1:], mine[1:]))
                and mine[0]["params"][-1] is prior.probe):
            first = list(groups[0]["params"])
            probe_id = max(first, default=-1) + 1  # (the ids after it, in later groups, move up by one)

            def renumber(i: Any) -> Any:
                return i + 1 if isinstance(i, int) and i >= probe_id else i
            # this optimizer's implementation (fused, chosen by MarsLoss.optimizer) stays: the plain
            # optimizer's choice was made for another setup
            implementation = ("fused", "foreach", "capturable", "differentiable")
            state_dict = {**state_dict,
                          "state": {renumber(i): v for i, v in state_dict.get("state", {}).items()},
                          "param_groups": [
                              {**g, **{k: m[k] for k in implementation if k in m},
                               "params": [*first, probe_id] if n == 0 else [renumber(i) for i in g["params"]]}
                              for n, (g, m) in enumerate(zip(groups, mine))]}
        try:
            super().load_state_dict(state_dict)  # type: ignore[misc]
        except ValueError as err:
            raise ValueError(f"{err}. (The optimizer of MarsLoss.optimizer() loads its own state dicts, and the plain "
                             "optimizer's over model.parameters() while it has the one group it was built with: the "
                             "model's parameters in model.parameters() order, then the prior's probe; it has "
                             f"{len(mine)} group{'s' if len(mine) != 1 else ''} now.)") from err

    def plain_state_dict(self) -> dict[str, Any]:
        """The state dict of the plain optimizer over ``model.parameters()`` that this one
        stands for: the prior's probe (the last parameter of the first group, without state) left
        out, so that training can go on with the prior in the loss, or under a tool that builds
        its own optimizer (``torch.optim.Adam(model.parameters()).load_state_dict(...)``; this
        optimizer's own state dict has one parameter more, which PyTorch refuses). The groups keep
        this optimizer's options, its implementation (``fused``) included.

        >>> import torch
        >>> from torch import nn
        >>> import tnmars.nn as tnn
        >>> model = nn.Sequential(tnn.LowRankLinear(8, 4, rank=2))
        >>> opt = tnn.MarsLoss(model, num_train=100).optimizer(lr=1e-3)
        >>> torch.optim.Adam(model.parameters(), lr=1e-3).load_state_dict(opt.plain_state_dict())
        """
        state_dict = self.state_dict()  # type: ignore[attr-defined]
        prior = self.mars_prior
        groups = state_dict["param_groups"]
        if prior is None or not groups or not groups[0]["params"] \
                or self.param_groups[0]["params"][-1] is not prior.probe:  # type: ignore[attr-defined]
            return state_dict
        probe = groups[0]["params"][-1]

        def renumber(i: int) -> int:  # (ids after the probe's, in later groups, move down by one)
            return i - 1 if i > probe else i
        plain_groups = [{**g, "params": [renumber(i) for i in g["params"] if i != probe]} for g in groups]
        state = {renumber(i): v for i, v in state_dict["state"].items() if i != probe}
        return {**state_dict, "state": state, "param_groups": plain_groups}

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
CARRYING: dict[type, type] = {cls: _subclass(cls) for cls in SUPPORTED}

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
    if issubclass(optimizer_class, torch.optim.SGD) and options.get("momentum", 0):
        # PyTorch's fused SGD leaves the momentum buffer uninitialised when the first step is skipped
        # (GradScaler found an inf): the next step wrote ~1e34 into the weights (torch 2.13, CPU)
        return False
    return all(p.is_floating_point() and p.device.type in _FUSED_DEVICES for p in params)
