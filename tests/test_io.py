"""Saving and loading: round trips on every backend, refusal of damaged files, no pickle."""
from __future__ import annotations

import dataclasses
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
        Network("ab,bc,cd,da->", dims=dict.fromkeys("abcd", 2), seed=2, backend=backend, dtype=dtype, device=device),
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
    # load mirrors save: the name without the extension reads the file save wrote (an outside probe
    # found load("ring") refused after save(net, "ring"))
    assert tnmars.load(tmp_path / "ring").ranks == net.ranks
    assert tnmars.load(str(tmp_path / "ring")).ranks == net.ranks
    with pytest.raises(FileNotFoundError, match="no such file"):
        tnmars.load(tmp_path / "other")


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
    with pytest.raises(tio.FileFormatError, match="invalid metadata"):  # shapes disagree with dims
        tnmars.load(tmp_path / "forged.npz")
    meta["spec"], meta["dims"] = "bA,aA->ab", {"a": 4, "b": 3, "A": 2}  # consistent, but not what was signed
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


def test_save_refuses_a_dtype_load_would_refuse(tmp_path):
    """``save`` wrote long-double cores that ``load`` then refused: refused at save now."""
    net = Network.tt((3, 4), 2, seed=0).to(np.longdouble)
    if net.dtype == "float64":  # (platforms whose long double is a double)
        pytest.skip("long double is float64 here")
    with pytest.raises(TypeError, match=f"cannot save {net.dtype} cores"):
        tnmars.save(net, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.skipif("torch" not in available_backends(), reason="needs torch")
@pytest.mark.parametrize("device", ["meta", "mps", "xla", "hpu", "privateuseone"])
def test_a_file_saying_it_lives_on_an_unusable_device_loads_on_the_cpu(tmp_path, device):
    """A re-signed file claiming device 'meta' loaded a network without values; 'mps' or 'xla'
    raised PyTorch's own RuntimeError. Both load on the CPU now, with a warning."""
    path = tnmars.save(Network.tt((3, 4), 2, seed=0).to("torch"), tmp_path / "t.npz")
    members = _members(path)
    meta = json.loads(bytes(members["__tnmars_metadata__"]).decode())
    meta["device"] = device
    _resign(members, meta, tmp_path / "forged.npz")
    with pytest.warns(UserWarning, match=f"saved on device '{device}', which is not available"):
        net = tnmars.load(tmp_path / "forged.npz")
    assert net.device == "cpu"
    np.testing.assert_allclose(np.asarray(net.to("numpy").to_tensor()), Network.tt((3, 4), 2, seed=0).to_tensor())


def test_loading_into_numpy_as_bfloat16_says_numpy_has_none(tmp_path):
    path = tnmars.save(Network.tt((3, 4), 2, seed=0), tmp_path / "n.npz")
    with pytest.raises(TypeError, match="numpy has no bfloat16"):  # (was "data type 'bfloat16' not understood")
        tnmars.load(path, dtype="bfloat16")


def test_a_meta_device_network_is_refused_in_words(tmp_path):
    torch = pytest.importorskip("torch")
    net = Network.tt((3, 4, 5), 2, seed=0, backend="torch").to("meta")
    assert torch.is_tensor(net.cores[0])
    with pytest.raises(ValueError, match="'meta' device: it holds shapes but no values"):
        tnmars.save(net, tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_save_refuses_other_objects(tmp_path):
    with pytest.raises(TypeError, match="Network"):
        tnmars.save(np.ones(3), tmp_path / "x.npz")
    with pytest.raises(FileNotFoundError):
        tnmars.save(Network.cp((3, 4), 2), tmp_path / "no" / "such" / "x.npz")


def test_a_torch_layer_is_refused_with_how_to_save_it(tmp_path):
    """A tnmars.nn layer has ``.network`` and ``.ranks`` like a fit result: save used to write
    it as one, and load then failed on its unknown fields."""
    tnn = pytest.importorskip("tnmars.nn")
    layer = tnn.TensorizedLinear(8, 8, rank=2)
    with pytest.raises(TypeError, match=r"torch module: .*torch.save\(model.state_dict\(\), path\).*"
                                        r"tnmars.save\(layer.network, path\)"):
        tnmars.save(layer, tmp_path / "layer.npz")
    assert not any(tmp_path.iterdir())
    assert tnmars.load(tnmars.save(layer.network, tmp_path / "n.npz")).spec == layer.network.spec


def test_search_and_sweep_results_are_refused_with_what_to_save_instead(tmp_path):
    """A StructureResult or SweepResult got only "stores a Network or a fit result": the
    error now names the attribute to pass, and that attribute saves and loads."""
    x = np.asarray(Network.tt((4, 5, 6), (2, 2), seed=0).to_tensor())
    found = tnmars.search(x, max_rank=3, starts=1, seed=0, progress=False)
    with pytest.raises(TypeError, match=r"StructureResult: save its pruned network, "
                                        r"tnmars.save\(result.network, path\).*tnmars.save\(result.fit, path\)"):
        tnmars.save(found, tmp_path / "s.npz")
    curve = tnmars.sweep(x, "tt", budgets=[40, 80], max_rank=3, seed=0, progress=False)
    with pytest.raises(TypeError, match=r"SweepResult: .*tnmars.save\(result.results\[k\], path\) \(k from 0 to 1\)"):
        tnmars.save(curve, tmp_path / "w.npz")
    assert not any(tmp_path.iterdir())
    assert tnmars.load(tnmars.save(found.network, tmp_path / "n.npz")).spec == found.network.spec
    assert tnmars.load(tnmars.save(found.fit, tmp_path / "f.npz")).ranks == found.fit.ranks
    assert tnmars.load(tnmars.save(curve.results[1], tmp_path / "r.npz")).ranks == curve.results[1].ranks


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


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_tensor_ring_result_with_unequal_ranks_round_trips(tmp_path, suffix):
    """A TR result's ranks were checked against the network's bond order while the result listed
    its bonds around the ring, so the file saved and then failed to load. (A result now lists
    them in the network's order; a file that lists them around the ring still loads.)"""
    rng = np.random.default_rng(0)
    data = np.einsum("ir,jr,kr->ijk", *[rng.standard_normal((6, 2)) for _ in range(3)])
    result = tnmars.fit(data, "tr", max_rank=4, progress=False, seed=0)
    assert len(set(result.ranks)) > 1 and tuple(result.bonds) == tuple(result.network.bonds)
    back = tnmars.load(tnmars.save(result, tmp_path / f"tr{suffix}"))
    assert back.ranks == result.ranks and back.ranks_by_bond == result.ranks_by_bond == dict(result.network.bonds)
    assert _fit_result_equal(result, back)
    ring = dataclasses.replace(result, bonds=("A", "B", "C"),  # as results listed them before
                               ranks=tuple(result.ranks_by_bond[b] for b in "ABC"))
    assert len(set(ring.ranks)) > 1 and ring.ranks != result.ranks
    again = tnmars.load(tnmars.save(ring, tmp_path / f"ring{suffix}"))
    assert again.ranks == ring.ranks and again.ranks_by_bond == result.ranks_by_bond


# ----------------------------------------------------------------------------- hostile files
def _members(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _resign(arrays: dict[str, np.ndarray], meta: dict, out) -> None:
    """Write ``arrays`` and ``meta`` as a tnmars file whose SHA-256 is valid again (what
    anyone can do: the digest has no key)."""
    arrays = {k: v for k, v in arrays.items() if k != "__tnmars_metadata__"}
    meta = {k: v for k, v in meta.items() if k != "sha256"}
    meta["sha256"] = tio._digest(meta, arrays)
    blob = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(out, __tnmars_metadata__=blob, **arrays)


def _write_zip(path, members) -> None:
    """A zip written by hand from ``(name, method, payload, crc, uncompressed size)``: the
    payload is stored as given, so a deflate stream of 1 GiB of zeros costs 1 MiB to write."""
    import struct

    local, central = bytearray(), bytearray()
    for name, method, payload, crc, size in members:
        encoded = name.encode()
        offset = len(local)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(payload), size,
                             len(encoded), 0) + encoded + payload
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(payload),
                               size, len(encoded), 0, 0, 0, 0, 0, offset) + encoded
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(local), 0)
    path.write_bytes(bytes(local + central + end))


