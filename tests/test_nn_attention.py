"""``TensorizedMultiheadAttention``: ``nn.MultiheadAttention`` with its four projections as
tensorized layers. With ``nn.Linear`` projections it is the torch module exactly; decomposed at
full rank it computes the same function; ``tensorize`` converts the attention of a whole model
(budget, filters, hooks, ties), and the result trains with MARS, compresses and saves."""
from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch
from test_nn_convert import _numpy_init  # (NumPy-drawn weights, as for the other layers' round trips)
from torch import nn

import tnmars.nn as tnn
from tnmars.nn import TensorizedLinear, TensorizedMultiheadAttention

torch.set_num_threads(1)

# (constructor options, key / value widths) of nn.MultiheadAttention configurations
CONFIGS = [
    ({}, 16, 16),
    ({"batch_first": True}, 16, 16),
    ({"bias": False}, 16, 16),
    ({"add_bias_kv": True, "add_zero_attn": True}, 16, 16),
    ({"kdim": 12, "vdim": 20}, 12, 20),
    ({"kdim": 8, "batch_first": True}, 8, 16),
]


def _inputs(options: dict, kdim: int, vdim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(3, 5, 16, generator=g), torch.randn(3, 7, kdim, generator=g), torch.randn(3, 7, vdim, generator=g)
    if not options.get("batch_first", False):
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    return q, k, v


def _trained(mha: nn.MultiheadAttention, q, k, v, seed: int, steps: int = 25) -> nn.MultiheadAttention:
    torch.manual_seed(seed)
    target = torch.randn_like(mha(q, k, v)[0])
    opt = torch.optim.Adam(mha.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        ((mha(q, k, v)[0] - target) ** 2).mean().backward()
        opt.step()
    return mha


@pytest.mark.parametrize("options, kdim, vdim", CONFIGS)
def test_dense_projections_are_the_torch_module_exactly(options, kdim, vdim):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, **options).eval()
    opened = TensorizedMultiheadAttention.with_dense_projections(mha)
    q, k, v = _inputs(options, kdim, vdim)
    mask = torch.rand(3, 7, generator=torch.Generator().manual_seed(1)) < 0.3
    for call in ({}, {"key_padding_mask": mask}, {"need_weights": False}, {"average_attn_weights": False},
                 {"attn_mask": torch.triu(torch.ones(5, 7, dtype=torch.bool), 1)}):
        want, want_w = mha(q, k, v, **call)
        got, got_w = opened(q, k, v, **call)
        assert torch.equal(got, want)
        assert (got_w is None) == (want_w is None) and (got_w is None or torch.equal(got_w, want_w))
    single = [t[0] if options.get("batch_first", False) else t[:, 0] for t in (q, k, v)]  # unbatched input
    assert torch.equal(opened(*single)[0], mha(*single)[0])
    if kdim == vdim == 16:  # self-attention under a causal mask
        causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
        assert torch.equal(opened(q, q, q, attn_mask=causal, is_causal=True)[0],
                           mha(q, q, q, attn_mask=causal, is_causal=True)[0])
    assert not opened.training and isinstance(opened, nn.MultiheadAttention)
    for name in ("embed_dim", "num_heads", "kdim", "vdim", "batch_first", "_qkv_same_embed_dim", "head_dim"):
        assert getattr(opened, name) == getattr(mha, name)


@pytest.mark.parametrize("options, kdim, vdim", CONFIGS)
@pytest.mark.parametrize("weights", ["numpy", "trained"])
def test_from_attention_at_full_rank_computes_the_same_function(options, kdim, vdim, weights):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, **options)
    q, k, v = _inputs(options, kdim, vdim)
    mha = _numpy_init(mha, 3) if weights == "numpy" else _trained(mha, q, k, v, seed=3)
    mha.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # full rank is larger than the dense projections
        small = TensorizedMultiheadAttention.from_attention(mha, "tt", rank="full").eval()
    assert all(isinstance(getattr(small, n), TensorizedLinear) for n in ("q_proj", "k_proj", "v_proj", "out_proj"))
    torch.testing.assert_close(small(q, k, v)[0], mha(q, k, v)[0], rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # (the module's own forward; nn.MultiheadAttention's fast path on the other side)
        torch.testing.assert_close(small(q, k, v)[0], mha(q, k, v)[0], rtol=1e-4, atol=1e-5)
    if mha._qkv_same_embed_dim:
        torch.testing.assert_close(small.in_proj_weight, mha.in_proj_weight, rtol=1e-4, atol=1e-5)
    else:
        assert small.in_proj_weight is None
        torch.testing.assert_close(small.k_proj_weight, mha.k_proj_weight, rtol=1e-4, atol=1e-5)
    if mha.in_proj_bias is None:
        assert small.in_proj_bias is None
    else:
        torch.testing.assert_close(small.in_proj_bias, mha.in_proj_bias)


def test_from_attention_keeps_frozen_parameters_and_the_mode_and_refuses_other_types():
    mha = nn.MultiheadAttention(16, 4, add_bias_kv=True)
    mha.in_proj_weight.requires_grad_(False)
    mha.bias_k.requires_grad_(False)
    mha.eval()
    small = TensorizedMultiheadAttention.from_attention(mha, rank=2)
    assert not small.training and not small.q_proj.training
    for name in ("q_proj", "k_proj", "v_proj"):
        layer = getattr(small, name)
        assert layer.masks is None and not any(c.requires_grad for c in layer.cores)  # frozen: no rank selection
        assert layer.bias.requires_grad
    assert small.out_proj.masks is not None and all(c.requires_grad for c in small.out_proj.cores)
    assert not small.bias_k.requires_grad and small.bias_v.requires_grad
    with pytest.raises(TypeError, match="needs a torch.nn.MultiheadAttention; got Linear"):
        TensorizedMultiheadAttention.from_attention(nn.Linear(4, 4))
    with pytest.raises(TypeError, match="projections are modules already"):
        TensorizedMultiheadAttention.from_attention(small)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        TensorizedMultiheadAttention(16, 3)


def test_a_fresh_module_is_smaller_than_the_dense_one_and_its_masks_learn_with_mars_loss():
    torch.manual_seed(0)
    attn = TensorizedMultiheadAttention(32, 4, rank=4, batch_first=True)
    dense = nn.MultiheadAttention(32, 4, batch_first=True)
    cores = sum(c.numel() for name in ("q_proj", "k_proj", "v_proj", "out_proj") for c in getattr(attn, name).cores)
    assert cores < dense.in_proj_weight.numel() + dense.out_proj.weight.numel()
    assert len(list(tnn.mars_layers(attn))) == 4
    x, target = torch.randn(8, 6, 32), torch.randn(8, 6, 32)
    loss_fn = tnn.MarsLoss(attn, num_train=8, criterion=nn.MSELoss())
    opt = loss_fn.optimizer(torch.optim.Adam, lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(attn(x, x, x)[0], target)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0]
    assert all(getattr(attn, n).masks.logits.grad is not None for n in ("q_proj", "k_proj", "v_proj", "out_proj"))
    attn.eval()
    a, b = attn(x, x, x)[0], attn(x, x, x)[0]
    assert torch.equal(a, b)  # MAP masks in eval mode


def _encoder(seed: int = 0, layers: int = 2) -> nn.TransformerEncoder:
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).eval()


