"""GPU checks: torch on CUDA and CuPy, end to end. They skip cleanly on machines without a GPU.

Each test runs the same work on the CPU and on the GPU and compares: a contraction, a pruned
network, a rank selection (``tnmars.fit`` / ``tnmars.search``), saving and loading, and the
PyTorch layers' forward, backward, MARS training step, compression and inference fast path,
and the stable recurrent models (projection, stability hook, compiled TT path).
"""
import io
import math
import warnings

import numpy as np
import pytest

import tnmars
from tnmars import Network

torch = pytest.importorskip("torch")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def _cupy():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("cupy is installed but sees no GPU")
    except Exception:  # pragma: no cover - cupy without a driver
        pytest.skip("cupy is installed but no GPU is usable")
    return cupy


def _tucker_data(seed: int = 0, shape=(12, 11, 10), ranks=(2, 3, 4), noise: float = 1e-3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    core = rng.standard_normal(ranks)
    factors = [np.linalg.qr(rng.standard_normal((n, r)))[0] for n, r in zip(shape, ranks)]
    x = np.einsum("abc,ia,jb,kc->ijk", core, *factors)
    return x + noise * np.linalg.norm(x) / np.sqrt(x.size) * rng.standard_normal(shape)


# ------------------------------------------------------------------------------ torch on CUDA
@pytest.mark.cuda
@needs_cuda
def test_torch_cuda_contraction_stays_on_the_device():
    net = Network.tt((4, 5, 6), 3, seed=0).to("torch", device="cuda")
    out = net.to_tensor()
    assert out.is_cuda
    np.testing.assert_allclose(out.cpu().numpy(), Network.tt((4, 5, 6), 3, seed=0).to_tensor(), atol=1e-10)
    pruned = net.prune({"A": torch.tensor([True, False, True], device="cuda")})
    assert pruned.ranks == (2, 3) and pruned.device.startswith("cuda")
    # torch's own spelling of a device moves a network too
    assert Network.tr((3, 4, 5), 2, seed=0).to("torch").to(torch.device("cuda")).device.startswith("cuda")


@pytest.mark.cuda
@needs_cuda
def test_torch_cuda_fit_selects_the_cpu_ranks_and_returns_cuda_tensors():
    x = _tucker_data()
    cpu = tnmars.fit(x, "tucker", max_rank=6, seed=0, progress=False)
    gpu = tnmars.fit(torch.as_tensor(x, device="cuda"), "tucker", max_rank=6, seed=0, progress=False)
    assert gpu.ranks == cpu.ranks == (2, 3, 4)
    assert gpu.network.device.startswith("cuda")
    est = gpu.network.to_tensor()
    assert est.is_cuda
    assert abs(gpu.relative_error - cpu.relative_error) < 1e-6
    np.testing.assert_allclose(est.cpu().numpy(), cpu.network.to_tensor(), atol=1e-6 * np.abs(x).max())


@pytest.mark.cuda
@needs_cuda
def test_torch_cuda_completion_and_search():
    x = _tucker_data(seed=1)
    observed = np.random.default_rng(1).random(x.shape) < 0.6
    xt = torch.as_tensor(np.where(observed, x, 0.0), device="cuda")
    res = tnmars.fit(xt, "tt", max_rank=5, observed=torch.as_tensor(observed, device="cuda"), seed=0,
                     progress=False)
    assert res.network.device.startswith("cuda")
    full = res.network.to_tensor().cpu().numpy()
    assert np.linalg.norm(full - x) / np.linalg.norm(x) < 0.05  # the unobserved 40% too
    found = tnmars.search(torch.as_tensor(x, device="cuda"), max_rank=4, seed=0, progress=False)
    assert found.network.device.startswith("cuda") and found.relative_error < 0.05


@pytest.mark.cuda
@needs_cuda
def test_torch_cuda_network_saves_and_loads(tmp_path):
    net = Network.tt((4, 5, 6), 3, seed=0).to("torch", device="cuda")
    path = tnmars.save(net, tmp_path / "net.npz")
    back = tnmars.load(path, backend="torch", device="cuda")
    assert back.device.startswith("cuda")
    torch.testing.assert_close(back.to_tensor(), net.to_tensor())


# ------------------------------------------------------------------------------ tnmars.nn on CUDA
def _layers():
    from tnmars import nn as tnn

    return [
        lambda: tnn.TensorizedLinear(64, 48, rank=6),
        lambda: tnn.LowRankLinear(64, 48, rank=6),
        lambda: torch.nn.Sequential(tnn.Tucker2Conv2d(4, 8, 3, rank=3, padding=1), torch.nn.Flatten()),
        lambda: torch.nn.Sequential(tnn.TensorizedConv2d(4, 8, 3, rank=3, padding=1), torch.nn.Flatten()),
        lambda: tnn.TensorizedEmbedding(60, 16, rank=4),
    ]


def _input(i: int, device: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(i)
    if i in (2, 3):
        return torch.randn(5, 4, 6, 6, generator=gen).to(device)
    if i == 4:
        return torch.randint(0, 60, (5, 7), generator=gen).to(device)
    return torch.randn(5, 64, generator=gen).to(device)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("i", range(5), ids=["tt-linear", "low-rank", "tucker2-conv", "tt-conv", "tt-embedding"])
def test_layers_on_cuda_match_the_cpu(i):
    torch.manual_seed(0)
    cpu = _layers()[i]().double()
    gpu = _layers()[i]().double()
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.to("cuda")
    x_cpu, x_gpu = _input(i, "cpu"), _input(i, "cuda")
    if x_cpu.is_floating_point():
        x_cpu, x_gpu = x_cpu.double(), x_gpu.double()
    for mode in ("eval", "train"):
        getattr(cpu, mode)(), getattr(gpu, mode)()
        torch.manual_seed(1)
        if mode == "eval":
            with torch.no_grad():  # the inference fast path
                torch.testing.assert_close(gpu(x_gpu).cpu(), cpu(x_cpu))
            out_cpu, out_gpu = cpu(x_cpu), gpu(x_gpu)
            torch.testing.assert_close(out_gpu.cpu(), out_cpu)
            out_cpu.square().sum().backward()
            out_gpu.square().sum().backward()
            for (name, p), q in zip(cpu.named_parameters(), gpu.parameters()):
                if p.grad is not None:
                    torch.testing.assert_close(q.grad.cpu(), p.grad, msg=name)
        else:  # a training draw: finite, on the device, gradients everywhere they should be
            out = gpu(x_gpu)
            assert out.is_cuda and torch.isfinite(out).all()


@pytest.mark.cuda
@needs_cuda
def test_mars_training_on_cuda_compresses_and_stays_on_the_device():
    from tnmars import nn as tnn

    torch.manual_seed(0)
    model = torch.nn.Sequential(tnn.TensorizedLinear(64, 64, rank=8), torch.nn.ReLU(),
                                tnn.TensorizedLinear(64, 4, rank=4)).to("cuda")
    x = torch.randn(256, 64, device="cuda")
    y = (x[:, :4].argmax(1))  # a task a low-rank model can learn
    loss_fn = tnn.MarsLoss(model, num_train=256)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < first and torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    small = tnn.compress(model)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), atol=1e-4, rtol=1e-4)
    assert all(p.is_cuda for p in small.parameters())
    assert accuracy > 0.5
    buf = io.BytesIO()
    torch.save(small, buf)  # the whole module, as users do
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    with torch.no_grad():
        torch.testing.assert_close(again(x), small(x))


