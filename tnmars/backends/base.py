"""The small protocol every array backend implements.

tnmars never calls a framework directly outside this package (and ``tnmars.nn``): the
network, contraction and MARS code talk to a :class:`Backend`, so one code path serves
NumPy, CuPy and PyTorch. Arithmetic operators (``+``, ``*``, ``**``) are used directly on
arrays, because all three frameworks support them with the same broadcasting rules.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Backend:
    """Array operations tnmars needs, for one framework.

    Subclasses set :attr:`name` and implement the methods below. Instances are stateless
    singletons obtained from :func:`tnmars.backends.get_backend`.
    """

    name: str = "abstract"
    #: whether gradients come from the framework (autograd) rather than environments
    autograd: bool = False

    # -- identity -----------------------------------------------------------------------
    def is_array(self, x: Any) -> bool:
        raise NotImplementedError

    def dtype_name(self, x: Any) -> str:
        """The dtype of ``x`` as a NumPy-style name (``"float64"``)."""
        raise NotImplementedError

    def device_of(self, x: Any) -> str:
        raise NotImplementedError

    # -- creation / conversion ----------------------------------------------------------
    def asarray(self, x: Any, dtype: str | None = None, device: str | None = None) -> Any:
        raise NotImplementedError

    def to_numpy(self, x: Any):
        raise NotImplementedError

    def zeros(self, shape: Sequence[int], dtype: str, device: str | None = None) -> Any:
        raise NotImplementedError

    def check_device(self, device: str | None) -> None:
        """Raise a clear error if ``device`` cannot be used by this backend."""

    # -- shape manipulation and contraction -------------------------------------------
    def transpose(self, x: Any, axes: Sequence[int]) -> Any:
        raise NotImplementedError

    def reshape(self, x: Any, shape: Sequence[int]) -> Any:
        raise NotImplementedError

    def matmul(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def sum(self, x: Any, axis: int | Sequence[int] | None = None) -> Any:
        raise NotImplementedError

    def take(self, x: Any, indices: Sequence[int], axis: int) -> Any:
        """Select ``indices`` (integers) along ``axis``; used by pruning."""
        raise NotImplementedError

    #: whether :meth:`tensordot` is one fused native call, cheaper than the separate
    #: transpose/reshape/matmul calls the executor makes otherwise (torch: yes)
    fused_tensordot: bool = False

    def tensordot(self, a: Any, b: Any, axes_a: Sequence[int], axes_b: Sequence[int]) -> Any:
        """Contract ``a``'s ``axes_a`` with ``b``'s ``axes_b`` (paired); the result holds a's
        other axes, then b's, each in their own order."""
        raise NotImplementedError

    def contiguous(self, x: Any) -> Any:
        """``x`` in row-major memory order (``x`` itself when it already is)."""
        raise NotImplementedError

    def copy(self, x: Any) -> Any:
        """A row-major copy of ``x`` that shares no memory with it."""
        raise NotImplementedError

    def result_dtype(self, arrays: Sequence[Any]) -> str:
        """The dtype name the framework promotes ``arrays`` to (mixed-dtype contractions);
        Python numbers among them promote weakly, as in the framework's own arithmetic."""
        raise NotImplementedError

    # -- elementwise maths used by MARS -------------------------------------------------
    def exp(self, x: Any) -> Any:
        raise NotImplementedError

    def log(self, x: Any) -> Any:
        raise NotImplementedError

    def sigmoid(self, x: Any) -> Any:
        raise NotImplementedError

    def clip(self, x: Any, low: float, high: float) -> Any:
        raise NotImplementedError

    def isfinite_all(self, x: Any) -> bool:
        raise NotImplementedError

    # -- randomness -----------------------------------------------------------------------
    def rng(self, seed: int | None, device: str | None = None) -> Any:
        """A framework random generator, seeded for reproducibility."""
        raise NotImplementedError

    def uniform(self, rng: Any, shape: Sequence[int], dtype: str, device: str | None = None) -> Any:
        raise NotImplementedError

    def normal(self, rng: Any, shape: Sequence[int], dtype: str, device: str | None = None) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<tnmars backend {self.name!r}>"

    def __reduce__(self) -> tuple:
        """Pickle (and ``copy.deepcopy``) by name: a backend holds its framework's module, which
        cannot be pickled, and unpickling returns the process's singleton for that name, so a
        ``Network`` or a module holding one pickles, deep-copies and ``torch.save`` s."""
        return (_backend_named, (self.name,))


def _backend_named(name: str) -> Backend:
    from . import get_backend

    return get_backend(name)
