import numpy as np
import pytest

from tnmars._checks import positive_int


def test_positive_int_accepts_python_and_numpy_integers():
    assert positive_int(1, "n") == 1 and positive_int(np.int64(7), "n") == 7


@pytest.mark.parametrize("value, error", [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError), ("4", TypeError)])
def test_positive_int_names_the_argument(value, error):
    with pytest.raises(error, match="steps must be a positive integer"):
        positive_int(value, "steps")


# ----------------------------------------------------------------------------- the other checks
from tnmars._checks import (  # noqa: E402
    dtype_name,
    floating_dtype,
    integer,
    positive_finite,
    seed_generator,
    warn,
)


@pytest.mark.parametrize("value", [2.0, 2.5, float("inf"), float("nan"), True, np.bool_(False), "3", None, [3]])
def test_integer_refuses_everything_but_integers(value):
    with pytest.raises(TypeError, match="rank must be an integer"):
        integer(value, "rank")


def test_integer_accepts_index_types():
    assert integer(np.int8(-3), "r") == -3 and integer(np.array(4), "r") == 4 and integer(10**30, "r") == 10**30


@pytest.mark.parametrize("value, error", [(0, ValueError), (-1.0, ValueError), (float("inf"), ValueError),
                                          (float("nan"), ValueError), (True, TypeError), ("1", TypeError),
                                          (1j, TypeError), (None, TypeError)])
def test_positive_finite_names_the_argument(value, error):
    with pytest.raises(error, match="scale must be"):
        positive_finite(value, "scale")


def test_dtype_names_from_every_spelling():
    torch = pytest.importorskip("torch")
    assert dtype_name(torch.float32) == "float32" and dtype_name(torch.bfloat16) == "bfloat16"
    assert dtype_name(np.float16) == "float16" and dtype_name(np.dtype("f8")) == "float64" and dtype_name(int) == "int64"
    assert floating_dtype(torch.float64) == "float64"
    for bad in ("int8", torch.int64, complex, "bool"):
        with pytest.raises(TypeError, match="floating type"):
            floating_dtype(bad)
    with pytest.raises(TypeError, match="not a data type"):
        dtype_name("float99")


def test_seed_generator_accepts_generators_and_refuses_the_rest():
    gen = np.random.default_rng(5)
    assert seed_generator(gen) is gen
    assert seed_generator(np.random.SeedSequence(1)).random() == np.random.default_rng(np.random.SeedSequence(1)).random()
    with pytest.raises(TypeError, match="seed must be an integer"):
        seed_generator(1.5)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        seed_generator(-2)


def test_warn_points_at_the_first_frame_outside_tnmars():
    import warnings

    from tnmars import Network

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn("direct")  # called from a test: the test's line
        Network.tucker((2, 6, 7), 4)  # raised two calls deep inside tnmars
    assert [w.filename for w in caught] == [__file__, __file__]
