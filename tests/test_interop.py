"""tensorly interop: round trips in both directions for CP, Tucker, TT, TR and TT-matrix."""
from __future__ import annotations

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorly.cp_tensor import CPTensor
from tensorly.tr_tensor import TRTensor
from tensorly.tt_matrix import TTMatrix, tt_matrix_to_tensor
from tensorly.tt_tensor import TTTensor
from tensorly.tucker_tensor import TuckerTensor

from tnmars import Network, available_backends
from tnmars.interop.tensorly import from_tensorly, to_tensorly, topology
from tnmars.testing.strategies import networks

shapes = st.lists(st.integers(1, 4), min_size=2, max_size=4).map(tuple)
small_rank = st.integers(1, 3)


def _dense(obj):
    if isinstance(obj, TTMatrix):
        return tt_matrix_to_tensor(obj)
    return tl.to_numpy(obj.to_tensor())


def _same_factors(a, b):
    fa = [a.core, *a.factors] if isinstance(a, TuckerTensor) else list(a.factors if isinstance(a, CPTensor) else a)
    fb = [b.core, *b.factors] if isinstance(b, TuckerTensor) else list(b.factors if isinstance(b, CPTensor) else b)
    return len(fa) == len(fb) and all(np.array_equal(x, y) for x, y in zip(fa, fb))


@settings(max_examples=25, deadline=None)
@given(shape=shapes, rank=small_rank, seed=st.integers(0, 2**16))
def test_cp_round_trip(shape, rank, seed):
    cp = tl.random.random_cp(shape, rank, random_state=seed)
    cp.weights[:] = np.random.default_rng(seed).uniform(0.5, 2.0, rank)  # weights get folded
    net = Network.from_tensorly(cp)
    assert net.spec == Network.cp(shape, rank).spec
    np.testing.assert_allclose(net.to_tensor(), _dense(cp), atol=1e-12)
    back = net.to_tensorly()
    assert isinstance(back, CPTensor)
    np.testing.assert_array_equal(back.weights, np.ones(rank))
    np.testing.assert_allclose(_dense(back), _dense(cp), atol=1e-12)
    assert Network.from_tensorly(back).spec == net.spec


@settings(max_examples=25, deadline=None)
@given(shape=shapes, data=st.data(), seed=st.integers(0, 2**16))
def test_tucker_round_trip(shape, data, seed):
    ranks = data.draw(st.tuples(*[st.integers(1, n) for n in shape]))
    tk = tl.random.random_tucker(shape, list(ranks), random_state=seed)
    net = from_tensorly(tk)
    assert net.ranks == ranks and topology(net) == "tucker"
    np.testing.assert_allclose(net.to_tensor(), _dense(tk), atol=1e-12)
    back = to_tensorly(net)
    assert isinstance(back, TuckerTensor) and _same_factors(tk, back)


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple), data=st.data(),
       seed=st.integers(0, 2**16))
def test_tt_round_trip(shape, data, seed):
    inner = [data.draw(st.integers(1, 3)) for _ in range(len(shape) - 1)]
    tt = tl.random.random_tt(shape, [1, *inner, 1], random_state=seed)
    net = from_tensorly(tt)
    assert list(net.ranks) == inner and topology(net) == "tt"
    if len(shape) > 1:
        assert net.spec == Network.tt(shape, inner or 1).spec
    np.testing.assert_allclose(net.to_tensor(), _dense(tt), atol=1e-12)
    back = to_tensorly(net)
    assert isinstance(back, TTTensor) and _same_factors(tt, back)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, data=st.data(), seed=st.integers(0, 2**16))
