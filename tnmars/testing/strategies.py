"""Hypothesis strategies for tensor networks: specs, dims and whole networks.

>>> from hypothesis import given
>>> from tnmars.testing.strategies import networks
>>> @given(networks())
... def test_contracts(net):
...     assert net.to_tensor().shape == net.shape

Specs have 2-7 cores by default (any number on request) in one of five shapes: a chain, a
loop, a star, a network with a hyperedge (an index on three or more cores), or a random
graph. With ``connected=True`` (the default) every spec is one connected graph: cores that
the shape leaves apart are joined by extra bonds. With ``connected=False`` nothing is added,
and the hyperedge and random shapes are often disconnected (:func:`is_connected` tells).
Indices are ``a``-``z`` / ``A``-``Z`` and then other Unicode letters, so large networks go
past 52 indices. Sizes are kept small so a full contraction stays cheap, and no core holds
more than ``max_core_entries`` entries (2**16 by default: the centre of a 40-core star
would otherwise hold 3**39). Arguments are checked when the strategy is built; a range
no spec can satisfy is a ``hypothesis.errors.InvalidArgument`` naming it.
"""
from __future__ import annotations

from collections.abc import Sequence
from math import prod

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from .._checks import floating_dtype
from ..network import Network
from ..spec import Symbols, parse_spec

KINDS = ("chain", "loop", "star", "hyperedge", "random")
#: the fewest cores each kind needs (a chain of one core is a single tensor)
MIN_CORES = {"chain": 1, "loop": 2, "star": 3, "hyperedge": 3, "random": 2}
#: the largest core :func:`dims` and :func:`networks` draw by default
MAX_CORE_ENTRIES = 2**16
_OPEN = Symbols("abcdefghijklmnopqrstuvwxyz", offset=52, step=2)
_BOND = Symbols("ABCDEFGHIJKLMNOPQRSTUVWXYZ", offset=53, step=2)


def is_connected(spec: str) -> bool:
    """Whether every core of ``spec`` is reachable from every other through shared indices.

    >>> is_connected("ab,bc"), is_connected("ab,cd")
    (True, False)
    """
    inputs = parse_spec(spec).inputs
    reached, frontier = {0}, [0]
    while frontier:
        k = frontier.pop()
        for j, term in enumerate(inputs):
            if j not in reached and set(term) & set(inputs[k]):
                reached.add(j)
                frontier.append(j)
    return len(reached) == len(inputs)


def _check_int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidArgument(f"{name} must be an integer >= {low}; got {value!r}")
    return value


def _check_range(low: int, high: int, low_name: str, high_name: str) -> None:
    if high < low:
        raise InvalidArgument(f"{high_name}={high} is below {low_name}={low}")


def specs(
    min_cores: int = 2,
    max_cores: int = 7,
    kinds: Sequence[str] = KINDS,
    max_open: int = 6,
    explicit_output: bool | None = None,
    connected: bool = True,
) -> st.SearchStrategy[str]:
    """A valid spec: every index is a bond (two or more cores) or an open mode; connected
    unless ``connected=False``.

    Each kind needs a few cores (:data:`MIN_CORES`: a chain 1, a loop or a random graph 2, a
    star or a hyperedge 3); kinds that cannot fit in ``max_cores`` are left out, so
    ``specs(max_cores=2)`` draws chains, loops and random graphs (it used to fail inside
    hypothesis with "Cannot have max_value=2 < min_value=3" whenever it drew a star), and
    ``specs(min_cores=1, max_cores=1)`` draws single cores.
    """
    _check_int(min_cores, "min_cores", 1)
    _check_int(max_cores, "max_cores", 1)
    _check_range(min_cores, max_cores, "min_cores", "max_cores")
    _check_int(max_open, "max_open", 0)
    if isinstance(kinds, str):
        kinds = [kinds]
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in MIN_CORES]
    if not kinds or unknown:
        raise InvalidArgument(f"kinds must be a non-empty list of {KINDS}; got {kinds!r}")
    feasible = [k for k in kinds if MIN_CORES[k] <= max_cores]
    if not feasible:
        raise InvalidArgument(f"max_cores={max_cores} is too few for kinds {kinds} (they need {MIN_CORES})")
    return _specs(min_cores, max_cores, feasible, max_open, explicit_output, connected)


