"""Converting to CP: the default rank (as large as the dense layer, never past the rank at
which the weight is exact), exactness at ``rank="full"``, the hierarchical-SVD start, ALS
work bounded by the shapes (not the clock), the warning when no sweep is affordable, and the
progress bars. No test measures time: the work a conversion may do is asserted instead."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import tnmars.nn as tnn
from tnmars.nn import TensorizedLinear, convert
from tnmars.nn.budget import weight_error
from tnmars.nn.convert import cp_als, cp_sweep_cost, cp_terms, full_matrix_ranks, merge_modes
from tnmars.nn.layers import matrix_params

torch.set_num_threads(1)
D64 = torch.float64


def _dense(w_in_out: np.ndarray) -> nn.Linear:
    """A float64 ``nn.Linear`` whose ``(in, out)`` weight is ``w_in_out``."""
    n_in, n_out = w_in_out.shape
    dense = nn.Linear(n_in, n_out).double()
    with torch.no_grad():
        dense.weight.copy_(torch.as_tensor(w_in_out.T))
    return dense


def _weight_of_cp_rank(in_shape, out_shape, rank: int, seed: int = 0) -> np.ndarray:
    """An ``(in, out)`` matrix whose merged tensor ``(i_k o_k)`` has CP rank ``rank``."""
    rng = np.random.default_rng(seed)
    d = len(in_shape)
    factors = [rng.standard_normal((i * o, rank)) for i, o in zip(in_shape, out_shape)]
    letters = "abcdef"[:d]
    merged = np.einsum(",".join(c + "z" for c in letters) + "->" + letters, *factors)
    t = merged.reshape([n for i, o in zip(in_shape, out_shape) for n in (i, o)])
    t = t.transpose([2 * k for k in range(d)] + [2 * k + 1 for k in range(d)])
    return t.reshape(int(np.prod(in_shape)), int(np.prod(out_shape)))


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the size warning of a rank above the dense count
        return fn(*args, **kwargs)


def _same_function(layer: nn.Module, dense: nn.Module, n_in: int, tol: float = 1e-9) -> None:
    x = torch.randn(6, n_in, dtype=D64)
    with torch.no_grad():
        want, got = dense(x), layer.eval()(x)
    assert float((got - want).abs().max()) <= tol * max(float(want.abs().max()), 1.0)


def test_merge_modes_matches_the_layers_core_layout():
    w = _weight_of_cp_rank((3, 4), (4, 5), 2)
    merged = merge_modes(w, (3, 4), (4, 5))
    assert merged.shape == (12, 20)
    assert merged[1 * 4 + 2, 3 * 5 + 1] == w[1 * 4 + 3, 2 * 5 + 1]  # (i1 o1, i2 o2) <- W[i1 i2, o1 o2]


def test_default_rank_of_a_generic_weight_is_the_largest_within_the_dense_count():
    dense = nn.Linear(96, 80)
    layer = TensorizedLinear.from_linear(dense, "cp", None, (4, 4, 6), (4, 4, 5))
    r = layer.max_ranks["A"]
    assert r == 96 * 80 // (16 + 16 + 30) == 123  # merged modes (16, 16, 30): 62 parameters per index
    assert layer.num_params <= layer.dense_size < matrix_params("cp", (4, 4, 6), (4, 4, 5), r + 1)
    assert r < full_matrix_ranks("cp", (4, 4, 6), (4, 4, 5))[0] == 256  # a generic weight needs more


@pytest.mark.parametrize("rank", [None, 0.5])
def test_default_rank_stops_where_the_weight_is_already_exact(rank):
    """A weight of CP rank 2 on three merged modes: the hierarchical SVD has at most 2 x 2
    terms and is exact, so no larger rank is chosen (the budget alone would give 37 or 18)."""
    shapes = ((4, 4, 4), (4, 4, 4))
    w = _weight_of_cp_rank(*shapes, 2)
    dense = _dense(w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer = TensorizedLinear.from_linear(dense, "cp", rank, *shapes)
    terms = len(cp_terms(merge_modes(w, *shapes))[0])
    assert 2 <= layer.max_ranks["A"] == terms <= 4
    assert layer.max_ranks["A"] < (64 * 64 // 48) * (0.5 if rank else 1.0)
    _same_function(layer, dense, 64)


def test_full_rank_is_exact_for_any_weight_and_counts_all_but_the_largest_merged_mode():
    assert full_matrix_ranks("cp", (8, 8, 8), (8, 8, 8)) == [64 * 64]
    assert full_matrix_ranks("cp", (8, 8, 16), (8, 8, 16)) == [64 * 64]
    assert full_matrix_ranks("cp", (12,), (20,)) == [1]  # one merged mode: the weight is one vector
    torch.manual_seed(1)
    one = nn.Linear(12, 10).double()
    layer = TensorizedLinear.from_linear(one, "cp", "full", (12,), (10,))
    assert layer.max_ranks.get("A", 1) == 1 and layer.num_params == layer.dense_size  # a size-1 bond has no mask
    _same_function(layer, one, 12)
    three = nn.Linear(12, 12).double()
    with pytest.warns(UserWarning, match="more than the dense"):  # merged modes (4, 6, 6): rank 24
        layer = TensorizedLinear.from_linear(three, "cp", "full", (2, 3, 2), (2, 2, 3))
    assert layer.max_ranks == {"A": 24}
    _same_function(layer, three, 12)


def test_cp_terms_are_exact_orthogonal_and_largest_first():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 4, 2))
    weights, factors = cp_terms(x)
    assert len(weights) <= 3 * 4 * 2 and np.all(np.diff(weights) <= 0)
    for f in factors:
        np.testing.assert_allclose(np.linalg.norm(f, axis=0), 1.0)
    np.testing.assert_allclose(np.einsum("r,ar,br,cr,dr->abcd", weights, *factors), x, atol=1e-12)
    # orthogonal terms: keeping the 7 largest leaves exactly the norm of the others
    kept = np.einsum("r,ar,br,cr,dr->abcd", weights[:7], *(f[:, :7] for f in factors))
    assert np.linalg.norm(x - kept) == pytest.approx(np.linalg.norm(weights[7:]), rel=1e-10)


def test_cp_terms_drop_rounding_at_the_given_precision():
    x = np.einsum("i,j,k->ijk", *np.random.default_rng(0).standard_normal((3, 6)))
    x32 = x + 1e-9 * np.random.default_rng(1).standard_normal(x.shape)  # below float32 rounding
    assert len(cp_terms(x)[0]) == 1
    assert len(cp_terms(x32, eps=float(np.finfo(np.float32).eps))[0]) == 1
    assert len(cp_terms(x32)[0]) > 1  # in float64 the perturbation is content


def test_als_lowers_the_error_of_the_truncated_terms_and_reports_it():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 7, 8))
    weights, factors = cp_terms(x)
    start = float(np.linalg.norm(weights[10:]) / np.linalg.norm(x))
    factors = [f[:, :10] * (weights[:10] if k == 0 else 1.0) for k, f in enumerate(factors)]
    fitted, error = cp_als(x, factors, 20)
    assert error < 0.97 * start
    rebuilt = np.einsum("ar,br,cr->abc", *fitted)
    assert error == pytest.approx(float(np.linalg.norm(x - rebuilt) / np.linalg.norm(x)), rel=1e-6)


def test_als_recovers_a_tensor_of_low_cp_rank_from_the_truncated_terms():
    rng = np.random.default_rng(2)
    x = np.einsum("ar,br,cr->abc", *(rng.standard_normal((n, 3)) for n in (6, 7, 8)))
    weights, factors = cp_terms(x)
    assert len(weights) > 3  # the hierarchical SVD needs more terms: ALS finds the 3
    factors = [f[:, :3] * (weights[:3] if k == 0 else 1.0) for k, f in enumerate(factors)]
    fitted, error = cp_als(x, factors, 200)
    assert error < 1e-8
    np.testing.assert_allclose(np.einsum("ar,br,cr->abc", *fitted), x, atol=1e-7)


def _record_sweeps(monkeypatch) -> list[int]:
    seen: list[int] = []
    real = convert.cp_als

    def spy(x, factors, sweeps, **kw):
        seen.append(sweeps)
        return real(x, factors, sweeps, **kw)

    monkeypatch.setattr(convert, "cp_als", spy)
    return seen


def test_als_sweeps_follow_the_work_budget_of_the_shapes(monkeypatch):
    seen = _record_sweeps(monkeypatch)
    torch.manual_seed(0)
    dense = nn.Linear(64, 64)
    TensorizedLinear.from_linear(dense, "cp")  # merged modes (16, 16, 16), rank 85
    flops, _ = cp_sweep_cost((16, 16, 16), 85)
    assert seen == [min(convert.CP_MAX_SWEEPS, int(convert.CP_WORK // flops))]
    monkeypatch.setattr(convert, "CP_WORK", 3 * flops)
    TensorizedLinear.from_linear(dense, "cp")
    assert seen[-1] == 3


@pytest.mark.parametrize("n, merged, rank", [(512, (64, 64, 64), 1365), (1024, (64, 64, 256), 2730)])
def test_dense_layers_users_meet_get_a_bounded_als_fit(n, merged, rank):
    """The default CP layers of 512 x 512 and 1024 x 1024 dense ones: at least one ALS sweep
    within the default work budget and memory limit, and a bounded number of them (the old
    200 tensorly sweeps at rank 1365 took 83 s)."""
    assert rank == n * n // sum(merged) and merge_modes(np.zeros((n, n)), *[tnn.factorize(n, 3)] * 2).shape == merged
    flops, elements = cp_sweep_cost(merged, rank)
    assert 1 <= convert.CP_WORK // flops <= 20 and elements <= convert.CP_MAX_ELEMENTS


def test_no_affordable_sweep_warns_and_keeps_the_truncated_hierarchical_svd(monkeypatch):
    monkeypatch.setattr(convert, "CP_WORK", 0.0)
    seen = _record_sweeps(monkeypatch)
    torch.manual_seed(0)
    dense = nn.Linear(512, 512)
    with pytest.warns(UserWarning, match="one ALS sweep would take about .* more than tnmars.nn.convert.CP_WORK") as caught:
        layer = TensorizedLinear.from_linear(dense, "cp")
    assert seen == [] and layer.max_ranks == {"A": 1365} and layer.num_params <= layer.dense_size
    stated = float(re.search(r"relative weight error ([0-9.e-]+)\)", str(caught[0].message)).group(1))
    assert weight_error(dense, layer.eval()) ** 0.5 == pytest.approx(stated, rel=1e-2)  # eval: no mask draw


def test_progress_bars_show_cp_sweeps_and_tensorize_layers(monkeypatch, capsys):
    monkeypatch.setattr(convert, "PROGRESS_DELAY", 0.0)
    dense = nn.Linear(64, 64)
    TensorizedLinear.from_linear(dense, "cp", progress=True)
    assert "CP-ALS rank 85" in capsys.readouterr().err
    TensorizedLinear.from_linear(dense, "cp", progress=False)
    tnn.tensorize(nn.Sequential(dense), linear="cp", progress=False)
    assert capsys.readouterr().err == ""
    tnn.tensorize(nn.Sequential(dense, nn.ReLU(), nn.Linear(64, 8)), linear="cp", rank=4, progress=True)
    assert "tensorize" in capsys.readouterr().err


def test_tensorize_within_a_budget_in_cp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 16))
    small = tnn.tensorize(model, linear="cp", budget="4x")
    assert [type(m).__name__ for m in small] == ["TensorizedLinear", "ReLU", "TensorizedLinear"]
    assert small[0].num_params + small[2].num_params <= (32 * 32 + 32 * 16) // 4


def test_a_zero_weight_gives_a_zero_layer_whose_cores_still_train():
    dense = nn.Linear(12, 20)
    with torch.no_grad():
        dense.weight.zero_()
    layer = TensorizedLinear.from_linear(dense, "cp", None, (3, 4), (4, 5))
    # the budget's rank, as for a weight with many terms (a zero weight's zero terms gave rank 1,
    # which fine-tuning could not grow: an outside probe's zero-initialised layer stayed at loss 0.9)
    assert layer.max_ranks == TensorizedLinear.from_linear(nn.Linear(12, 20), "cp", None, (3, 4), (4, 5)).max_ranks
    assert layer.max_ranks["A"] > 1
    x = torch.randn(3, 12)
    assert torch.equal(layer.eval()(x), dense(x).detach())
    layer(x).sum().backward()
    assert float(layer.cores[0].grad.abs().max()) > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_keep_every_term(dtype):
    # the terms are cut at float64 rounding: at bfloat16's the cut dropped 250 of 256 real terms
    torch.manual_seed(0)
    dense = nn.Linear(64, 64)
    half = nn.Linear(64, 64).to(dtype)
    with torch.no_grad():
        half.weight.copy_(dense.weight)
        dense.weight.copy_(half.weight.float())  # the same values in both layers
    shapes = {"in_shape": (4, 4, 4), "out_shape": (4, 4, 4)}
    reference = _quiet(TensorizedLinear.from_linear, dense, format="cp", **shapes)
    layer = _quiet(TensorizedLinear.from_linear, half, format="cp", **shapes)
    assert layer.max_ranks == reference.max_ranks  # the default rank is not clipped by a rounding cut
    full = _quiet(TensorizedLinear.from_linear, half, format="cp", rank="full", **shapes)
    assert full.max_ranks == {next(iter(full.max_ranks)): 256}
    # exact up to the cores' own rounding in that dtype
    assert weight_error(half, full) < 30 * float(torch.finfo(dtype).eps) ** 2 * 64


def test_cp_als_of_a_zero_tensor_stops_at_once_without_nan():
    factors = [np.ones((n, 2)) for n in (3, 4, 5)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, error = cp_als(np.zeros((3, 4, 5)), factors, 50)
    assert error == 0.0
