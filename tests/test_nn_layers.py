"""Tensorized layers: compression is exact, fixed-rank layers equal their dense weight,
gradients flow, closed masks stay finite, bad arguments are refused."""
from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tnmars
from tnmars.nn import (
    LowRankLinear,
    NetworkMatmul,
    TensorizedConv2d,
    TensorizedEmbedding,
    TensorizedLinear,
    Tucker2Conv2d,
    factorize,
    suggest_shape,
    tt_matmul,
)

torch.set_num_threads(1)


def _linear(fmt):
    return lambda **kw: TensorizedLinear(12, 20, format=fmt, rank=3, in_shape=(3, 4), out_shape=(4, 5), **kw)


FACTORIES = {
    "tt": _linear("tt"),
    "tr": _linear("tr"),
    "cp": _linear("cp"),
    "tucker": _linear("tucker"),
    "tt-auto-shape": lambda **kw: TensorizedLinear(24, 30, rank=3, **kw),
    "lowrank": lambda **kw: LowRankLinear(12, 20, rank=5, **kw),
    "tucker2conv": lambda **kw: Tucker2Conv2d(4, 6, 3, rank=(3, 4), padding=1, stride=2, **kw),
    "ttconv": lambda **kw: TensorizedConv2d(4, 6, 3, rank=3, padding=1, **kw),
    "embedding": lambda **kw: TensorizedEmbedding(30, 8, rank=3, padding_idx=4, **kw),
}


def _input(layer, batch=5):
    if isinstance(layer, TensorizedEmbedding):
        return torch.tensor([[0, 4, 29, 7], [5, 5, 13, 1]])
    if isinstance(layer, (Tucker2Conv2d, TensorizedConv2d)):
        return torch.randn(batch, 4, 7, 7)
    return torch.randn(batch, layer.in_features)


def _dense(layer, x):
    w = layer.dense_weight()
    if isinstance(layer, TensorizedEmbedding):
        return F.embedding(x, w)
    if isinstance(layer, (Tucker2Conv2d, TensorizedConv2d)):
        return F.conv2d(x, w, layer.bias, layer.stride, layer.padding, layer.dilation)
    return F.linear(x, w, layer.bias)


def _random_logits(layer, gen):
    with torch.no_grad():
        for p in layer.masks.bond_logits().values():
            p.copy_(torch.randn(p.shape, generator=gen) * 2)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_eval_output_equals_compressed_copy(name):
    torch.manual_seed(0)
    layer = FACTORIES[name]()
    gen = torch.Generator().manual_seed(1)
    _random_logits(layer, gen)
    layer.eval()
    small = layer.compressed()
    x = _input(layer)
    assert small.masks is None and not small.mars
    assert small.max_ranks == layer.selected_ranks() == layer.ranks == small.ranks
    assert small.num_params == layer.num_params_at(layer.selected_ranks()) <= layer.num_params
    torch.testing.assert_close(small(x), layer(x), rtol=1e-5, atol=1e-5)
    # the original is untouched
    assert layer.masks is not None and layer.max_ranks != {} and layer.num_params >= small.num_params


