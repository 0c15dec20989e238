"""Celery hooks that carry the correlation id from publisher to worker.

On publish the id travels in the message *headers* (``x_correlation_id``), never in task
arguments, so it survives retries, child tasks and beat tasks without touching any task
signature. Before a task runs the worker restores it into the context variables; after
the task they are reset so nothing leaks into the next task of the same process.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar, Token
from typing import Any

from celery import signals

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

logger = logging.getLogger("taskq.celery")

_tokens: dict[str, tuple[Token[str | None], ...]] = {}
_started_at: dict[str, float] = {}
#: Retry number of the task running in this process.
retries_var: ContextVar[int] = ContextVar("retries", default=0)
#: Task id whose current delivery was answered from its completion record.
_duplicate_of: ContextVar[str | None] = ContextVar("duplicate_of", default=None)


def mark_duplicate(task_id: str) -> None:
    """The running delivery of ``task_id`` is a suppressed duplicate (no success line)."""
    _duplicate_of.set(task_id)


def is_duplicate(task_id: str) -> bool:
    """True when the running delivery of ``task_id`` was marked by :func:`mark_duplicate`."""
    return _duplicate_of.get() == task_id


def stamp_headers(headers: dict[str, Any]) -> str:
    """Put the current (or a new) correlation id and the publish time into ``headers``."""
    correlation_id = headers.get(CELERY_HEADER) or correlation_id_var.get() or new_id()
    headers[CELERY_HEADER] = correlation_id
    headers[PUBLISHED_AT_HEADER] = time.time()
    return str(correlation_id)


def on_before_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Stamp every outgoing message: API submissions, retries, child and beat tasks."""
    if headers is not None:
        stamp_headers(headers)


def on_after_publish(
    headers: dict[str, Any] | None = None, routing_key: str | None = None, **_: Any
) -> None:
    """Log one ``task.published`` line per message the broker accepted."""
    if headers is None:
        return
    logger.info(
        "task published",
        extra={
            "event.action": "task.published",
            "correlation_id": headers.get(CELERY_HEADER),
            "task_id": headers.get("id"),
            "task_name": headers.get("task"),
            "queue": routing_key,
            "task.retries": int(headers.get("retries") or 0),
            **_parent_of(headers.get("id")),
        },
    )


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
    retries_var.set(int(request.retries or 0))
    _duplicate_of.set(None)
    _started_at[task_id] = time.time()


def log_started(request: Any, deliveries: int | None) -> None:
    """Log ``task.started`` with the queue wait: the delivery was counted (``deliveries``,
    from the delivery guard) and the task's own code runs next. Logged there, not at
    prerun, so that a started line always means a counted execution."""
    now = time.time()
    published_at = getattr(request, PUBLISHED_AT_HEADER, None)
    delivery_info = getattr(request, "delivery_info", None) or {}
    extra: dict[str, Any] = {
        "event.action": "task.started",
        "queue": delivery_info.get("routing_key"),
        "task.retries": int(request.retries or 0),
        "task.redelivered": bool(delivery_info.get("redelivered", False)),
        "task.deliveries": deliveries,
    }
    if isinstance(published_at, int | float):
        extra["queue_wait_ms"] = round(max(0.0, now - published_at) * 1000.0, 3)
    logger.info("task started", extra=extra)


def on_postrun(task_id: str | None = None, **_: Any) -> None:
    """Reset the context variables set by :func:`on_prerun`."""
    if task_id is None:
        return
    _started_at.pop(task_id, None)
    tokens = _tokens.pop(task_id, None)
    if tokens is None:
        return
    correlation_token, task_token, name_token, attempt_token = tokens
    attempt_id_var.reset(attempt_token)
    task_name_var.reset(name_token)
    task_id_var.reset(task_token)
    correlation_id_var.reset(correlation_token)


def elapsed_ms(task_id: str) -> float | None:
    """Milliseconds since ``task_id`` started in this process, if it is running here."""
    started = _started_at.get(task_id)
    return None if started is None else round((time.time() - started) * 1000.0, 3)


def on_worker_ready(**_: Any) -> None:
    """Mark the moment a worker starts consuming (drill and dashboard marker)."""
    logger.info("worker ready", extra={"event.action": "worker.ready"})


def on_worker_shutting_down(**_: Any) -> None:
    """Mark the start of a warm or cold shutdown."""
    logger.warning("worker shutting down", extra={"event.action": "worker.shutting_down"})


def on_worker_shutdown(**_: Any) -> None:
    """Mark the end of a worker's life."""
    logger.warning("worker stopped", extra={"event.action": "worker.stopped"})


def connect() -> None:
    """Connect the hooks (strong references: they are module functions, kept alive anyway)."""
    signals.before_task_publish.connect(on_before_publish, weak=False)
    signals.after_task_publish.connect(on_after_publish, weak=False)
    signals.task_prerun.connect(on_prerun, weak=False)
    signals.task_postrun.connect(on_postrun, weak=False)
    signals.worker_ready.connect(on_worker_ready, weak=False)
    signals.worker_shutting_down.connect(on_worker_shutting_down, weak=False)
    signals.worker_shutdown.connect(on_worker_shutdown, weak=False)
