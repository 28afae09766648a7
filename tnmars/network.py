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

import copy
import math
import numbers
import sys
from collections.abc import Hashable, Mapping, Sequence
from math import prod
from typing import Any

import numpy as np

from ._checks import floating_dtype, host_memory, integer, positive_finite, seed_generator, warn
from .backends import Backend, get_backend, infer_backend
from .contract import Plan, _as_operands, _common_dtype, execute, make_plan
from .paths import normalize_optimize
from .spec import ParsedSpec, Symbols, labels_to_spec, parse_spec

# open modes a-z then every other Unicode letter of tnmars.spec.symbol, bonds A-Z then the others:
# endless, so the built-in formats have no order limit, and identical to the letters up to 26
_OPEN = Symbols("abcdefghijklmnopqrstuvwxyz", offset=52, step=2)
_BOND = Symbols("ABCDEFGHIJKLMNOPQRSTUVWXYZ", offset=53, step=2)

Masks = Mapping[str, Any] | Sequence[Any] | None


# ------------------------------------------------------------------ specs of the built-in formats
# Open modes are lowercase letters, bonds uppercase (past 26: other Unicode letters). The
# constructors below and the tensorly interop build their graphs from these functions only, so
# the two can never disagree.
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
    """``'CaA,AbB,BcC->abc'`` for order 3: bond ``_BOND[k]`` joins core ``k`` to core ``k+1``; the
    bonds' first appearances (:attr:`Network.bonds`) are ``C, A, B``: core ``k``'s left rank first."""
    terms = [_BOND[(k - 1) % order] + _OPEN[k] + _BOND[k] for k in range(order)]
    return ",".join(terms) + "->" + _OPEN[:order]


def gaussian_core_std(scale: float, bond_sizes: Sequence[int], num_cores: int) -> float:
    """The standard deviation of i.i.d. Gaussian cores whose contraction has entries of standard
    deviation ``scale``: ``(scale / sqrt(bond volume)) ** (1 / cores)``, each of the contraction's
    entries being a sum of ``bond volume`` products of one entry per core. Computed in logs (the
    volume of 200 bonds overflows a float); a bond of size 0 counts as 1 (its cores are empty).
    The one formula behind :class:`Network`'s random cores and the ``tnmars.nn`` layers' draws.

    >>> round(gaussian_core_std(1.0, [4, 4], 3), 6)  # (1 / sqrt(16)) ** (1/3)
    0.629961
    """
    log_volume = sum(np.log(max(1, int(size))) for size in bond_sizes)
    return float(np.exp((np.log(scale) - 0.5 * log_volume) / num_cores))


