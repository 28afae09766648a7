"""Starting from a trained model: ``from_linear`` / ``from_conv`` / ``from_embedding`` and
``tensorize`` compute the dense layer's function at full rank, keep biases and convolution
settings, respect the parameter budget, and refuse what they cannot convert."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import tnmars.nn as tnn
from tnmars.nn import LowRankLinear, TensorizedConv2d, TensorizedEmbedding, TensorizedLinear, Tucker2Conv2d

torch.set_num_threads(1)
D64 = torch.float64


def _numpy_init(module: nn.Module, seed: int) -> nn.Module:
    """Weights drawn by NumPy (not torch's initialiser)."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.as_tensor(rng.standard_normal(tuple(p.shape)) / np.sqrt(p.shape[-1]), dtype=p.dtype))
    return module


def _trained(module: nn.Module, x: torch.Tensor, seed: int, steps: int = 30) -> nn.Module:
    """A few Adam steps on a random regression target: weights with the structure training gives."""
    torch.manual_seed(seed)
    with torch.no_grad():
        target = torch.randn_like(module(x))
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        ((module(x) - target) ** 2).mean().backward()
        opt.step()
    return module


def _weights(kind: str, module: nn.Module, x: torch.Tensor, seed: int) -> nn.Module:
    return _numpy_init(module, seed) if kind == "numpy" else _trained(module, x, seed)


def _same_function(layer: nn.Module, dense: nn.Module, x: torch.Tensor, tol: float = 1e-9) -> None:
    layer.eval()
    with torch.no_grad():
        want, got = dense(x), layer(x)
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) <= tol * max(scale, 1.0), float((got - want).abs().max())


CASES = {
    "linear-tt": lambda: (nn.Linear(12, 20), lambda m: TensorizedLinear.from_linear(m, "tt", "full", (3, 4), (4, 5)),
                          torch.randn(7, 12, dtype=D64)),
    "linear-tt-3cores-default-shapes": lambda: (nn.Linear(24, 30), lambda m: TensorizedLinear.from_linear(m, "tt", "full"),
                                                torch.randn(7, 24, dtype=D64)),
    "linear-tr": lambda: (nn.Linear(12, 20), lambda m: TensorizedLinear.from_linear(m, "tr", "full", (3, 4), (4, 5)),
                          torch.randn(7, 12, dtype=D64)),
    "linear-tucker": lambda: (nn.Linear(12, 20), lambda m: TensorizedLinear.from_linear(m, "tucker", "full", (3, 4), (4, 5)),
                              torch.randn(7, 12, dtype=D64)),
    "linear-cp": lambda: (nn.Linear(24, 30), lambda m: TensorizedLinear.from_linear(m, "cp", "full"),
                          torch.randn(7, 24, dtype=D64)),
    "linear-no-bias": lambda: (nn.Linear(12, 20, bias=False),
                               lambda m: TensorizedLinear.from_linear(m, "tt", "full", (3, 4), (4, 5)),
                               torch.randn(7, 12, dtype=D64)),
    "lowrank": lambda: (nn.Linear(12, 20), lambda m: LowRankLinear.from_linear(m, "full"), torch.randn(7, 12, dtype=D64)),
    "tucker2conv": lambda: (nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1),
                            lambda m: Tucker2Conv2d.from_conv(m, "full"), torch.randn(3, 4, 9, 9, dtype=D64)),
    "tucker2conv-dilated": lambda: (nn.Conv2d(3, 5, (3, 2), padding=(2, 1), dilation=2, bias=False),
                                    lambda m: Tucker2Conv2d.from_conv(m, "full"), torch.randn(2, 3, 8, 8, dtype=D64)),
    "ttconv": lambda: (nn.Conv2d(4, 6, 3, padding=1), lambda m: TensorizedConv2d.from_conv(m, "tt", "full"),
                       torch.randn(3, 4, 7, 7, dtype=D64)),
    "tuckerconv": lambda: (nn.Conv2d(4, 6, 3, stride=2), lambda m: TensorizedConv2d.from_conv(m, "tucker", "full", d=2),
                           torch.randn(3, 4, 7, 7, dtype=D64)),
    "embedding": lambda: (nn.Embedding(30, 8, padding_idx=4),
                          lambda m: TensorizedEmbedding.from_embedding(m, "tt", "full"),
                          torch.tensor([[0, 4, 29, 7], [5, 5, 13, 1]])),
    "embedding-tr": lambda: (nn.Embedding(30, 8), lambda m: TensorizedEmbedding.from_embedding(m, "tr", "full"),
                             torch.tensor([[0, 4, 29, 7], [5, 5, 13, 1]])),
    "cpconv": lambda: (nn.Conv2d(4, 6, 3, padding=1), lambda m: TensorizedConv2d.from_conv(m, "cp", "full"),
                       torch.randn(3, 4, 7, 7, dtype=D64)),
    "embedding-cp": lambda: (nn.Embedding(30, 8), lambda m: TensorizedEmbedding.from_embedding(m, "cp", "full"),
                             torch.tensor([[0, 4, 29, 7], [5, 5, 13, 1]])),
}


