"""Celery request class for the worker's main process.

The main process receives messages and handles their outcome when a pool child reports
back or dies: "received", revocations, time limits, lost-worker failures are logged there,
outside any task context. This class remembers each message's correlation id on arrival
(for the "received" line, see :mod:`worker.log_rewrite`) and binds the task's ids around the
outcome handlers, so their lines carry them too.

Every event it sends is counted for the worker's Prometheus metrics
(:mod:`worker.metrics`) and leaves with results, exception texts and tracebacks
redacted (:mod:`taskq.broker.event_redaction`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery.worker.request import Request

from taskq.broker.delivery.guard import REQUEST_TAG_FIELD
from taskq.broker.event_redaction import redact_event_fields
from taskq.correlation import (
    ATTEMPT_HEADER,
    CELERY_HEADER,
    PUBLISHED_AT_HEADER,
    bound_task_context,
    new_attempt_id,
)
from taskq.tracing.context import (
    TRACEPARENT_HEADER,
    bound_trace,
    new_span_id,
    new_trace_id,
    parse_traceparent,
)
from taskq.tracing.messaging import SPAN_ID_FIELD, TRACE_ID_FIELD
from worker import metrics
from worker.log_rewrite import Delivery, remember


class TracedRequest(Request):  # type: ignore[misc]
    """A :class:`celery.worker.request.Request` that keeps its ids on its log lines.

    Each delivery gets a fresh attempt id, carried to the pool process in the request dict
    (Celery hands that dict to the child, where it becomes ``task.request``), so every
    line of one execution names it whichever process writes it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._correlation_id: str | None = self.request_dict.get(CELERY_HEADER)
        self._attempt_id = new_attempt_id()
        self.request_dict[ATTEMPT_HEADER] = self._attempt_id
        # The execution guard's run lease names the delivery it belongs to.
        self.request_dict[REQUEST_TAG_FIELD] = str(getattr(self.message, "delivery_tag", ""))
        # The trace of the message (a new one for a message that carries none) and the span
        # id its ``process`` span will take in the pool child: the lines written here about
        # this delivery carry them too.
        parent = parse_traceparent(self.request_dict.get(TRACEPARENT_HEADER))
        self._trace_id = parent.trace_id if parent else new_trace_id()
        self._span_id = new_span_id()
        self.request_dict[TRACE_ID_FIELD] = self._trace_id
        self.request_dict[SPAN_ID_FIELD] = self._span_id
        retries = int(self.request_dict.get("retries") or 0)
        remember(
            self.id,
            Delivery(
                self._correlation_id, self._attempt_id, retries, self._trace_id, self._span_id
            ),
        )
        redelivered = bool((self.delivery_info or {}).get("redelivered"))
        metrics.task_received(self.name, redelivered)

    def send_event(self, type: str, **fields: Any) -> None:
        published_at = self.request_dict.get(PUBLISHED_AT_HEADER)
        metrics.task_event(type, self.name, fields, published_at)
        super().send_event(type, **redact_event_fields(type, fields))

    def on_failure(self, *args: Any, **kwargs: Any) -> Any:
        with self._bound():
            return super().on_failure(*args, **kwargs)

    def on_timeout(self, *args: Any, **kwargs: Any) -> Any:
        with self._bound():
            return super().on_timeout(*args, **kwargs)

    def on_retry(self, *args: Any, **kwargs: Any) -> Any:
        with self._bound():
            return super().on_retry(*args, **kwargs)

    def on_success(self, *args: Any, **kwargs: Any) -> Any:
        with self._bound():
            return super().on_success(*args, **kwargs)

    @contextmanager
    def _bound(self) -> Iterator[None]:
        """The delivery's ids, for the lines of an outcome handled in the main process."""
        with (
            bound_task_context(self._correlation_id, self.id, self.name, self._attempt_id),
            bound_trace(self._trace_id, self._span_id),
        ):
            yield