def _zip_bomb(tmp_path, gib: float = 1.0):
    """A real tnmars-looking .npz whose core inflates to ``gib`` GiB of zeros (CRC included)."""
    import io
    import zlib

    good = tnmars.save(Network.cp((3, 4), 2, seed=0), tmp_path / "good.npz")
    meta_blob = _members(good)["__tnmars_metadata__"]
    meta_npy = io.BytesIO()
    np.save(meta_npy, meta_blob)
    meta_bytes = meta_npy.getvalue()
    chunks = int(gib * 1024)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (chunks * 2**17,)})
    head = header.getvalue()
    zeros = bytes(2**20)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = comp.compress(head) + comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)  # the same bytes for every MiB
    payload = first + block * chunks + comp.flush()
    crc = zlib.crc32(head)
    for _ in range(chunks):
        crc = zlib.crc32(zeros, crc)
    bomb = tmp_path / "bomb.npz"
    _write_zip(bomb, [
        ("__tnmars_metadata__.npy", 0, meta_bytes, zlib.crc32(meta_bytes), len(meta_bytes)),
        ("core_0.npy", 8, payload, crc, len(head) + chunks * 2**20),
    ])
    return bomb


def test_zip_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    """1 MiB on disk, 1 GiB inflated: refused from the declared sizes, with no member data
    read and a small memory peak (it took 2 GiB and 10-26 s before)."""
    import tracemalloc
    import zipfile

    bomb = _zip_bomb(tmp_path, 1.0)
    assert bomb.stat().st_size < 2 * 2**20
    inflated = []
    real_read = zipfile.ZipExtFile.read

    def counting_read(self, n=-1):
        data = real_read(self, n)
        if self.name == "core_0.npy":
            inflated.append(len(data))
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", counting_read)
    tracemalloc.start()
    try:
        with pytest.raises(tio.FileFormatError, match="^'[^']*' declares 1,073,741,952 bytes of arrays"):
            tnmars.load(bomb)  # the message says what is wrong, not "truncated or corrupted"
        with pytest.raises(tio.FileFormatError, match="max_bytes"):
            tio.read_metadata(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"refusing the bomb took {peak / 2**20:.0f} MiB"
    assert sum(inflated) == 0, "the bomb's member was read"


def test_a_genuine_large_array_within_the_limit_loads_in_one_copy(tmp_path):
    """The limit is a choice: max_bytes raises it, and the arrays are read straight into
    their final buffers (peak memory about one copy, not two)."""
    import tracemalloc

    net = Network("ab,bc->ac", cores=[np.zeros((2048, 1024)), np.zeros((1024, 2))])  # 16 MiB of zeros
    path = tnmars.save(net, tmp_path / "zeros.npz")
    assert path.stat().st_size < 200_000  # compresses about 1000x
    with pytest.raises(tio.FileFormatError, match="max_bytes"):
        tnmars.load(path, max_bytes=2**20)
    tracemalloc.start()
    back = tnmars.load(path, max_bytes=2**25)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert back.dims == net.dims
    assert peak < 1.5 * 16 * 2**20, f"loading 16 MiB of arrays peaked at {peak / 2**20:.1f} MiB"


def test_deeply_nested_metadata_is_refused(tmp_path):
    path = tnmars.save(Network.cp((3, 4), 2, seed=0), tmp_path / "n.npz")
    arrays = _members(path)
    meta = json.loads(arrays.pop("__tnmars_metadata__").tobytes())
    text = json.dumps(meta)[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    blob = np.frombuffer(text.encode(), dtype=np.uint8)
    np.savez(tmp_path / "deep.npz", __tnmars_metadata__=blob, **arrays)
    for read in (tnmars.load, tio.read_metadata):
        with pytest.raises(tio.FileFormatError, match="nested 100001 levels deep"):
            read(tmp_path / "deep.npz")
    # huge integers (Python refuses to parse more than 4300 digits) are a format error too
    text = json.dumps(meta)[:-1] + ', "x": ' + "9" * 5000 + "}"
    np.savez(tmp_path / "digits.npz", __tnmars_metadata__=np.frombuffer(text.encode(), np.uint8), **arrays)
    with pytest.raises(tio.FileFormatError, match="corrupted metadata"):
        tnmars.load(tmp_path / "digits.npz")


def _paths(value, prefix=()):
    """Every place in a JSON document: (path, value), lists visited at their first entry."""
    yield prefix, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:1]):
            yield from _paths(v, prefix + (i,))


