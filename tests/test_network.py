import warnings
from math import prod

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tnmars
from tnmars import Network
from tnmars.testing.strategies import dims, networks, specs

torch = pytest.importorskip("torch")


# ----------------------------------------------------------------------------- laws
@given(networks())
def test_to_tensor_equals_numpy_einsum(net):
    expected = np.einsum(net.spec, *net.cores)
    assert net.to_tensor().shape == net.shape == expected.shape
    np.testing.assert_allclose(net.to_tensor(), expected, rtol=1e-10, atol=1e-12)


@given(st.one_of(networks(min_cores=1, max_cores=1), networks(max_cores=3)), st.sampled_from(["numpy", "torch"]),
       st.booleans())
def test_to_tensor_shares_no_memory_with_the_cores(net, backend, contiguous):
    """Changing the returned tensor in place leaves the network alone, a single core included
    (its "contraction" is the core itself, or a view of it), with or without ``contiguous``."""
    net = net.to(backend)
    before = [np.array(c, copy=True) for c in net.to("numpy").cores]
    out = net.to_tensor(contiguous=contiguous)
    out *= 0
    for c, b in zip(net.to("numpy").cores, before):
        np.testing.assert_array_equal(c, b)


@pytest.mark.parametrize("spec", ["ij", "ij->ji", "ijk->kij"])
def test_fitting_a_single_core_network_returns_the_data(spec):
    """A network of one core (no bond) is the data itself; fit used to compute its residual in
    place on the core and return zeros with a relative error of 0."""
    rng = np.random.default_rng(0)
    template = Network(spec, shape=tuple(range(3, 3 + len(spec.split("->")[-1]))))
    x = rng.standard_normal(template.shape)
    result = tnmars.fit(x, template, progress=False)
    np.testing.assert_allclose(result.network.to_tensor(), x, rtol=1e-12, atol=1e-12)
    assert result.relative_error < 1e-12


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_narrowing_conversion_that_overflows_is_refused(tmp_path, backend):
    """float64 cores past float16's range became infinities without a word (torch) or with
    NumPy's cast warning only; ``to`` and ``load`` now refuse, and a conversion that fits works."""
    net = Network.tucker((3, 4, 5), 2, seed=0, scale=1e30)
    path = tnmars.save(net, tmp_path / "big.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NumPy's own cast warning
        with pytest.raises(ValueError, match="to float16 overflows"):
            net.to(backend, dtype="float16")
        with pytest.raises(ValueError, match="to float16 overflows"):
            tnmars.load(path, backend=backend, dtype="float16")
    small = net.to(backend, dtype="float32")
    assert small.dtype == "float32"
    np.testing.assert_allclose(np.asarray(small.to("numpy").to_tensor(), dtype=np.float64), net.to_tensor(), rtol=1e-5)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_narrowing_conversion_that_flushes_a_core_to_zero_is_refused(tmp_path, backend):
    """A core of entries below float16's smallest value (the gauge put 1e-10 on one core and
    1e10 on the next) became all zeros, a zero network without a word, from ``to`` and from
    ``load(dtype=)``; now refused. Flushing entries that carry more of a core's norm than the
    dtype's rounding warns; flushing negligible ones (1e-9 of the core) stays quiet."""
    net = Network.tt((3, 4, 5), 2, seed=0)
    c = net.cores
    gauged = net.with_cores([c[0] * 1e-10, c[1] * 1e10, c[2]]).to(backend)
    path = tnmars.save(gauged, tmp_path / "tiny.npz")
    with pytest.raises(ValueError, match="flushes every entry to zero"):
        gauged.to(dtype="float16")
    with pytest.raises(ValueError, match="flushes every entry to zero"):
        tnmars.load(path, backend=backend, dtype="float16")
    small = np.full((3, 2), 1e-5)
    small[0] = 1e-9
    small[:, 1] = 2e-8  # four entries flushed (below 3e-8), 2.4e-3 of the core's norm: above float16's 2^-10
    partial = net.with_cores([small, c[1], c[2]]).to(backend)
    with pytest.warns(UserWarning, match="flushes 4 of its 6 entries to zero"):
        partial.to(dtype="float16")
    negligible = np.array(c[0], copy=True)
    negligible[0] = 1e-9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.with_cores([negligible, c[1], c[2]]).to(backend).to(dtype="float16")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_narrowing_integer_conversion_that_wraps_is_refused(backend):
    """Integer cores of 1000 became -24 as int8 (and -2 became 254 as uint8) without a word."""
    big = Network.tt((3, 4), 2).with_cores([np.full((3, 2), 1000, dtype=np.int64), np.ones((2, 4), dtype=np.int64)])
    negative = big.with_cores([np.full((3, 2), -2, dtype=np.int64), np.ones((2, 4), dtype=np.int64)])
    big, negative = big.to(backend), negative.to(backend)
    for net, dtype in ((big, "int8"), (negative, "uint8"), (negative, "uint64")):
        if backend == "torch" and dtype == "uint64":
            continue  # (torch's uint64 has few ops)
        with pytest.raises(ValueError, match=f"to {dtype} changes its values"):
            net.to(dtype)
    assert np.asarray(big.to("int16").to("numpy").to_tensor())[0, 0] == 2000  # in range: converted


@given(networks(backend="torch"))
def test_to_tensor_equals_numpy_einsum_torch(net):
    out = net.to_tensor()
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    expected = np.einsum(net.spec, *[c.numpy() for c in net.cores])
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)


@given(networks())
def test_prune_keeping_everything_is_identity(net):
    # (index lists: an integer array of a bond of size 1 or 2, [0] or [0, 1], would read as a mask too)
    pruned = net.prune({b: list(range(n)) for b, n in net.bonds.items()})
    assert pruned.ranks == net.ranks
    for a, b in zip(pruned.cores, net.cores):
        np.testing.assert_array_equal(a, b)


