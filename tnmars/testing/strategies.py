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
past 52 indices. Sizes are kept small so a full contraction stays cheap.
"""
from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from ..network import Network
from ..spec import Symbols, parse_spec

KINDS = ("chain", "loop", "star", "hyperedge", "random")
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


@st.composite
def specs(
    draw,
    min_cores: int = 2,
    max_cores: int = 7,
    kinds: Sequence[str] = KINDS,
    max_open: int = 6,
    explicit_output: bool | None = None,
    connected: bool = True,
) -> str:
    """A valid spec: every index is a bond (two or more cores) or an open mode; connected
    unless ``connected=False``."""
    kind = draw(st.sampled_from(list(kinds)))
    n = draw(st.integers(min_value=max(min_cores, 3 if kind in ("star", "hyperedge") else 2), max_value=max_cores))
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


@st.composite
def dims(draw, spec: str, min_dim: int = 1, max_dim: int = 3, min_rank: int = 1, max_rank: int = 3) -> dict[str, int]:
    """Sizes for every index of ``spec``: open modes in [min_dim, max_dim], bonds in
    [min_rank, max_rank]."""
    parsed = parse_spec(spec)
    out: dict[str, int] = {}
    for index in dict.fromkeys("".join(parsed.inputs)):
        if index in parsed.bonds:
            out[index] = draw(st.integers(min_rank, max_rank))
        else:
            out[index] = draw(st.integers(min_dim, max_dim))
    return out


@st.composite
def networks(
    draw,
    backend: str = "numpy",
    dtype: str = "float64",
    min_cores: int = 2,
    max_cores: int = 7,
    kinds: Sequence[str] = KINDS,
    max_dim: int = 3,
    max_rank: int = 3,
    connected: bool = True,
) -> Network:
    """A :class:`~tnmars.Network` with random cores on ``backend`` (see :func:`specs`)."""
    spec = draw(specs(min_cores=min_cores, max_cores=max_cores, kinds=kinds, connected=connected))
    sizes = draw(dims(spec, max_dim=max_dim, max_rank=max_rank))
    seed = draw(st.integers(0, 2**31 - 1))
    return Network(spec, dims=sizes, backend=backend, dtype=dtype, seed=seed)
