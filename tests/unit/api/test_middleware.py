"""CorrelationMiddleware on a tiny app: echo, replacement, and a 500 that keeps the header."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.testclient import TestClient

from api.errors import install_error_handlers
from api.middleware import ERROR_CODE_HEADER, CorrelationMiddleware
from taskq.correlation import correlation_id_var
from taskq.logs.schema import SHED_ERROR_CODES, Event
from tests.unit.log_capture import CapturedLogs


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


def test_an_html_error_page_is_logged_with_the_code_it_names() -> None:
    """The access line's error.type is what the client was told: for an HTML page (the
    browser UI's 503s), the code in its X-Error-Code header; without one, http_error."""
    app = FastAPI()

    @app.get("/busy")
    async def busy() -> HTMLResponse:
        return HTMLResponse("<p>Busy</p>", 503, headers={ERROR_CODE_HEADER: "search_busy"})

    @app.get("/plain")
    async def plain() -> HTMLResponse:
        return HTMLResponse("<p>Down</p>", 503)

    app.add_middleware(CorrelationMiddleware)
    logs = CapturedLogs("taskq.api.http")
    try:
        with TestClient(app) as client:
            assert client.get("/busy").status_code == 503
            assert client.get("/plain").status_code == 503
        lines = [x for x in logs.lines() if x["event.action"] == Event.HTTP_COMPLETED]
    finally:
        logs.close()
    assert [(x["url.path"], x["error.type"]) for x in lines] == [
        ("/busy", "search_busy"),
        ("/plain", "http_error"),
    ]


def test_the_ui_names_the_code_of_its_503_page() -> None:
    from api.routes.ui import _failure
    from taskq.search.store.base import LogStoreError
    from taskq.settings import Settings

    page = _failure(LogStoreError("no log directory"), Settings())
    assert page.status_code == 503
    assert SHED_ERROR_CODES[page.headers[ERROR_CODE_HEADER]] == 503