def test_tr_round_trip(shape, data, seed):
    ranks = [data.draw(st.integers(1, 3)) for _ in shape]
    tr = tl.random.random_tr(shape, [*ranks, ranks[0]], random_state=seed)
    net = from_tensorly(tr)
    assert net.spec == Network.tr(shape, 1).spec and topology(net) == "tr"
    np.testing.assert_allclose(net.to_tensor(), _dense(tr), atol=1e-12)
    back = to_tensorly(net)
    assert isinstance(back, TRTensor) and _same_factors(tr, back)


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 3), data=st.data(), seed=st.integers(0, 2**16))
def test_tt_matrix_round_trip(d, data, seed):
    ins = [data.draw(st.integers(1, 3)) for _ in range(d)]
    outs = [data.draw(st.integers(1, 3)) for _ in range(d)]
    inner = [data.draw(st.integers(1, 3)) for _ in range(d - 1)]
    ttm = tl.random.random_tt_matrix(tuple(ins + outs), [1, *inner, 1], random_state=seed)
    net = from_tensorly(ttm)
    assert topology(net) == "tt_matrix"
    if d > 1:
        assert net.spec == Network.tt_matrix(ins, outs, inner).spec
    np.testing.assert_allclose(net.to_tensor(), _dense(ttm), atol=1e-12)
    back = to_tensorly(net)
    assert isinstance(back, TTMatrix) and _same_factors(ttm, back)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Network.cp((3, 4, 5), 2, seed=0),
        lambda: Network.tucker((3, 4, 5), (2, 3, 2), seed=0),
        lambda: Network.tt((3, 4, 5, 2), (2, 3, 2), seed=0),
        lambda: Network.tr((3, 4, 5), (2, 3, 2), seed=0),
        lambda: Network.tt_matrix((2, 3, 2), (3, 2, 2), 2, seed=0),
    ],
)
def test_network_to_tensorly_and_back_is_identical(make):
    net = make()
    back = Network.from_tensorly(net.to_tensorly())
    assert back.spec == net.spec
    for a, b in zip(net.cores, back.cores):
        np.testing.assert_array_equal(a, b)


def test_user_letters_and_index_orders_are_recognised():
    # a TT whose terms list the bond first and whose letters are not the built-in ones
    net = Network("Px,yQP,Qz->xyz", dims=dict(x=2, y=3, z=4, P=2, Q=3), seed=0)
    obj = to_tensorly(net)
    assert isinstance(obj, TTTensor)
    np.testing.assert_allclose(_dense(obj), net.to_tensor(), atol=1e-12)
    # a ring listed in a rotated, reversed order of cores
    ring = Network("zQR,yPQ,xRP->xyz", dims=dict(x=2, y=3, z=4, P=2, Q=3, R=2), seed=1)
    obj = to_tensorly(ring)
    assert isinstance(obj, TRTensor)
    np.testing.assert_allclose(_dense(obj), ring.to_tensor(), atol=1e-12)
    # Tucker with the core's bonds out of mode order
    tk = Network("cA,CBA,aC,bB->abc", dims=dict(a=2, b=3, c=4, A=2, B=3, C=2), seed=2)
    obj = to_tensorly(tk)
    assert isinstance(obj, TuckerTensor)
    np.testing.assert_allclose(_dense(obj), tk.to_tensor(), atol=1e-12)


@pytest.mark.parametrize(
    "spec, kw",
    [
        ("ab,bc,ca->", dict(ranks=2)),  # no open modes
        ("aA,AbB,Bc->cab", dict(shape=(2, 3, 4), ranks=2)),  # a chain whose output is not in chain order
        ("aAB,AbB->ab", dict(shape=(2, 3), ranks=2)),  # two bonds between two cores: a 2-core ring
        ("aAB,bBC,cCA->abc", dict(shape=(2, 3, 4), ranks=2)),  # a ring with its bonds written in odd places
        ("dD,aA,bB,cC,ABCD->abcd", dict(shape=(2, 2, 2, 2), ranks=2)),  # Tucker with the core last
        ("aAB,bA,cB->abc", dict(shape=(2, 3, 4), ranks=2)),  # a star (tree) with open mode on the centre
        ("aA,bA,cAB,dB->abcd", dict(shape=(2, 2, 2, 2), ranks=2)),  # a hyperedge plus a bond
    ],
)
def test_other_graphs_are_refused_or_exact(spec, kw):
    """Whatever the graph, to_tensorly either refuses it or returns an exactly equal object."""
    net = Network(spec, seed=0, **kw)
    if topology(net) is None:
        with pytest.raises(ValueError, match="tensorly has no class"):
            to_tensorly(net)
    else:
        np.testing.assert_allclose(_dense(to_tensorly(net)), net.to_tensor(), atol=1e-12)


