"""Correlation middleware: pure ASGI, installed outermost.

For every HTTP request it resolves the correlation id (keep a valid ``X-Request-ID``,
generate one when absent, replace an invalid one) and the exchange id (nginx's
``X-Exchange-ID``, else a new one), binds both to the context for the request's lifetime,
echoes the correlation id in the response header, writes one ``http.request.completed``
line (at DEBUG for a successful probe, :data:`QUIET_PATHS`), and turns an unhandled exception
into a JSON 500 that still carries the header (Starlette's own 500 would be sent outside of
this layer).

The line of an error answer carries ``error.type``: the ``error.code`` of the JSON body the
client received, read from that body, so the log says exactly what the client was told
whichever layer produced it. An HTML error page (the browser UI's) names its code in the
``X-Error-Code`` header it sends (:data:`ERROR_CODE_HEADER`). A request on a task's URL
carries that ``task_id``.

It also begins the request's HTTP server span (:mod:`api.server_span`): every line written
while serving the request carries its ``trace.id`` and ``span.id``.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import server_span
from api.errors import error_body
from taskq.correlation import (
    EXCHANGE_ID_HEADER,
    REQUEST_ID_HEADER,
    correlation_id_var,
    exchange_id_var,
    is_valid_id,
    new_id,
    resolve_id,
)
from taskq.logs.schema import Event
from taskq.tenants import key_id_var

logger = logging.getLogger("taskq.api.http")

_HEADER_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")
_EXCHANGE_KEY = EXCHANGE_ID_HEADER.lower().encode("latin-1")
_MAX_HEADER_BYTES = 1024
#: The stack's own probes: their successful answers are logged at DEBUG, not INFO.
QUIET_PATHS = frozenset({"/healthz", "/readyz"})


class CorrelationMiddleware:
    """See module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        correlation_id, source = resolve_id(_header_value(scope, _HEADER_KEY))
        exchange = _header_value(scope, _EXCHANGE_KEY)
        token = correlation_id_var.set(correlation_id)
        # Set by the API-key check once the key is known; none before (or without keys).
        key_token = key_id_var.set(None)
        exchange_token = exchange_id_var.set(
            exchange if exchange is not None and is_valid_id(exchange) else new_id()
        )
        span, trace_source = server_span.begin(scope)
        # Wall clock for event.start (the clock of the message's publish stamp), the
        # monotonic one for the duration.
        started_at, started = time.time(), time.perf_counter()
        state: dict[str, Any] = {"status": 500, "started": False, "bytes": 0, "error": None}
        header = (_HEADER_KEY, correlation_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                state["error"] = _header_code(message.get("headers", []))
                headers = [h for h in message.get("headers", []) if h[0].lower() != _HEADER_KEY]
                message = {**message, "headers": [*headers, header]}
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if state["status"] >= 400 and state["bytes"] == 0 and state["error"] is None:
                    state["error"] = error_code_of(body)
                state["bytes"] += len(body)
            await send(message)

        try:
            if source == "replaced":
                logger.warning(
                    "invalid request id replaced",
                    extra={
                        "event.action": Event.CORRELATION_ID_REPLACED,
                        "correlation_id_source": source,
                    },
                )
            if trace_source == "replaced":
                logger.warning(
                    "invalid traceparent replaced",
                    extra={
                        "event.action": Event.TRACE_CONTEXT_REPLACED,
                        "trace_context_source": trace_source,
                    },
                )
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception(
                "unhandled error",
                extra={"event.action": Event.HTTP_FAILED, "url.path": scope.get("path")},
            )
            if not state["started"]:
                await _send_internal_error(send_with_id)
        finally:
            _log_request(scope, state, started_at, started, source, trace_source)
            server_span.end(span, scope, state["status"], state["error"])
            key_id_var.reset(key_token)
            exchange_id_var.reset(exchange_token)
            correlation_id_var.reset(token)


#: The code of an error answer whose body is not taskq's JSON (an HTML page).
ERROR_CODE_HEADER = "X-Error-Code"
_ERROR_CODE_KEY = ERROR_CODE_HEADER.lower().encode("latin-1")


def _header_code(headers: Any) -> str | None:
    for key, value in headers:
        if key.lower() == _ERROR_CODE_KEY:
            code = value.decode("latin-1")
            return code if is_valid_id(code) else None
    return None


def error_code_of(body: bytes) -> str:
    """``error.code`` of an error body (taskq's JSON shape), else ``http_error``."""
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return "http_error"
    return code if isinstance(code, str) and is_valid_id(code) else "http_error"


def _header_value(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            if len(value) > _MAX_HEADER_BYTES:
                return "\n"  # certainly invalid; never decoded or logged
            return str(value.decode("latin-1"))
    return None


async def _send_internal_error(send: Send) -> None:
    body = json.dumps(error_body("internal_error", "Internal server error.")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _log_request(
    scope: Scope,
    state: dict[str, Any],
    started_at: float,
    started: float,
    source: str,
    trace_source: str,
) -> None:
    route = scope.get("route")
    client = scope.get("client")
    status = int(state["status"])
    level = logging.ERROR if status >= 500 else logging.INFO
    if status < 400 and scope.get("path") in QUIET_PATHS:
        level = logging.DEBUG  # an answered probe is no news (nginx skips its line too)
    if not logger.isEnabledFor(level):
        return
    task_id = (scope.get("path_params") or {}).get("task_id")
    logger.log(
        level,
        "request completed",
        extra={
            "error.type": state["error"] if status >= 400 else None,
            "task_id": task_id if isinstance(task_id, str) and is_valid_id(task_id) else None,
            "event.action": Event.HTTP_COMPLETED,
            "http.request.method": scope.get("method"),
            "url.path": scope.get("path"),
            "http.route": getattr(route, "path", None),
            "http.response.status_code": status,
            "http.response.body.bytes": int(state["bytes"]),
            "event.start": datetime.fromtimestamp(started_at, UTC).isoformat(),
            "duration_ms": round((time.perf_counter() - started) * 1000.0, 3),
            "client.address": client[0] if client else None,
            "correlation_id_source": source,
            "trace_context_source": trace_source,
        },
    )
