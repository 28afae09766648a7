"""Training with MARS: the loss term, the temperature schedule, compression and summaries.

The MARS objective to minimise, per training example (the reference code exactly):

    loss = mean data NLL over the batch - (1 / N) * sum over MARS layers of
           [ sum_masks sum_j phi_j log(pi) + (1 - phi_j) log(1 - pi)  -  ||cores||^2 / (2 * 100) ]

with ``N`` the number of training examples. The Gaussian prior (variance 100) covers only
the decomposed cores of MARS layers; biases, plain layers and mask logits get none. Train
everything (logits included) with Adam: the prior's push on the logits relies on Adam's
per-parameter scaling.

>>> import torch
>>> from torch import nn
>>> import tnmars.nn as tnn
>>> model = nn.Sequential(tnn.TensorizedLinear(16, 8, rank=4, in_shape=(4, 4), out_shape=(2, 4), alpha=2.0))
>>> loss_fn = tnn.MarsLoss(model, num_train=1000)
>>> loss = loss_fn(model(torch.randn(5, 16)), torch.randint(0, 8, (5,)))
>>> loss.backward()
>>> _ = model.eval()
>>> small = tnn.compress(model)
>>> bool(torch.allclose(small(torch.ones(2, 16)), model(torch.ones(2, 16)), atol=1e-6))
True
"""
from __future__ import annotations

import copy
import math
import numbers
import os
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import register_module_module_registration_hook

from .. import masks as mars
from .._checks import integer
from .base import TensorizedLayer, core_list, replace_modules, warn_user
from .masks import BondMasks, joint_log_prior
from .optimizers import CARRYING, PROBE_SCALE, SUPPORTED, PriorGradient, fused_by_default
from .recurrent import TTRecurrentMatrix

# ------------------------------------------------------------------------------ discovery
#: how many times a module that is or holds a MARS-capable module (:func:`_may_carry_masks`) was
#: registered into another or replaced there, anywhere (``module.name = layer``, ``model[0] = ...``,
#: ``add_module``), counted by a global registration hook: a :class:`MarsLoss` walks its model's
#: module tree again only when this moved since its last walk. Registrations of plain modules
#: (a module built per batch, a metric) and into ``nn.DataParallel``'s per-forward replicas do not
#: count, so they cost an eager step nothing and never invalidate a compiled one.
_module_registrations = 0
#: model -> the registration count at which :func:`log_prior` last named its layers (:func:`name_owners`)
_NAMED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


#: calls of a :class:`MarsLoss` after which it walks its model again whatever the registration
#: count says: ``del model[i]``, ``Sequential.insert`` and ``pop`` change the module tree without
#: registering anything (torch has no hook for them), and the loss went on with a removed layer's
#: prior, or without an inserted layer's (which then never compressed), silently
REWALK_EVERY = 256


