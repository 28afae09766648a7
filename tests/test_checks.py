import numpy as np
import pytest

from tnmars._checks import positive_int


def test_positive_int_accepts_python_and_numpy_integers():
    assert positive_int(1, "n") == 1 and positive_int(np.int64(7), "n") == 7


@pytest.mark.parametrize("value, error", [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError), ("4", TypeError)])
def test_positive_int_names_the_argument(value, error):
    with pytest.raises(error, match="steps must be a positive integer"):
        positive_int(value, "steps")
