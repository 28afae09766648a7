"""The hypothesis strategies themselves: connectedness as documented, and networks past 52 indices."""
import numpy as np
import opt_einsum
from hypothesis import HealthCheck, find, given, settings

import tnmars
from tnmars.spec import parse_spec
from tnmars.testing.strategies import is_connected, networks, specs


def _reference(spec, arrays):
    """opt_einsum's result with the size-1 indices dropped first: its pairwise einsum calls
    relabel a step's indices to letters and fail past 52, which size-1 indices alone reach."""
    inputs, output = spec.split("->")
    sizes = {c: n for t, a in zip(inputs.split(","), arrays) for c, n in zip(t, a.shape)}
    terms = ["".join(c for c in t if sizes[c] != 1) for t in inputs.split(",")]
    ops = [a.reshape([sizes[c] for c in t]) for t, a in zip(terms, arrays)]
    out = "".join(c for c in output if sizes[c] != 1)
    return opt_einsum.contract(",".join(terms) + "->" + out, *ops).reshape([sizes[c] for c in output])


@given(specs())
def test_specs_are_connected_by_default(spec):
    assert is_connected(spec)


def test_disconnected_specs_appear_only_when_asked_for():
    for kind in ("hyperedge", "random"):
        spec = find(specs(kinds=[kind], connected=False), lambda s: not is_connected(s))
        assert not is_connected(spec)


@given(specs(kinds=["chain", "loop", "star"], connected=False))
def test_chains_loops_and_stars_are_connected_by_construction(spec):
    assert is_connected(spec)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(networks(min_cores=55, max_cores=70, kinds=["chain", "loop", "random"], max_dim=2, max_rank=2))
def test_large_networks_pass_52_indices_and_contract_like_opt_einsum(net):
    """Connected graphs of 55+ cores without a hyperedge have 54+ bonds. (A star of 55 cores
    has a center with 54 bonds, 2**54 entries at rank 2, so stars stay small.)"""
    parsed = parse_spec(net.spec)
    assert len(set("".join(parsed.inputs))) > 52
    assert is_connected(net.spec)
    expected = _reference(net.spec, net.cores)
    np.testing.assert_allclose(net.to_tensor(), expected, rtol=1e-9, atol=1e-12 * max(1.0, np.abs(expected).max()))
    np.testing.assert_allclose(tnmars.contract(net.spec, *net.cores), expected, rtol=1e-9,
                               atol=1e-12 * max(1.0, np.abs(expected).max()))


def test_small_core_counts_draw_the_kinds_that_fit():
    """specs(max_cores=2) failed inside hypothesis ("Cannot have max_value=2 < min_value=3")
    whenever it drew a star or a hyperedge; a single core could not be asked for at all."""
    import pytest

    @settings(max_examples=40, deadline=None, database=None)
    @given(specs(max_cores=2))
    def two(spec):
        assert len(parse_spec(spec).inputs) == 2

    @settings(max_examples=20, deadline=None, database=None)
    @given(networks(min_cores=1, max_cores=1))
    def one(net):
        assert net.num_cores == 1 and not net.bonds
        np.testing.assert_allclose(net.to_tensor(), np.einsum(net.spec, *net.cores))

    two()
    one()
    from hypothesis.errors import InvalidArgument

    from tnmars.testing.strategies import dims

    for kwargs in ({"min_cores": 5, "max_cores": 3}, {"kinds": ["ring"]}, {"kinds": []},
                   {"max_cores": 2, "kinds": ["star"]}, {"min_cores": 0}):
        with pytest.raises(InvalidArgument):
            specs(**kwargs)
    with pytest.raises(InvalidArgument, match="min_rank"):
        dims("ab,bc", min_rank=0)  # Network refuses size-0 dims; it drew specs it could not build
    # backend and dtype too, when the strategy is built (an outside probe: they failed at the first draw,
    # reported as a failing example of the user's own test)
    for kwargs, match in (({"dtype": "complex128"}, "floating type"), ({"backend": "jax"}, "unknown backend"),
                          ({"dtype": "bfloat16"}, "numpy has no bfloat16"), ({"dtype": "int64"}, "floating type")):
        with pytest.raises(InvalidArgument, match=match):
            networks(**kwargs)
    networks(backend="cupy")  # (checked by name: built without CuPy, so a skipped test's module still collects)


@settings(max_examples=15, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(networks(min_cores=30, max_cores=40))
def test_many_cores_give_networks_that_fit_in_memory(net):
    """A star or random graph of 30+ cores put 29-38 bonds on one core (3**38 entries at rank
    3): Network refused to allocate it, or built a core of millions of entries."""
    assert max(int(np.prod(c.shape)) for c in net.cores) <= 2**16
