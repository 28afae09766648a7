"""Fuzzing the public API with hostile arguments (hypothesis).

The laws, for every input hypothesis can build:

* a call either succeeds or raises ``ValueError`` / ``TypeError`` (``FileFormatError`` for
  files) with a message; never ``AttributeError``, ``IndexError``, ``OverflowError``,
  ``MemoryError``, ``RecursionError`` or ``ZeroDivisionError``;
* nothing that succeeds is silently NaN;
* every contraction equals ``numpy.einsum`` on the same operands, for data of every dtype
  and magnitudes from 1e-300 to 1e300.

``tnmars.fit`` is fuzzed in ``test_fuzz_fit.py`` and the ``tnmars.nn`` layers in
``test_fuzz_nn.py``.
"""
from __future__ import annotations

import math
import operator
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tnmars
from tnmars import Network, contract
from tnmars import io as tio
from tnmars._checks import dtype_name, floating_dtype, integer, positive_finite, seed_generator
from tnmars.spec import parse_spec
from tnmars.testing.strategies import networks, specs

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLEAN = (ValueError, TypeError)

#: values a careless or hostile caller passes where a size, rank, scale or flag is expected
HOSTILE = st.one_of(
    st.integers(-3, 7),
    st.sampled_from([0, -1, 10**12, 2**63, 2**100, True, False, 2.0, 2.5, -0.0, math.inf, -math.inf, math.nan, 1e300,
                     1e-300, "3", "x", "", None, b"2", [], [2], [2, 3], (3,), {}, {"A": 2}, np.int64(3), np.int8(-2),
                     np.float64(2.0), np.float32(math.nan), np.bool_(True), np.array(3), np.array([2, 3]),
                     np.array([[2]]), 1 + 1j, object()]),
)
DTYPES = st.sampled_from(["float64", "float32", "float16", "bfloat16", "int64", "int8", "uint8", "bool", "complex128",
                          "object", "str", "U3", "datetime64[s]", "float", np.float32, float, int, None, 3, "nope"])


def _clean_failure(err: BaseException) -> None:
    assert isinstance(err, CLEAN), f"{type(err).__name__}: {err}"
    assert str(err).strip(), f"{type(err).__name__} without a message"


def _finite(x) -> bool:
    if hasattr(x, "detach"):  # torch (bfloat16 has no NumPy dtype)
        import torch

        return bool(torch.isfinite(x.detach()).all()) if x.is_floating_point() or x.is_complex() else True
    arr = np.asarray(x)
    return arr.dtype.kind not in "fc" or bool(np.isfinite(arr).all())


def _is_integer(value) -> bool:
    """An integer as ``operator.index`` reads it: ints of any size, numpy integers and 0-d
    integer arrays; never a bool, a float, a string or a longer array."""
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


# ----------------------------------------------------------------------------- Network()
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_network_constructor_with_hostile_arguments(data):
    """A valid call with one to three arguments replaced by hostile values (or a bad spec)."""
    spec = data.draw(st.one_of(specs(max_cores=4), specs(max_cores=4), st.text(max_size=10),
                               st.sampled_from(["ij,jk", "ij,jk->ik", ""])))
    try:
        n_open = len(parse_spec(spec).output)
    except (ValueError, TypeError):
        n_open = 2
    kwargs = {"shape": [2] * n_open, "ranks": 2}
    hostile = {
        "shape": st.one_of(HOSTILE, st.lists(HOSTILE, min_size=n_open, max_size=n_open), st.lists(HOSTILE, max_size=4)),
        "ranks": st.one_of(HOSTILE, st.dictionaries(st.sampled_from("ABCDij"), HOSTILE, max_size=3)),
        "dims": st.one_of(HOSTILE, st.dictionaries(st.sampled_from("abcdijkABCD"), HOSTILE, max_size=4)),
        "dtype": DTYPES,
        "scale": st.one_of(HOSTILE, st.floats(1e-300, 1e300)),
        "seed": st.one_of(HOSTILE, st.just(np.random.default_rng(0))),
        "backend": st.sampled_from(["numpy", "torch", "jax", None, 3]),
        "device": st.sampled_from([None, "cpu", "cuda:7", "tpu", 0]),
    }
    for name in data.draw(st.lists(st.sampled_from(sorted(hostile)), min_size=1, max_size=3, unique=True)):
        kwargs[name] = data.draw(hostile[name])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ranks clipped to what a bond can use
            net = Network(spec, **kwargs)
    except Exception as err:  # noqa: BLE001 - the law is about which exceptions
        if type(err).__name__ == "ImportError":
            return
        _clean_failure(err)
        return
    out = net.to_tensor()
    assert tuple(out.shape) == net.shape
    assert _finite(out), f"Network({spec!r}, **{kwargs}) contracts to NaN/Inf"
    assert net.dtype in ("float64", "float32", "float16", "bfloat16")
    # what was accepted was meant: sizes are integers (never bools, floats or strings) ...
    for name in ("shape", "ranks", "dims"):
        given = kwargs.get(name)
        values = list(given.values()) if isinstance(given, dict) else given
        for v in np.ravel(np.asarray(values, dtype=object)) if values is not None else ():
            assert _is_integer(v), (name, v)
    # ... a scale is a finite positive number, and sizes are what was asked or clipped down
    if "scale" in kwargs:
        assert positive_finite(kwargs["scale"], "scale") > 0
    if isinstance(kwargs.get("shape"), (list, tuple)):
        assert net.shape == tuple(int(v) for v in kwargs["shape"])