def test_refusals():
    assert topology(Network("ab,bc,ca->", ranks=2)) is None
    assert topology(Network("aA,AbB,Bc->cab", shape=(2, 3, 4), ranks=2)) is None
    assert topology(Network("aAB,bA,cB->abc", shape=(2, 3, 4), ranks=2)) is None
    assert topology(Network("aAB,AbB->ab", shape=(2, 3), ranks=2)) == "tr"
    with pytest.raises(ValueError, match="tensorly has no class"):
        to_tensorly(Network("aA,bA,cAB,dB->abcd", shape=(2, 2, 2, 2), ranks=2))
    with pytest.raises(ValueError, match="not a tucker graph"):
        to_tensorly(Network.tt((2, 3, 4), 2), kind="tucker")
    two = Network.tt((3, 4), 2, seed=0)  # a two-core chain is also a CP graph
    assert isinstance(to_tensorly(two), TTTensor)
    np.testing.assert_allclose(_dense(to_tensorly(two, kind="cp")), two.to_tensor(), atol=1e-12)
    with pytest.raises(TypeError, match="CPTensor"):
        from_tensorly(np.ones((2, 2)))
    tt = tl.random.random_tt((2, 3), [1, 2, 1], random_state=0)
    tt.factors[0] = np.ones((2, 2, 2))  # a boundary rank that is not 1
    with pytest.raises(ValueError, match="boundary ranks"):
        from_tensorly(tt)


@pytest.mark.skipif("torch" not in available_backends(), reason="torch not installed")
def test_torch_arrays_stay_torch():
    import torch

    cp = tl.random.random_cp((3, 4), 2, random_state=0)
    cp_t = CPTensor((torch.as_tensor(cp.weights), [torch.as_tensor(f) for f in cp.factors]))
    net = from_tensorly(cp_t)
    assert net.backend == "torch"
    back = to_tensorly(net)
    assert isinstance(back.factors[0], torch.Tensor) and isinstance(back.weights, torch.Tensor)
    np.testing.assert_allclose(net.to_tensor().numpy(), _dense(cp), atol=1e-12)


def test_tr_svd_start_keeps_uneven_ring_ranks_on_their_bonds():
    """``ranks[k]`` is core k's left rank, as ``Network.tr`` reads them; uneven ranks must land
    on the right bonds (a mix-up made TR-SVD refuse the start and the fit fall back to a
    random one)."""
    from tnmars.interop import svd_init

    want = (2, 3, 2, 3, 4)
    x = Network.tr((6, 7, 6, 7, 6), want, seed=102).to_tensor()
    start = svd_init("tr", x, list(want))
    assert start.ranks == want and tuple(start.dims[term[0]] for term in start.inputs) == want


def test_tensorly_objects_of_more_than_26_modes_convert_both_ways():
    """from_tensorly refused more than 26 modes ("exceeds the 26 open-mode letters") though the
    built-in specs go past 'z' and to_tensorly already converted such networks. Values are
    compared through a contraction with one vector per mode (the dense tensors have 2**30
    entries) against the tensorly factors swept by hand."""
    import tensorly as tl

    x = [np.linspace(0.5, 1.5, 2) + 0.1 * k for k in range(30)]

    def tt_value(factors):
        v = np.ones(1)
        for k, g in enumerate(factors):
            v = np.einsum("r,rns,n->s", v, g, x[k])
        return v.item()

    def cp_value(cp):
        weights, factors = cp
        return float(np.sum(weights * np.prod([f.T @ x[k] for k, f in enumerate(factors)], axis=0)))

    def ttm_value(factors):
        v, d = np.ones(1), len(factors)
        for k, g in enumerate(factors):
            v = np.einsum("r,rios,i,o->s", v, g, x[k], x[d + k])
        return v.item()

    for obj, value in ((tl.random.random_tt((2,) * 30, rank=2, random_state=0), tt_value),
                       (tl.random.random_cp((2,) * 30, rank=2, random_state=0), cp_value),
                       (tl.random.random_tt_matrix((2,) * 30, rank=2, random_state=0), ttm_value)):
        net = Network.from_tensorly(obj)
        assert net.shape == (2,) * 30
        got = net.contract(",".join(net.output), *x, output="")
        np.testing.assert_allclose(got, value(obj), rtol=1e-10)
        back = net.to_tensorly()
        assert type(back) is type(obj)
        np.testing.assert_allclose(value(back), value(obj), rtol=1e-10)


