"""Thundering herd: every user arrives at once, stays for a while, then the test stops.

``HERD_USERS`` (default 1000, at most 5000) users are spawned in the first tick (spawn rate
= user count), held for ``HERD_HOLD_S`` seconds (default 60, at most 600), then the shape
returns ``None`` and Locust stops: the run is bounded whatever the command line says.

    locust --config loadtest/locust.conf --headless --processes 2 \
      -f loadtest/herd_users.py,loadtest/shapes/thundering_herd.py HerdHammerUser

(``HerdPoliteUser`` for clients that honour Retry-After; without ``--headless`` the same from
the web UI.) Expect 503 overloaded from the admission bound, 429s from nginx's rate limit and
503s from the API's breaker once queues are deep: that is what this drill is for (see the
"Load tests and drills" dashboard).
"""

from __future__ import annotations

import os

from locust import LoadTestShape

MAX_USERS = 5_000
MAX_HOLD_S = 600


def _bounded_int(name: str, default: int, upper: int) -> int:
    return max(1, min(int(os.environ.get(name, str(default))), upper))


class ThunderingHerd(LoadTestShape):
    """All users at once for a bounded time."""

    users = _bounded_int("HERD_USERS", 1_000, MAX_USERS)
    hold_s = _bounded_int("HERD_HOLD_S", 60, MAX_HOLD_S)

    def tick(self) -> tuple[int, float] | None:
        if self.get_run_time() >= self.hold_s:
            return None
        return self.users, float(self.users)
