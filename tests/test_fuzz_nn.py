"""Fuzzing the ``tnmars.nn`` layers with hostile inputs (the nn part of issue 14's suite).

Skipped until issue 12 lands: it validates layer inputs (a list gave ``AttributeError``, a
0-d tensor ``IndexError``). The law: a layer call returns a finite tensor of the right shape
or raises ``ValueError`` / ``TypeError`` with a message.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
import tnmars.nn as tnn  # noqa: E402

pytestmark = pytest.mark.skip(reason="enabled when issue 12 lands (nn layer input validation)")

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INPUTS = st.one_of(
    st.sampled_from([None, 3, 2.5, "x", [], [[1.0] * 6], [1.0] * 6, np.ones(6), np.ones((2, 6)), object()]),
    st.tuples(st.integers(0, 3), st.integers(0, 8)).map(lambda s: torch.ones(s)),
    st.sampled_from([torch.tensor(1.0), torch.ones(6, dtype=torch.int64), torch.ones(2, 6, dtype=torch.bool),
                     torch.full((2, 6), math.nan), torch.full((2, 6), 1e300, dtype=torch.float64),
                     torch.ones(2, 6, dtype=torch.float16), torch.ones(2, 6, dtype=torch.complex64)]),
)


@FUZZ
@given(x=INPUTS, layer_kind=st.sampled_from(["tt", "tucker", "lowrank"]))
def test_layers_with_hostile_inputs(x, layer_kind):
    layer = tnn.LowRankLinear(6, 4, rank=2) if layer_kind == "lowrank" else tnn.TensorizedLinear(6, 4, layer_kind, rank=2)
    try:
        y = layer(x)
    except Exception as err:  # noqa: BLE001
        assert isinstance(err, (ValueError, TypeError)), f"{type(err).__name__}: {err}"
        assert str(err).strip()
        return
    assert isinstance(y, torch.Tensor) and y.shape[-1] == 4
    x_t = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    if torch.isfinite(x_t.double()).all():
        assert torch.isfinite(y).all(), "finite input, NaN output"


def test_warnings_point_at_the_caller_not_at_tnmars():
    """Warnings pointed at tnmars's own lines (layers.py:168) instead of the caller's."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tnn.TensorizedLinear(6, 4, rank=50)  # ranks clipped: a warning
    assert caught and all(w.filename == __file__ for w in caught), [(w.filename, w.lineno) for w in caught]
