"""The worker agrees with the door and never succeeds with non-finite numbers."""

from __future__ import annotations

import math
from typing import Any

import pytest

from taskq.tasks import cost, inputs
from worker.tasks import risk_math
from worker.tasks.base import InvalidTaskInput, run_validated
from worker.tasks.numeric import NumericError


def test_the_worker_refuses_nan_decoded_by_stdlib_json() -> None:
    data = {"symbols": ["A", "B"], "expected_returns": [math.nan, 0.1]}
    data["covariance"] = [[0.1, 0.0], [0.0, math.inf]]
    with pytest.raises(InvalidTaskInput, match="finite"):
        run_validated(inputs.OptimizationInput, data, risk_math.optimize_portfolio)


def test_the_worker_refuses_work_beyond_the_cost_model() -> None:
    positions = [{"symbol": f"S{i}", "quantity": 1, "price": 1.0} for i in range(500)]
    data: dict[str, Any] = {"portfolio_data": {"positions": positions}}
    data |= {"method": "monte_carlo", "simulations": 200_000}
    with pytest.raises(InvalidTaskInput, match="task too large"):
        run_validated(inputs.VarInput, data, risk_math.value_at_risk)


def test_overflowing_history_is_a_numeric_error_not_a_null_success() -> None:
    positions = [{"symbol": s, "quantity": 1e9, "price": 1e7} for s in ("A", "B")]
    history = {"A": [1e300, -1e300] * 10, "B": [1e300, -1e300] * 10}
    data = {"portfolio_data": {"positions": positions}, "method": "historical"}
    data["returns_history"] = history
    with pytest.raises(NumericError):
        run_validated(inputs.VarInput, data, risk_math.value_at_risk)


def test_optimisation_near_the_float_range_is_a_numeric_error() -> None:
    data = {"symbols": ["A", "B"], "expected_returns": [1e308, -1e308]}
    data["covariance"] = [[1e308, 1e308], [1e308, 1e308]]
    with pytest.raises(NumericError):
        run_validated(inputs.OptimizationInput, data, risk_math.optimize_portfolio)


def test_chunked_monte_carlo_matches_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    positions = [{"symbol": f"S{i}", "quantity": 10, "price": 5.0} for i in range(4)]
    params = inputs.VarInput(
        portfolio_data={"positions": positions}, method="monte_carlo", seed=1, simulations=5000
    )
    whole = risk_math.value_at_risk(params)
    monkeypatch.setattr(cost, "MEMORY_BUDGET_BYTES", 8 * 4 * 7)  # 7 rows a chunk
    assert risk_math.value_at_risk(params) == whole


def test_optimisation_says_when_it_projected_the_covariance() -> None:
    def projected(covariance: list[list[float]]) -> bool:
        params = inputs.OptimizationInput(
            symbols=["A", "B"], expected_returns=[0.1, 0.05], covariance=covariance
        )
        return bool(risk_math.optimize_portfolio(params)["covariance_projected"])

    assert projected([[0.04, 0.0], [0.0, 0.09]]) is False
    assert projected([[0.04, 0.1], [0.1, 0.04]]) is True
