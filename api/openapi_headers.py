"""Headers the routes cannot declare themselves, added to the generated OpenAPI document.

``X-Request-ID`` is read by the correlation middleware (api/middleware.py) for every
request, not by a route parameter: a route parameter would let FastAPI reject an invalid
id with 422, while the contract is to replace it. So it is declared here, as an optional
header parameter of every operation and a header of every response. The same goes for the
response headers the handlers set on a ``Response`` (``Location``, ``Link``,
``Idempotent-Replayed``) or that error paths add (``Retry-After``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from api import idempotency
from taskq.correlation import REQUEST_ID_HEADER

SUBMIT_PATH = "/api/v1/tasks"
_HEADER_REF = "#/components/headers/"
RETRY_AFTER_STATUSES = ("429", "503")

REQUEST_ID_PARAMETER: dict[str, Any] = {
    "name": REQUEST_ID_HEADER,
    "in": "header",
    "required": False,
    "description": "Correlation id of this request, echoed in the response and carried by "
    "every log line about it. Absent: one is generated; not matching the pattern: it is "
    "replaced (never rejected).",
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,128}$", "maxLength": 128},
}

COMPONENT_HEADERS: dict[str, dict[str, Any]] = {
    REQUEST_ID_HEADER: {
        "description": "The request's correlation id: the client's, or the one generated "
        "for it. Search the logs for it (`taskq trace <id>`).",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Location": {
        "description": "The task's status URL.",
        "schema": {"type": "string"},
    },
    "Link": {
        "description": 'The request\'s trace page: `</ui/traces/{correlation_id}>; rel="related"; '
        'title="trace"` (RFC 8288); the same URL as the body\'s `trace_url`.',
        "schema": {"type": "string"},
    },
    idempotency.REPLAY_HEADER: {
        "description": "`true` when this is the stored answer to an earlier request with "
        "the same Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
}


def add_headers(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the headers to ``schema`` (an OpenAPI document) in place and return it."""
    components = schema.setdefault("components", {})
    components.setdefault("headers", {}).update(COMPONENT_HEADERS)
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            parameters = operation.setdefault("parameters", [])
            if not any(p.get("name") == REQUEST_ID_HEADER for p in parameters):
                parameters.append(dict(REQUEST_ID_PARAMETER))
            submit = path == SUBMIT_PATH and method == "post"
            for status, response in operation["responses"].items():
                headers = response.setdefault("headers", {})
                headers[REQUEST_ID_HEADER] = {"$ref": _HEADER_REF + REQUEST_ID_HEADER}
                if status in RETRY_AFTER_STATUSES or (submit and status == "409"):
                    headers["Retry-After"] = {"$ref": _HEADER_REF + "Retry-After"}
                if submit and status == "202":
                    headers["Location"] = {"$ref": _HEADER_REF + "Location"}
                    headers["Link"] = {"$ref": _HEADER_REF + "Link"}
                    headers[idempotency.REPLAY_HEADER] = {
                        "$ref": _HEADER_REF + idempotency.REPLAY_HEADER
                    }
    return schema


def install_openapi_headers(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the document with the headers added (built once)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_headers(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