def _mutated(meta, path, new):
    out = json.loads(json.dumps(meta))
    node = out
    for key in path[:-1]:
        node = node[key]
    if new is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = new
    return out


_DELETE = object()
_REPLACEMENTS = [_DELETE, None, True, 0, -1, 2.5, 10**30, "x", "float64", [], [1, 2], {}, {"__float__": "nan"},
                 {"__tuple__": [1]}, "core_0"]


def _check_types(obj, cls) -> None:
    """A loaded object has the declared types everywhere (what the schema promises)."""
    import typing

    from tnmars import _schema

    if isinstance(obj, Network):
        assert all(isinstance(c, np.ndarray) for c in obj.cores)
        obj.to_tensor()
        return
    assert type(obj) is cls
    hints = typing.get_type_hints(cls)
    for name, tp in hints.items():
        value = getattr(obj, name)
        if isinstance(value, Network):
            continue
        if name == "probabilities":
            assert all(isinstance(v, np.ndarray) and v.ndim == 1 for v in value.values())
            continue
        again = _schema._conform(value, tp, name)
        if name not in ("history", "relaxation_probabilities", "selection"):
            assert again == value or (again != again and value != value), name  # NaN equals NaN here


@pytest.fixture(scope="module")
def fit_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fit")
    data = Network.tucker((5, 6, 4), (2, 3, 2), seed=1).to_tensor()
    result = tnmars.fit(data, "tucker", max_rank=3, seed=0, progress=False)
    return tnmars.save(result, folder / "fit.npz")


@pytest.mark.parametrize("field, value, match", [
    ("num_params", 7, "says 7 parameters"), ("num_params", -5, "says -5 parameters"),
    ("max_ranks", {"__tuple__": [1]}, "must list 3 integers"),
    ("max_ranks", {"__tuple__": [1, 3, 3]}, "below its rank"),
    # (found by an outside probe: NaN, values outside [0, 1], unknown bonds and 2-D values loaded)
    ("relaxation_probabilities", {"A": [{"__float__": "nan"}, 0.5, 0.5]}, "must lie in"),
    ("relaxation_probabilities", {"A": [2.0, 0.5, 0.5]}, "must lie in"),
    ("relaxation_probabilities", {"Q": [0.5]}, "not a bond"),
    ("relaxation_probabilities", {"A": [[0.5]]}, "1-D array"),
    # (an outside probe: these loaded, and summary() raised TypeError on the first)
    ("settings", {"noise_floor": "x"}, "noise_floor'\\] must be a number"),
    ("settings", {"cross_validation": {"refits": 3, "left_out_share": 0.1, "median_error": 0.2}}, "lacks 'fitted_error'"),
    ("settings", {"offset": {"mean": 1.0, "fitted_without_mean": "yes"}}, "True or False"),
    ("settings", {"cross_validation": {"left_out_share": 0.1, "median_error": 0.2, "fitted_error": 0.1}},
     "'refits'\\] must be a whole number; got None"),
    ("settings", {"cross_validation": {"refits": 3, "left_out_share": 0.1, "median_error": 0.2, "fitted_error": 0.1,
                                       "worst_error": "x"}}, "'worst_error'\\] must be a number"),
    ("evaluations", -1, "whole number >= 0"), ("steps_run", -2, "whole number >= 0"),
    ("seconds", -3.0, "finite number >= 0")])
def test_a_fit_result_whose_fields_contradict_its_network_is_refused(tmp_path, fit_file, field, value, match):
    """Re-signed files whose num_params or max_ranks disagree with the network they hold
    loaded, and summaries printed ranks above their caps or dropped bonds."""
    members = _members(fit_file)
    meta = json.loads(bytes(members["__tnmars_metadata__"]).decode())
    meta["fit"]["fields"][field] = value
    _resign(members, meta, tmp_path / "lie.npz")
    with pytest.raises(tio.FileFormatError, match=match):
        tnmars.load(tmp_path / "lie.npz")


def test_save_refuses_a_fit_result_whose_fields_no_longer_describe_its_network(tmp_path, fit_file):
    """A result whose network was replaced by a pruned one saved without complaint, and the
    file was then refused by load: the work was lost at the next session."""
    result = tnmars.load(fit_file)
    pruned = result.network.prune({result.bonds[1]: [0, 1]})
    stale = dataclasses.replace(result, network=pruned)
    with pytest.raises(ValueError, match="load would refuse the file .*has rank 3, but its network has 2"):
        tnmars.save(stale, tmp_path / "stale.npz")
    assert not (tmp_path / "stale.npz").exists()
    ranks = tuple(pruned.bonds[b] for b in result.bonds)
    fixed = dataclasses.replace(result, network=pruned, ranks=ranks, num_params=pruned.num_params)
    assert tnmars.load(tnmars.save(fixed, tmp_path / "fixed.npz")).ranks == ranks


