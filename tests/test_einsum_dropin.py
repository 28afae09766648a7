"""``tnmars.contract`` as a drop-in for ``opt_einsum.contract``: opt_einsum's own expression
lists (imported from its installed test suite), on NumPy and torch, gradients through torch,
every form of ``optimize``, ``out=``, ``memory_limit=``, and the errors."""
import numpy as np
import opt_einsum
import pytest
from opt_einsum.paths import _PATH_OPTIONS
from opt_einsum.testing import build_views

import tnmars

torch = pytest.importorskip("torch")
oe_tests = pytest.importorskip("opt_einsum.tests.test_contract")

#: opt_einsum/tests/test_contract.py's ``tests``: 83 expressions (scalars, Hadamard products,
#: traces, outer products, collapses, GEMM-like and random cases)
EXPRESSIONS = list(oe_tests.tests)
#: opt_einsum/tests/test_input.py's test_compare (ellipses) and test_edge_cases.py's
#: broadcasting cases (size-1 axes against larger ones), as (expression, shapes)
ELLIPSIS_EXPRESSIONS = ["...a->...", "a...->...", "a...a->...a", "...,...", "a,b", "...a,...b"]
BROADCASTING = [
    ("ijk,kl,jl", [(1, 5, 4), (4, 6), (5, 6)]),
    ("ijk,kl,jl,i->i", [(1, 5, 4), (4, 6), (5, 6), (10,)]),
    ("abjk,kl,jl", [(1, 1, 5, 4), (4, 6), (5, 6)]),
    ("abjk,kl,jl,ab->ab", [(1, 1, 5, 4), (4, 6), (5, 6), (7, 7)]),
    ("ajk,kbl,jl,ab->ab", [(1, 5, 4), (4, 1, 6), (5, 6), (7, 7)]),
    ("ij,ij->j", [(10, 2), (1, 2)]),
    ("...ij,...jk->...ik", [(1, 5), (5, 5)]),
    ("ab,bc,bd->acd", [(5, 4), (1, 5), (4, 20)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]),
]


def _views(expr: str, seed: int = 0):
    """opt_einsum's own operands for ``expr`` (arrays, and Python floats for empty terms)."""
    np.random.seed(seed)
    return build_views(expr.replace("...", "ij") if "." in expr else expr)


def _torch(x):
    return torch.tensor(x) if isinstance(x, np.ndarray) else x


def _ellipsis_views(expr: str):
    # test_input.py builds views with '...' as 'ij' and sizes a=2, b=3, ..., i=5, j=4
    sizes = dict(zip("abcdefghij", [2, 3, 4, 5, 4, 3, 2, 6, 5, 4]))
    rng = np.random.default_rng(1)
    terms = expr.replace("...", "ij").split("->")[0].split(",")
    return [rng.random([sizes[c] for c in t]) for t in terms]


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_opt_einsum_expressions_equal_numpy_einsum(expr):
    views = _views(expr)
    expected = np.einsum(expr, *views)
    got = tnmars.contract(expr, *views)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got, opt_einsum.contract(expr, *views), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_opt_einsum_expressions_on_torch_with_gradients(expr):
    views = _views(expr)
    tviews = [_torch(v).requires_grad_() if isinstance(v, np.ndarray) else v for v in views]
    got = tnmars.contract(expr, *tviews, backend="torch")
    assert isinstance(got, torch.Tensor)
    tensors = [v for v in tviews if isinstance(v, torch.Tensor)]
    if not tensors:  # Python numbers only: torch's default dtype
        assert got.dtype == torch.get_default_dtype()
        np.testing.assert_allclose(got.numpy(), np.einsum(expr, *views), rtol=1e-6)
        return
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.detach().numpy(), np.einsum(expr, *views), rtol=1e-10, atol=1e-12)
    weights = torch.tensor(np.random.default_rng(3).standard_normal(tuple(got.shape)))
    ours = torch.autograd.grad((got * weights).sum(), tensors)
    refs = [v.detach().clone().requires_grad_() if isinstance(v, torch.Tensor) else v for v in tviews]
    expected = torch.einsum(expr, *[r if isinstance(r, torch.Tensor) else torch.tensor(r, dtype=torch.float64)
                                     for r in refs])
    theirs = torch.autograd.grad((expected * weights).sum(), [r for r in refs if isinstance(r, torch.Tensor)])
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("optimize", sorted(_PATH_OPTIONS) + [True, False, None])
def test_every_optimizer_gives_the_same_result(optimize):
    """opt_einsum's test_compare: every expression under every path finder (NumPy)."""
    for expr in EXPRESSIONS:
        views = _views(expr)
        np.testing.assert_allclose(tnmars.contract(expr, *views, optimize=optimize), np.einsum(expr, *views),
                                   rtol=1e-10, atol=1e-12, err_msg=expr)