@pytest.mark.cuda
@needs_cuda
def test_host_classified_draws_on_cuda_give_the_device_draws_outputs_and_gradients():
    """``skip_closed=True`` on CUDA (off by default there): the draw is read on the host, live
    entries' values and slopes go back in one transfer; same outputs and gradients as the
    device-side draw from the same uniforms."""
    from tnmars import nn as tnn

    torch.manual_seed(0)
    layer = tnn.TensorizedLinear(64, 48, rank=6, in_shape=(4, 4, 4), out_shape=(4, 4, 3), temperature=1.0).cuda()
    with torch.no_grad():
        layer.masks.logits.copy_(torch.linspace(-3.0, 3.0, layer.masks.logits.numel()))  # 0, live and 1 draws
    x = torch.randn(32, 64, device="cuda")
    results = {}
    for skip in (False, True):
        layer.skip_closed = skip
        runs = []
        for seed in (3, 4, 5):
            layer.zero_grad()
            torch.manual_seed(seed)
            y = layer(x)
            (y ** 2).sum().backward()
            runs.append((y.detach(), [p.grad.clone() for p in layer.parameters()]))
        results[skip] = runs
    for (y0, g0), (y1, g1) in zip(results[False], results[True]):
        torch.testing.assert_close(y1, y0, rtol=1e-4, atol=1e-5)
        for a, b in zip(g1, g0):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert any(float(g[-1].abs().sum()) > 0 for _, g in results[True])  # some draw was live


