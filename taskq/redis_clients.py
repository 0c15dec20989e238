"""Every Redis client of taskq is made here, so one setting decides where Redis is.

Two forms of broker URL, both what kombu and Celery accept:

* ``redis://[:password@]host:port/db``: one Redis (the embedded default);
* ``sentinel://[:password@]host:port/db;sentinel://...``: Redis Sentinel. Each client asks
  the sentinels for the current master of :attr:`~taskq.settings.Settings.redis_master` and
  asks again when a connection fails or the server it reaches says it is a replica
  (``READONLY``), so after a failover every client follows the new master by itself
  (:mod:`taskq.redis_sentinels`: discoveries that overlap keep every sentinel).

Every connection also notices a dead peer within seconds (:func:`liveness_options`): a
master isolated by a partition never closes its sockets, so without TCP keepalive and
``TCP_USER_TIMEOUT`` a blocked read or an unacknowledged write waits for the kernel's
retransmission limit (minutes). The same options go to kombu's channels and Celery's result
backend (taskq/broker/app.py, taskq/broker/result_backend.py).

Invariant: no module outside this one builds a Redis client from a URL or host and port;
a client built here reaches the current master and carries the password of the URL; every
taskq Redis connection carries :func:`liveness_options`.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import unquote, urlsplit

from redis import Redis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.backoff import NoBackoff
from redis.retry import Retry

from taskq.redis_sentinels import SafeAsyncSentinel, SafeSentinel
from taskq.redis_urls import SENTINEL_PORT, is_sentinel

#: A connection whose peer stopped answering is dead after about this long: an idle socket
#: after KEEPIDLE + KEEPCNT * KEEPINTVL, a socket with unacknowledged data after
#: TCP_USER_TIMEOUT. Sentinel promotes a new master in a few seconds; a client must not
#: wait longer than that on the old one.
DEAD_PEER_S = 3

#: redis-py PINGs a connection idle for longer than this before using it, and kombu drops
#: a BRPOP connection whose reply is overdue by more than this (its read has no timeout).
HEALTH_CHECK_INTERVAL_S = 2


def _keepalive_options() -> dict[int, int]:
    # Linux names; elsewhere (no TCP_KEEPIDLE, e.g. macOS) only what the platform has.
    wanted = {
        "TCP_KEEPIDLE": 1,
        "TCP_KEEPINTVL": 1,
        "TCP_KEEPCNT": DEAD_PEER_S - 1,
        "TCP_USER_TIMEOUT": DEAD_PEER_S * 1000,  # milliseconds
    }
    return {getattr(socket, n): v for n, v in wanted.items() if hasattr(socket, n)}


def liveness_options() -> dict[str, Any]:
    """redis-py connection keywords that bound how long a dead peer goes unnoticed."""
    return {
        "socket_keepalive": True,
        "socket_keepalive_options": _keepalive_options(),
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
    }


def _with_liveness(kwargs: dict[str, Any]) -> dict[str, Any]:
    # A caller's own value wins (e.g. a probe that wants no health check PING).
    return {**liveness_options(), **kwargs}


class _SentinelTarget:
    """The sentinels, database and password named by a ``sentinel://`` URL."""

    def __init__(self, url: str) -> None:
        parts = [urlsplit(chunk) for chunk in url.split(";") if chunk.strip()]
        if not parts:
            raise ValueError("a sentinel URL names at least one sentinel")
        self.addresses = [(p.hostname or "", p.port or SENTINEL_PORT) for p in parts]
        path = parts[0].path.strip("/")
        self.db = int(path) if path else 0
        self.password = unquote(parts[0].password) if parts[0].password else None


def _master_name(master: str | None) -> str:
    if master is not None:
        return master
    from taskq.settings import get_settings  # late: settings are read from the environment

    return get_settings().redis_master


def _sentinel_kwargs(kwargs: dict[str, Any], retry: Retry | AsyncRetry) -> dict[str, Any]:
    # The sentinels are asked with the same bounds as the data connections, and a sentinel
    # that does not answer is not retried: the next one is asked at once (a partitioned
    # sentinel would otherwise cost its retries' backoff on every reconnect).
    # No keepalive: a sentinel query is one bounded request and reply, and a sentinel
    # socket the kernel aborted under asyncio's transport raises RuntimeError (uvloop: "the
    # handler is closed"), which redis-py does not take for a dead sentinel.
    bounds: dict[str, Any] = {
        key: kwargs[key] for key in ("socket_timeout", "socket_connect_timeout") if key in kwargs
    }
    return {**bounds, "retry": retry}


def sync_client(
    url: str, *, master: str | None = None, db: int | None = None, **kwargs: Any
) -> Redis:
    """A client of the current master (``db`` overrides the URL's database)."""
    kwargs = _with_liveness(kwargs)
    if not is_sentinel(url):
        extra = {"db": db} if db is not None else {}
        return Redis.from_url(url, **extra, **kwargs)
    target = _SentinelTarget(url)
    # redis-py leaves Sentinel unannotated.
    sentinel = SafeSentinel(  # type: ignore[no-untyped-call]
        target.addresses, sentinel_kwargs=_sentinel_kwargs(kwargs, Retry(NoBackoff(), 0)), **kwargs
    )
    client: Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        _master_name(master),
        redis_class=Redis,
        db=target.db if db is None else db,
        password=target.password,
    )
    return client


class _BlockingSentinelPool(AsyncSentinelPool, BlockingConnectionPool):
    """Sentinel's pool with the bounded wait of :class:`BlockingConnectionPool`: a herd
    waits ``timeout`` for a connection instead of opening one each."""


def async_client(
    url: str, *, max_connections: int, timeout: float, master: str | None = None, **kwargs: Any
) -> AsyncRedis:
    """An asyncio client of the current master on one bounded, blocking pool."""
    kwargs = _with_liveness(kwargs)
    if not is_sentinel(url):
        return AsyncRedis(
            connection_pool=BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=timeout, **kwargs
            )
        )
    target = _SentinelTarget(url)
    sentinel = SafeAsyncSentinel(  # type: ignore[no-untyped-call]
        target.addresses,
        sentinel_kwargs=_sentinel_kwargs(kwargs, AsyncRetry(NoBackoff(), 0)),
        **kwargs,
    )
    client: AsyncRedis = sentinel.master_for(
        _master_name(master),
        redis_class=AsyncRedis,
        connection_pool_class=_BlockingSentinelPool,
        db=target.db,
        password=target.password,
        max_connections=max_connections,
        timeout=timeout,
    )
    return client
