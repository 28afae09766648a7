"""Inference through two cached blocks (tnmars.nn.fastpath): the same outputs as the usual
path for every format and mask state, rebuilt when a parameter changes, never used while
gradients are recorded, and the cut found for any TT-matrix computes ``x @ W``."""
from __future__ import annotations

import copy
import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tnmars
from tnmars.nn import LowRankLinear, TensorizedLinear, Tucker2Conv2d, base, fastpath
from tnmars.nn.fastpath import best_cut

torch.set_num_threads(1)

LAYERS = {
    "tt": lambda **kw: TensorizedLinear(24, 30, rank=3, in_shape=(2, 3, 4), out_shape=(3, 2, 5), **kw),
    "tt-2": lambda **kw: TensorizedLinear(28, 25, rank=3, in_shape=(4, 7), out_shape=(5, 5), **kw),
    "tr": lambda **kw: TensorizedLinear(24, 30, format="tr", rank=2, in_shape=(2, 3, 4), out_shape=(3, 2, 5), **kw),
    "cp": lambda **kw: TensorizedLinear(24, 30, format="cp", rank=3, in_shape=(2, 3, 4), out_shape=(3, 2, 5), **kw),
    "tucker": lambda **kw: TensorizedLinear(24, 30, format="tucker", rank=2, in_shape=(4, 6), out_shape=(5, 6), **kw),
    "lowrank": lambda **kw: LowRankLinear(40, 30, rank=3, **kw),
}


def _reference(layer, x):
    """The usual path (gradients recorded, so no block is kept)."""
    with torch.enable_grad():
        return layer(x).detach()


@pytest.fixture
def always_cut(monkeypatch):
    """Take the blocks whenever a cut exists, whatever its size and FLOPs (these layers are small)."""
    monkeypatch.setattr(base, "CUT_ADVANTAGE", float("inf"))
    monkeypatch.setattr(base, "CUT_ADVANTAGE_BATCHED", float("inf"))
    monkeypatch.setattr(fastpath, "MAX_BLOCK_FRACTION", float("inf"))


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("lead", [(1,), (3,), (2, 3), (0,)])
def test_no_grad_output_equals_the_usual_path(name, lead, always_cut):
    torch.manual_seed(0)
    layer = LAYERS[name](mars=False).eval()
    x = torch.randn(*lead, layer.in_features)
    with torch.no_grad():
        got = layer(x)
    assert got.shape == lead + (layer.out_features,)
    torch.testing.assert_close(got, _reference(layer, x), atol=1e-5, rtol=1e-4)
    _, _, cut, _, use_at = layer._mm._frozen
    assert cut is not None and use_at[x.numel() // layer.in_features] == (x.numel() > 0)


def test_batch_one_of_a_tt_layer_uses_the_blocks():
    torch.manual_seed(0)
    layer = TensorizedLinear(784, 625, rank=[4, 3, 4], in_shape=(7, 4, 7, 4), out_shape=(5, 5, 5, 5), mars=False)
    with torch.no_grad():
        layer(torch.randn(1, 784))
    key, _, cut, blocks, use_at = layer._mm._frozen
    assert cut is not None and use_at == {1: True}
    assert sum(b.numel() for b in blocks) < 784 * 625 // 4  # core-sized, never the dense weight
    with torch.enable_grad():  # gradients recorded: the blocks are not used (nor rebuilt)
        y = layer(torch.randn(1, 784, requires_grad=True))
    assert y.requires_grad and layer._mm._frozen[0] is key


@pytest.mark.parametrize("name", ["tt", "cp", "lowrank"])
def test_blocks_follow_parameter_updates(name, always_cut):
    torch.manual_seed(1)
    layer = LAYERS[name](mars=False).eval()
    x = torch.randn(1, layer.in_features)
    with torch.no_grad():
        before = layer(x)
        layer.cores[0].mul_(2.0)  # in place: the version counter moves
        after = layer(x)
    torch.testing.assert_close(after, _reference(layer, x), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(before, after)
    with torch.no_grad():  # a new parameter object (load_state_dict with assign=True, or swapping)
        layer.cores[1] = torch.nn.Parameter(torch.randn_like(layer.cores[1]))
        swapped = layer(x)
    torch.testing.assert_close(swapped, _reference(layer, x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("min_rank", [0, 1])
def test_mars_layer_in_eval_follows_its_map_masks(min_rank, always_cut):
    torch.manual_seed(2)
    layer = LAYERS["tt"](mars=True, min_rank=min_rank)
    with torch.no_grad():
        layer.masks.logits.copy_(torch.linspace(-1, 2, layer.masks.logits.numel()))
    layer.eval()
    x = torch.randn(1, layer.in_features)
    with torch.no_grad():
        got = layer(x)
    assert layer._mm._frozen[4] == {1: True}
    torch.testing.assert_close(got, _reference(layer, x), atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # close every index: min_rank keeps one per bond, or the output is the bias
        layer.masks.logits.fill_(-5.0)
        closed = layer(x)
    torch.testing.assert_close(closed, _reference(layer, x), atol=1e-5, rtol=1e-4)
    if min_rank == 0:
        torch.testing.assert_close(closed, layer.bias.detach().expand(1, -1))


def test_training_mode_draws_are_never_kept():
    torch.manual_seed(3)
    layer = LAYERS["tt"](mars=True, alpha=0.0)  # draws differ from call to call
    x = torch.randn(1, layer.in_features)
    with torch.no_grad():
        outs = [layer(x) for _ in range(8)]
    assert layer._mm._frozen is None
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])


def test_copies_and_pickles_leave_the_blocks_behind():
    torch.manual_seed(4)
    layer = LAYERS["tt"](mars=False).eval()
    x = torch.randn(1, layer.in_features)
    with torch.no_grad():
        y = layer(x)
    assert layer._mm._frozen is not None
    clone = copy.deepcopy(layer)
    assert clone._mm._frozen is None
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded._mm._frozen is None
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), y)
        torch.testing.assert_close(clone(x), y)


def test_values_kept_without_gradients_are_not_mixed_across_autocast():
    """The usual path keeps core products between no-grad calls; one made under autocast
    (bfloat16) must not be reused by a float32 call after it (it was: a dtype error)."""
    torch.manual_seed(5)
    layer = LAYERS["tt"](mars=False).eval()
    layer.mode = "cores"
    x = torch.randn(1, layer.in_features)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)  # its core products are made in bfloat16
    with torch.no_grad():
        got = layer(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, _reference(layer, x), atol=1e-5, rtol=1e-4)