@given(st.data())
def test_prune_equals_binary_mask(data):
    backend = data.draw(st.sampled_from(["numpy", "torch"]))
    net = data.draw(networks(backend=backend))
    be = net.backend_impl
    keep, masks = {}, {}
    for bond, n in net.bonds.items():
        bits = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        keep[bond] = bits
        masks[bond] = be.asarray(bits.astype("float64"))
    pruned = net.prune(keep)
    assert pruned.ranks == tuple(int(keep[b].sum()) for b in net.bonds)
    np.testing.assert_allclose(
        be.to_numpy(pruned.to_tensor()), be.to_numpy(net.to_tensor(masks)), rtol=1e-10, atol=1e-12
    )


@given(specs(), st.data())
def test_dims_strategy_gives_consistent_networks(spec, data):
    sizes = data.draw(dims(spec))
    net = Network(spec, dims=sizes, seed=0)
    assert net.dims == sizes


# ----------------------------------------------------------------------------- constructors
def test_cp_closed_forms():
    net = Network.cp((3, 4, 5), 6, seed=0)
    assert net.shape == (3, 4, 5)
    assert net.bonds == {"A": 6}
    assert net.num_params == (3 + 4 + 5) * 6
    assert net.compression == pytest.approx(60 / 72)
    f = net.cores
    np.testing.assert_allclose(net.to_tensor(), np.einsum("ir,jr,kr->ijk", *f))


def test_tucker_closed_forms_and_clipping():
    net = Network.tucker((5, 6, 7), (2, 3, 4), seed=0)
    assert net.ranks == (2, 3, 4)
    assert net.num_params == 2 * 3 * 4 + 5 * 2 + 6 * 3 + 7 * 4
    assert net.compression == pytest.approx(210 / net.num_params)
    with pytest.warns(UserWarning, match="clipped"):
        clipped = Network.tucker((2, 6, 7), 4)
    assert clipped.ranks == (2, 4, 4)


def test_tt_closed_forms_and_clipping():
    net = Network.tt((4, 5, 6, 7), (2, 3, 4), seed=0)
    assert net.ranks == (2, 3, 4)
    assert [tuple(c.shape) for c in net.cores] == [(4, 2), (2, 5, 3), (3, 6, 4), (4, 7)]
    assert net.num_params == 4 * 2 + 2 * 5 * 3 + 3 * 6 * 4 + 4 * 7
    with pytest.warns(UserWarning, match=r"clipped to the feasible \(2, 4, 2\)"):
        clipped = Network.tt((2, 2, 2, 2), 8)
    assert clipped.ranks == (2, 4, 2)
    same = Network.tt((4, 5, 6), [1, 2, 3, 1])  # boundary ranks accepted
    assert same.ranks == (2, 3)


def test_tr_closed_forms():
    net = Network.tr((4, 5, 6), (2, 3, 4), seed=0)  # ranks[k]: core k's left rank (tensorly's r_k)
    assert [tuple(c.shape) for c in net.cores] == [(2, 4, 3), (3, 5, 4), (4, 6, 2)] and net.ranks == (2, 3, 4)
    assert net.num_params == 2 * 4 * 3 + 3 * 5 * 4 + 4 * 6 * 2
    a, b, c = net.cores
    np.testing.assert_allclose(net.to_tensor(), np.einsum("xiy,yjz,zkx->ijk", a, b, c))


def test_tt_matrix_closed_forms_reference_layer():
    net = Network.tt_matrix((7, 4, 7, 4), (5, 5, 5, 5), 20)
    assert net.shape == (7, 4, 7, 4, 5, 5, 5, 5)
    assert net.ranks == (20, 20, 20)
    assert net.num_params == 23_100  # the MARS reference layer 784 -> 625
    assert net.compression == pytest.approx(784 * 625 / 23_100)


def test_tt_matrix_is_the_matrix_of_x_at_w():
    net = Network.tt_matrix((2, 3), (4, 5), 3, seed=1)
    w = net.to_tensor().reshape(6, 20)
    x = np.random.default_rng(0).standard_normal((7, 2, 3))
    y = net.contract("Zab", x, output="Zcd")
    np.testing.assert_allclose(y.reshape(7, 20), x.reshape(7, 6) @ w, atol=1e-12)


def test_from_cores_reads_sizes_and_with_cores_checks_them():
    rng = np.random.default_rng(0)
    cores = [rng.standard_normal((3, 2)), rng.standard_normal((2, 4))]
    net = Network.from_cores("ij,jk", cores)
    assert net.bonds == {"j": 2} and net.shape == (3, 4)
    with pytest.raises(ValueError, match="size 5 along index 'j'"):
        net.with_cores([rng.standard_normal((3, 2)), rng.standard_normal((5, 4))])


# ----------------------------------------------------------------------------- initialisation
@pytest.mark.parametrize(
    "make",
    [
        lambda s: Network.cp((20, 20, 20), 16, seed=s, scale=2.0),
        lambda s: Network.tucker((12, 12, 12), 6, seed=s, scale=2.0),
        lambda s: Network.tt((6, 6, 6, 6), 9, seed=s, scale=2.0),
        lambda s: Network.tr((8, 8, 8), 5, seed=s, scale=2.0),
    ],
)
def test_initialisation_gives_entries_of_the_chosen_scale(make):
    stds = [make(seed).to_tensor().std() for seed in range(20)]
    # the rule is exact in expectation of the variance; the sample std averages close to it
    assert np.sqrt(np.mean(np.square(stds))) == pytest.approx(2.0, rel=0.15)


