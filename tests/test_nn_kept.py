"""What a layer keeps between inference calls is recomputed whenever its parameters change,
including the changes PyTorch's version counter does not see (fused optimizer steps)."""
from __future__ import annotations

import warnings

import pytest
import torch

import tnmars.nn as tnn
from tnmars.nn import LowRankLinear, TensorizedConv2d, TensorizedEmbedding, TensorizedLinear, Tucker2Conv2d
from tnmars.nn.kept import generation

LAYERS = {
    "tt-linear": (lambda: tnn.TensorizedLinear(64, 64, rank=4), lambda: torch.randn(2, 64)),
    "lowrank": (lambda: tnn.LowRankLinear(64, 64, rank=4), lambda: torch.randn(2, 64)),
    "tucker2-conv": (lambda: tnn.Tucker2Conv2d(8, 16, 3, rank=4), lambda: torch.randn(2, 8, 6, 6)),
    "tt-conv": (lambda: tnn.TensorizedConv2d(8, 16, 3, rank=4), lambda: torch.randn(2, 8, 6, 6)),
    "embedding": (lambda: tnn.TensorizedEmbedding(100, 16, rank=4), lambda: torch.randint(0, 100, (2, 5))),
}


def _layer(kind):
    make, data = LAYERS[kind]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make(), data()


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("optimizer", ["mars-default", "fused-sgd", "default-adam"])
def test_inference_after_training_steps_uses_the_new_parameters(kind, optimizer):
    layer, x = _layer(kind)
    layer.eval()
    with torch.inference_mode():
        layer(x)  # an evaluation before training fills what the layer keeps
    loss_fn = tnn.MarsLoss(layer, num_train=100, criterion=lambda out, target: out.pow(2).mean())
    if optimizer == "mars-default":  # fused Adam: moves no parameter's _version
        opt = loss_fn.optimizer(lr=0.1)
    elif optimizer == "fused-sgd":
        opt = loss_fn.optimizer(torch.optim.SGD, lr=0.1, fused=True)
    else:
        opt = loss_fn.optimizer(lr=0.1, fused=False)
    layer.train()
    for _ in range(3):
        opt.zero_grad()
        loss_fn(layer(x), None).backward()
        opt.step()
    layer.eval()
    with torch.no_grad():
        kept = layer(x)
    fresh = layer(x).detach()  # with gradients nothing is kept
    assert torch.equal(kept, fresh)


def test_invalidate_caches_makes_layers_recompute_after_writes_through_data():
    layer, x = _layer("tt-linear")
    layer.eval()
    with torch.no_grad():
        before = layer(x)
    for core in layer.cores:
        core.data.mul_(2.0)  # hidden from the version counter
    tnn.invalidate_caches()
    with torch.no_grad():
        after = layer(x)
    assert torch.allclose(after - layer.bias, (before - layer.bias) * 2.0 ** len(layer.cores), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_a_hand_written_sgd_step_through_data_is_seen_without_invalidate_caches(kind):
    """An outside probe (2026-12-04): ``p.data -= lr * p.grad`` moves no version counter and no
    optimizer step, so a validation under ``torch.no_grad`` served the cores kept before it (a
    loss of 1.86 for a model at 0.0086). The layers' keys hold the parameters' bytes now."""
    layer, x = _layer(kind)
    layer.eval()
    with torch.no_grad():
        layer(x)  # fills what the layer keeps
    for p in layer.parameters():
        p.data -= 0.5 * torch.randn_like(p)
    with torch.no_grad():
        kept = layer(x)
    assert torch.equal(kept, layer(x).detach())  # (with gradients nothing is kept)
    if hasattr(layer, "_mm"):  # the weight program keeps its constant products too
        with torch.no_grad():
            layer.weight  # noqa: B018 (fills what the program keeps)
        for p in layer.cores:
            p.data.mul_(1.5)
        with torch.no_grad():
            kept_weight = layer.weight.clone()
        assert torch.equal(kept_weight, layer.weight.detach())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_writes_through_data_into_large_cores_are_seen(dtype):
    """A core above :data:`~tnmars.nn.kept.WHOLE_ELEMENTS` entries is compared by a strided
    sample: a write that moves every entry moves it (bfloat16 compared by its bits)."""
    from tnmars.nn.kept import WHOLE_ELEMENTS

    torch.manual_seed(0)
    layer = tnn.LowRankLinear(600, 600, rank=200, mars=False).to(dtype).eval()
    assert max(p.numel() for p in layer.cores) > WHOLE_ELEMENTS
    x = torch.randn(1, 600, dtype=dtype)
    with torch.no_grad():
        layer(x)
        for p in layer.cores:
            p.data.add_(1.0)
        kept = layer(x)
    fresh = layer(x).detach()
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(kept, fresh, **tolerance)  # (the kept path's two matmuls round differently)


def test_every_optimizer_step_moves_the_generation():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    for opt in (torch.optim.Adam([p], fused=True), torch.optim.SGD([p], lr=0.1), torch.optim.Adagrad([p])):
        before = generation()
        opt.step()
        assert generation() == before + 1


@pytest.mark.parametrize("make, x", [
    (lambda: TensorizedConv2d(8, 8, 3, rank=3, padding=1), lambda: torch.randn(2, 8, 6, 6)),
    (lambda: LowRankLinear(64, 64, rank=32), lambda: torch.randn(512, 64)),
    (lambda: TensorizedLinear(64, 32, rank=4), lambda: torch.randn(8, 64)),
    (lambda: TensorizedEmbedding(50, 16, rank=3), lambda: torch.randint(0, 50, (7,))),
    (lambda: Tucker2Conv2d(8, 8, 3, rank=(3, 3), padding=1), lambda: torch.randn(2, 8, 6, 6))],
    ids=["tt-conv", "low-rank", "tt-linear", "embedding", "tucker2-conv"])
def test_a_dense_weight_taken_without_gradients_is_the_callers_to_change(make, x):
    """Without gradients ``layer.weight`` / ``dense_weight()`` of a TT conv or a low-rank
    linear layer was the product the layer keeps between calls (or a view of it): scaling the
    "copy" in place (decompressing into a dense layer, then training it) changed every later
    output of the tensorized layer, silently."""
    torch.manual_seed(0)
    layer, x = make().eval(), x()
    with torch.no_grad():
        ref = layer(x)
        layer.weight.mul_(0.5)
        layer.dense_weight().mul_(0.5)
        torch.testing.assert_close(layer(x), ref, rtol=0, atol=0)
    with torch.inference_mode():
        layer.dense_weight().mul_(0.5)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), ref, rtol=0, atol=0)
