"""Spans of the hops: begun and ended explicitly (hooks begin in one signal, end in another).

Invariant: :func:`begin_span` binds ``trace.id``/``span.id`` for the lines of its hop whether or
not spans are exported; with an exporter the ids are those of a real SDK span. Names,
kinds and attributes follow OpenTelemetry's semantic conventions: HTTP server spans
``{method} {route}``; messaging spans ``{operation} {destination}`` with
``messaging.operation.name`` ``publish`` (PRODUCER) and ``process`` (CONSUMER).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import Token
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from taskq.tracing import export
from taskq.tracing.context import (
    TraceParent,
    new_span_id,
    new_trace_id,
    span_id_var,
    trace_id_var,
    trace_state_var,
)

AttributeValue = str | bool | int | float


class Kind(Enum):
    """The span kinds taskq writes (values are the OpenTelemetry API's names)."""

    SERVER = "SERVER"
    PRODUCER = "PRODUCER"
    CONSUMER = "CONSUMER"


@dataclass
class ActiveSpan:
    """One begun span: its ids, the SDK span when exported, the context tokens to undo."""

    trace_id: str
    span_id: str
    flags: str
    state: str | None = None
    sdk_span: Any = None
    tokens: tuple[Token[str | None], Token[str | None], Token[str | None]] | None = None
    ended: bool = field(default=False)

    def traceparent(self) -> str:
        """The header that makes the next hop's span a child of this one."""
        return TraceParent(self.trace_id, self.span_id, self.flags).header()

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self.sdk_span is not None:
            self.sdk_span.set_attribute(key, value)

    def end(self, error_type: str | None = None) -> None:
        """End the span (an ``error.type`` sets its status to ERROR); unbind its ids."""
        if self.ended:
            return
        self.ended = True
        if self.sdk_span is not None:
            if error_type is not None:
                from opentelemetry.trace import Status, StatusCode

                self.sdk_span.set_attribute("error.type", error_type)
                self.sdk_span.set_status(Status(StatusCode.ERROR))
            self.sdk_span.end()
        if self.tokens is not None:
            span_token, trace_token, state_token = self.tokens
            trace_state_var.reset(state_token)
            span_id_var.reset(span_token)
            trace_id_var.reset(trace_token)
            self.tokens = None


def begin_span(
    name: str,
    kind: Kind,
    parent: TraceParent | None,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    trace_id: str | None = None,
    span_id: str | None = None,
    bind: bool = True,
) -> ActiveSpan:
    """Begin a span, child of ``parent`` (a remote caller's or a message's), or a root.

    ``trace_id`` (roots only) and ``span_id`` are taken when given: ids that lines written
    before the span began already carry. ``bind`` makes them this context's ids until
    :meth:`ActiveSpan.end`.
    """
    tracer = export.tracer()
    if tracer is None:
        active = ActiveSpan(
            parent.trace_id if parent else trace_id or new_trace_id(),
            span_id or new_span_id(),
            parent.flags if parent else "01",
        )
    else:
        active = _sdk_begin(tracer, name, kind, parent, attributes, trace_id, span_id)
    active.state = parent.state if parent else None
    if bind:
        active.tokens = (
            span_id_var.set(active.span_id),
            trace_id_var.set(active.trace_id),
            trace_state_var.set(active.state),
        )
    return active


def _sdk_begin(
    tracer: Any,
    name: str,
    kind: Kind,
    parent: TraceParent | None,
    attributes: Mapping[str, AttributeValue] | None,
    trace_id: str | None,
    span_id: str | None,
) -> ActiveSpan:
    from opentelemetry import trace

    context = None
    if parent is not None:
        remote = trace.SpanContext(
            int(parent.trace_id, 16),
            int(parent.span_id, 16),
            is_remote=True,
            trace_flags=trace.TraceFlags(int(parent.flags, 16)),
            trace_state=trace.TraceState.from_header([parent.state]) if parent.state else None,
        )
        context = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    span_token = export.chosen_span_id.set(int(span_id, 16) if span_id else None)
    trace_token = export.chosen_trace_id.set(int(trace_id, 16) if trace_id else None)
    try:
        span = tracer.start_span(
            name, context=context, kind=trace.SpanKind[kind.value], attributes=attributes
        )
    finally:
        export.chosen_trace_id.reset(trace_token)
        export.chosen_span_id.reset(span_token)
    ctx = span.get_span_context()
    return ActiveSpan(
        f"{ctx.trace_id:032x}",
        f"{ctx.span_id:016x}",
        f"{int(ctx.trace_flags) & 0xFF:02x}",
        sdk_span=span,
    )
