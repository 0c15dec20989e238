"""Keeps the messages a live worker holds from being handed to another worker.

kombu's Redis transport records every delivered-but-unacknowledged message in the
``unacked_index`` sorted set, scored by delivery time. Any worker's periodic sweep gives a
message back to its queue once its score is older than ``visibility_timeout``: that is how
a dead worker's messages come back, and why, without this module, the timeout had to exceed
the longest task and retry delay (a live worker's long task would otherwise run twice) and
a killed worker's tasks waited that long.

This consumer bootstep refreshes the scores of the messages its worker still holds (running,
reserved, or waiting for an ETA) every ``inflight_heartbeat_s``. A live worker's messages
therefore never look expired, and the visibility timeout can be a few heartbeats: a dead
worker's messages run elsewhere within about ``visibility_timeout_s +
unacked_restore_interval_s``. A worker whose heartbeat stalls longer than the timeout may
see a message delivered twice; the completion records of :mod:`worker.dedup` make that a
repeated computation at worst.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import bootsteps
from redis import Redis
from redis.exceptions import RedisError

from taskq.settings import get_settings

logger = logging.getLogger("taskq.worker.heartbeat")


def held_delivery_tags(qos: Any) -> list[str]:
    """Delivery tags of the messages a channel's QoS holds (read from another thread)."""
    for _ in range(3):
        try:
            return [str(tag) for tag in list(qos._delivered)]
        except RuntimeError:  # the consumer changed the dict while we copied it
            continue
    return []


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
        if settings.inflight_heartbeat_s <= 0:
            return
        channel = parent.task_consumer.channel
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run,
            args=(channel, settings.broker_url, settings.inflight_heartbeat_s),
            name="taskq-inflight-heartbeat",
            daemon=True,
        )
        self._thread.start()

    def stop(self, parent: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self, channel: Any, broker_url: str, interval_s: float) -> None:
        client = Redis.from_url(
            broker_url, socket_timeout=interval_s, socket_connect_timeout=interval_s
        )
        try:
            while not self._stop.wait(interval_s):
                qos = channel.qos
                try:
                    refresh_scores(
                        client, qos.unacked_index_key, held_delivery_tags(qos), time.time()
                    )
                except (RedisError, OSError):
                    # Redis is away: the sweep that would restore our messages is away too.
                    logger.warning(
                        "in-flight heartbeat failed",
                        extra={"event.action": "worker.heartbeat_failed"},
                    )
        finally:
            client.close()