@pytest.mark.parametrize("kind", ["numpy", "trained"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.filterwarnings("ignore:.*more than the dense.*")
def test_full_rank_round_trip_computes_the_dense_function(case, kind):
    dense, convert, x = CASES[case]()
    dense = dense.double()
    if isinstance(dense, nn.Embedding):
        if kind == "numpy":
            _numpy_init(dense, 1)
        else:  # "trained": fit rows of the table
            _trained(dense, x, 1)
        with torch.no_grad():
            if dense.padding_idx is not None:
                dense.weight[dense.padding_idx] = 0.0  # what nn.Embedding keeps at the padding row
    else:
        _weights(kind, dense, x, 1)
    layer = convert(dense)
    assert layer.masks is not None and layer.selected_ranks() == layer.max_ranks  # default masks start open
    assert next(layer.parameters()).dtype == D64
    _same_function(layer, dense, x)
    if getattr(dense, "bias", None) is not None:
        torch.testing.assert_close(layer.bias, dense.bias)
    for attr in ("stride", "padding", "dilation", "padding_idx"):
        if hasattr(dense, attr) and hasattr(layer, attr):
            assert tuple(np.atleast_1d(getattr(layer, attr))) == tuple(np.atleast_1d(getattr(dense, attr)))


def _saddle_indices(layer: nn.Module) -> list[tuple[str, int]]:
    """Bond indices whose slice is zero in every core on the bond: no core there gets a gradient."""
    found = []
    for bond, places in layer.bond_axes.items():
        if len(places) < 2:
            continue
        for i in range(layer.dims[bond]):
            if all(not bool(layer.cores[k].detach().select(axis, i).any()) for k, axis in places):
                found.append((bond, i))
    return found


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.filterwarnings("ignore:.*more than the dense.*")
def test_a_zero_weight_converts_to_the_same_function_with_every_index_trainable(case):
    """Found by an outside probe: a zero-initialised ``nn.Linear`` (adapters, zero-init output
    layers) made a ``LowRankLinear`` with both factors zero, a saddle point it never left
    (loss flat over 200 Adam steps, no warning), and a rank-1 CP layer. Slices the weight
    cannot fill now take the fresh layer's initialisation in all but one core."""
    dense, convert, x = CASES[case]()
    dense = dense.double()
    with torch.no_grad():
        dense.weight.zero_()
    layer = convert(dense)
    _same_function(layer, dense, x, tol=0.0)
    assert _saddle_indices(layer) == []
    assert any(bool(c.detach().any()) for c in layer.cores)


def test_a_layer_converted_from_a_zero_weight_trains():
    torch.manual_seed(0)
    x = torch.randn(256, 32)
    target = x @ torch.randn(32, 32) / 6
    for convert in (LowRankLinear.from_linear, lambda m: TensorizedLinear.from_linear(m, "cp")):
        dense = nn.Linear(32, 32)
        with torch.no_grad():
            dense.weight.zero_()
        layer = convert(dense)
        assert layer.max_ranks["A"] > 1  # (CP took rank 1 from a zero weight's terms)
        opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
        first = None
        for _ in range(100):
            opt.zero_grad()
            loss = ((layer(x) - target) ** 2).mean()
            first = float(loss.detach()) if first is None else first
            loss.backward()
            opt.step()
        assert float(loss.detach()) < 0.5 * first, (convert, first, float(loss.detach()))


@pytest.mark.parametrize("kind", ["numpy", "trained"])
def test_slices_the_decomposition_leaves_empty_are_trainable_and_change_nothing(kind):
    """A ring starts as the TT-SVD chain in index 0 of its closing bond; the closing bond's other
    indices were zero in both cores they join, on any weight: a saddle that fine-tuning never
    left (a ring converted from a zero weight reached loss 0.47 where it now reaches 0.06)."""
    x = torch.randn(5, 12, dtype=D64)
    dense = _weights(kind, nn.Linear(12, 20).double(), x, 2)
    for fmt, rank in (("tr", 4), ("tr", None), ("cp", "full")):
        layer = TensorizedLinear.from_linear(dense, fmt, rank, (3, 4), (4, 5))
        if rank == "full":
            _same_function(layer, dense, x)
        else:  # the same function as the decomposition's chain alone
            _same_function(layer, TensorizedLinear.from_linear(dense, fmt, rank, (3, 4), (4, 5), mars=False), x)
        assert _saddle_indices(layer) == [], (fmt, rank)


def test_cp_round_trip_on_a_weight_of_low_cp_rank():
    """A weight with an exact CP decomposition at the given rank is recovered, and ``"full"``
    is the rank at which every weight of those shapes is exact (``min(12, 20)`` for two merged modes)."""
    rng = np.random.default_rng(0)
    factors = [rng.standard_normal((n, 2)) for n in (3 * 4, 4 * 5)]
    merged = factors[0] @ factors[1].T  # (i1 o1, i2 o2)
    w = merged.reshape(3, 4, 4, 5).transpose(0, 2, 1, 3).reshape(12, 20)  # (in, out)
    dense = nn.Linear(12, 20).double()
    with torch.no_grad():
        dense.weight.copy_(torch.as_tensor(w.T))
    layer = TensorizedLinear.from_linear(dense, "cp", 2, (3, 4), (4, 5))
    _same_function(layer, dense, torch.randn(5, 12, dtype=D64), tol=1e-6)
    with pytest.warns(UserWarning, match="more than the dense"):
        full = TensorizedLinear.from_linear(dense, "cp", "full", (3, 4), (4, 5))
    assert full.max_ranks == {"A": 12}
    _same_function(full, dense, torch.randn(5, 12, dtype=D64))


def test_float32_layers_and_truncation_error_falls_with_rank():
    torch.manual_seed(0)
    dense = nn.Linear(64, 48)
    x = torch.randn(50, 64)
    errors = []
    for rank in (2, 12, 48):  # 48 = min(8 * 6, 8 * 8): the exact TT rank
        layer = TensorizedLinear.from_linear(dense, "tt", rank, (8, 8), (6, 8)).eval()
        assert layer.cores[0].dtype == torch.float32
        with torch.no_grad():
            errors.append(float((layer(x) - dense(x)).norm() / dense(x).norm()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5


@pytest.mark.parametrize("fraction", [None, 1.0, 0.25])
def test_default_ranks_stay_within_the_parameter_budget(fraction):
    dense = nn.Linear(96, 80)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "more than the dense" or rank-clipping warning
        warnings.filterwarnings("ignore", message=".*changed the weight by")  # (random weights: they move)
        layers = [TensorizedLinear.from_linear(dense, fmt, fraction, (4, 4, 6), (4, 4, 5))
                  for fmt in ("tt", "tr", "tucker", "cp")]
        layers.append(LowRankLinear.from_linear(dense, fraction))
        layers.append(Tucker2Conv2d.from_conv(nn.Conv2d(10, 20, 3), fraction))
        layers.append(TensorizedConv2d.from_conv(nn.Conv2d(10, 20, 3), "tt", fraction))
        layers.append(TensorizedEmbedding.from_embedding(nn.Embedding(200, 16), "tt", fraction))
    share = 1.0 if fraction is None else fraction
    for layer in layers:
        assert layer.num_params <= share * layer.dense_size
        assert layer.num_params > 0.25 * share * layer.dense_size / 4  # the largest rank that fits, not a tiny one


def test_layer_options_reach_the_new_layer_and_unknown_ones_are_refused():
    dense = nn.Linear(12, 20)
    layer = TensorizedLinear.from_linear(dense, "tt", 3, (3, 4), (4, 5), mars="hard", min_rank=2, temperature=0.3)
    assert (layer.masks.pi, layer.masks.alpha, layer.masks.min_rank, layer.masks.temperature) == (0.01, -1.75, 2, 0.3)
    plain = LowRankLinear.from_linear(dense, 4, mars=False)
    assert plain.masks is None
    with pytest.raises(TypeError, match="unexpected keyword"):
        TensorizedLinear.from_linear(dense, "tt", 3, (3, 4), (4, 5), lr=0.1)


def test_bad_inputs_are_refused_with_a_message():
    with pytest.raises(TypeError, match="nn.Linear"):
        TensorizedLinear.from_linear(nn.Conv2d(3, 4, 3))
    with pytest.raises(TypeError, match="nn.Conv2d"):
        Tucker2Conv2d.from_conv(nn.Linear(3, 4))
    with pytest.raises(ValueError, match="grouped"):
        Tucker2Conv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="padding_mode"):
        TensorizedConv2d.from_conv(nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"))
    with pytest.raises(ValueError, match="padding='same' needs"):  # (an odd kernel's "same" works)
        TensorizedConv2d.from_conv(nn.Conv2d(4, 4, 2, padding="same"))
    with pytest.raises(ValueError, match="max_norm"):
        TensorizedEmbedding.from_embedding(nn.Embedding(10, 4, max_norm=1.0))
    pretrained = nn.Embedding.from_pretrained(torch.randn(12, 4), freeze=False, padding_idx=0)  # row 0 not zero
    with pytest.warns(UserWarning, match="row padding_idx=0 of the table is not zero"):
        TensorizedEmbedding.from_embedding(pretrained, rank="full")
    with torch.no_grad():
        pretrained.weight[0] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*more than the dense layer")  # (full rank of a small table)
        TensorizedEmbedding.from_embedding(pretrained, rank="full")
    with pytest.raises(ValueError, match="unknown format"):
        TensorizedLinear.from_linear(nn.Linear(4, 4), "ttt")
    with pytest.raises(ValueError, match="share"):
        TensorizedLinear.from_linear(nn.Linear(4, 4), "tt", 1.5)
    with pytest.raises(ValueError, match="rank must be"):
        LowRankLinear.from_linear(nn.Linear(4, 4), "most")


class _Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 12)
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.grouped = nn.Conv2d(6, 6, 3, padding=1, groups=3)
        self.norm = nn.BatchNorm2d(6)
        self.body = nn.Sequential(nn.Linear(6 * 4 * 4 + 12, 24), nn.ReLU(), nn.Linear(24, 5))

    def forward(self, image: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.grouped(torch.relu(self.conv(image)))).flatten(1)
        return self.body(torch.cat([h, self.emb(token)], dim=1))


def test_tensorize_a_model_with_mixed_layers():
    torch.manual_seed(0)
    model = _Mixed().double().eval()
    image, token = torch.randn(3, 1, 4, 4, dtype=D64), torch.tensor([1, 7, 19])
    with pytest.warns(UserWarning, match="grouped"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*more than the dense.*")
            full = tnn.tensorize(model, rank="full", linear="tt", conv="tucker2", embedding="tt")
    kinds = {name: type(m).__name__ for name, m in full.named_modules()}
    assert kinds["emb"] == "TensorizedEmbedding" and kinds["conv"] == "Tucker2Conv2d"
    assert kinds["grouped"] == "Conv2d" and kinds["norm"] == "BatchNorm2d"
    assert kinds["body.0"] == kinds["body.2"] == "TensorizedLinear"
    assert type(model.body[0]) is nn.Linear  # a copy: the input model is unchanged
    full.eval()
    with torch.no_grad():
        torch.testing.assert_close(full(image, token), model(image, token), rtol=1e-9, atol=1e-9)
    # MARS trains the converted model; summary lists every converted layer
    assert [r.name for r in tnn.summary(full).layers] == ["emb", "conv", "body.0", "body.2"]


def test_replacements_keep_the_eval_mode_and_the_frozen_parameters_of_the_layers_they_replace():
    """A model loaded for evaluation (``eval()``) and tensorized gave layers in training mode
    (random mask draws at every call), and a frozen backbone came back trainable."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    small = tnn.tensorize(model, rank="full", progress=False)
    assert not any(m.training for m in small.modules())
    x = torch.randn(5, 64)
    with torch.no_grad():
        assert torch.equal(small(x), small(x))
        torch.testing.assert_close(small(x), model(x), rtol=1e-4, atol=1e-5)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    model[0].requires_grad_(False)
    small = tnn.tensorize(model, rank=8, progress=False)
    frozen = {name for name, p in small.named_parameters() if not p.requires_grad}
    assert frozen == {name for name, _ in small[0].named_parameters(prefix="0")} and "0.bias" in frozen
    assert small[0].masks is None and small[2].masks is not None  # no rank selection in a frozen layer
    assert small[0].training and small[2].training
    assert {n for n, p in tnn.compress(small.eval()).named_parameters() if not p.requires_grad} == frozen
    # masks that start closed (a negative alpha, as the presets) would have cut a frozen layer to min_rank
    closed = tnn.tensorize(model, rank="full", alpha=-1.5, progress=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(closed[0](x), model[0](x), rtol=1e-4, atol=1e-5)
    conv = nn.Conv2d(4, 8, 3).eval()
    conv.bias.requires_grad_(False)
    for layer in (Tucker2Conv2d.from_conv(conv, rank="full"), TensorizedConv2d.from_conv(conv, rank="full")):
        assert not layer.training
        assert [n for n, p in layer.named_parameters() if not p.requires_grad] == ["bias"]
    table = nn.Embedding(30, 8).requires_grad_(False)
    layer = TensorizedEmbedding.from_embedding(table, rank="full")
    assert layer.training and not any(p.requires_grad for p in layer.parameters())


@pytest.mark.parametrize("padding, dilation", [("same", 1), ("valid", 1), ("same", 2)])
def test_from_conv_takes_padding_given_as_a_string(padding, dilation):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=padding, dilation=dilation).eval()
    x = torch.randn(2, 8, 9, 9)
    for convert in (Tucker2Conv2d.from_conv, TensorizedConv2d.from_conv):
        layer = convert(conv, rank="full")
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="Tucker2Conv2d.from_conv: padding='same' needs"):
        Tucker2Conv2d.from_conv(nn.Conv2d(8, 16, 4, padding="same"))


@pytest.mark.parametrize("conv", ["tucker2", "tt"])
def test_tensorize_converts_string_paddings_it_can_pad_evenly_and_skips_the_others(conv):
    """The docstring said string paddings are skipped; the code converts ``"valid"`` and a
    ``"same"`` it pads by whole pixels (exactly, at full rank), and only a ``"same"`` that pads
    unevenly (an even kernel) is left dense with a warning (named: an error)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding="same"), nn.Conv2d(8, 8, 3, padding="valid"),
                          nn.Conv2d(8, 8, 4, padding="same")).eval()
    with pytest.warns(UserWarning, match=r"left these layers dense: 2: .*padding='same' needs .*an even dilation"):
        small = tnn.tensorize(model, conv=conv, rank="full")
    assert [type(m) for m in small] == [Tucker2Conv2d if conv == "tucker2" else TensorizedConv2d] * 2 + [nn.Conv2d]
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(small(x), model(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="padding='same' needs"):
        tnn.tensorize(model, ["2"], conv=conv)
    doc = " ".join(tnn.tensorize.__doc__.split())
    assert "string paddings" not in doc and 'padding="same"`` that pads unevenly' in doc


def test_tensorize_filters_and_formats():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 10), nn.Linear(10, 10))
    only = tnn.tensorize(model, ["2"], linear="lowrank", rank=4)
    assert [type(m).__name__ for m in only] == ["Conv2d", "Flatten", "LowRankLinear", "Linear"]
    by_rule = tnn.tensorize(model, lambda name, m: isinstance(m, nn.Conv2d), conv="tt", rank=3)
    assert type(by_rule[0]) is TensorizedConv2d and type(by_rule[2]) is nn.Linear
    same = tnn.tensorize(model, inplace=True, linear=None, conv=None)
    assert same is model and type(model[2]) is nn.Linear
    with pytest.raises(ValueError, match="no modules named"):
        tnn.tensorize(model, ["9"])
    with pytest.raises(TypeError, match="list, not a string"):
        tnn.tensorize(model, "2")
    with pytest.raises(ValueError, match="linear must be"):
        tnn.tensorize(model, linear="svd")
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="grouped"):  # named explicitly: refused, not skipped
        tnn.tensorize(grouped, ["0"])


