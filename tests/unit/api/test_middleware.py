"""CorrelationMiddleware on a tiny app: echo, replacement, and a 500 that keeps the header."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.errors import install_error_handlers
from api.middleware import CorrelationMiddleware
from taskq.correlation import correlation_id_var


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/echo")
    async def echo() -> dict[str, str | None]:
        return {"seen": correlation_id_var.get()}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("unexpected")

    app.add_middleware(CorrelationMiddleware)
    return app


def test_valid_id_is_echoed_and_bound_to_the_context() -> None:
    with TestClient(_app()) as client:
        answer = client.get("/echo", headers={"X-Request-ID": "abc-123"})
    assert answer.headers["X-Request-ID"] == "abc-123"
    assert answer.json() == {"seen": "abc-123"}


def test_invalid_id_is_replaced() -> None:
    with TestClient(_app()) as client:
        answer = client.get("/echo", headers={"X-Request-ID": "x" * 500})
    assert answer.headers["X-Request-ID"] != "x" * 500
    assert answer.json()["seen"] == answer.headers["X-Request-ID"]


def test_unhandled_error_is_a_json_500_with_the_id() -> None:
    with TestClient(_app(), raise_server_exceptions=False) as client:
        answer = client.get("/boom", headers={"X-Request-ID": "req-500"})
    assert answer.status_code == 500
    assert answer.headers["X-Request-ID"] == "req-500"
    assert answer.json() == {
        "error": {"code": "internal_error", "message": "Internal server error."},
        "correlation_id": "req-500",
    }


def test_context_does_not_leak_between_requests() -> None:
    with TestClient(_app()) as client:
        client.get("/echo", headers={"X-Request-ID": "first"})
        second = client.get("/echo")
    assert second.json()["seen"] != "first"
