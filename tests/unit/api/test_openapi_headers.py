"""The generated OpenAPI document declares the headers the API reads and sets."""

from __future__ import annotations

from typing import Any

import pytest

from api.main import create_app
from taskq.settings import Settings


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    document: dict[str, Any] = create_app(Settings(redis_url="redis://127.0.0.1:1/0")).openapi()
    return document


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


def _resolve(schema: dict[str, Any], header: dict[str, Any]) -> dict[str, Any]:
    ref = header.get("$ref")
    if ref is None:
        return header
    resolved: dict[str, Any] = schema["components"]["headers"][ref.rsplit("/", 1)[-1]]
    return resolved


def test_every_operation_takes_x_request_id_as_an_optional_header(
    schema: dict[str, Any],
) -> None:
    operations = _operations(schema)
    assert len(operations) >= 6
    for path, method, operation in operations:
        params = [p for p in operation["parameters"] if p["name"] == "X-Request-ID"]
        assert len(params) == 1, f"{method} {path}"
        assert params[0]["in"] == "header" and params[0]["required"] is False
        assert params[0]["schema"]["pattern"] == r"^[A-Za-z0-9._:-]{1,128}$"


def test_submit_declares_idempotency_key_and_request_id(schema: dict[str, Any]) -> None:
    operation = schema["paths"]["/api/v1/tasks"]["post"]
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert {"Idempotency-Key", "X-Request-ID"} <= headers


def test_every_response_declares_x_request_id(schema: dict[str, Any]) -> None:
    for path, method, operation in _operations(schema):
        for status, response in operation["responses"].items():
            header = _resolve(schema, response["headers"]["X-Request-ID"])
            assert header["schema"]["type"] == "string", f"{method} {path} {status}"


def test_submit_202_declares_location_and_idempotent_replayed(schema: dict[str, Any]) -> None:
    headers = schema["paths"]["/api/v1/tasks"]["post"]["responses"]["202"]["headers"]
    assert _resolve(schema, headers["Location"])["schema"]["type"] == "string"
    assert _resolve(schema, headers["Idempotent-Replayed"])["schema"]["enum"] == ["true"]
    assert 'rel="related"' in _resolve(schema, headers["Link"])["description"]


def test_retry_after_on_429_503_and_the_submit_409(schema: dict[str, Any]) -> None:
    responses = schema["paths"]["/api/v1/tasks"]["post"]["responses"]
    for status in ("409", "429", "503"):
        header = _resolve(schema, responses[status]["headers"]["Retry-After"])
        assert header["schema"]["type"] == "integer", status
    assert "Retry-After" not in responses["202"]["headers"]
    readiness = schema["paths"]["/readyz"]["get"]["responses"]["503"]["headers"]
    assert "Retry-After" in readiness


def test_docs_routes_and_metrics_stay_out_of_the_document(schema: dict[str, Any]) -> None:
    assert not {"/docs", "/redoc", "/metrics"} & set(schema["paths"])