def _count_registration(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
    # (it runs inside every module's __setattr__ in the process, on modules half built: plain
    # dictionary reads, and any surprise counts as a change rather than escaping into torch)
    global _module_registrations
    if module.__dict__.get("_is_replica", False):  # nn.DataParallel's replicas, made at every forward
        return
    try:
        old = module.__dict__.get("_modules", {}).get(name)  # (the hook runs before the assignment)
        counts = any(m is not None and _holds_mars_capable(m) for m in (submodule, old))
    except Exception:  # noqa: BLE001 - a module whose attribute lookups fail while it is built
        counts = True
    if counts:
        _module_registrations += 1


def _holds_mars_capable(module: nn.Module) -> bool:
    return any(_may_carry_masks(m) for m in module.modules())


register_module_module_registration_hook(_count_registration)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _inner(model: nn.Module) -> nn.Module:
    """The model whose names the layers are listed by: DDP's ``module``, and the ``_orig_mod`` of
    a model wrapped by ``torch.compile`` (whose layers were named ``_orig_mod.0`` and the like)."""
    while True:
        model = _unwrap(model)
        inner = getattr(model, "_orig_mod", None) if type(model).__name__ == "OptimizedModule" else None
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def tensorized_layers(model: nn.Module) -> Iterator[tuple[str, TensorizedLayer]]:
    """``(name, layer)`` for every tensorized layer in ``model`` (MARS or not)."""
    for name, mod in _inner(model).named_modules():
        if isinstance(mod, TensorizedLayer):
            yield name, mod


def mars_layers(model: nn.Module) -> Iterator[tuple[str, TensorizedLayer]]:
    """``(name, layer)`` for every tensorized layer that carries MARS masks."""
    for name, mod in tensorized_layers(model):
        if mod.masks is not None:
            yield name, mod


def mars_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` for everything whose prior and temperature MARS training manages:
    the MARS layers, plus any other module with ``BondMasks`` in ``.masks`` and a
    ``log_prior()`` (the tensorized recurrent matrix of :mod:`tnmars.nn.recurrent`)."""
    for name, mod in _inner(model).named_modules():
        if _is_mars_module(mod):
            yield name, mod


def _mars_modules_or_warn(model: nn.Module, who: str) -> list[tuple[str, nn.Module]]:
    """:func:`mars_modules` for a setter, which warns when there is none: most likely the dense
    model was passed instead of its tensorized copy, and the call would change nothing."""
    found = list(mars_modules(model))
    if not found:
        if any(_may_carry_masks(m) for m in _unwrap(model).modules()):  # tensorized, but no masks now
            warnings.warn(f"{who}: no layer of the model has MARS masks now (built with mars=False, compressed, or "
                          "loaded with load_compressed), so nothing was changed", UserWarning, stacklevel=3)
        else:
            _warn_no_mars_modules(who, "nothing was changed")
    return found


def _apply_temperature(model: nn.Module, temperature: float) -> None:
    for _, layer in mars_modules(model):
        layer.masks.temperature = temperature


def _may_carry_masks(mod: nn.Module) -> bool:
    """Whether ``mod`` is, or by setting its ``masks`` can become, a MARS module."""
    return isinstance(mod, TensorizedLayer) or (hasattr(mod, "masks") and callable(getattr(mod, "log_prior", None)))


def _warn_no_mars_modules(who: str, consequence: str) -> None:
    """A MARS tool given a model with no tensorized layer (nor any module that can carry masks):
    most likely the dense model instead of its tensorized copy, which would train as a plain
    model without a word."""
    warnings.warn(f"{who}: the model has no tensorized layer (nor any module with MARS masks), so {consequence}. "
                  "Pass the tensorized model (tnmars.nn.tensorize returns a copy unless inplace=True) or build its "
                  "layers from tnmars.nn", UserWarning, stacklevel=3)


def _is_mars_module(mod: nn.Module) -> bool:
    if isinstance(mod, TensorizedLayer):
        return mod.masks is not None
    return isinstance(getattr(mod, "masks", None), BondMasks) and callable(getattr(mod, "log_prior", None))


# ------------------------------------------------------------------------------ the objective
def log_prior(model: nn.Module, *, scale: float = 1.0) -> torch.Tensor:
    """Sum of the MARS log priors (Bernoulli masks + Gaussian cores) over every MARS module,
    times ``scale``.

    Modules that expose ``masks`` and ``cores`` (every tensorized layer, the tensorized
    recurrent matrix) are summed in one expression (:func:`~tnmars.nn.masks.joint_log_prior`,
    a few torch calls however many layers); anything else that
    :func:`mars_modules` finds contributes its own ``log_prior()``.
    """
    inner = _unwrap(model)
    if not torch.compiler.is_compiling() and _NAMED.get(inner) != _module_registrations:
        name_owners(inner)  # once per model and set of layers: warnings then name layers by their path
        _NAMED[inner] = _module_registrations
    total = _log_prior_of(inner.modules(), scale)
    if total is None:
        p = next(_unwrap(model).parameters(), None)
        return torch.zeros((), device=None if p is None else p.device)
    return total


def _prior_parts(modules: Iterable[nn.Module]) -> tuple[list[tuple[BondMasks, list[torch.Tensor]]], list[nn.Module]]:
    """The MARS modules among ``modules``: ``(masks, cores)`` of those with cores (their prior
    is summed in one expression), and the others (each has its own ``log_prior()``)."""
    fused, others = [], []
    for mod in modules:
        masks = getattr(mod, "masks", None)  # (each Module attribute lookup costs; this runs every step)
        if masks is None or not (isinstance(mod, TensorizedLayer) or _is_mars_module(mod)):
            continue
        cores = getattr(mod, "cores", None)
        if cores is not None:
            fused.append((masks, core_list(cores) if isinstance(cores, nn.ParameterList) else list(cores)))
        else:
            others.append(mod)
    return fused, others


def _structure_key(modules: Sequence[nn.Module]) -> tuple[int, ...]:
    """The identities of what each module's prior depends on: its masks and each of its cores,
    read from its ``_modules`` (dictionary reads: this runs at every training step). Any change
    of them (masks switched on, off or replaced, a core replaced) changes the key; those the
    optimizer uses stay referenced by it, so their ids are not reused (the others' prior is
    computed from the modules as they are, in the loss)."""
    key: list[int] = []
    for mod in modules:
        sub = mod._modules
        key.append(id(sub.get("masks")))
        cores = sub.get("cores")
        if isinstance(cores, nn.ParameterList):
            key.extend(map(id, cores._parameters.values()))
    return tuple(key)


def _owners(modules: Sequence[nn.Module], fused: Sequence[tuple[BondMasks, Any]]) -> list[tuple[nn.Module, BondMasks]]:
    """The modules whose ``(masks, cores)`` are in ``fused`` (from :func:`_prior_parts`)."""
    by_masks = {id(masks) for masks, _ in fused}
    return [(m, m._modules.get("masks")) for m in modules if id(m._modules.get("masks")) in by_masks]


def _rest_of_prior(modules: Sequence[nn.Module], scale: float) -> torch.Tensor | None:
    """``scale`` times the prior an optimizer carrying the cores' prior leaves in the loss: the
    masks' prior of the modules with cores (under DDP), the whole prior of those without."""
    fused, others = _prior_parts(modules)
    parts = [joint_log_prior([(m, ()) for m, _ in fused], scale)] if fused else []
    parts += [mod.log_prior() * scale for mod in others]
    if not parts:  # (their masks were switched off since)
        return None
    total = parts[0]
    for t in parts[1:]:
        total = total + t
    return total


def _modules_left_in_loss(modules: Sequence[nn.Module], masks_carried: bool) -> tuple[nn.Module, ...] | None:
    """The MARS modules whose prior stays in the loss when an optimizer carries the rest: those
    without cores, and under DDP (``masks_carried`` False) every one (their masks' prior)."""
    rest = tuple(m for m in modules if _is_mars_module(m) and (not masks_carried or getattr(m, "cores", None) is None))
    return rest or None


def _log_prior_of(modules: Iterable[nn.Module], scale: float,
                  carried: tuple[tuple[torch.Tensor, ...], tuple[BondMasks, ...] | None] | None = None,
                  ) -> torch.Tensor | None:
    """``carried``: ``(cores, masks)`` whose prior an optimizer applies in its step
    (:meth:`MarsLoss.optimizer`; ``masks`` None: the masks' prior stays here); they must be
    exactly those found, else some core or mask would lose its prior or get it twice. None when
    nothing is left to compute."""
    fused, other_modules = _prior_parts(modules)
    others = [mod.log_prior() * scale for mod in other_modules]
    if carried is not None:
        cores, masks = carried
        found = [c for _, group in fused for c in group]
        if len(found) != len(cores) or any(a is not b for a, b in zip(found, cores)) or (
                masks is not None and (len(fused) != len(masks) or any(a is not b for (a, _), b in zip(fused, masks)))):
            raise RuntimeError("the model's MARS layers changed since MarsLoss.optimizer() built its optimizer (a "
                               "layer was replaced, compressed, or its masks switched on, off or replaced): the "
                               "optimizer no longer applies the right prior. Build the loss and the optimizer again.")
        fused = [] if masks is not None else [(m, ()) for m, _ in fused]
    if not fused and not others:
        return None
    total = joint_log_prior(fused, scale) if fused else others.pop(0)
    for t in others:
        total = total + t
    return total


def check_num_train(num_train: Any) -> int:
    """``N``, the number of training examples, as an int >= 1: a whole number (``60000`` or
    ``60000.0``, a one-element tensor such as ``torch.tensor(60000)``), not a fraction, NaN or a
    bool, which would silently rescale the prior."""
    if isinstance(num_train, torch.Tensor) and num_train.numel() == 1 and not num_train.dtype == torch.bool:
        num_train = num_train.item()
    if isinstance(num_train, bool) or not isinstance(num_train, numbers.Real) or not math.isfinite(num_train) \
            or num_train != int(num_train) or num_train < 1:
        raise ValueError(f"num_train (the number of training examples N) must be a whole number >= 1; "
                         f"got {num_train!r}")
    return int(num_train)


def mars_penalty(model: nn.Module, num_train: int) -> torch.Tensor:
    """``-log_prior(model) / num_train``: the term MARS adds to a mean data loss."""
    return log_prior(model, scale=-1.0 / check_num_train(num_train))




class MarsLoss(nn.Module):
    """``criterion(output, target) + mars_penalty(model, num_train)``.

    Parameters
    ----------
    model: the model whose MARS layers are regularised (not registered as a submodule).
    num_train: number of training examples ``N``.
    criterion: the mean data loss per example (default ``nn.CrossEntropyLoss()``); a torch loss
        with ``reduction`` other than ``"mean"`` (or ``KLDivLoss``'s ``"batchmean"``) is refused
        (the prior is scaled for a mean over examples). A multi-output criterion's ``"mean"``
        (``MSELoss``, ``BCELoss`` on ``D`` outputs) also averages over the outputs, which divides
        the data term by ``D`` and so weighs the prior ``D`` times more than the per-example
        likelihood would; for that reading sum over outputs and average over examples
        (``lambda y, t: F.mse_loss(y, t, reduction="none").sum(-1).mean()``). A squared or
        absolute error is the log-likelihood of unit-size noise in the targets' units, so the
        targets' scale sets the prior's weight too: standardize them (the first call warns when
        their variance is far from 1).

    The loss follows the model: a layer added or replaced later (``model[0] = compress(model[0])``,
    ``tensorize(model, inplace=True)``) gets its prior at the next call, and a layer switched to
    ``masks = None`` or warm-up is followed too. An optimizer from :meth:`optimizer` cannot
    follow (it does not hold the new layer's parameters): the next loss call then raises.
    What it sees is a module set by assignment (``model.x = ...``, ``model[i] = ...``,
    ``add_module``, ``append``), checked when the loss is called outside ``torch.compile``.
    It does not see layers removed or inserted without an assignment (``del model[i]``,
    ``pop``, ``insert``), nor a change between two calls of a compiled loss (the compiled loss
    keeps the layers it was traced with until a call outside the compiled code; with
    :meth:`optimizer`'s optimizer its next step raises): after those, build a new loss (and
    optimizer).

    :meth:`optimizer` builds an optimizer that applies the prior in its step (the same
    updates, a cheaper step): ``opt = loss_fn.optimizer(lr=1e-3)``; the loss's value is then
    the criterion alone.
    """

    def __init__(self, model: nn.Module, num_train: int, criterion: Callable[..., torch.Tensor] | None = None) -> None:
        super().__init__()
        num_train = check_num_train(num_train)
        object.__setattr__(self, "_model", model)  # a reference, not a submodule (no duplicated state)
        # the modules are listed once, as an optimizer lists its parameters: walking the module
        # tree every step costs more than the prior's arithmetic. Kept: those that are or can
        # become MARS modules (a layer switched to ``masks = None`` or back is still followed)
        object.__setattr__(self, "_modules_seen", tuple(m for m in _unwrap(model).modules() if _may_carry_masks(m)))
        self.__dict__["_registrations_seen"] = _module_registrations
        name_owners(model)  # warnings about closed layers then name them by their path in the model
        if not self._modules_seen:
            _warn_no_mars_modules("MarsLoss", "the loss is the criterion alone and selects no rank")
        elif not any(True for _ in mars_modules(model)):  # tensorized, but compressed (the setters say so too)
            warnings.warn("MarsLoss: no layer of the model has MARS masks now (built with mars=False, compressed, or "
                          "loaded with load_compressed): the loss is the criterion alone, its cores get no prior and "
                          "no rank is selected. Train the model with masks (before compress) for MARS", UserWarning,
                          stacklevel=2)
        self.num_train = int(num_train)
        if isinstance(criterion, type):
            raise TypeError(f"MarsLoss: criterion must be a loss function or module instance, such as "
                            f"{criterion.__name__}(); got the class {criterion.__name__}")
        self.criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
        reduction = getattr(self.criterion, "reduction", "mean")
        if reduction not in ("mean", "batchmean"):  # (KLDivLoss's batchmean is the mean over examples)
            raise ValueError(f"MarsLoss needs a criterion that averages over the batch (reduction='mean'); got "
                             f"reduction={reduction!r}. The prior is divided by num_train to match a per-example "
                             "data term: with a summed loss it would weigh num_train times too little")
        #: ``(cores, masks)`` whose prior the optimizer of :meth:`optimizer` applies (``masks``
        #: None: the masks' prior stays in the loss, under DDP); None: the whole prior is here
        self._carried: tuple[tuple[torch.Tensor, ...], tuple[BondMasks, ...] | None] | None = None
        #: the zero scalar added to the loss when an optimizer carries the prior: its gradient is the
        #: loss's total weight in what was backpropagated, by which the step scales the prior
        object.__setattr__(self, "_probe", None)  # (not registered: the optimizer holds it)
        #: with an optimizer carrying the prior: (:func:`_structure_key` of the modules then, the
        #: modules whose prior stays in the loss or None), or None where the key cannot see a change
        self._layout: tuple[tuple, tuple[nn.Module, ...] | None] | None = None

    @property
    def num_train(self) -> int:
        """``N``, the number of training examples the prior is divided by; settable (checked), and
        the optimizer of :meth:`optimizer` follows a new value (when loss and optimizer were
        pickled, only if pickled together: ``torch.save((loss_fn, opt), path)``)."""
        state = self.__dict__
        return state["_num_train"] if "_num_train" in state else state["num_train"]  # (a loss pickled before)

    @num_train.setter
    def num_train(self, value: int) -> None:
        n = check_num_train(value)
        self.__dict__["_num_train"] = n
        prior = self.__dict__.get("_prior_gradient")
        if prior is not None:
            prior.set_num_train(n)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        state = self.__dict__
        # a MARS-capable module was set somewhere since the last walk, or REWALK_EVERY calls went by
        # (not read while compiling: dynamo would guard on both counts and recompile at every
        # registration in the process)
        if not torch.compiler.is_compiling():
            calls = state["_calls"] = state.get("_calls", 0) + 1
            if state.get("_registrations_seen") != _module_registrations or calls % REWALK_EVERY == 0:
                self._follow_model()
            if calls % self.STALE_CHECK_EVERY == 0 and "_prior_gradient" in state:
                self._check_the_optimizer_steps(calls)
        if "_scale_checked" not in state and not torch.compiler.is_compiling():
            self._check_target_scale(target)
        if not state["_model"].training and "_modes_checked" not in state and torch.is_grad_enabled() \
                and not torch.compiler.is_compiling():  # (one attribute read in a training step)
            self._check_training_modes()
        carried = self._carried
        if carried is None and torch.is_grad_enabled() and not torch.compiler.is_compiling():
            self._check_no_optimizer_carries_the_prior()
        if carried is not None and self._layout is not None and _structure_key(self._modules_seen) == self._layout[0]:
            # the layers are those the optimizer was built for (checked by identity, a few dict reads):
            # the criterion, the probe, and what stays in the loss (nothing, outside DDP and custom modules)
            loss = self.criterion(output, target)
            try:
                loss = torch.add(loss, self._probe, alpha=PROBE_SCALE)
            except RuntimeError as err:
                loss = self._probe_followed(loss, err)
            rest = self._layout[1]
            penalty = None if rest is None else _rest_of_prior(rest, -1.0 / self.num_train)
            return loss if penalty is None else loss + penalty
        penalty = _log_prior_of(self._modules_seen, -1.0 / self.num_train, carried)  # (raises on a change)
        loss = self.criterion(output, target)
        if carried is not None:
            try:
                loss = torch.add(loss, self._probe, alpha=PROBE_SCALE)  # (value 0: the step reads its gradient, see PriorGradient)
            except RuntimeError as err:
                loss = self._probe_followed(loss, err)
            if self._layout is not None:  # the carried layers as built (a copy, an unpickled loss, a module
                # without cores switched on or off since): re-key, and list again what stays in the loss
                self._layout = (_structure_key(self._modules_seen),
                                _modules_left_in_loss(self._modules_seen, carried[1] is not None))
        return loss if penalty is None else loss + penalty

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_registrations_seen", None)  # another process's count: the loaded loss walks its model once
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        prior = state.get("_prior_gradient")
        if prior is not None:  # (the optimizer's step checks the layers through it)
            prior.loss_ref = weakref.ref(self)

    #: calls of a loss whose :meth:`optimizer` has not stepped, its backward's weight unread, after
    #: which the loss warns (its prior is applied only in that optimizer's step); checked every
    #: ``STALE_CHECK_EVERY`` calls (gradient accumulation over more micro-batches than this would warn)
    STALE_OPTIMIZER_CALLS = 256
    STALE_CHECK_EVERY = 64

    def _check_the_optimizer_steps(self, calls: int) -> None:
        """Warn, once, when the optimizer :meth:`optimizer` built has not stepped for
        :attr:`STALE_OPTIMIZER_CALLS` calls of this loss while its backward went on (the zero
        scalar's gradient unread): this loss leaves the prior out of its value for that optimizer
        to apply, so training with another optimizer (built after it, say) applies no prior at
        all, silently (outside probe: the masks never moved)."""
        state = self.__dict__
        if "_stale_warned" in state:
            return
        prior, probe = state["_prior_gradient"], self._probe
        steps = prior.__dict__.get("steps_taken", 0)
        seen = state.get("_steps_seen")
        if seen is None or seen[0] != steps or probe is None or probe.grad is None:
            state["_steps_seen"] = (steps, calls)
            return
        if calls - seen[1] >= self.STALE_OPTIMIZER_CALLS:
            state["_stale_warned"] = True
            warnings.warn(f"MarsLoss: the optimizer its .optimizer() built has not stepped in the last {calls - seen[1]} "
                          "calls of this loss, though they were backpropagated. That optimizer applies the MARS prior in "
                          "its step, so this loss leaves it out of its value: training with another optimizer applies "
                          "no prior at all (the masks do not move). Build a new MarsLoss for another optimizer, or step "
                          "the one .optimizer() returned.", RuntimeWarning, stacklevel=3)

    def check_layers(self) -> None:
        """Walk the model again if a MARS-capable module was set anywhere since the last walk
        (what each call outside ``torch.compile`` does; the step of :meth:`optimizer`'s
        optimizer calls it too, so that a change between calls of a compiled loss raises there)."""
        if self.__dict__.get("_registrations_seen") != _module_registrations:
            self._follow_model()

    def _check_target_scale(self, target: Any) -> None:
        """Warn, once, when a regression criterion (squared or absolute error) sees targets whose
        variance is far from 1: the criterion is then the log-likelihood of noise of unit size in
        the targets' units, so their scale sets the prior's weight (targets 100x smaller: a data
        term 10^4 weaker, and MARS closed most indices of a layer that needed them, silently)."""
        regression = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)
        functions = (F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss)  # (the same losses as functions)
        criterion = self.criterion
        if not (isinstance(criterion, regression) or any(criterion is f for f in functions)) \
                or not isinstance(target, torch.Tensor) or not target.is_floating_point():
            self.__dict__["_scale_checked"] = True
            return
        if target.ndim == 0 or target.shape[0] < 16:  # too few examples to judge: a later batch may tell
            return
        self.__dict__["_scale_checked"] = True
        t = target.detach().float().reshape(target.shape[0], -1)
        if bool(((t == 0) | (t == 1)).all()):  # 0/1 targets (one-hot, binary): their spread is not a unit
            return
        # per output, over the examples (outputs with different means would inflate a pooled variance)
        variance = float(t.var(dim=0).median())
        if not math.isfinite(variance) or variance == 0.0:  # (a constant batch tells nothing)
            return
        if not 1e-2 <= variance <= 1e2:
            # a squared error scales with the variance, an absolute one with the standard deviation
            absolute = isinstance(criterion, nn.L1Loss) or criterion is F.l1_loss
            scale = math.sqrt(variance) if absolute else variance
            effect = ("weaker: MARS closes indices the model needs" if variance < 1 else
                      "stronger: the prior barely acts and MARS selects little")
            name = criterion.__name__ if any(criterion is f for f in functions) else type(criterion).__name__
            warn_user(f"MarsLoss: the targets' variance is {variance:.3g}; {name} treats the "
                      "residuals as noise of unit size in the targets' units, so against the prior the data term is "
                      f"about {max(scale, 1 / scale):.3g}x {effect}. Standardize the targets (zero mean, unit "
                      "variance), or scale the loss knowingly.", RuntimeWarning)

    def _follow_model(self) -> None:
        """List the model's MARS-capable modules again (after a module was registered anywhere):
        the loss follows added or replaced layers; with an optimizer from :meth:`optimizer`,
        which holds the old layers' parameters, a change is an error."""
        model = _unwrap(self._model)
        now = tuple(m for m in model.modules() if _may_carry_masks(m))
        seen = self._modules_seen
        if len(now) != len(seen) or any(a is not b for a, b in zip(now, seen)):
            if self._carried is not None:
                names = {id(m): name or "(the model itself)" for name, m in model.named_modules()}
                added = [names[id(m)] for m in now if all(m is not s for s in seen)]
                gone = sum(all(m is not n for n in now) for m in seen)
                raise RuntimeError(
                    "the model's MARS layers changed since MarsLoss.optimizer() built its optimizer (a layer was "
                    f"replaced, compressed or added: new {added or 'none'}, {gone} no longer in the model): the "
                    "optimizer does not hold the new layers' parameters nor apply their prior. Build the loss and "
                    "the optimizer again.")
            object.__setattr__(self, "_modules_seen", now)
            name_owners(self._model)
        self.__dict__["_registrations_seen"] = _module_registrations

    def _check_training_modes(self) -> None:
        """Warn, once, when the loss is computed with gradients while MARS masks whose logits
        train are in eval mode (``model.train()`` forgotten after a validation pass): their MAP
        masks send no gradient to the logits, so the prior alone moves them and closes every
        index down to ``min_rank``, silently."""
        stuck = []
        for mod in self._modules_seen:
            masks = mod._modules.get("masks")
            if (isinstance(masks, BondMasks) and not masks.training and not getattr(mod, "warmup", False)
                    and masks._parameters["logits"].requires_grad):
                stuck.append(masks.owner)
        if stuck:
            self.__dict__["_modes_checked"] = True
            warn_user(f"MarsLoss: computed with gradients while the masks of {', '.join(stuck[:3])}"
                      f"{' and others' if len(stuck) > 3 else ''} are in eval mode: their MAP masks send no "
                      "gradient to the mask logits, so training now would let the prior alone close every "
                      "index (down to min_rank). Call model.train() before training steps (or compute "
                      "validation losses under torch.no_grad()).", RuntimeWarning)

    def _probe_followed(self, loss: torch.Tensor, error: RuntimeError) -> torch.Tensor:
        """``loss + probe`` after the model moved to another device since :meth:`optimizer` (a
        0-d tensor on a GPU cannot join a CPU loss): the probe follows the loss's device, in
        place, so that the optimizer's parameter group keeps it. Other errors propagate."""
        probe = self._probe
        if probe.device == loss.device:
            raise error
        with torch.no_grad():
            probe.data = probe.data.to(loss.device)
        return torch.add(loss, probe, alpha=PROBE_SCALE)

    def _check_no_optimizer_carries_the_prior(self) -> None:
        """Warn (once) when another loss's :meth:`optimizer` already applies this model's
        prior in its step: training with this loss as well would count it twice."""
        owner = _CORE_PRIOR_OWNERS.get(_unwrap(self._model))
        owner = owner() if owner is not None else None
        if owner is not None and owner is not self and not self.__dict__.get("_warned_twice"):
            self.__dict__["_warned_twice"] = True
            warnings.warn("MarsLoss: this model's MARS prior is already applied by the optimizer that another "
                          "MarsLoss's .optimizer() built; this loss adds it again, so training with both counts it "
                          "twice. Compute the training loss with that MarsLoss (its value is the criterion alone), "
                          "or build the optimizer from this one.", RuntimeWarning, stacklevel=3)

    def optimizer(self, optimizer_class: type[torch.optim.Optimizer] | None = None, **options: Any
                  ) -> torch.optim.Optimizer:
        """An optimizer over all the model's parameters (Adam by default) that applies the MARS
        prior in its step, and this loss without the prior's graph: the same updates, a cheaper step.

        The prior's gradient has a closed form: ``G / (100 N)`` on a core ``G`` (coupled weight
        decay) and ``-(1 / N) log(pi / (1 - pi)) s (1 - s)``, ``s = sigmoid(l)``, on a mask logit
        ``l``. The optimizer (a subclass of ``optimizer_class``, e.g. ``MarsAdam``) adds it to the
        gradients just before each update, in a few ``torch._foreach_*`` calls for the whole
        model, instead of the loss building the prior in its graph and backpropagating through
        it; every parameter is then in one parameter group, and unless ``options`` choose an
        implementation (``fused``, ``foreach``) the optimizer runs its fused kernel where PyTorch
        has one (Adam, SGD, Adagrad; real floating parameters on CPU or CUDA): one call updates
        the whole model instead of about ten small ops per parameter. With fused Adam on the CPU
        (the default here) in the usual setup, the step calls the kernel itself, twice: the cores
        with their decay as the kernel's coupled ``weight_decay``, then the other parameters, the
        same updates without ``Adam.step``'s per-parameter Python
        (:meth:`~tnmars.nn.optimizers.PriorGradient.fused_adam_step`). Not SGD with momentum:
        PyTorch's fused SGD corrupts the weights after a first step that ``GradScaler`` skips.

        The prior keeps the weight it would have in the loss. The loss adds a zero scalar that
        the optimizer holds; its gradient after the backward calls is the loss's total weight in
        them (k for k accumulated losses, a loss's factor, GradScaler's scale), and the step
        multiplies the prior's gradient by it: accumulating k losses without dividing by k adds
        the prior k times, as the prior in the loss would; a step after no backward of this loss
        adds none. The updates equal those of the prior in the loss (tested, with weighted and
        accumulated losses and under ``GradScaler``).

        What changes for the caller:

        * the loss's value is the criterion alone (log ``tnn.mars_penalty(model, N)`` under
          ``torch.no_grad()`` for the prior's value); another ``MarsLoss`` of the same model would
          add the prior again, counting it twice in training, and warns when used with gradients;
        * the prior's gradient is not in ``.grad`` between ``backward`` and ``step``: gradient
          clipping there sees the data's gradient alone (the prior's is ``1/N`` of the data's
          scale): clipping the optimizer's parameters scales the prior by the clip's factor (as in
          the loss), clipping ``model.parameters()`` leaves it out of the clip; with a
          ``closure`` it is added after the closure's backward;
        * under ``DistributedDataParallel`` the masks' prior stays in the loss (DDP needs every
          parameter's gradient from the backward, and a logit whose draws were all clamped gets
          none from the data); the cores' decay is still the optimizer's;
        * ``weight_decay`` in ``options`` is a decay on every parameter, on top of the cores' prior;
        * the optimizer's parameter group holds the zero scalar after the model's parameters (it
          is never updated), so clear gradients with the optimizer's ``zero_grad()``: the model's
          ``zero_grad()`` does not reach the scalar, and a backward whose step was skipped would
          then add its weight to the next step's prior (the optimizer's ``zero_grad``, or its next
          step, clears it). Its ``load_state_dict`` also takes the state dict of the plain
          optimizer over ``model.parameters()`` (to resume a run that had the prior in the loss),
          and its ``plain_state_dict()`` is that state dict (the scalar left out) for the plain
          optimizer to load; when the model moves to another device afterwards, the scalar
          follows it.

        ``optimizer_class``: Adam, AdamW, SGD, RMSprop, Adagrad, Adamax, NAdam or RAdam (from
        ``torch.optim``); each keeps its own options, a ``weight_decay`` (coupled or, for AdamW,
        decoupled) acting on every parameter on top of the prior. Call once, after the model is
        final; replacing or compressing a layer afterwards is an error at the next loss call
        (build both again). The optimizer pickles (``torch.save``) with its prior.

        >>> import torch
        >>> from torch import nn
        >>> import tnmars.nn as tnn
        >>> model = nn.Sequential(tnn.TensorizedLinear(16, 8, rank=4, in_shape=(4, 4), out_shape=(2, 4)))
        >>> loss_fn = tnn.MarsLoss(model, num_train=1000)
        >>> opt = loss_fn.optimizer(lr=1e-3)
        >>> type(opt).__name__, isinstance(opt, torch.optim.Adam)
        ('MarsAdam', True)
        >>> opt.zero_grad(); loss_fn(model(torch.randn(5, 16)), torch.randint(0, 8, (5,))).backward(); opt.step()
        """
        optimizer_class = torch.optim.Adam if optimizer_class is None else optimizer_class
        if not (isinstance(optimizer_class, type) and optimizer_class in SUPPORTED):
            raise TypeError(f"MarsLoss.optimizer builds one of {', '.join(c.__name__ for c in SUPPORTED)} "
                            f"(torch.optim); got {optimizer_class!r}. With another optimizer keep the prior in the "
                            f"loss: build it over model.parameters() yourself.")
        if options.get("params") is not None:
            raise ValueError("MarsLoss.optimizer: the parameters are the model's (params= is not accepted)")
        if self._carried is not None:
            raise RuntimeError("MarsLoss.optimizer was already called for this loss: build a new MarsLoss for a "
                               "second optimizer")
        self._follow_model()  # the model as it is now
        fused = _prior_parts(self._modules_seen)[0]
        cores = [c for _, group in fused for c in group]
        if not all(isinstance(c, nn.Parameter) for c in cores):
            raise TypeError("MarsLoss.optimizer: a MARS module's cores are not parameters; keep the prior in the loss")
        # under DDP the masks' prior stays in the loss: DDP needs a gradient for every parameter
        # from each backward, and an open mask's logits get none from the data
        masks = None if isinstance(self._model, nn.parallel.DistributedDataParallel) else tuple(m for m, _ in fused)
        params = list(_unwrap(self._model).parameters())
        if not params:
            raise ValueError("MarsLoss.optimizer: the model has no parameters")
        if fused_by_default(optimizer_class, options, params):
            options["fused"] = True
        # the loss's weight in float32 at least, in float64 for a float64 model (a float16 probe would
        # overflow under GradScaler); a float16 or bfloat16 loss value comes out in float32
        dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
        probe = nn.Parameter(torch.zeros((), dtype=dtype, device=params[0].device))
        opt = CARRYING[optimizer_class]([*params, probe], **options)
        opt.mars_prior = PriorGradient(cores, masks or (), self.num_train, mars.CORE_PRIOR_VARIANCE, probe)
        opt.mars_prior.loss_ref = weakref.ref(self)  # (its step checks the layers: a compiled loss cannot)
        object.__setattr__(self, "_prior_gradient", opt.mars_prior)  # (a new num_train reaches it)
        self._carried = (tuple(cores), masks)
        object.__setattr__(self, "_probe", probe)
        if all(isinstance(m._modules.get("cores"), nn.ParameterList) for m, _ in _owners(self._modules_seen, fused)):
            self._layout = (_structure_key(self._modules_seen), _modules_left_in_loss(self._modules_seen, masks is not None))
        _CORE_PRIOR_OWNERS[_unwrap(self._model)] = weakref.ref(self)
        return opt


#: model -> (a weak reference to) the MarsLoss whose :meth:`~MarsLoss.optimizer` applies the
#: model's prior, so that a second loss computing that prior again can say so
_CORE_PRIOR_OWNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# ------------------------------------------------------------------------------ setters
def set_temperature(model: nn.Module, temperature: float) -> None:
    """Set the hard-concrete temperature of every MARS layer."""
    t = mars.check_temperature(temperature)
    for _, layer in _mars_modules_or_warn(model, "set_temperature"):
        layer.masks.temperature = t


def get_temperature(model: nn.Module) -> float | None:
    """Temperature of the first MARS layer (None without MARS layers)."""
    for _, layer in mars_modules(model):
        return float(layer.masks.temperature)
    return None


def set_pi(model: nn.Module, pi: float) -> None:
    """Set the Bernoulli prior ``pi`` (in (0, 0.5]) of every MARS layer."""
    p = mars.check_pi(pi)
    for _, layer in _mars_modules_or_warn(model, "set_pi"):
        layer.masks.pi = p


def set_alpha(model: nn.Module, alpha: float, *, generator: torch.Generator | None = None) -> None:
    """Re-draw every MARS logit from ``N(alpha, 0.01^2)`` (the paper's initialisation)."""
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be finite; got {alpha}")
    with torch.no_grad():
        for _, layer in _mars_modules_or_warn(model, "set_alpha"):
            layer.masks.alpha = alpha
            p = layer.masks.logits
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
            p.copy_(alpha + 0.01 * noise)


def set_warmup(model: nn.Module, warmup: bool, *, freeze_logits: bool = True) -> None:
    """Switch mask application off (``True``) or back on for every MARS layer: the paper's
    warm-up ("we do not apply masks multiplication at the first epochs").

    The prior stays in the loss, as in the reference code. With ``freeze_logits`` (default)
    the logits also stop training during the warm-up: their only gradient there is the
    prior's constant push, which Adam turns into a step of about ``lr`` per step, so a long
    warm-up would otherwise close every mask before the masks are ever applied.
    """
    closed = []
    for name, layer in _mars_modules_or_warn(model, "set_warmup"):
        if not warmup and getattr(layer, "warmup", False) and len(layer.masks.closed_bonds()) == len(layer.masks.bonds):
            closed.append((name, layer.masks.kept_share()))
        layer.warmup = bool(warmup)  # (freezes the logits in warm-up, unfreezes them after)
        if warmup and not freeze_logits:
            for p in layer.masks.parameters():
                p.requires_grad_(True)
    if closed:
        shares = sorted(share for _, share in closed)
        warn_user(f"set_warmup: the warm-up ends with every mask of {', '.join(repr(n or '(model)') for n, _ in closed)} "
                  f"closed (a negative alpha: the presets' start), so each training draw now keeps about "
                  f"{shares[0]:.0%}{'' if shares[-1] - shares[0] < 0.005 else f'-{shares[-1]:.0%}'} of their indices "
                  "and cuts the full-rank weights the warm-up trained. That is the paper's MNIST recipe; on other "
                  "models it can collapse the training for good (measured 2026-12-02 on scikit-learn's digits: a "
                  "3-layer MLP under mars='soft' fell from 97% accuracy at the end of its warm-up to 13%, the guide's "
                  "2-layer example under 'hard' from 97% to 40%). Watch the loss; tnn.set_alpha(model, 6) opens the "
                  "masks instead (the default start).", RuntimeWarning)


def _annealing(start: float, end: float) -> tuple[float, float]:
    """Checked ``(start, end)`` temperatures of a schedule, which lowers T (or keeps it)."""
    start, end = mars.check_temperature(start), mars.check_temperature(end)
    if end > start:
        raise ValueError(f"the temperature schedule anneals from start down to end; got start={start} < end={end}")
    return start, end


class MarsTemperature:
    """Temperature schedule for every MARS layer of a model; call :meth:`step` once per epoch
    (or per step, for ``steps=`` schedules).

    * ``decay=`` (the reference; 0.99 unless given): ``T <- max(end, decay * T)`` per call,
      from ``start``;
    * ``steps=``: exponential from ``start`` to ``end`` over ``steps`` calls, then ``end``.

    Give one of the two: both at once is an error (one would be ignored). Building the
    schedule sets every MARS layer's temperature to ``start`` (a ``temperature=`` given to a
    layer is replaced).

    With fewer epochs than the paper's 300, :meth:`paper_decay` gives the per-epoch factor
    that reaches the floor at the same fraction of training (epoch 229 of 300).

    >>> round(MarsTemperature.paper_decay(300), 4), round(MarsTemperature.paper_decay(30), 4)
    (0.99, 0.9044)
    """

    def __init__(self, model: nn.Module, start: float = 0.1, end: float = 0.01, *, decay: float | None = None,
                 steps: int | None = None) -> None:
        self.model = model
        self.start, self.end = _annealing(start, end)
        if steps is not None and decay is not None:
            raise ValueError(f"MarsTemperature: give decay= (per call) or steps= (over a number of calls), not both; "
                             f"got decay={decay!r} and steps={steps!r}, and one would be ignored")
        if steps is not None:
            self.schedule: mars.TemperatureSchedule | None = mars.TemperatureSchedule(self.start, self.end,
                                                                                     integer(steps, "steps"))
            self.decay = None
        else:
            if decay is None:
                decay = 0.99
            if not 0 < decay <= 1:
                raise ValueError(f"decay must lie in (0, 1]; got {decay}")
            self.schedule = None
            self.decay = float(decay)
        self.count = 0
        self.temperature = self.start
        _apply_temperature(model, self.temperature)
        if not any(_may_carry_masks(m) for m in _unwrap(model).modules()):
            _warn_no_mars_modules("MarsTemperature", "the schedule has nothing to set")
        elif not any(True for _ in mars_modules(model)):
            warnings.warn("MarsTemperature: no layer of the model has MARS masks now (built with mars=False, "
                          "compressed, or loaded with load_compressed): the schedule sets nothing until masks are "
                          "switched on", UserWarning, stacklevel=2)

    @staticmethod
    def paper_decay(epochs: int, start: float = 0.1, end: float = 0.01) -> float:
        """Per-epoch factor reaching ``end`` after ``log(end/start)/log(0.99)`` / 300 of ``epochs``."""
        if integer(epochs, "epochs") < 1:
            raise ValueError(f"epochs must be >= 1; got {epochs}")
        start, end = _annealing(start, end)
        if end == start:
            return 1.0
        frac = math.log(end / start) / math.log(0.99) / 300.0  # 229.1 / 300 for 0.1 -> 0.01
        return (end / start) ** (1.0 / max(frac * int(epochs), 1.0))

    def step(self) -> float:
        self.count += 1
        if self.schedule is not None:
            self.temperature = self.schedule(self.count)
        else:
            self.temperature = max(self.end, self.decay * self.temperature)
        _apply_temperature(self.model, self.temperature)
        return self.temperature

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "temperature": self.temperature}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"count", "temperature"} - set(state)
        if missing:
            raise ValueError(f"MarsTemperature.load_state_dict: the state lacks {sorted(missing)} (it takes what "
                             "state_dict() returned)")
        self.count = int(state["count"])
        self.temperature = float(state["temperature"])
        _apply_temperature(self.model, self.temperature)


# ------------------------------------------------------------------------------ compression
def compress(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in which every MARS layer (and TT recurrent matrix) is
    physically at its selected ranks.

    Cores are sliced to the MAP-kept indices and the masks removed, so the copy has fewer
    parameters and computes what ``model`` computes in eval mode. The input is not changed.
    A ``DistributedDataParallel`` model gives its compressed ``module`` (a DDP wrapper holds a
    process group and cannot be copied: wrap the copy again to train it on); other wrappers,
    such as ``DataParallel``, are copied with it.
    """
    model = _unwrap(model)
    name_owners(model)
    diverged = [name or "(model)" for name, layer in rank_modules(model) if not _all_finite(layer.parameters())]
    if diverged:
        raise ValueError(f"compress: layers {diverged} hold NaN or infinite parameters (the training diverged): "
                         "their MAP ranks are not a selection, and the compressed model would output NaN")
    in_warmup = []
    for name, layer in mars_modules(model):
        layer.masks.warn_if_closed()
        ranks = layer.masks.ranks()
        if getattr(layer, "warmup", False) and any(ranks[b] < n for b, n in zip(layer.masks.bonds, layer.masks.sizes)):
            in_warmup.append(f"{name or '(model)'!r} (ranks {ranks})")
    if in_warmup:
        warnings.warn(f"compress: {', '.join(in_warmup)} in warm-up: its masks are not applied, so it computes its "
                      "full-rank function, while the compressed copy keeps only the indices its masks select and "
                      "computes something else. End the warm-up (tnmars.nn.set_warmup(model, False)) and train "
                      "with the masks before compressing.", RuntimeWarning, stacklevel=2)
    if isinstance(model, _COMPRESSIBLE):
        return model.compressed()
    new = copy.deepcopy(model)
    replace_modules(new, lambda name, m: m.compressed() if isinstance(m, _COMPRESSIBLE) and m.masks is not None
                    else None)
    return new


def load_compressed(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True) -> nn.Module:
    """Load the ``state_dict`` of a :func:`compress` ed model into a copy of ``model``.

    ``model`` is the architecture as built for training (maximal ranks, masks on); the ranks
    each tensorized layer had when it was compressed are read from the shapes of its cores
    in ``state_dict``, the layer is re-cut to them (no masks), and the state is loaded. The
    input model is not changed. Layers whose state still carries mask logits load as they are.

    >>> import torch, tnmars.nn as tnn
    >>> model = tnn.LowRankLinear(6, 4, rank=3, alpha=3.0).eval()
    >>> state = tnn.compress(model).state_dict()
    >>> fresh = tnn.LowRankLinear(6, 4, rank=3)
    >>> loaded = tnn.load_compressed(fresh, state).eval()
    >>> bool(torch.allclose(loaded(torch.ones(1, 6)), model(torch.ones(1, 6))))
    True
    """
    if not isinstance(state_dict, Mapping):
        hint = " (read the file first: tnn.load_compressed(model, torch.load(path)))" \
            if isinstance(state_dict, (str, os.PathLike)) else ""
        raise TypeError(f"load_compressed needs a state dict (a mapping of names to tensors); got "
                        f"{type(state_dict).__name__}{hint}")
    model = _unwrap(model)
    if isinstance(model, _COMPRESSIBLE):
        return _loaded(_recut(copy.deepcopy(model), "", state_dict), state_dict, strict)
    new = copy.deepcopy(model)
    replace_modules(new, lambda name, m: _recut(m, name + ".", state_dict) if isinstance(m, _COMPRESSIBLE) else None)
    return _loaded(new, state_dict, strict)


def _loaded(module: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool) -> nn.Module:
    try:
        module.load_state_dict(state_dict, strict=strict)
    except RuntimeError as err:
        owners = {"" if key.startswith("cores.") else key.rsplit(".cores.", 1)[0]
                  for key in state_dict if key.startswith("cores.") or ".cores." in key}
        dense = sorted(name or "the model" for name in owners
                       if isinstance(_submodule(module, name), (nn.Linear, nn.Conv2d, nn.Embedding)))
        if not dense:
            raise
        raise RuntimeError(f"{err}\n\nload_compressed: the state dict holds tensorized layers where the model has dense "
                           f"ones ({', '.join(dense[:3])}{' ...' if len(dense) > 3 else ''}): build the model as it was "
                           "trained, tensorized (tnmars.nn.tensorize with the same options, or the same layer classes), "
                           "then load_compressed re-cuts its layers to the saved ranks") from None
    return module


def _submodule(module: nn.Module, name: str) -> nn.Module | None:
    try:
        return module.get_submodule(name)  # ("": the module itself)
    except AttributeError:
        return None


#: modules :func:`compress` slices to their MAP ranks and :func:`load_compressed` re-cuts
_COMPRESSIBLE = (TensorizedLayer, TTRecurrentMatrix)


def _recut(layer: nn.Module, prefix: str, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """``layer`` cut to the bond sizes that its cores have in ``state_dict`` (unchanged if the
    state still has mask logits or the layer's cores are missing from it)."""
    if any(key.startswith(prefix + "masks.") for key in state_dict):
        return layer
    terms = layer.spec.split("->")[0].split(",")
    ranks: dict[str, int] = {}
    where = repr(prefix[:-1]) if prefix else "the layer"
    for k, term in enumerate(terms):
        tensor = state_dict.get(f"{prefix}cores.{k}")
        if tensor is None:
            return layer
        if len(tensor.shape) != len(term):
            raise ValueError(f"{prefix}cores.{k} has shape {tuple(tensor.shape)}; a core of {layer.spec!r} has "
                             f"{len(term)} axes")
        for letter, n in zip(term, tensor.shape):
            if letter in layer.bond_names:
                if ranks.setdefault(letter, int(n)) != int(n):
                    raise ValueError(f"the cores of {where} disagree on the size of bond {letter!r}")
    try:
        return layer.at_ranks(ranks)
    except ValueError as err:
        raise ValueError(f"load_compressed: {where}: {err}. The saved ranks {ranks} are larger than this layer's "
                         f"{dict(layer.max_ranks)}: build the model at the ranks it was trained with (the same rank= "
                         "or budget=), then load") from None


#: a mask entry with ``UNDECIDED < phi < 1 - UNDECIDED`` has not settled (:func:`summary` says so):
#: a TT recurrent matrix trained with ``mars="soft"`` showed ranks 6-7 "selected" from phis of
#: 0.29-0.87, and they moved on with more training
UNDECIDED = 0.2
#: a layer whose weight has Frobenius norm at most this (by a bound from its cores' norms) is
#: numerically zero, though its masks keep every rank (:func:`summary` flags it): every tnmars
#: layer starts near norm 1 or more (Glorot's ``sqrt(2 n_in n_out / (n_in + n_out))``), so it is
#: about 1e-12 of the initialisation
ZERO_WEIGHT = 1e-12


@dataclass
class LayerSummary:
    name: str
    kind: str
    max_ranks: dict[str, int]
    selected_ranks: dict[str, int]
    dense_size: int
    params_initial: int
    params_selected: int
    #: bonds on which MARS closed every index (every ``phi <= 0.5``): kept at ``min_rank`` only
    closed_bonds: list[str] = field(default_factory=list)
    #: True when a core or mask logit holds NaN or infinity (training diverged): ranks read from
    #: NaN logits (``NaN > 0`` is false) mean nothing
    non_finite: bool = False
    #: mask entries whose keep probability is still between :data:`UNDECIDED` and one minus
    #: it: the selected ranks may change with more training
    undecided: int = 0
    #: True when every bond keeps a rank but the cores are numerically zero (a bound on the
    #: weight's norm is at most :data:`ZERO_WEIGHT`): the layer outputs only its bias. Cores that
    #: get no data gradient (the layer's output unused, or a prior that outweighs the data) end
    #: like this while the masks, and the ranks, stay open
    zero_weight: bool = False
    #: the smallest mask logit of the layer (None without masks, or in warm-up, where the logits
    #: are frozen): far above 0, no index is near closing yet
    smallest_logit: float | None = None

    @property
    def dead(self) -> bool:
        """True when some bond has rank 0: the weight is exactly zero (the layer outputs its bias)."""
        return any(r == 0 for r in self.selected_ranks.values())

    @property
    def compression(self) -> float:
        """Dense size over the parameters at the selected ranks; NaN for a dead layer (a zero weight
        is not a compressed weight, nor is a numerically zero one) and for one with non-finite
        parameters."""
        if self.dead or self.zero_weight or self.non_finite:
            return math.nan
        return self.dense_size / self.params_selected


@dataclass
class ModelSummary:
    """Per-layer ranks and sizes plus the paper's whole-model compression.

    ``compression = (other + sum dense sizes) / (other + sum params at selected ranks)``,
    where ``other`` is every parameter outside the decomposed cores (biases, plain layers),
    and mask logits count on neither side. A layer with a rank-0 bond (its weight is zero)
    makes the model's compression meaningless: it is then NaN and the table says which layer.
    """

    layers: list[LayerSummary] = field(default_factory=list)
    other_params: int = 0

    @property
    def dense_params(self) -> int:
        return self.other_params + sum(r.dense_size for r in self.layers)

    @property
    def selected_params(self) -> int:
        return self.other_params + sum(r.params_selected for r in self.layers)

    @property
    def initial_params(self) -> int:
        return self.other_params + sum(r.params_initial for r in self.layers)

    @property
    def layer_params(self) -> int:
        """The tensorized layers' cores at the selected ranks, biases and logits left out: what
        ``tensorize(budget=...)`` counts (the model's total also counts the biases)."""
        return sum(r.params_selected for r in self.layers)

    @property
    def dead_layers(self) -> list[str]:
        """Layers whose weight is exactly zero (a bond at rank 0)."""
        return [r.name for r in self.layers if r.dead]

    @property
    def zero_weight_layers(self) -> list[str]:
        """Layers whose cores are numerically zero though every bond keeps a rank
        (:attr:`LayerSummary.zero_weight`)."""
        return [r.name for r in self.layers if r.zero_weight]

    @property
    def closed_layers(self) -> list[str]:
        """Layers with a bond that MARS closed whole (kept at ``min_rank``, or dead)."""
        return [r.name for r in self.layers if r.closed_bonds]

    @property
    def non_finite_layers(self) -> list[str]:
        """Layers holding NaN or infinite cores or logits (a diverged training)."""
        return [r.name for r in self.layers if r.non_finite]

    @property
    def compression(self) -> float:
        if self.dead_layers or self.zero_weight_layers or self.non_finite_layers:
            return math.nan
        return mars.compression_ratio(self.other_params, [r.dense_size for r in self.layers],
                                      [r.params_selected for r in self.layers])

    @property
    def initial_compression(self) -> float:
        return mars.compression_ratio(self.other_params, [r.dense_size for r in self.layers],
                                      [r.params_initial for r in self.layers])

    def __str__(self) -> str:
        lines = ["| layer | type | ranks (start) | ranks (selected) | params (selected) | dense | compression |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.layers:
            start = ",".join(str(v) for v in r.max_ranks.values())
            sel = ",".join(str(r.selected_ranks[b]) + ("*" if b in r.closed_bonds else "") for b in r.max_ranks)
            comp = ("none: NaN/inf parameters" if r.non_finite else "none: weight is zero" if r.dead
                    else "none: weight is numerically zero" if r.zero_weight else f"{r.compression:.1f}x")
            lines.append(f"| {r.name} | {r.kind} | {start} | {sel} | {r.params_selected:,} | {r.dense_size:,} | "
                         f"{comp} |")
        if len(self.layers) > 1:  # (what a tensorize budget counts; the model row adds the rest)
            layers_dense = sum(r.dense_size for r in self.layers)
            together = (f"{layers_dense / self.layer_params:.1f}x" if self.layer_params
                        and not (self.dead_layers or self.zero_weight_layers or self.non_finite_layers) else "")
            lines.append(f"| tensorized layers (cores) | | | | {self.layer_params:,} | {layers_dense:,} | {together} |")
        lines.append(f"| other (biases, plain layers) | | | | {self.other_params:,} | {self.other_params:,} | |")
        model = ("none: NaN/inf parameters (below)" if self.non_finite_layers else
                 "none: a zero weight (below)" if self.dead_layers or self.zero_weight_layers
                 else f"**{self.compression:.1f}x**")
        lines.append(f"| **model** | | | | {self.selected_params:,} | {self.dense_params:,} | "
                     f"{model} (start {self.initial_compression:.1f}x) |")
        if self.non_finite_layers:
            lines.append(f"\nLayers {', '.join(self.non_finite_layers)}: NaN or infinite parameters (the training "
                         "diverged): their ranks and compression mean nothing.")
        if self.dead_layers:
            lines.append(f"\nLayers {', '.join(self.dead_layers)}: a bond has rank 0, so the weight is zero: a layer "
                         "outputs only its bias, a recurrent matrix keeps no memory of past steps.")
        if self.zero_weight_layers:
            lines.append(f"\n**Layers {', '.join(self.zero_weight_layers)}: the weight is numerically zero** (its "
                         f"cores' norms bound it below {ZERO_WEIGHT:g}) though every bond keeps its rank: a layer "
                         "outputs only its bias, and the ranks shown select nothing (made from a zero weight, or "
                         "trained without a data gradient: an unused output, or a prior that outweighs the data).")
        unsettled = [f"{r.name} ({r.undecided})" for r in self.layers if r.undecided]
        if unsettled:
            lines.append(f"\nMask entries not settled (keep probability between {UNDECIDED:g} and {1 - UNDECIDED:g}), "
                         f"per layer: {', '.join(unsettled)}. The selected ranks read them at 0.5 and may change with "
                         "more training (or a lower temperature).")
        masked = [r.smallest_logit for r in self.layers if r.smallest_logit is not None]
        if masked and min(masked) > OPEN_LOGIT and all(r.selected_ranks == r.max_ranks for r in self.layers):
            lines.append(f"\nNo index is near closing yet (every mask logit is above {OPEN_LOGIT:g}; the smallest "
                         f"{min(masked):.2f}): the selected ranks are the starting ones, and MARS has selected "
                         "nothing so far. Masks start open (alpha=6 by default), and Adam moves a logit about "
                         "lr per step: an index the data do not need closes after about alpha / lr steps (2,000 "
                         "at lr=3e-3). Train longer (or at a larger learning rate) before reading ranks from this table.")
        if any(r.closed_bonds and not r.dead for r in self.layers):
            lines.append("\n`*`: MARS closed every index of this bond; it is kept at `min_rank` only (the prior may "
                         "be too strong for the layer, or the layer not needed).")
        if self.layers and all(r.closed_bonds and set(r.closed_bonds) == set(r.max_ranks) for r in self.layers):
            lines.append("\n**Every bond of every MARS layer is closed**: the model computes through layers kept at "
                         "`min_rank` only, and its compression says nothing of what it still computes. Check its "
                         "accuracy: a training that collapsed (masks that started closed, a prior too strong for the "
                         "data) reads like this.")
        return "\n".join(lines)


def rank_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` for every module with selectable ranks: the tensorized layers and any
    module exposing the same accounting (``max_ranks``, ``selected_ranks()``, ``num_params_at``,
    ``dense_size``), such as the tensorized recurrent matrix."""
    for name, mod in _inner(model).named_modules():
        if isinstance(mod, TensorizedLayer) or all(hasattr(mod, a) for a in
                                                   ("max_ranks", "selected_ranks", "num_params_at", "dense_size",
                                                    "cores")):
            yield name, mod


def name_owners(model: nn.Module) -> None:
    """Write each MARS module's model path into its masks' :attr:`BondMasks.owner` (for warnings)."""
    for name, mod in mars_modules(model):
        mod.masks.owner = f"layer {name or '(model)'!r} ({type(mod).__name__})"


#: a mask logit above this (keep probability above 0.95) is nowhere near closing: a summary
#: whose every logit is above it says that MARS has selected nothing yet
OPEN_LOGIT = 3.0


def summary(model: nn.Module) -> ModelSummary:
    """Ranks, parameter counts and compression (the paper's rule) of every module with
    selectable ranks (tensorized layers, tensorized recurrent matrices).

    ``print(summary(model))`` gives a markdown table. A model and its :func:`compress` ed
    copy have the same summary compression. A layer whose bond MARS closed whole is
    flagged (``*``: held at ``min_rank``; rank 0: its weight is zero) and warned about, and so
    is one whose cores are numerically zero though its masks keep every rank
    (:attr:`LayerSummary.zero_weight`, found from the cores' norms without building the weight).
    """
    model = _inner(model)
    rows = []
    core_ids: set[int] = set()
    logit_ids: set[int] = set()
    in_warmup = []
    for name, layer in rank_modules(model):
        core_ids.update(id(p) for p in layer.cores)
        masks = getattr(layer, "masks", None)
        closed: list[str] = []
        undecided = 0
        smallest = None
        finite = _all_finite(layer.parameters())
        if masks is not None:
            logit_ids.update(id(p) for p in masks.parameters())
            closed = masks.closed_bonds() if finite else []
            phi = torch.sigmoid(masks.logits.detach().float())
            undecided = int(((phi > UNDECIDED) & (phi < 1.0 - UNDECIDED)).sum()) if finite else 0
            # (in warm-up the logits are frozen: no training moves them, so the note would mislead)
            smallest = (float(masks.logits.detach().min()) if finite and masks.logits.numel()
                        and not getattr(layer, "warmup", False) else None)
        sel = layer.selected_ranks()
        zero = finite and all(r > 0 for r in sel.values()) and _weight_bound(layer) <= ZERO_WEIGHT
        if getattr(layer, "warmup", False) and sel != dict(layer.max_ranks):
            in_warmup.append(name or type(layer).__name__)
        rows.append(LayerSummary(name=name or type(layer).__name__, kind=type(layer).__name__,
                                 max_ranks=dict(layer.max_ranks), selected_ranks=sel, dense_size=layer.dense_size,
                                 params_initial=layer.num_params_at(layer.max_ranks),
                                 params_selected=layer.num_params_at(sel), closed_bonds=closed,
                                 non_finite=not finite, undecided=undecided, zero_weight=zero,
                                 smallest_logit=smallest))
    other = sum(p.numel() for p in model.parameters() if id(p) not in core_ids and id(p) not in logit_ids)
    result = ModelSummary(layers=rows, other_params=int(other))
    _warn_closed(result)
    if in_warmup:
        warnings.warn(f"layers {in_warmup} are in warm-up: their masks are not applied, so they run at their maximal "
                      "ranks; the selected ranks and compression shown are what compress would keep",
                      RuntimeWarning, stacklevel=2)
    return result


def _weight_bound(layer: nn.Module) -> float:
    """An upper bound on the Frobenius norm of ``layer``'s weight, from its cores alone (no
    contraction): the weight is a sum over every assignment of the bond indices of outer
    products of core slices, so its norm is at most the number of assignments times the
    product of the cores' norms (masks only shrink it)."""
    with torch.no_grad():
        bound = 1.0
        for core in layer.cores:
            bound *= float(torch.linalg.vector_norm(core.detach(), dtype=torch.float64))
        for size in dict(layer.max_ranks).values():
            bound *= max(int(size), 1)
        return bound


def _all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    with torch.no_grad():
        return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point() or t.is_complex())


def _warn_closed(result: ModelSummary) -> None:
    diverged = result.non_finite_layers
    if diverged:
        warnings.warn(f"layers {diverged} hold NaN or infinite parameters (the training diverged: look for a NaN "
                      "loss; a lower learning rate or gradient clipping); their ranks and compression mean nothing",
                      RuntimeWarning, stacklevel=3)
    dead = [r.name for r in result.layers if r.dead and not r.non_finite]
    if dead:
        warnings.warn(f"layers {dead}: a bond has rank 0 (MARS closed every index and min_rank=0), so their weight is "
                      "zero and they output only their bias", RuntimeWarning, stacklevel=3)
    zero = result.zero_weight_layers
    if zero:
        warnings.warn(f"layers {zero}: their weight is numerically zero (their cores' norms bound it below "
                      f"{ZERO_WEIGHT:g}) though every bond keeps its rank, so they output only their bias and the "
                      "ranks shown select nothing. Untrained, such a layer was made from a zero weight; trained, its "
                      "cores got no data gradient (an output the loss does not use, or a prior that outweighs the "
                      "data: check the weight decay, pi, alpha and the N given to MarsLoss)", RuntimeWarning,
                      stacklevel=3)
    held = [r.name for r in result.layers if r.closed_bonds and not r.dead]
    if held:
        warnings.warn(f"layers {held}: MARS closed every index of a bond; it is kept at min_rank only (marked * in "
                      "the summary)", RuntimeWarning, stacklevel=3)


__all__ = ["MarsLoss", "MarsTemperature", "mars_penalty", "log_prior", "compress", "load_compressed", "summary", "ModelSummary",
           "LayerSummary", "set_temperature", "get_temperature", "set_pi", "set_alpha", "set_warmup",
           "mars_layers", "mars_modules", "tensorized_layers", "rank_modules"]
