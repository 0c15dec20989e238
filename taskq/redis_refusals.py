"""Refusals by which Redis says it wrote nothing, named once.

A master with ``min-replicas-to-write`` refuses every write (scripts' first write included)
while too few replicas are connected and caught up: ``NOREPLICAS``. That happens for
moments after every Sentinel failover, until the new master's replicas have resynced, and
on a master cut off from its replicas. redis-py has no exception class of its own for it,
and inside a pipeline it rewrites the message (``Command # 1 (...) of pipeline caused
error: NOREPLICAS ...``, redis-py's ``Pipeline.annotate_exception``): both forms are the
same refusal.
"""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, OutOfMemoryError, ResponseError

#: The error prefix of a write refused for want of replicas (nothing was written).
NO_REPLICAS = "NOREPLICAS"

#: What redis-py puts before a pipelined command's error message.
_PIPELINE_PREFIX = "of pipeline caused error: "


def refused_for_replicas(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing a write for want of replicas (alone or pipelined)."""
    if not isinstance(exc, ResponseError):
        return False
    text = str(exc)
    return text.startswith(NO_REPLICAS) or _PIPELINE_PREFIX + NO_REPLICAS in text


def refused_unrun(exc: BaseException) -> bool:
    """Whether Redis refused a declared-writing script before running it: for want of
    replicas, at ``maxmemory`` (``OOM``) or not knowing it (``NOSCRIPT``). A script's own
    runtime error is none of these: it may have written before it failed."""
    return refused_for_replicas(exc) or isinstance(exc, OutOfMemoryError | NoScriptError)


class ReplicasMissing(RedisConnectionError):
    """A setup write (a queue binding) refused for want of replicas: raised as a connection
    error, so the consumer reconnects and writes it again instead of exiting."""
