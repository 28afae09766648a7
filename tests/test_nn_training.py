"""MARS training helpers: the loss, temperature schedules, compress and summary."""
from __future__ import annotations

import collections
import copy
import math
import pickle
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tnmars.nn as tnn
from tnmars.nn import (
    LowRankLinear,
    MarsLoss,
    MarsTemperature,
    TensorizedLinear,
    Tucker2Conv2d,
    compress,
    log_prior,
    mars_penalty,
    set_alpha,
    set_pi,
    set_temperature,
    summary,
)

torch.set_num_threads(1)


def _mnist_2fc(**kw):
    return nn.Sequential(
        TensorizedLinear(784, 625, rank=20, in_shape=(7, 4, 7, 4), out_shape=(5, 5, 5, 5), **kw),
        nn.ReLU(),
        TensorizedLinear(625, 10, rank=20, in_shape=(25, 25), out_shape=(5, 2), **kw),
    )


def _set_ranks(layer, ranks):
    with torch.no_grad():
        for p, r in zip(layer.masks.bond_logits().values(), ranks):
            p.fill_(-3.0)
            p[:r] = 3.0


def test_summary_reproduces_the_reference_worked_example():
    # reference notes section 5: soft model 1, ranks [5, 5, 3 | 8] -> 496,885 / 3,295 = 150.8x
    torch.manual_seed(0)
    model = _mnist_2fc(pi=0.1, alpha=-1.5)
    _set_ranks(model[0], [5, 5, 3])
    _set_ranks(model[2], [8])
    s = summary(model)
    assert [r.params_selected for r in s.layers] == [1260, 1400]
    assert [r.dense_size for r in s.layers] == [490000, 6250]
    assert s.other_params == 635
    assert s.compression == pytest.approx(496885 / 3295)
    assert round(s.layers[0].compression, 1) == 388.9
    assert "150.8x" in str(s)
    # the two layers' cores alone (what a tensorize budget counts): 496,250 / 2,660
    assert s.layer_params == 2660 and "| tensorized layers (cores) | | | | 2,660 | 496,250 | 186.6x |" in str(s)
    # at the start every bond is at rank 20: the paper's 18x
    assert round(s.initial_compression) == 18
    small = compress(model)
    assert summary(small).compression == pytest.approx(s.compression)
    n_small = sum(p.numel() for p in small.parameters())
    assert n_small == 3295


def test_loss_is_data_loss_minus_log_prior_over_n():
    torch.manual_seed(0)
    model = nn.Sequential(TensorizedLinear(12, 6, rank=3, in_shape=(3, 4), out_shape=(2, 3), pi=0.05, alpha=0.3),
                          nn.ReLU(), LowRankLinear(6, 4, rank=2, pi=0.2, alpha=-0.5))
    x, y = torch.randn(8, 12), torch.randint(0, 4, (8,))
    n = 777
    torch.manual_seed(5)
    loss = MarsLoss(model, n)(model(x), y)
    torch.manual_seed(5)
    ce = nn.functional.cross_entropy(model(x), y)
    manual = 0.0
    for layer, pi in ((model[0], 0.05), (model[2], 0.2)):
        for p in layer.masks.bond_logits().values():
            phi = torch.sigmoid(p)
            manual = manual + (phi * math.log(pi) + (1 - phi) * math.log(1 - pi)).sum()
        manual = manual - sum((c**2).sum() for c in layer.cores) / 200.0
    torch.testing.assert_close(loss, ce - manual / n)
    torch.testing.assert_close(mars_penalty(model, n), -manual / n)


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_a_criterion_that_does_not_average_is_refused(reduction):
    """The prior is divided by N for a per-example (mean) data term; a summed loss would make
    it N times too weak, silently."""
    model = nn.Sequential(LowRankLinear(6, 4, rank=2))
    with pytest.raises(ValueError, match=f"reduction={reduction!r}"):
        MarsLoss(model, 100, criterion=nn.MSELoss(reduction=reduction))
    MarsLoss(model, 100, criterion=nn.MSELoss())                   # the mean: fine
    MarsLoss(model, 100, criterion=lambda out, y: (out - y).abs().mean())  # a plain function: trusted


def test_mars_loss_follows_layers_whose_masks_are_removed_after_it_is_built():
    torch.manual_seed(0)
    model = nn.Sequential(TensorizedLinear(12, 6, rank=3, in_shape=(3, 4), out_shape=(2, 3)), nn.ReLU(),
                          LowRankLinear(6, 4, rank=2))
    loss_fn = MarsLoss(model, 50)
    model.eval()
    x, y = torch.randn(8, 12), torch.randint(0, 4, (8,))
    before = loss_fn(model(x), y)
    model[2].masks = None  # the layer is now a plain fixed-rank layer: no prior any more
    after = loss_fn(model(x), y)
    torch.testing.assert_close(after, nn.functional.cross_entropy(model(x), y) + mars_penalty(model, 50))
    assert not torch.allclose(before, after)


def test_gaussian_prior_covers_only_the_cores_of_mars_layers():
    torch.manual_seed(0)
    mars_layer = TensorizedLinear(12, 6, rank=3, in_shape=(3, 4), out_shape=(2, 3))
    plain = TensorizedLinear(12, 6, rank=3, in_shape=(3, 4), out_shape=(2, 3), mars=False)
    dense = nn.Linear(6, 6)
    model = nn.Sequential(mars_layer, plain, dense)
    before = log_prior(model)
    with torch.no_grad():
        mars_layer.bias.add_(100.0)
        dense.weight.add_(100.0)
        plain.cores[0].add_(100.0)
    torch.testing.assert_close(log_prior(model), before)
    with torch.no_grad():
        mars_layer.cores[0].add_(1.0)
    assert log_prior(model) < before
    assert plain.log_prior() == 0


def test_temperature_schedules_and_setters():
    model = _mnist_2fc()
    sched = MarsTemperature(model, 0.1, 0.01, decay=0.5)
    temps = [sched.step() for _ in range(5)]
    assert temps == pytest.approx([0.05, 0.025, 0.0125, 0.01, 0.01])
    assert all(layer.masks.temperature == 0.01 for _, layer in tnn.mars_layers(model))
    sched2 = MarsTemperature(model, 0.1, 0.01, steps=10)
    for _ in range(5):
        sched2.step()
    assert tnn.get_temperature(model) == pytest.approx(0.1 * 0.1**0.5)
    state = sched2.state_dict()
    sched3 = MarsTemperature(model, 0.1, 0.01, steps=10)
    sched3.load_state_dict(state)
    assert tnn.get_temperature(model) == pytest.approx(0.1 * 0.1**0.5)
    # the compressed paper schedule reaches the floor after 229/300 of the epochs
    decay = MarsTemperature.paper_decay(100)
    assert 0.1 * decay ** math.ceil(0.7637 * 100) <= 0.01 + 1e-12 < 0.1 * decay ** (0.7637 * 100 - 2)
    # the default schedule is the reference's decay of 0.99 per call; decay= and steps= together are refused
    assert MarsTemperature(model, 0.1, 0.01).step() == pytest.approx(0.099)
    with pytest.raises(ValueError, match="not both"):
        MarsTemperature(model, 0.1, 0.01, decay=0.5, steps=10)
    set_temperature(model, 0.3)
    set_pi(model, 0.2)
    assert {(m.masks.temperature, m.masks.pi) for _, m in tnn.mars_layers(model)} == {(0.3, 0.2)}
    set_alpha(model, 2.0, generator=torch.Generator().manual_seed(0))
    for _, m in tnn.mars_layers(model):
        for p in m.masks.bond_logits().values():
            assert abs(float(p.detach().mean()) - 2.0) < 0.01
    with pytest.raises(ValueError, match="pi"):
        set_pi(model, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        set_temperature(model, -1.0)
    for bad in (0, 2.5, float("nan"), True, "100"):  # a fraction or NaN would silently rescale the prior
        with pytest.raises(ValueError, match="num_train"):
            MarsLoss(model, bad)
        with pytest.raises(ValueError, match="num_train"):
            tnn.mars_penalty(model, bad)
    assert MarsLoss(model, 100.0).num_train == 100


def test_compress_a_mixed_model_keeps_eval_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(),
        Tucker2Conv2d(4, 6, 3, rank=(4, 5), alpha=0.0), nn.ReLU(), nn.Flatten(),
        LowRankLinear(6 * 4 * 4, 20, rank=10, alpha=0.0), nn.ReLU(),
        TensorizedLinear(20, 10, rank=4, alpha=0.0),
    )
    gen = torch.Generator().manual_seed(2)
    for _, layer in tnn.mars_layers(model):
        with torch.no_grad():
            for p in layer.masks.bond_logits().values():
                p.copy_(torch.randn(p.shape, generator=gen))
    model.eval()
    small = compress(model)
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)
    assert list(tnn.mars_layers(small)) == []
    assert len(list(tnn.tensorized_layers(small))) == 3
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    assert summary(small).compression == pytest.approx(summary(model).compression)
    assert list(tnn.mars_layers(model))  # the original keeps its masks


def test_load_compressed_rebuilds_a_compressed_model_from_its_state_dict(tmp_path):
    torch.manual_seed(0)

    def build():
        return nn.Sequential(Tucker2Conv2d(4, 6, 3, rank=(4, 5), alpha=0.0), nn.ReLU(), nn.Flatten(),
                             LowRankLinear(6 * 4 * 4, 20, rank=10, alpha=0.0), nn.ReLU(),
                             TensorizedLinear(20, 10, rank=4, alpha=0.0))

    model = build()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for _, layer in tnn.mars_layers(model):
            layer.masks.logits.copy_(torch.randn(layer.masks.logits.shape, generator=gen))
        model[3].masks.logits.fill_(-1.0)  # a bond closed entirely: rank 0 must load too
    model.eval()
    path = tmp_path / "small.pt"
    torch.save(compress(model).state_dict(), path)
    state = torch.load(path, weights_only=True)
    with pytest.raises(RuntimeError):
        build().load_state_dict(state)  # the plain route fails: shapes and keys differ
    fresh = build()
    loaded = tnn.load_compressed(fresh, state).eval()
    x = torch.randn(3, 4, 6, 6)
    torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)
    assert [layer.selected_ranks() for _, layer in tnn.tensorized_layers(loaded)] == \
        [layer.selected_ranks() for _, layer in tnn.mars_layers(model)]
    assert list(tnn.mars_layers(fresh))  # the template is not changed
    # an uncompressed state (with logits) loads as it is
    again = tnn.load_compressed(build(), model.state_dict()).eval()
    torch.testing.assert_close(again(x), model(x))
    single = LowRankLinear(6, 4, rank=3, alpha=3.0)  # a bare layer: its state (with logits) loads into a copy
    logits = single.masks.logits.detach().clone()
    other = {k: v + 1 for k, v in single.state_dict().items()}
    assert tnn.load_compressed(single, other) is not single
    torch.testing.assert_close(single.masks.logits.detach(), logits)
    bad = dict(state)
    bad["5.cores.0"] = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="axes"):
        tnn.load_compressed(build(), bad)


def test_a_few_mars_steps_reduce_the_loss_and_move_the_logits():
    torch.manual_seed(0)
    # a rank-2 linear teacher, a rank-8 student
    teacher = torch.randn(16, 2) @ torch.randn(2, 5)
    x = torch.randn(512, 16)
    y = (x @ teacher).argmax(1)
    model = LowRankLinear(16, 5, rank=8, alpha=0.5, pi=0.01)
    loss_fn = MarsLoss(model, len(x))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    logits0 = model.masks.bond_logits()["A"].detach().clone()
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    assert not torch.allclose(model.masks.bond_logits()["A"], logits0)
    assert all(math.isfinite(v) for v in losses)


def test_mars_loss_and_temperature_reach_a_tensorized_recurrent_matrix():
    import torch

    from tnmars.nn import TanhRNN

    model = TanhRNN(3, 8, lam=0.9, seed=0, recurrent="tt", tt_rank=3, tt_shape=(2, 2, 2), alpha=0.5)
    found = [name for name, _ in tnn.mars_modules(model)]
    assert len(found) == 1
    (_, recurrent_matrix), = tnn.mars_modules(model)
    torch.testing.assert_close(tnn.log_prior(model), recurrent_matrix.log_prior())
    tnn.set_temperature(model, 0.05)
    assert recurrent_matrix.masks.temperature == 0.05
    assert tnn.get_temperature(model) == 0.05
    # the penalty carries gradient to the recurrent matrix's mask logits
    tnn.mars_penalty(model, 100).backward()
    assert all(p.grad is not None for p in recurrent_matrix.masks.parameters())


