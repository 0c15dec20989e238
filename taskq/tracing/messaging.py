"""Producer and consumer spans of Celery messages (OpenTelemetry messaging conventions).

Invariant: a message carries W3C ``traceparent`` (and ``tracestate``) in its *headers*, the
producer span's; each delivery's ``process`` span is that span's child, so retries (published
from inside an attempt), child tasks, beat tasks and redeliveries (the same message again)
all stay in the trace. The keys are the W3C header names, which is what
opentelemetry-instrumentation-celery's propagator reads and writes too.

Both publish paths make the same span: Celery's ``before/after_task_publish`` hooks
(:mod:`taskq.broker.propagation`) and the API's own publisher, which bypasses those signals
(:mod:`taskq.broker.fast_publish`) and calls :func:`begin_publish` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskq.tracing.context import (
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
    TraceParent,
    parse_traceparent,
    span_id_var,
    trace_id_var,
    trace_state_var,
    valid_tracestate,
)
from taskq.tracing.spans import ActiveSpan, AttributeValue, Kind, begin_span

#: Request-dict keys (set by the worker's main process on arrival, never sent): the trace
#: and the span id the delivery's ``process`` span will have, so that the main process's
#: lines about the delivery ("received", a lost worker) carry them before the span exists.
TRACE_ID_FIELD = "x_trace_id"
SPAN_ID_FIELD = "x_span_id"
MESSAGING_SYSTEM = "redis"


def current_parent() -> TraceParent | None:
    """The span bound in this context (a request's, an attempt's), as a parent."""
    trace_id, span_id = trace_id_var.get(), span_id_var.get()
    if trace_id is None or span_id is None:
        return None
    return TraceParent(trace_id, span_id, state=trace_state_var.get())


def message_parent(headers: Any) -> TraceParent | None:
    """The parent a message names: its ``traceparent``, with its ``tracestate`` if valid.
    ``headers`` is a mapping (a message's headers) or Celery's request (its attributes)."""

    def get(key: str) -> Any:
        return headers.get(key) if isinstance(headers, Mapping) else getattr(headers, key, None)

    parent = parse_traceparent(get(TRACEPARENT_HEADER))
    if parent is None:
        return None
    state = valid_tracestate(get(TRACESTATE_HEADER))
    return TraceParent(parent.trace_id, parent.span_id, parent.flags, state)


def stamp(headers: dict[str, Any], span: ActiveSpan) -> None:
    """Put the span's ``traceparent`` (and the trace's ``tracestate``) into ``headers``."""
    headers[TRACEPARENT_HEADER] = span.traceparent()
    if span.state:
        headers[TRACESTATE_HEADER] = span.state
    else:
        headers.pop(TRACESTATE_HEADER, None)


def _attributes(
    operation: str, kind: str, queue: str | None, task_id: Any, task_name: Any
) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.name": operation,
        "messaging.operation.type": kind,
    }
    if queue:
        attrs["messaging.destination.name"] = queue
    if task_id:
        attrs["messaging.message.id"] = str(task_id)
    if task_name:
        attrs["celery.task_name"] = str(task_name)
    return attrs


def begin_publish(headers: Mapping[str, Any], queue: str | None) -> ActiveSpan:
    """The ``publish`` span of one message, child of the current span, else of the
    message's own ``traceparent`` (a message republished outside any context), else a
    root (beat's periodic tasks). Not bound: the publishing context keeps its span."""
    parent = current_parent() or message_parent(headers)
    attrs = _attributes("publish", "send", queue, headers.get("id"), headers.get("task"))
    if headers.get("retries"):
        attrs["celery.retries"] = int(headers["retries"])
    return begin_span(f"publish {queue or ''}".strip(), Kind.PRODUCER, parent, attrs, bind=False)


def begin_process(request: Any, task_id: str, task_name: str, attempt_id: str | None) -> ActiveSpan:
    """The ``process`` span of one delivery, bound for the lines of the attempt."""
    parent = message_parent(request)
    queue = (getattr(request, "delivery_info", None) or {}).get("routing_key")
    attrs = _attributes("process", "process", queue, task_id, task_name)
    attrs["celery.retries"] = int(getattr(request, "retries", None) or 0)
    redelivered = bool((getattr(request, "delivery_info", None) or {}).get("redelivered"))
    attrs["taskq.redelivered"] = redelivered
    if attempt_id:
        attrs["taskq.attempt_id"] = attempt_id
    return begin_span(
        f"process {queue or ''}".strip(),
        Kind.CONSUMER,
        parent,
        attrs,
        trace_id=getattr(request, TRACE_ID_FIELD, None),
        span_id=getattr(request, SPAN_ID_FIELD, None),
    )


def message_ids(headers: Mapping[str, Any]) -> dict[str, str]:
    """``trace.id`` and ``span.id`` (its publish span's) of a message, for a line about the
    message written outside any attempt (the broker restoring it); empty without any."""
    parent = parse_traceparent(headers.get(TRACEPARENT_HEADER))
    return {"trace.id": parent.trace_id, "span.id": parent.span_id} if parent else {}
