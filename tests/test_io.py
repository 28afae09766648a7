"""Saving and loading: round trips on every backend, refusal of damaged files, no pickle."""
from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tnmars
from tnmars import Network, available_backends
from tnmars import io as tio
from tnmars.testing.strategies import networks

BACKENDS = available_backends()
SUFFIXES = [".npz", ".safetensors"]


def _equal(a: Network, b: Network) -> bool:
    if a.spec != b.spec or a.dims != b.dims or a.backend != b.backend or a.dtype != b.dtype:
        return False
    return all(
        np.array_equal(a.backend_impl.to_numpy(x), b.backend_impl.to_numpy(y)) for x, y in zip(a.cores, b.cores)
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_round_trip_every_backend(tmp_path, backend, suffix, dtype):
    if backend == "cupy":
        pytest.importorskip("cupy")
    device = "cuda" if backend == "cupy" else None
    for net in (
        Network.tucker((3, 4, 5), (2, 3, 2), seed=0, backend=backend, dtype=dtype, device=device),
        Network.tt_matrix((2, 3), (4, 2), 3, seed=1, backend=backend, dtype=dtype, device=device),
        Network("ab,bc,cd,da->", ranks=2, seed=2, backend=backend, dtype=dtype, device=device),
    ):
        path = tnmars.save(net, tmp_path / f"net{suffix}")
        back = tnmars.load(path)
        assert _equal(net, back)
        assert back.device == net.device


def test_torch_tensor_with_grad_and_bfloat16(tmp_path):
    torch = pytest.importorskip("torch")
    net = Network.tt((3, 4, 5), 2, seed=0, backend="torch")
    cores = [c.clone().requires_grad_(True) for c in net.cores]
    net = net.with_cores(cores)
    back = tnmars.load(tnmars.save(net, tmp_path / "g.npz"))
    assert _equal(net.numpy().to("torch"), back)
    assert not back.cores[0].requires_grad
    half = net.to(dtype="bfloat16")
    back = tnmars.load(tnmars.save(half, tmp_path / "h.safetensors"))
    assert back.dtype == "bfloat16"
    assert all(torch.equal(x, y) for x, y in zip(half.cores, back.cores))
    as_numpy = tnmars.load(tmp_path / "h.safetensors", backend="numpy")  # NumPy has no bfloat16
    assert as_numpy.dtype == "float32"
    np.testing.assert_array_equal(as_numpy.cores[0], half.cores[0].detach().float().numpy())


@settings(max_examples=25, deadline=None)
@given(net=networks(), suffix=st.sampled_from(SUFFIXES))
def test_round_trip_any_graph(tmp_path_factory, net, suffix):
    path = tnmars.save(net, tmp_path_factory.mktemp("rt") / f"n{suffix}")
    back = tnmars.load(path)
    assert _equal(net, back)
    np.testing.assert_array_equal(back.to_tensor(), net.to_tensor())


def test_load_into_another_backend_and_dtype(tmp_path):
    net = Network.cp((3, 4, 5), 2, seed=0)
    path = tnmars.save(net, tmp_path / "cp.npz")
    back = tnmars.load(path, dtype="float32")
    assert back.dtype == "float32" and back.backend == "numpy"
    if "torch" in BACKENDS:
        assert tnmars.load(path, backend="torch").backend == "torch"


def test_pruned_to_zero_bond_round_trips(tmp_path):
    net = Network.tt((3, 4, 5), 3, seed=0).prune({"A": []})
    back = tnmars.load(tnmars.save(net, tmp_path / "z.npz"))
    assert back.ranks == (0, 3)
    assert not back.to_tensor().any()


def test_extension_added_and_metadata(tmp_path):
    net = Network.tr((3, 4, 5), 2, seed=0)
    path = tnmars.save(net, tmp_path / "ring")
    assert path.name == "ring.npz"
    meta = tio.read_metadata(path)
    assert meta["kind"] == "network"
    assert meta["spec"] == net.spec and meta["dims"] == net.dims
    assert meta["backend"] == "numpy" and meta["dtype"] == "float64"
    assert meta["format_version"] == tio.FORMAT_VERSION
    assert meta["tnmars_version"] == tnmars.__version__
    assert len(meta["sha256"]) == 64


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_every_single_byte_change_fails_or_is_harmless(tmp_path, suffix):
    """The law: a modified file either raises FileFormatError or loads to the identical
    network (e.g. a changed zip timestamp). It is never silently different."""
    net = Network.tt((2, 3, 2), 2, seed=0)
    path = tnmars.save(net, tmp_path / f"n{suffix}")
    raw = path.read_bytes()
    bad = tmp_path / f"bad{suffix}"
    failures = 0
    for pos in range(0, len(raw), 3):
        data = bytearray(raw)
        data[pos] ^= 0x5A
        bad.write_bytes(bytes(data))
        try:
            back = tnmars.load(bad)
        except tio.FileFormatError:
            failures += 1
            continue
        assert _equal(net, back), f"flipping byte {pos} gave a different network"
    assert failures > len(raw) // 6  # most positions matter


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_truncated_file_fails_cleanly(tmp_path, suffix):
    path = tnmars.save(Network.tucker((3, 4, 5), 2, seed=0), tmp_path / f"n{suffix}")
    raw = path.read_bytes()
    bad = tmp_path / f"cut{suffix}"
    for n in [0, 1, 8, len(raw) // 3, len(raw) // 2, len(raw) - 20, len(raw) - 1]:
        bad.write_bytes(raw[:n])
        with pytest.raises(tio.FileFormatError):
            tnmars.load(bad)


def test_payload_changed_after_saving_is_detected(tmp_path):
    """Re-zipping with a changed core keeps the zip CRCs valid; the SHA-256 still catches it."""
    path = tnmars.save(Network.cp((3, 4), 2, seed=0), tmp_path / "n.npz")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["core_0"] = arrays["core_0"] + 1e-9
    np.savez(tmp_path / "forged.npz", **arrays)
    with pytest.raises(tio.FileFormatError, match="integrity"):
        tnmars.load(tmp_path / "forged.npz")


def test_metadata_changed_after_saving_is_detected(tmp_path):
    path = tnmars.save(Network.cp((3, 4), 2, seed=0), tmp_path / "n.npz")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(arrays["__tnmars_metadata__"].tobytes())
    meta["spec"] = "bA,aA->ab"  # transposes the result: silently wrong if undetected
    arrays["__tnmars_metadata__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "forged.npz", **arrays)
    with pytest.raises(tio.FileFormatError, match="integrity"):
        tnmars.load(tmp_path / "forged.npz")


def test_pickled_objects_are_refused(tmp_path):
    bad = tmp_path / "evil.npz"
    np.savez(bad, core_0=np.array([{"x": 1}], dtype=object))
    with pytest.raises(tio.FileFormatError, match="pickle"):
        tnmars.load(bad)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_no_code_path_calls_pickle(tmp_path, monkeypatch, suffix):
    path = tnmars.save(Network.tt((3, 4, 5), 2, seed=0), tmp_path / f"n{suffix}")

    def boom(*args, **kwargs):
        raise AssertionError("pickle was called while loading")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "Unpickler", boom)
    assert tnmars.load(path).ranks == (2, 2)


def test_not_a_tnmars_file(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.ones(3))
    with pytest.raises(tio.FileFormatError, match="not a tnmars file"):
        tnmars.load(plain)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(tio.FileFormatError):
        tnmars.load(text)
    with pytest.raises(FileNotFoundError):
        tnmars.load(tmp_path / "missing.npz")
    with pytest.raises(tio.FileFormatError, match="folder"):
        tnmars.load(tmp_path)


def test_newer_format_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(tio, "FORMAT_VERSION", 99)
    path = tnmars.save(Network.cp((3, 4), 2, seed=0), tmp_path / "new.npz")
    monkeypatch.setattr(tio, "FORMAT_VERSION", 1)
    with pytest.raises(tio.FileFormatError, match="newer"):
        tnmars.load(path)


def test_save_refuses_other_objects(tmp_path):
    with pytest.raises(TypeError, match="Network"):
        tnmars.save(np.ones(3), tmp_path / "x.npz")
    with pytest.raises(FileNotFoundError):
        tnmars.save(Network.cp((3, 4), 2), tmp_path / "no" / "such" / "x.npz")


def test_missing_gpu_falls_back_to_cpu_with_warning(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    path = tnmars.save(Network.cp((3, 4), 2, seed=0, backend="torch"), tmp_path / "n.npz")
    # re-sign the file as if it had been written on a GPU
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(arrays.pop("__tnmars_metadata__").tobytes())
    meta["device"] = "cuda:0"
    meta["sha256"] = tio._digest(meta, arrays)
    arrays["__tnmars_metadata__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "gpu.npz", **arrays)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back = tnmars.load(tmp_path / "gpu.npz")
    assert back.device == "cpu"
    assert any("cuda:0" in str(w.message) for w in caught)


def _fit_result_equal(a, b) -> bool:
    import dataclasses

    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, Network):
            if not _equal(x, y):
                return False
        elif f.name == "probabilities":
            if x.keys() != y.keys() or not all(np.array_equal(x[k], y[k]) for k in x):
                return False
        elif x != y or type(x) is not type(y):
            return False
    return True


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_fit_result_round_trip(tmp_path, suffix):
    data = Network.tucker((5, 6, 4), (2, 3, 2), seed=1).to_tensor()
    observed = np.random.default_rng(0).random(data.shape) < 0.8
    result = tnmars.fit(data, "tucker", max_rank=4, observed=observed, seed=0, progress=False)
    path = tnmars.save(result, tmp_path / f"fit{suffix}")
    back = tnmars.load(path)
    assert type(back) is type(result)
    assert _fit_result_equal(result, back)
    meta = tio.read_metadata(path)
    assert meta["kind"] == "fit_result"
    assert meta["fit"]["ranks"] == list(result.ranks)
    assert meta["fit"]["fields"]["relative_error"] == result.relative_error
