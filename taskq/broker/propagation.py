"""Celery hooks that carry the correlation id from publisher to worker.

On publish the id travels in the message *headers* (``x_correlation_id``), never in task
arguments, so it survives retries, child tasks and beat tasks without touching any task
signature. Before a task runs the worker restores it (and the delivery's attempt id) into
the context variables; after the task they are reset so nothing leaks into the next task
of the same process.

The same hooks make the message's OpenTelemetry spans (:mod:`taskq.tracing.messaging`):
``publish`` from before to after the publish, ``process`` from prerun to postrun; the
producer's ``traceparent`` travels in the headers beside the correlation id.

Nothing is connected on import: a publisher calls :func:`connect_publisher` (the API), a
worker :func:`connect_worker` (both directions: its tasks publish retries and children).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from contextvars import Token
from datetime import UTC, datetime
from typing import Any

from celery import signals

from taskq.broker.event_redaction import tag_correlation
from taskq.correlation import (
    ATTEMPT_HEADER,
    CELERY_HEADER,
    PUBLISHED_AT_HEADER,
    attempt_id_var,
    correlation_id_var,
    new_id,
    task_id_var,
    task_name_var,
)
from taskq.logs.schema import Event
from taskq.tracing import messaging
from taskq.tracing.spans import ActiveSpan

logger = logging.getLogger("taskq.celery")

_tokens: dict[str, tuple[Token[str | None], ...]] = {}
#: Producer spans between before_ and after_task_publish, by task id. Bounded: a publish
#: that raised never reaches after_task_publish (its span is dropped unended).
_publishing: OrderedDict[str, ActiveSpan] = OrderedDict()
_MAX_PUBLISHING = 1024
#: The running attempt's process span, by task id (prerun to postrun).
_processing: dict[str, ActiveSpan] = {}


def stamp_headers(headers: dict[str, Any]) -> str:
    """Put the current (or a new) correlation id and the publish time into ``headers``, and
    the id in front of ``argsrepr`` (what Flower shows as the task's args)."""
    correlation_id = headers.get(CELERY_HEADER) or correlation_id_var.get() or new_id()
    headers[CELERY_HEADER] = correlation_id
    headers[PUBLISHED_AT_HEADER] = time.time()
    if isinstance(headers.get("argsrepr"), str):
        headers["argsrepr"] = tag_correlation(headers["argsrepr"], str(correlation_id))
    return str(correlation_id)


def on_before_publish(
    headers: dict[str, Any] | None = None, routing_key: str | None = None, **_: Any
) -> None:
    """Stamp every outgoing message: API submissions, retries, child and beat tasks; begin
    its publish span and put the span's ``traceparent`` in its headers."""
    if headers is None:
        return
    stamp_headers(headers)
    span = messaging.begin_publish(headers, routing_key)
    messaging.stamp(headers, span)
    task_id = str(headers.get("id"))
    _publishing[task_id] = span
    while len(_publishing) > _MAX_PUBLISHING:
        _publishing.popitem(last=False)


def on_after_publish(
    headers: dict[str, Any] | None = None, routing_key: str | None = None, **_: Any
) -> None:
    """Log one ``task.published`` line per message the broker accepted."""
    if headers is None:
        return
    span = _publishing.pop(str(headers.get("id")), None)
    log_published(headers, routing_key, span)
    if span is not None:
        span.end()


def log_published(
    headers: dict[str, Any], routing_key: str | None, span: ActiveSpan | None = None
) -> None:
    """The ``task.published`` line of one message (also written by the API's own publisher,
    :mod:`taskq.broker.fast_publish`, which bypasses Celery's signals), with the ids of its
    publish span."""
    if not logger.isEnabledFor(logging.INFO):
        return
    ids = _span_ids(headers, span)
    logger.info(
        "task published",
        extra={
            "event.action": Event.TASK_PUBLISHED,
            "correlation_id": headers.get(CELERY_HEADER),
            "task_id": headers.get("id"),
            "task_name": headers.get("task"),
            "queue": routing_key,
            "task.retries": int(headers.get("retries") or 0),
            **_published_at(headers.get(PUBLISHED_AT_HEADER)),
            **_parent_of(headers.get("id")),
            **ids,
        },
    )


def _published_at(stamp: Any) -> dict[str, str]:
    """``task.published_at`` from the message's own stamp (epoch seconds), if it has one."""
    if not isinstance(stamp, int | float) or isinstance(stamp, bool):
        return {}
    return {"task.published_at": datetime.fromtimestamp(stamp, UTC).isoformat()}


def _span_ids(headers: dict[str, Any], span: ActiveSpan | None) -> dict[str, str]:
    if span is not None:
        return {"trace.id": span.trace_id, "span.id": span.span_id}
    return messaging.message_ids(headers)


def _parent_of(task_id: Any) -> dict[str, str]:
    """``parent_task_id`` when a task publishes another task (not its own retry)."""
    parent = task_id_var.get()
    return {"parent_task_id": parent} if parent and parent != task_id else {}


def on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """Restore the ids into the context before a task runs."""
    if task_id is None or task is None:
        return
    request = task.request
    correlation_id = getattr(request, CELERY_HEADER, None) or new_id()
    _tokens[task_id] = (
        correlation_id_var.set(correlation_id),
        task_id_var.set(task_id),
        task_name_var.set(task.name),
        attempt_id_var.set(getattr(request, ATTEMPT_HEADER, None)),
    )
    _processing[task_id] = messaging.begin_process(
        request, task_id, task.name, getattr(request, ATTEMPT_HEADER, None)
    )


def on_postrun(
    task_id: str | None = None, state: str | None = None, retval: Any = None, **_: Any
) -> None:
    """End the attempt's span; reset the context variables set by :func:`on_prerun`."""
    if task_id is None:
        return
    span = _processing.pop(task_id, None)
    if span is not None:
        if state:
            span.set_attribute("celery.state", state)
        span.end(type(retval).__name__ if state == "FAILURE" else None)
    tokens = _tokens.pop(task_id, None)
    if tokens is None:
        return
    correlation_token, task_token, name_token, attempt_token = tokens
    attempt_id_var.reset(attempt_token)
    task_name_var.reset(name_token)
    task_id_var.reset(task_token)
    correlation_id_var.reset(correlation_token)


def connect_publisher() -> None:
    """Stamp and log every message this process publishes. Idempotent; strong references
    (module functions, kept alive anyway)."""
    signals.before_task_publish.connect(on_before_publish, weak=False)
    signals.after_task_publish.connect(on_after_publish, weak=False)


def connect_worker() -> None:
    """:func:`connect_publisher`, plus restoring the ids around every task run."""
    connect_publisher()
    signals.task_prerun.connect(on_prerun, weak=False)
    signals.task_postrun.connect(on_postrun, weak=False)
