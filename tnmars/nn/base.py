"""Shared machinery of the tensorized layers: a Network-backed base class and ``x @ W``
through a tensor network.

Two pieces live here:

* :class:`NetworkMatmul` computes ``y = x @ W`` where ``W`` is the matrix of a
  :class:`tnmars.Network` whose open modes are the input modes followed by the output modes
  (the layout of :meth:`tnmars.Network.tt_matrix`). It picks, per batch size, the cheaper of
  "reconstruct ``W`` then one GEMM" and "contract ``x`` through the cores", using the cached
  opt_einsum plans of :func:`tnmars.contract.make_plan`. :func:`tt_matmul` is the one-call
  form for a TT-matrix given by its cores (used by the recurrent models too).
* :class:`TensorizedLayer` is the ``nn.Module`` base: cores are ``nn.Parameter`` s, MARS
  masks a :class:`~tnmars.nn.masks.BondMasks`, and ``compressed()`` slices the cores to the
  selected ranks.

A bond's mask is folded once into its smallest adjacent core (``Network.mask_site``), so a
masked forward runs the same plan as an unmasked one.
"""
from __future__ import annotations

import copy
import functools
import itertools
import math
import sys
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from math import prod
from typing import Any

import torch
from torch import nn

from ..backends import get_backend
from ..contract import COPY_FLOPS, Plan, contract, make_plan
from ..network import Network, gaussian_core_std
from ..spec import parse_spec
from .fastpath import TwoBlockCut, best_cut
from .kept import Contents, Same, generation
from .masks import BondMasks, _is_compiling, resolve_preset
from .program import Program, is_recording, run

_BE = get_backend("torch")
#: at equal FLOPs "reconstruct + GEMM" measured about 1.5x faster (forward + backward) than
#: contracting through the cores (DESIGN.md), so the cores path must be this much cheaper
WEIGHT_PATH_ADVANTAGE = 1.5
#: without gradients, two GEMMs through cached blocks beat the usual path's several calls at
#: batch 1 up to this many times its FLOPs; at larger batches their transposing copies count,
#: and they win only below the second factor (measured at batch 1 to 128, TT 784x625)
CUT_ADVANTAGE = 1.25
CUT_ADVANTAGE_BATCHED = 0.75
_MODES = ("auto", "weight", "cores")
JIT_TRACE_MESSAGE = (
    "tnmars layers cannot be recorded by torch.jit.trace (deprecated by PyTorch): a layer chooses its "
    "contraction order from the batch size and its current ranks, and a trace would freeze those choices "
    "for every later input. Use torch.compile(model) instead (no graph breaks in eval mode, nor in a MARS "
    "training forward), or torch.export.export(model, (x,), dynamic_shapes=...) for a graph to deploy (a "
    "dynamic batch dimension keeps the graph valid for every batch size)")
_SPARE = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkjihgfedcba"


def _free_letter(terms: Sequence[str]) -> str:
    used = set("".join(terms))
    for c in _SPARE:
        if c not in used:
            return c
    raise ValueError("the network uses all 52 index letters; no letter is left for the batch index")


def first_indices(sizes: Mapping[str, int], ranks: Mapping[str, int], owner: str) -> dict[str, list[int]]:
    """Per bond, its first ``ranks[b]`` indices (a bond not named keeps its size): what an
    ``at_ranks`` skeleton keeps. ``owner`` names the module in the errors."""
    unknown = set(ranks) - set(sizes)
    if unknown:
        raise ValueError(f"unknown bonds {sorted(unknown)}; this {owner}'s bonds are {list(sizes)}")
    keep = {}
    for b, n in sizes.items():
        r = int(ranks.get(b, n))
        if not 0 <= r <= n:
            raise ValueError(f"rank {r} for bond {b!r} is outside [0, {n}] (its size in this {owner})")
        keep[b] = list(range(r))
    return keep


def pruned_parameters(spec: str, cores: Sequence[torch.Tensor], keep: Mapping[str, Any]
                      ) -> tuple[Network, nn.ParameterList]:
    """The network of ``cores`` sliced to ``keep`` and its cores as new parameters; a frozen
    core stays frozen (fine-tuning a compressed model must not unfreeze it)."""
    net = Network.from_cores(spec, [c.detach() for c in cores]).prune(keep)
    return net, nn.ParameterList([nn.Parameter(c.detach().clone(), requires_grad=old.requires_grad)
                                  for c, old in zip(net.cores, cores)])


