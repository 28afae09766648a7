"""Parsing and validation of einsum-graph specs such as ``"ij,jkl,lm->ikm"``.

A spec names one term per core; each letter is an index. An index present in two or more
terms and absent from the output is a *bond* (three or more terms: a hyperedge, like CP's
rank); the output's indices are the *open modes*. Without ``->`` the output follows
NumPy's implicit rule: indices that occur exactly once, in alphabetical order.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class ParsedSpec:
    """A validated spec: input terms, output term, bonds and open modes (in order)."""

    inputs: tuple[str, ...]
    output: str
    #: bond indices, in order of first appearance
    bonds: tuple[str, ...]

    @property
    def spec(self) -> str:
        return ",".join(self.inputs) + "->" + self.output

    def terms_with(self, index: str) -> tuple[int, ...]:
        """Positions of the terms (cores) that carry ``index``."""
        return tuple(i for i, term in enumerate(self.inputs) if index in term)


@lru_cache(maxsize=1024)
def parse_spec(spec: str) -> ParsedSpec:
    """Parse and validate ``spec``; every problem is a ``ValueError`` naming it.

    >>> parse_spec("ij,jkl,lm").spec
    'ij,jkl,lm->ikm'
    >>> parse_spec("ar,br,cr").bonds
    ('r',)
    """
    if not isinstance(spec, str):
        raise TypeError(f"a spec is a string such as 'ij,jk'; got {type(spec).__name__}")
    text = "".join(spec.split())
    if not text:
        raise ValueError("empty spec: give one comma-separated term per core, e.g. 'ij,jk'")
    if text.count("->") > 1:
        raise ValueError(f"spec {spec!r} has more than one '->'")
    lhs, arrow, rhs = text.partition("->")
    if not lhs:
        raise ValueError(f"spec {spec!r} has no input terms before '->'")
    inputs = tuple(lhs.split(","))
    for pos, term in enumerate(inputs):
        if not term:
            raise ValueError(f"spec {spec!r}: term {pos} is empty (every core needs at least one index)")
        bad = sorted(set(term) - LETTERS)
        if bad:
            raise ValueError(
                f"spec {spec!r}: term {term!r} has non-letter index {bad[0]!r}; indices are single letters a-z, A-Z"
            )
        repeated = sorted(c for c in set(term) if term.count(c) > 1)
        if repeated:
            raise ValueError(
                f"spec {spec!r}: index {repeated[0]!r} is repeated inside term {term!r} (traces are not supported)"
            )
    counts: dict[str, int] = {}
    for term in inputs:
        for c in term:
            counts[c] = counts.get(c, 0) + 1
    if arrow:
        output = rhs
        bad = sorted(set(output) - LETTERS)
        if bad:
            raise ValueError(f"spec {spec!r}: output has non-letter index {bad[0]!r}")
        repeated = sorted(c for c in set(output) if output.count(c) > 1)
        if repeated:
            raise ValueError(f"spec {spec!r}: index {repeated[0]!r} is repeated in the output")
        missing = [c for c in output if c not in counts]
        if missing:
            raise ValueError(f"spec {spec!r}: output index {missing[0]!r} is absent from the inputs")
        dangling = [c for c, n in counts.items() if n == 1 and c not in output]
        if dangling:
            raise ValueError(
                f"spec {spec!r}: index {dangling[0]!r} is in one core only and not in the output; "
                "it would be summed away (keep it in the output or share it with another core)"
            )
    else:
        output = "".join(sorted(c for c, n in counts.items() if n == 1))
    seen: list[str] = []
    for term in inputs:
        for c in term:
            if counts[c] >= 2 and c not in output and c not in seen:
                seen.append(c)
    return ParsedSpec(inputs=inputs, output=output, bonds=tuple(seen))
