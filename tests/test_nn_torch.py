"""PyTorch conventions: layers and networks pickle, deep-copy, ``torch.save`` and
``load_state_dict`` like any module; ``Network.to`` reads torch dtypes and devices;
``torch.compile(fullgraph=True)`` traces compressed and MARS models without graph breaks;
``jit.trace`` fails with a message that says why; empty batches work; bad inputs are named
(a hypothesis fuzz over every layer)."""
from __future__ import annotations

import copy
import io
import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import tnmars
import tnmars.nn as tnn
from tnmars.nn import LowRankLinear, TensorizedConv2d, TensorizedEmbedding, TensorizedLinear, Tucker2Conv2d

torch.set_num_threads(1)

FACTORIES = {
    "tt": lambda: TensorizedLinear(12, 20, rank=3, in_shape=(3, 4), out_shape=(4, 5)),
    "tucker": lambda: TensorizedLinear(12, 20, format="tucker", rank=2, in_shape=(3, 4), out_shape=(4, 5)),
    "lowrank": lambda: LowRankLinear(12, 20, rank=5),
    "tucker2conv": lambda: Tucker2Conv2d(4, 6, 3, rank=(3, 4), padding=1, stride=2),
    "ttconv": lambda: TensorizedConv2d(4, 6, 3, rank=3, padding=1),
    "embedding": lambda: TensorizedEmbedding(30, 8, rank=3, padding_idx=4),
}


def _input(layer, batch=5):
    if isinstance(layer, TensorizedEmbedding):
        return torch.randint(0, 30, (batch, 3))
    if isinstance(layer, (Tucker2Conv2d, TensorizedConv2d)):
        return torch.randn(batch, 4, 7, 7)
    return torch.randn(batch, layer.in_features)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                         Tucker2Conv2d(8, 16, 3, rank=4, padding=1), nn.ReLU(),
                         TensorizedConv2d(16, 16, 3, rank=4, padding=1), nn.Flatten(),
                         TensorizedLinear(1024, 64, rank=4), nn.ReLU(), LowRankLinear(64, 10, rank=4))


# ------------------------------------------------------------------ serialisation
def _roundtrips(obj):
    yield "pickle", pickle.loads(pickle.dumps(obj))
    yield "deepcopy", copy.deepcopy(obj)
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    yield "torch.save", torch.load(buf, weights_only=False)


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("state", ["mars", "compressed"])
def test_layers_pickle_deepcopy_and_torch_save_whole(name, state):
    torch.manual_seed(0)
    layer = FACTORIES[name]()
    if state == "compressed":
        with torch.no_grad():
            layer.masks.logits[::2] = -3.0
        layer = tnn.compress(layer.eval())
    layer.eval()
    x = _input(layer)
    with torch.no_grad():
        want = layer(x)
    for how, copied in _roundtrips(layer):
        with torch.no_grad():
            torch.testing.assert_close(copied(x), want, msg=how)
        # an independent copy: training it leaves the original alone
        copied.train()
        with torch.no_grad():
            copied.cores[0].add_(1.0)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), want)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_load_state_dict_into_a_fresh_layer(name):
    torch.manual_seed(0)
    layer = FACTORIES[name]().eval()
    torch.manual_seed(1)
    fresh = FACTORIES[name]().eval()
    x = _input(layer)
    fresh.load_state_dict(layer.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), layer(x))
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf, weights_only=True))  # nothing but tensors is unpickled


def test_a_recurrent_model_with_a_tt_matrix_pickles_deepcopies_and_saves():
    rnn = tnn.TanhRNN(3, 8, lam=0.9, recurrent="tt", tt_rank=2, tt_shape=(2, 2, 2), seed=0).eval()
    x = torch.randn(2, 6, 3)
    with torch.no_grad():
        want = rnn(x)
    for how, copied in _roundtrips(rnn):
        with torch.no_grad():
            torch.testing.assert_close(copied(x), want, msg=how)
    fresh = tnn.TanhRNN(3, 8, lam=0.9, recurrent="tt", tt_rank=2, tt_shape=(2, 2, 2), seed=1).eval()
    fresh.load_state_dict(rnn.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), want)


def test_a_torch_network_pickles_deepcopies_and_saves():
    net = tnmars.Network.tt((3, 4, 5), 2, backend="torch", dtype="float32", seed=0)
    for how, copied in _roundtrips(net):
        assert copied.backend == "torch" and copied.spec == net.spec, how
        torch.testing.assert_close(copied.to_tensor(), net.to_tensor())
    assert copy.deepcopy(net).backend_impl is net.backend_impl  # backends are per-process singletons


