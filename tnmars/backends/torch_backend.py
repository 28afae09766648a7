"""PyTorch backend: CPU and CUDA, gradients by autograd.

:func:`cpu_threads_for` is the one place that decides how many intra-op threads torch may
use on the CPU: small contractions, and any contraction on a machine already busier than
its cores, run on one thread, because there a thread pool costs more than it saves (3x to
24x slower at every size in ``benchmarks/results/torch_threads.md``, a busy 2-core machine).
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

from .base import Backend


@lru_cache(maxsize=64)
def _dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


def _import_torch():
    try:
        import torch
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise ImportError("the torch backend needs PyTorch: pip install 'tnmars[torch]'") from err
    return torch


#: contractions below this many FLOPs (per call) run on one CPU thread. In
#: ``benchmarks/results/torch_threads.md`` (a shared 2-core machine) one thread was faster at
#: every size up to 8e7 FLOPs, so this bound is conservative: it only keeps the thread pool
#: away from problems far too small to feed it
SMALL_WORK_FLOPS = 2**24


def machine_busy() -> bool:
    """Whether the last minute's load average already fills every CPU this process may use
    (then extra threads only queue behind other work). False where the system cannot say."""
    try:
        load = os.getloadavg()[0]
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    except (AttributeError, OSError):
        return False
    return load >= cpus

_threads_lock = threading.Lock()
_threads_depth = 0
_threads_saved: int | None = None


@contextlib.contextmanager
def cpu_threads_for(flops: float, device: Any = "cpu") -> Iterator[int]:
    """Run the body with as many torch CPU threads as work of ``flops`` FLOPs per
    contraction pays for: one below :data:`SMALL_WORK_FLOPS` or when :func:`machine_busy`,
    torch's setting otherwise.

    Yields the thread count in force. Nested uses keep the outermost choice; CUDA devices
    are left alone. ``torch.set_num_threads`` is process-wide, so the body should be the
    training loop of one problem, not code that runs beside other torch work.

    >>> with cpu_threads_for(1e3) as n:
    ...     n
    1
    """
    global _threads_depth, _threads_saved
    torch = _import_torch()
    if str(device).startswith("cuda") or (flops >= SMALL_WORK_FLOPS and not machine_busy()):
        yield torch.get_num_threads()
        return
    with _threads_lock:
        if _threads_depth == 0:
            _threads_saved = torch.get_num_threads()
            torch.set_num_threads(1)
        _threads_depth += 1
    try:
        yield 1
    finally:
        with _threads_lock:
            _threads_depth -= 1
            if _threads_depth == 0 and _threads_saved is not None:
                torch.set_num_threads(_threads_saved)
                _threads_saved = None


#: a CPU matrix product with at least this many times more rows than columns (and a long
#: inner side, see :meth:`TorchBackend.matmul`) is run transposed. 16 missed products that are
#: as slow: (1152 x 810) @ (810 x 81) took 6.5 ms direct and 4.6 ms transposed (a contiguous
#: result; (1024 x 1024) @ (1024 x 128): 13.3 against 9.6 ms), so 8
TALL_SKINNY_RATIO = 8


class TorchBackend(Backend):
    name = "torch"
    autograd = True

    def __init__(self) -> None:
        self.torch = _import_torch()
        self._plain = (self.torch.Tensor, self.torch.nn.Parameter)
        self._aten_tensordot = getattr(self.torch._C._VariableFunctions, "tensordot", None) or (
            lambda a, b, x, y: self.torch.tensordot(a, b, dims=(x, y)))
        torch = self.torch
        narrow = ["bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu"]
        self._widened = {getattr(torch, n): torch.float32 for n in narrow if hasattr(torch, n)}
        if hasattr(torch, "complex32"):
            self._widened[torch.complex32] = torch.complex64

    def _dtype(self, name: str | None):
        if name is None:
            return None
        if isinstance(name, self.torch.dtype):
            return name
        try:
            return getattr(self.torch, str(name))
        except AttributeError:
            raise TypeError(f"unknown dtype {name!r} for the torch backend") from None

    def is_array(self, x: Any) -> bool:
        return isinstance(x, self.torch.Tensor)

    def dtype_name(self, x: Any) -> str:
        return _dtype_name(x.dtype)

    def device_of(self, x: Any) -> str:
        return str(x.device)

    def check_device(self, device: str | None) -> None:
        if device is None:
            return
        try:
            dev = self.torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"unknown torch device {device!r}") from err
        if dev.type == "cuda" and not self.torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but CUDA is not available here")
        if dev.type not in ("cpu", "cuda", "meta"):  # mps, xla, xpu...: usable only where built and present
            try:
                self.torch.empty(0, device=dev)
            except (RuntimeError, AssertionError, ImportError) as err:  # hpu, privateuseone: no torch.<type>
                reason = (str(err).splitlines() or [""])[0][:200]  # (torch's dispatcher errors run to pages)
                raise ValueError(f"device {device!r} is not available here ({type(err).__name__}: {reason})") from err

    def asarray(self, x: Any, dtype: str | None = None, device: str | None = None) -> Any:
        self.check_device(device)
        torch = self.torch
        if isinstance(x, torch.Tensor):
            return x.to(device=device if device is not None else x.device, dtype=self._dtype(dtype) or x.dtype)
        if type(x).__module__.startswith("cupy"):
            x = x.get()
        return torch.as_tensor(x, dtype=self._dtype(dtype), device=device)

    def to_numpy(self, x: Any):
        """``x`` as a NumPy array. Dtypes NumPy has no type for (bfloat16, the float8 types,
        complex32) are widened to the narrowest one that holds every value exactly (float32,
        complex64): ``.numpy()`` would raise torch's own "Got unsupported ScalarType" instead.
        A tensor with a lazy conjugate or negative bit (``z.conj()``, ``z.conj().imag``) is
        materialised first: ``.numpy()`` refuses those."""
        x = x.detach().resolve_conj().resolve_neg()
        wider = self._widened.get(x.dtype)
        if wider is not None:
            x = x.to(wider)
        return x.cpu().numpy()

    def zeros(self, shape: Sequence[int], dtype: str, device: str | None = None) -> Any:
        return self.torch.zeros(tuple(shape), dtype=self._dtype(dtype), device=device)

    def transpose(self, x: Any, axes: Sequence[int]) -> Any:
        return x.permute(tuple(axes))

    def reshape(self, x: Any, shape: Sequence[int]) -> Any:
        return x.reshape(tuple(shape))

    def matmul(self, a: Any, b: Any) -> Any:
        torch = self.torch
        if a.dtype == torch.bool or b.dtype == torch.bool:
            # torch has no boolean GEMM; NumPy's boolean matmul is an OR of ANDs, which is a
            # count > 0 (counted in float64: exact up to 2**53 terms, and available on CUDA)
            if a.dtype == b.dtype:
                return self.torch.matmul(a.to(torch.float64), b.to(torch.float64)) != 0
            a, b = (a.to(b.dtype), b) if a.dtype == torch.bool else (a, b.to(a.dtype))
        if (a.ndim == 2 and b.ndim == 2 and a.shape[0] >= TALL_SKINNY_RATIO * b.shape[1]
                and a.shape[1] >= max(64, 2 * b.shape[1]) and a.device.type == "cpu"):
            # torch's CPU GEMM is about 2x slower for tall-skinny products (M >> N) than for the
            # transposed, wide one; the result is the same matrix, returned as a transposed view.
            # With a short inner side (K < 64 or K < 2N) the product is cheap and the copy that
            # a transposed view costs later is not: the direct product is then faster (measured
            # with a contiguous result: (65536 x 4) @ (4 x 16) 3.2 ms against 5.6 ms)
            return self.torch.matmul(b.mT, a.mT).mT
        return self.torch.matmul(a, b)

    def sum(self, x: Any, axis=None) -> Any:
        if axis is None:
            return x.sum()
        return x.sum(dim=tuple(axis) if isinstance(axis, (list, tuple)) else axis)

    def take(self, x: Any, indices: Sequence[int], axis: int) -> Any:
        idx = self.torch.as_tensor(list(indices), dtype=self.torch.long, device=x.device)
        return self.torch.index_select(x, axis, idx)

    fused_tensordot = True

    def tensordot(self, a: Any, b: Any, axes_a: Sequence[int], axes_b: Sequence[int]) -> Any:
        # torch.tensordot is a Python wrapper (argument forms, __torch_function__) around the
        # ATen op, and the wrapper costs about as much as a small contraction: call the op
        # itself for plain tensors and parameters (same op, same autograd), the wrapper for
        # subclasses that may override torch functions
        torch = self.torch
        if a.dtype == torch.bool or b.dtype == torch.bool:  # no boolean GEMM: as in matmul
            if a.dtype == b.dtype:
                return self.tensordot(a.to(torch.float64), b.to(torch.float64), axes_a, axes_b) != 0
            a, b = (a.to(b.dtype), b) if a.dtype == torch.bool else (a, b.to(a.dtype))
        if type(a) in self._plain and type(b) in self._plain:
            return self._aten_tensordot(a, b, list(axes_a), list(axes_b))
        return torch.tensordot(a, b, dims=(list(axes_a), list(axes_b)))

    def contiguous(self, x: Any) -> Any:
        return x.contiguous()

    def copy(self, x: Any) -> Any:
        return x.clone(memory_format=self.torch.contiguous_format)

    def result_dtype(self, arrays: Sequence[Any]) -> str:
        torch = self.torch
        tensors = [x for x in arrays if isinstance(x, torch.Tensor)]
        dtype = tensors[0].dtype if tensors else None
        for x in tensors[1:]:
            dtype = torch.promote_types(dtype, x.dtype)
        for x in arrays:  # Python numbers promote weakly, as in torch's own arithmetic
            if not isinstance(x, torch.Tensor):
                dtype = torch.result_type(torch.empty(0, dtype=dtype), x) if dtype is not None else (
                    torch.as_tensor(x).dtype)
        return str(dtype).replace("torch.", "")

    def exp(self, x: Any) -> Any:
        return self.torch.exp(x)

    def log(self, x: Any) -> Any:
        return self.torch.log(x)

    def sigmoid(self, x: Any) -> Any:
        return self.torch.sigmoid(x)

    def clip(self, x: Any, low: float, high: float) -> Any:
        return self.torch.clamp(x, low, high)

    def isfinite_all(self, x: Any) -> bool:
        return bool(self.torch.isfinite(x).all())

    def rng(self, seed: int | None, device: str | None = None) -> Any:
        gen = self.torch.Generator(device=device or "cpu")
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(int(seed))
        return gen

    def uniform(self, rng: Any, shape: Sequence[int], dtype: str, device: str | None = None) -> Any:
        return self.torch.rand(tuple(shape), generator=rng, dtype=self._dtype(dtype), device=device)

    def normal(self, rng: Any, shape: Sequence[int], dtype: str, device: str | None = None) -> Any:
        return self.torch.randn(tuple(shape), generator=rng, dtype=self._dtype(dtype), device=device)
