"""Conversion between tnmars networks and tensorly's decomposition objects.

tensorly represents five fixed topologies with dedicated classes; tnmars represents any
einsum graph. :func:`from_tensorly` turns each tensorly object into the network its
built-in constructor would make (same spec letters as :meth:`Network.cp`,
:meth:`Network.tucker`, :meth:`Network.tt`, :meth:`Network.tr`, :meth:`Network.tt_matrix`),
so rank selection can start from a tensorly decomposition. :func:`to_tensorly` goes back
for any network whose graph *is* one of those topologies, whatever its letters or the
order of indices inside each term; anything else is refused with a ``ValueError``.

Arrays are passed through without copying, so a tensorly object holding torch tensors
becomes a torch-backend network and vice versa (tensorly's own backend must match to call
its functions on the result).

>>> import tensorly as tl
>>> import numpy as np
>>> from tnmars.interop.tensorly import from_tensorly, to_tensorly
>>> tt = tl.random.random_tt((3, 4, 5), rank=[1, 2, 2, 1], random_state=0)
>>> net = from_tensorly(tt)
>>> net.spec, net.ranks
('aA,AbB,Bc->abc', (2, 2))
>>> np.allclose(tl.tt_to_tensor(to_tensorly(net)), net.to_tensor())
True
"""
from __future__ import annotations

from typing import Any

from ..backends import Backend, infer_backend
from ..contract import _common_dtype
from ..network import Network, cp_spec, tr_spec, tt_spec, tucker_spec

__all__ = ["from_tensorly", "to_tensorly", "topology"]


def _tensorly_classes():
    try:
        from tensorly.cp_tensor import CPTensor
        from tensorly.tr_tensor import TRTensor
        from tensorly.tt_matrix import TTMatrix
        from tensorly.tt_tensor import TTTensor
        from tensorly.tucker_tensor import TuckerTensor
    except ImportError as err:  # pragma: no cover - tensorly is a dependency
        raise ImportError("tensorly interop needs tensorly: pip install tensorly") from err
    return CPTensor, TuckerTensor, TTTensor, TRTensor, TTMatrix


def _check_order(d: int, what: str, minimum: int = 1) -> None:
    # no upper limit: the built-in specs continue past 'z' / 'Z' with other Unicode letters
    # (a 30-site TT used to be refused here while Network.tt built it)
    if d < minimum:
        raise ValueError(f"a {what} with {d} factor(s) cannot be a tnmars network (needs at least {minimum})")


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in x.shape)


# -------------------------------------------------------------------------- tensorly -> tnmars
def from_tensorly(obj: Any) -> Network:
    """A :class:`~tnmars.Network` equal to a tensorly decomposition.

    Parameters
    ----------
    obj
        A ``CPTensor`` (its weights are folded into the first factor), ``TuckerTensor``,
        ``TTTensor``, ``TRTensor`` or ``TTMatrix``.

    Returns
    -------
    Network
        With the spec of the matching built-in constructor, e.g. ``'aA,bA,cA->abc'`` for a
        3-way CP tensor; its cores are the tensorly factors (TT boundary ranks of 1 are
        squeezed away), on the same backend.

    Examples
    --------
    >>> import tensorly as tl
    >>> cp = tl.random.random_cp((3, 4, 5), rank=2, random_state=0)
    >>> from_tensorly(cp).spec
    'aA,bA,cA->abc'
    """
    CPTensor, TuckerTensor, TTTensor, TRTensor, TTMatrix = _tensorly_classes()
    if isinstance(obj, CPTensor):
        weights, factors = obj
        factors = list(factors)
        d = len(factors)
        _check_order(d, "CP tensor", 2)
        be = infer_backend(factors)
        if weights is not None:
            rank = _shape(factors[0])[1]
            weights = be.asarray(weights)
            if be.dtype_name(weights) != be.dtype_name(factors[0]):
                # weights of another dtype: every factor takes the common one, as tensorly's reconstruction
                # does (a cast of the weights to the factors' dtype dropped imaginary parts with only
                # NumPy's warning, truncated 0.5 to 0 without one, and turned float64 weights of 1e5 on
                # float16 factors into inf)
                factors, _ = _common_dtype([*factors, weights], be)
                weights = factors.pop()
            factors[0] = factors[0] * be.reshape(be.asarray(weights, dtype=be.dtype_name(factors[0])), (1, rank))
        return Network(cp_spec(d), cores=_one_dtype(factors))
    if isinstance(obj, TuckerTensor):
        core, factors = obj
        factors = list(factors)
        d = len(factors)
        _check_order(d, "Tucker tensor")
        return Network(tucker_spec(d), cores=_one_dtype([core, *factors]))
    if isinstance(obj, TTMatrix):
        return _from_chain(list(obj), width=2, what="TT-matrix")
    if isinstance(obj, TTTensor):
        return _from_chain(list(obj), width=1, what="TT tensor")
    if isinstance(obj, TRTensor):
        factors = list(obj)
        d = len(factors)
        _check_order(d, "TR tensor", 2)
        return Network(tr_spec(d), cores=_one_dtype(factors))
    raise TypeError(
        f"from_tensorly expects a tensorly CPTensor, TuckerTensor, TTTensor, TRTensor or TTMatrix; "
        f"got {type(obj).__name__}"
    )


