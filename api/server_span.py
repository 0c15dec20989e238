"""The HTTP server span of one request (OpenTelemetry HTTP semantic conventions).

Invariant: the span continues the caller's W3C trace (``traceparent``, validated by
:mod:`taskq.tracing.context`), else the trace nginx started for the request (its
``X-Trace-ID``), else a new one; its span id is the one nginx wrote on its line for the
same exchange (the first 16 hex of ``X-Exchange-ID``, nginx's ``$request_id``), so the two
lines of one exchange share ``span.id``.
"""

from __future__ import annotations

import re

from starlette.types import Scope

from taskq.tracing.context import (
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
    TraceParent,
    TraceSource,
    resolve_traceparent,
    valid_tracestate,
)
from taskq.tracing.spans import ActiveSpan, Kind, begin_span

_TRACEPARENT_KEY = TRACEPARENT_HEADER.encode("latin-1")
_TRACESTATE_KEY = TRACESTATE_HEADER.encode("latin-1")
_TRACE_ID_KEY = b"x-trace-id"
_EXCHANGE_KEY = b"x-exchange-id"
_HEX32 = re.compile(r"[0-9a-f]{32}")
_MAX_HEADER_BYTES = 512


def _headers(scope: Scope) -> dict[bytes, bytes]:
    wanted = (_TRACEPARENT_KEY, _TRACESTATE_KEY, _TRACE_ID_KEY, _EXCHANGE_KEY)
    found: dict[bytes, bytes] = {}
    for key, value in scope.get("headers", []):
        if key in wanted:
            found[key] = value if len(value) <= _MAX_HEADER_BYTES else b"\n"
    return found


def _hex32(value: bytes | None) -> str | None:
    text = value.decode("latin-1") if value is not None else None
    return text if text is not None and _HEX32.fullmatch(text) else None


def begin(scope: Scope) -> tuple[ActiveSpan, TraceSource]:
    """Begin the request's server span; where its trace came from."""
    headers = _headers(scope)
    raw = headers.get(_TRACEPARENT_KEY)
    parent, source = resolve_traceparent(raw.decode("latin-1") if raw is not None else None)
    exchange = _hex32(headers.get(_EXCHANGE_KEY))
    attributes = {
        "http.request.method": str(scope.get("method", "")),
        "url.path": str(scope.get("path", "")),
    }
    if source == "client":
        # §3.3: tracestate only beside a valid traceparent.
        state = headers.get(_TRACESTATE_KEY)
        if state is not None:
            valid = valid_tracestate(state.decode("latin-1"))
            parent = TraceParent(parent.trace_id, parent.span_id, parent.flags, valid)
        return begin_span(
            str(scope.get("method", "HTTP")),
            Kind.SERVER,
            parent,
            attributes,
            span_id=exchange[:16] if exchange else None,
        ), source
    # No caller span: this span is the trace's root, on the trace id nginx put on its line.
    return begin_span(
        str(scope.get("method", "HTTP")),
        Kind.SERVER,
        None,
        attributes,
        trace_id=_hex32(headers.get(_TRACE_ID_KEY)) or parent.trace_id,
        span_id=exchange[:16] if exchange else None,
    ), source


def end(span: ActiveSpan, scope: Scope, status: int, error_type: str | None) -> None:
    """End the span: named ``{method} {route}`` once routing knows the route."""
    if span.sdk_span is not None:
        route = getattr(scope.get("route"), "path", None)
        if route:
            span.sdk_span.update_name(f"{scope.get('method', 'HTTP')} {route}")
            span.sdk_span.set_attribute("http.route", route)
        span.sdk_span.set_attribute("http.response.status_code", status)
    span.end(error_type if status >= 500 else None)