def test_greek_indices():
    """opt_einsum's test_compare_greek: the same expressions with every letter moved by 848
    code points (Cyrillic/Greek), so nothing is ASCII."""
    for expr in EXPRESSIONS:
        views = _views(expr)
        greek = "".join(chr(ord(c) + 848) if c not in ",->." else c for c in expr)
        np.testing.assert_allclose(tnmars.contract(greek, *views), np.einsum(expr, *views),
                                   rtol=1e-10, atol=1e-12, err_msg=expr)


@pytest.mark.parametrize("expr", ELLIPSIS_EXPRESSIONS)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_ellipses(expr, backend):
    views = _ellipsis_views(expr)
    expected = np.einsum(expr, *views)
    ops = views if backend == "numpy" else [torch.tensor(v) for v in views]
    got = tnmars.contract(expr, *ops)
    assert tnmars.get_backend(backend).is_array(got)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(tnmars.contract(expr, *ops, optimize="optimal")), expected, rtol=1e-10)


@pytest.mark.parametrize("expr, shapes", BROADCASTING)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_size_one_axes_broadcast(expr, shapes, backend):
    rng = np.random.default_rng(2)
    views = [rng.random(s) for s in shapes]
    expected = opt_einsum.contract(expr, *views, optimize=False)
    ops = views if backend == "numpy" else [torch.tensor(v, requires_grad=True) for v in views]
    got = tnmars.contract(expr, *ops)
    np.testing.assert_allclose(np.asarray(got.detach() if backend == "torch" else got), expected, rtol=1e-10)
    if backend == "torch":  # gradients of a broadcast axis sum over the broadcast
        got.sum().backward()
        refs = [torch.tensor(v, requires_grad=True) for v in views]
        torch.einsum(expr, *refs).sum().backward()
        for a, b in zip(ops, refs):
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-10)


def test_interleaved_forms():
    """test_input.py's test_large_int_input_format and test_hashable_object_input_format."""
    x, y, z = build_views("ab,bc,cd")
    expected = np.einsum("ab,bc,cd", x, y, z)
    np.testing.assert_allclose(tnmars.contract(x, (1000, 1001), y, (1001, 1002), z, (1002, 1003)), expected)
    for i in range(10):
        np.testing.assert_allclose(tnmars.contract(x, (i + 1, i)), x.T)
    hashable = [x, ("left", "bond1"), y, ("bond1", "bond2"), z, ("bond2", "right")]
    np.testing.assert_allclose(tnmars.contract(*hashable), expected)
    np.testing.assert_allclose(tnmars.contract(*hashable, ("left", "right")), expected)
    for i in range(1, 10):
        np.testing.assert_allclose(tnmars.contract(x, ("b" * i, "a" * i)), x.T)
    # ellipses (test_input.py's test_ellipse_input1..4)
    v = _ellipsis_views("...a")[0]
    np.testing.assert_allclose(tnmars.contract(v, [Ellipsis, 0], [Ellipsis]), np.einsum("...a->...", v))
    np.testing.assert_allclose(tnmars.contract(v, [Ellipsis, 0]), np.einsum("...a", v))
    w = _ellipsis_views("...b,...a")
    np.testing.assert_allclose(tnmars.contract(w[0], [Ellipsis, 1], w[1], [Ellipsis, 0], [Ellipsis]),
                               np.einsum("...b,...a->...", *w))
    # opt_einsum's test_contract_expression_interleaved_input
    a, b, c = (np.random.default_rng(k).standard_normal((2, 2)) for k in range(3))
    np.testing.assert_allclose(tnmars.contract(a, [0, 1], b, [1, 2], c, [2, 3], [3, 0]),
                               np.einsum(a, [0, 1], b, [1, 2], c, [2, 3], [3, 0]))
    # labels as NumPy arrays, as np.einsum, torch.einsum and opt_einsum take them (an outside probe)
    np.testing.assert_allclose(tnmars.contract(a, np.array([0, 1]), b, np.array([1, 2]), np.array([2, 0])),
                               np.einsum(a, [0, 1], b, [1, 2], [2, 0]))


