"""``tnmars.nn.program.Program`` computes what ``execute`` (and ``numpy.einsum``) computes on any
plan, including operands whose size-1 axes broadcast against a larger size of the same index
(``plan.squeezes``, which Program ignored: a crash or a wrong shape on such plans)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tnmars.backends import get_backend
from tnmars.contract import execute, make_plan
from tnmars.nn.program import Program

torch.set_num_threads(1)
_BE = get_backend("torch")


@st.composite
def _plans(draw):
    letters = "abcdef"[: draw(st.integers(1, 6))]
    sizes = {c: draw(st.integers(2, 4)) for c in letters}
    terms = draw(st.lists(st.lists(st.sampled_from(letters), min_size=1, max_size=4, unique=True)
                          .map("".join), min_size=1, max_size=4))
    used = sorted(set("".join(terms)))
    output = "".join(draw(st.permutations(used))[: draw(st.integers(0, min(3, len(used))))])
    shapes = tuple(tuple(1 if draw(st.booleans()) and draw(st.booleans()) else sizes[c] for c in t)
                   for t in terms)  # about a quarter of the axes broadcast (size 1)
    return tuple(terms), output, shapes, draw(st.integers(0, len(terms))), draw(st.integers(0, 2 ** 31 - 1))


@given(_plans())
def test_a_program_computes_what_execute_and_einsum_compute(case):
    terms, output, shapes, constants, seed = case
    plan = make_plan(terms, output, shapes)
    gen = torch.Generator().manual_seed(seed)
    ops = [torch.randn(*s, generator=gen, dtype=torch.float64) for s in shapes]
    want = np.einsum(",".join(terms) + "->" + output, *(o.numpy() for o in ops))
    torch.testing.assert_close(execute(plan, ops, _BE), torch.from_numpy(np.asarray(want)))
    program = Program(plan, constants=constants)
    got = program(ops)
    assert got.shape == want.shape
    torch.testing.assert_close(got, torch.from_numpy(np.asarray(want)))
    with torch.no_grad():  # the kept path (constant operands' products reused): twice, from the store
        for _ in range(2):
            torch.testing.assert_close(program(ops), torch.from_numpy(np.asarray(want)))


@pytest.mark.parametrize("terms, output, shapes", [
    (("dce", "eb", "bac"), "eb", ((4, 3, 3), (3, 2), (1, 3, 3))),
    (("cba", "acb", "bca", "cba"), "ca", ((2, 2, 2), (2, 2, 1), (2, 2, 2), (2, 1, 1))),
    (("cab", "c", "c", "abc"), "ac", ((4, 1, 4), (4,), (4,), (2, 1, 4))),
    (("d", "cade"), "", ((2,), (4, 2, 1, 4))),
])
def test_a_program_handles_broadcast_size_1_axes(terms, output, shapes):
    """Plans the tester's fuzz found (Program raised on each)."""
    plan = make_plan(terms, output, shapes)
    assert any(s is not None for s in plan.squeezes)
    ops = [torch.randn(*s, dtype=torch.float64) for s in shapes]
    torch.testing.assert_close(Program(plan)(ops), execute(plan, ops, _BE))