@pytest.mark.parametrize("scale, dtype", [(1e12, "float16"), (1e-9, "float16"), (1e40, "float32"), (1e307, "float64")])
def test_a_scale_the_dtype_cannot_hold_is_refused_not_turned_into_infinities(scale, dtype):
    with pytest.raises(ValueError, match=f"does not fit {dtype}"):
        Network("ij,jk", shape=(2, 2), ranks=2, scale=scale, dtype=dtype)
    # inside the range the network is finite and nonzero, even in half precision
    small = Network("ij,jk", shape=(2, 2), ranks=2, scale=100.0, dtype="float16").to_tensor()
    assert np.isfinite(small).all() and np.abs(small).max() > 0


def test_seeded_initialisation_is_reproducible_across_backends():
    a = Network.tt((3, 4, 5), 2, seed=7)
    b = Network.tt((3, 4, 5), 2, seed=7, backend="torch")
    for x, y in zip(a.cores, b.cores):
        np.testing.assert_array_equal(x, y.numpy())


# ----------------------------------------------------------------------------- backends
def test_conversion_between_backends_keeps_values_and_sets_dtype():
    net = Network.tr((3, 4, 5), 2, seed=0)
    t = net.to("torch", dtype="float32")
    assert t.backend == "torch" and t.dtype == "float32" and t.device == "cpu"
    assert isinstance(t.to_tensor(), torch.Tensor)
    np.testing.assert_allclose(t.to_tensor().numpy(), net.to_tensor(), rtol=1e-5, atol=1e-6)
    back = t.numpy()
    assert back.backend == "numpy" and isinstance(back.to_tensor(), np.ndarray)


def test_torch_autograd_flows_through_contraction():
    net = Network.tt((3, 4, 5), 2, seed=0, backend="torch")
    cores = [c.clone().requires_grad_(True) for c in net.cores]
    out = net.with_cores(cores).to_tensor()
    (out**2).sum().backward()
    expected = torch.einsum(net.spec, *cores)
    (g,) = torch.autograd.grad((expected**2).sum(), [cores[1]])
    torch.testing.assert_close(cores[1].grad, g)


def test_mixing_backends_is_refused():
    net = Network.tt((3, 4), 2, seed=0)
    with pytest.raises(TypeError, match="different frameworks"):
        Network.from_cores("ij,jk", [net.cores[0], torch.as_tensor(net.cores[1])])
    with pytest.raises(TypeError, match="different frameworks"):
        net.contract("Zab", torch.ones(2, 3, 4), output="Z")


def test_missing_backend_or_device_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        Network.tt((3, 4), 2, backend="jax")
    with pytest.raises(ValueError, match="CPU only"):
        Network.tt((3, 4), 2, device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Network.tt((3, 4), 2, backend="torch", device="cuda")


def test_available_backends_lists_numpy_and_torch():
    names = tnmars.available_backends()
    assert "numpy" in names and "torch" in names


# ----------------------------------------------------------------------------- pruning to zero
def test_bond_pruned_to_zero_gives_a_zero_network_without_crashing():
    net = Network.tucker((4, 5, 6), 3, seed=0)
    empty = net.prune({"B": np.zeros(3, dtype=bool)})
    assert empty.ranks == (3, 0, 3)
    assert empty.num_params == net.num_params_at({"B": 0})
    out = empty.to_tensor()
    assert out.shape == (4, 5, 6) and not out.any()
    assert "compression" in empty.summary()
    np.testing.assert_array_equal(empty.prune({"A": [0]}).to_tensor(), 0)


def test_prune_rejects_bad_selections():
    net = Network.tt((3, 4, 5), 2, seed=0)
    with pytest.raises(ValueError, match="not a bond"):
        net.prune({"a": [0]})
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\)"):
        net.prune({"A": [2]})
    with pytest.raises(ValueError, match="expected \\(2,\\)"):
        net.prune({"A": np.ones(3, dtype=bool)})


def test_prune_names_the_bond_and_the_index_a_keep_list_repeats():
    """Found by an outside tester: ``keep=[0, 0, 1]`` on a bond of size 3 was called "an integer
    array of the bond's length holding only 0 and 1" and told to pass "indices as a list", which
    it was; a repeat anywhere is refused naming the bond and the repeated index."""
    net = Network.tucker((4, 4, 4), 3, seed=0)
    with pytest.raises(ValueError, match=r"^kept indices for bond 'A' repeat index 0 \(\[0, 0, 1\]\)"):
        net.prune({"A": [0, 0, 1]})
    with pytest.raises(ValueError, match=r"bond 'B' repeat index 2 \(\[2, 0, 2\]\); list each kept index once$"):
        net.prune({"B": [2, 0, 2]})
    with pytest.raises(ValueError, match=r"bond 'C' repeat indices 0 and 1 \(\[1, 0, 1, 0\]\)"):
        net.prune({"C": np.array([1, 0, 1, 0])})
    assert net.prune({"A": [2, 0], "B": [1]}).ranks == (2, 1, 3)  # (distinct indices, any order)