@FUZZ
@given(net=networks(max_cores=4), scale_exp=st.integers(-300, 300), dtype=st.sampled_from(["float64", "float32"]))
def test_random_networks_have_the_asked_scale_at_any_magnitude(net, scale_exp, dtype):
    """Random cores at scale 1e-300 ... 1e300: finite, never all zero, of the right order."""
    scale = 10.0**scale_exp
    if dtype == "float32":
        scale = 10.0 ** (scale_exp % 30 - 15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        big = Network(net.spec, dims=net.dims, scale=scale, seed=1, dtype=dtype)
    t = np.asarray(big.to_tensor(), dtype=np.float64)
    assert np.isfinite(t).all() and np.abs(t).max() > 0
    rms = float(np.sqrt(np.mean((t / scale) ** 2)))  # in units of scale: t**2 would overflow
    assert 1e-4 < rms < 1e4


@FUZZ
@given(spec=specs(max_cores=4), dtype=DTYPES, value=st.sampled_from([0, 1, -2, 1e300, 1e-300, math.nan, True]))
def test_cores_of_every_dtype_are_numbers_or_refused(spec, dtype, value):
    parsed = parse_spec(spec)
    sizes = {c: 2 for c in "".join(parsed.inputs)}
    try:
        cores = [np.full(tuple(sizes[c] for c in term), value, dtype=dtype) for term in parsed.inputs]
    except (TypeError, ValueError, OverflowError):
        assume(False)
    try:
        net = Network(spec, cores=cores)
    except Exception as err:  # noqa: BLE001
        _clean_failure(err)
        assert np.dtype(cores[0].dtype).kind not in "biufc"
        return
    out = net.to_tensor()
    if cores[0].dtype.kind == "V":  # ml_dtypes' bfloat16 (once imported): np.einsum cannot take it
        ref = np.einsum(net.spec, *[c.astype(np.float32) for c in cores])
        out = np.asarray(out).astype(np.float32)
        rtol = 1e-2
    else:
        ref, rtol = np.einsum(net.spec, *cores), 1e-3
    if np.asarray(ref).dtype.kind in "fc" and not np.isfinite(ref).all():
        return  # NaN in, NaN out: the data's own NaN is not created by tnmars
    np.testing.assert_allclose(np.asarray(out, dtype=ref.dtype), ref, rtol=rtol)


# ----------------------------------------------------------------------------- prune
@FUZZ
@given(net=networks(max_cores=4), data=st.data())
def test_prune_with_hostile_keep_values(net, data):
    assume(net.bonds)
    bond = data.draw(st.sampled_from(list(net.bonds)))
    size = net.bonds[bond]
    keep = data.draw(st.one_of(
        HOSTILE,
        st.lists(st.integers(-2, size + 1), max_size=size + 1),
        st.lists(st.booleans(), min_size=size, max_size=size).map(np.array),
        st.lists(st.sampled_from([0.0, 1.0]), min_size=size, max_size=size).map(np.array),
        st.lists(st.floats(allow_nan=True), min_size=size, max_size=size).map(np.array),
        st.lists(st.integers(0, size - 1), unique=True, max_size=size).map(lambda v: np.array(v, dtype=np.int64)),
    ))
    try:
        pruned = net.prune({bond: keep})
    except Exception as err:  # noqa: BLE001
        _clean_failure(err)
        return
    arr = np.asarray(keep) if not isinstance(keep, (str, bytes)) else None
    if arr is not None and arr.dtype.kind in "bf" and arr.shape == (size,):  # a binary mask: the pruning law
        mask = arr.astype(np.float64)
        np.testing.assert_allclose(pruned.to_tensor(), net.to_tensor({bond: mask}), atol=1e-10)
        assert pruned.bonds[bond] == int(mask.sum())
    else:  # indices: that many kept, never a float read as an index
        assert arr is not None and arr.dtype.kind in "iu" or np.ndim(keep) == 0 or len(keep) == 0
        assert pruned.bonds[bond] == np.asarray(keep).size


# ----------------------------------------------------------------------------- contraction == einsum
def _operands(net: Network, rng: np.random.Generator, dtype: str, exponent: int) -> list[np.ndarray]:
    """Random operands whose product has magnitude about 10**exponent (each operand gets an
    equal share, so no partial product leaves the float range)."""
    share = 10.0 ** (exponent / net.num_cores)
    out = []
    for core in net.cores:
        shape = core.shape
        if dtype == "bool":
            out.append(rng.random(shape) < 0.5)
        elif dtype.startswith("int"):
            out.append(rng.integers(-3, 4, size=shape).astype(dtype))
        elif dtype.startswith("complex"):
            out.append(((rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * share).astype(dtype))
        else:
            out.append((rng.standard_normal(shape) * share).astype(dtype))
    return out


@FUZZ
@given(net=networks(max_cores=5), seed=st.integers(0, 2**31 - 1), exponent=st.integers(-300, 300),
       dtype=st.sampled_from(["float64", "float32", "complex128", "int64", "int32", "bool"]))
def test_contractions_equal_numpy_einsum(net, seed, exponent, dtype):
    rng = np.random.default_rng(seed)
    if dtype in ("float32",):
        exponent = exponent % 60 - 30
    ops = _operands(net, rng, dtype, exponent)
    ours = contract(net.spec, *ops)
    ref = np.einsum(net.spec, *ops)
    assert ours.shape == ref.shape
    if dtype in ("bool",) or dtype.startswith("int"):
        np.testing.assert_array_equal(ours, ref)
        return
    assert np.isfinite(ours).all(), "a finite contraction came out NaN/Inf"
    # error bound relative to the sum of absolute terms, so cancellation cannot fail it
    bound = np.einsum(net.spec, *[np.abs(o).astype(np.float64) for o in ops])
    rtol = 1e-4 if dtype == "float32" else 1e-10
    assert np.all(np.abs(ours - ref) <= rtol * bound + 1e-300), (net.spec, dtype, exponent)


@FUZZ
@given(net=networks(max_cores=4), seed=st.integers(0, 2**31 - 1), exponent=st.integers(-300, 300),
       dtype=st.sampled_from(["float64", "bool"]))
def test_torch_contractions_equal_numpy_einsum(net, seed, exponent, dtype):
    torch = pytest.importorskip("torch")
    ops = _operands(net, np.random.default_rng(seed), dtype, exponent)
    ours = contract(net.spec, *[torch.as_tensor(o) for o in ops]).numpy()
    ref = np.einsum(net.spec, *ops)
    if dtype == "bool":
        np.testing.assert_array_equal(ours, ref)  # torch has no bool matmul: tnmars counts
        return
    bound = np.einsum(net.spec, *[np.abs(o) for o in ops])
    assert np.isfinite(ours).all() and np.all(np.abs(ours - ref) <= 1e-10 * bound + 1e-300)


@FUZZ
@given(net=networks(max_cores=4), data=st.data())
def test_masked_networks_equal_einsum_with_the_masks_folded_in(net, data):
    """Masks as NumPy arrays, lists or torch tensors (on torch cores that need gradients too)."""
    assume(net.bonds)
    masks = {b: np.array(data.draw(st.lists(st.floats(0, 1), min_size=r, max_size=r))) for b, r in net.bonds.items()}
    ref = net.to_tensor({b: m for b, m in masks.items()})
    folded = [c.copy() for c in net.cores]
    for b, m in masks.items():
        core, axis = net.mask_site(b)
        view = [1] * folded[core].ndim
        view[axis] = -1
        folded[core] = folded[core] * m.reshape(view)
    np.testing.assert_allclose(ref, np.einsum(net.spec, *folded), rtol=1e-9, atol=1e-12)
    as_lists = net.to_tensor({b: m.tolist() for b, m in masks.items()})
    np.testing.assert_allclose(as_lists, ref)
    pytest.importorskip("torch")
    tnet = net.to("torch")
    tnet = tnet.with_cores([c.clone().requires_grad_() for c in tnet.cores])
    out = tnet.to_tensor(masks)  # NumPy masks on cores that require grad
    out.sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-9, atol=1e-12)


@FUZZ
@given(operand=HOSTILE, dtype_pair=st.sampled_from([("float32", "float64"), ("float64", "complex128")]))
def test_contract_arguments_fail_cleanly(operand, dtype_pair):
    torch = pytest.importorskip("torch")
    for call in (
        lambda: contract("ij,jk->ik", [[1.0]], [[2.0]]),
        lambda: contract("i,i->", 2.0, np.ones(1)),
        lambda: contract("i,i->", operand, np.ones(1)),
        lambda: contract("ij,jk->ik", torch.ones(2, 3, dtype=getattr(torch, dtype_pair[0])),
                         torch.ones(3, 4, dtype=getattr(torch, dtype_pair[1]))),
        lambda: Network.tt((2, 3), 2).to_tensor([[1.0, 1.0]]),
    ):
        try:
            out = call()
        except Exception as err:  # noqa: BLE001
            _clean_failure(err)
        else:
            assert _finite(out)


# ----------------------------------------------------------------------------- files
@FUZZ
@given(net=networks(max_cores=4), dtype=st.sampled_from(["float64", "float32", "float16", "int64", "int8", "uint8",
                                                          "bool", "complex64", "complex128"]),
       suffix=st.sampled_from([".npz", ".safetensors"]), key=st.sampled_from([None, "k", b"\x00" * 32]))
def test_networks_of_every_dtype_round_trip(tmp_path_factory, net, dtype, suffix, key):
    cores = [np.asarray(c * 3).astype(dtype) for c in net.cores]
    net = Network(net.spec, cores=cores)
    folder = tmp_path_factory.mktemp("dt")
    try:
        path = tnmars.save(net, folder / f"n{suffix}", key=key)
    except Exception as err:  # noqa: BLE001 - safetensors has no complex dtypes in older versions
        _clean_failure(err)
        return
    back = tnmars.load(path, key=key)
    assert back.dtype == net.dtype and back.spec == net.spec
    for a, b in zip(net.cores, back.cores):
        np.testing.assert_array_equal(a, b)


@FUZZ
@given(path=HOSTILE, key=HOSTILE, max_bytes=HOSTILE)
def test_save_and_load_arguments_fail_cleanly(tmp_path_factory, path, key, max_bytes):
    folder = tmp_path_factory.mktemp("args")
    if isinstance(path, (str, bytes)) and path:  # a relative path such as "x": keep what it writes out of the checkout
        path = os.path.join(os.fsencode(folder) if isinstance(path, bytes) else str(folder), path)
    good = tnmars.save(Network.cp((3, 4), 2, seed=0), folder / "good.npz")
    for call in (
        lambda: tnmars.save(Network.cp((3, 4), 2, seed=0), path),
        lambda: tnmars.save(Network.cp((3, 4), 2, seed=0), folder / "k.npz", key=key),
        lambda: tnmars.load(good, key=key),
        lambda: tnmars.load(good, max_bytes=max_bytes),
        lambda: tnmars.load(path),
    ):
        try:
            call()
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            pass
        except Exception as err:  # noqa: BLE001
            _clean_failure(err)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=400), head=st.sampled_from([b"", b"PK\x03\x04", b"\x10\x00\x00\x00\x00\x00\x00\x00{"]))