def test_an_order_one_tucker_to_tensorly_says_what_it_is():
    with pytest.raises(ValueError, match="at least two modes"):
        Network.tucker((5,), 1, seed=0).to_tensorly()


@pytest.mark.parametrize("backend", available_backends())
def test_a_tt_written_with_boundary_legs_converts_to_tensorly(backend):
    """concepts.md writes a TT with summed boundary legs of size 1, 'xaA,AbB,Bcy->abc';
    to_tensorly refused it ('not a CP, Tucker, TT, TR or TT-matrix graph')."""
    if backend == "cupy":
        pytest.skip("tensorly's numpy backend")
    net = Network("xaA,AbB,Bcy->abc", shape=(2, 3, 4), ranks=2, seed=0, backend=backend)
    assert topology(net) == "tt"
    tt = net.to_tensorly()
    assert type(tt).__name__ == "TTTensor"
    want = np.asarray(Network("xaA,AbB,Bcy->abc", shape=(2, 3, 4), ranks=2, seed=0).to_tensor())
    got = tl.tt_to_tensor(tt)
    np.testing.assert_allclose(got.detach().cpu().numpy() if hasattr(got, "detach") else got, want, rtol=1e-6,
                               atol=1e-12)


@pytest.mark.parametrize("spec, dims", [("aA,bA,aA->ab", dict(a=3, b=4, A=2)), ("aA,aA->a", dict(a=3, A=2)),
                                        ("AB,aA,bB,bB->ab", dict(a=3, b=4, A=2, B=2))])
def test_graphs_with_an_open_mode_on_two_cores_are_refused(spec, dims):
    """A mode shared by two cores (a Hadamard product) looked CP or Tucker: to_tensorly dropped
    one of the cores and returned another tensor."""
    net = Network(spec, dims=dims, seed=0)
    with pytest.raises(ValueError, match="tensorly has no class"):
        net.to_tensorly()


