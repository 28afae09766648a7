"""A built-in format written as a user's own spec.

A user's ``"iA,jAB,kBC,lC"`` is a tensor train whose cores hold their open mode first, and
``"ia,jb,kc,abc"`` a Tucker with its core last. The formats' proposals (spectral readings,
SVD truncations, EM imputation) build cores in the format's own layout, so such a spec got
the generic search from rank one instead. :func:`format_layout` recognises it and gives the
same spec in the format's layout, under the user's letters; :meth:`FormatLayout.to_user` puts
a fitted network back in the user's terms and axis order.

>>> layout = format_layout("iA,jAB,kBC,lC->ijkl")
>>> layout.fmt, layout.spec
('tt', 'iA,AjB,BkC,Cl->ijkl')
>>> format_layout("ia,jb,kc,abc->ijk").spec
'abc,ia,jb,kc->ijk'
>>> format_layout("ij,jk,kl->il").fmt  # U S V^T: a Tucker of a matrix
'tucker'
>>> format_layout("iab,ja,kb->ijk") is None  # a chain whose middle core holds the first mode
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..network import Network, cp_spec, tr_spec, tt_spec, tucker_spec
from ..spec import ParsedSpec, parse_spec

#: the formats, each with its spec for ``d`` open modes
FORMAT_SPECS: tuple[tuple[str, Callable[[int], str]], ...] = (
    ("cp", cp_spec), ("tucker", tucker_spec), ("tt", tt_spec), ("tr", tr_spec))


@dataclass(frozen=True)
class FormatLayout:
    """A user's spec that is format :attr:`fmt` up to its letters, the order of its terms
    and the order of the axes within each term.

    ``spec`` is the format's layout under the user's letters (same open modes, same bonds, in
    the same order of first appearance, so rank tuples read alike); core ``k`` of ``spec``
    is the user's core ``terms[k]`` transposed by ``axes[k]``."""

    fmt: str
    spec: str
    user_spec: str
    terms: tuple[int, ...]
    axes: tuple[tuple[int, ...], ...]

    @property
    def renamed_only(self) -> bool:
        """The user's spec is the format's up to its letters (no core to move)."""
        return self.spec == self.user_spec

    def to_format(self, net: Network) -> Network:
        """``net`` (the user's spec) in the format's layout: the same tensor."""
        if self.renamed_only:
            return net
        be = net.backend_impl
        cores = [be.contiguous(be.transpose(net.cores[t], p)) for t, p in zip(self.terms, self.axes)]
        return _labelled(Network(self.spec, cores=cores, optimize=net.optimize), net)

    def to_user(self, net: Network) -> Network:
        """``net`` (the format's layout) in the user's terms and axis order: the same tensor."""
        if self.renamed_only:
            return net
        be = net.backend_impl
        cores: list = [None] * len(self.terms)
        for k, (t, p) in enumerate(zip(self.terms, self.axes)):
            back = [0] * len(p)
            for i, a in enumerate(p):
                back[a] = i
            cores[t] = be.contiguous(be.transpose(net.cores[k], back))
        return _labelled(Network(self.user_spec, cores=cores, optimize=net.optimize), net)


def _labelled(net: Network, source: Network) -> Network:
    labels = getattr(source, "labels", None)
    if labels:
        net.labels = dict(labels)
    return net


def format_layout(spec: str) -> FormatLayout | None:
    """The built-in format ``spec`` is, under its own letters, term order and axis orders, or
    None. Its open modes must be the format's in order (a TT's cores along the output's modes),
    and its bonds first appear in the format's order (the ranks tuple of a fit reads the same
    in both): a spec that differs there is left to the generic search (or, a ring, to
    :func:`~tnmars.fitting.proposals.ring_layout`)."""
    user = parse_spec(spec)
    d = len(user.output)
    if d < 2 or user.summed:
        return None
    found = []
    for fmt, make in FORMAT_SPECS:
        try:
            canonical = parse_spec(make(d))
        except (ValueError, IndexError):
            continue
        layout = _matched(fmt, canonical, user)
        if layout is not None:
            found.append(layout)
    # a format's own layout first: an order-2 TT (``"iA,Aj"``) is a CP up to its axis order too
    return next((layout for layout in found if layout.renamed_only), found[0] if found else None)


def _matched(fmt: str, canonical: ParsedSpec, user: ParsedSpec) -> FormatLayout | None:
    if len(canonical.inputs) != len(user.inputs) or len(canonical.bonds) != len(user.bonds):
        return None
    name = dict(zip(canonical.output, user.output))  # the format's letter -> the user's
    user_open = set(user.output)
    # terms matched by their open mode (each format term holds at most one; a Tucker core none)
    holder: dict[str, int] = {}
    bare = []
    for t, term in enumerate(user.inputs):
        opened = [c for c in term if c in user_open]
        if len(opened) > 1:
            return None
        if opened:
            holder[opened[0]] = t
        else:
            bare.append(t)
    terms = []
    for term in canonical.inputs:
        opened = [c for c in term if c in name]
        if opened:
            terms.append(holder.get(name[opened[0]], -1))
        else:
            if len(bare) != 1:
                return None
            terms.append(bare[0])
    if sorted(terms) != list(range(len(user.inputs))):
        return None
    # bonds matched by the terms they join
    joins = {}
    for b in user.bonds:
        key = frozenset(t for t, term in enumerate(user.inputs) if b in term)
        if key in joins:  # two bonds between the same cores (an order-2 ring): no single reading
            return None
        joins[key] = b
    for b in canonical.bonds:
        key = frozenset(terms[k] for k, term in enumerate(canonical.inputs) if b in term)
        if key not in joins:
            return None
        name[b] = joins[key]
    if [name[b] for b in canonical.bonds] != list(user.bonds):
        return None
    axes = []
    for k, term in enumerate(canonical.inputs):
        mine = user.inputs[terms[k]]
        if len(mine) != len(term) or set(mine) != {name[c] for c in term}:
            return None
        axes.append(tuple(mine.index(name[c]) for c in term))
    spec = ",".join("".join(name[c] for c in term) for term in canonical.inputs) + "->" + user.output
    return FormatLayout(fmt, spec, user.spec, tuple(terms), tuple(axes))