def test_tensorize_says_when_the_conversion_changes_the_function():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = tnn.tensorize(model)  # random weights at most dense size: far from exact
    changed = [str(w.message) for w in caught if "changed the weights" in str(w.message)]
    assert len(changed) == 1 and "'3' by" in changed[0] and "rank='full'" in changed[0]
    from tnmars.nn.budget import weight_error
    for name in ("0", "3", "5"):
        layer = small.get_submodule(name)
        assert layer.conversion_error == pytest.approx(weight_error(model.get_submodule(name), layer) ** 0.5)
        assert layer.conversion_error > 0.1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exact = tnn.tensorize(model, rank="full")
    assert not [w for w in caught if "changed the weights" in str(w.message)]
    assert all(exact.get_submodule(n).conversion_error < 1e-5 for n in ("0", "3", "5"))


def test_each_constructor_says_when_its_conversion_changes_the_function():
    """Found by a probe (2026-12-04): ``TensorizedConv2d.from_conv(nn.Conv2d(8, 16, 3))`` at the
    default rank moved the weight by 32% and the outputs by up to 0.7, without a word, while
    ``tensorize`` warned of the same conversion; the constructors did not set ``conversion_error``."""
    from tnmars.nn.budget import weight_error
    torch.manual_seed(0)
    cases = [(lambda m, r: TensorizedLinear.from_linear(m, rank=r), nn.Linear(48, 40), "TensorizedLinear.from_linear"),
             (lambda m, r: LowRankLinear.from_linear(m, rank=r), nn.Linear(48, 40), "LowRankLinear.from_linear"),
             (lambda m, r: TensorizedConv2d.from_conv(m, rank=r), nn.Conv2d(8, 16, 3), "TensorizedConv2d.from_conv"),
             (lambda m, r: Tucker2Conv2d.from_conv(m, rank=r), nn.Conv2d(8, 16, 3), "Tucker2Conv2d.from_conv"),
             (lambda m, r: TensorizedEmbedding.from_embedding(m, rank=r), nn.Embedding(60, 16),
              "TensorizedEmbedding.from_embedding")]
    for convert, dense, what in cases:
        with pytest.warns(UserWarning, match=f"{what} changed the weight by [0-9]+%") as caught:
            layer = convert(dense, None)
        assert any(w.filename == __file__ for w in caught)  # attributed to the caller's line
        assert layer.conversion_error == pytest.approx(weight_error(dense, layer) ** 0.5)
        assert layer.conversion_error > 0.1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exact = convert(dense, "full")
        assert not [w for w in caught if "changed the weight" in str(w.message)], what
        assert exact.conversion_error < 1e-5
    frozen = nn.Linear(48, 40).requires_grad_(False)
    with pytest.warns(UserWarning, match="fine-tuning will NOT recover it"):
        TensorizedLinear.from_linear(frozen)
    with warnings.catch_warnings(record=True) as caught:  # masks that start closed: said as such, not as a change
        warnings.simplefilter("always")
        TensorizedLinear.from_linear(nn.Linear(48, 40).eval(), mars="hard")
    said = [str(w.message) for w in caught]
    assert any("masks start closed" in m for m in said) and not any("changed the weight" in m for m in said)
    with warnings.catch_warnings(record=True) as caught:  # (in training mode: nothing trained, nothing to say; the
        warnings.simplefilter("always")                   # error's eval() said "every mask ... closed", found by review)
        TensorizedLinear.from_linear(nn.Linear(48, 40), mars="hard", min_rank=0)
    assert not [w for w in caught if "every mask of bond" in str(w.message) or "closed every" in str(w.message)]