def test_prune_refuses_an_integer_zero_one_array_that_reads_differently_as_a_mask():
    """Found by an outside probe: ``(phi > 0.5).long()`` is a mask to ``to_tensor`` but indices to
    ``prune``: ``[1, 0]`` kept both indices (a mask keeps index 0), ``[0]`` kept a rank-1 bond (a
    mask closes it), silently. Such an array is refused; booleans and index lists work."""
    torch = pytest.importorskip("torch")
    net = Network("aA,AbB,Bc->abc", shape=(3, 4, 5), ranks={"A": 2, "B": 1}, seed=0)
    for keep in ({"A": np.array([1, 0])}, {"B": np.array([0])}, {"A": torch.tensor([1, 0])}):
        with pytest.raises(ValueError, match="integer array of the bond's length holding only 0 and 1"):
            net.prune(keep)
    with pytest.raises(ValueError, match=r"repeat index 1 .*; a 0/1 mask must be boolean"):
        net.prune({"A": [1, 1]})  # (a repeat as indices: the mask reading is named too)
    mask = np.array([1, 0])
    np.testing.assert_allclose(net.prune({"A": mask.astype(bool)}).to_tensor(), net.to_tensor({"A": mask}))
    assert net.prune({"A": [1, 0]}).ranks == (2, 1) and net.prune({"B": [0]}).ranks == (2, 1)
    assert net.prune({"A": np.array([1])}).ranks == (1, 1)  # (shorter than the bond: indices)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(spec="ij,jk", dims={"i": 2, "j": 3}), "no size for index 'k'"),
        (dict(spec="ij,jk", shape=(2, 3), ranks=0), "ranks must be positive"),
        (dict(spec="ij,jk", shape=(2, -3), ranks=2), "shape must be positive"),
        (dict(spec="ij,jk", dims={"i": 0, "j": 2, "k": 2}), "must be positive"),
        (dict(spec="ij,jk", dims={"i": 2, "j": 2, "k": 2}, shape=(3, 2)), "inconsistent sizes"),
        (dict(spec="ij,jk", shape=(2, 3, 4), ranks=2), "3 entries but spec"),
        (dict(spec="ij,jk", dims={"q": 2}), "not in spec"),
        (dict(spec="ij,jk", shape=(2, 3), ranks={"i": 2}), "not a bond"),
    ],
)
def test_bad_dims_name_the_problem(kwargs, words):
    with pytest.raises(ValueError, match=words):
        Network(**kwargs)


def test_from_cores_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="2 cores but 1 arrays"):
        Network.from_cores("ij,jk", [rng.standard_normal((2, 3))])
    with pytest.raises(ValueError, match="has shape \\(2, 3, 1\\) but its term 'ij'"):
        Network.from_cores("ij,jk", [rng.standard_normal((2, 3, 1)), rng.standard_normal((3, 4))])
    with pytest.raises(ValueError, match="size 5 along index 'j'"):
        Network.from_cores("ij,jk", [rng.standard_normal((2, 3)), rng.standard_normal((5, 4))])
    with pytest.raises(TypeError, match="not a numpy array"):
        Network.from_cores("ij,jk", [rng.standard_normal((2, 3)), [[1.0] * 4] * 3])


def test_constructor_bad_input():
    with pytest.raises(ValueError, match="needs 2 values"):
        Network.tt((3, 4, 5), (2, 3, 4))
    with pytest.raises(ValueError, match="same number of factors"):
        Network.tt_matrix((2, 3), (4,), 2)
    with pytest.raises(ValueError, match="at least 2 cores"):
        Network.tr((3,), 2)
    with pytest.raises(TypeError, match="integers"):
        Network.tt((3.5, 4), 2)


# ----------------------------------------------------------------------------- plans
def test_plans_are_cached_and_report_costs():
    net = Network.tt((8,) * 6, 4, seed=0)
    p1 = net.path_info()
    p2 = net.prune({"A": [0, 1, 2, 3]}).plan()
    assert p1 is p2  # same shapes -> the same cached plan object
    assert p1.flops > 0 and p1.largest_intermediate >= 8**6
    assert "Optimized" in p1.info_text or "single" in p1.info_text


