"""What a worker process knows about the task it runs, and the worker's own lifecycle lines.

Per task run (prerun to postrun, in the pool process): when it started (for the failure
line's duration), its retry number, and whether this delivery was answered from the
completion record (then Celery's "succeeded" line is dropped, see worker/log_rewrite.py).
``task.started`` is logged by :func:`log_started` once the delivery guard counted the
delivery (worker/dedup.py), so every started line is one counted execution.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import Any

from celery import signals

from taskq.correlation import PUBLISHED_AT_HEADER
from taskq.logs.schema import Event

logger = logging.getLogger("taskq.celery")

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


def elapsed_ms(task_id: str) -> float | None:
    """Milliseconds since ``task_id`` started in this process, if it is running here."""
    started = _started_at.get(task_id)
    return None if started is None else round((time.time() - started) * 1000.0, 3)


def on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """Start the per-run state of ``task_id``."""
    if task_id is None or task is None:
        return
    retries_var.set(int(task.request.retries or 0))
    _duplicate_of.set(None)
    _started_at[task_id] = time.time()


def on_postrun(task_id: str | None = None, **_: Any) -> None:
    """Drop the per-run state of ``task_id``."""
    if task_id is not None:
        _started_at.pop(task_id, None)


def log_started(request: Any, deliveries: int | None) -> None:
    """Log ``task.started`` with the queue wait: the delivery was counted (``deliveries``,
    from the delivery guard) and the task's own code runs next."""
    now = time.time()
    published_at = getattr(request, PUBLISHED_AT_HEADER, None)
    delivery_info = getattr(request, "delivery_info", None) or {}
    extra: dict[str, Any] = {
        "event.action": Event.TASK_STARTED,
        "queue": delivery_info.get("routing_key"),
        "task.retries": int(request.retries or 0),
        "task.redelivered": bool(delivery_info.get("redelivered", False)),
        "task.deliveries": deliveries,
    }
    if isinstance(published_at, int | float):
        extra["queue_wait_ms"] = round(max(0.0, now - published_at) * 1000.0, 3)
    logger.info("task started", extra=extra)


def on_worker_ready(**_: Any) -> None:
    """Mark the moment a worker starts consuming (drill and dashboard marker)."""
    logger.info("worker ready", extra={"event.action": Event.WORKER_READY})


def on_worker_shutting_down(**_: Any) -> None:
    """Mark the start of a warm or cold shutdown."""
    logger.warning("worker shutting down", extra={"event.action": Event.WORKER_SHUTTING_DOWN})


def on_worker_shutdown(**_: Any) -> None:
    """Mark the end of a worker's life."""
    logger.warning("worker stopped", extra={"event.action": Event.WORKER_STOPPED})


def connect() -> None:
    """Connect the hooks (strong references)."""
    signals.task_prerun.connect(on_prerun, weak=False)
    signals.task_postrun.connect(on_postrun, weak=False)
    signals.worker_ready.connect(on_worker_ready, weak=False)
    signals.worker_shutting_down.connect(on_worker_shutting_down, weak=False)
    signals.worker_shutdown.connect(on_worker_shutdown, weak=False)
