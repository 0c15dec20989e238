"""Scheduled (beat) tasks."""

from __future__ import annotations

import logging
from typing import Any

from taskq.broker.queue_depth import read_depths
from taskq.logs.schema import Event
from taskq.redis_clients import sync_client
from taskq.settings import QUEUES, get_settings
from worker.celery_app import app

logger = logging.getLogger("taskq.maintenance")


@app.task(name="taskq.maintenance.queue_depth_snapshot")
def queue_depth_snapshot() -> dict[str, Any]:
    """Log the depth of every queue (all priority sub-lists) and the unacked count."""
    settings = get_settings()
    client = sync_client(settings.broker_url, socket_timeout=settings.redis_socket_timeout_s)
    try:
        depths = read_depths(client, QUEUES)
    finally:
        client.close()
    for queue, depth in depths.waiting.items():
        logger.info(
            "queue depth snapshot",
            extra={
                "event.action": Event.QUEUE_DEPTH_SNAPSHOT,
                "queue": queue,
                "queue.depth": depth,
            },
        )
    logger.info(
        "unacked snapshot",
        extra={"event.action": Event.QUEUE_UNACKED_SNAPSHOT, "queue.unacked": depths.unacked},
    )
    return {"waiting": depths.waiting, "unacked": depths.unacked}