def test_tensorize_and_from_attention_say_the_changed_weights_once():
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tnn.tensorize(nn.Sequential(nn.Linear(48, 40), nn.ReLU(), nn.Linear(40, 10)))
    said = [str(w.message) for w in caught if "changed the weight" in str(w.message)]
    assert len(said) == 1 and said[0].startswith("tensorize changed the weights of '0' by"), said
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attention = tnn.TensorizedMultiheadAttention.from_attention(nn.MultiheadAttention(32, 4))
    said = [str(w.message) for w in caught if "changed the weight" in str(w.message)]
    assert len(said) == 1 and "'q_proj' by" in said[0] and "'out_proj' by" in said[0], said
    assert attention.q_proj.conversion_error > 0.1


def test_tensorize_keeps_a_shared_layer_shared():
    torch.manual_seed(0)

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            shared = nn.Linear(64, 64)
            self.a, self.b = shared, shared

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x)))

    model = Tied()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank='full' is larger than the dense layer
        small = tnn.tensorize(model, rank="full").eval()
    assert isinstance(small.b, TensorizedLinear) and small.a is small.b
    x = torch.randn(3, 64)
    assert torch.allclose(small(x), model(x), atol=1e-5)


def _tied_language_model() -> nn.Module:
    """Tied input and output embeddings: the output layer's weight is the embedding's tensor."""
    model = nn.ModuleDict({"emb": nn.Embedding(100, 32), "hidden": nn.Linear(32, 32),
                           "head": nn.Linear(32, 100, bias=False)})
    model["head"].weight = model["emb"].weight
    return model


def test_tensorize_leaves_tied_weights_dense_and_says_why():
    torch.manual_seed(0)
    model = _tied_language_model()
    with pytest.warns(UserWarning, match=r"emb: its weight is also 'head.weight' \(tied parameters\)"):
        small = tnn.tensorize(model)
    assert isinstance(small["emb"], nn.Embedding) and isinstance(small["head"], nn.Linear)
    assert small["head"].weight is small["emb"].weight              # still one tensor
    assert isinstance(small["hidden"], TensorizedLinear)             # the untied layer is converted
    with pytest.warns(UserWarning, match="tied parameters"):         # a filter picking one side is no way round
        one_side = tnn.tensorize(model, lambda name, m: name == "head")
    assert one_side["head"].weight is one_side["emb"].weight


def test_tensorize_refuses_a_named_tied_layer():
    with pytest.raises(ValueError, match=r"'head' \(its weight is also 'emb.weight'\)"):
        tnn.tensorize(_tied_language_model(), ["head"])


