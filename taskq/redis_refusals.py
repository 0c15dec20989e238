"""Refusals by which Redis says it wrote nothing, named once.

A master with ``min-replicas-to-write`` refuses every write (scripts' first write included)
while too few replicas are connected and caught up: ``NOREPLICAS``. That happens for
moments after every Sentinel failover, until the new master's replicas have resynced, and
on a master cut off from its replicas. redis-py has no exception class of its own for it.
"""

from __future__ import annotations

from redis.exceptions import ResponseError

#: The error prefix of a write refused for want of replicas (nothing was written).
NO_REPLICAS = "NOREPLICAS"


def refused_for_replicas(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing a write for want of replicas."""
    return isinstance(exc, ResponseError) and str(exc).startswith(NO_REPLICAS)