def test_autocast_and_forced_modes_take_the_usual_path():
    torch.manual_seed(5)
    layer = LAYERS["tt"](mars=False).eval()
    x = torch.randn(1, layer.in_features)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)
    assert layer._mm._frozen is None
    layer.mode = "cores"
    with torch.no_grad():
        layer(x)
    assert layer._mm._frozen is None


def test_wrong_input_is_still_a_named_error():
    layer = LAYERS["tt"](mars=False).eval()
    with torch.no_grad(), pytest.raises(ValueError, match="features"):
        layer(torch.randn(1, layer.in_features + 1))
    with torch.no_grad(), pytest.raises(TypeError, match="float64"):
        layer(torch.randn(1, layer.in_features, dtype=torch.float64))


@settings(max_examples=25, deadline=None)
@given(d=st.integers(2, 4), data=st.data())
def test_the_cut_of_a_tt_matrix_computes_x_times_w(d, data):
    """Law: whenever a cut is found, its two GEMMs give ``x @ W`` of the network."""
    ins = tuple(data.draw(st.lists(st.integers(1, 4), min_size=d, max_size=d)))
    outs = tuple(data.draw(st.lists(st.integers(1, 4), min_size=d, max_size=d)))
    rank = data.draw(st.integers(1, 3))
    batch = data.draw(st.integers(1, 3))
    net = tnmars.Network.tt_matrix(ins, outs, rank, backend="torch", dtype="float64", seed=0)
    shapes = tuple(tuple(c.shape) for c in net.cores)
    cut = best_cut(net.inputs, net.output[:d], net.output[d:], shapes)
    if cut is None:  # no cut keeps the blocks small enough (tiny dense weights)
        return
    x = torch.randn(batch, int(torch.tensor(ins).prod()), dtype=torch.float64)
    w = net.to_tensor().reshape(x.shape[1], -1)
    torch.testing.assert_close(cut(x, *cut.blocks(net.cores)), x @ w)


