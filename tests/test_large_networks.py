"""Networks without an index ceiling: built-in formats of any order, label lists, dangling
size-1 legs, readable summaries, contiguous results."""
import warnings

import numpy as np
import opt_einsum
import pytest

import tnmars
from tnmars import Network
from tnmars.gradients import vjp
from tnmars.network import cp_spec, tr_spec, tt_spec, tucker_spec

torch = pytest.importorskip("torch")


def test_builders_keep_their_small_order_specs():
    """Saved files, the tensorly interop and the fit code depend on these exact strings."""
    assert cp_spec(3) == "aA,bA,cA->abc"
    assert tucker_spec(3) == "ABC,aA,bB,cC->abc"
    assert tt_spec(3) == "aA,AbB,Bc->abc"
    assert tr_spec(3) == "CaA,AbB,BcC->abc"
    assert tt_spec(2, width=2) == "acA,Abd->abcd"
    assert cp_spec(26).endswith("->abcdefghijklmnopqrstuvwxyz")


@pytest.mark.parametrize("builder, order", [(cp_spec, 40), (tucker_spec, 40), (tt_spec, 200), (tr_spec, 64)])
def test_builders_of_any_order_give_valid_specs(builder, order):
    parsed = tnmars.spec.parse_spec(builder(order))
    assert len(parsed.output) == order and len(set(parsed.output)) == order
    assert not set(parsed.output) & set(parsed.bonds)
    expected_bonds = {cp_spec: 1, tucker_spec: order, tt_spec: order - 1, tr_spec: order}[builder]
    assert len(parsed.bonds) == expected_bonds


def _with_vectors(net: Network, vectors):
    return net.contract(",".join(net.output), *vectors, output="")


def test_qtt_of_order_64_contracts_with_vectors_like_opt_einsum():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # boundary ranks are clipped to 2
        net = Network.tt((2,) * 64, 4, seed=0)
    rng = np.random.default_rng(1)
    vectors = [rng.standard_normal(2) for _ in range(64)]
    got = _with_vectors(net, vectors)
    spec = net.spec.split("->")[0] + "," + ",".join(net.output) + "->"
    np.testing.assert_allclose(got, opt_einsum.contract(spec, *net.cores, *vectors), rtol=1e-10)
    assert Network.tt((2,) * 30, 1).shape == (2,) * 30


def test_mps_of_200_sites_on_torch_with_gradients():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = Network.tt((3,) * 200, 3, seed=0, backend="torch")
    cores = [c.clone().requires_grad_() for c in net.cores]
    ones = [torch.ones(3, dtype=torch.float64) for _ in range(200)]
    value = net.with_cores(cores).contract(",".join(net.output), *ones, output="")
    value.backward()
    reference = [c.detach().clone().requires_grad_() for c in net.cores]
    spec = net.spec.split("->")[0] + "," + ",".join(net.output) + "->"
    opt_einsum.contract(spec, *reference, *ones, backend="torch").backward()
    for a, b in zip(cores, reference):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-9, atol=1e-300)


def test_cp_tucker_tr_of_order_30_equal_opt_einsum():
    rng = np.random.default_rng(0)
    for net in (Network.cp((2,) * 30, 3, seed=0), Network.tr((2,) * 30, 2, seed=0)):
        vectors = [rng.standard_normal(2) for _ in range(30)]
        spec = net.spec.split("->")[0] + "," + ",".join(net.output) + "->"
        np.testing.assert_allclose(_with_vectors(net, vectors), opt_einsum.contract(spec, *net.cores, *vectors),
                                   rtol=1e-10)
    tucker = Network.tucker((3,) * 12, 1, seed=0)  # 12 bonds of size 1 and 12 factors
    assert tucker.to_tensor().shape == (3,) * 12


def test_repr_and_summary_stay_readable_for_big_networks():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = Network.tt((2,) * 200, 4, seed=0)
    text = repr(net)
    assert len(text) < 200 and "(2,) * 200" in text and "…" in text
    summary = net.summary()
    assert all(len(line) < 200 for line in summary.splitlines())
    assert "200 cores" in summary and "199 bonds" in summary
    small = Network.tt((4, 5, 6), 3)
    assert repr(small) == "Network('aA,AbB,Bc->abc', shape=(4, 5, 6), ranks=(3, 3), backend='numpy')"