def test_a_torch_fit_result_pickles_deepcopies_and_saves():
    x = torch.tensor(np.random.default_rng(0).standard_normal((4, 5, 6)))
    result = tnmars.fit(x, "tucker", max_rank=2, seed=0, progress=False)
    assert result.network.backend == "torch"
    for how, copied in _roundtrips(result):
        assert copied.ranks == result.ranks, how
        torch.testing.assert_close(copied.network.to_tensor(), result.network.to_tensor())


def test_network_to_reads_torch_dtypes_and_devices():
    net = tnmars.Network.tt((3, 4), 2, seed=0)  # numpy
    assert net.to(torch.float32).dtype == "float32" and net.to(torch.float32).backend == "numpy"
    t = net.to("torch")
    assert (t.backend, t.dtype, t.device) == ("torch", "float64", "cpu")
    assert t.to(torch.float32).dtype == "float32"
    assert t.to("cpu").device == "cpu" and t.to(torch.device("cpu")).device == "cpu"
    assert t.to("cpu", torch.float16).dtype == "float16"
    assert t.to(np.float32).dtype == "float32"
    assert t.to(np.zeros(2, np.float32)).backend == "numpy"  # match an array: framework, device, dtype
    assert net.to(torch.zeros(1, dtype=torch.float32)).backend == "torch"
    assert t.to(net).backend == "numpy"
    np.testing.assert_allclose(t.to("numpy").to_tensor(), net.to_tensor())
    with pytest.raises(ValueError, match="cannot read 'gpu'"):
        t.to("gpu")
    with pytest.raises(TypeError, match="two dtypes"):
        t.to(torch.float32, torch.float64)
    with pytest.raises(ValueError, match="NumPy network cannot live on device 'cuda'"):
        net.to("cuda")


def test_modules_keep_working_after_to_and_double():
    model = _model().eval()
    x = torch.randn(3, 64)
    with torch.no_grad():
        want = model(x)
        got = model.double()(x.double())
    torch.testing.assert_close(got.float(), want, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ compile and trace
def _no_breaks(fn, *args):
    explanation = torch._dynamo.explain(fn)(*args)
    torch._dynamo.reset()
    return explanation.graph_break_count


def test_torch_compile_traces_compressed_and_mars_models_without_graph_breaks():
    model = _model()
    x, y = torch.randn(5, 64), torch.randint(0, 10, (5,))
    small = tnn.compress(model.eval()).eval()
    assert _no_breaks(small, x) == 0
    assert _no_breaks(model.eval(), x) == 0
    loss_fn = tnn.MarsLoss(model, 1000)
    model.train()
    assert _no_breaks(lambda a, b: loss_fn(model(a), b), x, y) == 0  # a MARS training forward + loss
    fast = tnn.MarsLoss(model, 1000)
    fast.optimizer(lr=1e-3)  # the core prior in the optimizer: the loss checks the cores are still the same
    assert _no_breaks(lambda a, b: fast(model(a), b), x, y) == 0
    compiled = torch.compile(small, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), small(x))
        torch.testing.assert_close(compiled(torch.randn(2, 64)).shape, torch.Size([2, 10]))
    torch._dynamo.reset()


def test_compiled_training_step_matches_eager_gradients():
    model = _model()
    x, y = torch.randn(5, 64), torch.randint(0, 10, (5,))
    for _, layer in tnn.mars_layers(model):
        layer.skip_closed = False  # the compiled graph never slices; compare like with like
    loss_fn = tnn.MarsLoss(model, 1000)
    compiled = torch.compile(lambda a, b: loss_fn(model(a), b), backend="aot_eager", fullgraph=True)
    grads = []
    for fn in (lambda a, b: loss_fn(model(a), b), compiled):
        model.zero_grad()
        torch.manual_seed(3)
        fn(x, y).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch._dynamo.reset()


