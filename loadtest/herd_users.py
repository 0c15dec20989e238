"""The thundering herd's clients: many users submitting at once, in two variants.

* ``HerdHammerUser``: impatient; after a shed answer (``429``/``503``) it submits again at
  once. What a naive client (or a retry loop without back-off) does to a stack.
* ``HerdPoliteUser``: honours ``Retry-After`` (with jitter) after every shed answer, as the
  stack asks; polls of its accepted tasks back off the same way.

Both submit a small VaR task (``drill_echo`` is not a user's task), follow it to its terminal
status and report its end-to-end time as ``TASK task end-to-end``. Run with the herd shape
and one class name (both at once when none is given):

    locust --config loadtest/locust.conf --headless --processes 2 \\
      -f loadtest/herd_users.py,loadtest/shapes/thundering_herd.py HerdHammerUser

Self-contained like ``locustfile.py``: it imports it as a sibling module (Locust puts this
directory on ``sys.path`` while it loads the file), by module so that its user classes are
not collected twice.
"""

from __future__ import annotations

import random
from typing import Any

import locustfile as flows
from locust import constant, task


def herd_task(rng: random.Random) -> dict[str, Any]:
    """A parametric VaR of two to four positions: cheap to run, realistic to submit."""
    return {
        "task_type": "calculate_var",
        "priority": rng.choice(("high", "medium", "low")),
        "data": {
            "portfolio_data": flows.portfolio(rng, rng.randint(2, 4)),
            "confidence_level": 0.99,
            "time_horizon": 1,
            "method": "parametric",
        },
    }


class HerdHammerUser(flows.TaskFlowUser):
    """Submits without pause; a shed answer is followed by the next submission at once."""

    wait_time = constant(0)
    honour_retry_after = False

    @task
    def submit(self) -> None:
        self.submit_and_follow(herd_task(self.rng))


class HerdPoliteUser(flows.TaskFlowUser):
    """Submits without pause, but sleeps ``Retry-After`` (x1-1.5) after a shed answer."""

    wait_time = constant(0)
    honour_retry_after = True

    @task
    def submit(self) -> None:
        self.submit_and_follow(herd_task(self.rng))
