"""The SVD gauge of a MARS layer's bonds: each kept index one singular direction, largest first.

Why
---
A tensor network's value does not change when a bond's index space is transformed by ``X`` on
one core and ``X^-1`` on the other (the gauge). Training leaves the bonds in whatever gauge the
optimiser drifted to, and there a rank-one component is spread over every index: closing any
single index removes a share of it. :func:`tnmars.nn.occam_prune` judges closures one index at
a time without refitting, so it could not find the cheap ones: a TT recurrent matrix trained
to a numerically rank-one ``W`` (its second TT singular value 0.4-1.4% of the first) kept
five to eight of eight indices, each closure costing 18,000-28,000 nats. In the SVD gauge the
bond's kept indices are the singular directions of the matrix the bond splits the network
into, so closing the last index removes the smallest singular value, the cheapest cut there is.

How
---
For a bond of a tree network (every bond joins two cores and no loop), cutting it splits the
cores into two sides; their Gram matrices over the bond (every other index contracted with a
copy of itself) are ``G_A = A^T A`` and ``G_B = B B^T`` for the unfoldings ``A`` and ``B`` whose
product is the network (``A B``). With ``G_A = V_a D_a V_a^T``, ``S_a = D_a^1/2 V_a^T`` (so
``A = Q_a S_a``, ``Q_a`` orthonormal) and likewise ``S_b``, the SVD ``S_a S_b = U Sigma V^T``
gives ``A X = Q_a U Sigma^1/2`` and ``Y B = Sigma^1/2 V^T Q_b`` with ``X = S_a^+ U Sigma^1/2``
and ``Y = Sigma^1/2 V^T S_b^+``; ``X Y`` is the identity on the bond's used subspace, so the
network is unchanged (exactly, also when the bond holds fewer directions than indices). On a
tree, bringing one bond to this gauge leaves every other bond's singular directions where
they were (a gauge change inside one side cancels within it), so one pass over the bonds
puts all of them in their SVD gauge. Only the MAP-kept indices are transformed (the network
with its MAP masks is unchanged; closed indices stay closed); bonds on a loop or shared by
more than two cores (CP) are left as they are. The gauge is that of the network with its MAP
masks: where another bond has closed indices, the cores' entries there are transformed too,
so the network *without* masks (which a training draw may reopen) can change.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import opt_einsum as oe
import torch

from ..paths import is_loopy

__all__ = ["tree_bonds", "svd_gauge_"]


def _terms(spec: str) -> tuple[list[str], str]:
    """The input terms and the output of ``spec`` (without ``->``: einsum's, the letters that
    appear once, alphabetically)."""
    inputs, arrow, output = spec.partition("->")
    terms = inputs.split(",")
    if not arrow:
        joined = "".join(terms)
        output = "".join(sorted(c for c in set(joined) if joined.count(c) == 1))
    return terms, output


def tree_bonds(spec: str) -> list[str]:
    """The bonds of ``spec`` whose cut splits the network in two: bonds joining two cores,
    none of them on a loop. Empty for a network with a loop or a bond on three cores."""
    terms, output = _terms(spec)
    letters = {c for t in terms for c in t} - set(output)
    owners = {b: frozenset(k for k, t in enumerate(terms) if b in t) for b in sorted(letters)}
    if any(len(ks) != 2 for ks in owners.values()):
        return []
    # two bonds between the same two cores are a loop here (cutting one splits nothing), which
    # is_loopy counts as one connection
    if len(set(owners.values())) < len(owners) or is_loopy(terms):
        return []
    return list(owners)


def _side(terms: Sequence[str], start: int, cut: str) -> list[int]:
    """The cores reached from ``start`` without crossing bond ``cut``."""
    seen, todo = {start}, [start]
    while todo:
        k = todo.pop()
        for j, t in enumerate(terms):
            if j not in seen and any(c in t and c != cut for c in terms[k]):
                seen.add(j)
                todo.append(j)
    return sorted(seen)


def _gram(terms: Sequence[str], output: str, side: Sequence[int], bond: str,
          cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """``G[i, j]``: the side's tensor at bond index ``i`` dotted with itself at ``j`` (every
    other index of the side contracted with its copy)."""
    used = {c for t in terms for c in t}
    fresh = iter(oe.get_symbol(n) for n in range(10_000) if oe.get_symbol(n) not in used)
    internal = {c for k in side for c in terms[k] if c not in output}  # bonds of the side, and the cut
    primed = {c: next(fresh) for c in internal}
    left = [terms[k] for k in side]
    right = ["".join(primed.get(c, c) for c in terms[k]) for k in side]
    expr = ",".join(left + right) + "->" + bond + primed[bond]
    ops = [cores[k] for k in side] * 2
    return oe.contract(expr, *ops)


def svd_gauge_(spec: str, cores: Sequence[torch.Tensor], keep: Mapping[str, torch.Tensor],
               sites: Mapping[str, tuple[int, int]]) -> dict[str, torch.Tensor]:
    """Bring every tree bond of the network ``spec`` over ``cores`` to its SVD gauge among its
    kept indices, in place (see the module). ``keep``: bond -> boolean MAP mask (a bond
    missing from it keeps every index); ``sites``: bond -> ``(core, axis)`` where its mask
    multiplies. The Grams are computed in float64 with every bond's closed indices zeroed.
    Returns bond -> the bond's singular values at its kept indices, largest first."""
    terms, output = _terms(spec)
    values: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for bond in tree_bonds(spec):
            work = [c.detach().to(torch.float64) for c in cores]
            for b, mask in keep.items():  # the network as eval mode computes it
                k, axis = sites[b]
                shape = [1] * work[k].ndim
                shape[axis] = -1
                work[k] = work[k] * mask.to(device=work[k].device, dtype=torch.float64).view(shape)
            kept = keep.get(bond)
            p, q = (k for k, t in enumerate(terms) if bond in t)
            ap, aq = terms[p].index(bond), terms[q].index(bond)
            idx = (torch.arange(work[p].shape[ap], device=work[p].device) if kept is None
                   else torch.nonzero(kept.to(work[p].device)).flatten())
            if idx.numel() == 0:
                continue
            gram_a = _gram(terms, output, _side(terms, p, bond), bond, work)[idx][:, idx]
            gram_b = _gram(terms, output, _side(terms, q, bond), bond, work)[idx][:, idx]
            s_a, s_a_pinv = _root(gram_a)
            s_b, s_b_pinv = _root(gram_b)  # (S_b as the transpose's root: B^T = Q_b^T S_b^T)
            u, sigma, vh = torch.linalg.svd(s_a @ s_b.T)
            half = sigma.sqrt()
            x = s_a_pinv @ u * half  # A X = Q_a U Sigma^1/2
            y = (half[:, None] * vh) @ s_b_pinv.T  # Y B = Sigma^1/2 V^T Q_b
            for k, axis, mat in ((p, ap, x), (q, aq, y.T)):
                core = cores[k]
                block = core.detach().index_select(axis, idx).to(torch.float64)
                moved = torch.tensordot(block.movedim(axis, -1), mat.to(block.device), dims=1).movedim(-1, axis)
                core.index_copy_(axis, idx.to(core.device), moved.to(core.dtype))
            values[bond] = sigma
    return values


def _root(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``S`` with ``S^T S = gram`` (``S = D^1/2 V^T``) and its pseudo-inverse ``S^+`` (``V D^-1/2``
    on the directions above rounding)."""
    d, v = torch.linalg.eigh(0.5 * (gram + gram.T))
    d = d.clamp(min=0.0)
    root = d.sqrt()
    big = root > root.max() * 1e-10 if root.numel() else root > 0
    inv = torch.where(big, 1.0 / torch.where(big, root, torch.ones_like(root)), torch.zeros_like(root))
    return root[:, None] * v.T, v * inv
