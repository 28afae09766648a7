"""The compiled MARS step ops (tnmars.nn.native): the same draws, outputs and gradients as the
Python path, bit for bit, in every mask state and dtype; whatever they cannot read is left to
the Python path; a missing compiler or a broken library is a clear error or warning, never a
different result.

Building takes about 30 s once per machine (cached); without a C++ compiler these tests skip,
saying so. The rest of the suite runs the Python path (``TNMARS_NATIVE=0`` in conftest.py)."""
from __future__ import annotations

import contextlib
import copy
import os
import time
import warnings
from pathlib import Path

import pytest
import torch

import tnmars.nn as tnn
from tnmars.nn import native
from tnmars.nn.optimizers import PriorGradient

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lib():
    before = native._module
    try:
        module = native.build()
    except RuntimeError as err:  # pragma: no cover - depends on the machine
        pytest.skip(f"native ops not built here: {err}")
    finally:
        native._module = before
    return module


@contextlib.contextmanager
def using(module):
    before = native._module
    native._module = module
    try:
        yield
    finally:
        native._module = before


def _set_logits(layer, values):
    with torch.no_grad():
        layer.masks.logits.copy_(torch.as_tensor(values, dtype=layer.masks.logits.dtype))


def _layer(dtype=torch.float32, **kw):
    torch.manual_seed(0)
    return tnn.TensorizedLinear(24, 30, rank=3, in_shape=(2, 3, 4), out_shape=(3, 2, 5), dtype=dtype, **kw)


def _same(a, b):
    """Equal bit for bit (a NaN where the other has one)."""
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def _step(layer, module, seed, x):
    """One training forward and backward under ``module`` (None: the Python path)."""
    layer = copy.deepcopy(layer)
    with using(module):
        torch.manual_seed(seed)
        out = layer(x)
        out.square().sum().backward()
    grads = [None if p.grad is None else p.grad.clone() for p in layer.parameters()]
    return out.detach(), grads, torch.rand(3)  # (the generator's state after the step, too)


MASK_STATES = {
    "open": lambda n: [6.0] * n,
    "one low entry": lambda n: [6.0] * (n - 1) + [-1.0],
    "mixed": lambda n: [(-1.0) ** i * (0.5 + 0.3 * i) for i in range(n)],
    "closed": lambda n: [-6.0] * n,
    "infinite": lambda n: [float("inf")] * (n - 1) + [-float("inf")],
    "huge": lambda n: [800.0] * n,
    "a NaN last": lambda n: [6.0] * (n - 1) + [float("nan")],
    "a NaN first": lambda n: [float("nan")] + [6.0] * (n - 1),
    "a NaN between": lambda n: [-1.0, float("nan")] + [6.0] * (n - 2),
}


