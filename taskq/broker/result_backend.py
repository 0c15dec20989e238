"""The Redis result backend of taskq: Celery's, with two races and a leak removed.

* No subscription on publish. Celery's Redis backend subscribes the publishing process to
  every task's result channel (``on_task_call``) so that a later ``AsyncResult.get()`` is
  woken by pub/sub. taskq's publishers (the API, tasks publishing children) never block on
  a result: the API reads the stored state when a client polls. Those subscriptions cost a
  round trip per publish and accumulate, one channel per task, for the life of the process.
  ``get()`` still works: it subscribes when it is called.
* SUCCESS is final, and an earlier attempt never overwrites a later one, atomically.
  Celery reads the stored state and then writes, so a slow writer can overwrite a newer
  state: a retry published with a zero countdown runs and succeeds (or fails for good) on
  another worker while the first one is still recording RETRY, and the task's status stays
  RETRY forever. Here the check and the write are one Lua script: a stored SUCCESS is never
  replaced, nor a state whose ``retries`` is higher than the one being written.
"""

from __future__ import annotations

import math
from typing import Any

from celery.backends.redis import RedisBackend

#: SET (with expiry when > 0) and PUBLISH, unless the stored meta says SUCCESS or comes
#: from a later attempt (higher ``retries``; a meta written without a request has none).
_SET_UNLESS_SUCCEEDED = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' then
    if meta['status'] == 'SUCCESS' then
      return 0
    end
    local new_ok, new = pcall(cjson.decode, ARGV[1])
    local stored = tonumber(meta['retries'])
    local writing = new_ok and type(new) == 'table' and tonumber(new['retries'])
    if stored and writing and stored > writing then
      return 0
    end
  end
end
local expires = tonumber(ARGV[2])
if expires > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', expires)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


class TaskqRedisBackend(RedisBackend):  # type: ignore[misc]
    """:class:`RedisBackend` without per-publish subscriptions; SUCCESS is never overwritten,
    nor a later attempt's state by an earlier attempt's."""

    _set_unless_succeeded: Any = None

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
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = str(task_id)
        self._set_with_state(self.get_key_for_task(task_id), self.encode(meta), state)
        return result

    def _set(self, key: str, value: Any, expires: Any = None) -> None:
        if expires is None:
            expires = self.expires
        if self._set_unless_succeeded is None:
            self._set_unless_succeeded = self.client.register_script(_SET_UNLESS_SUCCEEDED)
        seconds = math.ceil(float(expires)) if expires else 0
        self._set_unless_succeeded(keys=[key], args=[value, seconds])


def backend_url(redis_url: str) -> str:
    """The ``result_backend`` value selecting this class for ``redis_url``."""
    return f"{__name__}:TaskqRedisBackend+{redis_url}"