def test_interleaved_form_with_more_than_52_labels():
    """An MPS of 60 sites contracted with 60 vectors, labelled by tuples."""
    rng = np.random.default_rng(0)
    args = []
    for k in range(60):
        core = rng.standard_normal((2 if k else 1, 3, 2 if k < 59 else 1)) / 2
        args += [core, [("bond", k), ("site", k), ("bond", k + 1)], np.ones(3), [("site", k)]]
    got = tnmars.contract(*args, [])
    np.testing.assert_allclose(got, opt_einsum.contract(*args, []), rtol=1e-10)
    assert got.shape == ()


@pytest.mark.parametrize(
    "expr, operands",
    [  # opt_einsum's test_contract_with_assumed_shapes: numbers and lists as operands
        [",,->", (5, 5.0, 2.0j)],
        ["ab,->", ([[5, 5], [2.0, 1]], 2.0j)],
        ["ab,bc->ac", ([[5, 5], [2.0, 1]], [[2.0, 1], [3.0, 4]])],
        ["ab,->", ([[5, 5], [2.0, 1]], True)],
        ["ij,jk->ik", ([[1.0]], [[2.0]])],
    ],
)
def test_numbers_and_lists_as_operands(expr, operands):
    np.testing.assert_allclose(tnmars.contract(expr, *operands), np.einsum(expr, *operands))
    # beside a torch tensor they become torch tensors
    first = torch.tensor(np.asarray(operands[0]))
    got = tnmars.contract(expr, first, *operands[1:])
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), np.einsum(expr, *operands))


def test_paths_given_as_lists_and_by_numpy():
    expr = "ab,bc,cd,de->ae"
    views = _views(expr)
    expected = np.einsum(expr, *views)
    path, _ = opt_einsum.contract_path(expr, *views)
    for given in (path, [list(p) for p in path], np.einsum_path(expr, *views)[0], [(0, 1, 2, 3)], [(2, 3), (0,), (0, 1, 2)]):
        np.testing.assert_allclose(tnmars.contract(expr, *views, optimize=given), expected, rtol=1e-12)
    for bad, words in (([(0, 1)], "leaves 3 operands"), ([(0, 9), (0, 1), (0, 1)], "not a set of positions"),
                       ([(0, 0), (0, 1), (0, 1)], "not a set of positions")):
        with pytest.raises(ValueError, match=words):
            tnmars.contract(expr, *views, optimize=bad)
    with pytest.raises(TypeError, match="not an operand position"):
        tnmars.contract(expr, *views, optimize=[("a", "b")])


def test_optimizer_objects_and_callables():
    expr = "ab,bc,cd,de->ae"
    views = _views(expr)
    expected = np.einsum(expr, *views)
    for opt in (opt_einsum.DynamicProgramming(), opt_einsum.RandomGreedy(max_repeats=4),
                lambda inputs, output, sizes, limit: [(0, 1)] * (len(inputs) - 1)):
        np.testing.assert_allclose(tnmars.contract(expr, *views, optimize=opt), expected, rtol=1e-12)