def test_masks_are_folded_into_the_smallest_adjacent_core():
    net = Network.tucker((10, 10, 10), (3, 3, 3), seed=0)
    # the factor (10, 3) has 30 entries, the core (3, 3, 3) has 27: the core is smaller
    assert net.mask_site("A") == (0, 0)
    net2 = Network.tt((2, 50, 2), 2, seed=0)
    assert net2.mask_site("A") == (0, 1)
    assert net2.mask_site("B") == (2, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prod(net.shape) == net.dense_size


# ----------------------------------------------------------------------------- hostile arguments (issue 14)
def test_float_keep_values_are_masks_never_indices():
    net = Network.tt((3, 4, 5), 2, seed=0)
    assert net.prune({"A": np.array([1.0, 0.0])}).ranks == (1, 2)  # read as indices [1, 0] it pruned nothing
    np.testing.assert_allclose(net.prune({"A": np.array([1.0, 0.0])}).to_tensor(),
                               net.to_tensor({"A": np.array([1.0, 0.0])}))
    with pytest.raises(ValueError, match="read as a mask"):
        net.prune({"A": [0.5]})  # kept index 0
    with pytest.raises(ValueError, match="only 0 and 1"):
        net.prune({"A": [0.5, 1.0]})
    with pytest.raises(ValueError, match="only 0 and 1"):
        net.prune({"A": [np.nan, 1.0]})
    with pytest.raises(TypeError, match="integer indices or a mask"):
        net.prune({"A": ["0"]})
    with pytest.raises(TypeError, match="mapping"):
        net.prune([0, 1])
    assert net.prune({"A": []}).ranks == (0, 2) and net.prune({"A": np.array([1])}).ranks == (1, 2)


def test_ranks_are_clipped_to_what_each_bond_can_use():
    """ranks=10**12, a tensor ring of 100000 and CP of 10**9 raised MemoryError."""
    with pytest.warns(UserWarning, match=r"clipped to the feasible \{'j': 2\}"):
        assert Network("ij,jk", shape=(2, 3), ranks=10**12).ranks == (2,)
    with pytest.warns(UserWarning, match="clipped"):
        assert Network.tr((1, 1, 1), 100000).ranks == (1, 1, 1)
    with pytest.warns(UserWarning, match="CP rank 1000000000 clipped to the feasible 12"):
        assert Network.cp((3, 4, 5), 10**9).ranks == (12,)
    with pytest.warns(UserWarning, match="clipped"):
        ring = Network.tr((4, 5, 6), 1000, seed=0)
    assert ring.ranks == (120, 120, 120) and np.isfinite(ring.to_tensor()).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # feasible ranks are left alone, silently
        assert Network.tr((4, 5, 6), 3).ranks == (3, 3, 3)
        assert Network("ij,jk", dims={"i": 2, "j": 9, "k": 3}).ranks == (9,)  # explicit dims: as given


def test_clipping_keeps_the_network_expressive():
    """The bounds are exact: a bond joining two cores needs at most the product of the other
    indices of either core, so a random tensor of that shape is still representable."""
    with pytest.warns(UserWarning):
        net = Network("ij,jkl,lm->ikm", shape=(2, 3, 4), ranks=50)
    assert net.bonds == {"j": 2, "l": 4}
    assert net.num_params == 2 * 2 + 2 * 3 * 4 + 4 * 4


def test_impossible_sizes_are_a_value_error_not_a_memory_error():
    with pytest.raises(ValueError, match="more than this machine's"):
        Network("ij,jk", dims={"i": 2, "j": 10**12, "k": 3})


@pytest.mark.parametrize("kwargs, error, message", [
    ({"ranks": True}, TypeError, "not a bool"),
    ({"ranks": 2.5}, TypeError, "must be an integer"),
    ({"ranks": 2.0}, TypeError, "must be an integer"),
    ({"shape": (float("inf"), 3)}, TypeError, "shape must hold integers"),  # was OverflowError
    ({"shape": (2, True)}, TypeError, "shape must hold integers"),
    ({"shape": "23"}, TypeError, "shape must be"),
    ({"dims": {"i": 2.0}}, TypeError, "integer"),
    ({"dtype": "int64"}, TypeError, "floating type"),  # cores were 93% zeros
    ({"dtype": "bool"}, TypeError, "floating type"),
    ({"dtype": "nope"}, TypeError, "not a data type"),
    ({"scale": float("inf")}, ValueError, "finite number > 0"),
    ({"scale": float("nan")}, ValueError, "finite number > 0"),
    ({"scale": -1.0}, ValueError, "finite number > 0"),
    ({"scale": "1"}, TypeError, "real number"),
    ({"seed": True}, TypeError, "seed must be an integer"),
    ({"seed": -1}, ValueError, "seed must be >= 0"),
])
def test_constructor_refuses_what_it_used_to_accept(kwargs, error, message):
    base = {"shape": (2, 3), "ranks": 2}
    with pytest.raises(error, match=message):
        Network("ij,jk", **{**base, **kwargs})


def test_accepted_alternatives_are_honoured():
    a = Network("ij,jk", shape=(2, 3), ranks=np.int64(2), dtype=np.float32, seed=np.random.default_rng(0))
    b = Network("ij,jk", shape=(2, 3), ranks=2, dtype="float32", seed=0)
    assert a.dtype == "float32" and a.ranks == (2,)
    np.testing.assert_array_equal(a.to_tensor(), b.to_tensor())  # a Generator seeds like its int
    assert Network("ij,jk", shape=(2, 3), ranks=2, dtype="float16", seed=0).dtype == "float16"
    torch = pytest.importorskip("torch")
    t = Network("ij,jk", shape=(2, 3), ranks=2, dtype=torch.float32, backend="torch", seed=0)
    assert t.dtype == "float32"


def test_cores_must_hold_numbers():
    with pytest.raises(TypeError, match="cores must hold numbers"):
        Network("ij,jk", cores=[np.array([["a"]]), np.array([["b"]])])
    ints = Network("ij,jk", cores=[np.ones((2, 2), int), np.ones((2, 3), int)])
    np.testing.assert_array_equal(ints.to_tensor(), np.full((2, 3), 2))


def test_masks_from_any_source_on_torch_cores_that_need_gradients():
    """A NumPy mask on torch cores that require grad was a RuntimeError; bool tensors a
    NotImplementedError (the NumPy path handles both)."""
    torch = pytest.importorskip("torch")
    net = Network.tt((3, 4, 5), 2, seed=0)
    tnet = net.to("torch").with_cores([c.clone().requires_grad_() for c in net.to("torch").cores])
    mask = np.array([1.0, 0.0])
    out = tnet.to_tensor({"A": mask})
    out.sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), net.to_tensor({"A": mask}))
    assert tnet.to_tensor({"A": [1, 0]}).dtype == torch.float64
    assert tnet.to_tensor({"A": torch.tensor([True, False])}).shape == (3, 4, 5)
    assert tnet.prune({"A": torch.tensor([True, False])}).ranks == (1, 2)
    f32 = net.to("torch", dtype="float32")
    assert f32.to_tensor({"A": mask}).dtype == torch.float32  # a float64 NumPy mask keeps float32 cores float32
    bools = Network("ij,jk", cores=[torch.ones(2, 2, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool)])
    ref = np.einsum("ij,jk->ik", np.ones((2, 2), bool), np.ones((2, 3), bool))
    np.testing.assert_array_equal(bools.to_tensor().numpy(), ref)
    with pytest.raises(TypeError, match="must hold numbers"):
        net.to_tensor({"A": np.array(["a", "b"])})


