"""The Redis result backend of taskq: Celery's, with two races and a leak removed.

* No subscription on publish. Celery's Redis backend subscribes the publishing process to
  every task's result channel (``on_task_call``) so that a later ``AsyncResult.get()`` is
  woken by pub/sub. taskq's publishers (the API, tasks publishing children) never block on
  a result: the API reads the stored state when a client polls. Those subscriptions cost a
  round trip per publish and accumulate, one channel per task, for the life of the process.
  ``get()`` still works: it subscribes when it is called.
* Results are bounded: a stored state keeps the task's name, queue, worker and retry
  number (``result_extended``) and its result or error, never its input arguments.
* SUCCESS and REVOKED are final, and an earlier attempt never overwrites a later one, atomically.
  Celery reads the stored state and then writes, so a slow writer can overwrite a newer
  state: a retry published with a zero countdown runs and succeeds (or fails for good) on
  another worker while the first one is still recording RETRY, and the task's status stays
  RETRY forever. Here the check and the write are one Lua script: a stored SUCCESS is never
  replaced, nor a state whose ``retries`` is higher than the one being written.
* With replicas (``taskq_wait_replicas`` > 0 in the app's configuration) every state write
  is pipelined with ``WAIT``: it returns only once that many replicas have it, else it
  raises :class:`ResultNotReplicated`, a connection error, so Celery's backend retry
  (``ensure``: up to 20 times, 1 s apart) writes it again, on the new master after a
  failover. The worker acknowledges a message only after its result is stored, so a
  SUCCESS that a failover could still lose never lets its message go.
"""

from __future__ import annotations

import math
from typing import Any

from celery.backends.redis import RedisBackend, SentinelBackend
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from taskq.redis_clients import liveness_options
from taskq.redis_refusals import refused_for_replicas
from taskq.redis_sentinels import with_safe_discovery
from taskq.redis_urls import is_sentinel

#: Lua function: SET ``meta`` at ``key`` (with expiry when > 0) and PUBLISH it, unless the
#: stored meta is final (SUCCESS, or REVOKED: a revocation is stored only before the task
#: started, see taskq/broker/delivery/scripts.py) or comes from a later attempt (higher
#: ``retries``; a meta written without a request has none). Shared with the execution
#: guard's start script (taskq/broker/delivery/scripts.py), which writes STARTED by the
#: same rule.
WRITE_META_LUA = """
local function write_meta(key, meta, expires)
  local current = redis.call('GET', key)
  if current then
    local ok, stored = pcall(cjson.decode, current)
    if ok and type(stored) == 'table' then
      if stored['status'] == 'SUCCESS' or stored['status'] == 'REVOKED' then
        return 0
      end
      local new_ok, new = pcall(cjson.decode, meta)
      local stored_retries = tonumber(stored['retries'])
      local writing = new_ok and type(new) == 'table' and tonumber(new['retries'])
      if stored_retries and writing and stored_retries > writing then
        return 0
      end
    end
  end
  if expires > 0 then
    redis.call('SET', key, meta, 'EX', expires)
  else
    redis.call('SET', key, meta)
  end
  redis.call('PUBLISH', key, meta)
  return 1
end
"""

#: KEYS: the meta key. ARGV: meta, expiry seconds. ``allow-oom``: a Redis at ``maxmemory``
#: still takes the state of a task that ran (the API sheds new work before that point);
#: refusing it would leave the task STARTED forever.
_SET_UNLESS_SUCCEEDED = (
    "#!lua flags=allow-oom\n"
    + WRITE_META_LUA
    + "return write_meta(KEYS[1], ARGV[1], tonumber(ARGV[2]))\n"
)


class ResultNotReplicated(RedisConnectionError):
    """Too few replicas confirmed a state write within the WAIT timeout."""


class TaskqRedisBackend(RedisBackend):  # type: ignore[misc]
    """:class:`RedisBackend` without per-publish subscriptions; SUCCESS is never overwritten,
    nor a later attempt's state by an earlier attempt's."""

    _set_unless_succeeded: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Celery passes ``redis_socket_keepalive`` but no keepalive options nor a health
        # check unless configured: a result write to a partitioned master would wait for
        # TCP's retransmission limit. The same bounds as every taskq connection.
        self.connparams.update(liveness_options())

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Do nothing: see the module docstring."""

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        # Celery's version reads the current state first; the script below decides instead.
        self._set_with_state(
            self.get_key_for_task(task_id),
            self.encoded_meta(task_id, result, state, request, traceback),
            state,
        )
        return result

    def _get_result_meta(self, *args: Any, **kwargs: Any) -> Any:
        # ``result_extended`` stores the task's whole input in every state (a 50-position
        # portfolio: 6 KB per task for a day). Keep name, queue, worker and retries (the
        # attempt order below needs them); drop the inputs, which the client already has.
        meta = super()._get_result_meta(*args, **kwargs)
        meta.pop("args", None)
        meta.pop("kwargs", None)
        return meta

    def encoded_meta(
        self, task_id: str, result: Any, state: str, request: Any, traceback: Any = None
    ) -> Any:
        """The stored form of a task's state, as Celery writes it (the execution guard
        writes STARTED itself, in its start script)."""
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = str(task_id)
        return self.encode(meta)

    def expires_s(self) -> int:
        """The results' expiry in whole seconds (0: never)."""
        return math.ceil(float(self.expires)) if self.expires else 0

    def _set(self, key: str, value: Any, expires: Any = None) -> None:
        if expires is None:
            expires = self.expires
        if self._set_unless_succeeded is None:
            self._set_unless_succeeded = self.client.register_script(_SET_UNLESS_SUCCEEDED)
        seconds = math.ceil(float(expires)) if expires else 0
        replicas = int(self.app.conf.get("taskq_wait_replicas") or 0)
        if replicas <= 0:
            self._set_unless_succeeded(keys=[key], args=[value, seconds])
            return
        timeout_ms = int(self.app.conf.get("taskq_wait_timeout_ms") or 1_000)
        pipe = self.client.pipeline(transaction=False)
        self._set_unless_succeeded(keys=[key], args=[value, seconds], client=pipe)
        pipe.wait(replicas, timeout_ms)
        try:
            _, acked = pipe.execute()
        except ResponseError as exc:
            # A master without a caught-up replica refuses the write: the same case, later.
            if refused_for_replicas(exc):
                raise ResultNotReplicated("a state write was refused: no replica") from exc
            raise
        if int(acked) < replicas:
            raise ResultNotReplicated("a state write was not confirmed by a replica")


class TaskqSentinelBackend(TaskqRedisBackend, SentinelBackend):  # type: ignore[misc]
    """The same backend on Celery's Sentinel connections (``master_name`` from the
    result backend's transport options)."""

    def _get_sentinel_instance(self, **params: Any) -> Any:
        instance = super()._get_sentinel_instance(**params)
        return with_safe_discovery(instance)


def backend_url(redis_url: str) -> str:
    """The ``result_backend`` value selecting this module's backend for ``redis_url``."""
    cls = TaskqSentinelBackend if is_sentinel(redis_url) else TaskqRedisBackend
    return f"{__name__}:{cls.__name__}+{redis_url}"
