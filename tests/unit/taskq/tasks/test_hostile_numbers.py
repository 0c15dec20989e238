"""Non-finite numbers, oversized work and non-PSD correlations are 422s naming the field.

No sockets: validation precedes Redis. Bodies with NaN/Infinity/1e999 are refused by orjson in
the fast lane and handed to FastAPI (stdlib json); finite bodies are answered by the fast lane.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from taskq.settings import Settings
from taskq.tasks import cost

HEADERS = {"Content-Type": "application/json"}


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", redis_socket_timeout_s=0.2)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _positions(n: int) -> list[dict[str, Any]]:
    return [{"symbol": f"S{i}", "quantity": 1, "price": 1.0} for i in range(n)]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_non_finite_number_is_a_422_naming_the_field(client: TestClient, literal: str) -> None:
    body = (
        '{"task_type": "portfolio_optimization", "data": {"symbols": ["A", "B"], '
        f'"expected_returns": [{literal}, 0.1], "covariance": [[0.1, 0], [0, 0.1]]}}}}'
    )
    response = client.post("/api/v1/tasks", content=body, headers=HEADERS)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert {"field": "data.expected_returns.0", "type": "finite_number"}.items() <= (
        error["details"][0].items()
    )


def test_monte_carlo_var_beyond_the_draw_budget_is_task_too_large(client: TestClient) -> None:
    data = {"portfolio_data": {"positions": _positions(500)}, "method": "monte_carlo"}
    data["simulations"] = 1_000_000
    response = client.post("/api/v1/tasks", json={"task_type": "calculate_var", "data": data})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "task_too_large"
    assert str(500 * 1_000_000) in error["message"]
    assert str(cost.MAX_MONTE_CARLO_DRAWS) in error["message"]
    assert error["details"][0]["field"] == "data.simulations"


@pytest.mark.parametrize(("n", "correlation"), [(500, -0.01), (3, -0.6)])
def test_a_correlation_without_psd_covariance_is_refused(
    client: TestClient, n: int, correlation: float
) -> None:
    data = {"portfolio_data": {"positions": _positions(n)}, "correlation": correlation}
    response = client.post("/api/v1/tasks", json={"task_type": "calculate_var", "data": data})
    assert response.status_code == 422
    detail = response.json()["error"]["details"][0]
    assert (detail["field"], detail["type"]) == ("data.correlation", "covariance_not_psd")
