"""The Celery configuration every process shares: broker, results, queues, reliability.

The API builds a publishing app with :func:`create_celery_app`; the worker builds on the
same function (worker/celery_app.py adds its task class, task modules and bootsteps).

The reliability numbers depend on each other (see :class:`taskq.settings.Settings`):

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only after
  its task finished, and a pool child that dies mid-task puts it back. A task may therefore
  run twice: every task here is idempotent (pure computations of their inputs).
* Held messages belong to their worker process's lease (taskq/broker/delivery): a dead
  worker's messages run elsewhere once its lease expired (``lease_ttl_s``), a live one keeps
  them however long its tasks, retries' countdowns or a warm shutdown take. kombu's
  ``visibility_timeout`` applies only to records written without a lease.
* ``unacked_restore_interval``/``throttle``: kombu otherwise sweeps only every ~100 s, so a
  dead worker's tasks would wait that long on top.
* ``worker_prefetch_multiplier=1``: a worker holds at most one message per free child, so
  a burst of low tasks cannot sit in a busy worker's buffer while others idle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu.entity import Exchange, Queue

from taskq.broker.event_redaction import RedactingAMQP
from taskq.broker.result_backend import backend_url
from taskq.redis_clients import liveness_options
from taskq.redis_urls import is_sentinel
from taskq.settings import QUEUES, Settings


def transport_options(settings: Settings) -> dict[str, Any]:
    """Redis transport options, identical for every process that talks to the broker."""
    return {
        "visibility_timeout": settings.visibility_timeout_s,
        "lease_ttl_s": settings.lease_ttl_s,
        "lease_renew_s": settings.lease_renew_s,
        "stall_gap_s": settings.stall_gap_s,
        "unacked_restore_interval": settings.unacked_restore_interval_s,
        "unacked_restore_throttle": 1,
        # The sweep's lock: a worker killed while holding it must not stop everyone's
        # sweeps for kombu's default 5 minutes. Two sweeps at once are safe (WATCH).
        "unacked_mutex_expire": 1,
        # Workers that consume several queues drain them in the listed order (high first).
        "queue_order_strategy": "priority",
        "socket_timeout": settings.redis_socket_timeout_s,
        "socket_connect_timeout": settings.redis_socket_timeout_s,
        # TCP keepalive + TCP_USER_TIMEOUT and a 2 s health check: a consumer's BRPOP on a
        # partitioned master (no read timeout in kombu's event loop) is dropped within
        # seconds, not after TCP's retransmission limit (taskq/redis_clients.py).
        **liveness_options(),
        # Read by the Sentinel transport and backend only (sentinel:// broker URLs).
        "master_name": settings.redis_master,
        "sentinel_kwargs": {
            "socket_timeout": settings.redis_socket_timeout_s,
            "socket_connect_timeout": settings.redis_socket_timeout_s,
        },
    }


def broker_transport(broker_url: str) -> str:
    """The transport class of ``broker_url``: taskq's, plain or behind Sentinel."""
    if is_sentinel(broker_url):
        return "taskq.broker.sentinel_transport:SentinelTransport"
    return "taskq.broker.redis_transport:Transport"


def create_celery_app(
    settings: Settings, task_cls: str | None = None, include: Sequence[str] = ()
) -> Celery:
    """A configured Celery app. ``task_cls`` and ``include`` are the worker's (``module:Class``
    and task modules); a publisher needs neither."""
    # RedactingAMQP: messages and task-sent events describe the arguments, never show them.
    extra: dict[str, Any] = {"task_cls": task_cls} if task_cls else {}
    app = Celery("taskq", include=list(include), amqp=RedactingAMQP, **extra)
    options = transport_options(settings)
    app.conf.update(
        broker_url=settings.broker_url,
        # Pops and records a message atomically (taskq/broker/redis_transport.py): no loss
        # window between taking a message off its queue and recording it as held.
        broker_transport=broker_transport(settings.broker_url),
        result_backend=backend_url(settings.broker_url),
        broker_transport_options=options,
        result_backend_transport_options=options,
        # The result backend takes its socket timeouts from these two settings, not from
        # the transport options (Celery docs, "redis_socket_timeout": default 120 s;
        # "redis_socket_connect_timeout": default None): the API's status reads and the
        # workers' result writes fail as fast as every other Redis call.
        redis_socket_timeout=settings.redis_socket_timeout_s,
        redis_socket_connect_timeout=settings.redis_socket_timeout_s,
        broker_connection_retry_on_startup=True,
        # Read by the result backend: state writes wait for this many replicas.
        taskq_wait_replicas=settings.redis_wait_replicas,
        taskq_wait_timeout_ms=settings.redis_wait_timeout_ms,
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
        # STARTED is stored by the execution guard's start script (taskq/broker/delivery),
        # in the round trip that takes the run lease; Celery's own write would be another.
        task_track_started=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=settings.worker_prefetch_multiplier,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        # One direct exchange per queue, bound by the queue's name: a bare Queue(name) gets
        # Celery's default exchange and routing key, so every queue would share one binding.
        task_queues=[
            Queue(name, Exchange(name), routing_key=name)  # type: ignore[no-untyped-call]
            for name in QUEUES
        ],
        task_default_queue="medium",
        task_create_missing_queues=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        # Task events cost the worker's main process a Redis round trip each (three per
        # task: about half its time on no-op tasks), so they are off unless asked for, as
        # in Celery; Flower turns them on remotely when it starts. Arguments, results and
        # exception texts in them are redacted (taskq/broker/event_redaction.py).
        worker_send_task_events=settings.worker_task_events,
        task_send_sent_event=True,
        beat_schedule={
            "queue-depth-snapshot": {
                "task": "taskq.maintenance.queue_depth_snapshot",
                "schedule": settings.queue_snapshot_interval_s,
                # A snapshot that could not run in time is worthless: let it expire.
                "options": {"queue": "high", "expires": settings.queue_snapshot_interval_s},
            }
        },
    )
    return app