def replace_modules(model: nn.Module, replace: Callable[[str, nn.Module], nn.Module | None]) -> None:
    """Put ``replace(name, module)`` in place of the submodules of ``model`` it returns a module
    for (``None``: keep it). ``replace`` is asked once per module object, under its first name; a
    module held under several names (weight tying) gets the one new module under all of them, so
    the model stays tied (``named_modules()`` lists a shared module once, and replacing only that
    name would leave the other holding the old module)."""
    done: dict[int, nn.Module | None] = {}
    replaced: list[str] = []  # names whose module was replaced: their submodules are gone with it
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if not name or any(name.startswith(r + ".") for r in replaced):
            continue
        if id(module) not in done:
            done[id(module)] = replace(name, module)
        if done[id(module)] is not None:
            replaced.append(name)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, done[id(module)])


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside tnmars and torch (the user's line)."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("tnmars", "torch"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def _get_warmup(module: nn.Module) -> bool:
    state = module.__dict__
    return state["_warmup"] if "_warmup" in state else state.get("warmup", False)  # (pickled before: "warmup")


def _set_warmup(module: nn.Module, value: bool) -> None:
    value = bool(value)
    module.__dict__["_warmup"] = value
    module.__dict__.pop("warmup", None)
    masks = module._modules.get("masks")
    if masks is not None:  # frozen in warm-up: their only gradient there is the prior's push, which would close
        for p in masks.parameters():  # every mask before the masks are ever applied
            p.requires_grad_(not value)


#: ``module.warmup``: True while the masks are not applied (the paper's optional warm-up). Setting
#: it freezes the mask logits (and unfreezes them when it ends), however it is set: set directly,
#: the prior alone moved them, closing every mask during a warm-up
WARMUP = property(_get_warmup, _set_warmup)


def train_masked(module: nn.Module, mode: bool, train: Callable[[bool], nn.Module]) -> nn.Module:
    """``train(mode)`` (the parent's ``nn.Module.train``) for a module with masks, without the
    masks' warning on switching to eval while the module is in warm-up: the masks are not applied
    there, in eval either, and the module runs at full rank (an outside probe saw "MARS closed
    every index ... kept at rank 1" at every evaluation of a warm-up at 97% accuracy)."""
    masks = module._modules.get("masks")
    if masks is None or not _get_warmup(module):
        return train(mode)
    masks.__dict__["_owner_in_warmup"] = True
    try:
        return train(mode)
    finally:
        masks.__dict__.pop("_owner_in_warmup", None)


def core_list(cores: nn.ParameterList) -> list[torch.Tensor]:
    """The parameters of a ``ParameterList`` as a list, without its per-item indexing (which costs
    more than a small contraction step at batch 1)."""
    params = cores._parameters
    return list(params.values()) if len(params) == len(cores) else list(cores)


def zero_anchor(tensors: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """A 0-d zero that depends on every tensor that requires grad (``None`` if none does, or
    without grad mode): added to an output that short-circuits a closed bond, so that those
    tensors still get (zero) gradients, as they would through a zero weight."""
    if not torch.is_grad_enabled():
        return None
    parts = [t.reshape(-1)[:0].sum() for t in tensors if t.requires_grad]
    if not parts:
        return None
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


def check_features(x: Any, features: int, dtype: torch.dtype | None = None) -> None:
    """``x`` must be a floating tensor with ``features`` entries on its last axis, of the layer's
    ``dtype`` (the checks ``nn.Linear`` leaves to a failing matmul, made into named errors)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor of shape (..., {features}); got {type(x).__name__}")
    if x.ndim == 0:
        raise ValueError(f"input must have shape (..., {features}); got a 0-d tensor")
    if x.shape[-1] != features:
        raise ValueError(f"input has {x.shape[-1]} features on its last axis; expected {features}")
    check_dtype(x, dtype)


def check_dtype(x: torch.Tensor, dtype: torch.dtype | None) -> None:
    """A floating input of the layer's dtype (any dtype under autocast, which casts itself)."""
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"input must be a floating-point tensor; got {x.dtype}")
    if dtype is not None and x.dtype != dtype and not _autocast(x):
        raise TypeError(f"input is {x.dtype} but the layer's parameters are {dtype}: convert one of them "
                        "(x.to(dtype) or layer.to(dtype)), as torch.nn layers require")


def _autocast(x: torch.Tensor) -> bool:
    try:
        return torch.is_autocast_enabled(x.device.type)
    except TypeError:  # older PyTorch: no device argument
        return torch.is_autocast_enabled()


def autocast_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of a dense layer's output for input ``x``: autocast's lower precision where it is
    on for ``x``'s device type, else ``x``'s dtype. For outputs built without a matmul (a closed
    bond's zeros), which autocast does not see."""
    if not _autocast(x):
        return x.dtype
    try:
        return torch.get_autocast_dtype(x.device.type)
    except AttributeError:  # torch < 2.4: per-device functions
        return torch.get_autocast_cpu_dtype() if x.device.type == "cpu" else torch.get_autocast_gpu_dtype()


def torch_seed() -> int:
    """A seed drawn from torch's global generator, so ``torch.manual_seed`` fixes layer inits."""
    return int(torch.randint(0, 2**31 - 1, (1,), device="cpu").item())  # (the CPU generator under a device context too)


def check_mode(mode: str) -> str:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}; got {mode!r}")
    return mode


def fold_masks(cores: Sequence[torch.Tensor], masks: Mapping[str, torch.Tensor] | None,
               sites: Mapping[str, tuple[int, int]]) -> list[torch.Tensor]:
    """Multiply each bond's mask into its mask-site core (one multiplication per bond)."""
    cores = list(cores)
    if not masks:
        return cores
    for bond, mask in masks.items():
        core, axis = sites[bond]
        view = [1] * cores[core].ndim
        view[axis] = -1
        cores[core] = cores[core] * mask.to(cores[core].dtype).reshape(view)
    return cores


#: every live NetworkMatmul by an int key: under ``torch.compile`` the functions below get the
#: key, not the object (older PyTorch, e.g. 2.11, accepts only constants as their arguments)
_MATMULS: weakref.WeakValueDictionary[int, NetworkMatmul] = weakref.WeakValueDictionary()
_MATMUL_KEYS = itertools.count()


def _register(mm: NetworkMatmul) -> None:
    mm._compile_key = next(_MATMUL_KEYS)
    _MATMULS[mm._compile_key] = mm


try:  # dynamo specialises a symbolic size passed to it (a guard on its value)
    from torch.fx.experimental.symbolic_shapes import guard_scalar as _guard_scalar
except ImportError:  # pragma: no cover - older PyTorch
    _guard_scalar = None


def _static(batch: int) -> int:
    """``batch`` as a constant while ``torch.compile`` traces: after a second batch size dynamo
    makes the batch symbolic (``dynamic=None``, PyTorch's default), which the per-size choice of
    path and its program below cannot take (a ``fullgraph`` failure). Specialising it, with a
    guard on its value, recompiles per batch size, as ``dynamic=False`` does."""
    return batch if _guard_scalar is None else _guard_scalar(batch)


@torch.compiler.assume_constant_result
def _constant_code(key: int, core_shapes: tuple, batch: int | None) -> tuple:
    """Under ``torch.compile`` the plan is looked up (or made) outside the traced graph: it
    depends on shapes only, so the compiled graph holds its code (plain tuples) as a constant."""
    return _MATMULS[key]._program(core_shapes, batch).code


@torch.compiler.assume_constant_result
def _constant_choice(key: int, core_shapes: tuple, batch: int) -> str:
    return _MATMULS[key]._choose(core_shapes, batch)


class NetworkMatmul:
    """``x @ W`` for the matrix ``W`` of a network, by the cheaper of two contraction orders.

    Parameters
    ----------
    network:
        Any :class:`tnmars.Network`; only its structure (spec, sizes, mask sites) is kept.
    n_in:
        How many of the leading open modes are input modes; the rest are output modes, so
        ``W = network.to_tensor().reshape(prod(in_shape), prod(out_shape))``.

    Call it with the current cores (e.g. ``nn.Parameter`` s) and optional masks. Plans are
    cached by :func:`tnmars.contract.make_plan`; the path decision is cached per batch size.

    >>> import torch, tnmars
    >>> net = tnmars.Network.tt_matrix((2, 3), (4, 5), 3, backend="torch", dtype="float32", seed=0)
    >>> mm = NetworkMatmul(net, 2)
    >>> x = torch.randn(7, 6)
    >>> y = mm(x, net.cores)
    >>> bool(torch.allclose(y, x @ net.to_tensor().reshape(6, 20), atol=1e-5))
    True
    """

    def __init__(self, network: Network, n_in: int) -> None:
        out = network.output
        if not 0 < n_in < len(out):
            raise ValueError(f"n_in must split the {len(out)} open modes of {network.spec!r}; got {n_in}")
        self.inputs = network.inputs
        self.output = out
        self.in_letters = out[:n_in]
        self.out_letters = out[n_in:]
        shape = network.shape
        self.in_shape = tuple(shape[:n_in])
        self.out_shape = tuple(shape[n_in:])
        self.in_features = prod(self.in_shape)
        self.out_features = prod(self.out_shape)
        self.sites = {b: network.mask_site(b) for b in network.bonds}
        self.batch_letter = _free_letter(self.inputs)
        self.optimize = network.optimize
        self._choice: dict[tuple, str] = {}
        #: (core shapes, batch or None for the weight) -> Program: one dict lookup per call
        self._programs: dict[tuple, Program] = {}
        #: core shapes -> the two-block cut used without gradients (None: none pays)
        self._cuts: dict[tuple, TwoBlockCut | None] = {}
        #: (parameter key, cut, blocks, batch -> use the blocks) of the last no-grad call
        self._frozen: tuple | None = None
        _register(self)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_frozen"] = None  # derived from the parameters: rebuilt on the first no-grad call
        state.pop("_compile_key", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        _register(self)  # a copy (pickle, deepcopy) is a new object: its own key

    def program(self, core_shapes: tuple[tuple[int, ...], ...], batch: int | None) -> Program:
        """The compiled plan of the weight (``batch=None``) or of ``x`` through the cores (cached)."""
        if is_recording():
            batch = None if batch is None else _static(batch)
            return functools.partial(run, _constant_code(self._compile_key, core_shapes, batch))
        return self._program(core_shapes, batch)

    def _program(self, core_shapes: tuple[tuple[int, ...], ...], batch: int | None) -> Program:
        key = (core_shapes, batch)
        got = self._programs.get(key)
        if got is None:
            plan = self.weight_plan(core_shapes) if batch is None else self.cores_plan(core_shapes, batch)
            if len(self._programs) > 4096:  # ranks in use vary from step to step under MARS
                self._programs.clear()
            got = self._programs[key] = Program(plan, constants=len(core_shapes), flat_output=True)
        return got

    # -- plans --------------------------------------------------------------------------
    def weight_plan(self, core_shapes: tuple[tuple[int, ...], ...]) -> Plan:
        return make_plan(self.inputs, self.output, core_shapes, self.optimize)

    def cores_plan(self, core_shapes: tuple[tuple[int, ...], ...], batch: int) -> Plan:
        z = self.batch_letter
        return make_plan(self.inputs + (z + self.in_letters,), z + self.out_letters,
                         core_shapes + ((batch,) + self.in_shape,), self.optimize)

    def costs(self, core_shapes: tuple[tuple[int, ...], ...], batch: int) -> tuple[float, float]:
        """``(weight_path_cost, cores_path_cost)`` for a batch of ``batch`` rows: FLOPs plus
        memory traffic (:attr:`tnmars.contract.Plan.cost`); the weight path adds its GEMM."""
        gemm = 2 * batch * self.in_features * self.out_features + COPY_FLOPS * batch * self.out_features
        return self.weight_plan(core_shapes).cost + gemm, self.cores_plan(core_shapes, batch).cost

    def choose(self, core_shapes: tuple[tuple[int, ...], ...], batch: int) -> str:
        """``"weight"`` or ``"cores"``: the cheaper path for this batch size (cached). A symbolic
        batch size (``torch.export`` with a dynamic batch dimension, ``torch.compile(dynamic=True)``)
        takes the weight path, which holds for every batch size: choosing by its value
        specialised the exported graph to the example's batch."""
        if isinstance(batch, torch.SymInt):
            return "weight"
        if is_recording():
            return _constant_choice(self._compile_key, core_shapes, _static(batch))
        return self._choose(core_shapes, batch)

    def _choose(self, core_shapes: tuple[tuple[int, ...], ...], batch: int) -> str:
        key = (core_shapes, batch)
        got = self._choice.get(key)
        if got is None:
            if any(n == 0 for s in core_shapes for n in s):
                got = "weight"  # a closed bond: W is exactly zero, nothing to contract through
            else:
                w, c = self.costs(core_shapes, batch)
                got = "cores" if c * WEIGHT_PATH_ADVANTAGE < w else "weight"
            if len(self._choice) > 4096:  # ranks in use vary from step to step under MARS
                self._choice.clear()
            self._choice[key] = got
        return got

    # -- inference without gradients ---------------------------------------------------
    def frozen(self, x: torch.Tensor, key: tuple, cores_fn) -> torch.Tensor | None:
        """``x @ W`` through two cached blocks (:mod:`tnmars.nn.fastpath`), or ``None`` when no
        cut is cheaper than the usual path at this batch size (the caller then runs that).

        Only for calls without gradients: ``key`` identifies the parameters' current values
        (the parameters themselves, their version counters and :func:`~tnmars.nn.kept.generation`) and
        ``cores_fn()`` gives the cores to merge when it changes.
        """
        frozen = getattr(self, "_frozen", None)  # None too in an object pickled before it existed
        if frozen is None or frozen[0] != key:
            cores = cores_fn()
            shapes = tuple(tuple(c.shape) for c in cores)
            if any(0 in s for s in shapes):  # a closed bond: the caller short-circuits to the bias
                cut = None
            else:
                cuts = self.__dict__.setdefault("_cuts", {})
                cut = cuts.get(shapes, False)
                if cut is False:
                    cut = cuts[shapes] = best_cut(self.inputs, self.in_letters, self.out_letters, shapes)
            frozen = self._frozen = (key, shapes, cut, None if cut is None else cut.blocks(cores), {})
        _, shapes, cut, blocks, use_at = frozen
        if cut is None:
            return None
        check_features(x, self.in_features, blocks[0].dtype)
        x2 = x.reshape(-1, self.in_features) if x.ndim != 2 else x
        batch = x2.shape[0]
        use = use_at.get(batch)
        if use is None:
            margin = CUT_ADVANTAGE if batch == 1 else CUT_ADVANTAGE_BATCHED
            use = use_at[batch] = batch > 0 and cut.flops(batch) <= margin * self._path_flops(shapes, batch)
        if not use:
            return None
        y = cut(x2, *blocks)
        return y if x.ndim == 2 else y.reshape(*x.shape[:-1], self.out_features)

    def _path_flops(self, core_shapes: tuple[tuple[int, ...], ...], batch: int) -> int:
        """FLOPs of the path :meth:`choose` takes at ``batch`` rows."""
        if self._choose(core_shapes, batch) == "cores":
            return self.cores_plan(core_shapes, batch).flops
        return self.weight_plan(core_shapes).flops + 2 * batch * self.in_features * self.out_features

    # -- evaluation ---------------------------------------------------------------------
    def weight(self, cores: Sequence[torch.Tensor], masks: Mapping[str, torch.Tensor] | None = None, *,
               owned: bool = False) -> torch.Tensor:
        """The matrix ``W`` of shape ``(in_features, out_features)`` (masks applied). Without
        gradients it may be (a view of) the product the program keeps between calls; ``owned``:
        a copy then, for a caller that may keep or change it (``dense_weight``)."""
        cores = fold_masks(cores, masks, self.sites)
        shapes = tuple(tuple(c.shape) for c in cores)
        w = self.program(shapes, None)(cores).reshape(self.in_features, self.out_features)
        if owned and not torch.is_grad_enabled() and self._keeps(shapes, w):
            w = w.clone()
        return w

    def _keeps(self, shapes: tuple, w: torch.Tensor) -> bool:
        """Whether ``w`` shares memory with a product the weight program of ``shapes`` keeps.

        Never while traced: the program keeps nothing then (see :meth:`Program.__call__`), and
        ``torch.compile(fullgraph=True)`` cannot trace storage pointers."""
        if is_recording():
            return False
        kept = getattr(self._programs.get((shapes, None)), "_kept", None)
        if not kept:
            return False
        ptr = w.untyped_storage().data_ptr()
        return any(v.untyped_storage().data_ptr() == ptr for v in kept[1].values())

    def __call__(self, x: torch.Tensor, cores: Sequence[torch.Tensor],
                 masks: Mapping[str, torch.Tensor] | None = None, mode: str = "auto") -> torch.Tensor:
        """``x @ W`` for ``x`` of shape ``(..., in_features)``."""
        check_features(x, self.in_features, cores[0].dtype if cores else None)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features) if x.ndim != 2 else x
        batch = x2.shape[0]
        if masks:
            cores = fold_masks(cores, masks, self.sites)
        shapes = tuple(tuple(c.shape) for c in cores)
        if mode == "auto":
            mode = self.choose(shapes, batch)
        if mode == "weight" or batch == 0:
            y = x2 @ self.program(shapes, None)(cores).reshape(self.in_features, self.out_features)
        else:
            program = self.program(shapes, batch)
            data = x2 if getattr(program, "reshapes_data", False) else x2.reshape((batch,) + self.in_shape)
            y = program(list(cores) + [data]).reshape(batch, self.out_features)
        return y if x.ndim == 2 else y.reshape(*lead, self.out_features)


def tt_matmul(x: torch.Tensor, cores: Sequence[torch.Tensor], masks: Sequence[torch.Tensor | None] | None = None,
              mode: str = "auto") -> torch.Tensor:
    """``x @ W`` for a TT-matrix ``W`` given by cores ``(r_{k-1}, i_k, o_k, r_k)`` (boundary ranks 1).

    ``masks`` holds the ``d - 1`` internal-bond masks (or ``None`` entries). This is the
    reusable "TT-matrix (+ masks) applied to a batch" of :mod:`tnmars.nn`; the structure is
    built once per core-shape signature and cached.

    >>> import torch, tnmars
    >>> net = tnmars.Network.tt_matrix((2, 2), (3, 3), 2, backend="torch", dtype="float32", seed=1)
    >>> cores = [c.unsqueeze(0) if k == 0 else c.unsqueeze(-1) for k, c in enumerate(net.cores)]
    >>> [tuple(c.shape) for c in cores]
    [(1, 2, 3, 2), (2, 2, 3, 1)]
    >>> tt_matmul(torch.ones(5, 4), cores).shape
    torch.Size([5, 9])
    """
    cores = list(cores)
    for k, c in enumerate(cores):
        if c.ndim != 4:
            raise ValueError(f"TT-matrix core {k} must be 4-D (r_prev, in, out, r_next); got shape {tuple(c.shape)}")
    if cores[0].shape[0] != 1 or cores[-1].shape[-1] != 1:
        raise ValueError("the boundary ranks of a TT-matrix must be 1")
    mm = _tt_struct(tuple(tuple(c.shape) for c in cores))
    squeezed = [c[0] if k == 0 else c for k, c in enumerate(cores)]
    squeezed[-1] = squeezed[-1][..., 0]
    mask_dict = None
    if masks is not None:
        masks = list(masks)
        if len(masks) != len(cores) - 1:
            raise ValueError(f"{len(masks)} masks given for {len(cores) - 1} internal TT bonds")
        mask_dict = {b: m for b, m in zip(mm.bond_order, masks) if m is not None}
    return mm(x, squeezed, mask_dict, mode)


_TT_CACHE: dict[tuple, NetworkMatmul] = {}


def _tt_struct(shapes: tuple[tuple[int, ...], ...]) -> NetworkMatmul:
    got = _TT_CACHE.get(shapes)
    if got is None:
        in_shape = tuple(s[1] for s in shapes)
        out_shape = tuple(s[2] for s in shapes)
        ranks = tuple(s[3] for s in shapes[:-1])
        for k in range(len(shapes) - 1):
            if shapes[k][3] != shapes[k + 1][0]:
                raise ValueError(f"TT-matrix cores {k} and {k + 1} disagree on their shared rank: {shapes[k]} vs {shapes[k + 1]}")
        dims = _tt_dims(in_shape, out_shape, ranks)
        net = Network(dims["spec"], dims["sizes"], backend="torch", dtype="float32", seed=0)
        got = NetworkMatmul(net, len(in_shape))
        got.bond_order = tuple(net.bonds)
        _TT_CACHE[shapes] = got
    return got


def _tt_dims(in_shape, out_shape, ranks) -> dict[str, Any]:
    d = len(in_shape)
    a = "abcdefghijklmnopqrstuvwxyz"
    bonds = "ABCDEFGHIJKLMNOPQRSTUVWXY"
    terms = []
    sizes: dict[str, int] = {}
    for k in range(d):
        left = bonds[k - 1] if k > 0 else ""
        right = bonds[k] if k < d - 1 else ""
        terms.append(left + a[k] + a[d + k] + right)
        sizes[a[k]], sizes[a[d + k]] = in_shape[k], out_shape[k]
        if right:
            sizes[right] = max(int(ranks[k]), 1)
    return {"spec": ",".join(terms) + "->" + a[:d] + a[d:2 * d], "sizes": sizes}


#: the converter that builds each layer from its dense counterpart (the ``.weight`` setter's advice)
_FROM = {"TensorizedConv2d": "conv", "Tucker2Conv2d": "conv", "TensorizedEmbedding": "embedding"}


class TensorizedLayer(nn.Module):
    """Base class: a layer whose weight is a :class:`tnmars.Network` with MARS bond masks.

    Subclasses call :meth:`_setup` with a network (torch cores) and implement ``forward``
    and :attr:`dense_size`. Attributes:

    * ``cores``: ``nn.ParameterList`` of the network's cores (the Gaussian prior's target);
    * ``masks``: a :class:`BondMasks` (``None`` with ``mars=False``);
    * ``mode``: ``"auto"`` (cheaper path per batch shape), ``"weight"`` or ``"cores"``;
    * ``warmup``: when True the masks are not applied (the paper's optional warm-up), and their
      logits are frozen (:func:`~tnmars.nn.set_warmup` can leave them training);
    * ``skip_closed``: slice the indices whose mask is exactly 0 out of the cores before each
      forward (:meth:`BondMasks.fold`): the same function and gradients at the ranks in use,
      so a MARS layer trains and infers at about the cost of its current ranks rather than
      its maximal ones. ``None`` (default) means on for CPU tensors and off elsewhere: it reads
      the mask values on the host, a synchronisation per layer and step on a GPU. Measured on an
      H200 (``benchmarks/results/nn_skip_closed_cuda.md``), turning it on there cost 15-22% more
      per step than the device draws on a compute-bound model and saved a third of a small,
      launch-bound model's step: try ``True`` for small models on a GPU.
    """

    spec: str
    dims: dict[str, int]
    skip_closed: bool | None = None
    warmup = WARMUP

    def train(self, mode: bool = True) -> TensorizedLayer:
        return train_masked(self, mode, super().train)  # type: ignore[return-value]

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "weight":  # (assigning a Parameter raised torch's "KeyError: attribute 'weight' already exists")
            kind = type(self).__name__
            raise AttributeError(
                f"{kind}.weight cannot be assigned: it is computed from the cores at each access (not a parameter, "
                "not in the state_dict), so a value set there, or written into it in place, would be lost. To set "
                f"the weight, decompose it: {kind}.from_{_FROM.get(kind, 'linear')}(a dense layer holding it, "
                "rank='full' for an exact copy); to change the layer, change its cores (layer.cores, in place under "
                "torch.no_grad())")
        super().__setattr__(name, value)

    def _setup(self, network: Network, *, mars: bool | str, pi: float, alpha: float,
               temperature: float, min_rank: int, mode: str) -> None:
        self.mode = check_mode(mode)
        self.warmup = False
        enabled, pi, alpha = resolve_preset(mars, pi, alpha)
        self.cores = nn.ParameterList([nn.Parameter(c.detach().clone()) for c in network.cores])
        # (meta tensors, under ``with torch.device("meta")``, have no values to check)
        bad = [k for k, c in enumerate(self.cores) if not c.is_meta and not bool(torch.isfinite(c.detach()).all())]
        if bad:  # a layer over them would output NaN from its first call on
            raise ValueError(f"{type(self).__name__}: core(s) {bad} of the network {network.spec!r} have NaN or "
                             "infinite entries")
        self._set_structure(network)
        bonds = network.bonds
        if enabled and bonds:
            self.masks: BondMasks | None = BondMasks(bonds, pi=pi, alpha=alpha, temperature=temperature,
                                                     min_rank=min_rank, device=self.cores[0].device)
            self.masks.owner = f"{type(self).__name__} {self.spec!r}"
            if self.cores[0].dtype == torch.float64:  # as layer.double() would make them
                self.masks.double()
        else:
            self.masks = None
        if self.num_params > self.dense_size:
            warn_user(f"{type(self).__name__} at ranks {self.max_ranks} has {self.num_params:,} parameters, more than "
                      f"the dense layer's {self.dense_size:,}: lower the rank or choose other shapes (or keep the "
                      "dense layer)")

    def _set_structure(self, network: Network) -> None:
        """Record the spec and sizes (structure only; arrays stay in ``self.cores``)."""
        self.spec = network.spec
        self.dims = network.dims
        self.bond_names = tuple(network.bonds)
        self.sites = {b: network.mask_site(b) for b in network.bonds}
        self.bond_axes = {b: tuple((k, term.index(b)) for k, term in enumerate(network.inputs) if b in term)
                          for b in network.bonds}

    def reset_parameters(self) -> None:
        """Draw the cores, the bias and the mask logits afresh, as the constructor draws them, at
        the layer's current sizes (after :meth:`compressed`, the selected ranks).

        For re-initialising a model between runs (``for m in model.modules(): m.reset_parameters()``)
        and for deferred initialisation: built under ``torch.device("meta")``, then ``to_empty``
        and every module's ``reset_parameters()``, as FSDP does (refused before, the layer kept
        ``to_empty``'s uninitialised memory, cores of 1e14, unless it raised). A layer made from a
        dense one (``from_linear``, ``from_conv``) or on a user's :class:`~tnmars.Network` gets the
        constructor's random draw at the same scale, not its decomposition: convert the dense
        layer again for that. Seeded by ``torch.manual_seed``, as ``nn.Linear``'s.

        >>> import torch
        >>> from tnmars.nn import TensorizedLinear
        >>> layer = TensorizedLinear(16, 8, rank=2)
        >>> with torch.no_grad():
        ...     _ = layer.cores[0].fill_(0.0)
        >>> layer.reset_parameters()
        >>> bool(layer.cores[0].abs().sum() > 0)
        True
        """
        cores, bias = self._initial_values()
        with torch.no_grad():
            for core, value in zip(core_list(self.cores), cores):
                core.copy_(value)
            own = getattr(self, "bias", None)  # (an embedding has none)
            if own is not None and bias is not None:
                own.copy_(bias)
            if self.masks is not None:
                self.masks.reset_parameters()

    def _initial_values(self) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Fresh cores and bias as the constructor draws them (for :meth:`reset_parameters`)."""
        raise NotImplementedError(f"{type(self).__name__} does not say how its constructor initialises it")

    def _gaussian_cores(self, scale: float) -> list[torch.Tensor]:
        """I.i.d. Gaussian cores at the current sizes whose contraction has entries of standard
        deviation ``scale``, as :class:`~tnmars.Network` draws them (``scale / sqrt(bond
        volume)``, shared out over the cores), at exactly that scale (:func:`at_expected_scale`); a
        bond of size 0 counts as 1 (its cores are empty)."""
        cores = core_list(self.cores)
        std = gaussian_core_std(scale, [self.dims[b] for b in self.bond_names], len(cores))
        return at_expected_scale([torch.randn(c.shape, dtype=c.dtype, device=c.device) * std for c in cores],
                                 self.spec, scale)

    # -- MARS ---------------------------------------------------------------------------
    @property
    def mars(self) -> bool:
        return self.masks is not None

    def current_masks(self) -> dict[str, torch.Tensor] | None:
        """Masks for this forward: a hard-concrete sample (train), MAP 0/1 (eval), or None."""
        if self.masks is None or self.warmup:
            return None
        return self.masks()

    def masked_cores(self, masks: Mapping[str, torch.Tensor] | None = None) -> list[torch.Tensor]:
        """The cores with the given masks folded in (one multiplication per bond)."""
        return fold_masks(list(self.cores), masks, self.sites)

    def mars_cores(self) -> list[torch.Tensor]:
        """The cores this forward uses: with a fresh hard-concrete sample folded in (train),
        with the MAP masks (eval), or as they are (no masks, or warm-up); see
        :meth:`BondMasks.fold`. With :attr:`skip_closed` on, indices whose mask is exactly 0
        are sliced out first (same outputs and gradients, smaller contractions)."""
        if torch.jit.is_tracing():
            raise RuntimeError(JIT_TRACE_MESSAGE)
        cores = core_list(self.cores)
        masks = self.masks
        if masks is None or self.warmup:
            return cores
        skip = self.skip_closed
        if skip is None:
            skip = cores[0].is_cpu  # (not .device.type: a device object built every step)
        if skip and _is_compiling():  # data-dependent shapes (jit.trace was refused above)
            skip = False
        return masks.fold(cores, self.sites, self.bond_axes if skip else None)

    def inference_key(self, x: torch.Tensor) -> tuple | None:
        """A key of everything this forward's cores depend on, when they can be kept between
        calls: no gradient recorded, not tracing or compiling, not autocasting, ``mode="auto"``
        and no mask draw (eval mode, warm-up or no masks). ``None`` otherwise."""
        if torch.is_grad_enabled() or self.mode != "auto" or is_recording() or not isinstance(x, torch.Tensor):
            return None
        masks = self.masks
        if masks is not None and masks.training and not self.warmup:
            return None
        if _autocast(x):
            return None
        key: list[Any] = [generation()]  # fused optimizer steps move no _version counter (:mod:`.kept`)
        try:
            cores = core_list(self.cores)
            key += [(Same(p), p._version, p.data_ptr(), p.dtype, p.shape) for p in cores]
            if masks is not None:
                lg = masks.logits
                key.append((Same(lg), lg._version, lg.data_ptr(), masks.min_rank, self.warmup, self.skip_closed))
                cores.append(lg)
        except RuntimeError:  # parameters made under torch.inference_mode have no version counter: no key
            return None
        key.append(Contents(cores))  # (writes through .data move no counter: their bytes, see :mod:`.kept`)
        return tuple(key)

    def log_prior(self) -> torch.Tensor:
        """Bernoulli prior of the masks plus the Gaussian N(0, 100) prior of the cores (to maximise).

        Zero for a layer without masks: plain tensorized layers are not MARS-regularised.
        """
        if self.masks is None:
            return self.cores[0].new_zeros(())
        return self.masks.log_prior(list(self.cores))

    # -- ranks and sizes ----------------------------------------------------------------
    @property
    def max_ranks(self) -> dict[str, int]:
        """Bond -> current (maximal) size."""
        return {b: self.dims[b] for b in self.bond_names}

    def selected_ranks(self) -> dict[str, int]:
        """Bond -> rank kept by the MAP masks (the current size without masks)."""
        if self.masks is None:
            return self.max_ranks
        return self.masks.ranks()

    @property
    def ranks(self) -> dict[str, int]:
        """Bond -> the rank the layer computes with: the MAP masks' (what eval mode uses and
        ``compress`` keeps), the bond's size without masks; :meth:`selected_ranks` as an attribute,
        next to :attr:`max_ranks`."""
        return self.selected_ranks()

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight in the layout of the torch layer this one stands for (``nn.Linear``'s
        ``(out, in)``, ``nn.Conv2d``'s ``(out, in, kh, kw)``, ``nn.Embedding``'s table): the
        subclass's ``dense_weight()``, built from the cores at each access, differentiable, with
        the masks a forward would use (MAP in eval mode, a fresh sample in training). For code
        that reads ``layer.weight``, such as ``nn.TransformerEncoderLayer``'s inference fast
        path; it is not a parameter (not in the ``state_dict``; assigning it raises, and a value
        written into it in place, ``layer.weight.data.mul_(2)``, changes a copy: change the cores)."""
        return self.dense_weight()

    @property
    def network(self) -> Network:
        """A :class:`tnmars.Network` over the current (unmasked) cores, for inspection."""
        return Network.from_cores(self.spec, [c.detach() for c in self.cores])

    @property
    def num_params(self) -> int:
        """Parameters of the decomposition (cores only: no bias, no logits)."""
        return self.num_params_at(self.max_ranks)

    def num_params_at(self, ranks: Mapping[str, int]) -> int:
        """Core parameters if the bonds had ``ranks`` (the paper's dof)."""
        sizes = dict(self.dims)
        sizes.update(ranks)
        return sum(prod(sizes[c] for c in term) for term in self.spec.split("->")[0].split(","))

    @property
    def dense_size(self) -> int:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    # -- compression --------------------------------------------------------------------
    def compressed(self) -> TensorizedLayer:
        """A copy with every core physically sliced to the MAP-kept indices and no masks.

        In eval mode it computes exactly what this layer computes (up to float rounding),
        except in warm-up, where this layer applies no masks and the copy keeps only the
        selected indices (:func:`tnmars.nn.compress` warns then).
        """
        if self.masks is None:
            return copy.deepcopy(self)
        return self._sliced({b: k.cpu().numpy() for b, k in self.masks.keep().items()})

    def at_ranks(self, ranks: Mapping[str, int]) -> TensorizedLayer:
        """A mask-free copy whose bonds have the given sizes (the first ``ranks[b]`` indices of
        each bond are kept; bonds not named keep their size).

        This is the skeleton a compressed layer's ``state_dict`` loads into
        (:func:`tnmars.nn.load_compressed`); the values are then overwritten.
        """
        return self._sliced(first_indices({b: self.dims[b] for b in self.bond_names}, ranks, "layer"))

    def _sliced(self, keep: Mapping[str, Any]) -> TensorizedLayer:
        new = copy.deepcopy(self)
        net, new.cores = pruned_parameters(self.spec, self.cores, keep)
        new.masks = None
        new.warmup = False
        new._set_structure(net)
        new._after_compress(net)
        return new

    def _after_compress(self, network: Network) -> None:
        """Hook: rebuild cached structure objects for the pruned network."""

    def extra_mars_repr(self) -> str:
        ranks = self.max_ranks
        return f"ranks={ranks}, mars={self.mars}, mode={self.mode!r}"