def test_layer_prior_matches_the_reference_formulas_and_their_gradients():
    from tnmars import masks as mars
    from tnmars.backends import get_backend
    from tnmars.nn.masks import BondMasks

    be = get_backend("torch")
    torch.manual_seed(3)
    m = BondMasks({"A": 3, "B": 5}, pi=0.03, alpha=0.2).double()
    with torch.no_grad():
        m.logits.copy_(torch.randn(8, dtype=torch.float64) * 2)
    cores = [torch.randn(2, 3, dtype=torch.float64, requires_grad=True),
             torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)]
    fused = m.log_prior(cores)
    unfused = sum(mars.bernoulli_log_prior(v, 0.03, be) for v in m.bond_logits().values()) \
        + mars.gaussian_log_prior(cores, be)
    torch.testing.assert_close(fused, unfused)
    g_fused = torch.autograd.grad(fused, [m.logits, *cores])
    g_unfused = torch.autograd.grad(unfused, [m.logits, *cores])
    for a, b in zip(g_fused, g_unfused):
        torch.testing.assert_close(a, b)
    # frozen cores get no gradient and break nothing
    frozen = cores[0].detach()
    (g,) = torch.autograd.grad(m.log_prior([frozen]), [m.logits])
    torch.testing.assert_close(g, g_unfused[0])


def test_training_sample_matches_the_reference_sample_and_gradient():
    from tnmars import masks as mars
    from tnmars.backends import get_backend
    from tnmars.nn.masks import BondMasks

    be = get_backend("torch")
    m = BondMasks({"A": 400}, alpha=0.0, temperature=0.3).double().train()
    with torch.no_grad():
        m.logits.copy_(torch.linspace(-3, 3, 400, dtype=torch.float64))
    torch.manual_seed(11)
    sample = m()["A"]
    torch.manual_seed(11)
    u = torch.rand(400, dtype=torch.float64)
    ref_logits = m.logits.detach().clone().requires_grad_(True)
    ref = mars.hard_concrete(ref_logits, 0.3, u, be)
    torch.testing.assert_close(sample, ref)
    w = torch.randn(400, dtype=torch.float64)
    (g,) = torch.autograd.grad((sample * w).sum(), [m.logits])
    (g_ref,) = torch.autograd.grad((ref * w).sum(), [ref_logits])
    torch.testing.assert_close(g, g_ref)
    assert ((sample == 0) | (sample == 1)).any() and ((sample > 0) & (sample < 1)).any()


def test_fold_matches_sample_then_multiply_with_two_masks_on_one_core():
    from tnmars import masks as mars
    from tnmars.backends import get_backend
    from tnmars.nn.base import fold_masks
    from tnmars.nn.masks import BondMasks

    be = get_backend("torch")
    m = BondMasks({"A": 3, "B": 4, "C": 2}, alpha=0.0, temperature=0.7).double().train()
    with torch.no_grad():
        m.logits.copy_(torch.linspace(-2, 2, 9, dtype=torch.float64))
    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (5, 2), (6,)]
    cores = [torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True) for s in shapes]
    sites = {"A": (0, 0), "B": (0, 1), "C": (1, 1)}  # A and B both fold into core 0; core 2 has no mask
    weights = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]

    torch.manual_seed(4)
    out = m.fold(cores, sites)
    loss = sum((o * w).sum() for o, w in zip(out, weights))
    grads = torch.autograd.grad(loss, [m.logits, *cores])

    ref_logits = m.logits.detach().clone().requires_grad_(True)
    ref_cores = [c.detach().clone().requires_grad_(True) for c in cores]
    torch.manual_seed(4)
    sample = mars.hard_concrete(ref_logits, 0.7, torch.rand(9, dtype=torch.float64), be)
    ref = fold_masks(ref_cores, dict(zip("ABC", torch.split(sample, [3, 4, 2]))), sites)
    ref_loss = sum((o * w).sum() for o, w in zip(ref, weights))
    ref_grads = torch.autograd.grad(ref_loss, [ref_logits, *ref_cores])
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)
    assert grads[0].abs().sum() > 0


def test_joint_prior_of_several_layers_matches_the_sum_of_their_formulas():
    from tnmars import masks as mars
    from tnmars.backends import get_backend
    from tnmars.nn.masks import BondMasks, joint_log_prior

    be = get_backend("torch")
    torch.manual_seed(1)
    sets = [BondMasks({"A": 4}, pi=0.01, alpha=1.0).double(), BondMasks({"B": 2, "C": 3}, pi=0.3, alpha=-1.0).double()]
    cores = [[torch.randn(4, 3, dtype=torch.float64, requires_grad=True)],
             [torch.randn(2, 5, dtype=torch.float64, requires_grad=True), torch.randn(3, dtype=torch.float64, requires_grad=True)]]
    fused = joint_log_prior(list(zip(sets, cores)), scale=-1 / 7)
    manual = sum(mars.bernoulli_log_prior(v, m.pi, be) for m in sets for v in m.bond_logits().values())
    manual = -(manual + mars.gaussian_log_prior([c for cs in cores for c in cs], be)) / 7
    torch.testing.assert_close(fused, manual)
    leaves = [m.logits for m in sets] + [c for cs in cores for c in cs]
    for a, b in zip(torch.autograd.grad(fused, leaves, retain_graph=True), torch.autograd.grad(manual, leaves,
                                                                                                retain_graph=True)):
        torch.testing.assert_close(a, b)
    # a non-unit upstream gradient scales both parts
    for a, b in zip(torch.autograd.grad(-2.5 * fused, leaves), torch.autograd.grad(-2.5 * manual, leaves)):
        torch.testing.assert_close(a, b)


def test_joint_prior_with_cores_of_mixed_dtypes_matches_the_formulas():
    """Cores of different dtypes (no single concatenation): per-core norms, same value and gradients."""
    from tnmars import masks as mars
    from tnmars.backends import get_backend
    from tnmars.nn.masks import BondMasks, joint_log_prior

    be = get_backend("torch")
    torch.manual_seed(2)
    masks = BondMasks({"A": 3}, pi=0.05, alpha=0.5)
    cores = [torch.randn(3, 4, requires_grad=True), torch.randn(4, 3, dtype=torch.float64, requires_grad=True)]
    fused = joint_log_prior([(masks, cores)], scale=-0.5)
    manual = mars.bernoulli_log_prior(masks.logits, masks.pi, be)
    manual = -0.5 * (manual + mars.gaussian_log_prior([cores[0], cores[1].float()], be))
    torch.testing.assert_close(fused, manual)
    leaves = [masks.logits, *cores]
    for a, b in zip(torch.autograd.grad(fused, leaves), torch.autograd.grad(manual, leaves)):
        torch.testing.assert_close(a, b.to(a.dtype))


def test_mars_loss_follows_layers_switched_off_and_on():
    """MarsLoss lists the modules once; a layer whose masks are removed leaves the penalty, and
    put back, re-enters it (the list holds every layer that can carry masks)."""
    torch.manual_seed(0)
    model = nn.Sequential(tnn.TensorizedLinear(12, 20, rank=3, in_shape=(3, 4), out_shape=(4, 5)), nn.ReLU(),
                          tnn.TensorizedLinear(20, 6, rank=3, in_shape=(4, 5), out_shape=(2, 3)))
    loss_fn = tnn.MarsLoss(model, num_train=100)
    x, y = torch.randn(4, 12), torch.randint(0, 6, (4,))
    out = model(x)
    both = loss_fn(out, y) - loss_fn.criterion(out, y)
    masks = model[2].masks
    model[2].masks = None
    one = loss_fn(out, y) - loss_fn.criterion(out, y)
    torch.testing.assert_close(one, tnn.mars_penalty(model, 100))
    model[2].masks = masks
    torch.testing.assert_close(loss_fn(out, y) - loss_fn.criterion(out, y), both)
    assert float((both - one).abs()) > 0


# ------------------------------------------------------------------ defaults that never kill a model
def _digits(seed: int = 0):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    return X[perm[:1400]], y[perm[:1400]], X[perm[1400:]], y[perm[1400:]]


def _digits_model(kind: str, tensorized: bool) -> nn.Module:
    """An MLP or a small CNN on 8x8 digits; ``tensorized``: every hidden layer a default tnmars layer."""
    if kind == "mlp":
        layer = TensorizedLinear if tensorized else nn.Linear
        return nn.Sequential(layer(64, 256), nn.ReLU(), layer(256, 128), nn.ReLU(), layer(128, 10))
    conv = tnn.TensorizedConv2d(16, 32, 3, padding=1) if tensorized else nn.Conv2d(16, 32, 3, padding=1)
    head = TensorizedLinear(512, 10) if tensorized else nn.Linear(512, 10)
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), conv, nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), head)


def _train_digits(model: nn.Module, data, epochs: int = 15, lr: float = 3e-3) -> float:
    x, y, x_test, y_test = data
    mars = any(True for _ in tnn.mars_modules(model))
    loss_fn = MarsLoss(model, len(x)) if mars else nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return float((model(x_test).argmax(1) == y_test).float().mean())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:TT ranks.*clipped")
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_default_layers_learn_like_the_dense_model_and_keep_every_layer(kind):
    """Layers built with defaults, trained with MarsLoss + Adam, reach the dense model's test
    accuracy within a few points; no layer ends at rank 0 or with a bond MARS closed whole."""
    data = _digits()
    torch.manual_seed(0)
    dense_acc = _train_digits(_digits_model(kind, False), data)
    torch.manual_seed(0)
    model = _digits_model(kind, True)
    acc = _train_digits(model, data)
    report = summary(model)
    assert acc >= dense_acc - 0.03, (acc, dense_acc)
    assert not report.dead_layers and not report.closed_layers
    assert all(r >= 1 for layer in report.layers for r in layer.selected_ranks.values())
    assert math.isfinite(report.compression) and report.compression > 1
    small = compress(model).eval()
    with torch.no_grad():
        torch.testing.assert_close(small(data[2]), model(data[2]), rtol=1e-4, atol=1e-5)


def test_summary_flags_closed_and_dead_layers_honestly():
    model = nn.Sequential(TensorizedLinear(12, 20, rank=3, in_shape=(3, 4), out_shape=(4, 5)), nn.ReLU(),
                          LowRankLinear(20, 4, rank=3, min_rank=0))
    with torch.no_grad():
        model[0].masks.logits.fill_(-5.0)  # closed, held at min_rank=1
        model[2].masks.logits.fill_(-5.0)  # closed, min_rank=0: rank 0
    MarsLoss(model, 100)  # names the layers
    with pytest.warns(RuntimeWarning) as record:
        report = summary(model)
    messages = " ".join(str(w.message) for w in record)
    assert "['2']" in messages and "rank 0" in messages and "['0']" in messages
    assert report.dead_layers == ["2"] and report.closed_layers == ["0", "2"]
    assert math.isnan(report.compression) and math.isnan(report.layers[1].compression)
    text = str(report)
    assert "inf" not in text and "none: a zero weight (below)" in text and "weight is zero" in text
    assert "1*" in text and "kept at `min_rank`" in text
    with pytest.warns(RuntimeWarning, match="layer '2' .*weight is zero .*a layer outputs only its bias"):
        compress(model)