@pytest.mark.parametrize("which", ["linear-weight", "attention", "embedding", "tucker2conv", "ttconv"])
def test_compile_fullgraph_under_no_grad_after_an_eager_inference_call(which):
    """An eager ``no_grad`` call fills the kept-product cache; reading ``layer.weight`` afterwards
    (attention's forward, the encoder fast path) compared storage pointers, which dynamo cannot
    trace: ``fullgraph=True`` failed once the model had been evaluated eagerly. (``Tucker2Conv2d``'s
    kernel searched its contraction path inside the traced graph: a failure however it was called.)"""
    torch.manual_seed(0)
    if which == "linear-weight":
        layer = TensorizedLinear(16, 16, rank=2).eval()
        fn, args = (lambda: layer.weight * 1), ()
        with torch.no_grad():
            layer.weight  # noqa: B018  (fills the cache)
    elif which == "attention":
        layer = tnn.TensorizedMultiheadAttention(16, 4, rank=2, batch_first=True).eval()
        x = torch.randn(2, 5, 16)
        fn, args = (lambda a: layer(a, a, a)[0]), (x,)
    else:
        layer = FACTORIES[which]().eval()
        fn, args = (lambda a: layer(a) + layer.weight.sum()), (_input(layer),)
    try:
        with torch.no_grad():
            want = fn(*args)  # eager first
            got = torch.compile(fn, backend="eager", fullgraph=True)(*args)
        torch.testing.assert_close(got, want)
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("mixed", [False, True], ids=["matrices", "convs-and-embedding"])
def test_a_compiled_mars_training_step_does_not_recompile_after_its_first_call(mixed):
    """The mask code's caches (constants, mask views) and the conv and embedding layers'
    path-choice caches were filled while tracing, which changed what dynamo guards on and made
    it compile the step a second time. A MARS layer registered into another module anywhere
    (``compress`` of a copy, a new model) moved a count the loss read: a recompile each time,
    and past the recompile limit a fullgraph step failed."""
    from tnmars.nn import masks as mask_module
    mask_module._CONSTANTS.clear()
    torch.manual_seed(0)
    if mixed:
        model = _Mixed()
        args = (torch.randn(5, 1, 4, 4), torch.randint(0, 50, (5,)))
    else:
        model = nn.Sequential(TensorizedLinear(64, 20, rank=3, in_shape=(8, 8), out_shape=(4, 5)), nn.ReLU(),
                              LowRankLinear(20, 10, rank=4))
        args = (torch.randn(5, 64),)
    for _, layer in tnn.mars_layers(model):
        layer.skip_closed = False
        layer.masks._views.clear()
    loss_fn = tnn.MarsLoss(model, 1000)
    opt = loss_fn.optimizer(lr=1e-3)
    y = torch.randint(0, 10, (5,))
    step = torch.compile(lambda *a: loss_fn(model(*a[:-1]), a[-1]), backend="aot_eager", fullgraph=True,
                         dynamic=False)
    opt.zero_grad()
    step(*args, y).backward()
    opt.step()
    try:
        torch._dynamo.config.error_on_recompile = True
        for temperature in (0.09, 0.08):
            nn.Sequential(LowRankLinear(4, 4, rank=2))  # registered elsewhere: the loss walks its model, eagerly
            tnn.set_temperature(model, temperature)  # a schedule's step: read from a tensor, not a graph constant
            opt.zero_grad()
            step(*args, y).backward()
            opt.step()
    finally:
        torch._dynamo.config.error_on_recompile = False
        torch._dynamo.reset()


def _compiled_mars_step():
    """A small MARS model (no host-side slicing, which compile turns off anyway), its loss, the
    loss's compiled step (aot_eager, fullgraph, static shapes) and a batch."""
    torch.manual_seed(0)
    model = nn.Sequential(TensorizedLinear(16, 16, rank=3, in_shape=(4, 4), out_shape=(4, 4)), nn.ReLU(),
                          LowRankLinear(16, 8, rank=3))
    for _, layer in tnn.mars_layers(model):
        layer.skip_closed = False
    loss_fn = tnn.MarsLoss(model, 1000)
    step = torch.compile(lambda a, b: loss_fn(model(a), b), backend="aot_eager", fullgraph=True, dynamic=False)
    return model, loss_fn, step, torch.randn(5, 16), torch.randint(0, 8, (5,))


def test_a_compiled_step_with_the_prior_in_the_loss_compiles_once_and_draws_at_the_set_temperature():
    """Found by review: the prior's constants were cached while tracing (a guard on the cache:
    a second compile), and the temperature was a constant of the graph (a schedule recompiled
    the step at every change; past the limit a fullgraph step failed)."""
    from tnmars.nn.masks import BondMasks
    model, loss_fn, step, x, y = _compiled_mars_step()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt.zero_grad()
    step(x, y).backward()
    opt.step()
    try:
        torch._dynamo.config.error_on_recompile = True
        for temperature in (0.09, 0.05):
            tnn.set_temperature(model, temperature)
            opt.zero_grad()
            step(x, y).backward()
            opt.step()
    finally:
        torch._dynamo.config.error_on_recompile = False
        torch._dynamo.reset()
    masks = BondMasks({"A": 6, "B": 5}, alpha=0.0, min_rank=0).train()
    draw = torch.compile(lambda: masks._flat_mask(), backend="aot_eager", fullgraph=True)
    try:
        torch.manual_seed(0)
        first = draw()
        masks.temperature = 2.0
        torch.manual_seed(0)
        second = draw()
        torch.manual_seed(0)
        torch.testing.assert_close(second, masks._flat_mask())
        assert not torch.equal(first, second)
    finally:
        torch._dynamo.reset()