@pytest.mark.parametrize("state", sorted(MASK_STATES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [0.1, 2.0 / 3.0])
def test_training_steps_equal_the_python_path_bit_for_bit(lib, state, dtype, temperature):
    layer = _layer(dtype).train()
    _set_logits(layer, MASK_STATES[state](layer.masks.logits.numel()))
    tnn.set_temperature(layer, temperature)
    x = torch.randn(5, 24, dtype=dtype)
    for seed in range(4):
        got, want = _step(layer, lib, seed, x), _step(layer, None, seed, x)
        _same(got[0], want[0])
        for a, b in zip(got[1], want[1]):
            assert (a is None) == (b is None)
            if a is not None:
                _same(a, b)
        _same(got[2], want[2])  # as many numbers drawn from the generator


def test_open_masks_take_the_compiled_test_and_skip_the_python_draw(lib, monkeypatch):
    layer = _layer().train()
    calls = []

    class Spy:
        def draw_open(self, *args):
            calls.append(lib.draw_open(*args))
            return calls[-1]

    monkeypatch.setattr(torch, "rand_like", lambda *a, **k: pytest.fail("the Python path drew"))
    with using(Spy()):
        layer(torch.randn(2, 24))
    assert calls == [None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grad", ["none", "present"])
@pytest.mark.parametrize("logits", [[6.0, 0.5, -3.0, 40.0], [711.0, 1.0, -2.0, 0.0], [float("inf"), 2.0, -1.0, 3.0]])
def test_the_prior_push_equals_the_python_path_bit_for_bit(lib, dtype, grad, logits):
    masks = [tnn.BondMasks({"a": 4}, pi=0.01), tnn.BondMasks({"b": 4}, pi=0.3)]
    results = []
    for module in (lib, None):
        vectors = [torch.nn.Parameter(torch.tensor(logits, dtype=dtype) * s) for s in (1.0, -0.5)]
        if grad == "present":
            for i, v in enumerate(vectors):
                v.grad = torch.linspace(-1.0, 1.0, 4, dtype=dtype) * (i + 1)
        with using(module):
            PriorGradient._push_on_host(vectors, masks, 3e-4)
        results.append([v.grad for v in vectors])
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_the_push_leaves_what_it_cannot_read_to_the_python_path(lib):
    plain = torch.nn.Parameter(torch.ones(4))
    plain.grad = torch.zeros(4)
    strided = torch.nn.Parameter(torch.ones(4))
    strided.grad = torch.zeros(8)[::2]  # a gradient that is not contiguous
    assert lib.push([plain, strided], [1.0, 1.0]) is False
    assert torch.equal(plain.grad, torch.zeros(4))  # nothing changed, not even the readable vector
    matrix = torch.nn.Parameter(torch.ones(2, 2))
    assert lib.push([matrix], [1.0]) is False and matrix.grad is None  # not flat
    masks = [tnn.BondMasks({"a": 4}, pi=0.01)]
    with using(lib):  # the Python path then adds the push, as it would without the library
        PriorGradient._push_on_host([strided], masks, 1.0)
    assert bool((strided.grad > 0).all())


def test_whole_training_runs_agree_with_the_optimizers_step(lib):
    """MarsLoss.optimizer()'s fused step (draws, push, Adam) for 30 steps: the same parameters."""
    finals = []
    for module in (lib, None):
        torch.manual_seed(1)
        model = torch.nn.Sequential(tnn.TensorizedLinear(24, 30, rank=3, in_shape=(2, 3, 4), out_shape=(3, 2, 5)),
                                    torch.nn.ReLU(), tnn.LowRankLinear(30, 10, rank=4))
        loss_fn = tnn.MarsLoss(model, 100)
        opt = loss_fn.optimizer(torch.optim.Adam, lr=0.05)
        x, y = torch.randn(16, 24), torch.randint(0, 10, (16,))
        with using(module):
            for _ in range(30):
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step()
        finals.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*finals):
        assert torch.equal(a, b)


def test_vmap_with_different_randomness_is_still_refused_clearly(lib):
    layer = _layer().train()
    with using(lib), pytest.raises(RuntimeError, match="randomness='same'"):
        torch.func.vmap(layer, randomness="different")(torch.randn(3, 2, 24))


def test_turned_off_by_the_environment(monkeypatch, lib):
    monkeypatch.setenv(native.ENV, "0")
    with using(native._UNSET):
        assert native.get() is None
        assert native.status() == "turned off (TNMARS_NATIVE=0)"


def test_a_built_library_is_found_by_a_fresh_process_state(monkeypatch, lib):
    monkeypatch.delenv(native.ENV, raising=False)
    with using(native._UNSET):
        assert native.status() == "built, not loaded yet"
        module = native.get()
        assert module is not None and module.draw_open is not None
        assert native.status() == "loaded"


def test_a_broken_library_is_a_warning_and_the_python_path(monkeypatch, tmp_path):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(native.ENV, raising=False)
    path = native.library_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a shared library")
    (path.parent / native.DONE).write_text("")
    with using(native._UNSET), pytest.warns(RuntimeWarning, match="native ops are not used"):
        assert native.get() is None
        assert native.status().startswith("built, not loadable (ImportError")
    with using(None), warnings.catch_warnings():
        warnings.simplefilter("error")
        _layer().train()(torch.randn(2, 24))  # the Python path runs


def test_a_library_still_being_written_is_not_loaded(monkeypatch, tmp_path):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(native.ENV, raising=False)
    path = native.library_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a shared libr")  # no DONE marker: a build is still writing it
    with using(native._UNSET), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.get() is None and native.status() == "not built"


@pytest.mark.parametrize("cause", ["no source file", "no home directory"])
def test_an_unusable_setup_is_a_warning_never_a_failed_step(monkeypatch, tmp_path, cause):
    monkeypatch.delenv(native.ENV, raising=False)
    if cause == "no source file":
        monkeypatch.setattr(native, "SOURCE", tmp_path / "missing.cpp")
    else:
        monkeypatch.delenv(native.CACHE_ENV, raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)

        def no_home():
            raise RuntimeError("Could not determine home directory.")

        monkeypatch.setattr(native.Path, "home", staticmethod(no_home))
    with using(native._UNSET):
        assert native.status().startswith("unavailable (")
        with pytest.warns(RuntimeWarning, match="native ops are not used"):
            _layer().train()(torch.randn(2, 24))  # the first draw looks for the library, then runs in Python
        assert native._module is None


class _Built:
    """What a successful ``cpp_extension.load`` returns, for the tests of the cache logic."""

    def __init__(self, folder):
        (folder / native.library_path().name).write_bytes(b"(a library)")


def test_a_stale_build_lock_is_removed_and_a_broken_library_rebuilt(monkeypatch, tmp_path, capsys):
    from torch.utils import cpp_extension

    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    folder = native.library_path().parent
    folder.mkdir(parents=True)
    lock = folder / "lock"
    lock.write_text("")
    old = time.time() - 2 * native.STALE_LOCK_SECONDS
    os.utime(lock, (old, old))
    calls = []

    def load(name, sources, build_directory, **kwargs):
        assert not (Path(build_directory) / "lock").exists()  # (torch would wait on it for ever)
        calls.append(name)
        return _Built(Path(build_directory))

    monkeypatch.setattr(cpp_extension, "load", load)
    with using(None):
        module = native.build()
        assert isinstance(module, _Built) and native._module is module and len(calls) == 1
        assert "removing a build lock" in capsys.readouterr().err
        assert (folder / native.DONE).exists()
        # marked built, but not a loadable library: built again, not loaded and trusted
        native.build()
        assert len(calls) == 2


def test_a_failed_build_says_what_is_missing(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    with using(None):
        with pytest.raises(RuntimeError, match="C\\+\\+ compiler, ninja"):
            native.build()
        assert native._module is None  # a failed build leaves the Python path in place


def test_not_built_is_not_built_and_says_how_on_the_tnmars_logger(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(native.ENV, raising=False)
    with using(native._UNSET), caplog.at_level("INFO", logger="tnmars"):
        assert native.status() == "not built"
        assert native.get() is None  # no build without being asked
        assert not native.library_path().exists()
    assert "tnmars build-native" in caplog.text


def test_the_command_line_builds_or_says_what_is_missing(lib, monkeypatch, capsys, tmp_path):
    from torch.utils import cpp_extension

    from tnmars.cli import main

    with using(None):
        assert main(["build-native"]) == 0  # (built by the fixture: found at once)
        assert str(native.library_path()) in capsys.readouterr().out

        def no_compiler(*args, **kwargs):
            raise OSError("[Errno 2] No such file or directory: 'c++'")

        monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
        monkeypatch.setattr(cpp_extension, "load", no_compiler)
        assert main(["build-native"]) == 2
        err = capsys.readouterr().err
        assert "build-native: error: could not build" in err and "C++ compiler" in err


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 7, 80, 1000])
def test_the_direct_draw_gives_torch_rand_like_numbers(lib, dtype, n):
    like = torch.zeros(n, dtype=dtype)
    for seed in (0, 1, 12345):
        torch.manual_seed(seed)
        got, after_got = lib.draw_uniforms(like), torch.rand(3)
        assert got is not NotImplemented
        torch.manual_seed(seed)
        want, after_want = torch.rand_like(like), torch.rand(3)
        assert torch.equal(got, want) and torch.equal(after_got, after_want)


def test_vmap_without_randomness_still_refuses_random_ops(lib):
    layer = _layer().train()
    for module in (lib, None):
        with using(module), pytest.raises(RuntimeError, match="randomness"):
            torch.func.vmap(layer)(torch.randn(3, 2, 24))


def test_dispatch_and_function_modes_still_see_the_draw(lib):
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    class Functions(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    layer, x = _layer().train(), torch.randn(2, 24)
    for mode in (Ops(), Functions()):
        seen.clear()
        with using(lib), mode:
            layer(x)
        assert any("rand_like" in name for name in seen), seen
