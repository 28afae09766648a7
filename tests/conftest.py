import os

# Under pytest-xdist (one worker per core) each worker computes on one thread: with NumPy's
# BLAS and torch taking every core in each worker, the workers' threads outnumber the cores.
# (Read by both libraries when they load, which is after this file; a test that sets its own
# thread count still does.)
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

# The compiled MARS step ops (tnmars.nn.native) are used wherever they are built; the suite
# runs the Python path, the reference, unless told otherwise: tests/test_nn_native.py checks
# that the two agree bit for bit.
os.environ.setdefault("TNMARS_NATIVE", "0")

from hypothesis import HealthCheck, settings

# CI runs on a shared 2-core machine: no per-example deadline, bounded example counts
settings.register_profile(
    "tnmars",
    deadline=None,
    max_examples=int(os.environ.get("TNMARS_HYPOTHESIS_EXAMPLES", "60")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("tnmars")