@pytest.mark.cuda
@needs_cuda
def test_from_linear_on_cuda_is_exact_at_full_rank():
    from tnmars import nn as tnn

    dense = torch.nn.Linear(24, 20).double().to("cuda")
    with warnings.catch_warnings():  # at full rank a TT layer of this size is larger than the dense one
        warnings.simplefilter("ignore")
        layer = tnn.TensorizedLinear.from_linear(dense, format="tt", rank="full")
    x = torch.randn(3, 24, dtype=torch.float64, device="cuda")
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), dense(x))
    assert next(layer.parameters()).is_cuda


@pytest.mark.cuda
@needs_cuda
def test_compiled_eval_model_on_cuda():
    from tnmars import nn as tnn

    torch.manual_seed(0)
    model = torch.nn.Sequential(tnn.TensorizedLinear(64, 32, rank=4, mars=False), torch.nn.ReLU(),
                                tnn.LowRankLinear(32, 10, rank=4, mars=False)).to("cuda").eval()
    x = torch.randn(8, 64, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = torch.compile(model, fullgraph=True)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-5)


_DENSE_TWINS = [lambda: torch.nn.Linear(64, 48), lambda: torch.nn.Linear(64, 48),
                lambda: torch.nn.Conv2d(4, 8, 3, padding=1), lambda: torch.nn.Conv2d(4, 8, 3, padding=1)]


def _autocast_on(device: str, dtype: torch.dtype) -> None:
    """Under autocast each linear and conv layer returns the dtype its dense twin returns, close
    to its float32 output in eval, with finite gradients in training; a closed layer (rank 0,
    the short-circuit to the bias) gives that dtype too."""
    tolerance = {torch.bfloat16: 0.02, torch.float16: 0.004}[dtype]  # (about 3 and 4 digits)
    for i in range(4):
        torch.manual_seed(0)
        layer = _layers()[i]().to(device)
        x = _input(i, device)
        with torch.autocast(device, dtype=dtype):
            expected = _DENSE_TWINS[i]().to(device)(x).dtype
            layer.eval()
            y = layer(x)
            with torch.no_grad():
                y_frozen = layer(x)
            layer.train()
            y_train = layer(x)
        assert expected == dtype and y.dtype == y_frozen.dtype == y_train.dtype == dtype, i
        with torch.no_grad():
            exact = layer.eval()(x)
        assert float((y.float() - exact).norm() / exact.norm()) < tolerance, i
        y_train.float().square().mean().backward()
        inner = layer if hasattr(layer, "cores") else layer[0]
        assert all(bool(torch.isfinite(c.grad).all()) for c in inner.cores), i
        inner.masks.min_rank = 0
        with torch.no_grad():
            inner.masks.logits.fill_(-20.0)
        with torch.autocast(device, dtype=dtype):
            closed = layer.train()(x)
        assert closed.dtype == dtype and closed.device.type == device, i
    torch.manual_seed(0)
    embedding = _layers()[4]().to(device).eval()  # a lookup is not cast: nn.Embedding's dtype
    x = _input(4, device)
    with torch.autocast(device, dtype=dtype):
        y = embedding(x)
        expected = torch.nn.Embedding(60, 16).to(device)(x).dtype
    assert y.dtype == expected == torch.float32
    torch.testing.assert_close(y, embedding(x))


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_layers_under_cuda_autocast_give_the_dense_layers_dtype(dtype):
    _autocast_on("cuda", getattr(torch, dtype))


