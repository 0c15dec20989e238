"""The worker's Celery application: the shared configuration (taskq/broker/app.py) plus
the task class, the task modules, the delivery contract's wiring and the worker's logging.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, Task
from celery.signals import setup_logging, worker_process_shutdown, worker_ready
from celery.states import STARTED

from taskq.broker import propagation
from taskq.broker.app import create_celery_app
from taskq.broker.delivery.guard import REQUEST_TAG_FIELD, ExecutionGuard
from taskq.logs.setup import configure_logging
from taskq.settings import Settings, get_settings
from taskq.tracing import export as tracing_export
from worker import delivery_wiring, metrics, task_lifecycle
from worker.dedup import run_guarded
from worker.log_rewrite import CeleryRecordFilter

TASK_MODULES = ("worker.tasks.risk", "worker.tasks.drills", "worker.tasks.maintenance")


#: Shortest delay of a retry. Celery's full jitter may draw 0 s, and then the next attempt
#: can end on another worker before this one has recorded RETRY: Flower and task events
#: showed such tasks as RETRY after they had ended. Jitter still spreads retries over
#: [this, the backoff].
MIN_RETRY_DELAY_S = 0.5


class TracedTask(Task):  # type: ignore[misc]
    """Base task: uses :class:`worker.traced_request.TracedRequest` in the worker, and runs
    each task inside its run lease, at most once per task id, with a cap on redeliveries
    (worker/dedup.py)."""

    Request = "worker.traced_request:TracedRequest"

    def retry(
        self, *args: Any, countdown: float | None = None, eta: Any = None, **kwargs: Any
    ) -> Any:
        """Celery's retry, with a delay of at least :data:`MIN_RETRY_DELAY_S`."""
        if eta is None and countdown is not None:
            countdown = max(float(countdown), MIN_RETRY_DELAY_S)
        return super().retry(*args, countdown=countdown, eta=eta, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.called_directly or not request.id or request.is_eager:
            return super().__call__(*args, **kwargs)
        # In the worker the tracer has pushed the request already: call run() as it would.
        return run_guarded(
            _delivery_guard(self.app),
            str(request.id),
            int(request.retries or 0),
            str(getattr(request, REQUEST_TAG_FIELD, None) or ""),
            lambda: self.run(*args, **kwargs),
            on_start=lambda deliveries: task_lifecycle.log_started(request, deliveries),
            started_meta=lambda: _started_meta(self, request),
        )


def _started_meta(task: Task, request: Any) -> tuple[bytes | str, int]:
    """The STARTED state Celery's ``task_track_started`` would store (the guard's start
    script stores it, in the same round trip), and the results' expiry."""
    backend = task.backend
    meta = backend.encoded_meta(
        str(request.id), {"pid": os.getpid(), "hostname": request.hostname}, STARTED, request
    )
    return meta, backend.expires_s()


_guards: dict[int, ExecutionGuard] = {}


def _delivery_guard(app: Celery) -> ExecutionGuard:
    """One guard per app, on the result backend's Redis connection pool."""
    guard = _guards.get(id(app))
    if guard is None:
        settings = get_settings()
        backend = app.backend
        guard = ExecutionGuard(
            backend.client,
            lambda task_id: backend.get_key_for_task(task_id),
            settings.worker_dedup_ttl_s,
            settings.max_redeliveries,
            settings.redis_wait_replicas,
            settings.redis_wait_timeout_ms,
        )
        _guards[id(app)] = guard
    return guard


def create_worker_app(settings: Settings) -> Celery:
    """The app a worker (and beat) runs: the shared configuration and the worker's parts."""
    app = create_celery_app(settings, task_cls="worker.celery_app:TracedTask", include=TASK_MODULES)
    app.steps["consumer"].add(delivery_wiring.ConsumerConnected)
    return app


@setup_logging.connect(weak=False)
def _configure_worker_logging(**_: Any) -> None:
    """Celery asks before configuring logging itself; answering means it will not."""
    settings = get_settings()
    configure_logging(
        service=settings.service_name,
        node=settings.node_name or "worker",
        level=settings.log_level,
        log_file=settings.log_file,
        extra_filters=[CeleryRecordFilter()],
    )
    # Before the pool forks: the SDK's batch processor restarts its thread in each child.
    tracing_export.configure_tracing(settings.service_name)


@worker_process_shutdown.connect(weak=False)
def _flush_spans(**_: Any) -> None:
    """A pool child about to exit exports the spans it still holds (billiard ends children
    with ``os._exit``: no atexit hook runs)."""
    tracing_export.flush()


@worker_ready.connect(weak=False)
def _serve_worker_metrics(**_: Any) -> None:
    """Each worker's main process serves Prometheus /metrics (worker/metrics.py)."""
    settings = get_settings()
    metrics.serve(settings.worker_metrics_port, settings.bind_host)


propagation.connect_worker()
delivery_wiring.connect()
task_lifecycle.connect()
app = create_worker_app(get_settings())