def test_only_layers_tensorize_would_convert_are_checked_for_ties_and_a_shared_bias_is_a_tie():
    torch.manual_seed(0)
    model = _tied_language_model()
    model["ln1"], model["ln2"] = nn.LayerNorm(32), nn.LayerNorm(32)
    model["ln2"].weight = model["ln1"].weight                      # never converted: no warning about it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept = tnn.tensorize(model, ["hidden"], embedding=None)
    assert not [w for w in caught if "tied" in str(w.message)]
    assert isinstance(kept["hidden"], TensorizedLinear) and kept["head"].weight is kept["emb"].weight
    with pytest.raises(ValueError, match="'ln1': a LayerNorm; tensorize converts"):
        tnn.tensorize(model, ["hidden", "ln1"], embedding=None)  # named, never converted: said, not skipped
    pair = nn.ModuleDict({"a": nn.Linear(16, 16), "b": nn.Linear(16, 16)})
    pair["b"].bias = pair["a"].bias
    with pytest.warns(UserWarning, match=r"a: its bias is also 'b.bias'"):
        out = tnn.tensorize(pair)
    assert out["a"].bias is out["b"].bias and isinstance(out["a"], nn.Linear)


def test_a_named_layer_tensorize_does_not_convert_is_an_error_and_a_subclass_met_on_the_walk_is_reported():
    """``MultiheadAttention`` reads ``out_proj.weight`` itself, so its ``out_proj`` (a subclass of
    ``nn.Linear``) is never replaced on its own: naming it, a module of another type, or a type
    whose format is ``None`` raises before anything changes; with ``attention=None`` the walk
    converts the feed-forward layers and names ``out_proj`` among the layers left dense (with
    a format, the attention is converted as a whole: ``tests/test_nn_attention.py``)."""
    torch.manual_seed(0)
    block = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, batch_first=True)
    before = {k: v.clone() for k, v in block.state_dict().items()}
    for names, match in ((["self_attn.out_proj"], "a NonDynamicallyQuantizableLinear, a subclass of nn.Linear"),
                         (["linear1", "norm1"], "'norm1': a LayerNorm; tensorize converts nn.Linear"),
                         (["linear1", "self_attn"], "'self_attn': attention=None leaves nn.MultiheadAttention")):
        with pytest.raises(ValueError, match=match):
            tnn.tensorize(block, names, inplace=True, attention=None if "self_attn" in names else "tt")
    with pytest.raises(ValueError, match="linear=None leaves nn.Linear layers alone"):
        tnn.tensorize(block, ["linear1"], linear=None, inplace=True)
    assert all(torch.equal(v, before[k]) for k, v in block.state_dict().items())  # nothing was replaced
    assert type(block.linear1) is nn.Linear
    with pytest.warns(UserWarning, match=r"left these layers dense: self_attn.out_proj: a NonDynamically"):
        small = tnn.tensorize(block, rank="full", attention=None)
    assert isinstance(small.linear1, TensorizedLinear) and type(small.self_attn.out_proj) is not TensorizedLinear
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(small.eval()(x), block.eval()(x), rtol=1e-4, atol=1e-5)


class _RecurrentHead(nn.Module):
    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(16, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x))


@pytest.mark.parametrize("make", [lambda: tnn.LSTM(16, 16, stable=True, seed=0),
                                  lambda: tnn.TanhRNN(16, 16, lam=0.9, seed=0)], ids=["lstm", "tanh_rnn"])
def test_tensorize_leaves_a_tnmars_recurrent_model_whole_so_its_stability_projection_still_works(make):
    """An outside probe: ``tensorize`` turned a stable LSTM's ``input`` (an ``nn.Linear``) into a
    TensorizedLinear, whose ``weight`` is only computed, so ``project_`` / ``enforce_stability``
    bounded a copy and the model left the stable set silently. Now the recurrent model's layers
    stay dense, with a warning naming them; naming one raises before anything changes."""
    torch.manual_seed(0)
    model = _RecurrentHead(make())
    with pytest.warns(UserWarning, match=r"left these layers dense: rnn\.input: it is inside 'rnn', a tnmars "
                                         r"(LSTM|TanhRNN) whose own logic \(its stability projection"):
        small = tnn.tensorize(model, rank="full")
    assert isinstance(small.head, TensorizedLinear)                  # the plain layer is converted
    assert type(small.rnn.input) is nn.Linear                        # the recurrent internals are not
    assert not any(isinstance(m, tnn.TensorizedLayer) for m in small.rnn.modules())
    with torch.no_grad():                                            # leave the stable set, then project
        small.rnn.input.weight.mul_(100.0)
        if isinstance(small.rnn, tnn.LSTM):
            small.rnn.weight.mul_(100.0)
        else:
            small.rnn.weight.copy_(3.0 * torch.eye(16))
    assert small.rnn.constraint_ratio() > 1.5
    tnn.enforce_stability(small)
    assert small.rnn.constraint_ratio() <= 1.0 + 1e-5
    # named explicitly: refused before anything changes (the recurrent model itself too)
    for names, match in ((["head", "rnn.input"], r"cannot convert 'rnn\.input': it is inside 'rnn', a tnmars"),
                         (["rnn"], r"cannot convert 'rnn': a tnmars (LSTM|TanhRNN), whose own logic")):
        with pytest.raises(ValueError, match=match):
            tnn.tensorize(model, names, inplace=True)
        assert type(model.head) is nn.Linear and type(model.rnn.input) is nn.Linear
    with pytest.warns(UserWarning, match=r"converted no layer: every layer it met was left dense"):
        alone = tnn.tensorize(make())                                  # the recurrent model given itself
    assert type(alone.input) is nn.Linear


def test_tensorize_names_the_layers_of_types_it_does_not_convert():
    """Outside probe: a Conv1d, or a decoder's ConvTranspose2d (its largest layer), stayed dense
    without a word, so a sequence model or an autoencoder was barely compressed, unexplained.
    The walk names them (and torch's LSTM, a custom module's own weight matrix); tnmars layers
    and 1-D parameters (norms) are not listed; a callable filter's selection is named as such."""

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = nn.Parameter(torch.randn(6, 16))
            self.norm = nn.LayerNorm(16)

        def forward(self, x):
            return self.norm(x)

    model = nn.Sequential(nn.Conv1d(8, 8, 3), nn.Flatten(), nn.Linear(48, 32), nn.ConvTranspose2d(4, 2, 3),
                          nn.LSTM(4, 8), Scaled(), TensorizedLinear(16, 16, rank=2, in_shape=(4, 4), out_shape=(4, 4)))
    with pytest.warns(UserWarning) as caught:
        tnn.tensorize(model, rank="full")
    said = [str(w.message) for w in caught if "converts nn.Linear, nn.Conv2d" in str(w.message)]
    assert said == ["tensorize converts nn.Linear, nn.Conv2d, nn.Embedding and nn.MultiheadAttention only; these "
                    "layers stay dense: '0' (Conv1d, 192 weights), '3' (ConvTranspose2d, 72 weights), '4' (LSTM, "
                    "384 weights), '5' (Scaled, 96 weights)"]
    with pytest.warns(UserWarning, match=r"these layers the filter selected stay dense: '0' \(Conv1d"):
        tnn.tensorize(model, lambda name, m: name in ("0", "2"), rank="full")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tnn.tensorize(nn.Sequential(nn.Linear(48, 32), nn.LayerNorm(32)), rank="full")
    assert not [w for w in caught if "stay dense" in str(w.message)]