def test_resigned_files_with_any_metadata_field_changed_fail_cleanly_or_load_typed(tmp_path, fit_file):
    """Every entry of a fit result's metadata, deleted or replaced by values of every JSON
    type, then re-signed: load raises FileFormatError or returns correctly typed objects
    (before: KeyError, AttributeError, a network replaced by a string, int8 cores...)."""
    arrays = _members(fit_file)
    meta = json.loads(arrays["__tnmars_metadata__"].tobytes())
    cls = type(tnmars.load(fit_file))
    out = tmp_path / "m.npz"
    outcomes = {"refused": 0, "loaded": 0}
    for path, _ in _paths(meta):
        if not path or path[-1] == "sha256":
            continue
        if path[:3] in (("fit", "fields", "settings"), ("fit", "fields", "history")) and len(path) > 4:
            continue  # free-form values (declared Any): every replacement is legal there
        for mutated, obj in _loaded_mutations(arrays, meta, path, _REPLACEMENTS, out):
            if obj is None:
                outcomes["refused"] += 1
                continue
            _check_types(obj, cls if mutated.get("kind") == "fit_result" else Network)
            outcomes["loaded"] += 1
    assert outcomes["refused"] > 500 and outcomes["loaded"] > 0, outcomes


def _loaded_mutations(arrays, meta, path, replacements, out):
    """``(mutated metadata, loaded object or None if refused)`` for every replacement of the
    entry at ``path`` that changes the metadata, each file re-signed; a refusal must be a
    FileFormatError with a message."""
    for new in replacements:
        mutated = _mutated(meta, path, new)
        if mutated == meta:
            continue
        _resign(arrays, mutated, out)
        try:
            obj = tnmars.load(out)
        except tio.FileFormatError as err:
            assert str(err)
            obj = None
        yield mutated, obj


def test_known_resigned_forgeries_are_refused(tmp_path, fit_file):
    arrays = _members(fit_file)
    meta = json.loads(arrays["__tnmars_metadata__"].tobytes())
    cases = {
        "kind fit_result without fit": (lambda m: m.pop("fit"), "fit"),
        "dims as a list": (lambda m: m.__setitem__("dims", list(m["dims"].values())), "dims must be a JSON object"),
        "network replaced by a string": (lambda m: m["fit"]["fields"].__setitem__("network", "x"), "'network'"),
        "int8 dtype over float64 arrays": (lambda m: m.__setitem__("dtype", "int8"), "holds float64"),
        "an array named twice": (lambda m: m["cores"].__setitem__(1, m["cores"][0]), "named twice"),
        "ranks that disagree": (lambda m: m["fit"].__setitem__("ranks", [9] * len(m["fit"]["ranks"])), "rank 9"),
        "unknown optimizer": (lambda m: m.__setitem__("optimize", "__import__('os')"), "optimizer"),
        # (an OverflowError escaped load and read_metadata; a dict loaded as a FitResult's ranks)
        "a number beyond a float's range": (lambda m: m["fit"]["fields"].__setitem__("seconds", 10**400),
                                             "seconds is out of a float's range"),
        "ranks as a mapping": (lambda m: m["fit"].update(ranks=dict(zip("ABC", m["fit"]["ranks"])),
                                                          ranks_type="dict"), "ranks must be a tuple"),
    }
    for label, (change, message) in cases.items():
        forged = json.loads(json.dumps(meta))
        change(forged)
        _resign(arrays, forged, tmp_path / "f.npz")
        with pytest.raises(tio.FileFormatError, match=message):
            tnmars.load(tmp_path / "f.npz")
        print(label, "refused")


def test_resigned_cores_load_without_a_key_and_are_refused_with_one(tmp_path, monkeypatch):
    """The unkeyed SHA-256 detects corruption only; a keyed HMAC detects tampering."""
    monkeypatch.delenv(tio.KEY_ENV, raising=False)
    net = Network.tt((3, 4, 5), 2, seed=0)
    signed = tnmars.save(net, tmp_path / "s.npz", key=b"0123456789abcdef")
    assert tnmars.load(signed, key=b"0123456789abcdef").spec == net.spec
    assert tio.read_metadata(signed, key="0123456789abcdef")["integrity"] == "hmac-sha256"
    assert tio.read_metadata(signed)["integrity"] == "sha256"  # no key: the digest only
    arrays = _members(signed)
    meta = json.loads(arrays["__tnmars_metadata__"].tobytes())
    arrays["core_0"] = arrays["core_0"] * 10
    _resign(arrays, meta, tmp_path / "x10.npz")
    np.testing.assert_allclose(tnmars.load(tmp_path / "x10.npz").cores[0], 10 * net.cores[0])  # unkeyed: loads
    with pytest.raises(tio.FileFormatError, match="HMAC mismatch"):
        tnmars.load(tmp_path / "x10.npz", key=b"0123456789abcdef")
    with pytest.raises(tio.FileFormatError, match="HMAC mismatch"):
        tnmars.load(signed, key=b"another key")
    unsigned = tnmars.save(net, tmp_path / "u.safetensors")
    with pytest.raises(tio.FileFormatError, match="not signed"):
        tnmars.load(unsigned, key=b"0123456789abcdef")
    monkeypatch.setenv(tio.KEY_ENV, "from the environment")
    env_signed = tnmars.save(net, tmp_path / "e.safetensors")
    assert tio.read_metadata(env_signed)["integrity"] == "hmac-sha256"
    with pytest.raises(tio.FileFormatError, match="not signed"):
        tnmars.load(unsigned)  # the environment's key applies to loading too
    with pytest.raises(ValueError, match="empty"):
        tnmars.save(net, tmp_path / "k.npz", key="")
    with pytest.raises(TypeError, match="key must be bytes"):
        tnmars.save(net, tmp_path / "k.npz", key=123)


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "net.npz"
    for name in ("net.npz.tmp", ".net.npz.tmp", "net.tmp"):
        (tmp_path / name).symlink_to(victim)
    tnmars.save(Network.cp((3, 4), 2, seed=0), target)
    assert victim.read_text() == "precious"
    # a link at the destination to a file of another kind is replaced, not written through
    link = tmp_path / "linked.npz"
    link.symlink_to(victim)
    tnmars.save(Network.cp((3, 4), 2, seed=0), link)
    assert victim.read_text() == "precious"
    assert not link.is_symlink() and tnmars.load(link).ranks == (2,)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]
    assert leftovers == []


