"""Oversized requests are 422s that name the field (no sockets: validation precedes Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from taskq.settings import Settings
from taskq.tasks import inputs


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", redis_socket_timeout_s=0.2)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _position(i: int) -> dict[str, Any]:
    return {"symbol": f"S{i}", "quantity": 1, "price": 1.0}


def _var(**data: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"portfolio_data": {"positions": [_position(0)]}}
    return {"task_type": "calculate_var", "data": {**base, **data}}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            _var(portfolio_data={"positions": [_position(i) for i in range(501)]}),
            "data.portfolio_data.positions",
        ),
        (_var(method="monte_carlo", simulations=inputs.MAX_SIMULATIONS + 1), "data.simulations"),
        (_var(time_horizon=251), "data.time_horizon"),
        (
            _var(method="historical", returns_history={"S0": [0.0] * 10_001}),
            "data.returns_history.S0",
        ),
        ({"task_type": "drill_echo", "data": {"payload": "x" * 1_001}}, "data.payload"),
        (
            {
                "task_type": "monte_carlo_pricing",
                "data": {
                    "spot": 1,
                    "strike": 1,
                    "volatility": 0.2,
                    "maturity": 1,
                    "simulations": 10**7,
                },
            },
            "data.simulations",
        ),
    ],
)
def test_bounds_are_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    answer = client.post("/api/v1/tasks", json=body, headers={"Idempotency-Key": "bounds-1"})
    assert answer.status_code == 422, answer.text
    fields = [d["field"] for d in answer.json()["error"]["details"]]
    assert field in fields


@pytest.mark.parametrize("key", [b"", b"a" * 256, b"white space", "é".encode(), b"a;b"])
def test_malformed_idempotency_key_is_400(client: TestClient, key: bytes) -> None:
    answer = client.post(
        "/api/v1/tasks",
        json={"task_type": "drill_echo", "data": {}},
        headers={"Idempotency-Key": key},
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_idempotency_key"


def test_idempotency_key_is_documented(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    post = schema["paths"]["/api/v1/tasks"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in post["parameters"])
    assert {"400", "409", "422", "429", "503"} <= set(post["responses"])