def test_tensorize_that_converts_nothing_says_so():
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
    with pytest.warns(UserWarning, match="converted no layer: the model has no nn.Linear / nn.Conv2d / nn.Embedding / "
                                         "nn.MultiheadAttention layer that the filter selects; the model is returned "
                                         "unchanged"):
        same = tnn.tensorize(model, lambda name, m: isinstance(m, nn.Conv2d))
    assert type(same[0]) is nn.Linear
    with pytest.warns(UserWarning, match="converted no layer: the model has no nn.Conv2d / nn.Embedding layer;"):
        tnn.tensorize(model, linear=None, attention=None)
    with pytest.warns(UserWarning, match="converted no layer: every layer it met was left dense"):
        tnn.tensorize(nn.Sequential(nn.Linear(7, 13)))  # larger than dense even at rank 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = tnn.tensorize(model)  # converts: no such warning
    assert isinstance(converted[0], TensorizedLinear)
    assert not [w for w in caught if "converted no layer" in str(w.message)]
    with pytest.warns(UserWarning, match=r"layer \(its layers '0' are tensorized already\)"):  # (an outside probe)
        tnn.tensorize(converted)


def _poisoned(module: nn.Module, value: float) -> nn.Module:
    with torch.no_grad():
        module.weight.view(-1)[3] = value
    return module


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("module, convert", [
    (lambda: nn.Linear(20, 12), lambda m: TensorizedLinear.from_linear(m, in_shape=(4, 5), out_shape=(3, 4))),
    (lambda: nn.Linear(20, 12), LowRankLinear.from_linear),
    (lambda: nn.Conv2d(4, 6, 3), Tucker2Conv2d.from_conv),
    (lambda: nn.Conv2d(4, 6, 3), lambda m: TensorizedConv2d.from_conv(m, in_shape=(2, 2), out_shape=(2, 3))),
    (lambda: nn.Embedding(20, 12), lambda m: TensorizedEmbedding.from_embedding(m, voc_shape=(4, 5),
                                                                                emb_shape=(3, 4))),
], ids=["tt-linear", "low-rank", "tucker2-conv", "tt-conv", "embedding"])
def test_a_weight_with_nan_or_inf_is_refused_by_name(module, convert, bad):
    with pytest.raises(ValueError, match=r"weight has 1 NaN or infinite entry"):
        convert(_poisoned(module(), bad))


def test_a_nan_bias_is_refused_and_tensorize_leaves_that_layer_dense_with_a_warning():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
    with torch.no_grad():
        model[2].bias[0] = float("nan")
    with pytest.raises(ValueError, match="bias has 1 NaN"):
        TensorizedLinear.from_linear(model[2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = tnn.tensorize(model)  # (it also says how much layer 0's weights changed)
    assert any("left these layers dense: 2: " in str(w.message) and "bias has 1 NaN" in str(w.message)
               for w in caught)
    assert isinstance(out[0], TensorizedLinear) and type(out[2]) is nn.Linear


def test_a_network_with_non_finite_cores_is_refused_as_a_layer_format():
    import tnmars
    net = tnmars.Network.tt_matrix((4, 5), (3, 4), 3, backend="torch", dtype="float32", seed=0)
    cores = [c.clone() for c in net.cores]
    cores[1].view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match=r"core\(s\) \[1\] .* NaN or infinite"):
        TensorizedLinear(20, 12, format=tnmars.Network.from_cores(net.spec, cores))


def test_tensorize_leaves_a_layer_dense_when_even_rank_1_is_larger_and_converts_it_when_named():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 13), nn.ReLU(), nn.Linear(64, 64))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = tnn.tensorize(model)
    messages = [str(w.message) for w in caught]
    assert type(out[0]) is nn.Linear and isinstance(out[2], TensorizedLinear)
    assert any("left these layers dense: 0: even at ranks" in m and "more than the dense layer's 91" in m
               for m in messages)
    assert not any(m.startswith("TensorizedLinear at ranks") for m in messages)  # no warning about a layer not built
    assert out[2].num_params <= out[2].dense_size
    with pytest.warns(UserWarning, match="more than the dense layer's 91"):  # named: converted, with the size warning
        named = tnn.tensorize(model, ["0"])
    assert isinstance(named[0], TensorizedLinear) and named[0].num_params > named[0].dense_size


def test_from_embedding_says_which_lookup_options_it_cannot_carry_over():
    """``sparse=True`` and ``scale_grad_by_freq=True`` were dropped silently."""
    with pytest.warns(UserWarning, match="sparse=True and scale_grad_by_freq=True not carried over"):
        TensorizedEmbedding.from_embedding(nn.Embedding(30, 8, sparse=True, scale_grad_by_freq=True), rank="full")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*more than the dense")  # (rank "full": not the point)
        TensorizedEmbedding.from_embedding(nn.Embedding(30, 8), rank="full")
    with warnings.catch_warnings(record=True) as caught:  # a small embedding the walk leaves dense keeps both
        warnings.simplefilter("always")
        tnn.tensorize(nn.Sequential(nn.Embedding(7, 3, sparse=True), nn.Linear(3, 3)), progress=False)
    assert not any("not carried over" in str(w.message) for w in caught)


def test_tensorize_moves_a_layers_hooks_to_its_replacement():
    """Forward hooks (feature capture) and pre-hooks (input scaling) of converted layers were
    dropped silently: outputs changed even at full rank and captured features stopped."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    feats = []
    handle = model[0].register_forward_hook(lambda m, i, o: feats.append(o))
    model[2].register_forward_pre_hook(lambda m, i: (i[0] * 0.5,))
    x = torch.randn(3, 16)
    ref = model(x)
    with pytest.warns(UserWarning, match=r"moved the forward / backward hooks of '0', '2'"):
        small = tnn.tensorize(model, rank="full", progress=False, inplace=True)
    seen = len(feats)
    torch.testing.assert_close(small(x), ref, rtol=1e-5, atol=1e-6)
    assert len(feats) == seen + 1 and feats[-1].shape == (3, 16)
    handle.remove()  # the handle the user kept still removes the hook, now on the tensorized layer
    small(x)
    assert len(feats) == seen + 1


def test_tensorize_refuses_layers_with_old_style_reparametrisation_hooks():
    """``nn.utils.spectral_norm`` recomputes ``weight`` in a pre-hook: after ``load_state_dict``
    the stored weight is stale, and converting it gave a wrong model at full rank; copying such
    a model raised torch's deepcopy error, which did not say why."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.utils.spectral_norm(nn.Linear(16, 16)), nn.ReLU(), nn.Linear(16, 4))
    model(torch.randn(2, 16))
    with pytest.raises(ValueError, match=r"'0' \(spectral_norm\).*remove_spectral_norm"):
        tnn.tensorize(model, rank="full", progress=False)
    with pytest.warns(UserWarning, match=r"left these layers dense: 0: its weight is recomputed .* spectral_norm"):
        small = tnn.tensorize(model, rank="full", progress=False, inplace=True)
    assert isinstance(small[0], nn.Linear) and isinstance(small[2], TensorizedLinear)
    with pytest.raises(ValueError, match="cannot convert '0'.*spectral_norm"):
        tnn.tensorize(nn.Sequential(nn.utils.spectral_norm(nn.Linear(8, 8))), ["0"], rank="full", inplace=True)