def test_bad_optimize_and_memory_limit_fail_at_the_call():
    a = np.ones((2, 2))
    with pytest.raises(ValueError, match="unknown optimize='foo'"):
        tnmars.contract("ij,jk", a, a, optimize="foo")
    with pytest.raises(TypeError, match="optimize must be"):
        tnmars.contract("ij,jk", a, a, optimize=3.5)
    with pytest.raises(ValueError, match="memory_limit"):
        tnmars.contract("ij,jk", a, a, memory_limit=0)
    with pytest.raises(TypeError, match="memory_limit"):
        tnmars.contract("ij,jk", a, a, memory_limit="lots")


def test_memory_limit_is_passed_to_the_search_and_a_breach_is_loud():
    """opt_einsum's test_memory_paths expression: its best path's largest intermediate holds
    216 entries. A limit above that changes nothing; below it, opt_einsum leaves several
    operands to one n-ary einsum, which the pairwise executor cannot do within the limit:
    the result is still right and a warning says so."""
    import warnings

    from tnmars.contract import make_plan

    expr = "abc,bdef,fghj,cem,mhk,ljk->adgl"
    views = _views(expr)
    expected = np.einsum(expr, *views)
    shapes = tuple(v.shape for v in views)
    terms, out = tuple(expr.split("->")[0].split(",")), expr.split("->")[1]
    free = make_plan(terms, out, shapes, "optimal", None)
    assert free.largest_intermediate == 216
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_plan(terms, out, shapes, "optimal", 216).path == free.path
        np.testing.assert_allclose(tnmars.contract(expr, *views, memory_limit=10**6), expected)
    for limit in (5, 150, "max_input"):
        with pytest.warns(UserWarning, match="memory_limit"):
            plan = make_plan(terms, out, shapes, "greedy", limit)
        np.testing.assert_allclose(tnmars.contract(expr, *views, optimize=list(plan.path)), expected)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_out_is_written_and_returned(backend):
    be = tnmars.get_backend(backend)
    a, b = be.asarray(np.arange(6.0).reshape(2, 3)), be.asarray(np.ones((3, 4)))
    out = be.zeros((2, 4), "float64")
    got = tnmars.contract("ij,jk->ik", a, b, out=out)
    assert got is out
    np.testing.assert_allclose(be.to_numpy(out), np.arange(6.0).reshape(2, 3) @ np.ones((3, 4)))
    with pytest.raises(ValueError, match="shape"):
        tnmars.contract("ij,jk->ik", a, b, out=be.zeros((4, 2), "float64"))
    with pytest.raises(TypeError, match="safe"):
        tnmars.contract("ij,jk->ik", a, b, out=be.zeros((2, 4), "float32"))
    with pytest.raises(TypeError, match="out must be"):
        tnmars.contract("", 0, out="test")


def test_out_on_every_opt_einsum_expression_with_an_output():
    for expr in EXPRESSIONS:
        if "->" not in expr or expr.endswith("->"):
            continue
        views = _views(expr)
        expected = np.einsum(expr, *views)
        out = np.empty_like(expected)
        assert tnmars.contract(expr, *views, out=out) is out
        np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)


def test_explicit_backend_converts_and_returns_its_framework():
    a = torch.ones(2, 3, dtype=torch.float64)
    b = torch.ones(3, 4, dtype=torch.float64)
    got = tnmars.contract("ij,jk->ik", a, b, backend="numpy")
    assert isinstance(got, np.ndarray) and got.shape == (2, 4)
    got = tnmars.contract("ij,jk->ik", np.ones((2, 3)), np.ones((3, 4)), backend="torch")
    assert isinstance(got, torch.Tensor)
    with pytest.raises(ValueError, match="unknown backend"):
        tnmars.contract("ij,jk->ik", a, b, backend="jax")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_mixed_dtypes_are_promoted(backend):
    be = tnmars.get_backend(backend)
    a = be.asarray(np.arange(6.0).reshape(2, 3), dtype="float32")
    b = be.asarray(np.arange(12.0).reshape(3, 4), dtype="float64")
    i = be.asarray(np.arange(4).reshape(4, 1), dtype="int64")
    got = tnmars.contract("ij,jk,kl->il", a, b, i)
    assert be.dtype_name(got) == "float64"
    expected = np.einsum("ij,jk,kl->il", *(be.to_numpy(x) for x in (a, b, i)))
    np.testing.assert_allclose(be.to_numpy(got), expected, rtol=1e-6)
    c = be.asarray(np.ones((2, 3)), dtype="complex64")
    assert be.dtype_name(tnmars.contract("ij,ij->", c, a)) == "complex64"


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_booleans_give_booleans(backend):
    be = tnmars.get_backend(backend)
    rng = np.random.default_rng(0)
    x, y = rng.random((4, 5)) < 0.3, rng.random((5, 3)) < 0.3
    for expr, ops in (("ij,jk->ik", (x, y)), ("ij->i", (x,)), ("ij,jk->", (x, y)), ("ii->i", (x[:4, :4],))):
        got = tnmars.contract(expr, *(be.asarray(o) for o in ops))
        assert be.dtype_name(got) == "bool"
        np.testing.assert_array_equal(be.to_numpy(got), np.einsum(expr, *ops))


