"""The work a task may ask for: a cost model per task type and its documented maximum.

A request whose cost exceeds its maximum is refused at the door (422 ``task_too_large``) and
again by the worker, before any numpy array is allocated. The maximums are sized so that the
largest accepted request of every type stays within :data:`MEMORY_BUDGET_BYTES` of working
arrays in the worker and a few seconds of one core (measured figures: README, "Task types").

* ``calculate_var``, ``monte_carlo``: positions x simulations (normal draws),
  :data:`MAX_MONTE_CARLO_DRAWS`;
* ``calculate_var``, ``historical``: positions x observations, :data:`MAX_HISTORY_CELLS`;
* ``monte_carlo_pricing``: simulations, :data:`MAX_PRICING_SIMULATIONS` (the field's bound);
* ``portfolio_optimization``: symbols x symbols, :data:`MAX_COVARIANCE_CELLS`;
* ``stress_test``: scenarios x positions, :data:`MAX_STRESS_CELLS`.
"""

from __future__ import annotations

from pydantic_core import PydanticCustomError

#: Working memory the numpy math may hold for the Monte Carlo draws at once (chunk size).
MEMORY_BUDGET_BYTES = 64 * 1024 * 1024
#: Monte Carlo VaR: 500 positions x 100,000 simulations, or 50 x 1,000,000.
MAX_MONTE_CARLO_DRAWS = 50_000_000
#: Historical VaR: 500 positions x 10,000 observations (also bounded by the body size).
MAX_HISTORY_CELLS = 5_000_000
#: Option pricing: one draw per simulation (antithetic pairs).
MAX_PRICING_SIMULATIONS = 1_000_000
#: Optimisation: a 100 x 100 covariance, iterated at most 20,000 times.
MAX_COVARIANCE_CELLS = 10_000
#: Stress test: 50 scenarios x 500 positions.
MAX_STRESS_CELLS = 25_000

#: The ``type`` of the validation error; the API answers it with code ``task_too_large``.
ERROR_TYPE = "task_too_large"


def check(measure: str, cost: int, limit: int) -> None:
    """Raise the ``task_too_large`` validation error when ``cost`` exceeds ``limit``."""
    if cost > limit:
        raise PydanticCustomError(
            ERROR_TYPE,
            "task too large: {measure} is {cost}, the limit is {limit}",
            {"measure": measure, "cost": cost, "limit": limit},
        )
