"""The Celery application: broker, queues, reliability settings and logging hooks.

The reliability numbers depend on each other (see :class:`taskq.settings.Settings`):

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only after
  its task finished, and a pool child that dies mid-task puts it back. A task may therefore
  run twice: every task here is idempotent (pure computations of their inputs).
* ``visibility_timeout``: if a whole worker dies, Redis keeps its messages in ``unacked``
  until this passes, then another worker gets them. Live workers refresh the messages they
  hold every ``inflight_heartbeat_s`` (worker/inflight_heartbeat.py), so the timeout is a
  few heartbeats, not the longest task plus retry delay, and a dead worker's tasks run
  elsewhere within seconds. The API process reads the same transport options.
* ``unacked_restore_interval``/``throttle``: kombu otherwise sweeps for expired messages
  only every ~100 s, so a dead worker's tasks would wait that long on top.
* ``worker_prefetch_multiplier=1``: a worker holds at most one message per free child, so
  a burst of low tasks cannot sit in a busy worker's buffer while others idle.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.signals import setup_logging
from kombu.entity import Queue

from taskq import celery_signals
from taskq.celery_logs import CeleryRecordFilter
from taskq.logs import configure_logging
from taskq.settings import QUEUES, Settings, get_settings
from worker.dedup import DeliveryGuard, run_guarded
from worker.inflight_heartbeat import InFlightHeartbeat
from worker.result_backend import backend_url

TASK_MODULES = ("worker.tasks.risk", "worker.tasks.drills", "worker.tasks.maintenance")


class TracedTask(Task):  # type: ignore[misc]
    """Base task: uses :class:`worker.traced_request.TracedRequest` in the worker, and runs
    each task at most once per task id with a cap on redeliveries (worker/dedup.py)."""

    Request = "worker.traced_request:TracedRequest"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.called_directly or not request.id or request.is_eager:
            return super().__call__(*args, **kwargs)
        # In the worker the tracer has pushed the request already: call run() as it would.
        return run_guarded(
            _delivery_guard(self.app),
            str(request.id),
            int(request.retries or 0),
            lambda: self.run(*args, **kwargs),
        )


_guards: dict[int, DeliveryGuard] = {}


def _delivery_guard(app: Celery) -> DeliveryGuard:
    """One guard per app, on the result backend's Redis connection pool."""
    guard = _guards.get(id(app))
    if guard is None:
        settings = get_settings()
        guard = DeliveryGuard(
            app.backend.client, settings.worker_dedup_ttl_s, settings.max_redeliveries
        )
        _guards[id(app)] = guard
    return guard


def transport_options(settings: Settings) -> dict[str, Any]:
    """Redis transport options, identical for every process that talks to the broker."""
    return {
        "visibility_timeout": settings.visibility_timeout_s,
        "unacked_restore_interval": settings.unacked_restore_interval_s,
        "unacked_restore_throttle": 1,
        # The sweep's lock: a worker killed while holding it must not stop everyone's
        # sweeps for kombu's default 5 minutes. Two sweeps at once are safe (WATCH).
        "unacked_mutex_expire": 1,
        # Workers that consume several queues drain them in the listed order (high first).
        "queue_order_strategy": "priority",
        "socket_timeout": settings.redis_socket_timeout_s,
        "socket_connect_timeout": settings.redis_socket_timeout_s,
    }


def create_celery_app(settings: Settings) -> Celery:
    """A configured Celery app; the API uses it to publish, workers and beat to run."""
    app = Celery("taskq", task_cls=TracedTask, include=list(TASK_MODULES))
    options = transport_options(settings)
    app.conf.update(
        broker_url=settings.broker_url,
        # Pops and records a message atomically (taskq/redis_transport.py): no loss window.
        broker_transport="taskq.redis_transport:Transport",
        result_backend=backend_url(settings.broker_url),
        broker_transport_options=options,
        result_backend_transport_options=options,
        broker_connection_retry_on_startup=True,
        # Publishing from the API must fail fast when Redis is away, not retry for seconds.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=settings.result_expires_s,
        result_extended=True,
        task_track_started=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=settings.worker_prefetch_multiplier,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="medium",
        task_create_missing_queues=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        beat_schedule={
            "queue-depth-snapshot": {
                "task": "taskq.maintenance.queue_depth_snapshot",
                "schedule": settings.queue_snapshot_interval_s,
                # A snapshot that could not run in time is worthless: let it expire.
                "options": {"queue": "high", "expires": settings.queue_snapshot_interval_s},
            }
        },
    )
    app.steps["consumer"].add(InFlightHeartbeat)
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


celery_signals.connect()
app = create_celery_app(get_settings())