def at_expected_scale(cores: Sequence[torch.Tensor], spec: str, std: float) -> list[torch.Tensor]:
    """``cores``, each times one common factor, so that their contraction's entries have a root
    mean square of exactly ``std``, the scale their random draw has in expectation only.

    A product of random factors has a random overall scale, and a small factor decides it: the
    one entry of a Tucker-2 convolution's input factor on a 1-channel image set the whole
    kernel's scale, from 0.009 to 2.6 times the expected one over 100 seeds (a rank-1 head
    ``LowRankLinear(64, 1)`` alike). A first layer started 75 times too small left the
    BatchNorm after it with running statistics far from the batches', and the model read 50% in
    ``eval()`` against 87% in training, silently (outside probe, 2026-12-04). The norm comes from
    the network contracted with itself (no dense weight is formed). Meta tensors (deferred
    initialisation: ``reset_parameters`` draws again) and a network whose norm is 0 are returned
    as they are."""
    cores = list(cores)
    if not cores or std <= 0.0 or any(c.is_meta for c in cores) or any(c.numel() == 0 for c in cores):
        return cores
    parsed = parse_spec(spec)
    inner = [c for c in dict.fromkeys("".join(parsed.inputs)) if c not in parsed.output]
    twin = {c: chr(0x4E00 + k) for k, c in enumerate(inner)}  # (non-ASCII: never one of the spec's own)
    doubled = ",".join([*parsed.inputs, *("".join(twin.get(c, c) for c in term) for term in parsed.inputs)]) + "->"
    with torch.no_grad():
        wide = [c.detach().to(torch.float64) for c in cores]
        squared = float(contract(doubled, *wide, *wide))
    sizes: dict[str, int] = {}
    for core, term in zip(cores, parsed.inputs):
        for axis, index in enumerate(term):
            sizes.setdefault(index, int(core.shape[axis]))
    entries = prod(sizes[index] for index in parsed.output)
    if not squared > 0.0 or not math.isfinite(squared):
        return cores
    factor = (std * math.sqrt(entries / squared)) ** (1.0 / len(cores))
    with torch.no_grad():
        return [c * factor for c in cores]


def glorot_std(fan_in: int, fan_out: int) -> float:
    """Glorot-normal standard deviation ``sqrt(2 / (fan_in + fan_out))`` of the dense weight."""
    return math.sqrt(2.0 / (fan_in + fan_out))