def test_warnings_point_at_the_callers_line():
    """Clipping warnings name the user's file and line, not network.py."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Network.tucker((2, 6, 7), 4)
        Network.tt((2, 2, 2, 2), 8)
        Network.cp((2, 3), 9)
        Network("ij,jk", shape=(2, 3), ranks=9)
    assert len(caught) == 4
    assert {w.filename for w in caught} == {__file__}


def test_masks_already_on_the_backend_keep_the_cores_dtype():
    """A float64 NumPy mask, e.g. ``(phi > 0.5).astype(float)``, made a float16/float32 network's
    tensor and environment gradients float64 without a word; a float64 torch mask on float32
    cores failed inside the pairwise products ("both inputs should have same dtype")."""
    from tnmars.gradients import vjp

    net = Network.tt((3, 4, 5), 2, seed=0)
    mask = np.array([1.0, 0.0])
    for dtype in ("float16", "float32"):
        low = net.to(dtype)
        out = low.to_tensor({"A": mask})
        assert out.dtype == dtype
        np.testing.assert_allclose(out, low.to_tensor({"A": mask.astype(dtype)}))
        out, grads, mask_grads = vjp(low, lambda t: t, {"A": mask})
        assert out.dtype == dtype and {g.dtype.name for g in grads} == {dtype}
        assert mask_grads["A"].dtype == dtype
    torch = pytest.importorskip("torch")
    f32 = net.to("torch", dtype="float32")
    cores = [c.clone().requires_grad_() for c in f32.cores]
    logits = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    out = f32.with_cores(cores).to_tensor({"A": logits})
    assert out.dtype == torch.float32
    out.sum().backward()
    assert logits.grad is not None and cores[0].grad.dtype == torch.float32
    assert net.to("torch", dtype="bfloat16").to_tensor({"A": torch.ones(2)}).dtype == torch.bfloat16
    # ml_dtypes (imported by JAX and others) makes NumPy know "bfloat16" as an opaque kind "V"
    pytest.importorskip("ml_dtypes")
    for mask in (torch.ones(2, dtype=torch.float64), [1.0, 0.0]):
        assert net.to("torch", dtype="bfloat16").to_tensor({"A": mask}).dtype == torch.bfloat16
    assert net.to("torch").to_tensor({"A": torch.ones(2, dtype=torch.bfloat16)}).dtype == torch.float64


def test_label_networks_keep_their_labels_through_prune_to_and_numpy():
    """prune, to and numpy built their results without .labels (None), so a network declared
    with label lists lost the map from its labels to index symbols after any of them."""
    net = Network([["x", "bond"], ["bond", "y"]], dims={"x": 2, "bond": 3, "y": 4}, seed=0)
    assert net.labels == {"bond": "a", "x": "x", "y": "y"}
    assert net.prune({net.labels["bond"]: [0, 2]}).labels == net.labels
    assert net.to("float32").labels == net.labels
    assert net.numpy().labels == net.labels
    torch = pytest.importorskip("torch")
    assert net.to(torch.float32).to("numpy").labels == net.labels


def test_num_params_at_refuses_what_is_not_a_rank():
    """An unknown key was ignored (the full count came back), an open mode's key changed its
    size, and a negative rank gave a negative count, all without an error."""
    net = Network.tt((3, 4, 5), 2)
    assert net.num_params_at({"A": 1}) == 3 + 8 + 10 and net.num_params_at({"A": 0, "B": 0}) == 0
    assert net.num_params_at(np.array([1, 1])) == 3 + 4 + 5
    with pytest.raises(ValueError, match="'Z' is not a bond"):
        net.num_params_at({"Z": 1})
    with pytest.raises(ValueError, match="'a' is not a bond"):
        net.num_params_at({"a": 10})
    with pytest.raises(ValueError, match=">= 0"):
        net.num_params_at({"A": -1})
    with pytest.raises(TypeError, match="integer"):
        net.num_params_at([1.5, 2])


def test_shapes_and_ranks_as_numpy_arrays():
    """np.array([2, 3, 4]) was a TypeError "shape must be an integer" (its __index__ refuses)."""
    assert Network.tt(np.array([2, 3, 4]), np.array([2, 2])).shape == (2, 3, 4)
    assert Network.tucker(np.arange(2, 5), 2).shape == (2, 3, 4)
    with pytest.raises(TypeError, match="integers"):
        Network.tt(np.array([2.5, 3.0]), 2)


def test_bfloat16_and_numpy_say_what_to_do():
    """NumPy has no bfloat16: .to("numpy") of a torch bfloat16 network and a NumPy network of
    dtype "bfloat16" raised NumPy's bare "data type 'bfloat16' not understood"."""
    with pytest.raises(TypeError, match="numpy has no bfloat16"):
        Network.tt((3, 4), 2, dtype="bfloat16")
    torch = pytest.importorskip("torch")
    net = Network.tt((3, 4, 5), 2, backend="torch", dtype=torch.bfloat16, seed=0)
    host = net.to("numpy")
    assert host.dtype == "float32"  # every bfloat16 value exactly, as numpy() and load give
    np.testing.assert_array_equal(host.cores[0], net.cores[0].float().numpy())
    with pytest.raises(TypeError, match="numpy has no bfloat16"):
        net.to("numpy", dtype="bfloat16")


def test_network_contract_reads_operands_as_tnmars_contract_does():
    """A float64 batch on a float32 torch network failed inside a product ("both inputs should
    have same dtype"); a list operand was an AttributeError ('list' object has no attribute
    'shape'). Both now follow tnmars.contract: promotion by the framework's rules, lists read."""
    net = Network.tt((3, 4, 5), 2, seed=0)
    vec = [1.0, 2.0, 3.0]
    np.testing.assert_allclose(net.contract("a", vec, output="bc"), np.einsum("abc,a->bc", net.to_tensor(), vec))
    bools = Network("ij,jk", cores=[np.ones((2, 3), bool), np.ones((3, 2), bool)])
    assert bools.contract("k", np.array([True, False]), output="i").dtype == bool
    torch = pytest.importorskip("torch")
    layer = Network.tt_matrix((2, 3), (4, 5), 2, seed=0).to("torch", dtype="float32")
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    y = layer.contract("Zab", x, output="Zcd")
    assert y.dtype == torch.float64
    ref = torch.einsum("zab,abcd->zcd", x, layer.to_tensor().double())
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    assert layer.contract("Zab", x.float(), output="Zcd").dtype == torch.float32
    with pytest.raises(TypeError, match="mixed"):
        layer.contract("Zab", x.numpy(), output="Zcd")