@pytest.mark.parametrize("mars", [False, True])
def test_tucker2_conv_keeps_its_factored_kernels_without_gradients(mars):
    from tnmars.nn import Tucker2Conv2d

    torch.manual_seed(6)
    layer = Tucker2Conv2d(6, 8, 3, rank=(3, 4), stride=2, padding=1, mars=mars)
    if mars:
        with torch.no_grad():
            layer.masks.logits.copy_(torch.linspace(-1, 2, layer.masks.logits.numel()))
    layer.eval()
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        got = layer(x)
    assert layer._frozen is not None
    torch.testing.assert_close(got, _reference(layer, x), atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        layer.cores[1].mul_(-1.5)
        changed = layer(x)
    torch.testing.assert_close(changed, _reference(layer, x), atol=1e-5, rtol=1e-4)
    assert copy.deepcopy(layer)._frozen is None


@pytest.mark.parametrize("mode", ["weight", "cores", "auto"])
def test_tucker2_conv_runs_under_cpu_autocast_on_every_path(mode):
    torch.manual_seed(0)
    conv = Tucker2Conv2d(16, 32, 3, padding=1, rank=4, mode=mode)
    x = torch.randn(2, 16, 8, 8)
    want = conv(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = conv(x)  # the weight path mixed bfloat16 and float32 in its kernel's contraction
    assert got.dtype == torch.bfloat16
    assert torch.allclose(got.float(), want, rtol=0.05, atol=0.05 * float(want.abs().max()))


def test_kept_products_follow_a_new_operand_at_a_freed_operands_address():
    """A fresh tensor may get a freed operand's id and address back with the same version count
    (CPython and CUDA's caching allocator reuse both): it must get its own products, not the
    kept ones. Here the reuse is forced: each operand is a new tensor over one NumPy buffer,
    refilled between calls (a masked or sliced core is such a fresh tensor on every call)."""
    import numpy as np

    layer = LowRankLinear(16, 5, rank=4, mars=False)
    program = layer._mm.program(((16, 4), (4, 5)), None)
    rng = np.random.default_rng(0)
    buffer = np.zeros((16, 4), dtype=np.float32)
    b = torch.randn(4, 5)
    with torch.no_grad():
        for _ in range(4):
            buffer[:] = rng.standard_normal((16, 4))
            a = torch.from_numpy(buffer)  # a new tensor at the same address, version 0
            torch.testing.assert_close(program([a, b]).reshape(16, 5), a @ b)
            del a


def test_kept_values_are_left_out_of_pickles():
    layer = LowRankLinear(16, 5, rank=4, mars=False).eval()
    with torch.no_grad():
        layer(torch.randn(3, 16))
    kept = [p for p in layer._mm._programs.values() if p._kept is not None]
    assert kept
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    assert all(p._kept is None for p in again._mm._programs.values())
    with torch.no_grad():
        torch.testing.assert_close(again(torch.ones(2, 16)), layer(torch.ones(2, 16)))


@pytest.mark.parametrize("name", ["tt", "lowrank"])
def test_blocks_follow_a_new_core_parameter_at_the_old_ones_address(name, always_cut):
    """A core swapped for a new parameter that gets the old one's id and address back, at the
    same version count (forced here: both are views of one NumPy buffer, refilled in between),
    gets its own blocks, not the old parameter's."""
    import numpy as np

    torch.manual_seed(3)
    layer = LAYERS[name](mars=False).eval()
    buffer = layer.cores[0].detach().numpy().copy()
    rng = np.random.default_rng(0)
    x = torch.randn(1, layer.in_features)
    placeholder = torch.nn.Parameter(torch.zeros(buffer.shape))
    for _ in range(3):
        buffer[:] = rng.standard_normal(buffer.shape)
        data = torch.from_numpy(buffer)
        layer.cores[0] = placeholder  # the old parameter is let go first: its id is free to be reused
        layer.cores[0] = torch.nn.Parameter(data)
        with torch.no_grad():
            got = layer(x)
        torch.testing.assert_close(got, _reference(layer, x), atol=1e-5, rtol=1e-4)