def test_a_layer_shared_under_two_names_is_converted_when_either_is_named():
    """``m[2] is m[4]``: naming ``"4"`` raised "no modules named ['4']" and a filter selecting
    ``"4"`` converted nothing (the walk saw each module under its first name only)."""
    shared = nn.Linear(16, 16)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), shared, nn.ReLU(), shared)
    for chosen in (["4"], lambda name, module: name == "4"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = tnn.tensorize(model, chosen, rank=4, progress=False)
        assert isinstance(out[2], TensorizedLinear) and out[2] is out[4] and isinstance(out[0], nn.Linear)


def test_rank_shares_that_cannot_be_met_warn_and_bool_or_numpy_ranks_are_read_as_meant():
    """Found by review: ``rank=0.1`` built rank 1 with 266 parameters for a 2,560-entry layer's
    256 without a word; ``rank=True`` became rank 1; ``rank=np.float32(0.5)`` was refused."""
    with pytest.warns(UserWarning, match="a rank share of 0.1 cannot be met"):
        layer = LowRankLinear.from_linear(nn.Linear(256, 10), rank=0.1)
    assert layer.max_ranks == {"A": 1}
    with pytest.warns(UserWarning, match="a rank share of 0.1 cannot be met"):
        TensorizedConv2d.from_conv(nn.Conv2d(5, 7, 3), "tt", rank=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (the share is met: no warning of it)
        warnings.filterwarnings("ignore", message=".*changed the weight by")  # (random weights: they move)
        half = LowRankLinear.from_linear(nn.Linear(64, 64), rank=np.float32(0.5))
    assert half.max_ranks == LowRankLinear.from_linear(nn.Linear(64, 64), rank=0.5).max_ranks == {"A": 16}
    with pytest.raises(TypeError, match="got True"):
        LowRankLinear.from_linear(nn.Linear(16, 8), rank=True)


def test_a_rank_no_layer_can_take_is_refused_before_anything_is_converted():
    """Found by an outside probe: ``tensorize(model, rank="Full")`` said "rank must hold integers;
    got 'F'", ``rank=1.5`` or ``0.0`` left every layer dense with a warning and returned the model
    unchanged, and a layer given ``rank={"A": 2, "B": 3}`` (the form of ``layer.ranks``) said
    "got 'A'"."""
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    for bad, error, match in (("Full", ValueError, "got 'Full'"), (1.5, ValueError, r"in \(0, 1\]; got 1.5"),
                              (0.0, ValueError, r"in \(0, 1\]; got 0.0"), ({"A": 2}, TypeError, "got a mapping"),
                              (True, TypeError, "got True"), (0, ValueError, r">= 1 on every bond; got 0"),
                              (-3, ValueError, "got -3"), ([4, 0], ValueError, r"got \[4, 0\]")):
        with pytest.raises(error, match=match):
            tnn.tensorize(model, rank=bad, inplace=True)
        assert isinstance(model[0], nn.Linear)  # nothing converted
    for bad, match in (("Full", "got .Full."), ({"A": 2, "B": 3}, r"got a mapping .* \(layer.ranks\)")):
        with pytest.raises(TypeError, match=match):
            TensorizedLinear(64, 32, rank=bad)
    assert isinstance(tnn.tensorize(model, rank="full")[0], TensorizedLinear)


def test_masks_that_start_closed_are_said_to_start_closed_not_closed_by_mars():
    """Found by an outside probe: ``tensorize(model, mars="soft")`` on a model in eval mode warned
    "MARS closed every index ... the prior may be too strong (... the N given to MarsLoss)" before
    any training, naming each layer by its einsum string."""
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tnn.tensorize(model, mars="soft")
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "MARS closed" in m or "->" in m]
    assert [m for m in messages if m.startswith("tensorize: the masks of '0', '2' start closed")]
    with pytest.warns(RuntimeWarning, match=r"TensorizedLinear: its masks start closed \(alpha=-1.75\)"):
        TensorizedLinear.from_linear(nn.Linear(64, 64).eval(), mars="hard")
    with warnings.catch_warnings():  # in training mode nothing computes at the closed MAP ranks yet
        warnings.simplefilter("error")
        TensorizedLinear.from_linear(nn.Linear(64, 64), mars="soft")


def test_a_budget_does_not_warn_about_ranks_the_user_never_gave():
    """Found by an outside probe: ``budget="10x"`` warned "Tucker-2 ranks (4, 4) clipped to the
    channel counts (1, 8)" about the allocator's ranks."""
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.Flatten(), nn.Linear(256, 10))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tnn.tensorize(model, budget="10x")
    assert not [w for w in caught if "clipped" in str(w.message)]
    # a rank the user gave still warns, naming the layer (an outside probe: "Tucker-2 ranks (4, 4) clipped ..." alone)
    with pytest.warns(UserWarning, match="tensorize, layer '0': .*clipped to the channel counts"):
        tnn.tensorize(model, rank=(4, 4), filter=["0"])


def test_tensorize_says_how_to_convert_a_parametrized_layer():
    """The advice for old-style weight_norm hooks was "use torch.nn.utils.parametrizations",
    whose layers tensorize then refused with a reason about MultiheadAttention."""
    from torch.nn.utils import parametrizations
    hooked = nn.Sequential(nn.Linear(8, 8))
    nn.utils.weight_norm(hooked[0])
    with pytest.raises(ValueError, match="remove_weight_norm") as err:
        tnn.tensorize(hooked, rank="full")
    assert "use torch.nn.utils.parametrizations" not in str(err.value)
    model = nn.Sequential(nn.Linear(8, 8))
    parametrizations.weight_norm(model[0])
    with pytest.raises(ValueError, match="remove_parametrizations") as err:
        tnn.tensorize(model, ["0"], rank="full")
    assert "MultiheadAttention" not in str(err.value)


def test_embedding_options_not_carried_over_are_named_with_their_own_reason():
    with pytest.warns(UserWarning) as record:
        TensorizedEmbedding.from_embedding(nn.Embedding(20, 8, sparse=True))
    text = " ".join(str(w.message) for w in record)
    assert "sparse=True" in text and "dense" in text and "looked up" not in text