def _transformer_on(device: str) -> None:
    """A tensorized ``nn.TransformerEncoder`` at full rank computes the dense one's function,
    in eval without gradients too, where PyTorch's fused fast path reads ``linear1.weight``."""
    from tnmars import nn as tnn

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
    dense = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).to(device).eval()
    x = torch.randn(3, 5, 16, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank="full" is larger than the dense layers
        small = tnn.tensorize(dense, rank="full").eval()
    assert isinstance(small.layers[0].linear1, tnn.TensorizedLinear)
    assert isinstance(small.layers[0].self_attn, tnn.TensorizedMultiheadAttention)
    assert small.layers[0].linear1.weight.device.type == device
    assert small.layers[0].self_attn.in_proj_weight.device.type == device
    with torch.no_grad():
        torch.testing.assert_close(small(x), dense(x), atol=1e-5, rtol=1e-5)
    small.train()
    small(x).square().mean().backward()
    assert small.layers[0].linear1.cores[0].grad.device.type == device
    assert small.layers[0].self_attn.q_proj.cores[0].grad.device.type == device


@pytest.mark.cuda
@needs_cuda
def test_tensorized_transformer_on_cuda_runs_the_dense_function():
    _transformer_on("cuda")


def _optimizer_prior_on(device: str) -> None:
    """``MarsLoss.optimizer()`` (fused Adam that adds the prior's gradient in its step, weighted
    by a device scalar's gradient) takes the steps that Adam takes with the whole prior in the loss, open masks included (every draw
    exactly 1: the logits' only gradient is the prior's)."""
    from tnmars import nn as tnn

    def model():
        torch.manual_seed(3)
        return torch.nn.Sequential(tnn.TensorizedLinear(16, 12, rank=3, in_shape=(4, 4), out_shape=(3, 4), alpha=1.0),
                                   torch.nn.ReLU(), tnn.LowRankLinear(12, 5, rank=3, alpha=8.0)).double().to(device)

    x = torch.randn(32, 16, dtype=torch.float64, device=device)
    y = torch.randint(0, 5, (32,), device=device)
    in_loss, in_opt = model(), model()
    loss_a, loss_b = tnn.MarsLoss(in_loss, 50), tnn.MarsLoss(in_opt, 50)
    opt_a = torch.optim.Adam(in_loss.parameters(), lr=1e-2)
    opt_b = loss_b.optimizer(lr=1e-2)
    assert opt_b.defaults["fused"] is True
    for step in range(5):
        for net, loss_fn, opt in ((in_loss, loss_a, opt_a), (in_opt, loss_b, opt_b)):
            torch.manual_seed(step)  # the same mask draws in both
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()
    for (name, a), b in zip(in_loss.named_parameters(), in_opt.parameters()):
        assert b.device.type == device
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10, msg=name)


@pytest.mark.cuda
@needs_cuda
def test_mars_optimizer_on_cuda_takes_the_steps_of_the_prior_in_the_loss():
    _optimizer_prior_on("cuda")