def test_a_float_mask_on_integer_torch_cores_gives_the_promoted_tensor_as_numpy_does():
    """The masked core became float and the next product refused ('both inputs should have
    same dtype'); NumPy promoted."""
    torch = pytest.importorskip("torch")
    cores = [np.arange(6).reshape(2, 3), np.arange(6).reshape(3, 2)]
    mask = np.array([1.0, 0.0, 1.0])
    want = tnmars.Network("ij,jk", cores=cores).to_tensor({"j": mask})
    net = tnmars.Network("ij,jk", cores=[torch.tensor(c) for c in cores])
    got = net.to_tensor({"j": torch.tensor(mask, dtype=torch.float32)})
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want)


def test_ranks_given_one_per_bond_in_the_order_of_bonds():
    """``ranks=[2, 3]`` was "ranks must be an integer", while ``Network.tt`` and ``fit(max_rank=)``
    take one rank per bond."""
    net = Network("ia,abj,bk", shape=(3, 4, 5), ranks=[2, 3])
    assert net.bonds == {"a": 2, "b": 3}
    assert Network("ia,abj,bk", shape=(3, 4, 5), ranks=np.array([2, 3])).bonds == net.bonds
    with pytest.raises(ValueError, match=r"ranks has 1 entries but .* has 2 bonds \['a', 'b'\]"):
        Network("ia,abj,bk", shape=(3, 4, 5), ranks=[2])
    with pytest.raises(TypeError, match="integers"):
        Network("ia,abj,bk", shape=(3, 4, 5), ranks=[2.5, 3])
    with pytest.raises(ValueError, match="positive"):
        Network("ia,abj,bk", shape=(3, 4, 5), ranks=(2, 0))


@pytest.mark.parametrize("option", [{"dtype": "float32"}, {"device": "cpu"}, {"seed": 3}, {"scale": 2.0}])
def test_random_core_options_with_given_cores_are_refused(option):
    """dtype=, device=, seed= and scale= shape the random cores; with cores= they were ignored."""
    cores = Network.tt((3, 4), 2, seed=0).cores
    with pytest.raises(TypeError, match="apply to the random cores"):
        Network("aA,Ab->ab", cores=cores, **option)
    assert Network("aA,Ab->ab", cores=cores).dtype == "float64"
    assert Network("aA,Ab->ab", cores=cores, dtype=np.float64).dtype == "float64"  # the default, spelled otherwise


def test_to_another_framework_copies_the_cores():
    """``net.to("torch")`` of a NumPy network (and ``to("numpy")`` of a torch one) shared memory
    (``torch.as_tensor`` / ``Tensor.numpy``): training the torch copy rewrote the NumPy fit
    result, and a NumPy snapshot of a torch network followed later steps. A negative-stride
    NumPy core could not move to torch at all."""
    torch = pytest.importorskip("torch")
    n = Network.tt((3, 4, 5), 2, seed=0)
    ref = n.to_tensor().copy()
    t = n.to("torch")
    with torch.no_grad():
        t.cores[0].mul_(2.0)
    np.testing.assert_array_equal(n.to_tensor(), ref)
    snap = t.to("numpy")
    before = snap.to_tensor().copy()
    with torch.no_grad():
        t.cores[1].mul_(3.0)
    np.testing.assert_array_equal(snap.to_tensor(), before)
    flipped = Network.from_cores("ij,jk->ik", [np.arange(6.0).reshape(3, 2)[::-1], np.ones((2, 4))])
    np.testing.assert_array_equal(flipped.to("torch").to_tensor().numpy(), flipped.to_tensor())


def test_a_complex_mask_is_taken_alike_as_a_list_a_numpy_array_or_on_torch():
    """A complex NumPy mask worked on a NumPy network, but the same values as a list, or on a
    torch network, were refused as "must hold numbers"."""
    net = Network.tt((3, 4), 2, seed=0)
    mask = np.array([1 + 1j, 1.0])
    want = net.to_tensor({"A": mask})
    assert want.dtype == np.complex128
    np.testing.assert_array_equal(net.to_tensor({"A": [1 + 1j, 1.0]}), want)
    pytest.importorskip("torch")
    np.testing.assert_allclose(net.to("torch").to_tensor({"A": mask}).numpy(), want, rtol=1e-12)


def test_to_tensor_refuses_a_full_tensor_larger_than_memory_before_contracting():
    """Found by an outside probe: a TT of 2^64 entries failed inside NumPy ("Unable to allocate
    48.0 GiB for an array with shape (12, 536870912)"); the output is refused in words now, and
    the network can still be contracted with vectors."""
    net = Network.tt((2,) * 64, 3, seed=0)
    with pytest.raises(ValueError, match=r"to_tensor: the full tensor .* more than this machine's .*Network.contract"):
        net.to_tensor()
    ones = [np.ones(2)] * 64
    letters = net.output
    value = net.contract(",".join(letters), *ones, output="")
    assert np.isfinite(value)


def test_an_int_rank_for_a_spec_without_bonds_is_refused():
    """Found by an outside probe: ``Network("ij,Jk->ik", shape=(2, 3), ranks=5)`` (a case typo)
    made two size-1 summed legs and dropped the rank, silently."""
    with pytest.raises(ValueError, match=r"ranks=5 sizes the bonds, but spec 'ij,Jk->ik' has no bond.*'j', 'J'"):
        Network("ij,Jk->ik", shape=(2, 3), ranks=5)
    assert Network("ij,jk->ik", shape=(2, 3), ranks=2).bonds == {"j": 2}


def test_vjp_names_a_gradient_of_the_wrong_shape_and_the_submodule_is_reachable():
    """``tnmars.gradients`` was not an attribute after ``import tnmars`` (only after importing the
    submodule), and a wrong-shaped dL/dT failed in a reshape deep in the backward."""
    net = Network.tt((3, 4, 5), (2, 3), seed=0)
    with pytest.raises(ValueError, match=r"vjp: grad_fn returned a gradient of shape \(2, 2\).*\(3, 4, 5\)"):
        tnmars.gradients.vjp(net, lambda t: np.ones((2, 2)))
    out, grads, _ = tnmars.gradients.vjp(net, np.ones_like)
    assert out.shape == (3, 4, 5) and len(grads) == 3