def test_conv_layer_reprs_show_their_geometry():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for layer in (TensorizedConv2d.from_conv(conv), Tucker2Conv2d.from_conv(conv)):
            assert "stride=(2, 2), padding=(2, 2), dilation=(2, 2)" in repr(layer)


def test_vmap_drawing_masks_per_example_is_a_clear_error_and_one_draw_works():
    from torch.func import functional_call, grad, vmap
    layer = TensorizedLinear(12, 20, rank=4)
    x = torch.randn(7, 12)
    params = {k: v.detach() for k, v in layer.named_parameters()}

    def loss(p, xi):
        return functional_call(layer, p, (xi,)).sum()

    with pytest.raises(RuntimeError, match="randomness='same'"):
        vmap(grad(loss), in_dims=(None, 0), randomness="different")(params, x)
    per_example = vmap(grad(loss), in_dims=(None, 0), randomness="same")(params, x)
    assert per_example["bias"].shape == (7, 20)


# ------------------------------------------------------------------ found by an outside probe (2026-12-02)
def test_a_failed_inplace_tensorize_leaves_the_model_as_it_was():
    """A budget too small for the layers raised, but in place the MultiheadAttention had already
    been swapped for a TensorizedMultiheadAttention of four new Linears: the optimizer held the
    orphaned in_proj_weight and the old state dict no longer loaded."""
    class WithAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.att = nn.MultiheadAttention(16, 4, batch_first=True)
            self.fc = nn.Linear(16, 4)

    model = WithAttention()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attention = model.att
    with pytest.raises(ValueError, match="budget"):
        tnn.tensorize(model, budget=10, inplace=True)
    assert model.att is attention and type(model.att) is nn.MultiheadAttention
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)


def test_a_layer_under_any_prune_method_is_recognised():
    """A single ``torch.nn.utils.prune`` call leaves an L1Unstructured (etc.) hook, which the check
    missed (only a second call's PruningContainer was caught): a copy failed with torch's
    deep-copy error, and in place the layer was converted and every forward then raised
    "'TensorizedLinear' object has no attribute 'weight_mask'"."""
    from torch.nn.utils import prune

    for method in (lambda m: prune.l1_unstructured(m, "weight", 0.5), lambda m: prune.random_unstructured(m, "weight", 0.3),
                   lambda m: prune.ln_structured(m, "weight", 0.5, n=2, dim=0)):
        model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8))
        method(model[0])
        with pytest.raises(ValueError, match="cannot deep-copy the layers '0' \\(prune\\)"):
            tnn.tensorize(model)
        with pytest.warns(UserWarning, match=r"left these layers dense: 0: .*prune\.remove"):
            out = tnn.tensorize(model, rank="full", inplace=True)
        assert isinstance(out[0], nn.Linear) and out(torch.randn(2, 16)).shape == (2, 8)
        with pytest.raises(ValueError, match="prune"):
            tnn.tensorize(model, ["0"], inplace=True)


@pytest.mark.parametrize("options", [{"mars": "Soft"}, {"pi": 0}, {"pi": 0.5001}, {"min_rank": -1},
                                     {"temperature": 0}, {"mode": "weights"}, {"alpha": float("nan")}])
def test_a_bad_model_wide_option_is_refused_before_anything_converts(options):
    """They were turned into "left these layers dense" warnings per layer, and the model came back
    dense: a script filtering warnings fine-tuned a model it believed compressed."""
    with pytest.raises((ValueError, TypeError)):
        tnn.tensorize(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64)), **options)


def test_a_layer_given_as_the_model_comes_back_converted():
    """``tensorize(nn.Linear(64, 64))`` warned "the model has no nn.Linear ... layer"."""
    layer = nn.Linear(64, 64)
    out = tnn.tensorize(layer, rank="full")
    assert isinstance(out, tnn.TensorizedLinear)
    x = torch.randn(3, 64)
    # (in eval mode: a training forward draws masks, and one in ten draws of 32 open ones drops an index)
    torch.testing.assert_close(out.eval()(x), layer(x), rtol=1e-4, atol=1e-5)
    assert isinstance(tnn.tensorize(nn.MultiheadAttention(16, 4)), tnn.TensorizedMultiheadAttention)
    with pytest.warns(UserWarning, match="changed the weights of 'Linear'") as caught:  # named by its type, at this line
        tnn.tensorize(layer, rank=2)
    assert any(w.filename == __file__ for w in caught)
    with pytest.raises(ValueError, match="cannot replace the Linear it was given in place"):
        tnn.tensorize(layer, inplace=True)
    with pytest.raises(ValueError, match="names '' \\(the model itself\\)"):
        tnn.tensorize(nn.Sequential(layer), [""])


def test_conversion_arguments_are_checked_in_words():
    with pytest.raises(ValueError, match="a Tucker matrix needs at least 2 factors"):
        tnn.TensorizedLinear.from_linear(nn.Linear(24, 30), "tucker", d=1)
    for d in (0, 2.5, "3"):
        with pytest.raises((ValueError, TypeError), match="d \\(the number of factors\\)"):
            tnn.TensorizedLinear.from_linear(nn.Linear(24, 30), d=d)
    with torch.device("meta"):
        meta = nn.Linear(16, 16)
    with pytest.raises(ValueError, match="meta device"):
        tnn.TensorizedLinear.from_linear(meta)


def test_a_rank_share_that_would_enlarge_a_layer_leaves_it_dense_as_the_default_does():
    with pytest.warns(UserWarning, match="left these layers dense: 0: even at ranks"):
        out = tnn.tensorize(nn.Sequential(nn.Linear(97, 101)), rank=0.5)
    assert isinstance(out[0], nn.Linear)


def test_masks_that_start_closed_do_not_read_as_closed_by_mars_or_as_a_conversion_error():
    """A train-mode model converted with mars="soft" warned twice "MARS closed every index ... the
    prior may be too strong" (nothing was trained; the weight's error is measured in eval mode)
    and, once that was quiet, that tensorize changed its weights by 100% (the eval-mode weight of
    closed masks is cut to min_rank until trained): the preset's start, not a conversion."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tnn.tensorize(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32)), mars="soft")
    said = [str(w.message) for w in caught]
    assert not any("MARS closed every index" in m or "changed the weights" in m for m in said)


def test_a_low_rank_conversion_clips_its_rank_to_what_the_weight_can_have():
    """Found by an outside probe: rank=1000 built 54,000 parameters for a 24x30 weight (only the
    size warning); the matrix formats clip their ranks."""
    linear = nn.Linear(24, 30)
    with pytest.warns(UserWarning, match="rank 1000 clipped to 24"):
        layer = LowRankLinear.from_linear(linear, rank=1000)
    assert layer.num_params == 24 * (24 + 30)
    x = torch.randn(4, 24)
    torch.testing.assert_close(layer(x), linear(x), rtol=1e-4, atol=1e-5)
