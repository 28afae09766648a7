"""Budgets for tensorized models: ``tensorize(model, budget=...)`` never exceeds the budget and
spends it where the weights need it."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from tnmars.nn import tensorize
from tnmars.nn.budget import allocate_ranks, weight_error
from tnmars.nn.convert import from_linear


def _core_params(model: nn.Module) -> int:
    return sum(m.num_params for m in model.modules() if hasattr(m, "dense_size") and hasattr(m, "num_params"))


def _model(seed: int = 0) -> nn.Sequential:
    """Two linears: one whose weight has rank 2 (cheap to represent), one full rank."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    with torch.no_grad():
        u, v = torch.randn(64, 2), torch.randn(2, 64)
        model[0].weight.copy_(u @ v / 8)
    return model


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("budget", [600, 1500, "5x"])
@pytest.mark.parametrize("linear", ["tt", "lowrank"])
def test_a_tensorized_model_never_exceeds_its_budget(budget, linear):
    model = _model()
    small = _quiet(tensorize, model, linear=linear, budget=budget)
    limit = budget if isinstance(budget, int) else (2 * 64 * 64) // 5
    assert 0 < _core_params(small) <= limit
    # the summary's "tensorized layers" row counts what the budget counts (the model row adds the biases)
    from tnmars.nn import summary
    s = summary(small)
    assert s.layer_params == _core_params(small) and s.selected_params == s.layer_params + s.other_params
    assert f"| tensorized layers (cores) | | | | {s.layer_params:,} |" in str(s)
    x = torch.randn(3, 64)
    assert small(x).shape == (3, 64) and torch.isfinite(small(x)).all()


def test_the_budget_goes_where_the_weights_need_it():
    """Against a uniform share of the same size, the allocation gives the rank-2 layer about
    rank 2 and the rest to the full-rank layer: a smaller total weight error."""
    model = _model()
    limit = 1100
    allocated = _quiet(tensorize, model, linear="lowrank", budget=limit)
    uniform = _quiet(tensorize, model, linear="lowrank", rank=limit / (2 * 64 * 64))
    assert _core_params(uniform) <= limit and _core_params(allocated) <= limit

    def total_error(m):
        return weight_error(model[0], m[0]) + weight_error(model[2], m[2])

    assert allocated[0].max_ranks["A"] == 2  # exact at rank 2: no more parameters there
    assert allocated[2].max_ranks["A"] > uniform[2].max_ranks["A"]
    assert total_error(allocated) < 0.9 * total_error(uniform)
    assert weight_error(model[0], allocated[0]) < 1e-10


def test_allocation_is_greedy_by_error_per_parameter_and_stays_within_the_limit():
    torch.manual_seed(1)
    layers = {"a": nn.Linear(32, 48), "b": nn.Linear(48, 16), "c": nn.Linear(16, 16)}
    for limit in (300, 700, 1500):
        ranks = _quiet(allocate_ranks, layers, lambda m, r: from_linear(m, "tt", rank=r), limit)
        built = {n: _quiet(from_linear, layers[n], "tt", rank=r) for n, r in ranks.items()}
        assert sum(layer.num_params for layer in built.values()) <= limit
    with pytest.raises(ValueError, match="rank 1"):
        _quiet(allocate_ranks, layers, lambda m, r: from_linear(m, "tt", rank=r), 10)


def test_bad_budgets_are_refused_before_any_work():
    model = _model()
    with pytest.raises(ValueError, match="not both"):
        tensorize(model, rank=4, budget=500)
    with pytest.raises(ValueError, match="compression"):
        tensorize(model, budget="ten times")
    with pytest.raises(TypeError, match="budget"):
        tensorize(model, budget=2.5)
    with pytest.raises(ValueError, match="no layer"):
        tensorize(nn.Sequential(nn.ReLU()), budget=100)
    with pytest.raises(ValueError, match="rank 1"):
        _quiet(tensorize, model, budget=10)


def test_weight_error_is_zero_at_full_rank_and_one_for_a_zero_approximation():
    layer = nn.Linear(12, 10)
    full = _quiet(from_linear, layer, "tt", rank="full")
    assert weight_error(layer, full) < 1e-10
    with torch.no_grad():
        for core in full.cores:
            core.zero_()
    assert np.isclose(weight_error(layer, full), 1.0)


def test_weight_error_reads_the_map_weight_not_a_training_draw():
    # open masks near the clamp: most training draws differ from the MAP masks
    torch.manual_seed(0)
    linear = nn.Linear(32, 32)
    layer = _quiet(from_linear, linear, "tt", 4, alpha=0.3)
    assert layer.training
    errors = {weight_error(linear, layer) for _ in range(5)}
    assert len(errors) == 1
    assert layer.training  # the mode is restored
    layer.eval()
    assert errors == {weight_error(linear, layer)}


def test_a_budget_leaves_dense_a_layer_larger_than_dense_even_at_rank_1():
    """As ``rank=None`` does: a ``Linear(97, 101)`` is 9,799 parameters as a TT at rank 1 against
    9,797 dense; under a budget it was converted (larger and lossy) and spent the budget."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 97), nn.ReLU(), nn.Linear(97, 101))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = tensorize(model, budget="2x", progress=False)
    assert type(small[4]) is nn.Linear
    assert any("left these layers dense: 4: even at ranks" in str(w.message) for w in caught)
    assert _core_params(small) <= (64 * 64 + 64 * 97) // 2  # the budget is of the converted layers only
    named = _quiet(tensorize, model, ["0", "4"], budget=12000, progress=False)  # named: converted anyway
    assert named[4].num_params > named[4].dense_size


def test_a_budget_leaves_a_frozen_layer_dense_and_gives_it_no_share():
    """A frozen weight gives frozen cores: a lossy share could never be recovered by fine-tuning
    (and the warning used to say "fine-tune it to recover")."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    model[0].requires_grad_(False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = tensorize(model, budget="4x", progress=False)
    assert type(small[0]) is nn.Linear and torch.equal(small[0].weight, model[0].weight)
    messages = [str(w.message) for w in caught]
    assert any("left these layers dense: 0: its weight is frozen" in m for m in messages)
    assert not any("'0' by" in m for m in messages)
    assert _core_params(small) <= (128 * 64 + 64 * 10) // 4


@pytest.mark.parametrize("how", [dict(rank=0.25), dict(budget=3000, filter=["0", "2"])], ids=["share", "named"])
def test_a_frozen_layer_converted_lossily_is_said_not_to_recover(how):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    model[0].requires_grad_(False)
    how = dict(how)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = tensorize(model, how.pop("filter", None), progress=False, **how)
    assert small[0].conversion_error > 0.1 and not any(p.requires_grad for p in small[0].cores)
    messages = [str(w.message) for w in caught]
    about_0 = [m for m in messages if "'0' by" in m]
    assert len(about_0) == 1 and "frozen" in about_0[0] and "will NOT recover" in about_0[0]
    assert "'2' by" not in about_0[0]
    assert any("'2' by" in m and "Fine-tune it (MarsLoss) to recover" in m for m in messages)
