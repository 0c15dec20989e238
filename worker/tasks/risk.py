"""Risk tasks. Inputs are validated again here: a malformed message fails at once, unretried.

Transient infrastructure errors (lost connections, timeouts) retry with exponential backoff
and jitter, capped by ``retry_backoff_max_s`` (a retry waiting for its countdown is kept
fresh by the worker's heartbeat, see worker/celery_app.py). Every task is a pure function
of its input, so a redelivery repeats no side effect.
"""

from __future__ import annotations

from typing import Any

from taskq.tasks import inputs
from worker.celery_app import app
from worker.tasks import risk_math
from worker.tasks.base import run_validated, transient_retry_options


@app.task(name="taskq.risk.calculate_var", **transient_retry_options())
def calculate_var(**data: Any) -> dict[str, Any]:
    """VaR and expected shortfall of a portfolio."""
    return run_validated(inputs.VarInput, data, risk_math.value_at_risk)


@app.task(name="taskq.risk.monte_carlo_pricing", **transient_retry_options())
def monte_carlo_pricing(**data: Any) -> dict[str, Any]:
    """European option price by simulation, with standard error."""
    return run_validated(inputs.OptionPricingInput, data, risk_math.price_european_option)


@app.task(name="taskq.risk.portfolio_optimization", **transient_retry_options())
def portfolio_optimization(**data: Any) -> dict[str, Any]:
    """Long-only mean-variance weights summing to one."""
    return run_validated(inputs.OptimizationInput, data, risk_math.optimize_portfolio)


@app.task(name="taskq.risk.stress_test", **transient_retry_options())
def stress_test(**data: Any) -> dict[str, Any]:
    """Portfolio P&L under named shock scenarios."""
    return run_validated(inputs.StressTestInput, data, risk_math.stress_test)
