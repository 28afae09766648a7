import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tnmars
from tnmars.backends import get_backend, infer_backend
from tnmars.contract import make_plan

torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    "spec, shapes",
    [
        ("ij,jk->ik", [(3, 4), (4, 5)]),
        ("ar,br,cr->abc", [(3, 2), (4, 2), (5, 2)]),  # hyperedge
        ("bi,bj->bij", [(4, 2), (4, 3)]),  # shared open (batch) index
        ("ij,ij->", [(3, 4), (3, 4)]),  # full contraction to a scalar
        ("ia,ib,ic,abc->i", [(2, 3), (2, 3), (2, 3), (3, 3, 3)]),
        ("ij,kl->ijkl", [(2, 3), (4, 1)]),  # outer product
        ("ij->ji", [(2, 3)]),
        ("ijk,jk->i", [(2, 3, 4), (3, 4)]),
    ],
)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_contract_equals_einsum(spec, shapes, backend):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in shapes]
    be = get_backend(backend)
    out = tnmars.contract(spec, *[be.asarray(a) for a in arrays])
    assert be.is_array(out)
    np.testing.assert_allclose(be.to_numpy(out), np.einsum(spec, *arrays), atol=1e-12)


@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(0, 10**6))
def test_batched_layer_contraction_matches_dense(b, m, n, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((b, m)), rng.standard_normal((m, n))
    np.testing.assert_allclose(tnmars.contract("bm,mn->bn", x, w), x @ w, atol=1e-12)


def test_results_keep_the_callers_dtype():
    a = torch.ones(2, 3, dtype=torch.float32)
    b = torch.ones(3, 4, dtype=torch.float32)
    assert tnmars.contract("ij,jk->ik", a, b).dtype == torch.float32
    a32 = np.ones((2, 3), dtype=np.float32)
    assert tnmars.contract("ij,jk->ik", a32, a32.T.copy()).dtype == np.float32


def test_plan_cache_returns_the_same_object_and_holds_no_arrays():
    p1 = make_plan(("ij", "jk"), "ik", ((2, 3), (3, 4)))
    p2 = make_plan(("ij", "jk"), "ik", ((2, 3), (3, 4)))
    assert p1 is p2
    for value in vars(p1).values():
        assert not isinstance(value, np.ndarray)


def test_contract_errors():
    with pytest.raises(ValueError, match="2 terms but 1 operands"):
        tnmars.contract("ij,jk", np.ones((2, 2)))
    with pytest.raises(ValueError, match="inconsistent sizes"):
        tnmars.contract("ij,jk", np.ones((2, 2)), np.ones((3, 2)))
    with pytest.raises(TypeError, match="different frameworks"):
        tnmars.contract("ij,jk", np.ones((2, 2)), torch.ones(2, 2))


def test_infer_backend_defaults_to_numpy_for_plain_python():
    assert infer_backend([1.0, [1, 2]]).name == "numpy"


def test_cupy_backend_is_a_clear_error_without_cupy():
    try:
        import cupy  # noqa: F401
    except ImportError:
        get_backend.cache_clear()
        with pytest.raises(ImportError, match="CuPy"):
            get_backend("cupy")
    else:  # pragma: no cover - only on GPU machines
        pytest.skip("cupy is installed")


def test_cupy_backend_shares_the_numpy_code_path():
    from tnmars.backends.cupy_backend import CupyBackend
    from tnmars.backends.numpy_backend import NumpyBackend

    assert issubclass(CupyBackend, NumpyBackend)
    # every array operation is inherited: CuPy only swaps the array module and device handling
    overridden = {k for k in vars(CupyBackend) if not k.startswith("_")}
    assert {"matmul", "transpose", "reshape", "sum", "sigmoid", "clip"}.isdisjoint(overridden)


def test_paths_are_priced_with_their_transposes():
    """A TT-matrix weight at uneven ranks: opt_einsum's FLOP-optimal order ends in a shredded
    permutation of the whole weight; the plan takes the order whose FLOPs plus transposes
    cost least, and still computes the same tensor."""
    import opt_einsum

    from tnmars.contract import _build_steps

    inputs, output = ("aeA", "AbfB", "BcgC", "Cdh"), "abcdefgh"
    shapes = ((7, 5, 7), (7, 4, 5, 9), (9, 7, 5, 5), (5, 4, 5))
    plan = make_plan(inputs, output, shapes)
    sizes = {c: n for t, s in zip(inputs, shapes) for c, n in zip(t, s)}
    path, info = opt_einsum.contract_path(",".join(inputs) + "->" + output, *shapes, shapes=True)
    *_, oe_copy, _, oe_flops, _, oe_traffic = _build_steps([tuple(p) for p in path], list(inputs), output, sizes)
    *_, copy, _, flops, _, traffic = _build_steps(plan.path, list(inputs), output, sizes)
    assert copy == plan.copy_cost and flops == plan.flops and oe_flops == int(info.opt_cost)
    assert plan.cost == flops + traffic < oe_flops + oe_traffic
    assert plan.copy_cost < oe_copy and "tnmars chose path" in plan.info_text
    rng = np.random.default_rng(0)
    ops = [rng.standard_normal(s) for s in shapes]
    np.testing.assert_allclose(tnmars.contract(",".join(inputs) + "->" + output, *ops),
                               np.einsum(",".join(inputs) + "->" + output, *ops), rtol=1e-10, atol=1e-10)


def test_small_copies_do_not_buy_extra_flops():
    """A TT-matrix times one row: every array fits in cache, so the plan keeps opt_einsum's
    FLOP-optimal path (pricing these copies like memory-bound ones took 1.6x the FLOPs)."""
    import opt_einsum

    shapes = ((7, 5, 20), (20, 4, 5, 20), (20, 7, 5, 20), (20, 4, 5), (1, 7, 4, 7, 4))
    inputs, output = ("aeA", "AbfB", "BcgC", "Cdh", "zabcd"), "zefgh"
    plan = make_plan(inputs, output, shapes)
    _, info = opt_einsum.contract_path(",".join(inputs) + "->" + output, *shapes, shapes=True, optimize="optimal")
    assert plan.flops == int(info.opt_cost)


def test_torch_runs_tall_skinny_products_transposed_with_the_same_values():
    # rows >= TALL_SKINNY_RATIO x columns and a long inner side: computed as (b^T a^T)^T,
    # a transposed view; below the ratio, or with a short inner side, the direct product
    from tnmars.backends import get_backend
    from tnmars.backends.torch_backend import TALL_SKINNY_RATIO

    be = get_backend("torch")
    rng = np.random.default_rng(0)
    n = 8
    for rows, inner, transposed in ((TALL_SKINNY_RATIO * n, 64, True), (TALL_SKINNY_RATIO * n - 1, 64, False),
                                    (TALL_SKINNY_RATIO * n, 8, False)):
        a, b = rng.standard_normal((rows, inner)), rng.standard_normal((inner, n))
        out = be.matmul(torch.from_numpy(a), torch.from_numpy(b))
        assert out.is_contiguous() is not transposed, (rows, inner)
        np.testing.assert_allclose(out.numpy(), a @ b, rtol=1e-12, atol=1e-12)
    layer = "aiAB,BjoC,Cko,xijk->xAo"  # a contraction whose last product is tall-skinny: still contiguous
    ops = [rng.standard_normal(s) for s in ((9, 9, 10, 10), (10, 9, 9, 10), (10, 9, 9), (128, 9, 9, 9))]
    got = tnmars.contract(layer, *map(torch.from_numpy, ops))
    assert got.is_contiguous()
    np.testing.assert_allclose(got.numpy(), np.einsum(layer, *ops, optimize=True), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dims, rank", [((10,) * 6, 5), ((16,) * 5, 6), ((32,) * 4, 8)])
def test_tucker_takes_its_factors_last_index_first_without_copies(dims, rank):
    """Every step of a Tucker reconstruction is a factor times the core read as a transposed
    matrix (a view): the plan copies nothing, on NumPy and torch, and equals einsum."""
    net = tnmars.Network.tucker(dims, rank, seed=0)
    plan = net.plan()
    assert plan.copy_cost == 0 and plan.final_perm == plan.identity_perm
    assert all(not step.transpose_a and step.transpose_b for step in plan.steps)
    want = np.einsum(net.spec, *net.cores, optimize=True)
    np.testing.assert_allclose(net.to_tensor(), want, rtol=1e-10, atol=1e-12)
    got = net.to("torch").to_tensor()
    assert got.is_contiguous()
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)


def test_a_product_of_two_transposed_views_copies_the_smaller_first():
    """Both operands are transposed views ((BC, A) of the core, (A, b) of the factor): the
    step copies the smaller (torch's GEMM is about 2x slower with two transposed operands);
    the values are einsum's on both backends, and gradients flow through the copy."""
    from tnmars.contract import _gemm_copies, _is_transposed_view, _permute_cost

    spec = "ABC,bA->BCb"
    shapes = ((5, 30, 30), (10, 5))
    plan = make_plan(("ABC", "bA"), "BCb", shapes)
    (step,) = plan.steps
    assert step.copy_first in (1, 2) and plan.copy_cost > 0
    small = 1 if (step.first == 1) else 2  # the factor (50 entries) is the one copied
    assert step.copy_first == small
    assert _is_transposed_view((5, 30, 30), (1, 2, 0), 2) and not _is_transposed_view((5, 30, 30), (1, 0, 2), 1)
    cost_a, cost_b, copy_first = _gemm_copies((5, 30, 30), (1, 2, 0), 2, (10, 5), (1, 0), 1, plain=True)
    assert cost_a == 0 and cost_b > 0 and copy_first == 2
    # in a batched product a transposed operand is charged as a copy
    assert _gemm_copies((5, 30, 30), (1, 2, 0), 2, (10, 5), (1, 0), 1, plain=False) == (
        _permute_cost((5, 30, 30), (1, 2, 0)), _permute_cost((10, 5), (1, 0)), 0)
    rng = np.random.default_rng(0)
    ops = [rng.standard_normal(s) for s in shapes]
    want = np.einsum(spec, *ops)
    np.testing.assert_allclose(tnmars.contract(spec, *ops), want, rtol=1e-12, atol=1e-12)
    tops = [torch.tensor(x, requires_grad=True) for x in ops]
    got = tnmars.contract(spec, *tops)
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12, atol=1e-12)
    got.sum().backward()
    ref = [torch.tensor(x, requires_grad=True) for x in ops]
    torch.einsum(spec, *ref).sum().backward()
    for mine, theirs in zip(tops, ref):
        np.testing.assert_allclose(mine.grad.numpy(), theirs.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_opt_einsums_dtype_order_casting_and_use_blas_arguments_act_as_there():
    """contract was called a drop-in for opt_einsum.contract but refused these keywords; they
    act as in numpy.einsum (which opt_einsum hands them to; its own BLAS path then fails on
    dtype=, 'unexpected keyword argument')."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    with pytest.raises(TypeError, match="cannot be cast"):
        tnmars.contract("ij,jk->ik", a, b, dtype="float32")
    with pytest.raises(TypeError):
        np.einsum("ij,jk->ik", a, b, dtype="float32")  # the same refusal there
    got = tnmars.contract("ij,jk->ik", a, b, dtype="float32", casting="same_kind")
    want = np.einsum("ij,jk->ik", a, b, dtype="float32", casting="same_kind")
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5)
    ints = np.arange(12).reshape(3, 4)
    assert tnmars.contract("ij,jk->ik", ints, ints.T, dtype="float64").dtype == np.float64
    fortran = tnmars.contract("ij,jk->ik", a, b, order="F")
    assert fortran.flags.f_contiguous and not fortran.flags.c_contiguous
    np.testing.assert_allclose(fortran, a @ b)
    assert tnmars.contract("ij,jk->ik", a, b, order="A").flags.c_contiguous
    assert tnmars.contract("ij,jk->ik", np.asfortranarray(a), np.asfortranarray(b), order="A").flags.f_contiguous
    np.testing.assert_allclose(tnmars.contract("ij,jk->ik", a, b, use_blas=False), a @ b)
    with pytest.raises(ValueError, match="order"):
        tnmars.contract("ij,jk->ik", a, b, order="X")
    with pytest.raises(ValueError, match="casting"):
        tnmars.contract("ij,jk->ik", a, b, dtype="float64", casting="loose")


def test_dtype_and_order_on_torch_say_what_to_do_instead():
    torch = pytest.importorskip("torch")
    a = torch.ones(2, 3)
    with pytest.raises(TypeError, match="NumPy and CuPy"):
        tnmars.contract("ij,jk->ik", a, a.T, dtype="float64")
    assert tnmars.contract("ij,jk->ik", a, a.T, use_blas=False).shape == (2, 2)


def test_plans_do_not_depend_on_the_processs_string_hash_seed():
    """Index orders that cost the same (the contracted indices in either operand's order) are
    tried in a fixed order: with a set of tuples of index letters, Python's per-process hash
    seed chose between them, so the same contraction summed in another order (and rounded
    differently) from one process to the next, and noiseless structure searches ended on
    different networks."""
    import subprocess
    import sys

    script = (
        "from tnmars.contract import make_plan\n"
        "for a, b in [('abcd', 'cdbe'), ('ijkl', 'lkjm'), ('xyz', 'zyx'), ('pqrs', 'srqt')]:\n"
        "    free = ''.join(c for c in a + b if (a + b).count(c) == 1)\n"
        "    plan = make_plan((a, b), free, ((3,) * len(a), (3,) * len(b)), 'auto')\n"
        "    print(repr((plan.steps, plan.final_perm)))\n"
    )
    outputs = set()
    for seed in range(6):
        env = dict(os.environ, PYTHONHASHSEED=str(seed))
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout)
    assert len(outputs) == 1


@pytest.mark.parametrize("dtype", ["bool", "int8", "int32"])
def test_size_one_legs_keep_the_cores_dtype_on_torch(dtype):
    """A tntorch-style TT (boundary legs of size 1) of bool cores gave int64 counts (4 for True)
    and of int8 / int32 cores failed with "both inputs should have same dtype": the size-1 legs
    were summed, and torch's sum widens bool and small integers to int64."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    shapes = [(1, 2, 2), (2, 2, 2), (2, 2, 1)]
    cores = [(rng.random(s) < 0.6) if dtype == "bool" else rng.integers(-3, 4, s).astype(dtype) for s in shapes]
    want = np.einsum("xaA,AbB,Bcy->abc", *cores)
    net = tnmars.Network.from_cores("xaA,AbB,Bcy->abc", [torch.from_numpy(np.ascontiguousarray(c)) for c in cores])
    got = net.to_tensor()
    assert str(got.dtype).replace("torch.", "") == str(want.dtype)
    np.testing.assert_array_equal(got.numpy(), want)


def test_python_numbers_promote_as_numpy_einsum_promotes_them_on_numpy():
    """Found by a fuzzer: a Python float took a float16 array's dtype (``contract(",i->i", 1e5,
    float16)`` was inf where numpy.einsum and opt_einsum give 1e5 in float64). On NumPy a number
    counts as numpy.einsum counts it; on torch it promotes weakly, as torch's arithmetic does."""
    import opt_einsum
    cases = [(1e5, np.ones(3, np.float16)), (0.1, np.ones(2, np.float32)), (2, np.ones(3, np.int8)),
             (True, np.ones(3, np.int8)), (0.5, np.ones(3, np.int8)), (1j, np.ones(2, np.float32))]
    for number, array in cases:
        got, want = tnmars.contract(",i->i", number, array), np.einsum(",i->i", number, array)
        assert got.dtype == want.dtype == opt_einsum.contract(",i->i", number, array).dtype
        np.testing.assert_array_equal(got, want)
    torch = pytest.importorskip("torch")
    assert tnmars.contract(",i->i", 0.5, torch.ones(2)).dtype == torch.float32
    # a number that does not fit the integer dtype it takes on torch: said in words (outside probe:
    # torch's "value cannot be converted to type int8 without overflow" came out of the call)
    small = torch.tensor([1, 2], dtype=torch.int8)
    assert tnmars.contract(",i->i", 100, small).dtype == torch.int8
    with pytest.raises(ValueError, match="operand 0, the number 300, does not fit int8"):
        tnmars.contract(",i->i", 300, small)


def test_a_result_larger_than_the_machine_is_refused_before_any_work(monkeypatch):
    """An outside probe (2026-12-04): an MPS of 40 sites with every leg open computed for 1.6 s
    and failed inside NumPy ("Unable to allocate 8.00 TiB"), where Network.to_tensor refuses at
    once. The check reads the machine's memory; here it is made small."""
    import importlib
    module = importlib.import_module("tnmars.contract")
    monkeypatch.setattr(module, "host_memory", lambda: 50_000)  # bytes
    a, b = np.ones((100, 3)), np.ones((3, 100))  # a 100 x 100 float64 result: 80,000 bytes
    with pytest.raises(MemoryError, match=r"the result of 'ij,jk->ik' holds 10,000 entries .* more than this machine"):
        tnmars.contract("ij,jk->ik", a, b)
    assert tnmars.contract("ij,jk->i", a, b).shape == (100,)  # (a small result of the same operands runs)
    assert tnmars.contract("ij,jk->ik", np.ones((0, 3)), b).shape == (0, 100)
    monkeypatch.setattr(module, "host_memory", lambda: None)  # a system that does not say: no check
    assert tnmars.contract("ij,jk->ik", a, b).shape == (100, 100)


def test_a_diagonal_of_unequal_sizes_names_them_in_axis_order():
    """The sizes were sorted, so a (3, 1) operand read as "sizes [1, 3]" (an outside probe)."""
    with pytest.raises(ValueError, match=r"sizes \[3, 1\] along it \(axes \[0, 1\]\)"):
        tnmars.contract("ii", np.arange(3.0).reshape(3, 1))