@pytest.mark.cuda
@needs_cuda
def test_mars_optimizer_built_on_cuda_keeps_training_a_model_moved_to_the_cpu():
    """``loss_fn.optimizer()`` built for a model on the GPU, then ``model.cpu()``: the loss's
    probe follows the model (a CUDA scalar cannot join a CPU loss) and the steps are those of a
    twin trained on the CPU throughout."""
    from tnmars import nn as tnn

    def model():
        torch.manual_seed(3)
        return torch.nn.Sequential(tnn.TensorizedLinear(16, 12, rank=3, in_shape=(4, 4), out_shape=(3, 4), alpha=1.0),
                                   torch.nn.ReLU(), tnn.LowRankLinear(12, 5, rank=3, alpha=1.0)).double()

    x = torch.randn(32, 16, dtype=torch.float64)
    y = torch.randint(0, 5, (32,))
    moved, twin = model().to("cuda"), model()
    loss_m, loss_t = tnn.MarsLoss(moved, 50), tnn.MarsLoss(twin, 50)
    opt_m, opt_t = loss_m.optimizer(lr=1e-2), loss_t.optimizer(lr=1e-2)
    moved.cpu()
    for step in range(3):
        for net, loss_fn, opt in ((moved, loss_m, opt_m), (twin, loss_t, opt_t)):
            torch.manual_seed(step)
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()
    assert loss_m._probe.device.type == "cpu"
    for a, b in zip(moved.parameters(), twin.parameters()):
        assert a.device.type == "cpu"
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def _occam_on(device: str) -> None:
    """``occam_prune`` with both nll helpers on a model and data on ``device``: it closes the
    surplus indices of a rank-2 teacher fitted at rank 5, and the model stays there."""
    from tnmars import nn as tnn

    torch.manual_seed(0)
    layer = tnn.LowRankLinear(16, 8, rank=5, bias=False, alpha=3.0)
    X = torch.randn(2000, 16)
    with torch.no_grad():
        layer.cores[0][:, 2:] *= 0.01
        y = X @ layer.cores[0][:, :2] @ layer.cores[1][:2] + 0.1 * torch.randn(2000, 8)
    model = torch.nn.Sequential(layer).to(device).eval()
    report = tnn.occam_prune(model, tnn.regression_nll(X.to(device), y.to(device), batch_size=700), len(X))
    assert report.ranks_after == {"0": {"A": 2}}
    labels = y.argmax(1)
    report = tnn.occam_prune(model, tnn.classification_nll(X.to(device), labels.to(device)), len(X),
                             max_nll_rise=None)
    assert all(p.device.type == device for p in model.parameters())
    assert all(math.isfinite(v) for v in (report.nll_before, report.nll_after))


@pytest.mark.cuda
@needs_cuda
def test_occam_prune_on_cuda():
    _occam_on("cuda")


@pytest.mark.cuda
@needs_cuda
def test_an_einsum_spec_is_fitted_on_cuda_as_on_the_cpu():
    spec, true = "aAD,AbB,BcC,CdD->abcd", {"A": 2, "B": 3, "C": 2, "D": 3}
    clean = Network(spec, shape=(6, 7, 5, 6), ranks=true, seed=1).to_tensor()
    x = clean + 0.03 * np.linalg.norm(clean) / np.sqrt(clean.size) * np.random.default_rng(1).standard_normal(clean.shape)
    cpu = tnmars.fit(x, spec, max_rank=5, seed=0, progress=False)
    gpu = tnmars.fit(torch.as_tensor(x, device="cuda"), spec, max_rank=5, seed=0, progress=False)
    assert gpu.ranks_by_bond == cpu.ranks_by_bond == true
    assert gpu.network.device.startswith("cuda")
    assert abs(gpu.relative_error - cpu.relative_error) < 1e-6


