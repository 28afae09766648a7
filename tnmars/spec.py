"""Parsing and validation of einsum specs such as ``"ij,jkl,lm->ikm"``.

An index is one character: an ASCII letter or any non-ASCII character (opt_einsum's symbols
past the 52 letters are such), so a spec is not limited to 52 indices; :func:`symbol`
numbers as many as a network needs. ASCII digits and punctuation are refused as the typos
they usually are; ``,`` ``->`` ``...`` are syntax and ASCII whitespace is ignored. Three
readings of the same syntax:

- :func:`parse_spec`, a tensor network: one non-empty term per core, no index repeated inside
  a term. An index on two or more terms and absent from the output is a *bond*; one on a
  single term and absent from the output is *summed* (a dangling leg such as a boundary rank
  of 1). Without ``->`` the output is NumPy's: indices that occur once, in code-point order.
- :func:`einsum_terms`, full einsum for :func:`tnmars.contract`: scalars (empty terms),
  traces (repeated indices) and ``...`` broadcasting, resolved against the operands' ranks.
- :func:`labels_to_spec`, the interleaved form's label lists (any hashable labels) as a spec.
"""
from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from functools import lru_cache

#: characters that are syntax, never indices
RESERVED = frozenset(",->.")
_ASCII_SPACE = str.maketrans("", "", " \t\n\r\f\v")
_BASE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_extra: list[str] = []  # letters after the 52 ASCII ones, found on demand
_extra_lock = threading.Lock()
_next_code = [0xC0]


def symbol(i: int) -> str:
    """The ``i``-th index symbol: ``a``-``z``, ``A``-``Z``, then Unicode letters from U+00C0 on.

    Like opt_einsum's ``get_symbol`` it never runs out in practice (about 130,000 symbols),
    but it skips characters that are not letters (``×``, combining marks, unassigned code
    points), so generated specs stay printable.

    >>> symbol(0), symbol(51), symbol(52), symbol(1000)
    ('a', 'Z', 'À', 'Ԩ')
    """
    if i < 0:
        raise ValueError(f"symbol numbers start at 0; got {i}")
    if i < len(_BASE):
        return _BASE[i]
    k = i - len(_BASE)
    if k >= len(_extra):
        with _extra_lock:
            while k >= len(_extra):
                code = _next_code[0]
                if code > 0x10FFFF:
                    raise ValueError(f"Unicode has no {i + 1}th letter to use as an index symbol")
                _next_code[0] = code + 1
                c = chr(code)
                if c.isalpha() and c.isprintable():
                    _extra.append(c)
    return _extra[k]


class Symbols:
    """An endless sequence of symbols drawn from ``first`` and then from :func:`symbol`
    numbers ``offset, offset + step, ...``: indexable (``s[3]``), sliceable with a stop
    (``s[:30]`` is a string) and iterable. Two instances with the same ``step`` and
    different offsets never share a symbol past their ``first`` letters.

    >>> opens = Symbols("abc", offset=52, step=2)
    >>> opens[:5]
    'abcÀÂ'
    """

    def __init__(self, first: str, offset: int, step: int) -> None:
        self.first, self.offset, self.step = first, offset, step

    def __getitem__(self, key: int | slice) -> str:
        if isinstance(key, slice):
            if key.stop is None or key.stop < 0 or (key.start or 0) < 0:
                raise ValueError("slice an endless symbol sequence with non-negative bounds")
            return "".join(self[k] for k in range(*key.indices(key.stop)))
        if key < 0:
            raise IndexError("an endless symbol sequence has no negative indices")
        if key < len(self.first):
            return self.first[key]
        return symbol(self.offset + self.step * (key - len(self.first)))

    def __iter__(self):
        k = 0
        while True:
            yield self[k]
            k += 1


def _strip(spec: object) -> str:
    if not isinstance(spec, str):
        raise TypeError(f"a spec is a string such as 'ij,jk'; got {type(spec).__name__}")
    return spec.translate(_ASCII_SPACE)


def _split_arrow(spec: str, text: str) -> tuple[str, str | None]:
    for c in text:
        if c < "\x80" and not c.isalpha() and c not in RESERVED:
            raise ValueError(
                f"spec {spec!r} has index {c!r}: ASCII indices are letters a-z, A-Z "
                "(any non-ASCII character is an index too)"
            )
    if text.count("->") > 1:
        raise ValueError(f"spec {spec!r} has more than one '->'")
    lhs, arrow, rhs = text.partition("->")
    if "-" in lhs + rhs or ">" in lhs + rhs:
        raise ValueError(f"spec {spec!r}: '-' and '>' may only appear together, as one '->'")
    return lhs, (rhs if arrow else None)