def test_narrowing_to_float16_says_only_its_own_error():
    net = Network("ia,aj", cores=[np.full((3, 4), 1e6), np.ones((4, 5))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (NumPy's "overflow encountered in cast" came first)
        with pytest.raises(ValueError, match="overflows"):
            net.to(dtype="float16")


@pytest.mark.parametrize("kind", ["masked", "matrix"])
def test_a_masked_array_or_matrix_core_is_refused_as_contract_refuses_it(kind):
    """Found by an outside probe: ``tnmars.contract`` refused them, ``Network(cores=)`` took them and
    then dropped a masked array's mask silently, or failed inside NumPy's matrix product."""
    a, b = np.arange(6.0).reshape(3, 2), np.ones((2, 4))
    core = np.ma.array(a, mask=a > 3) if kind == "masked" else np.matrix(a)
    with pytest.raises(TypeError, match="products differ from an array's"):
        Network("ab,bc->ca", cores=[core, b])


def test_a_network_of_non_leaf_torch_cores_deep_copies_as_it_pickles():
    """Found by an outside probe: ``copy.deepcopy`` of a pruned or converted network of trainable
    torch cores raised torch's "Only Tensors created explicitly by the user (graph leaves)
    support the deepcopy protocol" while pickling worked."""
    import copy
    import pickle

    torch = pytest.importorskip("torch")
    net = Network("aA,Ab", cores=[torch.randn(3, 2, requires_grad=True), torch.randn(2, 4, requires_grad=True)])
    for derived in (net.prune({"A": [0]}), net.to(torch.float64), net):
        copied, pickled = copy.deepcopy(derived), pickle.loads(pickle.dumps(derived))
        for c, p, o in zip(copied.cores, pickled.cores, derived.cores):
            assert c.is_leaf and c.requires_grad == p.requires_grad == o.requires_grad
            assert torch.equal(c, o.detach()) and c.data_ptr() != o.data_ptr()


def test_a_network_plans_with_an_unhashable_optimizer_and_with_an_explicit_path_plus_extra_operands():
    """Found by an outside probe: a PathOptimizer dataclass (unhashable), which tnmars.contract
    takes, failed in the Network's plan cache ("unhashable type"); a Network with an explicit
    path failed in ``contract`` with extra operands ("the optimize path leaves 2 operands
    uncontracted": the path covers the cores alone)."""
    import dataclasses

    import opt_einsum as oe

    @dataclasses.dataclass
    class Pairwise(oe.paths.PathOptimizer):
        def __call__(self, inputs, output, size_dict, memory_limit=None):
            return [(0, 1)] * (len(inputs) - 1)

    reference = Network.tt((3, 4, 5), 2, seed=0)
    custom = Network.tt((3, 4, 5), 2, seed=0, optimize=Pairwise())
    np.testing.assert_allclose(custom.to_tensor(), reference.to_tensor())
    assert "FLOPs" in custom.summary()
    pathed = Network.tt((3, 4, 5), 2, seed=0, optimize=[(0, 1), (0, 1)])
    np.testing.assert_allclose(pathed.contract("a", np.ones(3), output="bc"), reference.to_tensor().sum(0))


def test_a_size_conflict_names_the_users_label_not_the_internal_symbol():
    # (it read "index 'a' has inconsistent sizes: 5 and 2 (ranks)" of a network whose labels were
    # 'site', 'bond' and 'out': an outside probe)
    with pytest.raises(ValueError, match="label 'bond' has inconsistent sizes: 5 and 2"):
        Network([["site", "bond"], ["bond", "out"]], dims={"site": 3, "out": 4, "bond": 5}, ranks=2)


def test_bool_labels_and_labels_equal_across_kinds_are_refused_up_front():
    """Found by an outside tester: Python has ``True == 1 == 1.0``, so the labels merged into one
    index: ``[("x", True, 1), (True, "y", 1)]`` failed later with "index 'a' is repeated inside term
    'xaa' (a trace ...)", and ``[("x", True), (1, "y")]`` silently joined the two cores."""
    with pytest.raises(TypeError, match=r"the label True \(in the label lists\) is a bool: in Python True == 1"):
        Network([("x", True, 1), (True, "y", 1)], dims={"x": 3, "y": 4}, ranks=2)
    with pytest.raises(TypeError, match=r"\(in the label lists\) is a bool: in Python .* == 0"):
        Network([("x", np.False_), (np.False_, "y")], dims={"x": 3, "y": 4}, ranks=2)
    with pytest.raises(ValueError, match=r"labels 1 and 1.0 \(in the label lists\) are equal in Python"):
        Network([("x", 1), (1.0, "y")], dims={"x": 3, "y": 4}, ranks=2)
    with pytest.raises(TypeError, match=r"label True \(in ranks=\) is a bool"):
        Network([("x", 1), (1, "y")], dims={"x": 3, "y": 4}, ranks={True: 2})
    with pytest.raises(ValueError, match=r"labels 1 and 1.0 \(in dims=\)"):
        Network([("x", 1), (1, "y")], dims={"x": 3, 1.0: 2, "y": 4})
    with pytest.raises(ValueError, match=r"labels 'x' and 'x'|labels \('a', 1\) and \('a', 1.0\)"):
        Network([(("a", 1), "x"), (("a", 1.0), "y")], dims={"x": 3, "y": 4}, ranks=2)
    # one label of one kind, in any of its spellings, is fine (a NumPy integer is an int)
    net = Network([("x", np.int64(1)), (1, "y")], dims={"x": 3, "y": 4}, ranks={1: 2})
    assert net.spec == "xa,ay->xy" and net.ranks == (2,)
