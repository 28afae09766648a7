"""Backend pieces added for hostile inputs: torch boolean contractions and CPU threads."""
from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tnmars.backends.torch_backend as tb  # noqa: E402
from tnmars.backends import get_backend  # noqa: E402
from tnmars.backends.torch_backend import SMALL_WORK_FLOPS, cpu_threads_for  # noqa: E402


def test_boolean_matmul_matches_numpy():
    be = get_backend("torch")
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 4, 5)) < 0.3, rng.random((3, 5, 2)) < 0.3
    out = be.matmul(torch.as_tensor(a), torch.as_tensor(b))
    assert out.dtype == torch.bool
    np.testing.assert_array_equal(out.numpy(), np.matmul(a, b))
    mixed = be.matmul(torch.as_tensor(a[0]), torch.ones(5, 2, dtype=torch.float64))
    np.testing.assert_array_equal(mixed.numpy(), np.matmul(a[0], np.ones((5, 2))))


def test_tensors_with_a_lazy_conjugate_or_negative_bit_reach_numpy():
    """``z.conj().imag`` (a real tensor with the negative bit) crashed fit, save and
    ``Network.numpy()`` in torch's ``.numpy()`` ("Can't call numpy() on Tensor that has
    negative bit set"), and ``fit(z.conj())`` said so instead of tnmars's own complex error."""
    import tnmars
    from tnmars.interop.init import svd_init

    z = torch.randn(4, 5, 6, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    im = z.conj().imag
    assert im.is_neg()
    expected = -z.imag.numpy()
    for backend in ("torch", "numpy"):
        np.testing.assert_array_equal(get_backend(backend).asarray(im) if backend == "numpy"
                                      else get_backend(backend).to_numpy(im), expected)
    np.testing.assert_array_equal(get_backend("torch").to_numpy(z.conj()), z.numpy().conj())
    net = tnmars.Network("ij,jk", cores=[im[0], im[1].T])
    np.testing.assert_array_equal(net.numpy().cores[0], expected[0])
    assert svd_init("tucker", im, [2, 2, 2]).ranks == (2, 2, 2)
    assert tnmars.fit(im, "tucker", max_rank=2, progress=False).network.backend == "torch"
    with pytest.raises(TypeError, match="complex data is not supported"):
        tnmars.fit(z.conj(), progress=False)


def test_numpy_data_accept_a_torch_cpu_device():
    """``device=torch.device("cpu")`` was refused for NumPy data: "the numpy backend runs on
    the CPU only; got device=device(type='cpu')"."""
    import tnmars

    get_backend("numpy").check_device(torch.device("cpu"))
    x = np.asarray(tnmars.Network.tucker((4, 5, 6), 2, seed=0).to_tensor())
    assert tnmars.fit(x, max_rank=3, device=torch.device("cpu"), progress=False).network.device == "cpu"
    with pytest.raises(ValueError, match="CPU only"):
        get_backend("numpy").check_device(torch.device("meta"))


def test_small_work_runs_on_one_thread_and_restores_the_setting(monkeypatch):
    monkeypatch.setattr(tb, "machine_busy", lambda: False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with cpu_threads_for(1e3) as n:
            assert n == 1 and torch.get_num_threads() == 1
            with cpu_threads_for(10) as inner:  # nesting keeps the outer choice
                assert inner == 1
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with cpu_threads_for(SMALL_WORK_FLOPS) as n:
            assert n == 2 and torch.get_num_threads() == 2
        with cpu_threads_for(1e3, device="cuda:0") as n:  # CUDA work is left alone
            assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), cpu_threads_for(1e3):
            raise RuntimeError("the setting comes back after an error too")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_busy_machine_gets_one_thread_at_any_size(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(tb, "machine_busy", lambda: True)
        with cpu_threads_for(10 * SMALL_WORK_FLOPS) as n:
            assert n == 1
        monkeypatch.setattr(tb, "machine_busy", lambda: False)
        with cpu_threads_for(10 * SMALL_WORK_FLOPS) as n:
            assert n == 2
    finally:
        torch.set_num_threads(before)


def test_threads_helper_from_several_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    barrier = threading.Barrier(3)
    seen = []

    def work():
        with cpu_threads_for(100):
            barrier.wait(timeout=30)
            seen.append(torch.get_num_threads())
            barrier.wait(timeout=30)

    try:
        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == [1, 1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("device", ["hpu", "privateuseone"])
def test_a_device_whose_torch_module_is_missing_is_unavailable_not_an_import_error(device):
    """torch.empty(device='hpu') raises ModuleNotFoundError('torch.hpu'), which escaped."""
    import tnmars

    with pytest.raises(ValueError, match=f"device '{device}' is not available here"):
        get_backend("torch").check_device(device)
    with pytest.raises(ValueError, match="not available"):
        tnmars.Network.tt((3, 4), 2, backend="torch", device=device)