def _from_chain(factors: list[Any], width: int, what: str) -> Network:
    d = len(factors)
    _check_order(d * width, what)
    be = infer_backend(factors)
    first, last = _shape(factors[0]), _shape(factors[-1])
    if first[0] != 1 or last[-1] != 1:
        raise ValueError(f"a {what} must have boundary ranks 1; got {first[0]} and {last[-1]}")
    cores = list(factors)
    cores[0] = be.reshape(cores[0], first[1:] if d > 1 else first[1:-1])
    if d > 1:
        cores[-1] = be.reshape(cores[-1], last[:-1])
    return Network(tt_spec(d, width), cores=_one_dtype(cores))


def _one_dtype(cores: list[Any]) -> list[Any]:
    """The cores in their common dtype (an integer Tucker core with float factors, float32 and
    float64 factors): the tensor tensorly reconstructs from them, which a Network of mixed
    dtypes would refuse."""
    be = infer_backend(cores)
    if len({be.dtype_name(c) for c in cores}) > 1:
        cores, _ = _common_dtype(cores, be)
    return cores


# -------------------------------------------------------------------------- tnmars -> tensorly
def topology(net: Network) -> str | None:
    """The tensorly format a network's graph matches: ``"cp"``, ``"tucker"``, ``"tt"``,
    ``"tr"``, ``"tt_matrix"``, or ``None`` for any other graph.

    Summed legs of size 1 (a TT's boundary legs in ``'xaA,AbB,Bcy->abc'``) are left out first.
    A two-core chain is both a CP and a TT graph; it counts as TT when its second term
    lists the bond first (as :meth:`Network.tt` writes ``'aA,Ab'``) and as CP otherwise
    (``'aA,bA'``, as :meth:`Network.cp` writes it).

    >>> topology(Network.tr((3, 4, 5), 2))
    'tr'
    >>> topology(Network.cp((3, 4), 2)), topology(Network.tt((3, 4), 2))
    ('cp', 'tt')
    >>> topology(Network("iab,jbc,kca,lc->ijkl", shape=(2, 3, 4, 5), ranks=2)) is None
    True
    """
    net = _without_unit_legs(net)
    names = _matches(net)
    if not names:
        return None
    if set(names) == {"cp", "tt"}:
        second = net.inputs[1]
        return "tt" if second and second[0] in net.bonds else "cp"
    return names[0]


