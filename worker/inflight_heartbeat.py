"""Keeps the messages a live worker holds from being handed to another worker, and tells
the API that this worker is up.

Every delivered-but-unacknowledged message is recorded in the ``unacked`` hash and the
``unacked_index`` sorted set, scored by delivery time (atomically with the pop, see
:mod:`taskq.broker.redis_transport`). Any worker's periodic sweep gives a message back to its queue
once its score is older than ``visibility_timeout``: that is how a dead worker's messages
come back.

This consumer bootstep runs a thread that, every ``inflight_heartbeat_s``:

* refreshes the scores of the messages this worker holds: those its consumer channel has
  taken (running, reserved, or waiting for an ETA) and those of tasks still running in the
  pool although they came through an earlier connection (after a Redis outage Celery lets
  them finish and ack them). A live worker's messages therefore never look expired, and the
  visibility timeout can be a few heartbeats: a dead worker's messages run elsewhere within
  about ``visibility_timeout_s + unacked_restore_interval_s``;
* writes the worker's beat for ``/readyz`` (:mod:`taskq.broker.readiness`).

It also tells the transport which delivery tags belong to running tasks, so a channel
closed after a connection loss does not push them back to their queue while they run.

A worker whose heartbeat stalls longer than the timeout may see a message delivered twice;
the completion records of :mod:`worker.dedup` make that a repeated computation at worst.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from celery import bootsteps
from celery.worker import state as worker_state
from redis import Redis
from redis.exceptions import RedisError

from taskq.broker import readiness, redis_transport
from taskq.settings import get_settings

logger = logging.getLogger("taskq.worker.heartbeat")

#: Celery retries a lost broker connection after 2 s, 4 s, 6 s ...; each attempt of this
#: worker keeps trying for this long first, so a Redis restarted within seconds is found
#: at once (see :class:`taskq.broker.redis_transport.Transport`).
RECONNECT_PATIENCE_S = 5.0


def _copy(items: Iterable[Any]) -> list[Any]:
    """A list copy of a container another thread may change meanwhile."""
    for _ in range(5):
        try:
            return list(items)
        except RuntimeError:  # changed while we copied it
            continue
    return []


def held_delivery_tags(qos: Any) -> list[str]:
    """Delivery tags of the messages a channel's QoS holds and has not acked yet."""
    dirty = set(_copy(qos._dirty))
    return [str(tag) for tag in _copy(qos._delivered) if tag not in dirty]


def running_delivery_tags() -> list[str]:
    """Delivery tags of the tasks running in this worker's pool."""
    tags = []
    for request in _copy(worker_state.active_requests):
        tag = getattr(getattr(request, "message", None), "delivery_tag", None)
        if tag is not None:
            tags.append(str(tag))
    return tags


def refresh_scores(client: Redis, index_key: str, tags: list[str], now: float) -> int:
    """Set the score of each still-indexed tag to ``now`` (``XX``: never re-adds acked ones)."""
    if not tags:
        return 0
    changed = client.zadd(index_key, dict.fromkeys(tags, now), xx=True, ch=True)
    return int(changed or 0)


class InFlightHeartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer bootstep running the heartbeat thread; see the module docstring."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        settings = get_settings()
        redis_transport.set_running_tags_provider(running_delivery_tags)
        redis_transport.Transport.connect_patience_s = RECONNECT_PATIENCE_S
        channel = parent.task_consumer.channel
        node = str(getattr(parent, "hostname", None) or settings.node_name or "worker")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run,
            args=(channel, settings.broker_url, node),
            name="taskq-inflight-heartbeat",
            daemon=True,
        )
        self._thread.start()

    def stop(self, parent: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self, channel: Any, broker_url: str, node: str) -> None:
        settings = get_settings()
        interval_s = settings.worker_beat_s
        refresh = settings.inflight_heartbeat_s > 0
        timeout_s = max(interval_s, 0.5)
        client = Redis.from_url(
            broker_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        failing = False
        try:
            while True:
                try:
                    readiness.record_beat(client, node)
                    if refresh:
                        qos = channel.qos
                        tags = set(held_delivery_tags(qos)) | set(running_delivery_tags())
                        refresh_scores(client, qos.unacked_index_key, sorted(tags), time.time())
                    if failing:
                        failing = False
                        logger.info(
                            "in-flight heartbeat resumed",
                            extra={"event.action": "worker.heartbeat_resumed"},
                        )
                except (RedisError, OSError):
                    # Redis is away: the sweep that would restore our messages is away too.
                    if not failing:
                        failing = True
                        logger.warning(
                            "in-flight heartbeat failed",
                            extra={"event.action": "worker.heartbeat_failed"},
                        )
                if self._stop.wait(interval_s):
                    break
        finally:
            client.close()