def test_arbitrary_bytes_are_a_format_error(tmp_path_factory, raw, head):
    path = tmp_path_factory.mktemp("bytes") / "x.npz"
    path.write_bytes(head + raw)
    with pytest.raises(tio.FileFormatError):
        tnmars.load(path)


# ----------------------------------------------------------------------------- plots
@FUZZ
@given(probs=st.one_of(HOSTILE, st.dictionaries(st.sampled_from("AB"), st.one_of(
    HOSTILE, st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5)), max_size=2)),
       params=st.one_of(HOSTILE, st.lists(st.floats(allow_nan=True), max_size=4)),
       errors=st.one_of(HOSTILE, st.lists(st.floats(allow_nan=True), max_size=4)))
def test_plots_with_hostile_input(probs, params, errors):
    pytest.importorskip("matplotlib")
    from tnmars.plots import plot_mask_probabilities, plot_sweep

    for call in (lambda: plot_mask_probabilities(probs), lambda: plot_sweep(params, errors)):
        try:
            call()
        except Exception as err:  # noqa: BLE001
            _clean_failure(err)


# ----------------------------------------------------------------------------- argument checks
@FUZZ
@given(value=HOSTILE)
def test_argument_checks_accept_or_refuse_cleanly(value):
    for check in (lambda: integer(value, "x"), lambda: positive_finite(value, "x"), lambda: seed_generator(value),
                  lambda: dtype_name(value), lambda: floating_dtype(value)):
        try:
            out = check()
        except Exception as err:  # noqa: BLE001
            _clean_failure(err)
            assert "x" in str(err) or "dtype" in str(err) or "seed" in str(err)
        else:
            assert out is not None
            if isinstance(out, float):
                assert math.isfinite(out) and out > 0


@given(value=st.integers() | st.floats() | st.booleans())
def test_integer_accepts_exactly_the_integers(value):
    if isinstance(value, int) and not isinstance(value, bool):
        assert integer(value, "n") == value
    else:
        with pytest.raises(TypeError, match="n must be an integer"):
            integer(value, "n")