def _modes_along_chain(net: Network) -> tuple[str, bool] | None:
    """The open modes in the order a chain or a ring of cores visits them (each core one open
    mode, each bond between two cores; a ring from the core of the output's first mode), and
    whether it is a ring, where that order is not the output's; None otherwise."""
    terms = _terms(net)
    if net.num_cores < 2 or any(len(opens) != 1 for opens, _ in terms):
        return None
    holders = {b: net.terms_with(b) for b in net.bonds}
    if any(len(h) != 2 for h in holders.values()):
        return None
    degrees = [len(bonds) for _, bonds in terms]
    if len(holders) == net.num_cores - 1 and sorted(degrees)[-1] <= 2 and degrees.count(1) == 2:
        ring, start = False, min(k for k, n in enumerate(degrees) if n == 1)
    elif len(holders) == net.num_cores and net.num_cores > 2 and all(n == 2 for n in degrees):
        ring, start = True, next(k for k, (opens, _) in enumerate(terms) if net.output[0] in opens)
    else:
        return None
    order, previous, k = [], None, start
    while k is not None and len(order) < net.num_cores:
        order.append(next(iter(terms[k][0])))
        # (bonds in the term's order: a ring is walked the same way in every process)
        step = [j for b in net.inputs[k] if b in holders for j in holders[b] if j not in (k, previous)]
        previous, k = k, (step[0] if step else None)
    chain = "".join(order)
    if len(set(chain)) != net.num_cores or chain in (net.output, net.output[::-1]):
        return None
    return chain, ring


def _chain_hint(net: Network) -> str:
    """What to do with a tensor train or ring whose output lists its modes out of the order its
    cores visit them (what a structure search returns for a chain such as 0-2-1-3, or a ring
    0-2-1-3-0): tensorly's ``TTTensor`` and ``TRTensor`` hold the modes in that order. Empty
    for any other network."""
    found = _modes_along_chain(net)
    if found is None:
        return ""
    chain, ring = found
    spec = ",".join(net.inputs) + "->" + chain
    kind, cls = ("tensor ring whose loop", "TRTensor") if ring else ("tensor train whose chain", "TTTensor")
    return (f": it is a {kind} visits the modes in the order {chain!r}, not the output's "
            f"{net.output!r}, and tensorly's {cls} holds them in that order. Convert "
            f"tnmars.Network({spec!r}, cores=net.cores), whose tensor is this one's with its modes in that "
            "order (transpose tensorly's back)")


def _without_unit_legs(net: Network) -> Network:
    """``net`` without its summed legs of size 1 (indices on one core only and not in the
    output, such as the boundary legs of a TT written ``'xaA,AbB,Bcy->abc'``): they change
    nothing, and tensorly's classes have no place for them."""
    legs = {c for t in net.inputs for c in t if c not in net.output and c not in net.bonds}
    if not legs:  # (a Network refuses summed legs of other sizes)
        return net
    be = net.backend_impl
    inputs = ["".join(c for c in t if c not in legs) for t in net.inputs]
    cores = [be.reshape(core, tuple(net.dims[c] for c in t)) for core, t in zip(net.cores, inputs)]
    return Network(",".join(inputs) + "->" + net.output, cores=cores, optimize=net.optimize)


def _matches(net: Network) -> list[str]:
    return [name for name, finder in _FINDERS if finder(net) is not None]


def _terms(net: Network) -> list[tuple[set[str], set[str]]]:
    """Per core: (open modes, bonds)."""
    bonds = set(net.bonds)
    return [({c for c in t if c not in bonds}, {c for c in t if c in bonds}) for t in net.inputs]


def _find_cp(net: Network):
    if len(net.bonds) != 1 or net.num_cores < 2:
        return None
    (bond,) = net.bonds
    owner = {}
    for k, (opens, bonds) in enumerate(_terms(net)):
        if bonds != {bond} or len(opens) != 1 or len(net.inputs[k]) != 2:
            return None
        mode = next(iter(opens))
        if mode in owner:  # an open index on two cores (a Hadamard product): not CP
            return None
        owner[mode] = k
    return [owner[c] for c in net.output], bond