@st.composite
def _specs(draw, min_cores, max_cores, kinds, max_open, explicit_output, connected) -> str:
    kind = draw(st.sampled_from(kinds))
    n = draw(st.integers(min_value=max(min_cores, MIN_CORES[kind]), max_value=max_cores))
    terms: list[list[str]] = [[] for _ in range(n)]
    bonds = iter(_BOND)
    if kind in ("chain", "loop"):
        for k in range(n - 1):
            b = next(bonds)
            terms[k].append(b)
            terms[k + 1].append(b)
        if kind == "loop":
            b = next(bonds)
            terms[-1].append(b)
            terms[0].append(b)
    elif kind == "star":
        for k in range(1, n):
            b = next(bonds)
            terms[0].append(b)
            terms[k].append(b)
    elif kind == "hyperedge":
        members = draw(st.lists(st.integers(0, n - 1), min_size=3, max_size=n, unique=True))
        h = next(bonds)
        for k in members:
            terms[k].append(h)
        for k in range(n - 1):  # plus some links of a chain
            if draw(st.booleans()):
                b = next(bonds)
                terms[k].append(b)
                terms[k + 1].append(b)
    else:
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        chosen = draw(st.lists(st.sampled_from(pairs), min_size=1, max_size=min(len(pairs), n + 6), unique=True))
        for i, j in chosen:
            b = next(bonds)
            terms[i].append(b)
            terms[j].append(b)
    if connected:
        _join_components(draw, terms, bonds)
    # open modes: at most max_open over the network, and every core ends up non-empty
    opens = iter(_OPEN)
    budget = max_open
    for k in range(n):
        want = draw(st.integers(0, 2)) if budget > 0 else 0
        if not terms[k]:
            want = max(want, 1)
        for _ in range(min(want, max(budget, 1 if not terms[k] else 0))):
            terms[k].append(next(opens))
            budget -= 1
    for k in range(n):
        terms[k] = draw(st.permutations(terms[k]))
    spec = ",".join("".join(t) for t in terms)
    parsed = parse_spec(spec)
    use_output = draw(st.booleans()) if explicit_output is None else explicit_output
    if use_output:
        out = "".join(draw(st.permutations(list(parsed.output))))
        spec = spec + "->" + out
    return spec


def _join_components(draw, terms: list[list[str]], bonds) -> None:
    """Add a bond from each core outside the first core's component to a core inside it."""
    n = len(terms)
    while True:
        reached, frontier = {0}, [0]
        while frontier:
            k = frontier.pop()
            for j in range(n):
                if j not in reached and set(terms[j]) & set(terms[k]):
                    reached.add(j)
                    frontier.append(j)
        outside = [j for j in range(n) if j not in reached]
        if not outside:
            return
        b = next(bonds)
        terms[draw(st.sampled_from(sorted(reached)))].append(b)
        terms[outside[0]].append(b)


