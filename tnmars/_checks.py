"""Argument checks shared by every layer of the library, so errors read the same everywhere.

Each helper either returns the value in a canonical form or raises a ``TypeError`` (wrong
kind of value) or ``ValueError`` (right kind, bad value) whose message names the argument.
:func:`warn` points a warning at the caller's line rather than at tnmars's own.
"""
from __future__ import annotations

import functools
import math
import operator
import os
import sys
import warnings
from fractions import Fraction
from typing import Any

import numpy as np

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1; a ``TypeError`` for non-integers (bools included), a
    ``ValueError`` naming ``name`` otherwise.

    >>> positive_int(3, "steps")
    3
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer; got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1); got {value}")
    return int(value)


def integer(value: Any, name: str) -> int:
    """``value`` as a Python int: ints, NumPy integers and anything with ``__index__``;
    bools, floats (``2.0`` and ``inf`` included) and strings are a ``TypeError``.

    >>> integer(np.int32(4), "rank")
    4
    >>> integer(2.5, "rank")
    Traceback (most recent call last):
    ...
    TypeError: rank must be an integer; got 2.5 (float)
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, not a bool; got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer; got {value!r} ({type(value).__name__})") from None


def positive_finite(value: Any, name: str) -> float:
    """``value`` as a float that is finite and > 0 (a real number, not a bool or a string).

    >>> positive_finite(0.5, "scale")
    0.5
    >>> positive_finite(float("inf"), "scale")
    Traceback (most recent call last):
    ...
    ValueError: scale must be a finite number > 0; got inf
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number; got {value!r} ({type(value).__name__})")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0; got {value}")
    return value


def dtype_name(dtype: Any, name: str = "dtype") -> str:
    """A NumPy-style dtype name (``"float32"``) from a string, a NumPy dtype or scalar type,
    Python's ``float`` / ``int`` / ``complex``, or a ``torch.dtype`` (torch is not imported).

    >>> dtype_name(np.float32), dtype_name("float64"), dtype_name(float)
    ('float32', 'float64', 'float64')
    """
    if type(dtype).__module__ == "torch" and type(dtype).__name__ == "dtype":
        return str(dtype).replace("torch.", "")
    if isinstance(dtype, str) and dtype == "bfloat16":  # torch-only; NumPy has no such dtype
        return dtype
    try:
        return np.dtype(dtype).name
    except TypeError:
        raise TypeError(f"{name} {dtype!r} is not a data type (use e.g. 'float32' or 'float64')") from None


def floating_dtype(dtype: Any, name: str = "dtype") -> str:
    """:func:`dtype_name`, refusing anything but a real floating type (``TypeError``).

    >>> floating_dtype("float16")
    'float16'
    >>> floating_dtype("int64")
    Traceback (most recent call last):
    ...
    TypeError: dtype must be a floating type such as 'float32' or 'float64'; got 'int64'
    """
    canonical = dtype_name(dtype, name)
    if canonical != "bfloat16" and np.dtype(canonical).kind != "f":
        raise TypeError(f"{name} must be a floating type such as 'float32' or 'float64'; got {canonical!r}")
    return canonical


def seed_generator(seed: Any, name: str = "seed") -> np.random.Generator:
    """A NumPy ``Generator`` from ``None``, a non-negative int, a ``Generator`` (used as is) or
    a ``SeedSequence``; anything else is a ``TypeError`` naming ``name``.

    >>> float(seed_generator(0).random()) == float(np.random.default_rng(0).random())
    True
    """
    if seed is None or isinstance(seed, (np.random.Generator, np.random.SeedSequence)):
        return np.random.default_rng(seed)
    value = integer(seed, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0; got {value}")
    return np.random.default_rng(value)


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the caller's own code, however deep inside tnmars
    the warning was raised (Python 3.12's ``skip_file_prefixes``, on every version)."""
    frame = sys._getframe(1)
    level = 2  # 1 would be this function; 2 the tnmars function that called it
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level - 1 if frame is None else level)


def max_params(budget: Any, dense_size: int) -> int:
    """The largest parameter count ``budget`` allows for a tensor (or layers) of ``dense_size``
    entries: an ``int`` is a parameter count, a string ``"20x"`` a compression ratio.

    >>> max_params("20x", dense_size=8000), max_params(350, dense_size=8000)
    (400, 350)
    """
    if isinstance(budget, bool):
        raise TypeError(f"budget must be a parameter count (int) or a compression ratio such as '20x'; got {budget!r}")
    if isinstance(budget, (int, np.integer)):
        if budget < 1:
            raise ValueError(f"budget must be a positive parameter count; got {budget}")
        return int(budget)
    if isinstance(budget, str):
        text = budget.strip().lower()
        if text.endswith("x"):
            try:  # exactly as written: "1.1x" of 110 entries allows 100 parameters (float division gave 99)
                ratio = Fraction(text[:-1])
            except (ValueError, ZeroDivisionError):
                ratio = Fraction(0)
            if not ratio >= 1:
                raise ValueError(f"a compression-ratio budget is a number >= 1 followed by 'x', such as '20x'; "
                                 f"got {budget!r}")
            return max(int(dense_size // ratio), 1)
        raise ValueError(f"budget string {budget!r} is not a compression ratio; write it as '20x' "
                         "(or pass an int parameter count)")
    raise TypeError(f"budget must be a parameter count (int) or a compression ratio such as '20x'; "
                    f"got {type(budget).__name__} {budget!r}")


def describe_budget(budget: Any) -> str:
    """How a budget reads in messages and result settings."""
    if isinstance(budget, str):
        return f"{budget} compression"
    return f"{int(budget):,} parameter" + ("" if int(budget) == 1 else "s")


@functools.lru_cache(maxsize=1)
def host_memory() -> int | None:
    """Bytes of physical memory, or None where the system does not say (read once)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None