def _find_tucker(net: Network):
    terms = _terms(net)
    cores = [k for k, (opens, bonds) in enumerate(terms) if not opens]
    if len(cores) != 1:
        return None
    (c,) = cores
    core_term = net.inputs[c]
    if len(set(core_term)) != len(core_term) or set(core_term) != set(net.bonds):
        return None
    factor_of: dict[str, int] = {}
    for k, (opens, bonds) in enumerate(terms):
        if k == c:
            continue
        if len(opens) != 1 or len(bonds) != 1 or len(net.inputs[k]) != 2:
            return None
        mode = next(iter(opens))
        if mode in factor_of:  # two factors on one mode: not Tucker
            return None
        factor_of[mode] = k
    factors = [factor_of[m] for m in net.output]
    bond_order = [next(iter(terms[k][1])) for k in factors]
    if len(set(bond_order)) != len(bond_order):
        return None
    return c, factors, bond_order


def _chain_order(net: Network, width: int, ring: bool):
    """Core order and (left, right) bonds of a TT (width 1), TT-matrix (width 2) or ring."""
    terms = _terms(net)
    d = net.num_cores
    out = net.output
    if len(out) != width * d or any(len(opens) != width for opens, _ in terms):
        return None
    owner = {}
    for k, (opens, _) in enumerate(terms):
        for m in opens:
            owner[m] = k
    order = [owner[m] for m in out[:d]]
    if len(set(order)) != d:
        return None
    if width == 2 and any(owner[out[d + k]] != order[k] for k in range(d)):
        return None
    for b in net.bonds:  # no hyperedges
        if len(net.terms_with(b)) != 2:
            return None
    if ring:
        if d < 2 or len(net.bonds) != d:
            return None
    elif len(net.bonds) != d - 1:
        return None

    def shared(a: int, b: int) -> set[str]:
        return terms[order[a]][1] & terms[order[b]][1]

    links: list[tuple[str, str]] = []
    if ring:
        first = shared(d - 1, 0)
        if not first or (d > 2 and len(first) != 1):
            return None
        left = min(first, key=net.inputs[order[0]].index)  # two-core ring: the bond written first
        for k in range(d):
            cand = shared(k, (k + 1) % d) - ({left} if d == 2 else set())
            if len(cand) != 1:
                return None
            right = next(iter(cand))
            links.append((left, right))
            left = right
        if links[-1][1] != links[0][0]:
            return None
    else:
        left = ""
        for k in range(d):
            if k < d - 1:
                cand = shared(k, k + 1)
                if len(cand) != 1:
                    return None
                right = next(iter(cand))
            else:
                right = ""
            if terms[order[k]][1] != {b for b in (left, right) if b}:
                return None
            links.append((left, right))
            left = right
    return order, links


def _find_tt(net: Network):
    return _chain_order(net, 1, ring=False)


def _find_tr(net: Network):
    return _chain_order(net, 1, ring=True)


def _find_tt_matrix(net: Network):
    return _chain_order(net, 2, ring=False)


_FINDERS = (("cp", _find_cp), ("tucker", _find_tucker), ("tt", _find_tt), ("tr", _find_tr),
            ("tt_matrix", _find_tt_matrix))


def _permuted(be: Backend, core: Any, term: str, wanted: str) -> Any:
    axes = [term.index(c) for c in wanted]
    return core if axes == list(range(len(axes))) else be.transpose(core, axes)