def test_concurrent_saves_to_one_path_always_leave_a_whole_file(tmp_path):
    import threading

    nets = [Network.tt((4, 5, 6), r, seed=r) for r in (1, 2, 3, 4)]
    path = tmp_path / "shared.npz"
    tnmars.save(nets[0], path)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(k: int) -> None:
        try:
            for _ in range(15):
                tnmars.save(nets[k], path)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    def reader() -> None:
        while not stop.is_set():
            try:
                back = tnmars.load(path)
                assert any(_equal(back, n) for n in nets)
            except BaseException as err:  # pragma: no cover - reported below
                errors.append(err)
                return

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert errors == []
    assert any(_equal(tnmars.load(path), n) for n in nets)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.npz"]


def test_extensions_are_honoured_or_refused(tmp_path):
    net = Network.cp((3, 4), 2, seed=0)
    for bad in ("x.pt", "x.pth", "model.v1", "x.npy"):
        with pytest.raises(ValueError, match="npz or .safetensors"):
            tnmars.save(net, tmp_path / bad)
    assert not any(tmp_path.iterdir())  # nothing was written
    assert tnmars.save(net, tmp_path / "UPPER.NPZ").name == "UPPER.NPZ"
    assert tnmars.load(tmp_path / "UPPER.NPZ").ranks == (2,)
    with pytest.raises(TypeError, match="path must be"):
        tnmars.save(net, 3)


