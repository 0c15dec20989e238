"""Steady ramp: users grow linearly to a peak, hold it, then the test stops.

``RAMP_USERS`` (default 100, at most 2000) users reached after ``RAMP_S`` seconds (default
120), held for ``RAMP_HOLD_S`` seconds (default 60); then the shape returns ``None``. Good for
finding the request rate at which latency bends, and as the background load of the
worker-kill drill (loadtest/README.md).

    locust -f loadtest/locustfile.py,loadtest/shapes/steady_ramp.py --headless
"""

from __future__ import annotations

import math
import os

from locust import LoadTestShape

MAX_USERS = 2_000
MAX_PHASE_S = 1_800


def _bounded_int(name: str, default: int, upper: int) -> int:
    return max(1, min(int(os.environ.get(name, str(default))), upper))


class SteadyRamp(LoadTestShape):
    """Linear ramp to ``peak`` users over ``ramp_s``, hold for ``hold_s``, stop."""

    peak = _bounded_int("RAMP_USERS", 100, MAX_USERS)
    ramp_s = _bounded_int("RAMP_S", 120, MAX_PHASE_S)
    hold_s = _bounded_int("RAMP_HOLD_S", 60, MAX_PHASE_S)

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        if elapsed >= self.ramp_s + self.hold_s:
            return None
        target = (
            self.peak if elapsed >= self.ramp_s else math.ceil(self.peak * elapsed / self.ramp_s)
        )
        # Spawn rate: the ramp's slope (users per second), at least one.
        return max(1, target), max(1.0, self.peak / self.ramp_s)
