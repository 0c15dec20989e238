"""taskq's Redis transport behind Redis Sentinel: :mod:`taskq.broker.redis_transport`'s
channel (atomic pop-and-hold, leases, doorbells) on kombu's ``SentinelChannel`` connections.

kombu's ``SentinelChannel`` asks the sentinels named by the ``sentinel://h:p;sentinel://...``
URL for the master of the ``master_name`` transport option, and its connections ask again
whenever they fail or reach a replica (``READONLY``): after a failover the channel's next
reconnect lands on the new master. Everything taskq's channel adds is unchanged: it works on
whatever connection the pool hands out, and a lost connection is recovered as any other
(Celery's consumer reconnects; held records stay held, see taskq/broker/delivery).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

from taskq.broker import redis_transport
from taskq.redis_sentinels import with_safe_discovery


class SentinelChannel(redis_transport.Channel, kombu_redis.SentinelChannel):
    """taskq's channel; pools and connections from kombu's Sentinel channel."""

    def _sentinel_managed_pool(self, asynchronous: bool = False) -> Any:
        # A task that ends after its consumer's connection was closed (a reconnect after a
        # failover) rejects or acks on the old channel: kombu would read the sentinels of
        # a connection that is gone (AttributeError: an unrecoverable error that ends the
        # worker). A connection error instead lets the lease keeper retry it.
        connection = self.connection
        if connection is None or getattr(connection, "client", None) is None:
            raise kombu_redis.get_redis_ConnectionError()(  # type: ignore[no-untyped-call]
                "channel closed before connecting"
            )
        pool = super()._sentinel_managed_pool(asynchronous)  # type: ignore[no-untyped-call]
        with_safe_discovery(pool.sentinel_manager)
        return pool


class SentinelTransport(redis_transport.Transport):
    """Use with ``broker_transport="taskq.broker.sentinel_transport:SentinelTransport"`` and a
    ``sentinel://`` URL."""

    Channel = SentinelChannel
    default_port = kombu_redis.SentinelTransport.default_port  # type: ignore[assignment]