def to_tensorly(net: Network, kind: str | None = None) -> Any:
    """The tensorly object equal to ``net``, if its graph is one tensorly knows.

    CP networks give a ``CPTensor`` with unit weights, Tucker a ``TuckerTensor``, a chain
    with one open mode per core a ``TTTensor`` (boundary ranks of 1 added back), a loop a
    ``TRTensor``, and a chain with one input and one output mode per core whose output
    lists all inputs then all outputs a ``TTMatrix``. Index letters and the order of
    indices inside each term do not matter; cores are transposed as needed.

    Parameters
    ----------
    net
        The network to convert.
    kind
        Force one of ``"cp"``, ``"tucker"``, ``"tt"``, ``"tr"``, ``"tt_matrix"`` where a
        graph fits several (a two-core chain is both CP and TT); by default
        :func:`topology` decides.

    Raises
    ------
    TypeError
        If ``net`` is not a :class:`~tnmars.Network` (such as a dense array).
    ValueError
        If the graph is none of those (say a tree, a PEPS grid or several bonds between
        two cores): tensorly has no class for it.

    Examples
    --------
    >>> net = Network.tucker((3, 4, 5), 2, seed=0)
    >>> type(to_tensorly(net)).__name__
    'TuckerTensor'
    """
    if not isinstance(net, Network):
        dense = " (a dense array: decompose it first, e.g. tnmars.fit(data, ...).network)" \
            if hasattr(net, "shape") else ""
        raise TypeError(f"to_tensorly expects a tnmars Network; got {type(net).__name__}{dense}")
    CPTensor, TuckerTensor, TTTensor, TRTensor, TTMatrix = _tensorly_classes()
    closed = [b for b, r in net.bonds.items() if r == 0]
    if closed:  # tensorly's reconstructions fail on rank-0 factors ("cannot reshape array of size 0")
        raise ValueError(f"the network is the zero tensor (bond{'s' if len(closed) > 1 else ''} {', '.join(closed)} of "
                         "rank 0): tensorly's classes cannot hold it; use net.to_tensor(), or refit with min_rank=1")
    net = _without_unit_legs(net)
    if kind is None:
        kind = topology(net)
        if kind is None:
            raise ValueError(
                f"network {net.spec!r} is not a CP, Tucker, TT, TR or TT-matrix graph, so tensorly has no class for it"
                + _chain_hint(net))
    elif kind not in dict(_FINDERS):
        raise ValueError(f"kind must be one of {', '.join(dict(_FINDERS))}; got {kind!r}")
    elif kind not in _matches(net):
        raise ValueError(f"network {net.spec!r} is not a {kind} graph" + _chain_hint(net))
    be = net.backend_impl
    cores, inputs, out = net.cores, net.inputs, net.output
    if kind == "cp":
        order, bond = _find_cp(net)
        factors = [_permuted(be, cores[k], inputs[k], out[i] + bond) for i, k in enumerate(order)]
        rank = net.bonds[bond]
        weights = be.asarray(_ones(rank), dtype=net.dtype, device=None if net.backend == "numpy" else net.device)
        return CPTensor((weights, factors))
    if kind == "tucker":
        c, factors, bond_order = _find_tucker(net)
        core = _permuted(be, cores[c], inputs[c], "".join(bond_order))
        mats = [_permuted(be, cores[k], inputs[k], out[i] + bond_order[i]) for i, k in enumerate(factors)]
        if len(mats) < 2:  # tensorly's own message speaks of factors, not of the network given
            raise ValueError(f"tensorly's TuckerTensor needs at least two modes; {net.spec!r} has {len(mats)} "
                             "(an order-1 Tucker is a matrix product: use net.to_tensor())")
        return TuckerTensor((core, mats))
    d = net.num_cores
    cls, width, ring = {"tt": (TTTensor, 1, False), "tr": (TRTensor, 1, True), "tt_matrix": (TTMatrix, 2, False)}[kind]
    order, links = _chain_order(net, width, ring)
    factors = []
    for k, (left, right) in enumerate(links):
        opens = out[k] if width == 1 else out[k] + out[d + k]
        core = _permuted(be, cores[order[k]], inputs[order[k]], left + opens + right)
        if not ring:
            shape = ((1,) if not left else ()) + _shape(core) + ((1,) if not right else ())
            core = be.reshape(core, shape)
        factors.append(core)
    return cls(factors)


def _ones(n: int):
    import numpy as np

    return np.ones(n)
