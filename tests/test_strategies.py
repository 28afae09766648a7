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