def test_summary_flags_a_layer_whose_cores_are_numerically_zero_though_its_ranks_are_open():
    """An outside probe: a MARS layer whose cores got no data gradient (its output unused, the
    prior's weight decay outweighing the data) shrank to numerically zero cores while its masks
    stayed open, and ``summary`` reported it at full rank with a compression, without a word."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"used": TensorizedLinear(12, 20, rank=3, in_shape=(3, 4), out_shape=(4, 5)),
                           "unused": TensorizedLinear(12, 20, rank=3, in_shape=(3, 4), out_shape=(4, 5)),
                           "cut": LowRankLinear(20, 4, rank=3)})
    with torch.no_grad():
        for core in model["unused"].cores:   # every core ~1e-7 of its start: the weight ~1e-21 of it
            core.mul_(1e-7)
        model["cut"].cores[1].zero_()        # one zero factor: the weight is exactly zero
    assert float(model["unused"].weight.detach().abs().max()) < 1e-12
    MarsLoss(model, 100)  # names the layers
    with pytest.warns(RuntimeWarning, match=r"layers \['unused', 'cut'\]: their weight is numerically zero .*"
                                            r"every bond keeps its rank, so they output only their bias"):
        report = summary(model)
    assert report.zero_weight_layers == ["unused", "cut"] and report.dead_layers == []
    flags = {r.name: r.zero_weight for r in report.layers}
    assert flags == {"used": False, "unused": True, "cut": True}
    assert report.layers[1].selected_ranks == report.layers[1].max_ranks       # the ranks still read full
    assert math.isnan(report.layers[1].compression) and math.isnan(report.compression)
    assert not math.isnan(report.layers[0].compression)
    text = str(report)
    assert "none: weight is numerically zero" in text and "none: a zero weight (below)" in text
    assert "Layers unused, cut: the weight is numerically zero" in text
    with warnings.catch_warnings():  # a healthy model: not flagged
        warnings.simplefilter("error")
        assert summary(nn.Sequential(model["used"])).zero_weight_layers == []


def _mixed_model():
    torch.manual_seed(3)
    return nn.Sequential(TensorizedLinear(16, 12, rank=3, in_shape=(4, 4), out_shape=(3, 4), alpha=1.0),
                         nn.ReLU(), LowRankLinear(12, 6, rank=4, alpha=1.0), nn.Linear(6, 5)).double()


def _train(model, loss_fn, opt, x, y, steps: int) -> None:
    """``steps`` optimizer steps, the mask draws of step ``k`` seeded with ``k`` (so that two
    models trained this way draw the same masks)."""
    for step in range(steps):
        torch.manual_seed(step)
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("cls, options", [(torch.optim.Adam, {"lr": 1e-2}),
                                          (torch.optim.Adam, {"lr": 1e-2, "foreach": False}),
                                          (torch.optim.AdamW, {"lr": 1e-2}),
                                          (torch.optim.SGD, {"lr": 1e-1, "momentum": 0.9}),
                                          (torch.optim.RMSprop, {"lr": 1e-3}),
                                          (torch.optim.Adagrad, {"lr": 1e-2}),
                                          (torch.optim.Adamax, {"lr": 1e-2}),
                                          (torch.optim.NAdam, {"lr": 1e-2}),
                                          (torch.optim.NAdam, {"lr": 1e-2, "decoupled_weight_decay": True}),
                                          (torch.optim.RAdam, {"lr": 1e-2, "decoupled_weight_decay": True})],
                         ids=["adam", "adam-for-loop", "adamw-decoupled-decay", "sgd-momentum", "rmsprop", "adagrad",
                              "adamax", "nadam", "nadam-decoupled-decay", "radam-decoupled-decay"])
def test_optimizer_carrying_the_core_prior_takes_the_same_steps_as_the_prior_in_the_loss(cls, options):
    x, y = torch.randn(32, 16, dtype=torch.float64), torch.randint(0, 5, (32,))
    in_loss, in_opt = _mixed_model(), _mixed_model()
    loss_a, loss_b = MarsLoss(in_loss, 50), MarsLoss(in_opt, 50)
    opt_a = cls(in_loss.parameters(), weight_decay=1e-3, **options)  # a user's decay on everything, as well
    opt_b = loss_b.optimizer(cls, weight_decay=1e-3, **options)
    _train(in_loss, loss_a, opt_a, x, y, 6)
    _train(in_opt, loss_b, opt_b, x, y, 6)
    moved = 0
    for (name, a), b, c in zip(in_loss.named_parameters(), in_opt.parameters(), _mixed_model().parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)
        moved += not torch.equal(a, c)
    assert moved == len(list(in_loss.parameters()))  # every parameter was trained, logits included
    assert len(opt_b.param_groups) == 1 and opt_b.param_groups[0]["weight_decay"] == 1e-3  # the user's, unchanged


class _TwoBranches(nn.Module):
    """Two MARS layers of which the forward uses only the first: the second's cores get no
    gradient at all (``None``), only the prior's."""

    def __init__(self) -> None:
        super().__init__()
        self.used = LowRankLinear(12, 5, rank=3, alpha=1.0)
        self.unused = LowRankLinear(12, 5, rank=3, alpha=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def test_optimizer_carrying_the_core_prior_decays_cores_without_a_gradient():
    """A layer the forward does not use: its cores get no gradient from the data; the prior in
    the loss still decays them, and so does the optimizer's step (the decay as their gradient),
    under coupled and decoupled weight decay alike."""
    x, y = torch.randn(8, 12, dtype=torch.float64), torch.randint(0, 5, (8,))
    for cls in (torch.optim.SGD, torch.optim.AdamW):
        models = []
        for _ in range(2):
            torch.manual_seed(5)
            models.append(_TwoBranches().double())
        in_loss, in_opt = models
        loss_a, loss_b = MarsLoss(in_loss, 20), MarsLoss(in_opt, 20)
        opt_a = cls(in_loss.parameters(), lr=1e-3)
        opt_b = loss_b.optimizer(cls, lr=1e-3)
        before = [c.detach().clone() for c in in_opt.unused.cores]
        _train(in_loss, loss_a, opt_a, x, y, 3)
        _train(in_opt, loss_b, opt_b, x, y, 3)
        for (name, a), b in zip(in_loss.named_parameters(), in_opt.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=f"{cls.__name__}: {name}")
        for c, c0 in zip(in_opt.unused.cores, before):
            assert 0 < float(c.norm()) < float(c0.norm())  # shrunk by the decay alone


def test_loss_follows_a_replaced_layer_and_an_optimizer_that_cannot_is_an_error():
    """Found by review: replacing a layer after the loss was built (``model[0] = compress(...)``,
    a new layer) was seen by neither the loss nor its optimizer: the new layer got no prior, and
    under ``loss_fn.optimizer()`` it did not train at all, silently (the guide promised an error)."""
    x, y = torch.randn(8, 16, dtype=torch.float64), torch.randint(0, 5, (8,))
    model = _mixed_model()
    loss_fn = MarsLoss(model, 50)
    model[2] = LowRankLinear(12, 6, rank=3, alpha=2.0).double()  # a new MARS layer after the loss was built
    out = model(x)
    want = nn.functional.cross_entropy(out, y) + tnn.mars_penalty(model, 50)
    torch.testing.assert_close(loss_fn(out, y), want)
    # with the optimizer applying the prior: MARS layers registered into other modules change nothing here
    loss_fn = MarsLoss(model, 50)
    opt = loss_fn.optimizer(lr=1e-2)
    from tnmars.nn import training as training_module
    count = training_module._module_registrations
    nn.Sequential(LowRankLinear(3, 3, rank=2))
    assert training_module._module_registrations == count + 1  # (the walk below happens)
    nn.Sequential(nn.Linear(3, 3))  # plain modules are not counted
    assert training_module._module_registrations == count + 1
    opt.zero_grad()
    loss_fn(model(x), y).backward()
    opt.step()
    model[0] = tnn.compress(model[0].eval()).train()
    with pytest.raises(RuntimeError, match=r"changed since MarsLoss.optimizer\(\).*new \['0'\]"):
        loss_fn(model(x), y)
    # a dense layer tensorized in place after the optimizer was built: a new MARS layer, the same error
    model = _mixed_model()
    loss_fn = MarsLoss(model, 50)
    loss_fn.optimizer(lr=1e-2)
    with pytest.warns(UserWarning):
        tnn.tensorize(model, ["3"], rank="full", inplace=True)
    with pytest.raises(RuntimeError, match=r"new \['3'\]"):
        loss_fn(model(x), y)


def test_loss_follows_layers_deleted_or_inserted_without_a_registration(monkeypatch):
    """Found by review: ``del model[i]``, ``Sequential.insert`` and ``pop`` change the module tree
    without registering anything, and the loss went on with the removed layer's prior in its value,
    or without the inserted layer's (which then never compressed), silently. The loss walks its
    model again every ``REWALK_EVERY`` calls; under ``loss_fn.optimizer()`` the change is the
    error a replaced layer gives."""
    from tnmars.nn import training as training_module

    monkeypatch.setattr(training_module, "REWALK_EVERY", 4)
    x, y = torch.randn(8, 16, dtype=torch.float64), torch.randint(0, 5, (8,))
    for change in ("delete", "insert", "pop"):
        model = _mixed_model()
        loss_fn = MarsLoss(model, 50)
        loss_fn(model(x), y)
        if change == "delete":
            del model[2]
            model.insert(2, nn.Linear(12, 6).double())  # (a plain layer in its place: the model still runs)
        elif change == "insert":
            model.insert(1, LowRankLinear(12, 12, rank=3, alpha=2.0).double())
        else:
            model.pop(2)
            model.insert(2, nn.Linear(12, 6).double())
        for _ in range(4):
            out = model(x)
            value = loss_fn(out, y)
        torch.testing.assert_close(value, nn.functional.cross_entropy(out, y) + tnn.mars_penalty(model, 50))
        loss_fn = MarsLoss(model, 50)
        loss_fn.optimizer(lr=1e-2)
        model.insert(0, nn.Identity())
        model.insert(1, LowRankLinear(16, 16, rank=3, alpha=2.0).double())
        with pytest.raises(RuntimeError, match=r"changed since MarsLoss.optimizer\(\)"):
            for _ in range(4):
                loss_fn(model(x), y)


def test_a_loss_loaded_in_another_process_follows_a_layer_replaced_after_loading(tmp_path):
    """Found by review: the loss pickled its count of module registrations, which a new process
    could match by chance; the reloaded loss then kept the replaced layer."""
    model = _mixed_model()
    torch.save((model, MarsLoss(model, 50)), tmp_path / "both.pt")
    model, loss_fn = torch.load(tmp_path / "both.pt", weights_only=False)
    assert "_registrations_seen" not in loss_fn.__dict__
    model[2] = LowRankLinear(12, 6, rank=3, alpha=2.0).double()
    x, y = torch.randn(8, 16, dtype=torch.float64), torch.randint(0, 5, (8,))
    out = model(x)
    torch.testing.assert_close(loss_fn(out, y), nn.functional.cross_entropy(out, y) + tnn.mars_penalty(model, 50))


def test_loss_value_is_the_criterion_alone_when_the_optimizer_carries_the_prior():
    model = _mixed_model().eval()
    x, y = torch.randn(8, 16, dtype=torch.float64), torch.randint(0, 5, (8,))
    full, fast = MarsLoss(model, 50), MarsLoss(model, 50)
    fast.optimizer(lr=1e-3)
    with torch.no_grad():
        out = model(x)
        assert float(fast(out, y)) == float(nn.functional.cross_entropy(out, y))
        penalty = float(tnn.mars_penalty(model, 50))
        assert float(full(out, y)) - float(fast(out, y)) == pytest.approx(penalty, rel=1e-9)
    assert penalty != 0


def _gradients(model):
    return {name: (p.grad.clone() if p.grad is not None else None) for name, p in model.named_parameters()}


def _prior_gradients(model, num_train):
    """The gradient of ``mars_penalty`` (the prior's share of the MARS loss), by autograd."""
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(tnn.mars_penalty(model, num_train), list(params.values()), allow_unused=True)
    return {name: (g if g is not None else torch.zeros_like(p)) for (name, p), g in zip(params.items(), grads)}


@pytest.mark.parametrize("weights, accumulate", [((1.0,), 1), ((1.0,), 3), ((0.5, -2.0), 2)],
                         ids=["one-loss", "three-accumulated", "weighted-accumulated"])
def test_optimizer_mode_step_adds_the_prior_with_the_weight_the_loss_had(weights, accumulate):
    """The law of optimizer mode: after ``backward`` every gradient is the full MARS loss's minus
    the prior's share (with whatever weight the loss had: weighted losses, accumulated backward
    calls without dividing by their number), and the step adds the prior's gradient with that
    same weight: SGD without momentum takes exactly the full loss's step."""
    x, y = torch.randn(12, 16, dtype=torch.float64), torch.randint(0, 5, (12,))
    a, b = _mixed_model(), _mixed_model()
    full, fast = MarsLoss(a, 50), MarsLoss(b, 50)
    opt = fast.optimizer(torch.optim.SGD, lr=0.25)
    parts = torch.arange(12).chunk(len(weights))
    for model, loss_fn in ((a, full), (b, fast)):
        for step in range(accumulate):  # gradient accumulation: backward calls into the same .grad
            torch.manual_seed(step)
            out = model(x)
            sum(w * loss_fn(out[i], y[i]) for w, i in zip(weights, parts)).backward()
    got, want, prior = _gradients(b), _gradients(a), _prior_gradients(b, 50)
    # (a logit vector whose draws were all clamped has no data gradient: None, i.e. zero)
    got = {name: g if g is not None else torch.zeros_like(prior[name]) for name, g in got.items()}
    weight = accumulate * sum(weights)  # the prior's total weight in what the full loss backpropagated
    for name, g in want.items():
        torch.testing.assert_close(got[name], g - weight * prior[name], rtol=1e-9, atol=1e-12, msg=name)
    assert any("logits" in name and bool(prior[name].abs().sum() > 0) for name in prior)
    before = {name: p.detach().clone() for name, p in b.named_parameters()}
    opt.step()
    for name, p in b.named_parameters():
        torch.testing.assert_close(p, before[name] - 0.25 * want[name], rtol=1e-9, atol=1e-12, msg=name)
    # the weight is read once: a step after a backward of something else adds no prior
    opt.zero_grad()
    before = {name: p.detach().clone() for name, p in b.named_parameters()}
    torch.manual_seed(0)
    nn.functional.cross_entropy(b(x), y).backward()
    data = _gradients(b)
    opt.step()
    for name, p in b.named_parameters():
        expected = before[name] if data[name] is None else before[name] - 0.25 * data[name]
        torch.testing.assert_close(p, expected, rtol=1e-9, atol=1e-12, msg=name)


def _open_model():
    """Every mask open far past the hard-concrete stretch: every training draw is exactly 1, so
    the backward gives the logits no gradient, and only the prior moves them."""
    torch.manual_seed(4)
    return nn.Sequential(TensorizedLinear(16, 12, rank=3, in_shape=(4, 4), out_shape=(3, 4), alpha=8.0),
                         nn.ReLU(), LowRankLinear(12, 5, rank=3, alpha=8.0)).double()


def test_optimizer_carrying_the_core_prior_trains_logits_whose_draws_are_all_exactly_one():
    """Open masks: the data term gives the logits no gradient, the prior in the loss still does."""
    x, y = torch.randn(16, 16, dtype=torch.float64), torch.randint(0, 5, (16,))
    in_loss, in_opt = _open_model(), _open_model()
    loss_a, loss_b = MarsLoss(in_loss, 50), MarsLoss(in_opt, 50)
    opt_a, opt_b = torch.optim.Adam(in_loss.parameters(), lr=1e-2), loss_b.optimizer(lr=1e-2)
    _train(in_loss, loss_a, opt_a, x, y, 3)
    _train(in_opt, loss_b, opt_b, x, y, 3)
    for (_, a), (_, b) in zip(tnn.mars_layers(in_loss), tnn.mars_layers(in_opt)):
        torch.testing.assert_close(a.masks.logits, b.masks.logits, rtol=1e-9, atol=1e-12)
        assert bool((b.masks.logits < 8.0 - 5e-3).all())  # moved down by the prior (Adam: about lr a step)


@pytest.mark.parametrize("unscale_first", [False, True], ids=["kernel-unscales", "unscale_-then-step"])
def test_optimizer_carrying_the_core_prior_under_a_grad_scaler_takes_the_unscaled_steps(unscale_first):
    """AMP's loss scaling: the loss's weight the step reads carries the scale, so the prior is
    scaled like the gradients whether the fused kernel unscales them or ``scaler.unscale_`` did
    first (as before gradient clipping): the steps are those of the prior in the loss."""
    x, y = torch.randn(32, 16), torch.randint(0, 5, (32,))
    in_loss, in_opt = _mixed_model().float(), _mixed_model().float()
    loss_a, loss_b = MarsLoss(in_loss, 50), MarsLoss(in_opt, 50)
    opt_a = torch.optim.SGD(in_loss.parameters(), lr=0.5, foreach=True)  # unscaled by the scaler first
    opt_b = loss_b.optimizer(torch.optim.SGD, lr=0.5)
    assert opt_b.defaults["fused"] is True  # (the kernel is handed the scale)
    for model, loss_fn, opt in ((in_loss, loss_a, opt_a), (in_opt, loss_b, opt_b)):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
        for step in range(3):
            torch.manual_seed(step)
            opt.zero_grad()
            scaler.scale(loss_fn(model(x), y)).backward()
            if unscale_first:
                scaler.unscale_(opt)
            scaler.step(opt)
            scaler.update()
    for (name, a), b in zip(in_loss.named_parameters(), in_opt.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_optimizer_carrying_the_core_prior_follows_a_closure_and_frozen_logits():
    x, y = torch.randn(16, 16, dtype=torch.float64), torch.randint(0, 5, (16,))
    in_loss, in_opt = _mixed_model(), _mixed_model()
    loss_a, loss_b = MarsLoss(in_loss, 50), MarsLoss(in_opt, 50)
    opt_a, opt_b = torch.optim.Adam(in_loss.parameters(), lr=1e-2), loss_b.optimizer(lr=1e-2)
    for model, loss_fn, opt in ((in_loss, loss_a, opt_a), (in_opt, loss_b, opt_b)):
        tnn.set_warmup(model, True)  # the logits of the first MARS layer frozen, the second's trained
        tnn.set_warmup(model[2], False)
        frozen = model[0].masks.logits.detach().clone()
        for step in range(3):
            def closure(model=model, loss_fn=loss_fn, opt=opt, step=step):
                opt.zero_grad()
                torch.manual_seed(step)
                loss = loss_fn(model(x), y)
                loss.backward()
                return loss
            opt.step(closure) if step != 1 else opt.step(closure=closure)
        assert torch.equal(model[0].masks.logits, frozen) and model[0].masks.logits.grad is None
    for (name, a), b in zip(in_loss.named_parameters(), in_opt.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)


def _fast_and_usual_steps(make, setup, steps: int = 5, features: int = 16, midway=None, closure: bool = False,
                          **options):
    """Two copies of ``make()`` trained by ``MarsLoss.optimizer(**options)``: one as it steps, one
    with the two-kernel Adam step turned off (``fused_adam_step`` returning False).
    ``midway(model, opt, step)`` runs before each step; ``closure``: the steps take a closure.
    Returns both models and which steps took the two-kernel path."""
    from tnmars.nn.optimizers import PriorGradient
    x, y = torch.randn(16, features, dtype=torch.float64), torch.randint(0, 5, (16,))
    taken = []
    original = PriorGradient.fused_adam_step

    def spy(prior, optimizer):
        result = original(prior, optimizer)
        taken.append(result)
        return result
    models = []
    for fast in (True, False):
        model = make()
        setup(model)
        loss_fn = MarsLoss(model, 50)
        opt = loss_fn.optimizer(**options)
        if fast:
            opt.mars_prior.fused_adam_step = spy.__get__(opt.mars_prior)
        else:
            opt.mars_prior.fused_adam_step = lambda optimizer: False
        x_in = x if next(model.parameters()).dtype == torch.float64 else x.float()
        for step in range(steps):
            if midway is not None:
                midway(model, opt, step)
            torch.manual_seed(step)

            def compute(model=model, loss_fn=loss_fn, opt=opt, x_in=x_in):
                opt.zero_grad()
                loss = loss_fn(model(x_in), y)
                loss.backward()
                return loss
            if closure:
                assert float(opt.step(compute)) > 0  # the closure's loss comes back
            else:
                compute()
                opt.step()
        models.append(model)
    return models[0], models[1], taken


def _freeze_first_core(model):
    model[0].cores[0].requires_grad_(False)


@pytest.mark.parametrize("make, setup, options, fast_steps", [
    (_mixed_model, lambda m: None, {"lr": 1e-2}, 4),
    (_mixed_model, lambda m: None, {"lr": 1e-2, "weight_decay": 1e-3}, 4),   # the user's decay too
    (_open_model, lambda m: None, {"lr": 1e-2}, 4),   # logits whose gradient is the push alone
    (_mixed_model, lambda m: tnn.set_warmup(m, True), {"lr": 1e-2}, 4),   # frozen logits: no update
    (_mixed_model, _freeze_first_core, {"lr": 1e-2}, 4),   # a frozen core without a gradient: skipped
    (lambda: _mixed_model().float(), lambda m: None, {"lr": 1e-2}, 4),
    (lambda: (torch.manual_seed(5), _TwoBranches().double())[1], lambda m: None, {"lr": 1e-2, "features": 12}, 0),  # cores without a gradient
    (_mixed_model, lambda m: None, {"lr": 1e-2, "amsgrad": True}, 0),
    (_mixed_model, lambda m: None, {"lr": 1e-2, "fused": False}, 0),
], ids=["default", "user-weight-decay", "open-masks", "warm-up", "frozen-core", "float32", "unused-layer",
        "amsgrad", "not-fused"])
def test_the_two_kernel_adam_step_takes_the_steps_of_the_usual_path(make, setup, options, fast_steps):
    """``MarsAdam`` (fused, CPU) folds the cores' decay into a kernel's ``weight_decay`` and calls
    the two kernels itself (``PriorGradient.fused_adam_step``): the same updates as the decay
    added to the gradients and ``Adam.step``, in the usual setup from its second step on (the
    first makes Adam's state), and the usual path wherever it does not apply."""
    fast, usual, taken = _fast_and_usual_steps(make, setup, **options)
    assert sum(taken) == fast_steps
    for (name, a), b in zip(fast.named_parameters(), usual.parameters()):
        tolerance = {"rtol": 1e-5, "atol": 1e-7} if a.dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-13}
        torch.testing.assert_close(a, b, msg=name, **tolerance)


def _clear_state_at_step_2(model, opt, step):
    if step == 2:
        opt.state.clear()  # (Adam's state made again: from that step on as a fresh optimizer)


def _unfreeze_unused_cores_at_step_2(model, opt, step):
    if step == 2:
        for core in model.unused.cores:
            core.requires_grad_(True)


def _frozen_unused_cores():
    torch.manual_seed(5)
    model = _TwoBranches().double()
    for core in model.unused.cores:
        core.requires_grad_(False)
    return model


def _tied_cores():
    """Two MARS layers sharing a core: the prior counts it once per layer."""
    torch.manual_seed(6)
    first, second = LowRankLinear(16, 16, rank=4, alpha=1.0), LowRankLinear(16, 5, rank=4, alpha=1.0)
    second.cores[0] = first.cores[0]
    return nn.Sequential(first, nn.ReLU(), second).double()


@pytest.mark.parametrize("make, midway, closure, pattern", [
    (_mixed_model, _clear_state_at_step_2, False, [False, True, False, True, True]),
    (_frozen_unused_cores, _unfreeze_unused_cores_at_step_2, False, [False, True, False, False, False]),
    (_tied_cores, None, False, [False] * 5),
    (_mixed_model, None, True, [False, True, True, True, True]),
], ids=["state-cleared", "unused-core-unfrozen", "tied-cores", "closure"])
def test_the_two_kernel_adam_step_follows_changes_between_steps(make, midway, closure, pattern):
    """Found by review of the first version, which kept its parameter lists and Adam's state
    between steps: after ``opt.state.clear()`` it went on updating the old moment tensors (0.03
    off), and an unused core frozen from the start, then unfrozen, was never decayed; a core
    shared by two layers was decayed once where the prior counts it twice. Each step now reads
    the state, and what it cannot do exactly takes the usual path. A closure (as PyTorch
    Lightning passes one) is called first, and the step then takes two kernels as without one."""
    features = 12 if make is _frozen_unused_cores else 16
    fast, usual, taken = _fast_and_usual_steps(make, lambda m: None, features=features, midway=midway,
                                               closure=closure, lr=1e-2)
    assert taken == pattern
    for (name, a), b in zip(fast.named_parameters(), usual.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13, msg=name)


def _mars_optimizer(model, fast: bool):
    """``MarsLoss(model, 50)`` and its optimizer, with the two-kernel step turned off unless ``fast``."""
    loss_fn = MarsLoss(model, 50)
    opt = loss_fn.optimizer(lr=1e-2)
    if not fast:
        opt.mars_prior.fused_adam_step = lambda optimizer: False
    return loss_fn, opt


def test_after_a_two_kernel_step_the_cores_gradients_hold_the_data_term_alone():
    """The fused kernel applies the cores' decay without writing it into ``.grad`` (as PyTorch's
    own ``weight_decay``); the usual path leaves it there. Documented in ``fused_adam_step``."""
    grads = {}
    for fast in (True, False):
        model = _mixed_model()
        loss_fn, opt = _mars_optimizer(model, fast)
        x, y = torch.randn(8, 16, dtype=torch.float64), torch.randint(0, 5, (8,))
        for step in range(2):
            torch.manual_seed(step)
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            data = [c.grad.clone() for c in model[0].cores]
            before = [c.detach().clone() for c in model[0].cores]
            opt.step()
        grads[fast] = (data, [c.grad for c in model[0].cores], before, opt.mars_prior.decay)
    data, after, _, _ = grads[True]
    for d, a in zip(data, after):
        assert torch.equal(d, a)
    data, after, before, decay = grads[False]
    for d, a, c in zip(data, after, before):
        torch.testing.assert_close(a, d + decay * c, rtol=1e-12, atol=1e-15)


def test_the_two_kernel_adam_step_takes_in_logits_unfrozen_after_the_warm_up():
    """Logits frozen from the start have no Adam state; once the warm-up ends the push gives them
    a gradient: that step takes the usual path (which makes their state), the next ones the two
    kernels again, with the logits in them."""
    from tnmars.nn.optimizers import PriorGradient
    x, y = torch.randn(16, 16, dtype=torch.float64), torch.randint(0, 5, (16,))
    taken, original = [], PriorGradient.fused_adam_step
    models = []
    for fast in (True, False):
        model = _mixed_model()
        tnn.set_warmup(model, True)
        loss_fn = MarsLoss(model, 50)
        opt = loss_fn.optimizer(lr=1e-2)
        if fast:
            opt.mars_prior.fused_adam_step = lambda optimizer, prior=opt.mars_prior: taken.append(
                original(prior, optimizer)) or taken[-1]
        else:
            opt.mars_prior.fused_adam_step = lambda optimizer: False
        for step in range(6):
            if step == 3:
                tnn.set_warmup(model, False)
            torch.manual_seed(step)
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        models.append(model)
    assert taken == [False, True, True, False, True, True]
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13, msg=name)
    assert not torch.equal(models[0][0].masks.logits, _mixed_model()[0].masks.logits)  # trained after the warm-up