def _stable_rnns_on(device: str) -> None:
    """The recurrent models' device work on ``device``: the subspace iteration and projection
    (small ``torch.linalg.qr`` / ``svd`` blocks), a training run that keeps ``||W||_2 <= lam``
    through the stability hook, and the traced TT path (``torch.compile(fullgraph=True)``) in
    eval and in a training step. Run on the CPU by ``test_recurrent.py``'s own tests; here on the
    GPU, against the CPU copy of the same model."""
    from tnmars.nn import LSTM, TanhRNN, register_stability_hook
    from tnmars.nn.stability import spectral_norm

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 20, 3, generator=g), 3 * torch.randn(8, 20, 64, generator=g)
    for recurrent in ("tt", "dense"):
        cpu = TanhRNN(3, 64, lam=0.9, recurrent=recurrent, tt_rank=16, seed=0)
        model = TanhRNN(3, 64, lam=0.9, recurrent=recurrent, tt_rank=16, seed=0).to(device)
        model.load_state_dict(cpu.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(x.to(device)).cpu(), cpu.eval()(x), rtol=1e-4, atol=1e-5)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=2.0)
        register_stability_hook(opt, model)
        worst = 0.0
        for _ in range(20):  # SGD at lr 2 swaps the top singular directions between steps
            opt.zero_grad()
            ((model(x.to(device)) - y.to(device)) ** 2).mean().backward()
            opt.step()
            W = model.weight_tt.matrix() if recurrent == "tt" else model.weight
            assert W.device.type == torch.device(device).type
            worst = max(worst, float(torch.linalg.matrix_norm(W.detach().double(), 2)))
        assert worst <= 0.9 * (1 + 1e-5), (recurrent, worst)
        W = torch.randn(48, 40, generator=g, dtype=torch.float64)
        assert spectral_norm(W.to(device), iters=3000, tol=1e-13) == pytest.approx(
            float(torch.linalg.matrix_norm(W, 2)), rel=1e-6)
    lstm = LSTM(3, 16, stable=True, seed=0).to(device)
    lstm(x.to(device)).sum().backward()
    lstm.project_()
    assert all(p.device.type == torch.device(device).type for p in lstm.parameters())
    torch.manual_seed(0)
    model = TanhRNN(3, 16, lam=0.9, recurrent="tt", tt_rank=4).to(device).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = torch.compile(model, fullgraph=True)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x.to(device)), model(x.to(device)), rtol=1e-5, atol=1e-6)
        model.train()
        out = torch.compile(model, fullgraph=True)(x.to(device))
    out.sum().backward()
    assert all(c.grad is not None and bool(torch.isfinite(c.grad).all()) for c in model.weight_tt.cores)


@pytest.mark.cuda
@needs_cuda
def test_stable_recurrent_models_on_cuda():
    _stable_rnns_on("cuda")


# ------------------------------------------------------------------------------ CuPy
@pytest.mark.cuda
def test_cupy_contraction_matches_numpy():
    cupy = _cupy()
    ref = Network.tr((4, 5, 6), 2, seed=0)
    net = ref.to("cupy")
    out = net.to_tensor()
    assert isinstance(out, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(out), ref.to_tensor(), atol=1e-10)
    pruned = net.prune({"A": cupy.asarray([True, False])})
    assert pruned.backend == "cupy" and pruned.bonds["A"] == 1


@pytest.mark.cuda
def test_cupy_fit_selects_the_numpy_ranks_and_returns_cupy_arrays(tmp_path):
    cupy = _cupy()
    x = _tucker_data(seed=2)
    cpu = tnmars.fit(x, "tucker", max_rank=6, seed=0, progress=False)
    gpu = tnmars.fit(cupy.asarray(x), "tucker", max_rank=6, seed=0, progress=False)
    assert gpu.ranks == cpu.ranks == (2, 3, 4)
    assert gpu.network.backend == "cupy" and isinstance(gpu.network.to_tensor(), cupy.ndarray)
    assert abs(gpu.relative_error - cpu.relative_error) < 1e-6
    path = tnmars.save(gpu, tmp_path / "fit.safetensors")
    back = tnmars.load(path, backend="cupy")
    np.testing.assert_allclose(cupy.asnumpy(back.network.to_tensor()), cupy.asnumpy(gpu.network.to_tensor()))


@pytest.mark.cuda
def test_cupy_completion_and_tr():
    cupy = _cupy()
    x = _tucker_data(seed=3)
    observed = np.random.default_rng(3).random(x.shape) < 0.6
    res = tnmars.fit(cupy.asarray(np.where(observed, x, 0.0)), "tr", max_rank=4, observed=cupy.asarray(observed),
                     seed=0, progress=False)
    assert res.network.backend == "cupy"
    full = cupy.asnumpy(res.network.to_tensor())
    assert np.linalg.norm(full - x) / np.linalg.norm(x) < 0.1


@pytest.mark.cuda
def test_cupy_fits_an_einsum_spec():
    cupy = _cupy()
    spec, true = "aA,AbB,BcC,Cd->abcd", {"A": 2, "B": 3, "C": 2}
    x = Network(spec, shape=(6, 7, 5, 6), ranks=true, seed=1).to_tensor()
    res = tnmars.fit(cupy.asarray(x), spec, max_rank=5, seed=0, progress=False)
    assert res.network.backend == "cupy" and res.ranks_by_bond == true
    assert res.relative_error < 1e-6
