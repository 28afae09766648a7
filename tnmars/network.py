"""The tensor network: an einsum graph plus one array (core) per term.

>>> import tnmars
>>> net = tnmars.Network("ij,jkl,lm", shape=(4, 5, 6), ranks=3, seed=0)
>>> net.spec, net.bonds, net.shape
('ij,jkl,lm->ikm', {'j': 3, 'l': 3}, (4, 5, 6))
>>> net.to_tensor().shape
(4, 5, 6)
>>> net.prune({"j": [0, 2]}).ranks
(2, 3)
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from math import prod
from typing import Any

import numpy as np

from ._checks import floating_dtype, integer, positive_finite, seed_generator, warn
from .backends import Backend, get_backend, infer_backend
from .contract import Plan, execute, make_plan
from .spec import ParsedSpec, parse_spec

_OPEN = "abcdefghijklmnopqrstuvwxyz"
_BOND = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

Masks = Mapping[str, Any] | Sequence[Any] | None


# ------------------------------------------------------------------ specs of the built-in formats
# Open modes are lowercase letters, bonds uppercase. The constructors below and the tensorly
# interop build their graphs from these functions only, so the two can never disagree.
def cp_spec(order: int) -> str:
    """``'aA,bA,cA->abc'`` for order 3: one factor per mode joined by the hyperedge ``A``."""
    return ",".join(_OPEN[k] + "A" for k in range(order)) + "->" + _OPEN[:order]


def tucker_spec(order: int) -> str:
    """``'ABC,aA,bB,cC->abc'`` for order 3: the core first, then one factor per mode."""
    bonds = _BOND[:order]
    return bonds + "," + ",".join(_OPEN[k] + bonds[k] for k in range(order)) + "->" + _OPEN[:order]


def tt_spec(num_cores: int, width: int = 1) -> str:
    """A chain of ``num_cores`` cores with ``width`` open modes each (1: TT, 2: TT-matrix);
    the output lists every core's first mode, then every core's second mode."""
    d = num_cores
    letters = [[_OPEN[j * d + k] for j in range(width)] for k in range(d)]
    terms = []
    for k in range(d):
        left = _BOND[k - 1] if k > 0 else ""
        right = _BOND[k] if k < d - 1 else ""
        terms.append(left + "".join(letters[k]) + right)
    return ",".join(terms) + "->" + "".join(letters[k][j] for j in range(width) for k in range(d))


def tr_spec(order: int) -> str:
    """``'CaA,AbB,BcC->abc'`` for order 3: bond ``k`` joins core ``k`` to core ``k+1``."""
    terms = [_BOND[(k - 1) % order] + _OPEN[k] + _BOND[k] for k in range(order)]
    return ",".join(terms) + "->" + _OPEN[:order]


def _as_int_tuple(values: Any, name: str) -> tuple[int, ...]:
    """One integer or a sequence of them, as a tuple of Python ints (bools, floats such as
    ``2.0`` or ``inf``, and strings are a ``TypeError`` naming ``name``)."""
    if isinstance(values, (str, bytes, Mapping)) or values is None:
        raise TypeError(f"{name} must be an int or a sequence of ints; got {values!r}")
    if hasattr(values, "__index__") or isinstance(values, (bool, np.bool_)):
        return (integer(values, name),)
    try:
        items = list(values)
    except TypeError:  # not a sequence: say why it is not an integer either
        return (integer(values, name),)
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not hasattr(v, "__index__"):
            raise TypeError(f"{name} must hold integers; got {v!r} ({type(v).__name__}) in {values!r}")
    return tuple(int(v.__index__()) for v in items)


def _check_positive(values: Sequence[int], name: str) -> None:
    for v in values:
        if v <= 0:
            raise ValueError(f"{name} must be positive; got {v} in {tuple(values)}")


class Network:
    """A tensor network declared as an einsum graph.

    Parameters
    ----------
    spec:
        One term per core, e.g. ``"ij,jkl,lm"`` or with an explicit output ``"ij,jkl,lm->mki"``.
    dims:
        Size of each index, ``{"i": 4, "j": 3, ...}``. May be partial when ``shape`` /
        ``ranks`` / ``cores`` supply the rest.
    shape:
        Sizes of the open modes, in output order.
    ranks:
        An int for every bond, or ``{bond_index: size}``.
    cores:
        Arrays to use as cores (otherwise they are drawn at random, see below).
    backend, dtype, device:
        Where new random cores live (``"numpy"``, ``"torch"`` or ``"cupy"``); ``dtype`` is a
        floating type, named or given as a NumPy or torch dtype. With ``cores`` given, the
        backend is read from them, and cores may hold any numbers (bool, int, float, complex).
    seed, scale:
        Random initialisation (``seed``: an int or a NumPy ``Generator``; ``scale``: a finite
        number > 0): every core is i.i.d. ``N(0, s^2)`` with
        ``s = (scale / sqrt(prod of all bond sizes)) ** (1 / number of cores)``. Entries of
        the contracted tensor then have standard deviation exactly ``scale`` whatever the
        topology and ranks (the terms of the sum over bond indices are uncorrelated).
    optimize:
        opt_einsum path optimizer used by every plan of this network.

    Notes
    -----
    A *bond* is an index carried by two or more cores and absent from the output (three or
    more: a hyperedge such as CP's rank). ``ranks`` lists the bond sizes in the order of
    :attr:`bonds`. Bonds of size 0 are legal (a pruned network whose mask closed); the
    network is then identically zero. Sizes are integers (bools, floats and strings are a
    ``TypeError``). Bonds sized by ``ranks=`` are clipped, with a warning, to what they can
    use: no more than the product of the other indices of a core they join, nor than the
    number of entries of the whole tensor (larger bonds cannot represent anything more).
    """

    def __init__(
        self,
        spec: str,
        dims: Mapping[str, int] | None = None,
        *,
        shape: Sequence[int] | None = None,
        ranks: int | Mapping[str, int] | None = None,
        cores: Sequence[Any] | None = None,
        backend: str | None = None,
        dtype: str = "float64",
        device: str | None = None,
        seed: int | np.random.Generator | None = None,
        scale: float = 1.0,
        optimize: str = "auto",
    ) -> None:
        parsed = parse_spec(spec)
        self._parsed: ParsedSpec = parsed
        self.optimize = optimize
        sizes: dict[str, int] = {}

        def put(index: str, size: int, source: str) -> None:
            if index in sizes and sizes[index] != size:
                raise ValueError(f"index {index!r} has inconsistent sizes: {sizes[index]} and {size} ({source})")
            sizes[index] = size

        if dims is not None:
            if not isinstance(dims, Mapping):
                raise TypeError("dims must be a mapping such as {'i': 4, 'j': 3}")
            unknown = sorted(set(dims) - set("".join(parsed.inputs)))
            if unknown:
                raise ValueError(f"dims names index {unknown[0]!r}, which is not in spec {parsed.spec!r}")
            for index, size in dims.items():
                (size,) = _as_int_tuple(size, f"dims[{index!r}]")
                _check_positive([size], f"dims[{index!r}]")
                put(index, size, "dims")
        if shape is not None:
            shape = _as_int_tuple(shape, "shape")
            if len(shape) != len(parsed.output):
                raise ValueError(
                    f"shape has {len(shape)} entries but spec {parsed.spec!r} has {len(parsed.output)} open modes"
                )
            _check_positive(shape, "shape")
            for index, size in zip(parsed.output, shape):
                put(index, size, "shape")
        from_ranks: list[str] = []  # bonds sized by ranks= (clipped below to what they can use)
        if ranks is not None:
            if isinstance(ranks, Mapping):
                for index, size in ranks.items():
                    if index not in parsed.bonds:
                        raise ValueError(f"ranks names {index!r}, which is not a bond of {parsed.spec!r}")
                    size = integer(size, f"ranks[{index!r}]")
                    _check_positive([size], f"ranks[{index!r}]")
                    put(index, size, "ranks")
                    from_ranks.append(index)
            else:
                size = integer(ranks, "ranks")
                _check_positive([size], "ranks")
                for index in parsed.bonds:
                    put(index, size, "ranks")
                    from_ranks.append(index)
            from_ranks = [b for b in from_ranks if dims is None or b not in dims]

        if cores is not None:
            cores = list(cores)
            if len(cores) != len(parsed.inputs):
                raise ValueError(
                    f"spec {parsed.spec!r} has {len(parsed.inputs)} cores but {len(cores)} arrays were given"
                )
            be = infer_backend(cores) if backend is None else get_backend(backend)
            for pos, (term, core) in enumerate(zip(parsed.inputs, cores)):
                if not be.is_array(core):
                    raise TypeError(f"core {pos} is a {type(core).__name__}, not a {be.name} array")
                _check_core_dtype(be.dtype_name(core), pos)
                if len(core.shape) != len(term):
                    raise ValueError(
                        f"core {pos} has shape {tuple(core.shape)} but its term {term!r} has {len(term)} indices"
                    )
                for index, n in zip(term, core.shape):
                    n = int(n)
                    if index in sizes and sizes[index] != n:
                        raise ValueError(
                            f"core {pos} has size {n} along index {index!r} but {sizes[index]} was expected "
                            f"(shape {tuple(core.shape)} for term {term!r})"
                        )
                    if n < (0 if index in parsed.bonds else 1):
                        raise ValueError(f"core {pos} has an empty open mode {index!r}")
                    sizes[index] = n
            dtypes = {be.dtype_name(c) for c in cores}
            devices = {be.device_of(c) for c in cores}
            if len(dtypes) > 1:
                raise TypeError(f"cores have different dtypes {sorted(dtypes)}; convert them to one")
            if len(devices) > 1:
                raise ValueError(f"cores live on different devices {sorted(devices)}; move them to one")
            self._backend = be
            self._cores = cores
            self._sizes = sizes
            return

        missing = [c for c in dict.fromkeys("".join(parsed.inputs)) if c not in sizes]
        if missing:
            raise ValueError(
                f"no size for index {', '.join(repr(m) for m in missing)} of {parsed.spec!r}: "
                "give dims=, shape= (open modes) and ranks= (bonds)"
            )
        be = get_backend(backend or "numpy")
        be.check_device(device)
        self._backend = be
        self._sizes = _clip_ranks(parsed, sizes, from_ranks)
        self._cores = self._random_cores(be, dtype, device, seed, scale)

    # ---------------------------------------------------------------- construction helpers
    def _random_cores(self, be: Backend, dtype: str, device: str | None, seed: Any, scale: float):
        scale = positive_finite(scale, "scale")
        dtype = floating_dtype(dtype if dtype is not None else "float64")
        rng = seed_generator(seed)
        _check_memory(sum(prod(self._sizes[c] for c in term) for term in self._parsed.inputs), self._parsed.spec)
        bond_volume = prod(self._sizes[b] for b in self._parsed.bonds)
        std = (scale / np.sqrt(bond_volume)) ** (1.0 / len(self._parsed.inputs))
        cores = []
        for term in self._parsed.inputs:
            arr = rng.standard_normal(tuple(self._sizes[c] for c in term)) * std
            cores.append(be.asarray(arr, dtype=dtype, device=device))
        return cores

    @classmethod
    def from_cores(cls, spec: str, cores: Sequence[Any], *, optimize: str = "auto") -> Network:
        """A network over existing arrays (NumPy, CuPy or torch); sizes are read from them."""
        return cls(spec, cores=cores, optimize=optimize)

    def with_cores(self, cores: Sequence[Any]) -> Network:
        """The same graph over new cores (checked against the spec)."""
        return type(self)(self.spec, cores=cores, optimize=self.optimize)

    # ------------------------------------------------------------------------ constructors
    @classmethod
    def cp(cls, shape: Sequence[int], rank: int, **kwargs: Any) -> Network:
        """CP / CANDECOMP-PARAFAC: factors ``(n_k, R)`` joined by one hyperedge of size ``R``.

        >>> Network.cp((3, 4, 5), 2).spec
        'aA,bA,cA->abc'
        """
        shape = _as_int_tuple(shape, "shape")
        _check_ndim(shape, 26)
        _check_positive(shape, "shape")
        rank = integer(rank, "rank")
        _check_positive([rank], "rank")
        if len(shape) < 2:
            raise ValueError("a CP network needs at least 2 modes")
        most = prod(shape) // max(shape)  # every tensor of this shape has CP rank <= most
        if rank > most:
            warn(f"CP rank {rank} clipped to the feasible {most}: every tensor of shape {shape} has CP rank <= {most}")
            rank = most
        return cls(cp_spec(len(shape)), shape=shape, ranks=rank, **kwargs)

    @classmethod
    def tucker(cls, shape: Sequence[int], ranks: int | Sequence[int], **kwargs: Any) -> Network:
        """Tucker: a core ``(R_1, ..., R_d)`` and factors ``(n_k, R_k)``.

        Ranks above the mode size (or above the product of the other ranks) are clipped
        with a warning, since they cannot add expressive power.

        >>> Network.tucker((3, 4, 5), 2).spec
        'ABC,aA,bB,cC->abc'
        """
        shape = _as_int_tuple(shape, "shape")
        _check_ndim(shape, 26)
        _check_positive(shape, "shape")
        d = len(shape)
        ranks = _per_bond(ranks, d, "ranks")
        clipped = [min(r, n) for r, n in zip(ranks, shape)]
        for k in range(d):
            others = prod(clipped[:k] + clipped[k + 1 :]) if d > 1 else clipped[k]
            clipped[k] = min(clipped[k], others)
        if tuple(clipped) != tuple(ranks):
            warn(f"Tucker ranks {tuple(ranks)} clipped to the feasible {tuple(clipped)}")
        return cls(tucker_spec(d), shape=shape, ranks=dict(zip(_BOND, clipped)), **kwargs)

    @classmethod
    def tt(cls, shape: Sequence[int], ranks: int | Sequence[int], **kwargs: Any) -> Network:
        """Tensor train (MPS): cores ``(n_1, r_1), (r_1, n_2, r_2), ..., (r_{d-1}, n_d)``.

        ``ranks`` is an int or the ``d - 1`` internal ranks (a list of ``d + 1`` with 1 at
        both ends is accepted too). Ranks above ``min(prod n_<=k, prod n_>k)`` are clipped
        with a warning.

        >>> Network.tt((4, 5, 6), 3).spec
        'aA,AbB,Bc->abc'
        """
        shape = _as_int_tuple(shape, "shape")
        return cls._chain(shape, [(n,) for n in shape], ranks, **kwargs)

    @classmethod
    def tt_matrix(
        cls, in_shape: Sequence[int], out_shape: Sequence[int], ranks: int | Sequence[int], **kwargs: Any
    ) -> Network:
        """TT-matrix (MPO): cores ``(r_{k-1}, i_k, o_k, r_k)``; open modes are all input modes,
        then all output modes, so ``to_tensor().reshape(prod(in_shape), prod(out_shape))`` is
        the matrix ``W`` of ``y = x @ W``.

        >>> Network.tt_matrix((2, 3), (4, 5), 3).spec
        'acA,Abd->abcd'
        """
        in_shape = _as_int_tuple(in_shape, "in_shape")
        out_shape = _as_int_tuple(out_shape, "out_shape")
        if len(in_shape) != len(out_shape):
            raise ValueError(
                f"in_shape {in_shape} and out_shape {out_shape} must have the same number of factors"
            )
        return cls._chain(in_shape + out_shape, list(zip(in_shape, out_shape)), ranks, **kwargs)

    @classmethod
    def _chain(cls, shape, groups, ranks, **kwargs) -> Network:
        _check_ndim(shape, 26)
        _check_positive(shape, "shape")
        d = len(groups)
        if d == 0:
            raise ValueError("a tensor train needs at least one core")
        ranks = _per_bond(ranks, d - 1, "ranks", boundary=True) if d > 1 else ()
        sizes = [prod(g) for g in groups]
        clipped = tuple(
            min(r, prod(sizes[: k + 1]), prod(sizes[k + 1 :])) for k, r in enumerate(ranks)
        )
        if clipped != tuple(ranks):
            warn(f"TT ranks {tuple(ranks)} clipped to the feasible {clipped}")
        spec = tt_spec(d, width=len(groups[0]))
        return cls(spec, shape=shape, ranks=dict(zip(_BOND, clipped)), **kwargs)

    @classmethod
    def tr(cls, shape: Sequence[int], ranks: int | Sequence[int], **kwargs: Any) -> Network:
        """Tensor ring: cores ``(r_{k-1}, n_k, r_k)`` with ``r_0 = r_d`` closing the loop.

        ``ranks`` is an int or ``d`` values, ``ranks[k]`` joining core ``k`` to core ``k+1``.

        >>> Network.tr((4, 5, 6), 2).spec
        'CaA,AbB,BcC->abc'
        """
        shape = _as_int_tuple(shape, "shape")
        _check_ndim(shape, 26)
        _check_positive(shape, "shape")
        d = len(shape)
        if d < 2:
            raise ValueError("a tensor ring needs at least 2 cores")
        ranks = _per_bond(ranks, d, "ranks")
        return cls(tr_spec(d), shape=shape, ranks=dict(zip(_BOND, ranks)), **kwargs)

    # ------------------------------------------------------------------------ attributes
    @property
    def spec(self) -> str:
        """The normalised spec, always with an explicit output."""
        return self._parsed.spec

    @property
    def inputs(self) -> tuple[str, ...]:
        return self._parsed.inputs

    @property
    def output(self) -> str:
        return self._parsed.output

    @property
    def dims(self) -> dict[str, int]:
        """Size of every index."""
        return dict(self._sizes)

    @property
    def bonds(self) -> dict[str, int]:
        """Bond index -> size, in order of first appearance."""
        return {b: self._sizes[b] for b in self._parsed.bonds}

    @property
    def ranks(self) -> tuple[int, ...]:
        """Bond sizes, in the order of :attr:`bonds`."""
        return tuple(self._sizes[b] for b in self._parsed.bonds)

    @property
    def shape(self) -> tuple[int, ...]:
        """Sizes of the open modes, in output order."""
        return tuple(self._sizes[c] for c in self._parsed.output)

    @property
    def cores(self) -> list[Any]:
        return list(self._cores)

    @property
    def num_cores(self) -> int:
        return len(self._cores)

    @property
    def num_params(self) -> int:
        return sum(prod(self._sizes[c] for c in term) for term in self._parsed.inputs)

    def num_params_at(self, ranks: Mapping[str, int] | Sequence[int]) -> int:
        """Parameter count if the bonds had ``ranks`` (the paper's dof at selected ranks)."""
        sizes = dict(self._sizes)
        if isinstance(ranks, Mapping):
            sizes.update(ranks)
        else:
            ranks = tuple(ranks)
            if len(ranks) != len(self._parsed.bonds):
                raise ValueError(f"{len(ranks)} ranks given for {len(self._parsed.bonds)} bonds")
            sizes.update(zip(self._parsed.bonds, ranks))
        return sum(prod(sizes[c] for c in term) for term in self._parsed.inputs)

    @property
    def dense_size(self) -> int:
        """Number of entries of the full tensor."""
        return prod(self.shape)

    @property
    def compression(self) -> float:
        """Dense size divided by parameter count (above 1 means smaller than dense)."""
        return self.dense_size / max(self.num_params, 1)

    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def backend_impl(self) -> Backend:
        return self._backend

    @property
    def dtype(self) -> str:
        return self._backend.dtype_name(self._cores[0])

    @property
    def device(self) -> str:
        return self._backend.device_of(self._cores[0])

    def terms_with(self, index: str) -> tuple[int, ...]:
        """Positions of the cores that carry ``index``."""
        return self._parsed.terms_with(index)

    def mask_site(self, bond: str) -> tuple[int, int]:
        """``(core, axis)`` where the MARS mask of ``bond`` is applied: the smallest adjacent
        core (first on ties), so a mask multiplies the fewest entries."""
        if bond not in self._parsed.bonds:
            raise ValueError(f"{bond!r} is not a bond of {self.spec!r}; bonds are {list(self._parsed.bonds)}")
        adjacent = self._parsed.terms_with(bond)
        sizes = [prod(self._sizes[c] for c in self._parsed.inputs[t]) for t in adjacent]
        core = adjacent[int(np.argmin(sizes))]
        return core, self._parsed.inputs[core].index(bond)

    # ------------------------------------------------------------------------ contraction
    def plan(self, extra_terms: Sequence[str] = (), extra_shapes: Sequence[Sequence[int]] = (), output: str | None = None) -> Plan:
        """The cached contraction plan of the cores (and any extra operands)."""
        extra_terms = tuple(extra_terms)
        inputs = self._parsed.inputs + extra_terms
        out = self._parsed.output if output is None else output
        if extra_terms or output is not None:
            parse_spec(",".join(inputs) + "->" + out)  # validate the combined spec
        shapes = tuple(tuple(self._sizes[c] for c in t) for t in self._parsed.inputs) + tuple(
            tuple(int(n) for n in s) for s in extra_shapes
        )
        return make_plan(inputs, out, shapes, self.optimize)

    def masked_cores(self, masks: Masks) -> list[Any]:
        """Cores with each bond's mask folded into its :meth:`mask_site` core."""
        if masks is None:
            return list(self._cores)
        if not isinstance(masks, Mapping):
            masks = list(masks)
            if len(masks) != len(self._parsed.bonds):
                raise ValueError(f"{len(masks)} masks given for {len(self._parsed.bonds)} bonds")
            masks = dict(zip(self._parsed.bonds, masks))
        cores = list(self._cores)
        for bond, mask in masks.items():
            if mask is None:
                continue
            core, axis = self.mask_site(bond)
            mask = self._mask_array(mask, cores[core], bond)
            if tuple(mask.shape) != (self._sizes[bond],):
                raise ValueError(
                    f"mask for bond {bond!r} has shape {tuple(mask.shape)}, expected ({self._sizes[bond]},)"
                )
            view = [1] * cores[core].ndim
            view[axis] = -1
            cores[core] = cores[core] * self._backend.reshape(mask, view)
        return cores

    def _mask_array(self, mask: Any, core: Any, bond: str) -> Any:
        """``mask`` as an array of this network's backend, on the core's device (a NumPy mask
        on torch cores that require grad, or a list, would otherwise fail inside the product);
        floats and bools take the core's floating dtype, so a float32 network stays float32."""
        be = self._backend
        if be.is_array(mask):
            try:
                numeric = np.dtype(be.dtype_name(mask)).kind in "biufc"
            except TypeError:  # a framework-only float such as torch's bfloat16
                numeric = True
            if not numeric:
                raise TypeError(f"mask for bond {bond!r} must hold numbers; got dtype {be.dtype_name(mask)}")
            return mask
        if not hasattr(mask, "shape"):
            try:
                mask = np.asarray(mask)
            except (TypeError, ValueError) as err:
                raise TypeError(f"mask for bond {bond!r} must be an array; got {type(mask).__name__} ({err})") from None
        elif type(mask).__module__.split(".")[0] != "numpy":
            mask = infer_backend([mask]).to_numpy(mask)
        mask = np.asarray(mask)
        if mask.dtype.kind not in "biuf":
            raise TypeError(f"mask for bond {bond!r} must hold numbers; got dtype {mask.dtype}")
        core_dtype = be.dtype_name(core)
        try:
            floating = np.dtype(core_dtype).kind in "fc"
        except TypeError:  # a framework-only float such as torch's bfloat16
            floating = True
        return be.asarray(mask, dtype=core_dtype if floating else None, device=self.device)

    def to_tensor(self, masks: Masks = None) -> Any:
        """The full tensor (open modes in output order), optionally with bond masks applied."""
        plan = self.__dict__.get("_own_plan")
        if plan is None:  # shapes never change for a Network, so its own plan is kept
            plan = self._own_plan = self.plan()
        return execute(plan, self.masked_cores(masks) if masks is not None else self._cores, self._backend)

    def contract(self, extra: str, *operands: Any, output: str, masks: Masks = None) -> Any:
        """Contract the network with extra operands through the same planning machinery.

        ``extra`` holds one comma-separated term per operand, using the network's letters for
        shared modes. For a TT-matrix ``'acA,Abd->abcd'`` and a batch ``x`` of shape
        ``(B, 2, 3)``: ``net.contract("Zab", x, output="Zcd")``.
        """
        terms = tuple(extra.replace(" ", "").split(",")) if extra else ()
        if len(terms) != len(operands):
            raise ValueError(f"{len(terms)} extra terms but {len(operands)} operands")
        infer_backend(list(self._cores[:1]) + list(operands))  # refuse mixed frameworks
        plan = self.plan(terms, [x.shape for x in operands], output)
        return execute(plan, self.masked_cores(masks) + list(operands), self._backend)

    def path_info(self, extra: str = "", extra_shapes: Sequence[Sequence[int]] = (), output: str | None = None) -> Plan:
        """The plan with its cost figures: ``.flops``, ``.largest_intermediate``, ``.path``.

        ``print(net.path_info().info_text)`` shows opt_einsum's full report.
        """
        terms = tuple(extra.replace(" ", "").split(",")) if extra else ()
        return self.plan(terms, extra_shapes, output)

    # ------------------------------------------------------------------------ conversions
    def to(self, backend: str | None = None, *, device: str | None = None, dtype: str | None = None) -> Network:
        """The network on another backend, device and/or dtype. Like ``torch.Tensor.to``,
        cores that need no conversion are shared with ``self``, not copied."""
        target = get_backend(backend) if backend is not None else self._backend
        dtype = dtype or self.dtype
        if target.name == self._backend.name:
            if device is None and self._backend.name != "numpy":
                device = self.device
            cores = [target.asarray(c, dtype=dtype, device=device) for c in self._cores]
        else:
            cores = [target.asarray(self._backend.to_numpy(c), dtype=dtype, device=device) for c in self._cores]
        return type(self)(self.spec, cores=cores, optimize=self.optimize)

    def numpy(self) -> Network:
        """A NumPy copy (detached from any autograd graph)."""
        cores = [np.array(self._backend.to_numpy(c)) for c in self._cores]
        return type(self)(self.spec, cores=cores, optimize=self.optimize)

    # ------------------------------------------------------------------------ pruning
    def prune(self, keep: Mapping[str, Any]) -> Network:
        """Slice every core along each bond's kept indices and return the smaller network.

        ``keep`` maps a bond to integer indices or to a binary mask of the bond's length
        (booleans, or floats that are all 0 or 1 such as a MAP mask; a float is never read as
        an index); bonds not named are kept whole. With binary masks the pruned network computes the
        same tensor as ``to_tensor(masks)``. Keeping nothing is legal: the bond gets size 0
        and the network is zero.
        """
        if not isinstance(keep, Mapping):
            raise TypeError(f"keep must be a mapping {{bond: indices or mask}}; got {type(keep).__name__}")
        cores = list(self._cores)
        for bond, sel in keep.items():
            if bond not in self._parsed.bonds:
                raise ValueError(f"{bond!r} is not a bond of {self.spec!r}; bonds are {list(self._parsed.bonds)}")
            idx = _kept_indices(sel, self._sizes[bond], bond, self._backend)
            if len(idx) == self._sizes[bond] and np.array_equal(idx, np.arange(len(idx))):
                continue
            for t in self._parsed.terms_with(bond):
                cores[t] = self._backend.take(cores[t], idx, self._parsed.inputs[t].index(bond))
        return type(self)(self.spec, cores=cores, optimize=self.optimize)

    # ------------------------------------------------------------------------ display
    def summary(self) -> str:
        """A short human-readable description."""
        lines = [
            f"Network {self.spec}  ({self.backend}, {self.dtype}, {self.device})",
            f"  shape {self.shape}, bonds {self.bonds}",
            f"  {self.num_params:,} parameters vs {self.dense_size:,} dense entries: compression {self.compression:.2f}x",
        ]
        plan = self.plan()
        lines.append(f"  contraction: {plan.flops:,} FLOPs, largest intermediate {plan.largest_intermediate:,} entries")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Network({self.spec!r}, shape={self.shape}, ranks={self.ranks}, backend={self.backend!r})"

    # ------------------------------------------------------------------------ tensorly interop
    @classmethod
    def from_tensorly(cls, obj: Any) -> Network:
        """A network equal to a tensorly ``CPTensor``, ``TuckerTensor``, ``TTTensor``,
        ``TRTensor`` or ``TTMatrix`` (see :func:`tnmars.interop.tensorly.from_tensorly`)."""
        from .interop.tensorly import from_tensorly

        return from_tensorly(obj)

    def to_tensorly(self, kind: str | None = None) -> Any:
        """The equal tensorly object when the graph is CP, Tucker, TT, TR or TT-matrix
        (see :func:`tnmars.interop.tensorly.to_tensorly`); otherwise a ``ValueError``."""
        from .interop.tensorly import to_tensorly

        return to_tensorly(self, kind)


def _check_core_dtype(name: str, pos: int) -> None:
    """Cores hold numbers (bool, int, float, complex); strings and objects are refused."""
    try:
        kind = np.dtype(name).kind
    except TypeError:  # a framework-only dtype such as torch's bfloat16: numeric
        return
    if kind not in "biufc":
        raise TypeError(f"core {pos} has dtype {name}; cores must hold numbers (float, int, complex or bool)")


def _clip_ranks(parsed: ParsedSpec, sizes: dict[str, int], clip: Sequence[str]) -> dict[str, int]:
    """Sizes with each bond in ``clip`` reduced to what it can use, with a warning.

    Two bounds, both exact (the clipped network can represent everything the larger one can):
    a bond joining two cores needs no more than the product of the other indices of either
    core (a QR of that core moves the rest into its neighbour), and no bond needs more than
    the number of entries of the whole tensor (the terms of the sum over the bond span at
    most that many dimensions). Applied until nothing changes, since one clip lowers the
    bounds of the bonds around it.
    """
    clip = [b for b in dict.fromkeys(clip) if b in sizes]
    if not clip:
        return sizes
    out = dict(sizes)
    dense = prod(out[c] for c in parsed.output)
    changed = True
    while changed:
        changed = False
        for bond in clip:
            bound = dense
            terms = parsed.terms_with(bond)
            if len(terms) == 2:
                for t in terms:
                    bound = min(bound, prod(out[c] for c in parsed.inputs[t] if c != bond))
            if out[bond] > bound:
                out[bond], changed = max(bound, 1), True
    if out != sizes:
        before = {b: sizes[b] for b in clip if out[b] != sizes[b]}
        after = {b: out[b] for b in before}
        warn(f"ranks {before} clipped to the feasible {after} for {parsed.spec!r}: a larger bond cannot "
             "represent anything more")
    return out


def _host_memory() -> int | None:
    """Bytes of physical memory, or None where the system does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(entries: int, spec: str) -> None:
    """Refuse random cores that cannot fit in memory (drawn in float64) before allocating."""
    need = 8 * entries
    total = _host_memory()
    if total is not None and need > total:
        raise ValueError(
            f"the cores of {spec!r} would hold {entries:,} entries ({need / 2**30:,.1f} GiB as float64), more "
            f"than this machine's {total / 2**30:,.1f} GiB of memory; use smaller sizes or ranks"
        )


def _check_ndim(shape: Sequence[int], limit: int) -> None:
    if len(shape) > limit:
        raise ValueError(f"at most {limit} open modes are supported by the built-in constructors; got {len(shape)}")
    if len(shape) == 0:
        raise ValueError("shape is empty")


def _per_bond(ranks: Any, count: int, name: str, boundary: bool = False) -> tuple[int, ...]:
    values = _as_int_tuple(ranks, name)
    if len(values) == 1 and count != 1:
        values = values * count
    if boundary and len(values) == count + 2 and values[0] == 1 and values[-1] == 1:
        values = values[1:-1]
    if len(values) != count:
        raise ValueError(f"{name} needs {count} values (or one int); got {len(values)}: {values}")
    _check_positive(values, name)
    return values


def _kept_indices(sel: Any, size: int, bond: str, be: Backend) -> np.ndarray:
    """The kept positions of one bond from what :meth:`Network.prune` was given: integer
    indices, or a mask of the bond's length (bool, or floats that are all 0 or 1). Floats are
    never read as indices (``[1.0, 0.0]`` keeps index 0), and a non-binary float mask such as
    ``[0.5, ...]`` is refused rather than guessed."""
    if be.is_array(sel):
        sel = be.to_numpy(sel)
    elif hasattr(sel, "shape") and hasattr(sel, "dtype") and not isinstance(sel, np.ndarray):
        sel = infer_backend([sel]).to_numpy(sel)  # another framework's array
    try:
        sel = np.asarray(sel)
    except (TypeError, ValueError) as err:
        raise TypeError(f"keep for bond {bond!r} must be integer indices or a mask; got {sel!r} ({err})") from None
    if sel.size == 0:
        return np.zeros(0, dtype=np.int64)
    if sel.ndim != 1:
        raise ValueError(f"keep for bond {bond!r} must be 1-D (indices or a mask); got shape {sel.shape}")
    kind = sel.dtype.kind
    if kind in "bf":
        if sel.shape != (size,):
            what = "boolean" if kind == "b" else "float (read as a mask, never as indices)"
            raise ValueError(f"{what} keep-mask for bond {bond!r} has shape {sel.shape}, expected ({size},)")
        if kind == "f" and not np.all((sel == 0) | (sel == 1)):
            raise ValueError(
                f"float keep-mask for bond {bond!r} must hold only 0 and 1; got {sel.tolist()} "
                "(pass integer indices, a boolean mask, or threshold probabilities first, e.g. phi > 0.5)"
            )
        return np.flatnonzero(sel)
    if kind not in "iu":
        raise TypeError(f"keep for bond {bond!r} must be integer indices or a mask; got dtype {sel.dtype}")
    idx = sel.astype(np.int64)
    if idx.min() < 0 or idx.max() >= size:
        raise ValueError(f"kept indices for bond {bond!r} must lie in [0, {size}); got {idx.tolist()}")
    if len(np.unique(idx)) != len(idx):
        raise ValueError(f"kept indices for bond {bond!r} repeat: {idx.tolist()}")
    return idx