class _Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = TensorizedEmbedding(50, 16, rank=3)
        self.conv = TensorizedConv2d(1, 8, 3, rank=3, padding=1)
        self.tucker = Tucker2Conv2d(8, 8, 3, rank=(3, 3), padding=1)
        self.out = LowRankLinear(8 * 16 + 16, 10, rank=3)

    def forward(self, img: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        h = self.tucker(torch.relu(self.conv(img))).flatten(1)
        return self.out(torch.cat([h, self.emb(idx)], 1))


def test_fullgraph_compile_takes_changing_batch_sizes_with_pytorchs_default_dynamic():
    """With ``dynamic=None`` (PyTorch's default) dynamo makes the batch symbolic at the second
    batch size; the layers' per-size path choice could not take it (``fullgraph`` failed at the
    second size), and the embedding's host-side index check could not be traced at all. The
    batch is now specialised while tracing (one graph per size, as with ``dynamic=False``), and
    a traced embedding checks its indices in the compiled code."""
    torch.manual_seed(0)
    model = _Mixed()
    loss_fn = tnn.MarsLoss(model, 1000)
    step = torch.compile(lambda a, b, y: loss_fn(model(a, b), y), backend="aot_eager", fullgraph=True)
    try:
        for batch in (6, 5, 3, 1):
            a, b, y = torch.randn(batch, 1, 4, 4), torch.randint(0, 50, (batch,)), torch.randint(0, 10, (batch,))
            torch.manual_seed(batch)
            got = step(a, b, y)
            torch.manual_seed(batch)
            want = loss_fn(model(a, b), y)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        model.eval()
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        with torch.no_grad():
            for batch in (4, 7, 2, 0):
                a, b = torch.randn(batch, 1, 4, 4), torch.randint(0, 50, (batch,))
                torch.testing.assert_close(compiled(a, b), model(a, b), rtol=1e-5, atol=1e-6)
            with pytest.raises(RuntimeError, match="embedding index out of range"):
                compiled(torch.randn(2, 1, 4, 4), torch.tensor([3, 50]))
    finally:
        torch._dynamo.reset()


def test_jit_trace_fails_with_a_message_that_says_why():
    small = tnn.compress(_model().eval()).eval()
    with pytest.raises(RuntimeError, match="torch.jit.trace.*contraction order.*torch.compile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.trace(small, torch.randn(2, 64))
    exported = torch.export.export(small, (torch.randn(2, 64),))
    x = torch.randn(2, 64)
    torch.testing.assert_close(exported.module()(x), small(x))


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("made_inside", [False, True])
def test_inference_mode_gives_the_no_grad_outputs_with_closed_indices(name, made_inside):
    """A trained, uncompressed MARS layer (some indices closed) runs under
    ``torch.inference_mode`` as under ``torch.no_grad``, also when the layer itself was built
    inside inference mode (its parameters then have no version counter to key caches on)."""
    torch.manual_seed(0)
    if made_inside:
        with torch.inference_mode():
            layer = FACTORIES[name]().eval()
    else:
        layer = FACTORIES[name]().eval()
    with torch.inference_mode() if made_inside else torch.no_grad():
        layer.masks.logits[::2] = -3.0  # every other index closed (at least one kept per bond)
    x = _input(layer)
    with torch.no_grad():
        want = layer(x)
        weight = layer.weight
    for _ in range(2):  # the second call may be served from kept products
        with torch.inference_mode():
            torch.testing.assert_close(layer(x), want)
            torch.testing.assert_close(layer.weight, weight)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_layers_build_on_the_meta_device_and_load_weights_after_to_empty(name):
    """``with torch.device("meta")`` (building a large model without memory, then
    ``to_empty`` and ``load_state_dict``): found by an outside probe, every layer failed while
    drawing its seed and checking its cores' values there."""
    torch.manual_seed(0)
    real = FACTORIES[name]().eval()
    with torch.device("meta"):
        torch.manual_seed(0)
        empty = FACTORIES[name]()
    assert all(p.is_meta for p in empty.parameters())
    empty = empty.to_empty(device="cpu")
    empty.load_state_dict(real.state_dict())
    x = _input(real, batch=3)
    torch.testing.assert_close(empty.eval()(x), real(x))


@pytest.mark.parametrize("name", list(FACTORIES))
def test_deferred_initialisation_by_reset_parameters_draws_what_the_constructor_draws(name):
    """Deferred initialisation (meta, ``to_empty``, then every module's ``reset_parameters``, as
    FSDP does) left a tensorized layer's uninitialised memory as its weights, silently (cores of
    1e14, logits of 0; ``nn.Linear`` was re-initialised): an outside probe. It was then refused
    with an error, which also broke the usual re-initialisation loop between runs; now the layer
    draws its cores, bias and logits as its constructor does."""
    with torch.device("meta"):
        model = nn.Sequential(FACTORIES[name]())
    model = model.to_empty(device="cpu")
    with torch.no_grad():  # to_empty's memory may hold anything: make it absurd on purpose
        for p in model.parameters():
            p.fill_(1e14)
    torch.manual_seed(3)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    layer = model[0]
    torch.manual_seed(4)
    fresh = FACTORIES[name]()
    assert layer.max_ranks == fresh.max_ranks
    # the logits start where the constructor's do (open masks), the bias as the constructor's
    torch.testing.assert_close(layer.masks.logits, fresh.masks.logits, atol=0.1, rtol=0)
    bias = getattr(layer, "bias", None)
    if bias is not None:
        assert bias.abs().max() <= max(fresh.bias.abs().max(), 1e-12) * 10 + 1e-6
    # the weight has the constructor's scale (its standard deviation, within sampling error on
    # these small layers), and the layer computes finite outputs
    with torch.no_grad():
        got, want = layer.eval().weight.std().item(), fresh.eval().weight.std().item()
        assert 0.3 < got / want < 3.0, (got, want)
        assert torch.isfinite(layer(_input(layer))).all()
    # seeded by torch.manual_seed, as nn.Linear's
    before = [p.detach().clone() for p in layer.parameters()]
    torch.manual_seed(3)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    for a, b in zip(before, layer.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["tt", "lowrank", "tucker2conv", "embedding"])
def test_reset_parameters_gives_the_constructors_weight_scale_on_large_layers(name):
    """On layers large enough for the sample to tell: the dense weight's standard deviation
    after ``reset_parameters`` is the constructor's (medians of 9 draws within 10%), also after ``compressed`` (at
    the selected ranks) and on a layer converted from a dense one."""
    big = {"tt": lambda: TensorizedLinear(256, 256, rank=8),
           "lowrank": lambda: LowRankLinear(256, 256, rank=16),
           "tucker2conv": lambda: Tucker2Conv2d(32, 32, 3, rank=(8, 8)),
           "embedding": lambda: TensorizedEmbedding(1000, 64, rank=8)}[name]
    torch.manual_seed(0)  # (one draw's spread is about 10% for the TT layer: medians of 9)
    want = float(np.median([big().eval().weight.std().item() for _ in range(9)]))
    layer = big()
    with torch.no_grad():
        layer.masks.logits[::3] = -20.0  # some indices closed, then the layer compressed to the rest
    small = layer.eval().compressed()
    assert small.num_params < layer.num_params
    converted = {"tt": lambda: TensorizedLinear.from_linear(nn.Linear(256, 256), rank=8),
                 "lowrank": lambda: LowRankLinear.from_linear(nn.Linear(256, 256), rank=16),
                 "tucker2conv": lambda: Tucker2Conv2d.from_conv(nn.Conv2d(32, 32, 3), rank=(8, 8)),
                 "embedding": lambda: TensorizedEmbedding.from_embedding(nn.Embedding(1000, 64), rank=8)}[name]()
    for module in (layer, small, converted):
        with torch.no_grad():
            for p in module.parameters():
                p.zero_()
        got = []
        for _ in range(9):
            module.reset_parameters()
            got.append(module.eval().weight.std().item())
        assert abs(float(np.median(got)) / want - 1.0) < 0.1, (module, got, want)


def test_reset_parameters_restarts_masks_that_training_closed():
    """A layer whose masks MARS closed gets open masks back (the constructor's logits), so a
    re-initialised model trains from the start again rather than from the last run's ranks."""
    layer = TensorizedLinear(64, 32, rank=4)
    with torch.no_grad():
        layer.masks.logits.fill_(-10.0)
    with pytest.warns(RuntimeWarning, match="closed every index"):
        assert sum(layer.eval().ranks.values()) == len(layer.ranks)  # min_rank 1: one index per bond
    layer.reset_parameters()
    assert layer.ranks == layer.max_ranks


# ------------------------------------------------------------------ batches and inputs
@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_empty_batches_work(name, mode):
    layer = getattr(FACTORIES[name](), mode)()
    x = _input(layer, batch=0)
    y = layer(x)
    assert y.shape[0] == 0
    full = layer(_input(layer, batch=2))
    assert y.shape[1:] == full.shape[1:]
    if mode == "train":
        (y.sum() + full.sum()).backward()


_DENSE_TWINS = {"tt": lambda: nn.Linear(12, 20), "tucker": lambda: nn.Linear(12, 20), "lowrank": lambda: nn.Linear(12, 20),
                "tucker2conv": lambda: nn.Conv2d(4, 6, 3), "ttconv": lambda: nn.Conv2d(4, 6, 3)}


@pytest.mark.parametrize("name", list(_DENSE_TWINS))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_autocast_gives_the_dense_layers_output_dtype_and_a_training_step_runs(name, mode):
    """Under ``torch.autocast`` (bfloat16 on the CPU) a layer's output has the dtype its dense
    counterpart's has: a float32 bias added to the low-precision product must not promote it back."""
    torch.manual_seed(0)
    layer = getattr(FACTORIES[name](), mode)()
    x = _input(layer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
        with torch.no_grad():
            y_frozen = layer(x)
        expected = _DENSE_TWINS[name]()(x).dtype
    assert expected == torch.bfloat16 and y.dtype == y_frozen.dtype == expected  # (no cached blocks under autocast)
    if mode == "eval":  # (training draws new masks at every call)
        exact = layer(x)
        assert float((y.float() - exact).norm() / exact.norm()) < 0.02  # bfloat16 keeps about 3 digits
    else:
        y.float().square().mean().backward()
        assert all(torch.isfinite(c.grad).all() for c in layer.cores)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_an_embedding_under_autocast_returns_its_tables_dtype_as_nn_embedding_does(mode):
    """A lookup is not cast by autocast: ``nn.Embedding`` returns float32 under bfloat16
    autocast, and so does the tensorized table (its contraction runs in the cores' dtype)."""
    torch.manual_seed(0)
    layer = getattr(FACTORIES["embedding"](), mode)()
    x = _input(layer)
    torch.manual_seed(1)
    plain = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(1)  # (the same mask draw in training)
        y = layer(x)
        expected = nn.Embedding(30, 8)(x).dtype
        assert torch.is_autocast_enabled("cpu")  # (left on for the rest of the model)
    assert expected == y.dtype == torch.float32
    torch.testing.assert_close(y, plain)
    if mode == "train":
        y.square().mean().backward()
        assert all(torch.isfinite(c.grad).all() for c in layer.cores)


@pytest.mark.parametrize("name", list(_DENSE_TWINS))
def test_a_closed_layer_under_autocast_gives_the_dense_layers_dtype(name):
    """The short-circuit to the bias builds its zeros without a matmul: it asks autocast for the dtype."""
    layer = FACTORIES[name]()
    layer.masks.min_rank = 0
    with torch.no_grad():
        layer.masks.logits.fill_(-20.0)
    x = _input(layer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer.train()(x)
        expected = _DENSE_TWINS[name]()(x).dtype
    assert y.dtype == expected == torch.bfloat16
    y.float().sum().backward()
    assert all(c.grad is not None for c in layer.cores)
    assert layer(x).dtype == torch.float32  # outside autocast: the input's dtype


@pytest.mark.parametrize("name", list(FACTORIES))
def test_weight_is_the_dense_weight_the_torch_function_takes(name):
    """``layer.weight`` in the replaced torch layer's layout: the functional form of that layer
    with it computes what the layer computes (eval: MAP masks)."""
    torch.manual_seed(0)
    layer = FACTORIES[name]().double().eval()
    x = _input(layer)
    x = x if not x.is_floating_point() else x.double()
    w = layer.weight
    if isinstance(layer, (Tucker2Conv2d, TensorizedConv2d)):
        expected = F.conv2d(x, w, layer.bias, layer.stride, layer.padding, layer.dilation)
    elif isinstance(layer, TensorizedEmbedding):
        expected = F.embedding(x, w, layer.padding_idx)
    else:
        expected = F.linear(x, w, layer.bias)
    torch.testing.assert_close(layer(x), expected)
    assert w.requires_grad and "weight" not in dict(layer.named_parameters())


@pytest.mark.parametrize("name", list(FACTORIES))
def test_assigning_the_computed_weight_says_it_is_computed_from_the_cores(name):
    """An outside probe: ``layer.weight = nn.Parameter(...)`` raised torch's bare ``KeyError:
    "attribute 'weight' already exists"`` and a plain tensor "property 'weight' ... has no
    setter"; both now say that the weight is computed from the cores and how to set it. The
    layer is unchanged."""
    torch.manual_seed(0)
    layer = FACTORIES[name]().eval()  # (MAP masks: the weight is the same at each access)
    before = layer.weight.detach().clone()
    converter = {"TensorizedConv2d": "from_conv", "Tucker2Conv2d": "from_conv",
                 "TensorizedEmbedding": "from_embedding"}.get(type(layer).__name__, "from_linear")
    for value in (nn.Parameter(torch.zeros_like(before)), torch.zeros_like(before)):
        kind = type(layer).__name__
        with pytest.raises(AttributeError, match=rf"{kind}\.weight cannot be assigned: it is computed from the "
                                                 rf"cores .*{kind}\.{converter}\(.*layer\.cores"):
            layer.weight = value
    assert "weight" not in dict(layer.named_parameters()) and "weight" not in layer.state_dict()
    torch.testing.assert_close(layer.weight.detach(), before)
    layer.mode = layer.mode  # other attributes are set as before


def test_a_tensorized_transformer_runs_the_dense_function_including_the_inference_fast_path():
    """``nn.TransformerEncoderLayer`` reads ``linear1.weight`` (and feeds it to a fused kernel)
    in eval mode without gradients; tensorized at full rank it computes the dense function."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
    dense = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(3, 5, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank="full" is larger than the dense layers
        small = tnn.tensorize(dense, rank="full").eval()
    assert isinstance(small.layers[0].linear1, TensorizedLinear)
    assert isinstance(small.layers[0].self_attn, tnn.TensorizedMultiheadAttention)
    with torch.no_grad():
        torch.testing.assert_close(small(x), dense(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(small(x), dense(x), atol=1e-5, rtol=1e-5)
    small.train()
    small(x).square().mean().backward()
    assert small.layers[0].linear1.cores[0].grad is not None


@pytest.mark.parametrize("name", list(FACTORIES))
def test_closed_layers_short_circuit_to_the_bias(name):
    """A bond at rank 0 (``min_rank=0``): the output is the bias, without building a zero weight,
    and the cores still get (zero) gradients as through the zero weight."""
    layer = FACTORIES[name]()
    layer.masks.min_rank = 0
    with torch.no_grad():
        layer.masks.logits.fill_(-20.0)
    x = _input(layer)
    layer.train()
    y = layer(x)
    bias = getattr(layer, "bias", None)
    expected = torch.zeros_like(y) if bias is None else torch.zeros_like(y) + (bias if y.ndim != 4 else bias[:, None, None])
    torch.testing.assert_close(y, expected)
    y.sum().backward()
    assert all(c.grad is not None and float(c.grad.abs().sum()) == 0.0 for c in layer.cores)


@pytest.mark.parametrize("name", ["tucker2conv", "ttconv"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_convolutions_take_an_unbatched_image_as_nn_conv2d_does(name, mode):
    """``nn.Conv2d`` maps (C, H, W) to (C_out, H', W'); the tensorized convolutions refused it
    (found by an outside probe: a model relying on it broke after tensorize)."""
    layer = getattr(FACTORIES[name](), mode)()
    image = torch.randn(4, 7, 7, requires_grad=True)
    torch.manual_seed(0)
    one = layer(image)
    torch.manual_seed(0)
    batched = layer(image.unsqueeze(0))
    assert one.shape == batched.shape[1:]
    torch.testing.assert_close(one, batched[0])
    one.sum().backward()
    assert image.grad is not None
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\) or \(4, H, W\)"):
        layer(torch.randn(5, 7, 7))


@pytest.mark.parametrize("name", list(FACTORIES))
def test_list_and_zero_d_inputs_are_named_errors(name):
    layer = FACTORIES[name]()
    with pytest.raises(TypeError, match="torch.Tensor"):
        layer(_input(layer).tolist())
    if not isinstance(layer, TensorizedEmbedding):  # a 0-d index is a valid embedding lookup
        with pytest.raises(ValueError, match="0-d|expected input"):
            layer(torch.tensor(1.0))
    else:
        assert layer(torch.tensor(3)).shape == (8,)


_DTYPES = st.sampled_from([torch.float32, torch.float64, torch.int64, torch.bool, torch.float16])
_VALUES = st.sampled_from([0.0, 1.0, -1e30, float("nan"), float("inf")])


_TRAILING = {"tt": [(12,)], "tucker": [(12,)], "lowrank": [(12,)], "tucker2conv": [(4, 7, 7), (4, 1, 1), (4, 0, 5)],
             "ttconv": [(4, 7, 7), (4, 2, 2), (4, 3, 0)], "embedding": [()]}


@st.composite
def _shapes(draw, name):
    """Mostly shapes a layer accepts (so dtype and value checks are reached), sometimes not."""
    lead = draw(st.lists(st.integers(0, 4), min_size=0 if name in ("tt", "tucker", "lowrank", "embedding") else 1,
                         max_size=1 if name in ("tucker2conv", "ttconv") else 3))
    if draw(st.booleans()):
        return tuple(lead) + draw(st.sampled_from(_TRAILING[name]))
    return tuple(draw(st.lists(st.integers(0, 13), min_size=0, max_size=5)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(list(FACTORIES)), dtype=_DTYPES, value=_VALUES, as_list=st.booleans(),
       training=st.booleans())
def test_fuzzed_inputs_give_an_output_or_a_named_error(data, name, dtype, value, as_list, training):
    """Whatever the input, a layer returns a tensor of the right shape or raises a ValueError /
    TypeError with a message (never an AttributeError, IndexError or a torch RuntimeError from
    deep inside); finite inputs give finite outputs."""
    shape = data.draw(_shapes(name))
    layer = FACTORIES[name]().train(training)
    if isinstance(layer, TensorizedEmbedding) and dtype == torch.int64:
        x = torch.full(shape, int(value) if np.isfinite(value) and abs(value) < 1e9 else 40, dtype=dtype)
    elif dtype == torch.bool:
        x = torch.zeros(shape, dtype=dtype)
    else:
        x = torch.full(shape, value).to(dtype)
    arg = x.tolist() if as_list else x
    try:
        y = layer(arg)
    except (ValueError, TypeError) as err:
        assert str(err)
        return
    assert isinstance(y, torch.Tensor)
    if isinstance(layer, TensorizedEmbedding):
        assert y.shape == tuple(shape) + (8,)
    elif isinstance(layer, (Tucker2Conv2d, TensorizedConv2d)):
        if len(shape) == 3:  # an unbatched image (C, H, W), as torch's Conv2d takes it: (6, H', W') back
            assert y.ndim == 3 and y.shape[0] == 6
        else:
            assert y.ndim == 4 and y.shape[:2] == (shape[0], 6)
    else:
        assert y.shape == tuple(shape[:-1]) + (20,)
    if torch.isfinite(x).all() and x.abs().max() < 1e3 if x.numel() and x.is_floating_point() else True:
        assert torch.isfinite(y).all()


def test_a_layer_replaced_between_calls_of_a_compiled_loss_makes_the_mars_optimizer_raise():
    """Found by review: a compiled loss skips the check that follows replaced layers (it would
    recompile at every registration), so a layer replaced between compiled calls kept its old
    prior and, under loss_fn.optimizer(), did not train, silently. The optimizer's (eager) step
    checks the layers now."""
    model, loss_fn, step, x, y = _compiled_mars_step()
    opt = loss_fn.optimizer(lr=1e-3)
    try:
        opt.zero_grad()
        step(x, y).backward()
        opt.step()
        model[2] = LowRankLinear(16, 8, rank=2)
        for _, layer in tnn.mars_layers(model):
            layer.skip_closed = False
        opt.zero_grad()
        step(x, y).backward()
        with pytest.raises(RuntimeError, match="changed since MarsLoss.optimizer"):
            opt.step()
    finally:
        torch._dynamo.reset()
    # pickled together, the loss and its optimizer keep the check
    import pickle
    small = nn.Sequential(LowRankLinear(6, 4, rank=2))
    small_loss = tnn.MarsLoss(small, 100)
    small_opt = small_loss.optimizer(lr=1e-3)
    small, small_loss, small_opt = pickle.loads(pickle.dumps((small, small_loss, small_opt)))
    assert small_opt.mars_prior.loss_ref() is small_loss


@pytest.mark.parametrize("name", list(FACTORIES))
def test_torch_export_with_a_dynamic_batch_gives_a_graph_for_every_batch_size(name):
    """The refusal of jit.trace points to torch.export; an outside probe found its graph
    specialised to the example's batch (a layer chose its contraction by the batch size): a
    dynamic batch dimension failed with "Constraints violated", a static one at any other batch."""
    torch.manual_seed(0)
    layer = tnn.compress(FACTORIES[name]().eval())
    batch = torch.export.Dim("batch")
    graph = torch.export.export(layer, (_input(layer, batch=5),), dynamic_shapes=({0: batch},)).module()
    for size in (2, 11):
        x = _input(layer, batch=size)
        with torch.no_grad():
            torch.testing.assert_close(graph(x), layer(x), rtol=1e-5, atol=1e-5)
