"""Inference without gradients: a matrix network merged into two blocks, ``x @ W`` in two GEMMs.

At batch 1 a compressed layer's cost is its number of torch calls, not its arithmetic: a
TT-matrix of four cores contracted with ``x`` takes three matmuls, two transposing copies
and a dozen reshapes (about 2x ``nn.Linear`` of the same dense size, measured in
``benchmarks/nn_overhead.py``). Without gradients the cores are constants, so they can be
contracted ahead of time into two blocks, one per side of a cut through the network:

* ``A`` holds the cores of the leading input modes ``I_L`` and leading output modes ``O_L``,
  laid out ``(I_L, S * O_L)``, where ``S`` is the bonds the cut crosses;
* ``B`` holds the rest, laid out ``(I_R * S, O_R)``.

Then ``y = ((x.view(b, I_L, I_R)^T @ A).view(b, I_R * S, O_L))^T @ B``: two matmuls of
transposed views (no copy at batch 1) and one reshape. The blocks are core-sized (the cut is
chosen by FLOPs and the blocks must stay far smaller than the dense weight); the layer
rebuilds them when a parameter changes (version counters and the step count of
:mod:`~tnmars.nn.kept`, as :class:`~tnmars.nn.program.Program` keeps its core products).

>>> import torch, tnmars
>>> net = tnmars.Network.tt_matrix((4, 7), (5, 5), 3, backend="torch", dtype="float32", seed=0)
>>> cut = best_cut(net.inputs, net.output[:2], net.output[2:], tuple(tuple(c.shape) for c in net.cores))
>>> blocks = cut.blocks(net.cores)
>>> x = torch.randn(3, 28)
>>> bool(torch.allclose(cut(x, *blocks), x @ net.to_tensor().reshape(28, 25), atol=1e-5))
True
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from math import prod

import torch

#: the blocks may hold at most this fraction of the dense weight's entries
MAX_BLOCK_FRACTION = 0.25


class TwoBlockCut:
    """A cut of a matrix network into a left part (leading input and output modes) and a
    right part, with the einsum that builds each block and the sizes of the two GEMMs."""

    def __init__(self, left: tuple[int, ...], right: tuple[int, ...], equations: tuple[str, str],
                 dims: tuple[int, int, int, int, int]) -> None:
        self.left, self.right = left, right
        self.equations = equations
        self.i_left, self.i_right, self.shared, self.o_left, self.o_right = dims
        self.out_features = self.o_left * self.o_right

    def flops(self, batch: int) -> int:
        """Multiply-adds of one call at ``batch`` rows (times 2, as :attr:`Plan.flops`)."""
        s, i_l, i_r, o_l, o_r = self.shared, self.i_left, self.i_right, self.o_left, self.o_right
        return 2 * batch * (i_l * i_r * s * o_l + i_r * s * o_l * o_r)

    @property
    def block_size(self) -> int:
        return self.shared * (self.i_left * self.o_left + self.i_right * self.o_right)

    def blocks(self, cores: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, B)`` from the current cores (contiguous, laid out for :meth:`__call__`)."""
        a = torch.einsum(self.equations[0], *[cores[k] for k in self.left])
        b = torch.einsum(self.equations[1], *[cores[k] for k in self.right])
        a = a.reshape(self.i_left, self.shared * self.o_left).contiguous()
        b = b.reshape(self.i_right * self.shared, self.o_right).contiguous()
        return a, b

    def __call__(self, x2: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``x2 @ W`` for ``x2`` of shape ``(batch, in_features)``."""
        n = x2.shape[0]
        if n == 1:
            t = x2.reshape(self.i_left, self.i_right).T @ a
            return (t.view(self.i_right * self.shared, self.o_left).T @ b).view(1, self.out_features)
        t = x2.reshape(n, self.i_left, self.i_right).mT @ a
        return (t.view(n, self.i_right * self.shared, self.o_left).mT @ b).reshape(n, self.out_features)


def best_cut(inputs: Sequence[str], in_letters: str, out_letters: str,
             core_shapes: tuple[tuple[int, ...], ...]) -> TwoBlockCut | None:
    """The cut with the fewest FLOPs at batch 1 whose blocks hold at most
    :data:`MAX_BLOCK_FRACTION` of the dense weight, or ``None`` when no cut qualifies.

    A cut qualifies when its left cores carry exactly a prefix of the input modes and a prefix
    of the output modes (so ``x`` and ``y`` need no permutation), and the right cores the rest.
    """
    sizes: dict[str, int] = {}
    for term, shape in zip(inputs, core_shapes):
        sizes.update(zip(term, shape))
    open_letters = set(in_letters) | set(out_letters)
    dense = prod(sizes[c] for c in in_letters) * prod(sizes[c] for c in out_letters)
    n = len(inputs)
    best: TwoBlockCut | None = None
    for k in range(1, n):
        for left in combinations(range(n), k):
            right = tuple(j for j in range(n) if j not in left)
            in_l = set("".join(inputs[j] for j in left))
            in_r = set("".join(inputs[j] for j in right))
            p = sum(1 for c in in_letters if c in in_l)
            q = sum(1 for c in out_letters if c in in_l)
            if (set(in_letters[:p]) | set(out_letters[:q])) != in_l & open_letters:
                continue
            if (set(in_letters[p:]) | set(out_letters[q:])) != in_r & open_letters:
                continue
            shared = "".join(sorted((in_l & in_r) - open_letters))
            eq_a = ",".join(inputs[j] for j in left) + "->" + in_letters[:p] + shared + out_letters[:q]
            eq_b = ",".join(inputs[j] for j in right) + "->" + in_letters[p:] + shared + out_letters[q:]
            dims = (prod(sizes[c] for c in in_letters[:p]), prod(sizes[c] for c in in_letters[p:]),
                    prod(sizes[c] for c in shared), prod(sizes[c] for c in out_letters[:q]),
                    prod(sizes[c] for c in out_letters[q:]))
            cut = TwoBlockCut(left, right, (eq_a, eq_b), dims)
            if cut.block_size > MAX_BLOCK_FRACTION * dense:
                continue
            if best is None or cut.flops(1) < best.flops(1):
                best = cut
    return best
