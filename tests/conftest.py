import os

from hypothesis import HealthCheck, settings

# CI runs on a shared 2-core machine: no per-example deadline, bounded example counts
settings.register_profile(
    "tnmars",
    deadline=None,
    max_examples=int(os.environ.get("TNMARS_HYPOTHESIS_EXAMPLES", "60")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("tnmars")