@dataclass(frozen=True)
class ParsedSpec:
    """A validated network spec: input terms, output term, bonds, summed legs (in order)."""

    inputs: tuple[str, ...]
    output: str
    #: bond indices, in order of first appearance
    bonds: tuple[str, ...]
    #: indices on one term only and absent from the output (summed over), in order of appearance
    summed: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        return ",".join(self.inputs) + "->" + self.output

    def terms_with(self, index: str) -> tuple[int, ...]:
        """Positions of the terms (cores) that carry ``index``."""
        return tuple(i for i, term in enumerate(self.inputs) if index in term)


@lru_cache(maxsize=4096)
def parse_spec(spec: str) -> ParsedSpec:
    """Parse and validate a tensor-network ``spec``; every problem is a ``ValueError`` naming it.

    >>> parse_spec("ij,jkl,lm").spec
    'ij,jkl,lm->ikm'
    >>> parse_spec("ar,br,cr").bonds
    ('r',)
    >>> parse_spec("xaA,AbB,Bcy->abc").summed
    ('x', 'y')
    """
    text = _strip(spec)
    if not text:
        raise ValueError("empty spec: give one comma-separated term per core, e.g. 'ij,jk'")
    lhs, rhs = _split_arrow(spec, text)
    if not lhs:
        raise ValueError(f"spec {spec!r} has no input terms before '->'")
    if "." in text:
        raise ValueError(
            f"spec {spec!r} has '.': ellipsis broadcasting is einsum, not a tensor network "
            "(tnmars.contract accepts it)"
        )
    inputs = tuple(lhs.split(","))
    for pos, term in enumerate(inputs):
        if not term:
            raise ValueError(f"spec {spec!r}: term {pos} is empty (every core needs at least one index)")
        repeated = sorted(c for c in set(term) if term.count(c) > 1)
        if repeated:
            raise ValueError(
                f"spec {spec!r}: index {repeated[0]!r} is repeated inside term {term!r} "
                "(a trace is not a tensor network; tnmars.contract computes it)"
            )
    counts: dict[str, int] = {}
    for term in inputs:
        for c in term:
            counts[c] = counts.get(c, 0) + 1
    if rhs is not None:
        output = rhs
        _check_output(spec, output, counts)
    else:
        output = "".join(sorted(c for c, n in counts.items() if n == 1))
    bonds: list[str] = []
    summed: list[str] = []
    for term in inputs:
        for c in term:
            if c not in output:
                kind = bonds if counts[c] >= 2 else summed
                if c not in kind:
                    kind.append(c)
    return ParsedSpec(inputs=inputs, output=output, bonds=tuple(bonds), summed=tuple(summed))


def _check_output(spec: str, output: str, present) -> None:
    repeated = sorted(c for c in set(output) if output.count(c) > 1)
    if repeated:
        raise ValueError(f"spec {spec!r}: index {repeated[0]!r} is repeated in the output")
    missing = [c for c in output if c not in present]
    if missing:
        raise ValueError(f"spec {spec!r}: output index {missing[0]!r} is absent from the inputs")