def test_tensorize_converts_attention_and_the_encoder_keeps_its_function_and_fast_path():
    dense = _encoder()
    x = torch.randn(3, 5, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # full rank is larger than the dense layers
        small = tnn.tensorize(dense, rank="full").eval()
    attn = small.layers[0].self_attn
    assert isinstance(attn, TensorizedMultiheadAttention)
    assert all(isinstance(getattr(attn, n), TensorizedLinear) for n in ("q_proj", "k_proj", "v_proj", "out_proj"))
    with torch.no_grad():  # nn.TransformerEncoderLayer's fused path reads in_proj_weight, built from the cores
        torch.testing.assert_close(small(x), dense(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(small(x), dense(x), atol=1e-5, rtol=1e-5)
    small.train()
    small(x).square().mean().backward()
    assert attn.q_proj.cores[0].grad is not None and attn.out_proj.cores[0].grad is not None
    names = {n for n, m in small.named_modules() if isinstance(m, TensorizedLinear)}
    assert "layers.1.self_attn.k_proj" in names and "layers.1.linear2" in names


def test_tensorize_attention_options_filters_and_errors():
    dense = _encoder(layers=1)
    layer = dense.layers[0]
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    # attention=None: the torch module stays, and its out_proj (a Linear subclass) is reported
    with pytest.warns(UserWarning, match=r"self_attn.out_proj: a NonDynamicallyQuantizableLinear.*select the Multi"):
        kept = tnn.tensorize(dense, attention=None, rank=2)
    assert type(kept.layers[0].self_attn) is nn.MultiheadAttention
    with pytest.raises(ValueError, match="attention=None leaves nn.MultiheadAttention layers alone"):
        tnn.tensorize(dense, ["layers.0.self_attn"], attention=None, inplace=True)
    with pytest.raises(ValueError, match="a NonDynamicallyQuantizableLinear, a subclass of nn.Linear"):
        tnn.tensorize(dense, ["layers.0.self_attn.out_proj"], inplace=True)
    with pytest.raises(ValueError, match="attention must be one of"):
        tnn.tensorize(dense, attention="bogus")
    with pytest.raises(ValueError, match="'layers.0.norm1': a LayerNorm"):  # refused before the attention changes
        tnn.tensorize(dense, ["layers.0.self_attn", "layers.0.norm1"], inplace=True)
    assert all(torch.equal(v, before[k]) for k, v in dense.state_dict().items())
    assert type(layer.self_attn) is nn.MultiheadAttention
    # naming the attention converts its four projections, in the attention's format, and nothing else
    only = tnn.tensorize(dense, ["layers.0.self_attn"], linear=None, attention="lowrank", rank=4)
    attn = only.layers[0].self_attn
    assert all(type(getattr(attn, n)) is tnn.LowRankLinear for n in ("q_proj", "k_proj", "v_proj", "out_proj"))
    assert type(only.layers[0].linear1) is nn.Linear
    # a callable filter decides on the attention module itself
    linears_only = tnn.tensorize(dense, lambda name, m: type(m) is nn.Linear, rank=2)
    assert type(linears_only.layers[0].self_attn) is nn.MultiheadAttention


def test_tensorize_budget_counts_the_attention_projections():
    dense = _encoder(layers=1)
    small = tnn.tensorize(dense, budget="4x")
    converted = [m for m in small.modules() if isinstance(m, TensorizedLinear)]
    assert len(converted) == 6  # four projections, two feed-forward layers
    dense_weights = sum(m.dense_size for m in converted)
    assert sum(m.num_params for m in converted) <= dense_weights // 4


def test_tensorize_moves_hooks_of_attention_and_skips_tied_attention():
    dense = _encoder(layers=1)
    seen = []
    dense.layers[0].self_attn.register_forward_hook(lambda m, i, o: seen.append(type(m).__name__))
    with pytest.warns(UserWarning, match="moved the forward / backward hooks of 'layers.0.self_attn'"):
        small = tnn.tensorize(dense, rank=2)
    small.train()(torch.randn(2, 3, 16))  # (training mode: not the fused path, which skips module hooks)
    assert seen == ["TensorizedMultiheadAttention"]
    # an attention whose output projection another layer shares stays dense, said
    model = nn.ModuleDict({"attn": nn.MultiheadAttention(16, 2), "head": nn.Linear(16, 16)})
    model["head"].weight = model["attn"].out_proj.weight
    with pytest.warns(UserWarning, match=r"attn: its out_proj.weight is also 'head.weight'.*untie"):
        out = tnn.tensorize(model, rank=2)
    assert type(out["attn"]) is nn.MultiheadAttention
    with pytest.raises(ValueError, match=r"cannot convert 'attn' \(its out_proj.weight is also 'head.weight'\)"):
        tnn.tensorize(model, ["attn"], inplace=True)
    assert type(model["attn"]) is nn.MultiheadAttention
    # the same attention under two names: converted once, still shared
    shared = nn.MultiheadAttention(16, 2)
    pair = nn.ModuleDict({"a": shared, "b": shared})
    out = tnn.tensorize(pair, rank=2)
    assert isinstance(out["a"], TensorizedMultiheadAttention) and out["a"] is out["b"]


def test_a_converted_encoder_pickles_saves_compresses_and_reloads():
    dense = _encoder(layers=1)
    small = tnn.tensorize(dense, rank=3)
    x = torch.randn(2, 4, 16)
    small.eval()
    want = small(x)
    for clone in (copy.deepcopy(small), pickle.loads(pickle.dumps(small))):
        torch.testing.assert_close(clone.eval()(x), want)
    buffer = io.BytesIO()
    torch.save(small, buffer)
    buffer.seek(0)
    torch.testing.assert_close(torch.load(buffer, weights_only=False).eval()(x), want)
    with torch.no_grad():  # close some indices: compress slices them away
        small.layers[0].self_attn.q_proj.masks.logits[:2] = -5.0
    want = small(x)
    packed = tnn.compress(small)
    torch.testing.assert_close(packed.eval()(x), want, rtol=1e-5, atol=1e-6)
    assert packed.layers[0].self_attn.q_proj.num_params < small.layers[0].self_attn.q_proj.num_params
    loaded = tnn.load_compressed(small, packed.state_dict())
    torch.testing.assert_close(loaded.eval()(x), want, rtol=1e-5, atol=1e-6)


def test_torch_compile_traces_converted_attention_without_graph_breaks():
    """A compressed encoder in eval mode, and a MARS training forward with its loss, each in one graph."""
    dense = _encoder(layers=1)
    model = tnn.tensorize(dense, rank=3)
    x, target = torch.randn(2, 4, 16), torch.randn(2, 4, 16)
    small = tnn.compress(model.eval()).eval()
    try:
        assert torch._dynamo.explain(small)(x).graph_break_count == 0
        compiled = torch.compile(small, backend="aot_eager", fullgraph=True)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), small(x))
        torch._dynamo.reset()
        loss_fn = tnn.MarsLoss(model, 100, criterion=nn.MSELoss())
        model.train()
        assert torch._dynamo.explain(lambda a, b: loss_fn(model(a), b))(x, target).graph_break_count == 0
    finally:
        torch._dynamo.reset()


def test_from_attention_and_the_constructor_take_what_tensorize_takes():
    """``tensorize(attention="lowrank")`` worked while ``from_attention(format="lowrank")`` and the
    constructor raised "unknown format"; the constructor also refused ``rank=0.25`` and
    ``rank="full"``, which tensorize and from_attention take."""
    torch.manual_seed(0)
    dense = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    q, k, v = _inputs({"batch_first": True}, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        low = TensorizedMultiheadAttention.from_attention(dense, format="lowrank", rank="full").eval()
        wrapped = tnn.tensorize(nn.Sequential(dense), attention="lowrank", rank=3)[0]
        from_attention = TensorizedMultiheadAttention.from_attention(dense, format="lowrank", rank=3)
    assert all(type(getattr(low, p)) is tnn.LowRankLinear for p in ("q_proj", "k_proj", "v_proj", "out_proj"))
    with torch.no_grad():
        torch.testing.assert_close(low(q, k, v)[0], dense(q, k, v)[0], rtol=1e-4, atol=1e-5)
    assert from_attention.q_proj.max_ranks == wrapped.q_proj.max_ranks == {"A": 3}
    x = torch.randn(2, 5, 16)
    for fmt, rank in [("lowrank", None), ("lowrank", 3), ("lowrank", 0.25), ("lowrank", "full"),
                      ("tt", 0.25), ("tt", "full"), ("tucker", 0.5), ("cp", 0.25)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ("full" is larger than dense: said by a warning)
            attn = TensorizedMultiheadAttention(16, 4, batch_first=True, format=fmt, rank=rank)
            full = TensorizedMultiheadAttention.from_attention(dense, format=fmt, rank=rank)
        assert attn(x, x, x)[0].shape == (2, 5, 16)
        assert attn.q_proj.max_ranks == full.q_proj.max_ranks  # the ranks from_attention gives
        if isinstance(rank, float):
            assert attn.q_proj.num_params <= rank * 16 * 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert TensorizedMultiheadAttention(16, 4, format="lowrank", rank="full").q_proj.max_ranks == {"A": 16}
    for bad in ("Full", 1.5, 0):
        with pytest.raises(ValueError, match="rank"):
            TensorizedMultiheadAttention(16, 4, rank=bad)
    for who in (lambda: TensorizedMultiheadAttention(16, 4, format="lowrnk"),
                lambda: TensorizedMultiheadAttention.from_attention(dense, format="lowrnk")):
        with pytest.raises(ValueError, match="unknown format 'lowrnk'.*lowrank"):
            who()
