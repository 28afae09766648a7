"""Argument checks shared by every layer of the library, so errors read the same everywhere."""
from __future__ import annotations

from typing import Any

import numpy as np


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
