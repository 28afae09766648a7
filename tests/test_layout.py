"""A built-in format under a user's letters, term order and axis orders (tnmars.fitting.layout)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tnmars
from tnmars.fitting.layout import FORMAT_SPECS, format_layout
from tnmars.spec import parse_spec

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


@st.composite
def disguised_formats(draw):
    """A format's spec with its letters renamed, its terms and each term's axes shuffled."""
    fmt, make = draw(st.sampled_from(FORMAT_SPECS))
    d = draw(st.integers(3 if fmt == "tr" else 2, 5))
    canonical = parse_spec(make(d))
    letters = sorted(set(canonical.spec) - set(",->"))
    new = draw(st.permutations(list(LETTERS)))[:len(letters)]
    name = dict(zip(letters, new))
    terms = ["".join(name[c] for c in draw(st.permutations(list(term)))) for term in canonical.inputs]
    order = draw(st.permutations(range(len(terms))))
    spec = ",".join(terms[k] for k in order) + "->" + "".join(name[c] for c in canonical.output)
    return fmt, spec, canonical, name


@settings(max_examples=150, deadline=None)
@given(disguised_formats(), st.integers(0, 2**31 - 1))
def test_a_disguised_format_is_recognised_and_its_layouts_hold_one_tensor(case, seed):
    fmt, spec, canonical, name = case
    user = parse_spec(spec)
    layout = format_layout(spec)
    if [name[b] for b in canonical.bonds] == list(user.bonds):  # bonds in the format's order: recognised
        assert layout is not None
        assert layout.fmt == fmt or (d2 := len(user.output) == 2) and {layout.fmt, fmt} <= {"cp", "tt"} and d2
    if layout is None:
        return
    shape = tuple(range(2, 2 + len(user.output)))
    net = tnmars.Network(spec, shape=shape, ranks=2, seed=seed)
    moved = layout.to_format(net)
    assert moved.spec == layout.spec and list(moved.bonds) == list(net.bonds)
    np.testing.assert_allclose(np.asarray(moved.to_tensor()), np.asarray(net.to_tensor()), rtol=1e-12, atol=1e-12)
    back = layout.to_user(moved)
    assert back.spec == net.spec
    for mine, theirs in zip(back.cores, net.cores):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    assert format_layout(layout.spec).renamed_only  # the format's layout is the format, renamed


@pytest.mark.parametrize("spec", ["iab,ja,kb->ijk", "ijA,Ak->ijk", "iab,jbc,kca,lcd->ijkl", "xiA,AjB,Bky->ijk"])
def test_a_spec_that_is_no_format_is_left_alone(spec):
    """A chain whose middle core holds the first mode, a core with two modes, a ring with a
    tail, dangling legs: none is a built-in format."""
    assert format_layout(spec) is None


def test_a_torch_network_keeps_its_backend_through_the_layouts():
    torch = pytest.importorskip("torch")
    net = tnmars.Network("iA,jAB,kB->ijk", shape=(3, 4, 5), ranks=2, seed=0).to("torch")
    layout = format_layout(net.spec)
    moved = layout.to_format(net)
    assert moved.backend == "torch" and isinstance(moved.cores[1], torch.Tensor)
    assert all(c.is_contiguous() for c in moved.cores)
    assert torch.allclose(layout.to_user(moved).to_tensor(), net.to_tensor())