def test_integers_stay_exact():
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    for backend in ("numpy", "torch"):
        be = tnmars.get_backend(backend)
        got = tnmars.contract("ij,kj->ik", be.asarray(a), be.asarray(a))
        assert be.dtype_name(got) == "int64"
        np.testing.assert_array_equal(be.to_numpy(got), a @ a.T)


@pytest.mark.parametrize(
    "args, error",
    [  # opt_einsum's test_type_errors and test_value_errors (test_input.py), on tnmars
        ((0, 0), TypeError),
        ((None,) * 63, TypeError),
        (("->,->", 0, 5), ValueError),
        (("&,a->", 0, 5), ValueError),
        (("a,a->&", 0, 5), ValueError),
        (("",), ValueError),
        (("", 0, 0), ValueError),
        ((",", 0, [0], [0]), ValueError),
        ((",", [0]), ValueError),
        (("i", 0), ValueError),
        (("ij", [0, 0]), ValueError),
        (("...i", 0), ValueError),
        (("i...j", [0, 0]), ValueError),
        (("i...", 0), ValueError),
        (("ij...", [0, 0]), ValueError),
        (("i..", [0, 0]), ValueError),
        ((".i...", [0, 0]), ValueError),
        (("j->..j", [0, 0]), ValueError),
        (("j->.j...", [0, 0]), ValueError),
        (("i%...", [0, 0]), ValueError),
        (("...j$", [0, 0]), ValueError),
        (("i->&", [0, 0]), ValueError),
        (("i->ij", [0, 0]), ValueError),
        (("ij->jij", [[0, 0], [0, 0]]), ValueError),
        (("ii", np.arange(6).reshape(2, 3)), ValueError),
        (("ii->i", np.arange(6).reshape(2, 3)), ValueError),
        (("i", np.arange(6).reshape(2, 3)), ValueError),
        (("i,i", np.ones(2), np.ones(3)), ValueError),
        (("ij,jk", np.ones((2, 2)), "text"), TypeError),
        (("ij,jk", np.ones((2, 2)), {"a": 1}), TypeError),
        (("ij", [["a", "b"]]), TypeError),
        (("i,i->", 2.0, np.ones(3)), ValueError),
        ((np.ones((2, 2)), [Ellipsis, 0], [Ellipsis, ["a"]]), TypeError),
        ((np.ones((2, 2)), [Ellipsis, {}], [Ellipsis, "a"]), TypeError),
    ],
)
def test_bad_calls_raise_clear_errors(args, error):
    with pytest.raises(error) as info:
        tnmars.contract(*args)
    assert str(info.value)


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError):
        tnmars.contract("ij->ij", [[0, 1], [0, 1]], bad_kwarg=True)


def test_mixing_frameworks_is_refused():
    with pytest.raises(TypeError, match="different frameworks"):
        tnmars.contract("ij,jk", np.ones((2, 2)), torch.ones(2, 2))