def test_nan_cores_are_refused_on_save_and_on_load(tmp_path):
    cores = Network.cp((3, 4), 2, seed=0).cores
    cores[0] = cores[0].copy()
    cores[0][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        tnmars.save(Network("aA,bA->ab", cores=cores), tmp_path / "nan.npz")
    good = tnmars.save(Network.cp((3, 4), 2, seed=0), tmp_path / "good.npz")
    arrays = _members(good)
    meta = json.loads(arrays["__tnmars_metadata__"].tobytes())
    arrays["core_1"] = arrays["core_1"].copy()
    arrays["core_1"][0, 0] = np.inf
    _resign(arrays, meta, tmp_path / "inf.npz")
    with pytest.raises(tio.FileFormatError, match="NaN or Inf"):
        tnmars.load(tmp_path / "inf.npz")


def test_an_integer_or_bool_dtype_is_refused_instead_of_truncating_the_cores(tmp_path):
    """``load(path, dtype="int32")`` and ``Network.to(dtype="int32")`` truncated float cores
    (to all zeros for cores below 1 in magnitude)."""
    net = Network.cp((3, 4), 2, seed=0)
    path = tnmars.save(net, tmp_path / "n.npz")
    for bad in ("int32", np.int64, bool, "uint8"):
        with pytest.raises(TypeError, match="would truncate"):
            net.to(dtype=bad)
        with pytest.raises(TypeError, match="would truncate"):
            tnmars.load(path, dtype=bad)
    with pytest.raises(TypeError, match="holds no numbers"):  # the caller's argument, not a broken file
        tnmars.load(path, dtype="object")
    assert tnmars.load(path, dtype="float32").dtype == "float32"
    assert net.to(dtype="complex128").dtype == "complex128"
    assert net.to("torch.float32").dtype == net.to(dtype="torch.float32").dtype == "float32"
    ints = Network("ij,jk", cores=[np.ones((2, 2), int), np.ones((2, 3), int)])  # integer cores stay possible
    assert ints.to(dtype="int64").dtype == tnmars.load(tnmars.save(ints, tmp_path / "i.npz"), dtype="int64").dtype


def test_a_real_dtype_is_refused_for_complex_cores_instead_of_dropping_their_imaginary_parts(tmp_path):
    """``Network.to(dtype="float64")`` of complex cores kept their real parts only (NumPy's
    ComplexWarning; torch warns once per process), as ``load(path, dtype=...)`` did."""
    net = Network("ij,jk->ik", cores=[np.full((2, 3), 1 + 2j), np.ones((3, 2), complex)])
    path = tnmars.save(net, tmp_path / "c.npz")
    for bad in ("float64", np.float32, "float16"):
        with pytest.raises(TypeError, match="would drop the imaginary parts"):
            net.to(dtype=bad)
        with pytest.raises(TypeError, match="would drop the imaginary parts"):
            tnmars.load(path, dtype=bad)
    torch = pytest.importorskip("torch")
    for real in (torch.float64, "float8_e4m3fn"):  # (a name NumPy does not know too)
        with pytest.raises(TypeError, match="would drop the imaginary parts"):
            net.to("torch").to(dtype=real)
    assert net.to(dtype="complex64").to_tensor()[0, 0] == 3 + 6j


def test_a_dtype_the_container_cannot_hold_is_a_type_error(tmp_path):
    """complex128 cores in a .safetensors file raised safetensors' own error type (found by
    the fuzz suite); .npz holds them."""
    net = Network("ij,jk", cores=[np.ones((2, 2), complex), np.ones((2, 3), complex)])
    with pytest.raises(TypeError, match="cannot hold; save to a .npz path"):
        tnmars.save(net, tmp_path / "c.safetensors")
    assert not any(tmp_path.iterdir())
    back = tnmars.load(tnmars.save(net, tmp_path / "c.npz"))
    assert back.dtype == "complex128"
    np.testing.assert_array_equal(back.to_tensor(), net.to_tensor())


def test_bfloat16_cores_when_ml_dtypes_registers_bfloat16_with_numpy(tmp_path):
    """JAX (and others) import ml_dtypes, after which ``np.dtype("bfloat16")`` is a NumPy type
    of kind "V": a bfloat16 network must still be accepted, saved and loaded."""
    torch = pytest.importorskip("torch")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    assert np.dtype(ml_dtypes.bfloat16).name == "bfloat16"
    half = Network.tt((3, 4, 5), 2, seed=0, backend="torch").to(dtype="bfloat16")
    back = tnmars.load(tnmars.save(half, tmp_path / "h.safetensors"))
    assert back.dtype == "bfloat16"
    assert all(torch.equal(x, y) for x, y in zip(half.cores, back.cores))
    with pytest.raises(TypeError, match="cores must hold numbers"):
        Network("ab", cores=[np.array([["x"]])])


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_a_label_network_keeps_its_str_and_int_labels_through_save_and_load(tmp_path, suffix):
    """Files had no place for labels: load gave back .labels None (later with a warning)."""
    pytest.importorskip("safetensors") if suffix == ".safetensors" else None
    net = Network([["x", "bond"], ["bond", 7]], dims={"x": 2, "bond": 3, 7: 4}, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = tnmars.save(net, tmp_path / f"labels{suffix}")
    back = tnmars.load(path)
    assert back.labels == net.labels and back.spec == net.spec
    assert {type(k) for k in back.labels} == {str, int}  # 7 stays an int, "x" a str
    np.testing.assert_array_equal(back.to_tensor(), net.to_tensor())


def test_labels_a_file_cannot_hold_are_a_warning_not_a_silent_loss(tmp_path):
    net = Network([[("site", 0), "bond"], ["bond", ("site", 1)]], dims={("site", 0): 2, "bond": 3, ("site", 1): 4},
                  seed=0)
    with pytest.warns(UserWarning, match="labels .* are not saved"):
        path = tnmars.save(net, tmp_path / "labels.npz")
    assert tnmars.load(path).labels is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tnmars.save(Network.tt((3, 4), 2, seed=0), tmp_path / "plain.npz")


def test_resigned_files_with_labels_changed_fail_cleanly_or_load_a_consistent_network(tmp_path):
    """The labels entry, every part deleted or replaced, then re-signed: load raises
    FileFormatError or gives a network whose labels name each index of its spec once."""
    net = Network([["x", "bond"], ["bond", 7]], dims={"x": 2, "bond": 3, 7: 4}, seed=0)
    path = tnmars.save(net, tmp_path / "labels.npz")
    arrays = _members(path)
    meta = json.loads(arrays["__tnmars_metadata__"].tobytes())
    out = tmp_path / "m.npz"
    refused = 0
    for where, _ in _paths(meta["labels"], ("labels",)):
        extra = [["str", "x", "zz"], ["int", 7, meta["labels"][0][2]], ["float", 1.5, "a"]]
        for _, back in _loaded_mutations(arrays, meta, where, _REPLACEMENTS + extra, out):
            if back is None:
                refused += 1
                continue
            indices = set("".join(back.spec.split("->")[0].split(",")))
            assert back.labels is None or sorted(back.labels.values()) == sorted(indices)
    assert refused > 20


def test_an_optimizer_object_or_explicit_path_is_a_warning_not_a_silent_auto(tmp_path):
    net = Network("ij,jk,kl", dims={"i": 2, "j": 3, "k": 4, "l": 5}, seed=0, optimize=[(0, 1), (0, 1)])
    with pytest.warns(UserWarning, match="optimizer .* is not saved"):
        path = tnmars.save(net, tmp_path / "path.npz")
    back = tnmars.load(path)
    assert back.optimize == "auto"
    np.testing.assert_allclose(back.to_tensor(), net.to_tensor())


def test_load_reads_a_dtype_as_tnmars_names_it_on_every_backend(tmp_path):
    """``load(path, dtype="float")`` on torch meant float32 (torch's reading) and skipped the
    overflow check, which read it as float64: cores of 1e39 came back as inf. NumPy dtype objects
    were refused by the torch backend ("unknown dtype")."""
    torch = pytest.importorskip("torch")
    big = Network.from_cores("ij,jk->ik", [torch.full((2, 2), 1e39, dtype=torch.float64)] * 2)
    path = tnmars.save(big, tmp_path / "big.npz")
    assert tnmars.load(path, dtype="float").dtype == "float64" == tnmars.load(path, dtype="float", backend="numpy").dtype
    for narrow in ("float32", np.float32, torch.float32):
        with pytest.raises(ValueError, match="overflows"):
            tnmars.load(path, dtype=narrow)


# ----------------------------------------------------------------------------- fuzzed paths and messages
def test_an_unwritable_folder_or_full_disk_names_the_target_not_the_temporary_file(tmp_path, monkeypatch):
    """The error named '.x.npz.XXXX.tmp', a file the user never heard of."""
    import tempfile

    from tnmars import _container

    net = Network.cp((3, 4), 2, seed=0)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".x.npz.abc123.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError, match=r"cannot save to '.*x\.npz'.*Permission denied") as info:
        tnmars.save(net, tmp_path / "x.npz")
    assert ".tmp" not in str(info.value) and isinstance(info.value.__cause__, PermissionError)
    assert info.value.errno == 13
    monkeypatch.undo()

    def full(tmp, fh):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match=r"cannot save to '.*y\.npz'.*No space left") as info:
        _container.write_atomic(tmp_path / "y.npz", full)
    assert info.value.errno == 28 and not list(tmp_path.glob("*.tmp"))


@pytest.mark.skipif(not hasattr(__import__("os"), "symlink"), reason="needs symbolic links")
def test_overwriting_keeps_the_permission_bits_and_a_link_to_a_tnmars_file(tmp_path):
    import os
    import stat

    path = tnmars.save(Network.tt((3, 4, 5), 2, seed=0), tmp_path / "private.npz")
    os.chmod(path, 0o600)
    tnmars.save(Network.tt((3, 4, 5), 2, seed=1), path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    link = tmp_path / "link.npz"
    link.symlink_to(path)
    tnmars.save(Network.tt((3, 4, 5), 2, seed=2), link)
    assert link.is_symlink() and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert _equal(tnmars.load(path), Network.tt((3, 4, 5), 2, seed=2))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_json_numbers_are_a_file_format_error_naming_the_file(tmp_path, literal):
    """Python's json reads them; the digest (strict JSON) then raised a bare ValueError."""
    path = tnmars.save(Network.cp((3, 4), 2, seed=0), tmp_path / "n.npz")
    arrays = _members(path)
    text = bytes(arrays.pop("__tnmars_metadata__")).decode()[:-1] + f', "x": {literal}}}'
    np.savez(tmp_path / "bad.npz", __tnmars_metadata__=np.frombuffer(text.encode(), np.uint8), **arrays)
    with pytest.raises(tio.FileFormatError, match=f"bad.npz.*{re_escape(literal)} is not a finite"):
        tnmars.load(tmp_path / "bad.npz")


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs named pipes")
def test_a_pipe_is_refused_before_it_is_opened(tmp_path):
    """load on a FIFO without a writer blocked in open() forever."""
    import os
    import threading

    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    caught: list[BaseException] = []

    def read():
        try:
            tnmars.load(fifo)
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            caught.append(err)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():  # release the blocked open() before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("tnmars.load blocked on a FIFO")
    assert len(caught) == 1 and isinstance(caught[0], tio.FileFormatError)
    assert "not a regular file" in str(caught[0])


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, True, None])
def test_an_invalid_format_version_is_not_called_newer(tmp_path, version):
    path = tnmars.save(Network.cp((3, 4), 2, seed=0), tmp_path / "v.npz")
    arrays = _members(path)
    meta = json.loads(arrays["__tnmars_metadata__"].tobytes())
    meta["format_version"] = version
    _resign(arrays, meta, tmp_path / "bad.npz")
    with pytest.raises(tio.FileFormatError, match="invalid file-format version") as info:
        tnmars.load(tmp_path / "bad.npz")
    assert "newer" not in str(info.value)


