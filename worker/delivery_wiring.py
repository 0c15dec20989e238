"""Wires the delivery contract (:mod:`taskq.broker.delivery`) into a Celery worker.

* ``worker_init`` (main process, before the pool forks): start the lease keeper, which
  lives as long as the process; ``worker_shutdown`` (after the pool drained): give the lease
  up. A warm shutdown therefore keeps every running task's message held until its ack.
* A consumer bootstep tells the keeper when the consumer is connected (the readiness beat
  follows it) and tells the transport which delivery tags run in the pool (a channel closed
  after a connection loss keeps those held).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from celery import bootsteps, signals
from celery.worker import state as worker_state

from taskq.broker import redis_transport
from taskq.broker.delivery.lease import LeaseKeeper, LeaseTiming, set_consuming
from taskq.settings import Settings, get_settings

logger = logging.getLogger("taskq.worker.delivery")

#: Each reconnection attempt keeps trying this long before Celery's own retry schedule
#: (2 s, 4 s, 6 s ... between attempts) takes over, so a Redis back after a stall of up to
#: this long is found within one retry step.
RECONNECT_PATIENCE_S = 40.0

_keeper: LeaseKeeper | None = None


def lease_timing(settings: Settings) -> LeaseTiming:
    """The lease numbers of ``settings``."""
    return LeaseTiming(
        ttl_s=settings.lease_ttl_s,
        renew_s=settings.lease_renew_s,
        stall_gap_s=settings.stall_gap_s,
    )


def _copy(items: Iterable[Any]) -> list[Any]:
    """A list copy of a container another thread may change meanwhile."""
    for _ in range(5):
        try:
            return list(items)
        except RuntimeError:  # changed while we copied it
            continue
    return []


def running_delivery_tags() -> list[str]:
    """Delivery tags of the tasks running in this worker's pool."""
    tags = []
    for request in _copy(worker_state.active_requests):
        tag = getattr(getattr(request, "message", None), "delivery_tag", None)
        if tag is not None:
            tags.append(str(tag))
    return tags


def start_lease(sender: Any = None, **_: Any) -> None:
    """Start this worker process's lease keeper (once)."""
    global _keeper
    if _keeper is not None:
        return
    settings = get_settings()
    node = str(settings.node_name or getattr(sender, "hostname", None) or "worker")
    _keeper = LeaseKeeper(settings.broker_url, node, lease_timing(settings))
    _keeper.start()


def stop_lease(**_: Any) -> None:
    """Give the lease up at the end of the process."""
    global _keeper
    if _keeper is not None:
        _keeper.stop()
        _keeper = None


class ConsumerConnected(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer bootstep: the consumer is connected from its start to its stop."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, parent: Any) -> None:
        redis_transport.set_running_tags_provider(running_delivery_tags)
        redis_transport.Transport.connect_patience_s = RECONNECT_PATIENCE_S
        set_consuming(True)

    def stop(self, parent: Any) -> None:
        set_consuming(False)


def connect() -> None:
    """Connect the process hooks (strong references)."""
    signals.worker_init.connect(start_lease, weak=False)
    signals.worker_shutdown.connect(stop_lease, weak=False)
