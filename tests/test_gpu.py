"""GPU checks: torch on CUDA and CuPy. They skip cleanly on machines without a GPU."""
import numpy as np
import pytest

from tnmars import Network

torch = pytest.importorskip("torch")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


@pytest.mark.cuda
@needs_cuda
def test_torch_cuda_contraction_stays_on_the_device():
    net = Network.tt((4, 5, 6), 3, seed=0).to("torch", device="cuda")
    out = net.to_tensor()
    assert out.is_cuda
    np.testing.assert_allclose(out.cpu().numpy(), Network.tt((4, 5, 6), 3, seed=0).to_tensor(), atol=1e-10)
    pruned = net.prune({"A": torch.tensor([True, False, True], device="cuda")})
    assert pruned.ranks == (2, 3) and pruned.device.startswith("cuda")


@pytest.mark.cuda
def test_cupy_contraction_matches_numpy():
    cupy = pytest.importorskip("cupy")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception:  # pragma: no cover - cupy without a driver
        pytest.skip("cupy is installed but no GPU is usable")
    ref = Network.tr((4, 5, 6), 2, seed=0)
    net = ref.to("cupy")
    out = net.to_tensor()
    assert isinstance(out, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(out), ref.to_tensor(), atol=1e-10)