@pytest.mark.parametrize("name", list(FACTORIES))
def test_fixed_rank_layer_equals_dense_layer_from_its_weight(name):
    torch.manual_seed(0)
    layer = FACTORIES[name](mars=False)
    assert layer.masks is None
    x = _input(layer)
    for mode in ("weight", "cores", "auto"):
        layer.mode = mode
        torch.testing.assert_close(layer(x), _dense(layer, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_open_masks_equal_the_plain_layer(name):
    torch.manual_seed(0)
    layer = FACTORIES[name](alpha=5.0)
    plain = FACTORIES[name](mars=False)
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("masks.")})
    layer.eval()
    x = _input(layer)
    torch.testing.assert_close(layer(x), plain(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_weight_and_cores_paths_agree_in_training_mode(name):
    torch.manual_seed(0)
    layer = FACTORIES[name](alpha=0.5)
    x = _input(layer)
    outs = []
    for mode in ("weight", "cores"):
        layer.mode = mode
        torch.manual_seed(3)  # the same mask sample for both paths
        outs.append(layer(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_gradients_reach_cores_and_logits(name):
    torch.manual_seed(0)
    layer = FACTORIES[name](alpha=0.0, temperature=1.0)  # hot: most samples strictly inside (0, 1)
    x = _input(layer)
    for _ in range(3):
        (layer(x) ** 2).sum().backward()
    for core in layer.cores:
        assert core.grad is not None and core.grad.abs().sum() > 0
    grads = dict(zip(layer.masks.bonds, torch.split(layer.masks.logits.grad, layer.masks.sizes)))
    for bond, g in grads.items():
        assert g.abs().sum() > 0, bond


def _forward_backward(layer, x, seed):
    """Output and gradients of (cores, logits) for one forward with the noise of ``seed``."""
    layer.zero_grad()
    torch.manual_seed(seed)
    y = layer(x)
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    logits = layer.masks.logits
    # no draw strictly inside (0, 1): no data gradient can reach a logit, and the sliced layer
    # does not record the draw (its logits get gradient from the prior only, here none)
    grads = [c.grad.clone() for c in layer.cores] + [torch.zeros_like(logits) if logits.grad is None
                                                     else logits.grad.clone()]
    return y.detach(), grads


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("alpha", [-1.5, 0.5, 6.0])
@pytest.mark.parametrize("bucket", [1, 4])
@pytest.mark.parametrize("min_rank", [0, 1])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_skipping_closed_indices_changes_nothing_but_the_shapes(name, alpha, bucket, min_rank, monkeypatch):
    """Slicing exactly-zero mask entries out of the cores gives the same outputs and the same
    gradients (cores and logits) in training mode, and the same eval outputs, whether or not
    the kept indices are padded to a multiple of ``RANK_BUCKET`` with zero-mask ones, and
    whether or not bonds are topped up to ``min_rank`` kept indices."""
    monkeypatch.setattr("tnmars.nn.masks.RANK_BUCKET", bucket)
    torch.manual_seed(0)
    layer = FACTORIES[name](alpha=alpha, temperature=0.5, min_rank=min_rank)
    x = _input(layer)
    layer.skip_closed = True
    torch.manual_seed(11)
    sliced = [tuple(c.shape) for c in layer.mars_cores()]
    results = {}
    for skip in (False, True):
        layer.skip_closed = skip
        layer.train()
        results[skip] = [_forward_backward(layer, x, seed) for seed in (11, 12)]
        layer.eval()
        with torch.no_grad():
            results[skip].append((layer(x), []))
    for (y0, g0), (y1, g1) in zip(results[False], results[True]):
        torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-6)
        for a, b in zip(g1, g0):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    full = [tuple(c.shape) for c in layer.cores]
    if alpha < 0:  # closed logits: most draws are exactly 0, so the cores in use shrink
        if bucket == 1:
            assert sum(map(np.prod, sliced)) < sum(map(np.prod, full))
        layer.eval()  # MAP masks all closed: every bond is sliced to min_rank (no padding in eval)
        assert all(min(c.shape[a] for c, a in ((layer.mars_cores()[k], ax) for k, ax in axes)) == min_rank
                   for axes in layer.bond_axes.values())
    if alpha > 5:  # every draw is exactly 1: nothing to slice
        assert sliced == full


@pytest.mark.parametrize("name", ["tr", "tucker", "tt-auto-shape", "tucker2conv", "embedding"])  # two bonds or more
@pytest.mark.parametrize("open_first", [True, False])
@pytest.mark.parametrize("open_logit", [30.0, math.inf], ids=["30", "inf"])
def test_bonds_whose_draws_are_all_one_are_not_multiplied_and_nothing_else_changes(name, open_first, open_logit):
    """One bond open (every draw exactly 1) next to a live bond (draws strictly inside (0, 1)):
    the sliced fold leaves the open bond's cores untouched and multiplies only the live bond,
    with the same outputs and gradients (cores and logits) as sampling every mask and
    multiplying every bond (``skip_closed=False``, the straightforward expression). The live
    draw's value and gradient are computed on the host (``_fold_values``); an infinite logit
    (a user forcing an index open) must not make them NaN."""
    torch.manual_seed(0)
    layer = FACTORIES[name](temperature=1.0)
    sizes = layer.masks.sizes
    with torch.no_grad():
        for k, lg in enumerate(layer.masks.bond_logits().values()):
            lg.fill_(open_logit if (k == 0) == open_first else 0.0)  # 30: clamped to 1 whatever the noise
            if math.isinf(open_logit) and (k == 0) != open_first:
                lg[0] = open_logit  # an infinite logit on the live bond as well, multiplied with it
    x = _input(layer)
    results = {}
    for skip in (False, True):
        layer.skip_closed = skip
        results[skip] = [_forward_backward(layer, x, seed) for seed in (3, 4, 5)]
    for (y0, g0), (y1, g1) in zip(results[False], results[True]):
        torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-6)
        for a, b in zip(g1, g0):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    open_bond = layer.masks.bonds[0 if open_first else -1]
    total = sum(g[-1].abs() for _, g in results[True])  # logit gradients over the three draws
    logit_grad = dict(zip(layer.masks.bonds, torch.split(total, sizes)))
    assert float(logit_grad[open_bond].abs().sum()) == 0.0  # a clamped draw sends no gradient
    assert any(float(g.abs().sum()) > 0 for b, g in logit_grad.items() if b != open_bond)
    # which cores the fold multiplied: every bond live -> a new tensor at each mask site; the
    # open bond alone -> its site core is the parameter itself unless a live bond shares it
    layer.skip_closed = True
    torch.manual_seed(3)
    cores = layer.mars_cores()
    live_sites = {layer.sites[b][0] for b in layer.masks.bonds if b != open_bond}
    site = layer.sites[open_bond][0]
    if site not in live_sites:
        assert cores[site] is list(layer.cores)[site]


@settings(max_examples=200, deadline=None)
@given(logits=st.lists(st.floats(-40.0, 40.0), min_size=1, max_size=50),
       temperature=st.sampled_from([0.01, 0.1, 0.5, 2.0]), seed=st.integers(0, 2**31 - 1))
def test_all_ones_shortcut_never_claims_a_draw_that_is_not_exactly_one(logits, temperature, seed):
    """``_all_ones`` (two reductions) is a sufficient test: when it holds, the per-entry
    classification ``_draw_codes`` finds every draw exactly 1; and it holds for logits far
    above the clamp point whatever the noise."""
    from tnmars.nn.masks import _all_ones, _draw_codes

    u = np.random.default_rng(seed).random(len(logits)).astype(np.float32)
    u[0] = min(u[0], 1e-3)  # a small uniform in every example: the test must look at the minimum
    uniforms, values = u.tolist(), np.asarray(logits, dtype=np.float32).tolist()
    if _all_ones(uniforms, values, temperature):
        assert set(_draw_codes(uniforms, values, temperature)) == {2}
    assert _all_ones(uniforms, [20.0 + 3.0 * temperature] * len(values), temperature)


def _classify_every_entry(uniforms, logits, temperature):
    """The per-entry classification of a hard-concrete draw, written out (the reference)."""
    from tnmars.nn.masks import _NOISE_EPS, _ONE, _ZERO

    codes, noise = [], []
    for u, lg in zip(uniforms, logits):
        u = min(max(u, _NOISE_EPS), 1.0 - _NOISE_EPS)
        n = math.log(u / (1.0 - u))
        codes.append(0 if lg + n <= _ZERO * temperature else 2 if lg + n >= _ONE * temperature else 1)
        noise.append(n * (1.0 / temperature))
    return codes, noise


@settings(max_examples=300, deadline=None)
@given(logits=st.lists(st.one_of(st.floats(-40.0, 40.0), st.sampled_from([6.0, 8.0, -math.inf, math.inf, math.nan])),
                       min_size=1, max_size=80),
       temperature=st.sampled_from([0.01, 0.1, 0.5, 2.0]), seed=st.integers(0, 2**31 - 1),
       small=st.integers(0, 3))
def test_classification_of_a_draw_matches_the_per_entry_rule(logits, temperature, seed, small):
    """``_classify`` scans the uniforms for those that can fall short of 1 and classifies only
    them: the codes must be the per-entry rule's, and so must the noise of every entry that is
    not exactly 1 (the only noise the fold reads, or all of it when a logit is not finite)."""
    from tnmars.nn.masks import _classify

    rng = np.random.default_rng(seed)
    u = rng.random(len(logits)).astype(np.float32)
    u[rng.integers(0, len(logits), small)] = rng.choice([0.0, 1e-7, 1e-3, 3e-3, 1.0 - 1e-7, 1.0], small)
    uniforms, values = u.tolist(), np.asarray(logits, dtype=np.float32).tolist()
    codes, noise = _classify(uniforms, values, temperature)
    want_codes, want_noise = _classify_every_entry(uniforms, values, temperature)
    assert codes == want_codes
    finite = all(math.isfinite(v) for v in values)
    for c, got, want in zip(codes, noise, want_noise):
        if c != 2 or not finite:
            assert got == want


def test_skip_closed_defaults_to_cpu_only_and_slices_hyperedges():
    torch.manual_seed(0)
    layer = TensorizedLinear(12, 20, format="cp", rank=6, in_shape=(3, 4), out_shape=(4, 5))
    assert layer.skip_closed is None  # auto: on for CPU tensors
    with torch.no_grad():
        layer.masks.logits.copy_(torch.tensor([3.0, -3.0, 3.0, -3.0, -3.0, 3.0]))
    layer.eval()
    cores = layer.mars_cores()
    assert all(c.shape[-1] == 3 for c in cores)  # the CP bond joins every core: all are sliced
    layer.skip_closed = False
    assert all(c.shape[-1] == 6 for c in layer.mars_cores())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sliced_fold_draws_the_uniforms_of_the_straightforward_sample(dtype):
    """The sliced fold draws its uniforms with ``rand_like`` on the logits and the straightforward
    path with ``torch.rand(shape, dtype=, device=)``: the same numbers from the same seed in either
    dtype, so both paths fold the same mask values into the cores (rank 2: a bond's kept indices are
    padded back to its full size, nothing is sliced and the cores compare entry by entry)."""
    torch.manual_seed(0)
    layer = TensorizedLinear(12, 20, format="tr", rank=2, in_shape=(3, 4), out_shape=(4, 5), temperature=1.0).to(dtype)
    with torch.no_grad():
        layer.masks.logits.copy_(torch.tensor([-1.0, 0.2, 0.5, 1.0], dtype=dtype))
    layer.train()
    for seed in range(5):
        got = {}
        for skip in (False, True):
            layer.skip_closed = skip
            torch.manual_seed(seed)
            got[skip] = [c.detach() for c in layer.mars_cores()]
        for a, b in zip(got[True], got[False]):
            assert a.dtype == dtype
            torch.testing.assert_close(a, b, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_all_masks_closed_stays_finite(name):
    """With ``min_rank=0`` a bond may close whole: nothing breaks, the weight is zero."""
    torch.manual_seed(0)
    layer = FACTORIES[name](min_rank=0)
    with torch.no_grad():
        for p in layer.masks.bond_logits().values():
            p.fill_(-20.0)
    x = _input(layer)
    layer.train()
    y = layer(x)
    (y.sum() + layer.log_prior()).backward()
    assert torch.isfinite(y).all()
    assert all(torch.isfinite(c.grad).all() for c in layer.cores)
    layer.eval()
    y = layer(x)
    assert torch.isfinite(y).all()
    small = layer.compressed()
    assert all(v == 0 for v in small.max_ranks.values())
    assert small.num_params < layer.num_params
    torch.testing.assert_close(small(x), y)
    # closed masks: the weight is zero, so only the bias (if any) is left
    bias = getattr(layer, "bias", None)
    expected = torch.zeros_like(y) if bias is None else torch.zeros_like(y) + (bias if y.ndim != 4 else bias[:, None, None])
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_closed_bonds_keep_min_rank_in_training_eval_and_compression(name):
    """The default ``min_rank=1``: a bond whose every logit is closed still keeps its largest
    logit's index, in training draws, in eval and in the compressed layer; eval warns naming it."""
    torch.manual_seed(0)
    layer = FACTORIES[name]()
    assert layer.masks.min_rank == 1
    with torch.no_grad():
        layer.masks.logits.fill_(-20.0)
        for lg in layer.masks.bond_logits().values():
            lg[-1] = -5.0  # the largest logit of every bond
    x = _input(layer)
    for skip in (True, False):
        layer.skip_closed = skip
        layer.train()
        draws = layer.masks()
        assert all(float(m[-1]) == 1.0 and float(m[:-1].abs().sum()) == 0.0 for m in draws.values())
        y = layer(x)
        y.float().sum().backward()
        assert all(torch.isfinite(c.grad).all() and c.grad.abs().sum() > 0 for c in layer.cores)
        layer.zero_grad()
    with pytest.warns(RuntimeWarning, match=r"MARS closed every index of bond.*min_rank=1"):
        layer.eval()
    assert layer.selected_ranks() == {b: 1 for b in layer.bond_names}
    small = layer.compressed()
    assert all(v == 1 for v in small.max_ranks.values())
    with torch.no_grad():
        torch.testing.assert_close(small(x), layer(x))
        bias = getattr(layer, "bias", None)
        if bias is not None:  # not a bias-only layer
            assert not torch.allclose(layer(x), torch.zeros_like(layer(x)) + (bias if layer(x).ndim != 4 else bias[:, None, None]))


def test_min_rank_larger_than_one_and_validation():
    layer = TensorizedLinear(12, 20, rank=4, in_shape=(3, 4), out_shape=(4, 5), min_rank=2, alpha=-20.0)
    assert layer.masks.ranks() == {"A": 2}
    layer.train()
    assert int((layer.masks()["A"] > 0).sum()) >= 2
    for bad, err in ((-1, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(err, match="min_rank"):
            TensorizedLinear(12, 20, rank=4, in_shape=(3, 4), out_shape=(4, 5), min_rank=bad)
    with pytest.raises(ValueError, match="alpha"):
        TensorizedLinear(12, 20, rank=4, in_shape=(3, 4), out_shape=(4, 5), alpha=float("nan"))


def test_presets_and_default_start_open():
    """Default layers start with every mask open (the fixed-rank layer); the paper's settings
    are the presets ``"soft"`` and ``"hard"``; explicit ``pi`` / ``alpha`` win."""
    layer = TensorizedLinear(12, 20, rank=3, in_shape=(3, 4), out_shape=(4, 5))
    assert layer.masks.pi == 0.01 and layer.masks.alpha == 6.0
    assert layer.selected_ranks() == layer.max_ranks
    soft = TensorizedLinear(12, 20, rank=3, in_shape=(3, 4), out_shape=(4, 5), mars="soft")
    hard = LowRankLinear(12, 20, rank=3, mars="hard")
    assert (soft.masks.pi, soft.masks.alpha) == (0.1, -1.5)
    assert (hard.masks.pi, hard.masks.alpha) == (0.01, -1.75)
    mixed = LowRankLinear(12, 20, rank=3, mars="hard", alpha=0.5)
    assert (mixed.masks.pi, mixed.masks.alpha) == (0.01, 0.5)
    with pytest.raises(ValueError, match="preset"):
        LowRankLinear(12, 20, rank=3, mars="medium")
    with pytest.raises(TypeError, match="mars"):
        LowRankLinear(12, 20, rank=3, mars=0.5)


def test_default_training_draws_rarely_drop_an_index():
    """Found by an outside-user run: at the former default alpha=3 a training draw dropped each
    index with probability 4.7% (1 - sigmoid(3), at any temperature), a rank dropout that the
    eval-mode masks do not have: a tensorized TransformerEncoder stalled at 60% accuracy on 5 of 6
    seeds (1.0 without masks) and a Tucker-2 conv autoencoder reconstructed 3.4x worse than
    without masks. At the default start a draw drops an index at most 0.5% of the time."""
    layer = LowRankLinear(64, 64, rank=32)
    torch.manual_seed(0)
    draws = torch.stack([layer.masks()["A"] for _ in range(400)])
    assert float((draws == 0).float().mean()) < 0.005
    assert float((draws == 1).float().mean()) > 0.99


@pytest.mark.parametrize("cin, cout, k, rank", [(32, 64, 3, 32), (64, 16, 3, 32), (20, 50, 5, (8, 8))])
def test_a_default_tucker2_kernel_has_the_variance_of_a_default_conv(cin, cout, k, rank):
    """Found by an outside-user run: each Tucker-2 factor took its own fan-in's variance, so the
    kernel had a ninth of nn.Conv2d's (1 / (3 C_in kh kw)); four such layers in an autoencoder
    started with a signal 81x smaller, and fixed-rank training reached 1.4x the MSE it reaches
    with the kernel at nn.Conv2d's scale."""
    torch.manual_seed(0)
    weight = Tucker2Conv2d(cin, cout, k, rank=rank, mars=False).weight.detach()
    assert float(weight.var()) == pytest.approx(1.0 / (3 * cin * k * k), rel=0.15)


_ONE_SIDED = [  # (factory, the expected weight RMS): layers with one channel, feature or rank on a side
    (lambda: Tucker2Conv2d(1, 16, 3), 1.0 / math.sqrt(3 * 1 * 9)),
    (lambda: Tucker2Conv2d(16, 1, 3), 1.0 / math.sqrt(3 * 16 * 9)),
    (lambda: LowRankLinear(64, 1), 1.0 / (3 * math.sqrt(64))),
    (lambda: LowRankLinear(1, 64), 1.0 / 3),
    (lambda: TensorizedLinear(1, 64), math.sqrt(2.0 / 65)),
    (lambda: TensorizedLinear(64, 1), math.sqrt(2.0 / 65)),
    (lambda: TensorizedConv2d(1, 16, 3), math.sqrt(2.0 / (9 + 16))),
    (lambda: TensorizedEmbedding(100, 8), math.sqrt(2.0 / 108)),
]


@pytest.mark.parametrize("make, rms", _ONE_SIDED)
def test_every_draw_starts_at_the_expected_scale(make, rms):
    """A product of random factors has a random scale, which a factor of one entry decides: a
    Tucker-2 conv on 1-channel images started 0.009-2.6 times nn.Conv2d's scale over 100 seeds,
    and at 75x too small the BatchNorm after it read 50% in eval() against 87% in training
    (outside probe). Every seed, and reset_parameters, now starts at the expected scale."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (some are larger than their dense layer: said elsewhere)
        for seed in range(20):
            torch.manual_seed(seed)
            layer = make()
            network = layer.network  # (the whole network: a padded layer's weight is part of it)
            entries = math.prod(network.shape)
            squared = float(torch.as_tensor(network.to_tensor()).double().pow(2).sum())
            assert math.sqrt(squared / entries) == pytest.approx(rms, rel=1e-4)
            layer.reset_parameters()
            redrawn = torch.as_tensor(layer.network.to_tensor()).double()
            assert float(redrawn.pow(2).mean().sqrt()) == pytest.approx(rms, rel=1e-4)


def test_a_deferred_layer_is_drawn_at_the_expected_scale_by_reset_parameters():
    with torch.device("meta"):
        layer = Tucker2Conv2d(1, 16, 3)
    assert layer.cores[0].is_meta  # (no values to scale: the draw waits for reset_parameters)
    layer.to_empty(device="cpu")
    torch.manual_seed(0)
    layer.reset_parameters()
    assert float(layer.weight.detach().double().pow(2).mean().sqrt()) == pytest.approx(1.0 / math.sqrt(27), rel=1e-4)


def test_layers_larger_than_dense_warn():
    with pytest.warns(UserWarning, match="more than the dense"):
        TensorizedLinear(3, 2)  # 3 and 2 are prime: (1, 1, 3) x (1, 1, 2) has 8 parameters even at rank 1
    with pytest.warns(UserWarning, match="more than the dense"):
        TensorizedLinear(97, 10, rank=2)  # 97 is prime: its only factorisation is (1, 1, 97)
    with pytest.warns(UserWarning, match="more than the dense"):
        LowRankLinear(10, 10, rank=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TensorizedLinear(64, 256)
        LowRankLinear(100, 100, rank=8)


def test_train_mode_samples_eval_mode_is_deterministic():
    torch.manual_seed(0)
    layer = FACTORIES["tt"](alpha=0.0)
    x = torch.randn(4, 12)
    a, b = layer(x), layer(x)
    assert not torch.allclose(a, b)  # a fresh hard-concrete sample each forward
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x))


def test_auto_mode_follows_the_flop_costs():
    torch.manual_seed(0)
    layer = TensorizedLinear(784, 625, rank=20, in_shape=(7, 4, 7, 4), out_shape=(5, 5, 5, 5))
    shapes = tuple(tuple(c.shape) for c in layer.cores)
    for batch in (1, 16, 128, 4096):
        w, c = layer._mm.costs(shapes, batch)
        assert layer._mm.choose(shapes, batch) == ("cores" if 1.5 * c < w else "weight")
    # at batch 1 a 784x625 rebuild is far dearer than contracting one vector
    assert layer._mm.choose(shapes, 1) == "cores"


def test_state_dict_and_torch_save_round_trip():
    torch.manual_seed(0)
    model = torch.nn.Sequential(FACTORIES["tucker2conv"](alpha=1.0), torch.nn.Flatten(),
                                TensorizedLinear(96, 10, rank=4, alpha=1.0))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    torch.manual_seed(1)
    other = torch.nn.Sequential(FACTORIES["tucker2conv"](), torch.nn.Flatten(), TensorizedLinear(96, 10, rank=4))
    other.load_state_dict(state)
    model.eval(), other.eval()
    x = torch.randn(2, 4, 7, 7)
    torch.testing.assert_close(model(x), other(x))
    # dtype / device moves keep working (cores and logits are ordinary parameters)
    model64 = model.to(torch.float64).to("cpu")
    assert model64(x.double()).dtype == torch.float64


def test_user_network_backs_a_layer():
    net = tnmars.Network("aA,AbB,Bcd->abcd", shape=(2, 3, 4, 5), ranks=2, seed=0)  # in 2*3, out 4*5
    layer = TensorizedLinear(6, 20, format=net, mars=False, dtype=torch.float64)
    x = torch.randn(3, 6, dtype=torch.float64)
    w = torch.as_tensor(net.to_tensor().reshape(6, 20))
    torch.testing.assert_close(layer(x), x @ w + layer.bias)
    assert layer.format == "network"


def test_network_matmul_and_tt_matmul_match_dense():
    net = tnmars.Network.tt_matrix((2, 3, 2), (3, 2, 2), 2, backend="torch", dtype="float64", seed=0)
    w = net.to_tensor().reshape(12, 12)
    x = torch.randn(4, 2, 12, dtype=torch.float64)
    mm = NetworkMatmul(net, 3)
    for mode in ("weight", "cores", "auto"):
        torch.testing.assert_close(mm(x, net.cores, mode=mode), x @ w)
    cores = [net.cores[0][None], net.cores[1], net.cores[2][..., None]]
    masks = [torch.tensor([1.0, 0.0], dtype=torch.float64), None]
    wm = net.to_tensor({"A": masks[0]}).reshape(12, 12)
    for mode in ("weight", "cores"):
        torch.testing.assert_close(tt_matmul(x, cores, masks, mode=mode), x @ wm)
    with pytest.raises(ValueError, match="boundary ranks"):
        tt_matmul(x, [net.cores[1], net.cores[1]])


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(["tt", "tr", "cp", "tucker"]), st.lists(st.integers(1, 4), min_size=2, max_size=3),
       st.integers(1, 4), st.integers(0, 2**16), st.integers(1, 6))
def test_compressed_equals_masked_for_random_layers(fmt, dims, rank, seed, batch):
    torch.manual_seed(seed)
    in_shape = tuple(dims)
    out_shape = tuple(reversed(dims))
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank clipping is expected for tiny shapes
        layer = TensorizedLinear(n_in, n_out, format=fmt, rank=rank, in_shape=in_shape, out_shape=out_shape)
    _random_logits(layer, torch.Generator().manual_seed(seed))
    layer.eval()
    x = torch.randn(batch, n_in)
    torch.testing.assert_close(layer.compressed()(x), layer(x), rtol=1e-4, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5))
def test_factorize_law(n, d):
    f = factorize(n, d)
    assert len(f) == d and int(np.prod(f)) == n and list(f) == sorted(f)
    s = suggest_shape(n, d)
    assert len(s) == d and int(np.prod(s)) >= n


@pytest.mark.parametrize("cls", [Tucker2Conv2d, TensorizedConv2d])
def test_conv_geometry_is_checked_like_torchs_and_padding_strings_work(cls):
    """``padding="same"`` raised "invalid literal for int() with base 10: 's'", ``stride=0`` a
    ZeroDivisionError, ``padding=-1`` failed only at the first forward and ``padding=1.5`` was
    truncated to 1."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 9)
    for padding, dilation in (("same", 1), ("same", (2, 1)), ("valid", 1)):
        layer = cls(4, 6, 3, rank=4, padding=padding, dilation=dilation).eval()
        dense = nn.Conv2d(4, 6, 3, padding=padding, dilation=dilation)
        assert layer(x).shape == dense(x).shape
    for options, error, words in ((dict(stride=0), ValueError, "stride must be at least 1"),
                                  (dict(padding=-1), ValueError, "padding must be at least 0"),
                                  (dict(padding=1.5), TypeError, "padding must be an int or a pair"),
                                  (dict(padding="full"), ValueError, "'valid', 'same'"),
                                  (dict(padding="same", stride=2), ValueError, "needs stride 1"),
                                  (dict(dilation=(1, 0)), ValueError, "dilation must be at least 1")):
        with pytest.raises(error, match=words):
            cls(4, 6, 3, rank=4, **options)
    with pytest.raises(ValueError, match="kernel_size must be at least 1"):
        cls(4, 6, 0, rank=4)
    with pytest.raises(ValueError, match="even dilation"):  # an even kernel would need uneven padding
        cls(4, 6, 4, rank=4, padding="same")


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="in_shape"):
        TensorizedLinear(12, 20, in_shape=(3, 5), out_shape=(4, 5))
    with pytest.raises(ValueError, match="out_shape"):
        TensorizedLinear(12, 20, in_shape=(3, 4), out_shape=(4, 4))
    with pytest.raises(ValueError, match="same number of factors"):
        TensorizedLinear(12, 20, in_shape=(3, 4), out_shape=(20,))
    with pytest.raises(ValueError, match="rank must be >= 1"):
        TensorizedLinear(12, 20, rank=0)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        Tucker2Conv2d(4, 6, 3, rank=(3, 0))
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LowRankLinear(4, 6, rank=-1)
    with pytest.raises(TypeError, match="rank"):
        TensorizedLinear(12, 20, rank=2.5)
    with pytest.raises(ValueError, match="unknown format"):
        TensorizedLinear(12, 20, format="mps")
    with pytest.raises(ValueError, match="unknown format"):
        TensorizedEmbedding(10, 4, format="ht")
    with pytest.raises(ValueError, match="mode"):
        TensorizedLinear(12, 20, mode="fast")
    with pytest.raises(ValueError, match="pi"):
        TensorizedLinear(12, 20, pi=0.7)
    with pytest.raises(ValueError, match="in_features"):
        TensorizedLinear(0, 20)
    with pytest.raises(ValueError, match="voc_shape"):
        TensorizedEmbedding(100, 8, voc_shape=(5, 5), emb_shape=(2, 4))
    with pytest.raises(ValueError, match="do not split"):
        TensorizedLinear(7, 20, format=tnmars.Network.tt_matrix((2, 3), (4, 5), 2))
    layer = TensorizedLinear(12, 20, rank=2)
    with pytest.raises(ValueError, match="features"):
        layer(torch.randn(3, 11))
    emb = TensorizedEmbedding(10, 4, rank=2)
    with pytest.raises(ValueError, match="out of range"):
        emb(torch.tensor([10]))
    with pytest.raises(TypeError, match="integer"):
        emb(torch.tensor([1.0]))
    conv = Tucker2Conv2d(4, 6, 3)
    with pytest.raises(ValueError, match="expected input"):
        conv(torch.randn(2, 5, 8, 8))


def test_training_masks_follow_the_hard_concrete_law():
    from tnmars.masks import sample_probabilities

    torch.manual_seed(0)
    layer = FACTORIES["tucker"](temperature=0.5)  # 2-D fused sampling over 2+ bonds
    with torch.no_grad():
        for k, p in enumerate(layer.masks.bond_logits().values()):
            p.copy_(torch.linspace(-2.0, 2.0, p.numel()) + k)
    draws = {b: [] for b in layer.masks.bonds}
    for _ in range(4000):
        for b, m in layer.current_masks().items():
            draws[b].append(m.detach())
    for b, p in layer.masks.bond_logits().items():
        d = torch.stack(draws[b]).numpy()
        p0, p1 = sample_probabilities(p.detach().numpy(), 0.5)
        np.testing.assert_allclose((d == 0).mean(0), p0, atol=0.03)
        np.testing.assert_allclose((d == 1).mean(0), p1, atol=0.03)
    layer.eval()
    for b, m in layer.current_masks().items():
        torch.testing.assert_close(m, (layer.masks.bond_logits()[b].detach() > 0).float())


def _kernels(run) -> list[str]:
    """The aten ops ``run`` dispatches at the top level (what a GPU would launch)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return [e.name for e in prof.events()
            if e.name.startswith("aten::") and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))]


def test_device_draw_clamps_in_one_backward_kernel_with_the_gradient_of_the_host_draws():
    """The device-side hard-concrete draw (GPU, torch.compile) is bound by kernel launches on a
    GPU: its clamp to [0, 1] must backpropagate in one kernel (``clamp``'s takes four), and a
    draw clamped to exactly 0 or 1 sends its logit no gradient, as the host-classified draws."""
    from tnmars.nn.masks import hard_concrete_sample, logistic_noise

    logits = torch.nn.Parameter(torch.tensor([-30.0, -0.3, 0.0, 0.4, 30.0]))
    torch.manual_seed(0)
    noise = logistic_noise(logits)
    sample = hard_concrete_sample(logits, 2.0, noise)
    seed = torch.ones_like(sample)
    backward = _kernels(lambda: sample.backward(seed))
    assert not {"aten::le", "aten::ge", "aten::logical_and", "aten::where"} & set(backward), backward
    assert len(backward) <= 6, backward  # 6 on torch 2.13; clamp's backward would make it 9
    assert sample[0] == 0 and sample[-1] == 1 and logits.grad[0] == 0 and logits.grad[-1] == 0
    # strictly inside (0, 1): the chain rule of the formula
    z = torch.sigmoid((logits.detach() + noise) / 2.0)
    inside = (sample > 0) & (sample < 1)
    expected = (1.1 - -0.1) * z * (1 - z) / 2.0
    torch.testing.assert_close(logits.grad[inside], expected[inside])
    assert inside.sum() >= 2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("temperature", [0.01, 0.1, 2 / 3, 2.0])
def test_host_draw_codes_match_the_tensor_draw(dtype, temperature):
    """The training fold classifies each hard-concrete draw on the host from its uniform
    (``_draw_codes``): for the same uniforms, code 0 is exactly the draws the tensor formula
    clamps to 0, code 2 exactly those clamped to 1, code 1 those strictly inside (0, 1); and
    uniforms at or past the ``1e-6`` noise clamp are treated as the tensor path treats them."""
    from tnmars.nn.masks import _draw_codes, hard_concrete_sample, logistic_noise

    g = torch.Generator().manual_seed(int(temperature * 100))
    n = 20000
    logits = (torch.rand(n, generator=g, dtype=torch.float64) * 16 - 8).to(dtype)
    u = torch.rand(n, generator=g, dtype=torch.float64).to(dtype)
    u[:6] = torch.tensor([0.0, 1e-9, 1e-6, 1 - 1e-6, 1 - 1e-9, 1.0], dtype=dtype)
    sample = hard_concrete_sample(logits, temperature, torch.logit(u, eps=1e-6))
    codes = torch.tensor(_draw_codes(u.tolist(), logits.tolist(), temperature))
    expected = torch.where(sample == 0, 0, torch.where(sample == 1, 2, 1))
    mismatch = (codes != expected).nonzero().flatten().tolist()
    # float32 rounds near the clamp points; the host works in float64: allow a handful there
    assert len(mismatch) <= (0 if dtype == torch.float64 else 3), [
        (float(logits[i]), float(u[i]), float(sample[i])) for i in mismatch]
    assert {0, 1, 2} <= set(codes.tolist()) or temperature <= 0.01  # every outcome occurs
    # the same random stream: a layer's host draw consumes exactly what logistic_noise does
    torch.manual_seed(5)
    host = _draw_codes(torch.rand(n, dtype=dtype).tolist(), logits.tolist(), temperature)
    torch.manual_seed(5)
    tensor = hard_concrete_sample(logits, temperature, logistic_noise(logits))
    same = torch.tensor(host) == torch.where(tensor == 0, 0, torch.where(tensor == 1, 2, 1))
    assert int((~same).sum()) <= (0 if dtype == torch.float64 else 3)


# ------------------------------------------------------------------ the per-plan programs
from tnmars.testing.strategies import networks as _networks  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(net=_networks(backend="torch"), batch=st.sampled_from([1, 2, 5]), grad=st.booleans())
def test_programs_compute_what_the_generic_executor_computes(net, batch, grad):
    """The dropped no-op reshapes and permutes, the flat output, the flat data operand and the
    parameter-side values kept under no_grad change no entry and no gradient."""
    from tnmars.backends import get_backend
    from tnmars.contract import execute, make_plan
    from tnmars.nn.program import Program

    be = get_backend("torch")
    cores = [c.detach().double().requires_grad_(grad) for c in net.cores]
    letters = [c for c in net.output]
    data_term = "Z" + "".join(letters[: max(1, len(letters) // 2)]) if "Z" not in net.spec else None
    if data_term is None:
        return
    sizes = net.dims
    x = torch.randn((batch,) + tuple(sizes[c] for c in data_term[1:]), dtype=torch.float64)
    out = "Z" + "".join(c for c in letters if c not in data_term)
    plan = make_plan(net.inputs + (data_term,), out, tuple(tuple(c.shape) for c in cores) + (tuple(x.shape),))
    want = execute(plan, cores + [x], be)
    program = Program(plan, constants=len(cores), flat_output=True)
    data = x.reshape(batch, -1) if program.reshapes_data else x
    for _ in range(2):  # twice: the second call under no_grad reuses the kept values
        with torch.set_grad_enabled(grad):
            got = program(cores + [data]).reshape(want.shape)
        torch.testing.assert_close(got, want.detach() if not grad else want)
    if grad:
        g_want = torch.autograd.grad(want.sum(), cores)
        got = program(cores + [data]).reshape(want.shape)
        for a, b in zip(torch.autograd.grad(got.sum(), cores), g_want):
            torch.testing.assert_close(a, b)
    if not grad:  # a core changed in place invalidates the kept values
        with torch.no_grad():
            cores[0].add_(1.0)
            torch.testing.assert_close(program(cores + [data]).reshape(want.shape), execute(plan, cores + [x], be))


@pytest.mark.parametrize("shape", [(512, 10), (10, 512), (64, 64), (3, 2), (800, 500)])
def test_a_default_low_rank_layer_is_never_larger_than_the_dense_one(shape):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the size warning would be an error
        layer = LowRankLinear(*shape)
    (rank,) = layer.max_ranks.values()
    assert layer.num_params <= layer.dense_size
    assert rank == min(32, max(1, shape[0] * shape[1] // (shape[0] + shape[1])))
    with pytest.warns(UserWarning, match="more than the dense"):
        LowRankLinear(512, 10, rank=32)  # a rank the caller gives is kept, with the warning


@pytest.mark.parametrize("make", [lambda: TensorizedLinear(64, 32, rank=0.5), lambda: LowRankLinear(64, 32, rank=0.25),
                                  lambda: Tucker2Conv2d(8, 16, 3, rank=0.5)])
def test_a_share_given_as_a_fresh_layers_rank_points_to_the_conversions(make):
    """A float rank is a share of the dense parameters for the conversions of a trained layer;
    a fresh layer's error says where that is accepted."""
    with pytest.raises(TypeError, match="from_linear, from_conv, from_embedding and tnmars.nn.tensorize"):
        make()


@pytest.mark.parametrize("fmt", ["tt", "tr", "cp", "tucker"])
def test_a_default_matrix_layer_is_never_larger_than_the_dense_one_unless_rank_1_is(fmt):
    """Rank 8 on every bond was the default whatever the layer's size: ``TensorizedLinear(96, 10,
    format="tr")`` had 2,688 parameters for a 960-entry weight (TT, CP and Tucker layers of small
    or prime-sized weights were larger too, with a warning). A default layer now takes the
    largest uniform rank up to 8 that keeps it within the dense size; only where rank 1 is
    already larger is it larger, at rank 1, with the warning. A rank the caller gives is kept,
    with the warning."""
    makers = [lambda: TensorizedLinear(96, 10, fmt), lambda: TensorizedLinear(10, 96, fmt),
              lambda: TensorizedLinear(97, 10, fmt), lambda: TensorizedLinear(12, 20, fmt),
              lambda: TensorizedLinear(784, 625, fmt), lambda: TensorizedLinear(3, 2, fmt),
              lambda: TensorizedConv2d(3, 5, 3, format=fmt), lambda: TensorizedConv2d(16, 32, 3, format=fmt),
              lambda: TensorizedEmbedding(50, 6, fmt), lambda: TensorizedEmbedding(1000, 64, fmt)]
    for make in makers:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            layer = make()
        larger = [str(w.message) for w in caught if "more than the dense" in str(w.message)]
        if layer.num_params <= layer.dense_size:
            assert not larger, (layer, larger)
        else:  # not even rank 1 fits: the layer is at rank 1 and says it is larger
            assert larger and set(layer.max_ranks.values()) == {1}, layer
        assert not [w for w in caught if "clipped" in str(w.message)]  # (the caller gave no rank)
    big = TensorizedLinear(784, 625, fmt)
    assert max(big.max_ranks.values()) == 8  # a large layer keeps the default rank 8
    with pytest.warns(UserWarning, match="more than the dense layer's 960"):
        TensorizedLinear(96, 10, fmt, rank=32 if fmt == "cp" else 8 if fmt == "tr" else 16)


def test_default_ranks_are_clipped_quietly_and_given_ranks_loudly():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer = TensorizedLinear(128, 10)  # the default rank 8 does not fit every bond: not the caller's doing
        TensorizedConv2d(16, 32, 3)
        TensorizedEmbedding(1000, 64)
    with pytest.warns(UserWarning, match="clipped to the feasible"):
        given = TensorizedLinear(128, 10, rank=8)
    assert layer.max_ranks == given.max_ranks


@settings(max_examples=80, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4), min_rank=st.integers(1, 3),
       equal=st.booleans(), tied=st.booleans(), data=st.data())
def test_min_rank_top_up_on_the_device_equals_the_hosts(sizes, min_rank, equal, tied, data):
    """The top-up a GPU (or ``torch.compile``) applies without reading values on the host, in
    one batched pass for bonds of one length, forces the same entries to 1 as the host's, tied
    logits included (the first indices of a tie: topk chose others)."""
    from tnmars.nn.masks import BondMasks

    if equal:
        sizes = [sizes[0]] * len(sizes)
    masks = BondMasks({chr(65 + k): n for k, n in enumerate(sizes)}, min_rank=min_rank,
                      generator=torch.Generator().manual_seed(data.draw(st.integers(0, 10**6))))
    total = sum(sizes)
    if tied:
        ties = data.draw(st.lists(st.sampled_from([-2.0, 0.5]), min_size=total, max_size=total))
        with torch.no_grad():
            masks.logits.copy_(torch.tensor(ties))
    values = data.draw(st.lists(st.sampled_from([0.0, 0.3, 1.0]), min_size=total, max_size=total))
    flat = torch.tensor(values, dtype=masks.logits.dtype)
    expected = flat.index_fill(0, masks._top_up(flat != 0), 1.0)
    assert torch.equal(masks._top_up_on_device(flat), expected)


def test_a_network_given_as_format_sets_the_layers_dtype_unless_dtype_says_otherwise():
    """A float64 network gave a float32 layer, silently rounding its cores."""
    net = tnmars.Network.tt_matrix((3, 4), (4, 5), 2, seed=0)
    assert net.dtype == "float64"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (larger than the dense layer: not the point here)
        layer = TensorizedLinear(12, 20, format=net)
        assert all(c.dtype == torch.float64 for c in layer.cores) and layer.bias.dtype == torch.float64
        assert layer.cores[0].dtype == TensorizedLinear(12, 20, format=net.to("torch")).cores[0].dtype
        assert TensorizedLinear(12, 20, format=net, dtype=torch.float32).cores[0].dtype == torch.float32


def test_a_complex_network_as_format_is_refused():
    net = tnmars.Network.tt_matrix((3, 4), (4, 5), 2, seed=0).to(dtype="complex128")
    with pytest.raises(TypeError, match="imaginary part"):
        TensorizedLinear(12, 20, format=net)


@pytest.mark.parametrize("make", [
    lambda dtype: tnmars.nn.TensorizedLinear(16, 12, rank=3, in_shape=(4, 4), out_shape=(3, 4), dtype=dtype),
    lambda dtype: tnmars.nn.LowRankLinear(6, 4, rank=2, dtype=dtype),
    lambda dtype: tnmars.nn.Tucker2Conv2d(3, 4, 3, rank=(2, 2), dtype=dtype)])
def test_a_layer_built_in_float64_has_float64_logits_as_double_gives(make):
    built, converted = make(torch.float64), make(torch.float32).double()
    assert built.masks.logits.dtype == converted.masks.logits.dtype == torch.float64
    assert make(torch.float32).masks.logits.dtype == torch.float32


def test_a_tensor_ring_layer_reads_its_ranks_as_network_tr_does():
    """``rank[k]`` is core k's left rank (the order of the bonds, as :meth:`Network.tr` and TR fits
    read them); a ring layer took them around the ring, so ``max_ranks`` listed ``rank`` rotated."""
    layer = TensorizedLinear(12, 20, format="tr", rank=[1, 2, 3], in_shape=(2, 2, 3), out_shape=(2, 2, 5))
    assert tuple(layer.max_ranks.values()) == (1, 2, 3)
    assert [c.shape[0] for c in layer.cores] == [1, 2, 3] and [c.shape[-1] for c in layer.cores] == [2, 3, 1]


def test_a_min_rank_that_covers_a_bond_says_that_mars_cannot_select_there():
    """``min_rank`` at least a bond's size kept every index there whatever the masks learnt:
    MARS was on and could remove nothing, silently."""
    with pytest.warns(UserWarning, match=r"min_rank=8 is at least the size of bond\(s\) \['A'\] \(4\).*cannot remove"):
        TensorizedLinear(64, 64, rank=4, min_rank=8, in_shape=(8, 8), out_shape=(8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TensorizedLinear(64, 64, rank=4, min_rank=2, in_shape=(8, 8), out_shape=(8, 8))
