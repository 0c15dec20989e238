"""The execution witness: how often each drill task's code really ran, and whether two runs
of one task ever overlapped, recorded where the delivery machinery never looks.

Drill tasks (worker/tasks/drills.py) wrap their work in :func:`witnessed`: it counts the
run in a Redis database of its own (:data:`WITNESS_DB`, never used by the broker, the result
backend or the guards) and keeps a "running now" counter per task, so a second run that
starts while the first is still running is recorded as an overlap. Drills and tests read
the counts with :func:`executions` to reconcile what clients were promised (one run per
accepted task) with what happened. A write that cannot reach Redis is retried until it
lands (bounded): the witness must never drop a run, only be late.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from redis import Redis
from redis.exceptions import RedisError

from taskq.redis_clients import sync_client

#: Database of the witness counters (the broker and results use database 0).
WITNESS_DB = 15
TASKS_KEY = "taskq:witness:tasks"
RUNS_PREFIX = "taskq:witness:runs:"
RUNNING_PREFIX = "taskq:witness:running:"
OVERLAPS_PREFIX = "taskq:witness:overlaps:"
#: A witness write keeps trying this long (longer than any broker stall a drill makes).
PATIENCE_S = 90.0
#: Every write is idempotent (sets of run ids, not counters): a write retried after its reply
#: was lost (a stalled Redis ran it) counts nothing twice.
_ENTER = """
redis.call('SADD', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[2], 86400)
redis.call('EXPIRE', KEYS[3], 86400)
if redis.call('SCARD', KEYS[3]) > 1 then
  redis.call('SADD', KEYS[4], ARGV[1])
  redis.call('EXPIRE', KEYS[4], 86400)
end
return 1
"""

T = TypeVar("T")


@dataclass(frozen=True)
class Executions:
    """What the witness saw of some tasks."""

    runs: dict[str, int]
    overlaps: dict[str, int]

    def duplicated(self) -> list[str]:
        """Tasks whose code ran more than once."""
        return sorted(task for task, n in self.runs.items() if n > 1)

    def never_ran(self, task_ids: Iterable[str]) -> list[str]:
        """Of ``task_ids``, those whose code never ran."""
        return sorted(task for task in task_ids if self.runs.get(task, 0) == 0)


def witness_client(redis_url: str) -> Redis:
    """A client of the witness database on the broker's Redis server."""
    return sync_client(redis_url, db=WITNESS_DB, socket_timeout=5)


def _patiently(write: Callable[[], T]) -> T:
    deadline = time.monotonic() + PATIENCE_S
    while True:
        try:
            return write()
        except (RedisError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextmanager
def witnessed(client: Redis, task_id: str) -> Iterator[None]:
    """Record one run of ``task_id`` around the block (and an overlap, if another run of
    it is in progress)."""
    run_id = uuid.uuid4().hex
    running = RUNNING_PREFIX + task_id
    keys = [TASKS_KEY, RUNS_PREFIX + task_id, running, OVERLAPS_PREFIX + task_id]
    _patiently(lambda: client.eval(_ENTER, len(keys), *keys, run_id, task_id))
    try:
        yield
    finally:
        _patiently(lambda: client.srem(running, run_id))


def executions(client: Redis, task_ids: Iterable[str] | None = None) -> Executions:
    """The witness's counts (of ``task_ids``, or of every task it saw)."""
    wanted = (
        sorted(_text(t) for t in client.smembers(TASKS_KEY)) if task_ids is None else list(task_ids)
    )
    pipe = client.pipeline(transaction=False)
    for task_id in wanted:
        pipe.scard(RUNS_PREFIX + task_id)
        pipe.scard(OVERLAPS_PREFIX + task_id)
    counts = pipe.execute() if wanted else []
    runs = {t: int(counts[2 * i]) for i, t in enumerate(wanted) if int(counts[2 * i])}
    overlaps = {t: int(counts[2 * i + 1]) for i, t in enumerate(wanted) if int(counts[2 * i + 1])}
    return Executions(runs, overlaps)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