def _as_int_tuple(values: Any, name: str) -> tuple[int, ...]:
    """One integer or a sequence of them, as a tuple of Python ints (bools, floats such as
    ``2.0`` or ``inf``, and strings are a ``TypeError`` naming ``name``)."""
    if isinstance(values, (str, bytes, Mapping)) or values is None:
        raise TypeError(f"{name} must be an int or a sequence of ints; got {values!r}")
    if isinstance(values, np.ndarray) and values.ndim == 1:  # np.array([2, 3, 4]): its __index__ refuses
        values = values.tolist()
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
        One term per core, e.g. ``"ij,jkl,lm"`` or with an explicit output ``"ij,jkl,lm->mki"``
        (an index is an ASCII letter or any non-ASCII character). Or the interleaved form's label lists, one
        per core, with any hashable labels: ``[("x", "bond"), ("bond", "y")]``; then ``dims``
        and ``ranks`` are keyed by label, ``output`` lists the output labels (default: the
        labels on one core, sorted) and :attr:`labels` maps each label to its index symbol.
        A bool label is a ``TypeError``, and labels equal in Python but of different kinds
        (``1`` and ``1.0``) a ``ValueError``: Python's ``True == 1 == 1.0`` would merge them.
    dims:
        Size of each index, ``{"i": 4, "j": 3, ...}``. May be partial when ``shape`` /
        ``ranks`` / ``cores`` supply the rest.
    shape:
        Sizes of the open modes, in output order.
    ranks:
        An int for every bond, one int per bond in the order of :attr:`bonds` (first
        appearance in the spec), or ``{bond_index: size}``.
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
        Path optimizer used by every plan of this network (anything
        :func:`tnmars.contract` accepts).
    output:
        With label lists only: the output labels.

    Notes
    -----
    A *bond* is an index carried by two or more cores and absent from the output (three or
    more: a hyperedge such as CP's rank). ``ranks`` lists the bond sizes in the order of
    :attr:`bonds`. Bonds of size 0 are legal (a pruned network whose mask closed); the
    network is then identically zero. Sizes are integers (bools, floats and strings are a
    ``TypeError``). Bonds sized by ``ranks=`` are clipped, with a warning, to what they can
    use: no more than the product of the other indices of a core they join, nor than the
    number of entries of the whole tensor (larger bonds cannot represent anything more).
    An index on one core only and absent from the output (a *summed* leg) must have size 1,
    as the boundary ranks of tntorch's TT cores do; its size defaults to 1. A trace (an index
    repeated in one term) is not a network.
    """

    def __init__(
        self,
        spec: str | Sequence[Sequence[Hashable]],
        dims: Mapping[str, int] | None = None,
        *,
        shape: Sequence[int] | None = None,
        ranks: int | Sequence[int] | Mapping[str, int] | None = None,
        cores: Sequence[Any] | None = None,
        backend: str | None = None,
        dtype: str = "float64",
        device: str | None = None,
        seed: int | np.random.Generator | None = None,
        scale: float = 1.0,
        optimize: str = "auto",
        output: Sequence[Hashable] | None = None,
    ) -> None:
        #: label -> index symbol when the network was declared with label lists, else None
        self.labels: dict[Hashable, str] | None = None
        if not isinstance(spec, str):
            spec, self.labels, dims, ranks = _from_labels(spec, output, dims, ranks)
        elif output is not None:
            raise TypeError("output= goes with label lists; a spec string names its output after '->'")
        parsed = parse_spec(spec)
        self._parsed: ParsedSpec = parsed
        self.optimize = normalize_optimize(optimize)
        sizes: dict[str, int] = {}

        label_of = {symbol: label for label, symbol in (self.labels or {}).items()}

        def put(index: str, size: int, source: str) -> None:
            if index in sizes and sizes[index] != size:
                # (by the user's label where the network was declared with label lists)
                name = f"label {label_of[index]!r}" if index in label_of else f"index {index!r}"
                raise ValueError(f"{name} has inconsistent sizes: {sizes[index]} and {size} ({source})")
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
            elif isinstance(ranks, (list, tuple)) or (isinstance(ranks, np.ndarray) and ranks.ndim == 1):
                per_bond = _as_int_tuple(ranks, "ranks")
                if len(per_bond) != len(parsed.bonds):
                    raise ValueError(f"ranks has {len(per_bond)} entries but spec {parsed.spec!r} has "
                                     f"{len(parsed.bonds)} bonds {list(parsed.bonds)} (one rank each, in that order, "
                                     "or a mapping bond -> rank)")
                _check_positive(per_bond, "ranks")
                for index, size in zip(parsed.bonds, per_bond):
                    put(index, size, "ranks")
                    from_ranks.append(index)
            else:
                size = integer(ranks, "ranks")
                _check_positive([size], "ranks")
                if not parsed.bonds and len(parsed.inputs) > 1:  # (a case typo, "ij,Jk": two size-1 summed
                    # legs, and the rank was dropped; a single core, as a CP layer of one mode, has nothing to size)
                    summed = f" (its summed indices {', '.join(map(repr, parsed.summed))} join one core each)" \
                        if parsed.summed else ""
                    raise ValueError(f"ranks={size} sizes the bonds, but spec {parsed.spec!r} has no bond: no index "
                                     f"is shared by two cores{summed}")
                for index in parsed.bonds:
                    put(index, size, "ranks")
                    from_ranks.append(index)
            from_ranks = [b for b in from_ranks if dims is None or b not in dims]

        if cores is not None:
            cores = list(cores)
            ignored = [name for name, given in (("dtype", _dtype_name(dtype) != "float64"), ("device", device is not None),
                                                ("seed", seed is not None), ("scale", scale != 1.0)) if given]
            if ignored:  # they shape the random cores drawn without cores=; here they did nothing, silently
                raise TypeError(f"{' and '.join(ignored)} apply to the random cores a Network draws, not to given "
                                "cores: convert the arrays first, or call .to(...) on the network")
            if len(cores) != len(parsed.inputs):
                raise ValueError(
                    f"spec {parsed.spec!r} has {len(parsed.inputs)} cores but {len(cores)} arrays were given"
                )
            be = infer_backend(cores) if backend is None else get_backend(backend)
            for pos, (term, core) in enumerate(zip(parsed.inputs, cores)):
                if isinstance(core, (np.matrix, np.ma.MaskedArray)):  # (as tnmars.contract refuses them)
                    raise TypeError(f"core {pos} is a {type(core).__name__}, whose products differ from an array's (a "
                                    "matrix stays 2-D, a masked array's mask is dropped by some steps and not "
                                    "others); pass np.asarray(core), or core.filled(0) for masked values")
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
            _check_summed(parsed, sizes)
            self._backend = be
            self._cores = cores
            self._sizes = sizes
            return

        for index in parsed.summed:
            sizes.setdefault(index, 1)
        _check_summed(parsed, sizes)
        missing = [c for c in dict.fromkeys("".join(parsed.inputs)) if c not in sizes]
        if missing:
            raise ValueError(
                f"no size for index {', '.join(repr(m) for m in missing)} of {parsed.spec!r}: "
                "give dims=, shape= (open modes) and ranks= (bonds)"
            )
        be = get_backend(backend or "numpy")
        be.check_device(device)
        if be.name in ("numpy", "cupy") and dtype is not None and _dtype_name(dtype) == "bfloat16":
            raise TypeError(f"{be.name} has no bfloat16; use backend='torch' for bfloat16 cores, or float16/float32")
        self._backend = be
        self._sizes = _clip_ranks(parsed, sizes, from_ranks)
        self._cores = self._random_cores(be, dtype, device, seed, scale)

    # ---------------------------------------------------------------- construction helpers
    def _random_cores(self, be: Backend, dtype: str, device: str | None, seed: Any, scale: float):
        scale = positive_finite(scale, "scale")
        dtype = floating_dtype(dtype if dtype is not None else "float64")
        rng = seed_generator(seed)
        _check_memory(sum(prod(self._sizes[c] for c in term) for term in self._parsed.inputs), self._parsed.spec)
        std = gaussian_core_std(scale, [self._sizes[b] for b in self._parsed.bonds], len(self._parsed.inputs))
        _check_representable(scale, std, dtype)
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
        """The same graph over new cores (checked against the spec), with the same
        :attr:`labels`; :meth:`prune`, :meth:`to` and :meth:`numpy` build their results here,
        so a network declared with label lists keeps them."""
        net = type(self)(self.spec, cores=cores, optimize=self.optimize)
        net.labels = self.labels
        return net

    # ------------------------------------------------------------------------ constructors
    @classmethod
    def cp(cls, shape: Sequence[int], rank: int, **kwargs: Any) -> Network:
        """CP / CANDECOMP-PARAFAC: factors ``(n_k, R)`` joined by one hyperedge of size ``R``.

        >>> Network.cp((3, 4, 5), 2).spec
        'aA,bA,cA->abc'
        """
        shape = _as_int_tuple(shape, "shape")
        _check_ndim(shape)
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
        _check_ndim(shape)
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
        _check_ndim(shape)
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
        """Tensor ring: core ``k`` is ``(r_k, n_k, r_{k+1})``, ``r_d = r_0`` closing the loop
        (tensorly's ``TRTensor`` layout).

        ``ranks`` is an int or ``d`` values ``(r_0, ..., r_{d-1})``: ``ranks[k]`` is core ``k``'s
        left rank, joining core ``k - 1`` to core ``k`` (``ranks[0]`` closes the ring). That is
        the order of :attr:`bonds`, so ``Network.tr(shape, r).ranks == r``, and the order of a
        TR fit's ``ranks``.

        >>> net = Network.tr((4, 5, 6), (1, 2, 3))
        >>> net.spec, net.ranks
        ('CaA,AbB,BcC->abc', (1, 2, 3))
        """
        shape = _as_int_tuple(shape, "shape")
        _check_ndim(shape)
        _check_positive(shape, "shape")
        d = len(shape)
        if d < 2:
            raise ValueError("a tensor ring needs at least 2 cores")
        ranks = _per_bond(ranks, d, "ranks")
        # core k's left bond is _BOND[k - 1] (the last one for core 0): the spec's first appearances
        return cls(tr_spec(d), shape=shape, ranks={_BOND[(k - 1) % d]: r for k, r in enumerate(ranks)}, **kwargs)

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
        """The cores, in the order of the spec's terms, as a new list at each access: assigning
        into it changes that list, not the network (``net.cores[0] = x`` changes nothing; a list
        changed so builds a network with :meth:`with_cores`); a core edited in place,
        ``net.cores[0][...] = 0``, is the network's own."""
        return list(self._cores)

    @property
    def num_cores(self) -> int:
        return len(self._cores)

    @property
    def num_params(self) -> int:
        return sum(prod(self._sizes[c] for c in term) for term in self._parsed.inputs)

    def _bond_items(self, mapping: Mapping[Any, Any]) -> list[tuple[str, Any]]:
        """``(bond symbol, value)`` pairs of a mapping keyed by bond (labels or symbols); a key
        that names no bond, or two keys naming the same bond, is a ``ValueError``."""
        items: dict[str, Any] = {}
        for key, value in mapping.items():
            bond = self._symbol(key)
            if bond not in self._parsed.bonds:
                raise self._not_a_bond(key)
            if bond in items:
                raise ValueError(f"bond {bond!r} is named twice (by its label and by its symbol)")
            items[bond] = value
        return list(items.items())

    def num_params_at(self, ranks: Mapping[str, int] | Sequence[int]) -> int:
        """Parameter count if the bonds had ``ranks`` (the paper's dof at selected ranks):
        ``{bond: rank}`` for some bonds (symbols or labels) or one rank per bond in the order of :attr:`bonds`.
        Ranks are integers >= 0; a key that is not a bond is a ``ValueError`` (it was ignored,
        or changed an open mode's size, and the count came back silently wrong)."""
        sizes = dict(self._sizes)
        bonds = self._parsed.bonds
        if isinstance(ranks, Mapping):
            items = self._bond_items(ranks)
        else:
            ranks = tuple(ranks)
            if len(ranks) != len(bonds):
                raise ValueError(f"{len(ranks)} ranks given for {len(bonds)} bonds")
            items = list(zip(bonds, ranks))
        for bond, rank in items:
            rank = integer(rank, f"the rank of bond {bond!r}")
            if rank < 0:
                raise ValueError(f"the rank of bond {bond!r} must be >= 0; got {rank}")
            sizes[bond] = rank
        return sum(prod(sizes[c] for c in term) for term in self._parsed.inputs)

    @property
    def dense_size(self) -> int:
        """Number of entries of the full tensor."""
        return prod(self.shape)

    @property
    def compression(self) -> float:
        """Dense size divided by parameter count (above 1 means smaller than dense); ``nan`` for
        the zero tensor by structure (a bond of rank 0, or no parameters): it is not a
        compression, and a ratio of its remaining entries read as one (60x for the zero
        network of a 3x4x5 fit; :func:`compression_text` says "the zero tensor")."""
        if self.num_params == 0 or 0 in self._sizes.values():
            return math.nan
        return self.dense_size / self.num_params

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

    def _symbol(self, key: Hashable) -> Any:
        """The index symbol ``key`` names: a label of a network declared with label lists, or
        a symbol (what :attr:`bonds` lists). A key that is a label of one index and the symbol
        of another (a file saved before one-letter labels became their own symbols) is refused,
        not guessed."""
        labels = self.labels
        if not labels:
            return key
        try:
            symbol = labels.get(key)
        except TypeError:  # unhashable: no label, and no symbol either
            return key
        if symbol is None:
            return key
        if symbol != key and isinstance(key, str) and key in self._sizes:
            owner = next((lab for lab, sym in labels.items() if sym == key), key)
            raise ValueError(f"{key!r} is ambiguous in {self.spec!r}: the label of index {symbol!r} and the "
                             f"symbol of the index labelled {owner!r}: name the first by its symbol {symbol!r}, "
                             f"the second by its label {owner!r}")
        return symbol

    def _not_a_bond(self, key: Hashable) -> ValueError:
        bonds = list(self._parsed.bonds)
        if self.labels:
            by_symbol = {sym: lab for lab, sym in self.labels.items()}
            named = ", ".join(f"{by_symbol.get(b, b)!r} ({b!r})" for b in bonds)
            return ValueError(f"{key!r} is not a bond of {self.spec!r}; bonds are, by label (symbol): {named}")
        return ValueError(f"{key!r} is not a bond of {self.spec!r}; bonds are {bonds}")

    def terms_with(self, index: str) -> tuple[int, ...]:
        """Positions of the cores that carry ``index`` (a symbol, or a label)."""
        return self._parsed.terms_with(self._symbol(index))

    def mask_site(self, bond: str) -> tuple[int, int]:
        """``(core, axis)`` where the MARS mask of ``bond`` is applied: the smallest adjacent
        core (first on ties), so a mask multiplies the fewest entries."""
        key, bond = bond, self._symbol(bond)
        if bond not in self._parsed.bonds:
            raise self._not_a_bond(key)
        return self._site(bond)

    def _site(self, bond: str) -> tuple[int, int]:
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
        optimize = self.optimize
        if extra_terms and isinstance(optimize, tuple):  # an explicit path plans the cores alone: with
            optimize = "auto"                              # more operands, opt_einsum plans them all
        try:
            return make_plan(inputs, out, shapes, optimize)
        except TypeError as err:  # an unhashable optimizer object: planned without the cache, as contract does
            if "unhashable" not in str(err):
                raise
            return make_plan.__wrapped__(inputs, out, shapes, optimize)

    def masked_cores(self, masks: Masks) -> list[Any]:
        """Cores with each bond's mask folded into its :meth:`mask_site` core."""
        if masks is None:
            return list(self._cores)
        if not isinstance(masks, Mapping):
            masks = list(masks)
            if len(masks) != len(self._parsed.bonds):
                raise ValueError(f"{len(masks)} masks given for {len(self._parsed.bonds)} bonds")
            items = list(zip(self._parsed.bonds, masks))  # (symbols already: nothing to resolve)
        else:
            items = self._bond_items(masks)
        cores = list(self._cores)
        for bond, mask in items:
            if mask is None:
                continue
            core, axis = self._site(bond)
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
        real masks (bool, int, float) take the core's floating dtype, so a float32 network stays
        float32. That holds for masks already on the backend too: a float64 NumPy mask such as
        ``(phi > 0.5).astype(float)`` silently made a float16/float32 network's tensor float64,
        and a float64 torch mask on float32 cores failed inside the pairwise products with
        torch's "both inputs should have same dtype". The cast keeps autograd (``Tensor.to``)."""
        be = self._backend
        core_dtype = be.dtype_name(core)
        if be.is_array(mask):
            mask_dtype = be.dtype_name(mask)
            kind = _dtype_kind(mask_dtype)
            if kind not in "biufc":
                raise TypeError(f"mask for bond {bond!r} must hold numbers; got dtype {mask_dtype}")
            if kind != "c" and mask_dtype != core_dtype and _is_floating(core_dtype):
                mask = be.asarray(mask, dtype=core_dtype)
            return mask
        if not hasattr(mask, "shape"):
            try:
                mask = np.asarray(mask)
            except (TypeError, ValueError) as err:
                raise TypeError(f"mask for bond {bond!r} must be an array; got {type(mask).__name__} ({err})") from None
        elif type(mask).__module__.split(".")[0] != "numpy":
            mask = infer_backend([mask]).to_numpy(mask)
        mask = np.asarray(mask)
        if mask.dtype.kind not in "biufc":
            raise TypeError(f"mask for bond {bond!r} must hold numbers; got dtype {mask.dtype}")
        # real masks take a floating core's dtype; a complex one keeps its own (as a native array does)
        cast = _is_floating(core_dtype) and mask.dtype.kind != "c"
        return be.asarray(mask, dtype=core_dtype if cast else None, device=self.device)

    def to_tensor(self, masks: Masks = None, *, contiguous: bool = True) -> Any:
        """The full tensor (open modes in output order), optionally with bond masks applied.

        It is contiguous in memory; ``contiguous=False`` may return a transposed view instead,
        saving the copy when the next operation reads it once anyway."""
        plan = self.__dict__.get("_own_plan")
        if plan is None:  # shapes never change for a Network, so its own plan is kept (checked once)
            plan = self.plan()
            if str(self.device).startswith("cpu"):
                _check_dense_memory(max(self.dense_size, plan.largest_intermediate), self.dtype, self.spec)
            self._own_plan = plan
        cores = self._cores
        if masks is not None:
            cores = self.masked_cores(masks)
            if len({self._backend.dtype_name(c) for c in cores}) > 1:  # integer cores, one times a float mask:
                cores, _ = _common_dtype(cores, self._backend)        # promoted as NumPy does (torch refused)
        out = execute(plan, cores, self._backend)
        if len(cores) == 1:  # no contraction: ``out`` is the core or a view of it, which the caller
            return self._backend.copy(out)  # could then change in place (fit's residual did)
        return self._backend.contiguous(out) if contiguous else out

    def contract(self, extra: str, *operands: Any, output: str, masks: Masks = None) -> Any:
        """Contract the network with extra operands through the same planning machinery.

        ``extra`` holds one comma-separated term per operand, using the network's letters for
        shared modes. For a TT-matrix ``'acA,Abd->abcd'`` and a batch ``x`` of shape
        ``(B, 2, 3)``: ``net.contract("Zab", x, output="Zcd")``.

        Operands are read as :func:`tnmars.contract` reads them: arrays of the network's
        framework (another framework is refused), numbers or nested lists; mixed dtypes are
        promoted by the framework's rules (a float64 batch on float32 torch cores gives a
        float64 result, as on NumPy, instead of failing inside a product with "both inputs
        should have same dtype"), and booleans give booleans.
        """
        terms = tuple(extra.replace(" ", "").split(",")) if extra else ()
        if len(terms) != len(operands):
            raise ValueError(f"{len(terms)} extra terms but {len(operands)} operands")
        cores = self.masked_cores(masks)
        be, arrays, uniform = _as_operands(cores[:1] + list(operands), None)  # refuses mixed frameworks
        arrays = cores + arrays[1:]
        boolean = False
        if not uniform or be.dtype_name(arrays[0]) == "bool" or len({be.dtype_name(c) for c in cores}) > 1:
            arrays, boolean = _common_dtype(arrays, be)
        plan = self.plan(terms, [x.shape for x in arrays[len(cores):]], output)
        out = execute(plan, arrays, be)
        return out != 0 if boolean else out

    def path_info(self, extra: str = "", extra_shapes: Sequence[Sequence[int]] = (), output: str | None = None) -> Plan:
        """The plan with its cost figures: ``.flops``, ``.largest_intermediate``, ``.path``.

        ``print(net.path_info().info_text)`` shows opt_einsum's full report.
        """
        terms = tuple(extra.replace(" ", "").split(",")) if extra else ()
        return self.plan(terms, extra_shapes, output)

    # ------------------------------------------------------------------------ conversions
    def to(self, *args: Any, backend: str | None = None, device: Any = None, dtype: Any = None) -> Network:
        """The network on another backend, device and/or dtype, read the way ``torch.Tensor.to``
        reads its arguments: ``net.to("torch")``, ``net.to(torch.float32)``, ``net.to("cpu")``,
        ``net.to("cuda", torch.float64)``, ``net.to(torch.device("cuda:0"))``, or
        ``net.to(tensor_or_network)`` (its framework, device and dtype). Positional arguments
        are recognised as a backend name (``"numpy"``, ``"torch"``, ``"cupy"``), a dtype (a
        name, a NumPy or torch dtype), a device (a string or ``torch.device``), or an array or
        network to match; keywords say the same explicitly. A dtype alone keeps the backend,
        as ``Tensor.to`` keeps the framework. Like ``Tensor.to``, cores that need no
        conversion are shared with ``self``, not copied.

        >>> net = Network.tt((3, 4), 2, seed=0)
        >>> net.to("float32").dtype, net.to("torch", dtype="float32").backend
        ('float32', 'torch')
        """
        for arg in args:
            kind, value = _to_argument(arg)
            if kind == "like":
                backend, device, dtype = value
                continue
            slot = {"backend": backend, "device": device, "dtype": dtype}[kind]
            if slot is not None:
                raise TypeError(f"Network.to got two {kind}s: {slot!r} and {arg!r}")
            if kind == "backend":
                backend = value
            elif kind == "device":
                device = value
            else:
                dtype = value
        if device is not None:
            device = _device_name(device)
        if dtype is not None:
            dtype = _dtype_name(dtype)
        target = get_backend(backend) if backend is not None else self._backend
        if device is not None and backend is None and target.name == "numpy" and device != "cpu":
            raise ValueError(f"a NumPy network cannot live on device {device!r}; name the framework too, e.g. "
                             f"net.to('torch', device={device!r}) or net.to('cupy')")
        target.check_device(device)
        if target.name in ("numpy", "cupy"):
            if dtype == "bfloat16":
                raise TypeError(f"{target.name} has no bfloat16; keep the network on torch or choose float32")
            if dtype is None and self.dtype == "bfloat16":
                dtype = "float32"  # holds every bfloat16 value exactly, as numpy() and load do
        dtype = dtype or self.dtype
        check_dtype_conversion(dtype, self.dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # (an overflowing cast is refused below, in words)
            if target.name == self._backend.name:
                if device is None and self._backend.name != "numpy":
                    device = self.device
                cores = [target.asarray(c, dtype=dtype, device=device) for c in self._cores]
            else:  # another framework: a copy (NumPy <-> torch CPU conversions share memory, and then a training
                # step on one side rewrote the other; np.array also makes negative-stride views contiguous)
                cores = [target.asarray(np.array(self._backend.to_numpy(c), copy=True), dtype=dtype, device=device)
                         for c in self._cores]
        if narrows(dtype, self.dtype):
            check_narrowing(self._cores, self._backend, cores, target, dtype)
        return self.with_cores(cores)  # keeps .labels

    def numpy(self) -> Network:
        """A NumPy copy (detached from any autograd graph)."""
        cores = [np.array(self._backend.to_numpy(c)) for c in self._cores]
        return self.with_cores(cores)  # keeps .labels

    # ------------------------------------------------------------------------ pruning
    def prune(self, keep: Mapping[str, Any]) -> Network:
        """Slice every core along each bond's kept indices and return the smaller network.

        ``keep`` maps a bond (its symbol, or its label in a network declared with label lists)
        to integer indices or to a binary mask of the bond's length
        (booleans, or floats that are all 0 or 1 such as a MAP mask; a float is never read as
        an index; an integer array of the bond's length holding only 0 and 1, such as
        ``(phi > 0.5).long()``, is refused as ambiguous); bonds not named are kept whole. With binary masks the pruned network computes the
        same tensor as ``to_tensor(masks)``. Keeping nothing is legal: the bond gets size 0
        and the network is zero. The result shares with this network every core it does not
        slice (as ``Tensor.to`` shares what it does not convert), and on torch its sliced cores
        are differentiable functions of these: ``copy.deepcopy(net.prune(keep))`` is a network
        of its own, to edit or train apart.
        """
        if not isinstance(keep, Mapping):
            raise TypeError(f"keep must be a mapping {{bond: indices or mask}}; got {type(keep).__name__}")
        cores = list(self._cores)
        for bond, sel in self._bond_items(keep):
            idx = _kept_indices(sel, self._sizes[bond], bond, self._backend)
            if len(idx) == self._sizes[bond] and np.array_equal(idx, np.arange(len(idx))):
                continue
            for t in self._parsed.terms_with(bond):
                cores[t] = self._backend.take(cores[t], idx, self._parsed.inputs[t].index(bond))
        return self.with_cores(cores)  # keeps .labels

    # ------------------------------------------------------------------------ display
    def summary(self) -> str:
        """A short human-readable description."""
        bonds = self.bonds
        bond_text = str(bonds) if len(bonds) <= 8 else f"{len(bonds)} bonds of sizes {_short_tuple(self.ranks)}"
        lines = [
            f"Network {_short_spec(self.spec)}  ({self.num_cores} cores; {self.backend}, {self.dtype}, {self.device})",
            f"  shape {_short_tuple(self.shape)}, bonds {bond_text}",
            f"  {_count(self.num_params)} parameters vs {_count(self.dense_size)} dense entries: "
            + compression_text(self),
        ]
        plan = self.plan()
        lines.append(f"  contraction: {_count(plan.flops)} FLOPs, largest intermediate "
                     f"{_count(plan.largest_intermediate)} entries")
        return "\n".join(lines)

    def __deepcopy__(self, memo: dict) -> Network:
        """A deep copy, as pickling gives one: a torch core that is not a leaf of autograd (a
        pruned or converted network of trainable cores) is copied as a leaf with the same
        ``requires_grad`` (torch's own deepcopy refuses non-leaf tensors)."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for name, value in self.__dict__.items():
            if name == "_cores":
                value = [_leaf_copy(c, memo) for c in value]
            else:
                value = copy.deepcopy(value, memo)
            new.__dict__[name] = value
        return new

    def __repr__(self) -> str:
        return (f"Network({_short_spec(self.spec)!r}, shape={_short_tuple(self.shape)}, "
                f"ranks={_short_tuple(self.ranks)}, backend={self.backend!r})")

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


def _short_spec(spec: str, limit: int = 72) -> str:
    """The spec, or its start and end around an ellipsis when longer than ``limit``."""
    return spec if len(spec) <= limit else spec[: limit - 22] + "…" + spec[-20:]


def compression_text(net: Network) -> str:
    """``compression 12.50x``, or, for a network with a bond of rank 0, what it is: the zero
    tensor (an empty sum; its ratio of dense size to parameters would read as a compression)."""
    closed = [b for b, r in zip(net.bonds, net.ranks) if r == 0]
    if closed or net.num_params == 0:
        return (f"the zero tensor (bond{'s' if len(closed) > 1 else ''} {', '.join(closed)} of rank 0), "
                "not a compression" if closed else "the zero tensor (no parameters), not a compression")
    c = net.compression
    return f"compression {c:.2f}x" if c < 1e6 else f"compression {c:.3g}x"


def _count(n: int) -> str:
    """``1,234,567``; past 10**15 ``1.61e+60`` (the dense size of a 200-site train)."""
    return f"{n:,}" if n < 10**15 else f"{n:.3g}"


def _short_tuple(values: tuple[int, ...]) -> str:
    """``(2, 2, 2)``; for long tuples ``(2,) * 200`` or ``(3, 4, 4, 4, …, 4, 3) [40 entries]``."""
    if len(values) <= 8:
        return str(values)
    if len(set(values)) == 1:
        return f"({values[0]},) * {len(values)}"
    return "(" + ", ".join(map(str, values[:4])) + ", …, " + ", ".join(map(str, values[-2:])) + f") [{len(values)} entries]"


def _check_summed(parsed: ParsedSpec, sizes: Mapping[str, int]) -> None:
    for index in parsed.summed:
        if sizes.get(index, 1) != 1:
            raise ValueError(
                f"index {index!r} of {parsed.spec!r} is in one core only and not in the output, so it is summed "
                f"away; that is meaningful for a size-1 leg only, but it has size {sizes[index]} "
                "(keep it in the output or share it with another core)"
            )


def _from_labels(subscripts: Any, output: Any, dims: Any, ranks: Any):
    """A spec, the label map, and ``dims``/``ranks`` re-keyed by symbol, from label lists."""
    if isinstance(subscripts, (bytes, Mapping)) or not isinstance(subscripts, Sequence):
        raise TypeError(f"spec must be a string or a list of label lists (one per core); got {type(subscripts).__name__}")
    if any(lab is Ellipsis for labels in subscripts if isinstance(labels, Sequence) for lab in labels):
        raise ValueError("'...' broadcasting is einsum, not a tensor network (tnmars.contract accepts it)")
    spec, labels = labels_to_spec(subscripts, output)
    first: dict[Hashable, Hashable] = {}
    for where, given in (("the label lists", [lab for term in subscripts for lab in term]),
                         ("output=", [] if output is None else list(output)),
                         ("dims=", list(dims) if isinstance(dims, Mapping) else []),
                         ("ranks=", list(ranks) if isinstance(ranks, Mapping) else [])):
        for lab in given:
            _check_label(lab, first.setdefault(lab, lab), where)

    def rekey(mapping: Any, name: str) -> Any:
        if not isinstance(mapping, Mapping):
            return mapping
        unknown = [k for k in mapping if k not in labels]
        if unknown:
            raise ValueError(f"{name} names label {unknown[0]!r}, which is on no core")
        return {labels[k]: v for k, v in mapping.items()}

    return spec, labels, rekey(dims, "dims"), rekey(ranks, "ranks")


def _label_kind(label: Any) -> Any:
    """What a label is, beyond equality: ``1``, ``1.0`` and ``True`` are equal (and hash alike)
    in Python, so a dict of labels merges them; their kinds differ. NumPy scalars are their
    Python kind (``np.int64(1)`` is the label ``1``)."""
    if isinstance(label, (bool, np.bool_)):
        return "bool"
    if isinstance(label, numbers.Integral):
        return "int"
    if isinstance(label, numbers.Real):
        return "real"
    if isinstance(label, numbers.Complex):
        return "complex"
    if isinstance(label, str):
        return "str"
    if isinstance(label, tuple):
        return ("tuple", tuple(_label_kind(part) for part in label))
    return type(label)


def _check_label(label: Any, seen: Any, where: str) -> None:
    """Refuse a bool label, and a label equal to an earlier one of another kind: Python's
    ``True == 1 == 1.0`` made them one index, found later as a "trace" or a wrong size."""
    if isinstance(label, (bool, np.bool_)):
        raise TypeError(f"the label {label!r} (in {where}) is a bool: in Python {label!r} == {int(label)}, so it "
                        f"would be the same index as a label {int(label)}; use another label (such as "
                        f"{str(bool(label)).lower()!r})")
    if _label_kind(label) != _label_kind(seen):
        raise ValueError(f"labels {seen!r} and {label!r} (in {where}) are equal in Python ({seen!r} == {label!r}), "
                         "so they would name the same index; use labels that differ, or the same label for one "
                         "index")


def _dtype_kind(dtype_name: str) -> str:
    """NumPy's kind letter of a dtype name; ``"f"`` for floats NumPy lacks or knows only as
    opaque ``"V"`` types (torch's ``bfloat16``; ml_dtypes, imported by JAX among others,
    registers ``bfloat16`` and the float8 types with NumPy as kind ``"V"``)."""
    if dtype_name.startswith(("bfloat", "float")):
        return "f"
    try:
        return np.dtype(dtype_name).kind
    except TypeError:
        return "V"


def _is_floating(dtype_name: str) -> bool:
    """Whether a core of this dtype is floating or complex."""
    return _dtype_kind(dtype_name) in "fc"


def _check_core_dtype(name: str, pos: int) -> None:
    """Cores hold numbers (bool, int, float, complex); strings and objects are refused."""
    try:
        kind = np.dtype(name).kind
    except TypeError:  # a framework-only dtype such as torch's bfloat16: numeric
        return
    # ml_dtypes (imported by JAX, among others) registers bfloat16 and float8 types with NumPy as kind "V"
    if kind not in "biufc" and not name.startswith(("bfloat", "float")):
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


def _check_representable(scale: float, std: float, dtype: str) -> None:
    """Refuse a ``scale`` whose cores or contraction overflow or underflow ``dtype``.

    Entries reach a few standard deviations and partial contractions lie between the core
    scale ``std`` and the output ``scale``; a margin of 100 on both keeps every one finite and
    nonzero instead of handing back a network of infinities or zeros.
    """
    # bfloat16 shares float32's exponent range (NumPy has no bfloat16)
    info = np.finfo("float32" if dtype == "bfloat16" else dtype)
    low, high = float(info.tiny) * 100, float(info.max) / 100
    for value, what in ((scale, "scale"), (std, "the cores' standard deviation")):
        if not low <= value <= high:
            raise ValueError(
                f"scale={scale:g} does not fit {dtype}: {what} would be {value:.3g}, outside the "
                f"safe range [{low:.3g}, {high:.3g}] of {dtype}; choose a scale nearer 1 or a wider dtype"
            )


def _check_memory(entries: int, spec: str) -> None:
    """Refuse random cores that cannot fit in memory (drawn in float64) before allocating."""
    need = 8 * entries
    total = host_memory()
    if total is not None and need > total:
        raise ValueError(
            f"the cores of {spec!r} would hold {entries:,} entries ({need / 2**30:,.1f} GiB as float64), more "
            f"than this machine's {total / 2**30:,.1f} GiB of memory; use smaller sizes or ranks"
        )


def _check_dense_memory(entries: int, dtype: str, spec: str) -> None:
    """Refuse a contraction to the full tensor that cannot fit in host memory, before it starts:
    a TT of 2^64 entries failed deep inside NumPy ("Unable to allocate 48.0 GiB for an array with
    shape (12, 536870912)"), and one of 2^30 entries took 15.6 GB of a 23 GB machine."""
    total = host_memory()
    size = {"float16": 2, "bfloat16": 2, "float32": 4, "complex64": 8, "complex128": 16}.get(dtype, 8)
    if total is not None and entries * size > total:
        raise ValueError(
            f"to_tensor: the full tensor of {_short_spec(spec)!r} (or a step of its contraction) holds "
            f"{entries:,} entries ({entries * size / 2**30:,.1f} GiB as {dtype}), more than this machine's "
            f"{total / 2**30:,.1f} GiB of memory; contract the network with the vectors or matrices you need "
            "instead (Network.contract), or work with its cores")


def _check_ndim(shape: Sequence[int]) -> None:
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


def _leaf_copy(core: Any, memo: dict) -> Any:
    """``copy.deepcopy(core)``, and for a non-leaf torch tensor a detached copy that requires
    gradients as it did (what pickling a non-leaf tensor gives)."""
    if getattr(core, "grad_fn", None) is not None:
        if id(core) not in memo:
            memo[id(core)] = core.detach().clone().requires_grad_(core.requires_grad)
        return memo[id(core)]
    return copy.deepcopy(core, memo)


def _kept_indices(sel: Any, size: int, bond: str, be: Backend) -> np.ndarray:
    """The kept positions of one bond from what :meth:`Network.prune` was given: integer
    indices, or a mask of the bond's length (bool, or floats that are all 0 or 1). Floats are
    never read as indices (``[1.0, 0.0]`` keeps index 0), and a non-binary float mask such as
    ``[0.5, ...]`` is refused rather than guessed."""
    array = isinstance(sel, np.ndarray) or (hasattr(sel, "shape") and hasattr(sel, "dtype"))
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
    binary = sel.shape == (size,) and bool(np.all((idx == 0) | (idx == 1)))
    values, counts = np.unique(idx, return_counts=True)
    if len(values) != len(idx):  # (before the 0/1 check: [0, 0, 1] is a repeat, not a dtype question)
        repeated = values[counts > 1].tolist()
        which = f"index {repeated[0]}" if len(repeated) == 1 else \
            "indices " + ", ".join(map(str, repeated[:-1])) + f" and {repeated[-1]}"
        raise ValueError(f"kept indices for bond {bond!r} repeat {which} ({idx.tolist()}); list each kept index "
                         "once" + ("; a 0/1 mask must be boolean (mask.astype(bool), mask.bool())" if binary else ""))
    if binary and array:
        # an integer 0/1 array of the bond's length ((phi > 0.5).long()): as indices it keeps other
        # entries than as a mask ([1, 0] keeps both, [0] on a rank-1 bond keeps it), silently
        raise ValueError(f"keep for bond {bond!r} is an integer array of the bond's length holding only 0 and 1 "
                         f"({idx.tolist()}): integers are read as indices, so a 0/1 mask in an integer dtype would "
                         "keep other entries than it means. Pass a mask as booleans (mask.bool(), "
                         "mask.astype(bool)) and indices as a list")
    if idx.min() < 0 or idx.max() >= size:
        raise ValueError(f"kept indices for bond {bond!r} must lie in [0, {size}); got {idx.tolist()}")
    return idx


_BACKEND_NAMES = ("numpy", "torch", "cupy")


def _to_argument(arg: Any) -> tuple[str, Any]:
    """Classify a positional argument of :meth:`Network.to` (without importing torch)."""
    if isinstance(arg, Network):
        return "like", (arg.backend, arg.device, arg.dtype)
    module = type(arg).__module__.split(".")[0]
    if module in ("torch", "cupy", "numpy") and hasattr(arg, "shape") and hasattr(arg, "dtype"):
        be = get_backend("cupy" if module == "cupy" else module)
        if be.is_array(arg):
            return "like", (be.name, be.device_of(arg), be.dtype_name(arg))
    if module == "torch" and type(arg).__name__ == "dtype":
        return "dtype", arg
    if module == "torch" and type(arg).__name__ == "device":
        return "device", arg
    if isinstance(arg, np.dtype) or isinstance(arg, type) and issubclass(arg, np.generic):
        return "dtype", arg
    if isinstance(arg, str):
        if arg in _BACKEND_NAMES:
            return "backend", arg
        head = arg.split(":")[0]
        if head in ("cpu", "cuda", "mps", "xpu", "meta", "hip") and (head == arg or arg[len(head) + 1:].isdigit()):
            return "device", arg
        if _known_dtype_name(arg.replace("torch.", "")):
            return "dtype", arg
    raise ValueError(f"Network.to cannot read {arg!r}: give a backend name {_BACKEND_NAMES}, a dtype "
                     "(e.g. 'float32' or torch.float32), a device (e.g. 'cpu', 'cuda:0' or torch.device), "
                     "or an array or Network to match")


def _device_name(device: Any) -> str:
    if type(device).__module__.split(".")[0] == "torch" and type(device).__name__ == "device":
        return str(device)
    if isinstance(device, str):
        return device
    if isinstance(device, int) and not isinstance(device, bool):
        return f"cuda:{device}"
    raise TypeError(f"device must be a string such as 'cpu' or 'cuda:0', or a torch.device; got {device!r}")


def _known_dtype_name(name: str) -> bool:
    """A NumPy dtype name, or a torch one when torch is loaded (``"bfloat16"``)."""
    try:
        np.dtype(name)
        return True
    except TypeError:
        torch = sys.modules.get("torch")
        return torch is not None and type(getattr(torch, name, None)).__name__ == "dtype"


def _dtype_name(dtype: Any) -> str:
    """A NumPy-style dtype name from a name, a NumPy dtype or type, or a torch dtype (names
    NumPy lacks, such as ``"bfloat16"``, are passed on for the backend to accept or refuse)."""
    if type(dtype).__module__.split(".")[0] == "torch":
        return str(dtype).replace("torch.", "")
    if isinstance(dtype, str):
        name = dtype.replace("torch.", "")
        return np.dtype(name).name if _numpy_dtype(name) else name
    try:
        return np.dtype(dtype).name
    except TypeError:
        raise TypeError(f"unknown dtype {dtype!r}") from None


def check_dtype_conversion(target: str, source: str) -> None:
    """Refuse converting cores of dtype ``source`` to ``target`` where that loses them silently:
    floating or complex cores to an integer or bool dtype (truncated, to zeros below 1), complex
    cores to a real floating dtype (imaginary parts dropped), or any
    cores to a dtype that holds no numbers (``object``, dates, strings). Names only torch knows
    (``float8_e4m3fn``) are left for the backend to accept or refuse."""
    def kind(name: str) -> str:  # (float names NumPy does not know are floats; other unknown names "?")
        return _dtype_kind(name) if name.startswith(("bfloat", "float")) or _numpy_dtype(name) else "?"
    if kind(target) in "OMmSUV":
        raise TypeError(f"dtype {target!r} holds no numbers: tensor cores need a floating, complex or integer dtype")
    if kind(target) in "biu" and kind(source) in "fc":
        raise TypeError(f"dtype {target!r} would truncate the {source} cores (to zeros where below 1 in magnitude); "
                        "choose a floating type such as 'float32' or 'float64'")
    if kind(source) == "c" and kind(target) == "f":  # (float8 names too)
        raise TypeError(f"dtype {target!r} would drop the imaginary parts of the {source} cores (NumPy only warns, "
                        "torch warns once); choose a complex dtype, or build a network from the cores' real parts")


def _largest(name: str) -> float | None:
    """The largest finite value of a numeric dtype (None for a name NumPy does not know)."""
    if name == "bfloat16":  # float32's exponent range
        return float(np.finfo(np.float32).max)
    if not _numpy_dtype(name):
        return None
    dt = np.dtype(name)
    if dt.kind in "fc":
        return float(np.finfo(dt).max)
    if dt.kind in "iu":
        return float(np.iinfo(dt).max)
    return 1.0 if dt.kind == "b" else None


def narrows(target: str, source: str) -> bool:
    """Whether converting ``source`` values to ``target`` can lose them: a smaller largest value
    (float64 to float32 or float16, int32 to float16 or int8: overflow to infinity, or integers
    wrapping around), or signed values into an unsigned dtype (-2 as uint64)."""
    high, low = _largest(source), _largest(target)
    if high is None or low is None:
        return False
    def kind(name: str) -> str:
        return "f" if name == "bfloat16" else np.dtype(name).kind
    return low < high or (kind(source) in "if" and kind(target) == "u")  # (-2 as uint64 wraps too)


def check_narrowing(before: Sequence[Any], source: Any, after: Sequence[Any], target: Any, dtype: str) -> None:
    """Refuse a narrowing conversion to ``dtype`` that lost values: finite cores turned into
    infinities (float64 past float32's range, float32 past float16's 65504), or integers
    wrapped around (1000 as int8 is -24): a network of other values, not a result."""
    integer = _numpy_dtype(dtype) and np.dtype(dtype).kind in "iub"
    for k, (old, new) in enumerate(zip(before, after)):
        if integer:
            a = np.asarray(source.to_numpy(old))
            wrapped = np.dtype(dtype).kind == "u" and bool((a < 0).any())
            if wrapped or not np.array_equal(np.asarray(target.to_numpy(new)).astype(a.dtype), a):
                info = np.iinfo(dtype) if np.dtype(dtype).kind != "b" else None
                span = f"[{info.min}, {info.max}]" if info is not None else "{0, 1}"
                raise ValueError(f"converting core {k} to {dtype} changes its values: they leave {dtype}'s range "
                                 f"{span}; choose a wider dtype")
        elif not target.isfinite_all(new) and source.isfinite_all(old):
            raise ValueError(f"converting core {k} to {dtype} overflows: its entries exceed {dtype}'s range, and the "
                             f"network would hold infinities; choose a wider dtype or rescale the network")
        else:
            _check_underflow(k, np.asarray(source.to_numpy(old)), np.asarray(target.to_numpy(new)), dtype)


def _check_underflow(k: int, old: np.ndarray, new: np.ndarray, dtype: str) -> None:
    """Refuse a conversion that flushes every entry of a nonzero core to zero (the network would
    be zero), and warn when the entries flushed to zero carry more of the core's norm than
    ``dtype``'s rounding: values below its smallest subnormal (6e-8 for float16) are lost."""
    if old.dtype.kind not in "fc" or new.dtype.kind not in "fc" or not old.size:
        return
    flushed = (new == 0) & (old != 0)
    if not flushed.any():
        return
    if not new.any():
        raise ValueError(f"converting core {k} to {dtype} flushes every entry to zero (its largest is "
                         f"{float(np.abs(old).max()):.3g}, below {dtype}'s smallest value): the network would be zero; "
                         "choose a wider dtype or rescale the cores (multiply this core by a power of two and divide "
                         "another by it)")
    with np.errstate(over="ignore", under="ignore"):
        lost = float(np.linalg.norm(old[flushed].astype(np.float64)))
        total = float(np.linalg.norm(old.astype(np.float64).ravel()))
    eps = 2.0**-8 if dtype == "bfloat16" else float(np.finfo(np.dtype(dtype)).eps) if _numpy_dtype(dtype) else 0.0
    if total > 0 and lost > eps * total:
        warn(f"converting core {k} to {dtype} flushes {int(flushed.sum())} of its {old.size} entries to zero "
             f"(below {dtype}'s smallest value), {lost / total:.2g} of the core's norm; choose a wider dtype or "
             "rescale the cores")


def _numpy_dtype(name: str) -> bool:
    try:
        np.dtype(name)
        return True
    except TypeError:
        return False
