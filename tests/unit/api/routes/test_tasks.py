"""Task routes up to the point where Redis would be needed (no sockets are opened)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from taskq.settings import Settings


@pytest.fixture
def client() -> Iterator[TestClient]:
    # Port 1 is never listened on: any accidental Redis use would fail loudly, not hang.
    settings = Settings(redis_url="redis://127.0.0.1:1/0", redis_socket_timeout_s=0.2)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_unknown_task_type_lists_the_allowed_ones(client: TestClient) -> None:
    answer = client.post("/api/v1/tasks", json={"task_type": "mine_bitcoin", "data": {}})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "unknown_task_type"
    assert {"calculate_var", "monte_carlo_pricing", "portfolio_optimization", "stress_test"} <= set(
        error["details"]["allowed"]
    )


def test_invalid_data_names_the_field(client: TestClient) -> None:
    body = {
        "task_type": "calculate_var",
        "data": {"portfolio_data": {"positions": [{"symbol": "AAPL", "quantity": 1, "price": -5}]}},
    }
    answer = client.post("/api/v1/tasks", json=body)
    assert answer.status_code == 422
    fields = [d["field"] for d in answer.json()["error"]["details"]]
    assert fields == ["data.portfolio_data.positions.0.price"]


@pytest.mark.parametrize(
    "body",
    [
        {"task_type": "calculate_var", "priority": "urgent"},
        {"task_type": "", "data": {}},
        {"data": {}},
        {"task_type": "calculate_var", "data": [], "extra": 1},
    ],
)
def test_malformed_submissions_are_422(client: TestClient, body: dict[str, object]) -> None:
    answer = client.post("/api/v1/tasks", json=body)
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "validation_error"
    assert answer.json()["correlation_id"] == answer.headers["X-Request-ID"]


def test_broker_outage_is_a_503_not_a_500(client: TestClient) -> None:
    body = {"task_type": "drill_echo", "data": {"payload": "x"}}
    answer = client.post("/api/v1/tasks", json=body)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "broker_unavailable"
    assert answer.headers["Retry-After"]


def test_healthz_needs_no_dependencies(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}


def test_readyz_reports_redis_unreachable(client: TestClient) -> None:
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["error"]["details"]["redis"] == "unreachable"