def test_a_safetensors_file_cut_inside_its_header_is_called_truncated(tmp_path):
    raw = tnmars.save(Network.cp((3, 4), 2, seed=0), tmp_path / "n.safetensors").read_bytes()
    header = int.from_bytes(raw[:8], "little")
    for n in (8, 9, 50, 8 + header - 1):
        cut = tmp_path / f"cut{n}.safetensors"
        cut.write_bytes(raw[:n])
        with pytest.raises(tio.FileFormatError, match="truncated or corrupted: its safetensors header declares"):
            tnmars.load(cut)


def test_an_empty_path_is_refused(tmp_path):
    with pytest.raises(ValueError, match="path is empty"):
        tnmars.save(Network.cp((3, 4), 2, seed=0), "")


def test_an_unsigned_file_names_where_the_key_came_from(tmp_path, monkeypatch):
    path = tnmars.save(Network.cp((3, 4), 2, seed=0), tmp_path / "u.npz")
    with pytest.raises(tio.FileFormatError, match=r"a key was given \(key=\)"):
        tnmars.load(path, key="k" * 16)
    monkeypatch.setenv(tio.KEY_ENV, "k" * 16)
    with pytest.raises(tio.FileFormatError, match=f"a key was given \\(in the {tio.KEY_ENV} environment variable"):
        tnmars.load(path)


def test_a_network_of_thousands_of_cores_and_a_long_label_save(tmp_path):
    """Found by an outside probe: a TT of 2,100 cores (16,792 parameters; its spec 10,499
    characters) could not be saved ("load would refuse the file"), and a string label longer than
    1,000 characters refused the whole network, where other unsupported labels are left out
    with a warning."""
    net = tnmars.Network.tt((2,) * 2100, 2, seed=0)
    tnmars.save(net, tmp_path / "long.npz")
    back = tnmars.load(tmp_path / "long.npz")
    assert back.spec == net.spec and all(np.array_equal(a, b) for a, b in zip(back.cores, net.cores))
    labelled = tnmars.Network([["x" * 2000, "b"], ["b", "c"]], shape=(2, 3), ranks=2, seed=0)
    with pytest.warns(UserWarning, match="labels .* are not saved"):
        tnmars.save(labelled, tmp_path / "label.npz")
    assert tnmars.load(tmp_path / "label.npz").labels is None