def test_dangling_size_one_legs_as_in_tntorch():
    """tntorch's TT cores are (1, n, r), (r, n, r), (r, n, 1): the boundary legs are summed."""
    rng = np.random.default_rng(0)
    cores = [rng.standard_normal((1, 4, 3)), rng.standard_normal((3, 5, 2)), rng.standard_normal((2, 6, 1))]
    net = Network.from_cores("xaA,AbB,Bcy->abc", cores)
    assert net.bonds == {"A": 3, "B": 2} and net.shape == (4, 5, 6)
    np.testing.assert_allclose(net.to_tensor(), np.einsum("xaA,AbB,Bcy->abc", *cores))
    drawn = Network("xaA,AbB,Bcy->abc", shape=(4, 5, 6), ranks=2, seed=0)
    assert drawn.dims["x"] == drawn.dims["y"] == 1
    # environment gradients handle the summed legs like torch autograd does
    target = rng.standard_normal(net.shape)
    _, grads, _ = vjp(net, lambda t: t - target)
    tcores = [torch.tensor(c, requires_grad=True) for c in cores]
    (0.5 * ((Network.from_cores(net.spec, tcores).to_tensor() - torch.tensor(target)) ** 2).sum()).backward()
    for g, c in zip(grads, tcores):
        np.testing.assert_allclose(g, c.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_a_dangling_leg_larger_than_one_is_refused():
    with pytest.raises(ValueError, match="summed away.*size 2"):
        Network("xaA,Ab->ab", dims={"x": 2, "a": 3, "A": 2, "b": 4})
    with pytest.raises(ValueError, match="summed away"):
        Network.from_cores("ij,jk->i", [np.ones((2, 3)), np.ones((3, 4))])


def test_label_lists_declare_a_network():
    net = Network([("x", "bond"), ("bond", "y")], dims={"x": 4, "bond": 3, "y": 5}, seed=0)
    assert net.labels == {"bond": "a", "x": "x", "y": "y"}  # one-letter labels are their own symbols
    assert net.spec == "xa,ay->xy" and net.bonds == {"a": 3} and net.shape == (4, 5)
    np.testing.assert_allclose(net.to_tensor(), net.cores[0] @ net.cores[1])
    flipped = Network([("x", "bond"), ("bond", "y")], output=["y", "x"], shape=(5, 4), ranks={"bond": 2})
    assert flipped.shape == (5, 4) and flipped.ranks == (2,)
    assert flipped.with_cores(flipped.cores).labels == flipped.labels
    sites = Network([[("s", k), ("b", k), ("b", k + 1)] for k in range(60)], output=[("s", k) for k in range(60)],
                    dims={**{("s", k): 1 for k in range(60)}, **{("b", k): 1 for k in range(61)}}, seed=0)
    assert len(sites.bonds) == 59 and sites.shape == (1,) * 60 and len(sites.dims) == 121


def test_a_labelled_network_reads_bond_keys_as_labels_or_symbols_and_never_as_another_bond():
    """``prune``, masks, ``num_params_at``, ``mask_site`` and ``terms_with`` of a network
    declared with label lists take its labels as well as the symbols :attr:`bonds` lists. A key
    once named another bond: ``prune({"b": [0]})`` with labels ``b`` and ``c`` pruned the bond
    whose *symbol* was ``b`` (label ``c``)."""
    net = Network([("x", "b"), ("b", "c"), ("c", "y")], dims={"x": 3, "y": 4}, ranks={"b": 3, "c": 3}, seed=0)
    assert net.labels == {"b": "b", "c": "c", "x": "x", "y": "y"}
    assert net.prune({"b": [0]}).bonds == {"b": 1, "c": 3}
    long = Network([("left", "bond"), ("bond", "mid"), ("mid", "right")], dims={"left": 3, "right": 4},
                   ranks={"bond": 3, "mid": 3}, seed=0)
    bond, mid = long.labels["bond"], long.labels["mid"]
    for key in ("mid", mid):
        pruned = long.prune({key: [0, 2]})
        assert pruned.bonds == {bond: 3, mid: 2} and pruned.labels == long.labels
        assert long.num_params_at({key: 1}) == 3 * 3 + 3 * 1 + 1 * 4
        assert long.mask_site(key) == long.mask_site(mid) and long.terms_with(key) == (1, 2)
        mask = np.array([1.0, 0.0, 1.0])
        np.testing.assert_allclose(long.to_tensor({key: mask}), pruned.to_tensor(), atol=1e-12)
    with pytest.raises(ValueError, match="named twice"):
        long.prune({"mid": [0], mid: [1]})
    with pytest.raises(ValueError, match=r"'left' is not a bond.*'bond' \('a'\)"):
        long.prune({"left": [0]})
    # a file saved before one-letter labels were their own symbols: label 'b' on symbol 'a', label
    # 'c' on symbol 'b'. A key that is a label of one index and the symbol of another is refused
    old = Network("ca,ab,bd->cd", dims={"c": 3, "d": 4, "a": 2, "b": 3}, seed=0)
    old.labels = {"b": "a", "c": "b", "x": "c", "y": "d"}
    with pytest.raises(ValueError, match="ambiguous"):
        old.prune({"b": [0]})
    assert old.prune({"a": [0]}).bonds == {"a": 1, "b": 3}
    masks = [np.array([1.0, 0.0]), np.ones(3)]  # one mask per bond, in bond order: nothing to resolve
    np.testing.assert_allclose(old.to_tensor(masks), old.prune({"a": [0]}).to_tensor(), atol=1e-12)


def test_label_list_errors():
    with pytest.raises(ValueError, match="dims names label 'z'"):
        Network([("x", "b"), ("b", "y")], dims={"z": 2})
    with pytest.raises(ValueError, match="broadcasting"):
        Network([(Ellipsis, "b"), ("b",)])
    with pytest.raises(TypeError, match="output= goes with label lists"):
        Network("ij,jk", output=["i"])
    with pytest.raises(TypeError, match="spec must be"):
        Network(42)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("make", [lambda **k: Network.tucker((6, 7, 8), 3, **k), lambda **k: Network.tt((5, 6, 7, 3), 2, **k),
                                  lambda **k: Network.tr((4, 5, 6), 2, **k), lambda **k: Network.cp((5, 6, 7), 3, **k)])
def test_to_tensor_is_contiguous_unless_a_view_is_asked_for(backend, make):
    net = make(seed=0, backend=backend)
    full = net.to_tensor()
    assert full.flags.c_contiguous if backend == "numpy" else full.is_contiguous()
    view = net.to_tensor(contiguous=False)
    np.testing.assert_array_equal(tnmars.get_backend(backend).to_numpy(view), tnmars.get_backend(backend).to_numpy(full))


def test_bad_optimize_fails_when_the_network_is_made():
    with pytest.raises(ValueError, match="unknown optimize"):
        Network.tt((3, 4, 5), 2, optimize="foo")
    net = Network.tt((3, 4, 5), 2, optimize=[(0, 1), (0, 1)], seed=0)
    assert net.optimize == ((0, 1), (0, 1)) and net.plan().path == ((0, 1), (0, 1))
