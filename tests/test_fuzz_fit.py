"""Fuzzing ``tnmars.fit``: the reproducers of issue 14 and the laws they break.

The laws are those of ``test_fuzz.py``:
every failure is a ``ValueError`` / ``TypeError`` with a message, no result is silently NaN,
and the selected ranks and the relative error do not depend on the data's scale.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tnmars
from tnmars import Network

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FAST = {"progress": False, "seed": 0}


def _data(seed: int = 0) -> np.ndarray:
    truth = Network.tucker((6, 5, 4), (2, 2, 2), seed=seed).to_tensor()
    return truth + 0.01 * np.random.default_rng(seed).standard_normal(truth.shape)


def _clean_failure(err: BaseException) -> None:
    assert isinstance(err, (ValueError, TypeError)), f"{type(err).__name__}: {err}"
    assert str(err).strip()


@pytest.mark.parametrize("exponent", [-300, -200, -100, -20, 20, 100, 160, 300])
def test_ranks_and_errors_do_not_depend_on_the_data_scale(exponent):
    """fit(x * 1e160) gave relative_error nan; fit(x * 1e-200) reported 0.0 for a zero network."""
    x = _data()
    ref = tnmars.fit(x, "tucker", max_rank=3, **FAST)
    scaled = tnmars.fit(x * 10.0**exponent, "tucker", max_rank=3, **FAST)
    assert scaled.ranks == ref.ranks
    assert math.isfinite(scaled.relative_error)
    # the noise variance is in data units squared: float64 cannot hold it beyond about 1e154
    assert math.isfinite(scaled.noise_variance) or (exponent > 150 and scaled.noise_variance == math.inf)
    assert scaled.relative_error == pytest.approx(ref.relative_error, rel=1e-3)
    est = np.asarray(scaled.network.to_tensor()) / 10.0**exponent
    true_error = np.linalg.norm(est - x) / np.linalg.norm(x)
    assert true_error == pytest.approx(scaled.relative_error, rel=1e-3)


def test_zero_data_with_learned_noise_is_a_clear_error_or_a_zero_result():
    """fit(np.zeros(...), noise_variance="learn") raised ZeroDivisionError."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = tnmars.fit(np.zeros((4, 5, 6)), "tucker", max_rank=2, noise_variance="learn", **FAST)
    except Exception as err:  # noqa: BLE001
        _clean_failure(err)
        return
    assert all(r == 0 for r in result.ranks) or caught, "a zero fit must be loud"
    assert math.isfinite(result.relative_error)


@pytest.mark.parametrize("kwargs, ok", [
    ({"seed": np.random.default_rng(0)}, True),  # failed inside fit
    ({"max_rank": 2.5}, False),  # was truncated to 2
    ({"alpha": math.nan}, False),  # closed every mask
    ({"dtype": "int64"}, False),  # cores 93% zeros
    ({"dtype": "float16"}, None),  # 40 overflow warnings, then rank 0: refuse or fit properly
    ({"max_rank": 10**9}, True),  # MemoryError: clip to the feasible rank
    ({"seed": True}, False),
    ({"relaxation": {"steps": 2.0}, "prior": "bernoulli"}, False),
    ({"prior_strength": math.inf}, False),
])
def test_fit_options_are_accepted_or_refused_at_the_door(kwargs, ok):
    options = {**FAST, **kwargs}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = tnmars.fit(_data(), "cp" if "max_rank" in kwargs else "tucker", **options)
    except Exception as err:  # noqa: BLE001
        _clean_failure(err)
        assert ok is not True, f"{kwargs} should be accepted"
        return
    assert ok is not False, f"{kwargs} was accepted silently"
    assert math.isfinite(result.relative_error) and result.relative_error < 0.5


def test_torch_dtypes_are_accepted():
    """fit(dtype=torch.float32) raised a NumPy TypeError."""
    torch = pytest.importorskip("torch")
    result = tnmars.fit(_data(), "tucker", max_rank=3, backend="torch", dtype=torch.float32, **FAST)
    assert result.network.dtype == "float32"


def test_tiny_torch_fits_run_on_one_thread():
    """A default fit of a 4x5x6 tensor took 185 s with torch's default threads on a busy
    2-core machine (10.6 s on one): small problems must not pay for intra-op threading
    (tnmars.backends.torch_backend.cpu_threads_for)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # as on a machine without OMP_NUM_THREADS=1
    seen = []
    try:
        tnmars.fit(np.random.default_rng(0).standard_normal((4, 5, 6)), "tucker", max_rank=3, backend="torch",
                   prior="bernoulli", callback=lambda step, info: seen.append(torch.get_num_threads()), **FAST)
        assert torch.get_num_threads() == 2  # and the caller's setting is back afterwards
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}


def test_progress_bar_respects_tqdm_disable(monkeypatch, capsys):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    tnmars.fit(_data(), "tucker", max_rank=3, seed=0)
    assert "it/s" not in capsys.readouterr().err


@FUZZ
@given(scale_exp=st.integers(-300, 300), noise=st.sampled_from([0.0, 1e-3, 1e-1]),
       fmt=st.sampled_from(["tucker", "cp", "tt", "tr"]),
       nan_frac=st.sampled_from([0.0, 0.1]), inf=st.booleans())
def test_fit_never_returns_nan(scale_exp, noise, fmt, nan_frac, inf):
    x = _data() * 10.0**scale_exp
    x = x + noise * np.abs(x).max() * np.random.default_rng(1).standard_normal(x.shape)
    rng = np.random.default_rng(2)
    holes = rng.random(x.shape) < nan_frac
    x[holes] = np.inf if inf else np.nan
    for observed in (None, ~holes):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = tnmars.fit(x, fmt, max_rank=3, observed=observed, **FAST)
        except Exception as err:  # noqa: BLE001
            _clean_failure(err)
            assert observed is None and holes.any(), "a valid completion problem was refused"
            continue
        assert math.isfinite(result.relative_error)
        assert all(np.isfinite(np.asarray(c)).all() for c in result.network.cores)
