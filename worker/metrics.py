"""Prometheus metrics of a Celery worker, served by the worker's main process.

Why the main process: with the prefork pool the tasks run in child processes, but every
outcome passes through the main process (the request object there sends the task events
and handles results, time limits and lost children). Counting there needs no
multiprocess mode (which has no custom collectors and needs its directory wiped at
start). Each worker serves its own ``/metrics`` on ``TASKQ_WORKER_METRICS_PORT`` (the
local stack gives worker i the port ``TASKQ_WORKER_METRICS_BASE_PORT + i - 1``); the
``up`` series of that scrape, and ``taskq_worker_up``, say which workers live.

The hooks are called by :class:`worker.traced_request.TracedRequest` whether or not
Celery's events are enabled.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from taskq.logs.schema import Event
from taskq.process_metrics import add_standard_collectors

logger = logging.getLogger("taskq.worker.metrics")

#: This worker's series and the standard process, platform and GC ones.
REGISTRY = add_standard_collectors(CollectorRegistry(auto_describe=True))
#: Task states counted, by the event that reports them.
EVENT_STATES = {
    "task-started": "STARTED",
    "task-succeeded": "SUCCESS",
    "task-failed": "FAILURE",
    "task-retried": "RETRY",
    "task-revoked": "REVOKED",
    "task-rejected": "REJECTED",
}
_RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

TASKS = Counter(
    "taskq_worker_tasks",
    "Tasks seen by this worker, by task name and state (RECEIVED, STARTED, SUCCESS, "
    "FAILURE, RETRY, REVOKED, REJECTED).",
    ["task_name", "state"],
    registry=REGISTRY,
)
REDELIVERIES = Counter(
    "taskq_worker_redeliveries",
    "Messages received again after a worker lost them (kombu's redelivered flag).",
    ["task_name"],
    registry=REGISTRY,
)
RUNTIME = Histogram(
    "taskq_worker_task_runtime_seconds",
    "Execution time of successful tasks.",
    ["task_name"],
    buckets=_RUNTIME_BUCKETS,
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "taskq_worker_task_queue_wait_seconds",
    "From the publish (x_published_at header) to the start of an attempt.",
    ["task_name"],
    buckets=_WAIT_BUCKETS,
    registry=REGISTRY,
)
UP = Gauge("taskq_worker_up", "1 while this worker consumes.", registry=REGISTRY)


def task_received(task_name: str, redelivered: bool) -> None:
    """A message arrived in this worker."""
    TASKS.labels(task_name, "RECEIVED").inc()
    if redelivered:
        REDELIVERIES.labels(task_name).inc()


def task_event(
    event_type: str, task_name: str, fields: dict[str, Any], published_at: Any = None
) -> None:
    """A task event this worker sends (whether or not events are on)."""
    state = EVENT_STATES.get(event_type)
    if state is None:
        return
    TASKS.labels(task_name, state).inc()
    if event_type == "task-succeeded" and isinstance(fields.get("runtime"), int | float):
        RUNTIME.labels(task_name).observe(float(fields["runtime"]))
    elif event_type == "task-started" and isinstance(published_at, int | float):
        QUEUE_WAIT.labels(task_name).observe(max(0.0, time.time() - float(published_at)))


def serve(port: int, host: str) -> None:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread (0: do nothing)."""
    if port <= 0:
        return
    try:
        start_http_server(port, addr=host, registry=REGISTRY)
    except OSError:
        logger.exception(
            "metrics endpoint not started", extra={"event.action": Event.METRICS_FAILED}
        )
        return
    UP.set(1)
    logger.info("metrics endpoint started", extra={"event.action": Event.METRICS_STARTED})