def test_a_narrowing_load_that_overflows_says_so_in_words_only(tmp_path):
    """Outside probe: loading as float16 a network past its range raised the clear error, but
    NumPy's "overflow encountered in cast" warning came first."""
    big = Network.tt((3, 4, 5), 2, seed=0)
    big.cores[0][...] = 1e6
    path = tnmars.save(big, tmp_path / "big.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning before the error fails here
        with pytest.raises(ValueError, match="overflows"):
            tnmars.load(path, dtype="float16")


def test_load_reads_a_device_as_network_to_does(tmp_path):
    """Outside probe: ``load(device=0)`` said "unknown torch device 0" where ``Network.to(device=0)``
    reads cuda:0; a torch.device is read by its name."""
    torch = pytest.importorskip("torch")
    path = tnmars.save(Network.tt((3, 4), 2, seed=0).to("torch"), tmp_path / "t.npz")
    assert tnmars.load(path, device=torch.device("cpu")).device == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda:0'.*CUDA is not available"):
            tnmars.load(path, device=0)
    else:
        assert tnmars.load(path, device=0).device == "cuda:0"
    with pytest.raises(TypeError, match="device must be"):
        tnmars.load(path, device=1.5)


@pytest.mark.parametrize("name", [".npz", ".safetensors", ".NPZ"])
def test_a_path_that_is_only_an_extension_is_refused(tmp_path, name):
    """Outside probe: ``save(net, "dir/.npz")`` wrote ``dir/.npz.npz`` (Path reads ".npz" as a
    hidden file's name without a suffix)."""
    with pytest.raises(ValueError, match="has an extension but no file name"):
        tnmars.save(Network.tt((3, 4), 2, seed=0), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_a_dotted_version_in_a_name_is_part_of_it_and_a_folders_namesake_file_loads(tmp_path):
    """Outside probe: save(net, "run_v1.5") was refused as a name "ending in '.5'", losing the
    version; and save(net, "runs") beside a folder "runs" wrote runs.npz, which load("runs")
    refused as "a folder"."""
    net = tnmars.Network.tt((3, 4, 5), 2, seed=0)
    path = tnmars.save(net, tmp_path / "run_v1.5")
    assert path.name == "run_v1.5.npz"
    np.testing.assert_array_equal(tnmars.load(tmp_path / "run_v1.5").to_tensor(), net.to_tensor())
    (tmp_path / "runs").mkdir()
    assert tnmars.save(net, tmp_path / "runs").name == "runs.npz"
    assert tnmars.load(tmp_path / "runs").spec == net.spec
    (tmp_path / "empty").mkdir()  # (a folder without a namesake file is still refused as one)
    with pytest.raises(tnmars.io.FileFormatError, match="is a folder"):
        tnmars.load(tmp_path / "empty")
    with pytest.raises(ValueError, match="ends in '.pt'"):
        tnmars.save(net, tmp_path / "net.pt")
    # a trailing separator names the folder itself: refused (it wrote runs.npz beside it, replacing any
    # file of that name, and the folder stayed empty; an outside probe), folder or not
    before = (tmp_path / "runs.npz").read_bytes()
    for name in ("runs/", "not_yet/"):
        with pytest.raises(IsADirectoryError, match="names a folder; give a file name in it"):
            tnmars.save(net, str(tmp_path / name.rstrip("/")) + "/")
    with pytest.raises(IsADirectoryError, match="names a folder"):  # (a review: Path folds "runs/." to "runs")
        tnmars.save(net, str(tmp_path / "runs") + "/.")
    assert (tmp_path / "runs.npz").read_bytes() == before and not list((tmp_path / "runs").iterdir())
    assert not (tmp_path / "not_yet.npz").exists()


def test_an_unstorable_setting_drops_that_entry_not_the_whole_dict(tmp_path):
    """Outside probe: one np.datetime64 among a fit's settings dropped every setting: save warned
    "field 'settings' (dict) is not saved" and load gave {} back. Only that entry is dropped now,
    and the warning names it."""
    x = np.asarray(tnmars.Network.tucker((5, 6, 7), (2, 2, 2), seed=0).to_tensor())
    result = tnmars.fit(x, "tucker", progress=False)
    odd = dataclasses.replace(result, settings={**result.settings, "when": np.datetime64("2026-01-01")})
    with pytest.warns(UserWarning, match=r"field 'settings': 'when' \(datetime64\) not saved.*its other entries are"):
        path = tnmars.save(odd, tmp_path / "fit.npz")
    assert tnmars.load(path).settings == tnmars.load(tnmars.save(result, tmp_path / "plain.npz")).settings


def test_settings_with_keys_other_than_text_come_back_with_their_keys(tmp_path):
    """Outside probe: JSON keys are text, so {3: "a"} among a fit's settings came back as
    {"3": "a"} without a word. Integer, float and tuple keys now come back as they were (also
    beside an entry that cannot be stored), and a file whose tagged items are not key-value
    pairs loads them as a plain dict instead of failing."""
    x = np.asarray(tnmars.Network.tucker((5, 6, 7), (2, 2, 2), seed=0).to_tensor())
    result = tnmars.fit(x, "tucker", progress=False)
    keyed = {3: "a", 0.5: [1, 2], (0, 1): {"inner": {7: (1, 2)}}, "text": 1}
    odd = dataclasses.replace(result, settings={**result.settings, "by_key": keyed})
    assert tnmars.load(tnmars.save(odd, tmp_path / "fit.npz")).settings["by_key"] == keyed
    both = dataclasses.replace(result, settings={**result.settings, "by_key": {5: "five"},
                                                 "when": np.datetime64("2026-01-01")})
    with pytest.warns(UserWarning, match=r"'when' \(datetime64\) not saved"):
        path = tnmars.save(both, tmp_path / "both.npz")
    back = tnmars.load(path).settings
    assert back["by_key"] == {5: "five"} and "when" not in back and back["prior"] == result.settings["prior"]
    top = dataclasses.replace(result, settings={**result.settings, 5: "five"})  # (the settings' own keys are names)
    with pytest.warns(UserWarning, match=r"field 'settings': the keys 5 are saved as text"):
        assert tnmars.load(tnmars.save(top, tmp_path / "top.npz")).settings["5"] == "five"
    assert tnmars.io._unjson({"__items__": [[[1], 2]]}) == {"__items__": [[[1], 2]]}  # (a list is no key)
    assert tnmars.io._unjson({"__items__": [[1, 2, 3]]}) == {"__items__": [[1, 2, 3]]}


def test_a_result_like_object_without_the_fields_is_refused_with_its_own_hint(tmp_path):
    """Outside probe: save's docstring said any object with .network and .ranks is saved; such
    an object was refused with a hint about replacing a fit result's network. The error now
    names the fields it lacks and says to save its network, or to build a result with fit."""
    import types
    net = tnmars.Network.tt((3, 4, 5), 2, seed=0)
    like = types.SimpleNamespace(network=net, ranks=net.ranks, relative_error=0.1)
    with pytest.raises(ValueError, match=r"lacks .*'num_params'.*saved as a FitResult.*tnmars.save\(obj.network"):
        tnmars.save(like, tmp_path / "like.npz")
    assert not (tmp_path / "like.npz").exists()


def test_big_endian_cores_are_refused_as_such(tmp_path):
    """Outside probe: '>f8' cores were refused with a list of dtypes that includes float64."""
    net = tnmars.Network("aA,Ab->ab", cores=[np.ones((3, 2), ">f8"), np.ones((2, 4), ">f8")])
    with pytest.raises(TypeError, match=r"big-endian \(float64 in the other byte order\).*net.to\('float64'\)"):
        tnmars.save(net, tmp_path / "be.npz")
    np.testing.assert_array_equal(tnmars.load(tnmars.save(net.to("float64"), tmp_path / "be.npz")).to_tensor(),
                                  net.to_tensor())