def test_results_are_contiguous():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4, 5)), rng.standard_normal((5, 6))
    for be in ("numpy", "torch"):
        B = tnmars.get_backend(be)
        got = tnmars.contract("ijk,kl->lji", B.asarray(a), B.asarray(b))
        assert got.flags.c_contiguous if be == "numpy" else got.is_contiguous()


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_python_numbers_promote_as_the_frameworks_einsum_or_arithmetic_does(backend):
    """On NumPy as numpy.einsum (a number is an array of its default dtype: float64, int64,
    complex128); on torch weakly, as torch's arithmetic (torch.einsum takes no numbers)."""
    be = tnmars.get_backend(backend)
    x = be.asarray(np.ones((2, 3)), dtype="float32")
    i = be.asarray(np.ones((2, 3)), dtype="int32")
    got = [be.dtype_name(tnmars.contract("ij,->ij", a, n)) for a, n in ((x, 2.5), (x, 2.5j), (i, 3), (i, 0.5))]
    if backend == "numpy":
        want = [str(np.einsum("ij,->ij", np.asarray(a), n).dtype) for a, n in ((x, 2.5), (x, 2.5j), (i, 3), (i, 0.5))]
        assert got == want == ["float64", "complex128", "int64", "float64"]
    else:
        assert got[:3] == ["float32", "complex64", "int32"] and got[3].startswith("float")


def test_zero_dim_tensors_promote_as_torch_einsum_and_the_default_layout_is_c():
    """What the docstring says, checked (an outside probe read "weakly" as covering 0-d tensors,
    and expected numpy.einsum's Fortran result for Fortran operands under order="K")."""
    torch = pytest.importorskip("torch")
    pairs = [(torch.ones(2, 3), torch.tensor(2.0, dtype=torch.float64)),
             (torch.ones(2, 3, dtype=torch.float16), torch.tensor(2.0)),
             (torch.ones(2, 3, dtype=torch.int32), torch.tensor(2.0))]
    for a, s in pairs:
        assert tnmars.contract("ij,->ij", a, s).dtype == torch.einsum("ij,->ij", a, s).dtype
    a, b = np.asfortranarray(np.ones((2, 3))), np.asfortranarray(np.ones((3, 4)))
    assert np.einsum("ij,jk->ik", a, b).flags.f_contiguous
    assert tnmars.contract("ij,jk->ik", a, b).flags.c_contiguous
    assert tnmars.contract("ij,jk->ik", a, b, order="F").flags.f_contiguous


@pytest.mark.parametrize("make", [lambda a: np.matrix(a), lambda a: np.ma.masked_array(a, mask=a > 1.5)])
@pytest.mark.parametrize("spec", ["ij,j->i", "ij,ij->i", "ij->", "ij->ji"])
def test_matrix_and_masked_array_operands_are_refused(make, spec):
    """np.matrix gave (1, 3) results or crashed; a masked array's mask was honoured by some
    specs and ignored by others. Both are refused, with what to pass instead."""
    a = np.arange(6.0).reshape(3, 2) / 3
    operands = [make(a), np.ones(2)] if spec == "ij,j->i" else [make(a), a] if spec == "ij,ij->i" else [make(a)]
    with pytest.raises(TypeError, match="np.asarray"):
        tnmars.contract(spec, *operands)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32])
@pytest.mark.parametrize("spec, shapes", [("ij->i", [(3, 4)]), ("ij->", [(3, 4)]), ("ijk->k", [(2, 3, 4)]),
                                          ("ij,jk->ik", [(3, 4), (4, 2)]), ("ij,k->i", [(3, 4), (5,)]),
                                          ("ij,jk->", [(3, 4), (4, 2)])])
def test_integer_contractions_keep_numpy_einsum_dtype_and_values(spec, shapes, dtype):
    """A spec that sums an operand alone (``ij->i``) widened small integers to int64 while a
    product (``ij,jk->ik``) kept them: the result's dtype depended on the spec. numpy.einsum
    keeps the operands' dtype (wrapping on overflow) for every spec; so does contract."""
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    ops = [rng.integers(max(info.min, -100), min(info.max, 100), size=s, endpoint=True).astype(dtype) for s in shapes]
    with np.errstate(over="ignore"):
        want = np.einsum(spec, *ops)
    got = tnmars.contract(spec, *ops)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