def dims(
    spec: str,
    min_dim: int = 1,
    max_dim: int = 3,
    min_rank: int = 1,
    max_rank: int = 3,
    max_core_entries: int | None = MAX_CORE_ENTRIES,
) -> st.SearchStrategy[dict[str, int]]:
    """Sizes for every index of ``spec``: open modes in [min_dim, max_dim], bonds in
    [min_rank, max_rank], summed legs (on one core, not in the output) 1.

    Indices are sized in order of appearance, each no larger than keeps every core it is on
    within ``max_core_entries`` entries with the indices not yet sized at their minimum
    (``None``: no limit). Below the limit the draws are those of the plain ranges; above
    it, sizes shrink toward the minimum, which always holds.
    """
    parsed = parse_spec(spec)
    for value, name in ((min_dim, "min_dim"), (max_dim, "max_dim"), (min_rank, "min_rank"), (max_rank, "max_rank")):
        _check_int(value, name, 1)  # a Network's sizes are positive: prune a bond to test size 0
    _check_range(min_dim, max_dim, "min_dim", "max_dim")
    _check_range(min_rank, max_rank, "min_rank", "max_rank")
    if max_core_entries is not None:
        _check_int(max_core_entries, "max_core_entries", 1)
    return _dims(parsed, min_dim, max_dim, min_rank, max_rank, max_core_entries)


@st.composite
def _dims(draw, parsed, min_dim, max_dim, min_rank, max_rank, max_core_entries) -> dict[str, int]:
    indices = list(dict.fromkeys("".join(parsed.inputs)))
    bounds = {}
    for index in indices:
        if index in parsed.bonds:
            bounds[index] = (min_rank, max_rank)
        elif index in parsed.summed:
            bounds[index] = (1, 1)
        else:
            bounds[index] = (min_dim, max_dim)
    out = {index: low for index, (low, _) in bounds.items()}
    for index in indices:
        low, high = bounds[index]
        if max_core_entries is not None:
            for term in parsed.inputs:
                if index in term:
                    rest = prod(out[c] for c in term if c != index)
                    high = min(high, max(low, max_core_entries // rest))
        out[index] = draw(st.integers(low, high))
    return out


def networks(
    backend: str = "numpy",
    dtype: str = "float64",
    min_cores: int = 2,
    max_cores: int = 7,
    kinds: Sequence[str] = KINDS,
    max_dim: int = 3,
    max_rank: int = 3,
    connected: bool = True,
    max_open: int = 6,
    max_core_entries: int | None = MAX_CORE_ENTRIES,
) -> st.SearchStrategy[Network]:
    """A :class:`~tnmars.Network` with random cores on ``backend`` (see :func:`specs` and
    :func:`dims`; ``max_core_entries`` keeps e.g. the centre of a large star constructible)."""
    spec_strategy = specs(min_cores=min_cores, max_cores=max_cores, kinds=kinds, max_open=max_open,
                          connected=connected)
    _check_int(max_dim, "max_dim", 1)
    _check_int(max_rank, "max_rank", 1)
    if max_core_entries is not None:
        _check_int(max_core_entries, "max_core_entries", 1)
    # backend and dtype checked now, by name, without importing a framework (an outside probe: a complex
    # dtype or an unknown backend failed at the first draw, as if the user's test had; a trial build
    # there made networks(backend="cupy") fail the collection of a module whose test is skipped without it)
    if backend not in ("numpy", "torch", "cupy"):
        raise InvalidArgument(f"networks(backend={backend!r}): unknown backend; choose one of numpy, torch, cupy")
    try:
        canonical = floating_dtype(dtype)
    except TypeError as err:
        raise InvalidArgument(f"networks(dtype={dtype!r}): {err}") from err
    if canonical == "bfloat16" and backend != "torch":
        raise InvalidArgument(f"networks(backend={backend!r}, dtype='bfloat16'): {backend} has no bfloat16; use "
                              "backend='torch' for bfloat16 cores, or float16/float32")
    return _networks(spec_strategy, backend, dtype, max_dim, max_rank, max_core_entries)


@st.composite
def _networks(draw, spec_strategy, backend, dtype, max_dim, max_rank, max_core_entries) -> Network:
    spec = draw(spec_strategy)
    sizes = draw(dims(spec, max_dim=max_dim, max_rank=max_rank, max_core_entries=max_core_entries))
    seed = draw(st.integers(0, 2**31 - 1))
    return Network(spec, dims=sizes, backend=backend, dtype=dtype, seed=seed)