@settings(max_examples=60, deadline=None)
@given(networks(max_cores=4))
def test_to_tensorly_is_exact_or_refused(net):
    """Whatever the graph: the tensorly object equals the network, or a ValueError says why."""
    try:
        obj = net.to_tensorly()
    except ValueError:
        return
    want = np.asarray(net.to_tensor())
    np.testing.assert_allclose(np.asarray(_dense(obj)).reshape(want.shape), want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("weights", [np.array([1 + 2j, 0.5 - 1j, -1j]), np.array([1.0, -2.0, 0.5]), np.array([2, 1, 3])],
                         ids=["complex", "float", "int"])
def test_cp_weights_are_folded_in_exactly_complex_ones_included(weights):
    """Complex weights on real factors were cast to the factors' dtype: the imaginary parts
    were dropped (NumPy's ComplexWarning only) and the network was another tensor. The network
    now takes the complex dtype, and real weights of another float dtype the wider one, as
    tensorly's reconstruction does."""
    rng = np.random.default_rng(1)
    factors = [rng.standard_normal((n, 3)) for n in (2, 4, 3)]
    net = Network.from_tensorly(CPTensor((weights, factors)))
    want = np.einsum("ar,br,cr,r->abc", *factors, weights)
    assert net.dtype == ("complex128" if np.iscomplexobj(weights) else "float64")
    np.testing.assert_allclose(net.to_tensor(), want, rtol=1e-12, atol=1e-12)
    torch = pytest.importorskip("torch")
    w = torch.tensor(weights, dtype=torch.complex64) if np.iscomplexobj(weights) else torch.tensor(weights)
    cores = Network.from_tensorly(CPTensor((w, [torch.tensor(f, dtype=torch.float32) for f in factors])))
    wider = {"complex": "complex64", "float": "float64", "int": "float32"}[
        "complex" if np.iscomplexobj(weights) else "float" if weights.dtype.kind == "f" else "int"]
    assert cores.dtype == wider
    np.testing.assert_allclose(cores.to_tensor().numpy(), want, rtol=1e-5, atol=1e-5)


def test_cp_weights_of_a_wider_float_dtype_widen_the_network():
    """Outside probe: float64 weights of 1e5 on float16 factors were cast to float16, so the
    network held inf where tensorly's reconstruction holds 100000.1 (NumPy's overflow warning
    only); weights of 1 + 1e-12 on float32 factors lost their last digits silently."""
    import tensorly as tl

    cp = CPTensor((np.array([1e5, 0.1]), [np.ones((3, 2), np.float16), np.ones((4, 2), np.float16)]))
    net = Network.from_tensorly(cp)
    assert net.dtype == "float64"
    np.testing.assert_array_equal(net.to_tensor(), tl.cp_to_tensor(cp))
    cp = CPTensor((np.array([1 + 1e-12, 1.0]), [np.ones((3, 2), np.float32), np.ones((4, 2), np.float32)]))
    assert Network.from_tensorly(cp).to_tensor()[0, 0] - 2.0 == pytest.approx(1e-12, rel=1e-3)


def test_cp_float_weights_on_integer_factors_give_a_float_network():
    """Float weights were cast to integer factors' dtype: 0.5 became 0 and 2.5 became 2, silently."""
    factors = [np.array([[1, 0], [0, 1], [1, 1]]), np.array([[1, 2], [3, 4]])]
    weights = np.array([0.5, 2.5])
    net = Network.from_tensorly(CPTensor((weights, factors)))
    assert net.dtype == "float64"
    np.testing.assert_allclose(net.to_tensor(), np.einsum("ar,br,r->ab", *factors, weights))


def test_factored_tensors_of_mixed_dtypes_give_the_tensor_tensorly_reconstructs():
    """An integer Tucker core with float factors (or a float32 TT core next to float64 ones)
    raised "cores have different dtypes": the network now takes their common dtype."""
    import tensorly as tl
    from tensorly.tt_tensor import TTTensor
    from tensorly.tucker_tensor import TuckerTensor
    rng = np.random.default_rng(2)
    core, factors = np.arange(8).reshape(2, 2, 2), [rng.standard_normal((n, 2)) for n in (3, 4, 2)]
    net = Network.from_tensorly(TuckerTensor((core, factors)))
    assert net.dtype == "float64"
    np.testing.assert_allclose(net.to_tensor(), tl.tucker_to_tensor((core, factors)), rtol=1e-12)
    tt = [rng.standard_normal((1, 3, 2)).astype(np.float32), rng.standard_normal((2, 4, 1))]
    net = Network.from_tensorly(TTTensor(tt))
    assert net.dtype == "float64"
    np.testing.assert_allclose(net.to_tensor(), tl.tt_to_tensor(tt), rtol=1e-6)


@pytest.mark.parametrize("rank", [4, 10])
def test_tr_svd_start_takes_ranks_above_the_first_mode(rank):
    """TR-SVD needs r_0 r_1 <= n_1; a rank above n_1 raised "rank[0] * rank[1] ... is larger than
    first matricization dimension" although ranks are documented as clipped and padded (inside
    fit the start silently fell back to a random one)."""
    import warnings

    from tnmars.interop import svd_init
    x = np.random.default_rng(0).standard_normal((3, 4, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = svd_init("tr", x, rank)
        smaller = svd_init("tr", x, 2)
    assert net.ranks == (rank,) * 3
    err = lambda n: np.linalg.norm(n.to_tensor() - x) / np.linalg.norm(x)  # noqa: E731
    assert err(net) < err(smaller)


def test_a_cp_start_above_a_mode_size_says_nothing():
    """tensorly's SVD start warns twice ("Trying to compute SVD with n_eigenvecs=12 ...") when the
    CP rank passes a mode size and fills the rest at random, as documented; the warnings reached
    users of fit(prior="bernoulli") (found by an outside probe)."""
    import warnings

    import tnmars
    x = Network.cp((10, 11, 12), 3, seed=0).to_tensor()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tnmars.fit(x, "cp", prior="bernoulli", relaxation={"steps": 10}, seed=0, progress=False)
    assert not [str(w.message) for w in caught if "n_eigenvecs" in str(w.message)]


def test_svd_init_refuses_what_it_would_silently_damage_or_fail_on_deep_inside():
    """Complex data lost its imaginary part (a NumPy warning only), 1-D data gave tensorly's
    "not enough values to unpack", a mask with nothing observed a LinAlgError."""
    from tnmars.interop import svd_init

    x = np.random.default_rng(0).standard_normal((4, 5, 6))
    with pytest.raises(TypeError, match="svd_init needs real data; got complex128"):
        svd_init("tucker", x + 1j * x, 2)
    for fmt in ("tt", "tr", "cp", "tucker"):
        with pytest.raises(ValueError, match="at least 2 modes; got shape \\(5,\\)"):
            svd_init(fmt, np.ones(5), 2)
        with pytest.raises(ValueError, match="observed marks no entry as observed"):
            svd_init(fmt, x, 2, observed=np.zeros(x.shape, bool))
    with pytest.raises(ValueError, match="observed has shape"):
        svd_init("cp", x, 2, observed=np.ones((4, 5), bool))
    assert svd_init("tt", x, 2, observed=x > 0).ranks == (2, 2)


def test_to_tensorly_of_something_else_than_a_network_is_a_type_error():
    with pytest.raises(TypeError, match="to_tensorly expects a tnmars Network; got ndarray \\(a dense array"):
        to_tensorly(np.ones(3))


def test_svd_init_leaves_tensorlys_backend_as_the_caller_set_it():
    """Found by an outside probe: svd_init (and so fit's TR starts and prior="bernoulli") set
    tensorly's global backend to numpy and left it there: a caller on the pytorch backend got
    ndarrays from tl.tensor afterwards, silently."""
    import tnmars
    from tnmars.interop.init import svd_init

    pytest.importorskip("torch")
    x = np.asarray(Network.tr((4, 5, 6), 2, seed=0).to_tensor())
    before = tl.get_backend()
    try:
        tl.set_backend("pytorch")
        for fmt in ("cp", "tucker", "tt", "tr"):
            svd_init(fmt, x, 2, seed=0)
            assert tl.get_backend() == "pytorch", fmt
        tnmars.fit(x, "tr", max_rank=3, seed=0, progress=False)
        assert tl.get_backend() == "pytorch"
    finally:
        tl.set_backend(before)


def test_svd_init_of_cp_on_zero_data_says_why_it_cannot():
    from tnmars.interop.init import svd_init

    with pytest.raises(ValueError, match="singular system"):
        svd_init("cp", np.zeros((3, 4, 5)), 2)


def test_a_train_whose_output_is_not_in_chain_order_is_refused_with_the_order_to_use():
    """Outside probe: a structure search's chain 0-2-1-3 (spec aB,bDE,cBD,dE->abcd) and
    'aA,cAB,bB->abc' were refused as "not a CP, Tucker, TT, TR or TT-matrix graph". The error
    now names the chain's order and the network to convert, which converts."""
    net = Network("aA,cAB,bB->abc", dims={"a": 3, "b": 4, "c": 5, "A": 2, "B": 2}, seed=0)
    for kind in (None, "tt"):
        with pytest.raises(ValueError, match=r"visits the modes in the order 'acb'.*'aA,cAB,bB->acb'"):
            net.to_tensorly(kind)
    ordered = Network("aA,cAB,bB->acb", cores=net.cores)
    tt = ordered.to_tensorly()
    import tensorly as tl

    np.testing.assert_allclose(np.transpose(tl.tt_to_tensor(tt), (0, 2, 1)), net.to_tensor(), rtol=1e-12)
    with pytest.raises(ValueError, match="is not a tucker graph$"):  # (no hint for what is no chain)
        Network.tt((2, 2, 2, 2), 2).to_tensorly("tucker")


def test_a_ring_whose_output_is_not_in_loop_order_is_refused_with_the_order_to_use():
    """Outside probe (2026-12-04): a ring such as a structure search returns
    ('aAD,bBC,cAB,dCD->abcd', its loop a-c-b-d) got a bare refusal where a chain got the order
    to use. The error now names the loop's order and the network to convert, which converts."""
    net = Network("aAD,bBC,cAB,dCD->abcd", shape=(3, 4, 5, 6), ranks={"A": 2, "B": 2, "C": 2, "D": 2}, seed=0)
    for kind in (None, "tr"):
        with pytest.raises(ValueError, match=r"tensor ring whose loop visits the modes in the order 'acbd'.*"
                                             r"'aAD,bBC,cAB,dCD->acbd'"):
            net.to_tensorly(kind)
    ring = Network("aAD,bBC,cAB,dCD->acbd", cores=net.cores).to_tensorly()
    import tensorly as tl

    assert type(ring).__name__ == "TRTensor"
    np.testing.assert_allclose(np.transpose(tl.tr_to_tensor(ring), (0, 2, 1, 3)), net.to_tensor(), rtol=1e-12)
