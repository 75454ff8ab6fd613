"""Shared test configuration.

Hypothesis profiles: ``ci`` (the default: enough examples to catch regressions in minutes) and
``thorough`` (``HYPOTHESIS_PROFILE=thorough pytest ...``: many more examples, run before a release).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