@lru_cache(maxsize=4096)
def einsum_terms(spec: str, ndims: tuple[int, ...]) -> tuple[tuple[str, ...], str]:
    """Input terms and output of an einsum ``spec`` for operands with ``ndims`` dimensions.

    Ellipses become fresh symbols (right-aligned, NumPy broadcasting), the implicit output
    is made explicit (broadcast dimensions first, then the indices that occur once, in
    code-point order). Empty terms (scalars) and repeated indices (traces) are kept.

    >>> einsum_terms("...ij,...jk", (3, 2))
    (('aij', 'jk'), 'aik')
    >>> einsum_terms("ii->", (2,))
    (('ii',), '')
    """
    text = _strip(spec)
    lhs, rhs = _split_arrow(spec, text)
    inputs = lhs.split(",")
    if len(inputs) != len(ndims):
        raise ValueError(f"spec {spec!r} has {len(inputs)} terms but {len(ndims)} operands were given")
    for term in inputs + ([rhs] if rhs is not None else []):
        if "." in term and (term.count(".") != 3 or "..." not in term):
            raise ValueError(f"spec {spec!r}: term {term!r} has a '.' that is not one '...' (ellipsis)")
    used = set(text) - RESERVED
    fresh = []
    widths = []
    for pos, (term, nd) in enumerate(zip(inputs, ndims)):
        named = len(term) - (3 if "..." in term else 0)
        width = nd - named
        if width < 0 or (width > 0 and "..." not in term):
            raise ValueError(
                f"spec {spec!r}: term {term!r} names {named} indices but operand {pos} has {nd} dimensions"
                + (" (use '...' to broadcast over the others)" if width > 0 else "")
            )
        widths.append(width if "..." in term else 0)
    longest = max(widths, default=0)
    k = 0
    while len(fresh) < longest:
        c = symbol(k)
        k += 1
        if c not in used:
            fresh.append(c)
    ellipsis = "".join(fresh)
    inputs = [t.replace("...", ellipsis[longest - w:]) for t, w in zip(inputs, widths)]
    if rhs is None:
        counts: dict[str, int] = {}
        for c in "".join(inputs):
            counts[c] = counts.get(c, 0) + 1
        output = ellipsis + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ellipsis))
    else:
        output = rhs.replace("...", ellipsis)
        _check_output(spec, output, set("".join(inputs)))
    return tuple(inputs), output


def labels_to_spec(
    subscripts: Sequence[Sequence[Hashable]], output: Sequence[Hashable] | None = None
) -> tuple[str, dict[Hashable, str]]:
    """A spec (with explicit output) for label lists of the interleaved form, and the map
    from each label to its symbol. Labels are any hashable objects (``Ellipsis`` means
    ``...``). A one-letter string label is its own symbol, so that a key such as ``"b"``
    names the same index whether read as a label or as a symbol (a network's ``bonds`` are
    symbols, its ``prune`` / masks accept labels); the other labels get the remaining
    symbols, in sorted order when sortable, else in order of appearance. Without ``output``,
    the labels that occur once, in that same order, as NumPy does.

    >>> labels_to_spec([[0, 1], [1, 2]])
    ('ab,bc->ac', {0: 'a', 1: 'b', 2: 'c'})
    >>> labels_to_spec([["left", "bond"], ["bond", "right"]], ["right", "left"])[0]
    'ba,ac->cb'
    >>> labels_to_spec([["x", "b"], ["b", "c"], ["c", "y"]])
    ('xb,bc,cy->xy', {'b': 'b', 'c': 'c', 'x': 'x', 'y': 'y'})
    """
    lists = [_label_list(s, f"the labels of operand {pos}") for pos, s in enumerate(subscripts)]
    out = None if output is None else _label_list(output, "the output labels")
    seen: dict[Hashable, None] = {}
    for labels in lists:
        for lab in labels:
            if lab is not Ellipsis:
                seen.setdefault(lab, None)
    try:
        order = sorted(seen)
    except TypeError:
        order = list(seen)
    own = {lab for lab in order if isinstance(lab, str) and len(lab) == 1 and lab.isalpha()}
    mapping: dict[Hashable, str] = {}
    k = 0
    for lab in order:
        if lab in own:
            mapping[lab] = lab
            continue
        while symbol(k) in own:
            k += 1
        mapping[lab] = symbol(k)
        k += 1
    if out is not None:
        for lab in out:
            if lab is not Ellipsis and lab not in mapping:
                raise ValueError(f"output label {lab!r} is not among the operands' labels")
    else:
        counts: dict[Hashable, int] = {}
        for labels in lists:
            for lab in labels:
                if lab is not Ellipsis:
                    counts[lab] = counts.get(lab, 0) + 1
        out = ([Ellipsis] if any(Ellipsis in labels for labels in lists) else []) + [
            lab for lab in order if counts[lab] == 1
        ]

    def term(labels: list) -> str:
        return "".join("..." if lab is Ellipsis else mapping[lab] for lab in labels)

    return ",".join(term(labels) for labels in lists) + "->" + term(out), mapping


def _label_list(labels: object, what: str) -> list:
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise TypeError(f"{what} must be a list or tuple of hashable labels; got {labels!r}")
    out = list(labels)
    for lab in out:
        try:
            hash(lab)
        except TypeError:
            raise TypeError(f"{what} hold the unhashable label {lab!r}; labels must be hashable") from None
    if out.count(Ellipsis) > 1:
        raise ValueError(f"{what} hold more than one Ellipsis")
    return out