def test_the_two_kernel_adam_step_follows_the_lr_schedule_and_a_loaded_state():
    """An LR scheduler changes ``group["lr"]`` between steps, and ``load_state_dict`` replaces
    Adam's state tensors: the two-kernel step reads both at every step."""
    x, y = torch.randn(16, 16, dtype=torch.float64), torch.randint(0, 5, (16,))
    runs = []
    for fast in (True, False):
        model = _mixed_model()
        loss_fn, opt = _mars_optimizer(model, fast)
        schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        for step in range(4):
            torch.manual_seed(step)
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
            schedule.step()
            if step == 1:
                opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        runs.append(model)
    for (name, a), b in zip(runs[0].named_parameters(), runs[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13, msg=name)


def test_optimizer_carrying_the_core_prior_pickles_with_its_loss():
    model = _mixed_model()
    loss_fn = MarsLoss(model, 50)
    opt = loss_fn.optimizer(lr=1e-2)
    model2, loss2, opt2 = pickle.loads(pickle.dumps((model, loss_fn, opt)))
    x, y = torch.randn(8, 16, dtype=torch.float64), torch.randint(0, 5, (8,))
    _train(model, loss_fn, opt, x, y, 1)
    _train(model2, loss2, opt2, x, y, 1)
    for a, b in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_eval_in_warm_up_does_not_warn_of_closed_masks_it_does_not_apply():
    """Outside probe: every ``eval()`` of a preset layer in warm-up warned "MARS closed every index
    ... kept at rank 1" while the layer ran at full rank (the masks are not applied in warm-up,
    in eval either) at 97% accuracy. When the warm-up ends, the warning is back."""
    from tnmars.nn import TTRecurrentMatrix
    for layer in (TensorizedLinear(16, 12, rank=4, in_shape=(4, 4), out_shape=(3, 4), mars="soft"),
                  TTRecurrentMatrix(16, 4, alpha=-3.0)):
        model = nn.Sequential(layer)
        tnn.set_warmup(model, True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.eval()
            model.train()
        tnn.set_warmup(model, False)
        with pytest.warns(RuntimeWarning, match="closed every index"):
            model.eval()
        assert not model.training and not layer.masks.training


def test_ending_a_warm_up_with_every_mask_closed_says_what_the_draws_will_keep():
    """Outside probe: the guide's preset recipe (warm-up, then the masks from their closed start)
    took a 3-layer MLP on digits from 97% at the end of its warm-up to chance (13%), and the
    guide's own 2-layer example from 97% to 40%, with no word when the cut happened. Ending the
    warm-up of layers whose every mask is closed warns, with the share of indices a draw keeps;
    open masks (the default) or a layer not in warm-up say nothing."""
    model = nn.Sequential(TensorizedLinear(16, 12, rank=4, in_shape=(4, 4), out_shape=(3, 4), mars="soft"), nn.ReLU(),
                          LowRankLinear(12, 5, rank=3, mars="hard"))
    tnn.set_warmup(model, True)
    with pytest.warns(RuntimeWarning, match=r"every mask of '0', '2' closed .* keeps about (1[0-9]|2[0-9])%-.* of their "
                                            r"indices .*tnn.set_alpha\(model, 6\)") as caught:
        tnn.set_warmup(model, False)
    assert len([w for w in caught if "set_warmup" in str(w.message)]) == 1
    share = model[0].masks.kept_share()  # sigmoid(-1.5 + 0.24) at T = 0.1
    assert share == pytest.approx(1 / (1 + math.exp(1.5 - 0.2398)), abs=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tnn.set_warmup(model, False)  # not in warm-up: nothing ends
        opened = nn.Sequential(TensorizedLinear(16, 12, rank=4, in_shape=(4, 4), out_shape=(3, 4)))
        tnn.set_warmup(opened, True)
        tnn.set_warmup(opened, False)


def test_summary_says_when_every_bond_of_every_layer_is_closed():
    """Outside probe: a collapsed training (every bond at rank 1*) led its summary with 64.9x."""
    model = nn.Sequential(TensorizedLinear(16, 12, rank=4, in_shape=(4, 4), out_shape=(3, 4), alpha=-3.0),
                          LowRankLinear(12, 5, rank=3, alpha=-3.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = str(tnn.summary(model))
    assert "**Every bond of every MARS layer is closed**" in text
    with torch.no_grad():
        model[1].masks.logits[0] = 3.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert "Every bond of every" not in str(tnn.summary(model))


def test_summary_says_when_no_index_is_near_closing_yet():
    """A probe (2026-12-04): an MLP of two default layers trained 60 epochs on sklearn's digits
    at lr=3e-3 kept every rank (its smallest logit at 3.3, from 6) and its summary read as a
    selection ("4.5x", the start's): nothing said that MARS had not selected anything yet."""
    model = nn.Sequential(TensorizedLinear(16, 12, rank=4, in_shape=(4, 4), out_shape=(3, 4)),
                          LowRankLinear(12, 5, rank=3))
    found = tnn.summary(model)
    assert "No index is near closing yet" in str(found)
    assert all(5.9 < r.smallest_logit < 6.1 for r in found.layers)  # (the default start, alpha=6)
    with torch.no_grad():
        model[1].masks.logits[0] = 1.0  # (moving towards closing: a selection under way, not said)
    assert "No index is near closing" not in str(tnn.summary(model))
    assert "No index is near closing" not in str(tnn.summary(nn.Sequential(LowRankLinear(12, 5, rank=3, mars=False))))
    warming = LowRankLinear(12, 5, rank=3)
    warming.warmup = True  # (frozen logits: training longer would not move them; found by review)
    assert "No index is near closing" not in str(tnn.summary(nn.Sequential(warming)))


def test_compress_warns_about_a_layer_in_warm_up_whose_masks_close_indices():
    """In warm-up a layer computes its full-rank function; compressing it keeps only the MAP
    indices, another function: a warning naming the layer (and from summary, whose ranks are
    those compress would keep), none when nothing closes."""
    layer = TensorizedLinear(16, 12, rank=4, in_shape=(4, 4), out_shape=(3, 4))
    model = nn.Sequential(layer, nn.ReLU())
    tnn.set_warmup(model, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tnn.compress(model.eval())  # every mask open: the same function
    with torch.no_grad():
        layer.masks.logits.copy_(torch.tensor([2.0, -2.0, 2.0, -2.0]))
    with pytest.warns(RuntimeWarning, match=r"compress: '0' \(ranks \{'A': 2\}\) in warm-up"):
        small = tnn.compress(model.eval())
    with pytest.warns(RuntimeWarning, match=r"layers \['0'\] are in warm-up"):
        assert tnn.summary(model).layers[0].selected_ranks == {"A": 2}
    x = torch.randn(3, 16)
    assert not torch.allclose(small(x), model(x))  # what the warning is about
    tnn.set_warmup(model, False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small = tnn.compress(model.eval())
    torch.testing.assert_close(small(x), model(x))


def test_optimizer_mode_follows_a_new_num_train():
    """``loss_fn.num_train`` set after ``loss_fn.optimizer()``: the step's prior uses the new N,
    as the prior in the loss does; a bad value is refused."""
    x, y = torch.randn(16, 16, dtype=torch.float64), torch.randint(0, 5, (16,))
    in_loss, in_opt = _mixed_model(), _mixed_model()
    loss_a, loss_b = MarsLoss(in_loss, 50), MarsLoss(in_opt, 50)
    opt_a = torch.optim.SGD(in_loss.parameters(), lr=0.5)
    opt_b = loss_b.optimizer(torch.optim.SGD, lr=0.5)
    _train(in_loss, loss_a, opt_a, x, y, 1)
    _train(in_opt, loss_b, opt_b, x, y, 1)
    loss_a.num_train = loss_b.num_train = 5
    assert loss_b.num_train == 5 and opt_b.mars_prior.num_train == 5
    _train(in_loss, loss_a, opt_a, x, y, 2)
    _train(in_opt, loss_b, opt_b, x, y, 2)
    for (name, a), b in zip(in_loss.named_parameters(), in_opt.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)
    with pytest.raises(ValueError, match="num_train"):
        loss_b.num_train = 0
    assert opt_b.mars_prior.num_train == 5
    opt_b.mars_prior.num_train = 20  # set on the prior itself: the cores' decay follows
    assert opt_b.mars_prior.decay == pytest.approx(1.0 / (100.0 * 20))


def test_optimizer_mode_resumes_from_the_state_dict_of_the_plain_optimizer():
    """A model trained with the prior in the loss and Adam over ``model.parameters()`` resumes
    under ``loss_fn.optimizer()`` from Adam's state dict (its group is those parameters plus the
    probe, which has no state): the same steps as going on with the plain setup. A state dict
    that fits neither raises, saying what the group holds."""
    import copy
    x, y = torch.randn(32, 16, dtype=torch.float64), torch.randint(0, 5, (32,))
    model = _mixed_model()
    loss_a = MarsLoss(model, 50)
    opt_a = torch.optim.Adam(model.parameters(), lr=1e-2)  # PyTorch's default implementation
    _train(model, loss_a, opt_a, x, y, 3)
    resumed = copy.deepcopy(model)
    loss_b = MarsLoss(resumed, 50)
    opt_b = loss_b.optimizer(lr=1e-2)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    assert len(opt_b.state) == len(list(model.parameters()))  # every moment estimate came across
    assert opt_b.param_groups[0]["fused"] is True  # its own implementation stays (the plain one's was None)
    _train(model, loss_a, opt_a, x, y, 3)
    _train(resumed, loss_b, opt_b, x, y, 3)
    for (name, a), b in zip(model.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)
    opt_b.load_state_dict(opt_b.state_dict())  # its own
    smaller = torch.optim.Adam(list(model.parameters())[1:], lr=1e-2).state_dict()
    with pytest.raises(ValueError, match=r"model.parameters\(\) order, then the prior's probe"):
        opt_b.load_state_dict(smaller)


def test_the_plain_optimizer_resumes_from_the_mars_optimizers_plain_state_dict():
    """Outside probe (an item of a closing note): the plain optimizer over ``model.parameters()``
    refused the state dict of ``loss_fn.optimizer()`` (one parameter more: the probe), so a run
    could not go on with the prior in the loss. ``plain_state_dict()`` leaves the probe out: the
    plain optimizer with the prior in the loss then takes the steps the MARS optimizer would."""
    import copy
    x, y = torch.randn(32, 16, dtype=torch.float64), torch.randint(0, 5, (32,))
    model = _mixed_model()
    loss_a = MarsLoss(model, 50)
    opt_a = loss_a.optimizer(lr=1e-2)
    _train(model, loss_a, opt_a, x, y, 3)
    resumed = copy.deepcopy(model)
    plain = torch.optim.Adam(resumed.parameters(), lr=1e-2)
    with pytest.raises(ValueError):  # (PyTorch: the group sizes differ)
        plain.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    plain.load_state_dict(copy.deepcopy(opt_a.plain_state_dict()))
    assert len(plain.state) == len(list(model.parameters()))
    _train(model, loss_a, opt_a, x, y, 3)
    _train(resumed, MarsLoss(resumed, 50), plain, x, y, 3)
    for (name, a), b in zip(model.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)
    # a group added later keeps its parameters' state under the plain numbering
    extra = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt_a.add_param_group({"params": [extra]})
    extra.grad = torch.ones(3, dtype=torch.float64)
    opt_a.step()
    plain_dict = opt_a.plain_state_dict()
    n = len(list(model.parameters()))
    assert plain_dict["param_groups"][0]["params"] == list(range(n)) and plain_dict["param_groups"][1]["params"] == [n]
    assert torch.equal(plain_dict["state"][n]["exp_avg"], opt_a.state[extra]["exp_avg"])
    torch.optim.Adam([{"params": list(model.parameters())}, {"params": [extra]}], lr=1e-2).load_state_dict(plain_dict)
    # and back: a MARS optimizer with that group added loads the plain state dict of two groups (an
    # outside probe found it refused, saying the optimizer "has one group")
    twin = copy.deepcopy(model)
    twin_opt = MarsLoss(twin, 50).optimizer(lr=1e-2)
    twin_extra = nn.Parameter(torch.ones(3, dtype=torch.float64))
    twin_opt.add_param_group({"params": [twin_extra]})
    twin_opt.load_state_dict(copy.deepcopy(plain_dict))
    assert len(twin_opt.state) == n + 1
    for a, b in zip([*model.parameters(), extra], [*twin.parameters(), twin_extra]):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt_a.state[a][key], twin_opt.state[b][key]), key
    assert twin_opt.param_groups[0]["params"][-1] is twin_opt.mars_prior.probe
    with pytest.raises(ValueError, match="it has 2 groups now"):  # a state dict that fits neither numbering
        twin_opt.load_state_dict({**plain_dict, "param_groups": plain_dict["param_groups"][:1]})


def test_optimizer_mode_probe_moves_only_for_a_device_change():
    """When ``loss + probe`` fails, the probe follows the loss's device only if that differs
    (the model moved after ``loss_fn.optimizer()``: ``tests/test_gpu.py`` checks CUDA to CPU);
    any other error of the addition propagates unchanged."""
    loss_fn = MarsLoss(_mixed_model(), 50)
    loss_fn.optimizer(lr=1e-2)
    error = RuntimeError("some other failure")
    with pytest.raises(RuntimeError, match="some other failure"):
        loss_fn._probe_followed(torch.zeros((), dtype=torch.float64), error)


def test_optimizer_carrying_the_core_prior_refuses_what_would_lose_or_double_it():
    model = _mixed_model()
    x, y = torch.randn(8, 16, dtype=torch.float64), torch.randint(0, 5, (8,))
    with pytest.raises(TypeError, match="LBFGS.*keep the prior in the loss"):
        MarsLoss(model, 50).optimizer(torch.optim.LBFGS, lr=1e-3)
    with pytest.raises(ValueError, match="params="):
        MarsLoss(model, 50).optimizer(lr=1e-3, params=model.parameters())
    loss_fn = MarsLoss(model, 50)
    loss_fn.optimizer(lr=1e-3)
    with pytest.raises(RuntimeError, match="already"):
        loss_fn.optimizer(lr=1e-3)
    model[2].masks = None  # a layer's masks switched off: its cores would keep a decay it no longer has
    with pytest.raises(RuntimeError, match="changed since"):
        loss_fn(model(x), y)
    model = _mixed_model()
    loss_fn = MarsLoss(model, 50)
    loss_fn.optimizer(lr=1e-3)
    loss_fn(model(x), y)
    model[0].cores[1] = nn.Parameter(model[0].cores[1].detach().clone())  # a core replaced: the optimizer has the old
    with pytest.raises(RuntimeError, match="changed since"):
        loss_fn(model(x), y)


def test_optimizer_carrying_the_core_prior_on_a_model_without_masks_trains_everything_plainly():
    torch.manual_seed(0)
    model = nn.Sequential(TensorizedLinear(16, 12, rank=3, in_shape=(4, 4), out_shape=(3, 4), mars=False),
                          nn.Linear(12, 5))
    loss_fn = MarsLoss(model, 50)
    opt = loss_fn.optimizer(lr=1e-2)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0]  # no MARS cores: no prior to carry
    assert len(opt.param_groups[0]["params"]) == len(list(model.parameters())) + 1  # and the loss's weight probe
    x, y = torch.randn(8, 16), torch.randint(0, 5, (8,))
    torch.testing.assert_close(loss_fn(model(x), y), nn.functional.cross_entropy(model(x), y))


def test_optimizer_uses_the_fused_kernel_unless_the_user_chose_an_implementation_or_it_has_none():
    # the fused kernel updates a parameter group in one call: the MARS step's extra parameters
    # (a logit vector per layer) and the core prior's decay then cost almost nothing
    for cls in (torch.optim.Adam, torch.optim.SGD, torch.optim.Adagrad):
        opt = MarsLoss(_mixed_model(), 50).optimizer(cls, lr=1e-2)
        assert opt.defaults["fused"] is True, cls
    assert MarsLoss(_mixed_model(), 50).optimizer(lr=1e-2, foreach=True).defaults["fused"] is None
    assert MarsLoss(_mixed_model(), 50).optimizer(lr=1e-2, fused=False).defaults["fused"] is False
    assert MarsLoss(_mixed_model(), 50).optimizer(lr=1e-2, differentiable=True).defaults["fused"] is None
    assert "fused" not in MarsLoss(_mixed_model(), 50).optimizer(torch.optim.RMSprop, lr=1e-2).defaults
    # a parameter the fused kernel cannot take (complex): the optimizer would fail at its first
    # step, so the default stays the per-parameter loop, and the step works
    model = nn.ModuleDict({"net": _mixed_model(), "phase": nn.Linear(5, 5, dtype=torch.complex128)})
    opt = MarsLoss(model, 50).optimizer(lr=1e-2)
    assert opt.defaults["fused"] is None
    model["net"](torch.randn(4, 16, dtype=torch.float64)).sum().backward()
    model["phase"].weight.grad = torch.ones_like(model["phase"].weight)
    before = model["phase"].weight.detach().clone()
    opt.step()
    assert not torch.equal(model["phase"].weight, before)


class _Tied(nn.Module):
    """One tensorized layer used twice (weight tying)."""

    def __init__(self) -> None:
        super().__init__()
        shared = tnn.TensorizedLinear(64, 64, rank=4, alpha=0.5)
        self.a, self.b = shared, shared
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.b(torch.relu(self.a(x))))


def test_load_compressed_into_the_wrong_template_says_which_layer_and_what_to_build():
    """Found by an outside probe: a template at smaller ranks raised "rank 10 for bond 'A' is
    outside [0, 6]" without naming the layer, and a dense template torch's bare missing and
    unexpected keys."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    state = compress(tnn.tensorize(model, rank=10)).state_dict()
    with pytest.raises(ValueError, match=r"load_compressed: '0': .* saved ranks .* larger than this layer's"):
        tnn.load_compressed(tnn.tensorize(model, rank=6), state)
    with pytest.raises(RuntimeError, match=r"tensorized layers where the model has dense ones \(0, 2\)"):
        tnn.load_compressed(model, state)
    loaded = tnn.load_compressed(tnn.tensorize(model, rank=10), state)
    assert loaded[0].max_ranks == compress(tnn.tensorize(model, rank=10))[0].max_ranks


def test_compress_and_load_compressed_keep_a_shared_layer_shared():
    torch.manual_seed(0)
    model = _Tied().eval()
    with torch.no_grad():
        model.a.masks.logits[:3] = -2.0  # close a few indices so that compression changes the shapes
    small = tnn.compress(model)
    assert small.a is small.b
    x = torch.randn(5, 64)
    assert torch.allclose(small(x), model(x), atol=1e-6)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    assert [row.name for row in tnn.summary(small).layers] == ["a"]
    loaded = tnn.load_compressed(_Tied(), small.state_dict()).eval()
    assert loaded.a is loaded.b
    assert torch.allclose(loaded(x), small(x), atol=1e-6)


def test_a_second_loss_that_would_count_the_core_prior_twice_warns_once():
    model = _mixed_model()
    x, y = torch.randn(8, 16, dtype=torch.float64), torch.randint(0, 5, (8,))
    first = MarsLoss(model, 50)
    first.optimizer(lr=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first(model(x), y)  # the optimizer's own loss: the core term is left out
        with torch.no_grad():
            MarsLoss(model, 50)(model(x), y)  # a full-prior value for logging: fine
    second = MarsLoss(model, 50)
    with pytest.warns(RuntimeWarning, match="counts it twice"):
        second(model(x), y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second(model(x), y)  # once


def test_mars_tools_given_a_model_without_tensorized_layers_say_so():
    """The dense model passed by mistake (``tensorize`` returns a copy): MarsLoss would train it
    as a plain model and the temperature schedule would set nothing, without a word."""
    dense = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.warns(UserWarning, match="MarsLoss: the model has no tensorized layer.*selects no rank"):
        MarsLoss(dense, 50)
    with pytest.warns(UserWarning, match="MarsTemperature: the model has no tensorized layer.*nothing to set"):
        tnn.MarsTemperature(dense)
    small = tnn.tensorize(dense, rank="full")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MarsLoss(small, 50)
        tnn.MarsTemperature(small)
    fixed = nn.Sequential(TensorizedLinear(16, 8, rank=2, in_shape=(4, 4), out_shape=(2, 4), mars=False))
    with pytest.warns(UserWarning, match="MarsLoss: no layer of the model has MARS masks now"):
        MarsLoss(fixed, 50)  # a tensorized layer without masks: no prior at all (mars_penalty is 0)
    assert float(tnn.mars_penalty(fixed, 50)) == 0.0


def test_setters_warn_on_a_model_with_nothing_to_set_and_reach_the_recurrent_tt_matrix():
    """On the dense model (``tensorize`` returns a copy) the setters changed nothing silently;
    ``set_alpha`` and ``set_warmup`` skipped the TT recurrent matrix that ``set_pi`` reached."""
    for setter, value in ((tnn.set_alpha, 2.0), (tnn.set_pi, 0.1), (tnn.set_temperature, 0.5),
                          (tnn.set_warmup, True)):
        with pytest.warns(UserWarning, match=f"{setter.__name__}: the model has no tensorized layer"):
            setter(nn.Sequential(nn.Linear(3, 3)), value)
    # tensorized layers without masks: nothing is set either (masks switched on later get their own
    # temperature), which is said too
    with pytest.warns(UserWarning, match="set_temperature: no layer of the model has MARS masks now"):
        tnn.set_temperature(nn.Sequential(TensorizedLinear(16, 12, rank=3, mars=False)), 0.5)
    rnn = tnn.TanhRNN(3, 64, lam=0.9, recurrent="tt")
    tnn.set_alpha(rnn, 5.0)
    assert abs(float(rnn.weight_tt.masks.logits.detach().mean()) - 5.0) < 0.01
    tnn.set_warmup(rnn, True)
    assert rnn.weight_tt.current_masks() is None and not rnn.weight_tt.masks.logits.requires_grad
    tnn.set_warmup(rnn, False)
    assert rnn.weight_tt.current_masks() is not None and rnn.weight_tt.masks.logits.requires_grad


def test_a_loss_class_or_a_checkpoint_path_is_refused_with_what_to_pass():
    model = _mixed_model()
    with pytest.raises(TypeError, match=r"such as CrossEntropyLoss\(\); got the class"):
        MarsLoss(model, 50, nn.CrossEntropyLoss)
    with pytest.raises(TypeError, match=r"torch.load\(path\)"):
        tnn.load_compressed(model, "model.pt")


def test_temperature_schedules_refuse_what_they_would_silently_bend():
    """``start < end`` raised the temperature, ``paper_decay(30, 0.01, 0.1)`` returned 10,
    ``end=0`` was a math domain error, ``steps=2.7`` ran 2 steps, ``load_state_dict({})`` a KeyError."""
    model = nn.Sequential(TensorizedLinear(16, 12, rank=3, in_shape=(4, 4), out_shape=(3, 4)))
    with pytest.raises(ValueError, match="anneals from start down to end"):
        MarsTemperature(model, 0.01, 0.1)
    with pytest.raises(ValueError, match="anneals from start down to end"):
        MarsTemperature.paper_decay(30, 0.01, 0.1)
    with pytest.raises(ValueError, match="positive"):
        MarsTemperature.paper_decay(30, 0.1, 0)
    with pytest.raises(TypeError, match="steps must be an integer"):
        MarsTemperature(model, steps=2.7)
    with pytest.raises(ValueError, match=r"lacks \['count', 'temperature'\]"):
        MarsTemperature(model).load_state_dict({})
    assert MarsTemperature.paper_decay(30, 0.1, 0.1) == 1.0  # a constant temperature


def test_optimizer_carrying_the_prior_leaves_a_core_frozen_after_it_was_built_alone():
    """A core frozen after ``optimizer()`` gets no gradient from the backward: the step must not
    give it the prior's decay as a gradient (the update would then move a frozen parameter);
    the other cores, still trained, get it."""
    model = _mixed_model()
    loss_fn = MarsLoss(model, 50)
    opt = loss_fn.optimizer(torch.optim.SGD, lr=0.5)
    frozen = model[0].cores[0]
    frozen.requires_grad_(False)
    before, other = frozen.detach().clone(), model[0].cores[1].detach().clone()
    x, y = torch.randn(8, 16, dtype=torch.float64), torch.randint(0, 5, (8,))
    loss_fn(model(x), y).backward()
    opt.step()
    assert frozen.grad is None and torch.equal(frozen, before)
    assert not torch.equal(model[0].cores[1], other)


def test_prior_gradient_with_a_device_weight_adds_what_the_host_weight_adds():
    """On a GPU the loss's weight stays a tensor (no synchronisation): that path, run here on
    CPU tensors, adds the same gradients as the host path, with and without existing grads."""
    results = []
    for as_tensor in (False, True):
        model = _mixed_model()
        loss_fn = MarsLoss(model, 50)
        opt = loss_fn.optimizer(lr=1e-3)
        torch.manual_seed(0)
        loss_fn(model(torch.randn(8, 16, dtype=torch.float64)), torch.randint(0, 5, (8,))).backward()
        model[2].masks.logits.grad = None  # one logit vector without a data gradient, one with
        w = 2.5
        with torch.no_grad():
            opt.mars_prior._add(torch.tensor(w, dtype=torch.float64) if as_tensor else w)
        results.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert results[0].keys() == results[1].keys() and any("logits" in k for k in results[0])
    for name in results[0]:
        torch.testing.assert_close(results[1][name], results[0][name], rtol=1e-12, atol=0, msg=name)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.one_of(st.floats(-1e4, 1e4), st.sampled_from([math.inf, -math.inf, 0.0, 36.0, -745.0])),
                       min_size=1, max_size=12),
       pi=st.floats(1e-6, 0.5), dtype=st.sampled_from([torch.float64, torch.float32, torch.bfloat16]),
       with_grad=st.booleans())
def test_the_logits_push_computed_on_the_host_is_the_prior_gradient(values, pi, dtype, with_grad):
    """On CPU tensors the step computes the logits' prior gradient ``-(1/N) log(pi/(1-pi)) s(1-s)``
    in Python floats; it is that formula (in float64, then rounded to the logits' dtype), with
    no overflow at either end and no cancellation in ``1 - s``, added to an existing gradient or
    set as the gradient."""
    from tnmars.nn.masks import BondMasks
    from tnmars.nn.optimizers import PriorGradient
    masks = BondMasks({"A": len(values)}, pi=pi)
    logits = masks.logits
    with torch.no_grad():
        logits.data = torch.tensor(values, dtype=torch.float64).to(dtype)
    before = torch.linspace(-1, 1, len(values), dtype=torch.float64).to(dtype) if with_grad else None
    logits.grad = None if before is None else before.clone()
    PriorGradient._push_on_host([logits], [masks], 2.0 / 7.0)
    e = torch.exp(-torch.tensor(values, dtype=torch.float64).to(dtype).double().abs())
    want = (2.0 / 7.0) * (math.log1p(-pi) - math.log(pi)) * e / (1 + e) ** 2  # s (1 - s) without 1 - s's cancellation
    assert logits.grad.dtype == dtype and logits.grad.shape == logits.shape and torch.isfinite(logits.grad).all()
    eps = torch.finfo(dtype).eps
    atol = 4 * eps * float(want.abs().max()) + 1e-300
    if before is not None:
        want = want.to(dtype).double() + before.double()
    torch.testing.assert_close(logits.grad.double(), want.to(dtype).double(), rtol=4 * eps, atol=atol)


def test_both_ways_of_computing_the_logits_push_agree_at_saturated_logits():
    """Up to 1,024 logits the push is computed in Python floats, above that by torch's foreach
    ops; both without cancellation in ``1 - s`` (float32 logits past about 16.6 saturate
    ``sigmoid``; ``s - s * s`` gave 0 there), so a model's size does not change its steps."""
    from tnmars.nn.masks import BondMasks
    from tnmars.nn.optimizers import PriorGradient
    values = [5.0, 10.0, 15.0, 16.0, 17.0, 20.0, 40.0, 80.0, -30.0]
    grads = []
    for on_host in (True, False):
        masks = BondMasks({"A": len(values)}, pi=0.01)
        with torch.no_grad():
            masks.logits.copy_(torch.tensor(values))
        prior = PriorGradient([], [masks], 50, 100.0, torch.zeros(()))
        prior.push_on_host = on_host
        prior._add(1.0)
        grads.append(masks.logits.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=0)
    assert (grads[0] != 0).all()


class _Gate(nn.Module):
    """A custom MARS module: masks and its own ``log_prior()``, no cores (its prior stays in the loss)."""

    def __init__(self) -> None:
        super().__init__()
        self.masks = None
        self.scale = nn.Parameter(torch.ones(6, dtype=torch.float64))

    def log_prior(self) -> torch.Tensor:
        return self.masks.log_prior()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def test_optimizer_mode_loss_follows_a_module_without_cores_switched_on_and_off():
    """Found by review: the loss's per-step identity key, re-made after the full check, kept the
    modules of build time (a module switched on later lost its prior after one call; switched
    off, the loss raised)."""
    from tnmars.nn.masks import BondMasks

    torch.manual_seed(3)
    model = nn.Sequential(TensorizedLinear(16, 6, rank=3, in_shape=(4, 4), out_shape=(2, 3), alpha=1.0), _Gate(),
                          nn.Linear(6, 5)).double()
    x, y = torch.randn(8, 16, dtype=torch.float64), torch.randint(0, 5, (8,))
    loss_fn = MarsLoss(model, 50)
    loss_fn.optimizer(lr=1e-3)
    model.eval()
    model[1].masks = BondMasks({"a": 6}, pi=0.01, alpha=1.0).double()
    with torch.no_grad():
        out = model(x)
        ce = float(nn.functional.cross_entropy(out, y))
        expected = float(-model[1].log_prior() / 50)
        assert expected != 0
        for _ in range(3):
            assert float(loss_fn(out, y)) - ce == pytest.approx(expected, rel=1e-9)
        model[1].masks = None
        for _ in range(3):
            assert float(loss_fn(out, y)) == pytest.approx(ce, rel=1e-12)


def test_optimizer_mode_follows_cores_frozen_or_unfrozen_after_it_was_built():
    """Found by review: a core frozen later moved under ``zero_grad(set_to_none=False)`` (its zero
    gradient got the decay); a core frozen when the optimizer was built never got the decay
    after being unfrozen. Both now match the prior in the loss."""
    x, y = torch.randn(8, 16, dtype=torch.float64), torch.randint(0, 5, (8,))
    for freeze_first in (False, True):
        models = [_mixed_model(), _mixed_model()]
        if freeze_first:
            for m in models:
                m[0].cores[0].requires_grad_(False)
        opt_a = torch.optim.SGD(models[0].parameters(), lr=0.5)
        loss_a = MarsLoss(models[0], 50)
        loss_b = MarsLoss(models[1], 50)
        opt_b = loss_b.optimizer(torch.optim.SGD, lr=0.5)
        for m in models:
            m[0].cores[0].requires_grad_(freeze_first)  # unfrozen if it was frozen, frozen if not
        for step in range(2):
            for model, loss_fn, opt in ((models[0], loss_a, opt_a), (models[1], loss_b, opt_b)):
                torch.manual_seed(step)
                opt.zero_grad(set_to_none=False)
                loss_fn(model(x), y).backward()
                opt.step()
        for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=f"{name} (frozen first: {freeze_first})")


def test_optimizer_mode_probe_is_float32_at_least_and_float64_for_a_float64_model():
    """Found by review: the loss's weight scalar took the first parameter's dtype; a float16 one
    overflowed under GradScaler (its gradient is the scale)."""
    model = _mixed_model()
    assert MarsLoss(model, 50).optimizer(lr=1e-3).mars_prior.probe.dtype == torch.float64
    model = nn.Sequential(nn.Linear(16, 16).half().requires_grad_(False), _mixed_model().float())
    assert MarsLoss(model, 50).optimizer(lr=1e-3).mars_prior.probe.dtype == torch.float32


def test_training_with_the_masks_in_eval_mode_warns_once():
    """``model.eval()`` left over from a validation pass: the MAP masks send no gradient to the
    logits, so the prior alone moved them and a full-rank low-rank layer ended at rank 1 without
    a word. The loss now warns (once) when it is computed with gradients in that state, and not
    under ``torch.no_grad()`` (validation) nor in training mode."""
    torch.manual_seed(0)
    model = nn.Sequential(LowRankLinear(16, 16, rank=8, bias=False))
    loss_fn = MarsLoss(model, num_train=100, criterion=nn.MSELoss())
    x = torch.randn(32, 16)
    y = x @ torch.randn(16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss_fn(model(x), y).backward()  # training mode
        model.eval()
        with torch.no_grad():
            loss_fn(model(x), y)  # a validation loss
    with pytest.warns(RuntimeWarning, match=r"masks of layer '0' \(LowRankLinear\) are in eval mode.*model.train\(\)"):
        loss_fn(model(x), y).backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss_fn(model(x), y).backward()  # once
    opt_loss = MarsLoss(model, num_train=100, criterion=nn.MSELoss())
    opt_loss.optimizer(lr=1e-2)
    with pytest.warns(RuntimeWarning, match="in eval mode"):  # the optimizer-carried prior as well
        opt_loss(model(x), y).backward()


def test_sgd_with_momentum_is_not_fused_by_default_so_a_skipped_first_step_is_harmless():
    """``MarsLoss.optimizer(torch.optim.SGD, momentum=0.9)`` turned on PyTorch's fused SGD, whose
    momentum buffer stays uninitialised when GradScaler skips the first step: the next step wrote
    ~1e34 into the weights and the loss became NaN, silently."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 16), torch.randint(0, 8, (64,))
    model = nn.Sequential(TensorizedLinear(16, 8, rank=4, in_shape=(4, 4), out_shape=(2, 4)))
    loss_fn = MarsLoss(model, num_train=64)
    opt = loss_fn.optimizer(torch.optim.SGD, lr=1e-2, momentum=0.9)
    assert not opt.param_groups[0].get("fused")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 24)  # the first steps overflow in float16 and are skipped
    for _ in range(10):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    assert torch.isfinite(loss) and max(float(p.abs().max()) for p in model.parameters()) < 100
    assert MarsLoss(model, 64).optimizer(torch.optim.SGD, lr=1e-2).param_groups[0].get("fused")  # no momentum: fused


def test_a_warmup_set_directly_freezes_the_logits_as_set_warmup_does():
    """``layer.warmup = True`` (documented as the warm-up switch) left the logits training on the
    prior's push alone: 200 Adam steps took them from +3 to -3 and every bond ended at min_rank."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 16), torch.randint(0, 8, (64,))
    model = nn.Sequential(TensorizedLinear(16, 8, rank=4, in_shape=(4, 4), out_shape=(2, 4)))
    loss_fn = MarsLoss(model, num_train=1000)
    opt = loss_fn.optimizer(lr=3e-2)
    start = model[0].masks.logits.detach().clone()
    model[0].warmup = True
    assert not model[0].masks.logits.requires_grad
    for _ in range(50):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    model[0].warmup = False
    assert model[0].masks.logits.requires_grad and torch.equal(model[0].masks.logits.detach(), start)
    tnn.set_warmup(model, True, freeze_logits=False)  # the option to keep them training stays
    assert model[0].warmup and model[0].masks.logits.requires_grad


def test_setters_on_a_tensorized_model_without_masks_say_that_nothing_changed():
    """A model of ``mars=False`` (or compressed) layers counted as "could carry masks": the
    setters and the temperature schedule changed nothing, silently."""
    model = nn.Sequential(TensorizedLinear(16, 8, rank=4, in_shape=(4, 4), out_shape=(2, 4), mars=False))
    for setter, value in ((tnn.set_alpha, -1.5), (tnn.set_temperature, 0.05), (tnn.set_warmup, True), (tnn.set_pi, 0.1)):
        with pytest.warns(UserWarning, match="no layer of the model has MARS masks now.*nothing was changed"):
            setter(model, value)
    with pytest.warns(UserWarning, match="MarsTemperature: no layer of the model has MARS masks now"):
        tnn.MarsTemperature(model)


def test_kl_divergence_averaged_per_example_is_accepted():
    """``KLDivLoss(reduction="batchmean")`` is the per-example mean the prior's 1/N scaling
    needs; it was refused as "not averaging over the batch"."""
    model = _mixed_model()
    loss_fn = MarsLoss(model, 50, nn.KLDivLoss(reduction="batchmean"))
    x = torch.randn(4, 16, dtype=torch.float64)
    target = torch.softmax(torch.randn(4, 5, dtype=torch.float64), -1)
    out = torch.log_softmax(model(x), -1)
    want = nn.functional.kl_div(out, target, reduction="batchmean") + tnn.mars_penalty(model, 50)
    torch.testing.assert_close(loss_fn(out, target), want)
    with pytest.raises(ValueError, match="averages over the batch"):
        MarsLoss(model, 50, nn.KLDivLoss(reduction="sum"))


def test_a_diverged_model_is_named_as_such_by_summary_eval_and_compress():
    """Found by review: after a run diverged to NaN, NaN logits read as closed masks (NaN > 0 is
    false): summary reported a 37.8x compression, the warnings blamed the prior, and compress
    returned a model whose outputs were NaN, without a word."""
    model = nn.Sequential(TensorizedLinear(64, 128), nn.ReLU(), TensorizedLinear(128, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    with pytest.warns(RuntimeWarning, match="NaN or infinity"):
        model.eval()
    with pytest.warns(RuntimeWarning, match="hold NaN or infinite parameters"):
        report = tnn.summary(model)
    assert math.isnan(report.compression) and report.non_finite_layers == ["0", "2"]
    assert "none: NaN/inf parameters" in str(report) and "prior may be too strong" not in str(report)
    with pytest.raises(ValueError, match="diverged"):
        tnn.compress(model)


def test_regression_targets_far_from_unit_variance_warn_once():
    """Found by review: MSELoss on targets 100x smaller made the data term 10^4x weaker against
    the prior; MARS closed most indices of a layer that needed them (R^2 0.42 against 0.77 at
    fixed rank), without a warning."""
    model = nn.Sequential(TensorizedLinear(16, 16, rank=4), nn.Tanh(), nn.Linear(16, 1))
    loss_fn = MarsLoss(model, 100, nn.MSELoss())
    x = torch.randn(32, 16)
    with pytest.warns(RuntimeWarning, match="targets' variance is .*Standardize"):
        loss_fn(model(x), 0.01 * torch.randn(32, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss_fn(model(x), 0.01 * torch.randn(32, 1))  # once
        MarsLoss(model, 100, nn.MSELoss())(model(x), torch.randn(32, 1))  # standardized: no warning
        MarsLoss(model, 100)(model(x), torch.randint(0, 1, (32,)))  # classification: not checked
        MarsLoss(model, 100, nn.MSELoss())(model(x), torch.zeros(32, 1))  # a constant batch tells nothing
        wide = nn.Sequential(TensorizedLinear(16, 16, rank=4), nn.Tanh(), nn.Linear(16, 128))
        one_hot = nn.functional.one_hot(torch.randint(0, 128, (32,)), 128).float()
        MarsLoss(wide, 100, nn.MSELoss())(wide(x), one_hot)  # one-hot targets: no unit to judge
        offsets = torch.randn(32, 2) + torch.tensor([50.0, -50.0])  # unit variance per output, far-apart means
        two = nn.Sequential(TensorizedLinear(16, 16, rank=4), nn.Tanh(), nn.Linear(16, 2))
        MarsLoss(two, 100, nn.MSELoss())(two(x), offsets)
    small = MarsLoss(model, 100, nn.MSELoss())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small(model(x[:2]), 0.01 * torch.randn(2, 1))  # two examples: not judged yet
    with pytest.warns(RuntimeWarning, match="targets' variance"):
        small(model(x), 0.01 * torch.randn(32, 1))
    # the same losses as functions (an outside probe: F.mse_loss said nothing where nn.MSELoss warned)
    for function, name in ((nn.functional.mse_loss, "mse_loss"), (nn.functional.l1_loss, "l1_loss")):
        with pytest.warns(RuntimeWarning, match=f"targets' variance is .*; {name} treats"):
            MarsLoss(model, 100, function)(model(x), 0.01 * torch.randn(32, 1))


def test_num_train_may_be_a_one_element_tensor():
    model = nn.Sequential(TensorizedLinear(16, 8, rank=4))
    assert MarsLoss(model, torch.tensor(100)).num_train == 100
    with pytest.raises(ValueError, match="whole number"):
        MarsLoss(model, torch.tensor(2.5))


def test_the_mars_optimizer_says_when_the_marsloss_is_never_backpropagated():
    """Found by review: with ``opt = loss_fn.optimizer()`` and the criterion backpropagated
    directly (label smoothing), the prior was never applied and MARS selected nothing, silently."""
    model = nn.Sequential(TensorizedLinear(16, 8, rank=4))
    loss_fn = MarsLoss(model, 100)
    opt = loss_fn.optimizer(lr=1e-3)
    x, y = torch.randn(8, 16), torch.randint(0, 8, (8,))
    with pytest.warns(RuntimeWarning, match="without a backward of that MarsLoss"):
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y, label_smoothing=0.1).backward()
            opt.step()
    loss_fn = MarsLoss(model, 100)
    opt = loss_fn.optimizer(lr=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        for _ in range(4):  # steps without a backward after one with it: a choice, not a mistake
            opt.step()


def test_clipping_over_the_optimizers_parameters_sees_the_models_gradients_and_keeps_the_prior():
    """PyTorch Lightning clips every parameter of the optimizer's groups, the prior's weight
    scalar included: with its gradient at the loss's weight (1) every gradient norm was at
    least 1, and a value clip at 0.01 cut the prior applied in the step a hundredfold."""
    torch.manual_seed(0)
    model = _mixed_model()
    loss_fn = MarsLoss(model, 50)
    opt = loss_fn.optimizer(torch.optim.SGD, lr=0.1)
    x, y = torch.randn(8, 16, dtype=torch.float64), torch.randint(0, 5, (8,))
    loss_fn(model(x), y).backward()
    in_groups = [p for group in opt.param_groups for p in group["params"]]
    of_model = list(model.parameters())
    norm_groups = torch.nn.utils.get_total_norm([p.grad for p in in_groups if p.grad is not None])
    norm_model = torch.nn.utils.get_total_norm([p.grad for p in of_model if p.grad is not None])
    assert float(norm_groups) == pytest.approx(float(norm_model), rel=1e-9)
    # a value clip over the optimizer's parameters leaves the prior's weight whole: the step
    # is the one without clipping (SGD), the clip above every model gradient and below 1
    largest = max(float(p.grad.abs().max()) for p in of_model if p.grad is not None)
    assert largest < 0.9
    clipped, free = copy.deepcopy(model), copy.deepcopy(model)
    for net, clip in ((clipped, True), (free, False)):
        fn = MarsLoss(net, 50)
        o = fn.optimizer(torch.optim.SGD, lr=0.1)
        torch.manual_seed(1)  # (the same mask draws)
        fn(net(x), y).backward()
        if clip:
            torch.nn.utils.clip_grad_value_([p for g in o.param_groups for p in g["params"]], 0.9)
        o.step()
    for a, b in zip(clipped.parameters(), free.parameters()):
        torch.testing.assert_close(a, b)


def test_a_mars_loss_over_a_compressed_model_says_it_is_the_criterion_alone():
    """MarsTemperature warned on a compressed model and MarsLoss did not: the loss was the plain
    criterion, the cores got no prior (an outside probe)."""
    model = tnn.compress(_mixed_model().eval())
    with pytest.warns(UserWarning, match="MarsLoss: no layer of the model has MARS masks now"):
        MarsLoss(model, 50)


def test_summary_says_when_mask_entries_have_not_settled():
    """A TT recurrent matrix trained with mars="soft" showed ranks 6-7 as "selected" from keep
    probabilities of 0.29-0.87, and they moved on with more training: nothing said so (a probe)."""
    model = nn.Sequential(TensorizedLinear(16, 8, rank=4, in_shape=(4, 4), out_shape=(2, 4)))
    settled = summary(model)
    assert settled.layers[0].undecided == 0 and "not settled" not in str(settled)
    with torch.no_grad():
        model[0].masks.logits[:2] = 0.3
        model[0].masks.logits[2] = -0.5
    table = summary(model)
    assert table.layers[0].undecided == 3
    assert "Mask entries not settled" in str(table) and "0 (3)" in str(table)


def test_training_with_another_optimizer_after_marsloss_optimizer_warns_that_no_prior_is_applied():
    """Found by an outside probe: after ``loss_fn.optimizer()`` the loss leaves the prior to that
    optimizer; a user who then trained with ``torch.optim.Adam(model.parameters())`` and the same
    loss got no prior at all (the logits never moved from 6.0027), silently. The loss now warns
    once its optimizer has not stepped for ``STALE_OPTIMIZER_CALLS`` backpropagated calls; a
    training loop that steps it, with gradient accumulation, and evaluation calls do not warn."""
    torch.manual_seed(0)
    x, y = torch.randn(32, 16), torch.randint(0, 5, (32,))
    calls = MarsLoss.STALE_OPTIMIZER_CALLS + 2 * MarsLoss.STALE_CHECK_EVERY

    def run(step_the_mars_optimizer: bool, accumulate: int = 1, evaluate: bool = False):
        model = nn.Sequential(LowRankLinear(16, 5, rank=3))
        loss_fn = MarsLoss(model, 200)
        mars_opt = loss_fn.optimizer(lr=1e-3)
        other = torch.optim.SGD(model.parameters(), lr=0.0)
        opt = mars_opt if step_the_mars_optimizer else other
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in range(calls):
                if evaluate:
                    with torch.no_grad():
                        loss_fn(model(x), y)
                    continue
                loss_fn(model(x), y).backward()
                if (i + 1) % accumulate == 0:
                    opt.step()
                    opt.zero_grad()
        return [w for w in caught if "has not stepped" in str(w.message)]

    found = run(False)
    assert len(found) == 1 and issubclass(found[0].category, RuntimeWarning)
    assert "Build a new MarsLoss for another optimizer" in str(found[0].message)
    assert run(True) == [] and run(True, accumulate=32) == [] and run(True, evaluate=True) == []


def test_closed_bond_warnings_name_the_layer_after_tensorize_or_a_hand_written_loss():
    """Before any MarsLoss or summary walked the model, a closed bond's warning named the layer
    by its spec only (an outside probe, 2026-12-04): tensorize and log_prior / mars_penalty now
    name the layers by their path."""
    torch.manual_seed(0)
    dense = nn.Sequential(collections.OrderedDict([("features", nn.Linear(16, 12)), ("act", nn.ReLU()),
                                                   ("head", nn.Linear(12, 4))]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tnn.tensorize(dense, ["head"], linear="lowrank", rank=3)
    with torch.no_grad():
        model.head.masks.logits.fill_(-4.0)
    with pytest.warns(RuntimeWarning, match=r"layer 'head' \(LowRankLinear\): MARS closed every index"):
        model.eval()

    torch.manual_seed(0)
    hand = nn.Sequential(nn.Linear(16, 12), nn.ReLU(), tnn.LowRankLinear(12, 4, rank=3))
    tnn.mars_penalty(hand, 100)  # a hand-written loss: criterion + mars_penalty(model, N)
    with torch.no_grad():
        hand[2].masks.logits.fill_(-4.0)
    with pytest.warns(RuntimeWarning, match=r"layer '2' \(LowRankLinear\): MARS closed every index"):
        hand.eval()
