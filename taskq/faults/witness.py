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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from redis import Redis
from redis.exceptions import RedisError

#: Database of the witness counters (the broker and results use database 0).
WITNESS_DB = 15
RUNS_KEY = "taskq:witness:runs"
OVERLAPS_KEY = "taskq:witness:overlaps"
RUNNING_PREFIX = "taskq:witness:running:"
#: A witness write keeps trying this long (longer than any broker stall a drill makes).
PATIENCE_S = 90.0

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
    client: Redis = Redis.from_url(redis_url, db=WITNESS_DB, socket_timeout=5)
    return client


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
    running = RUNNING_PREFIX + task_id

    def enter() -> Any:
        pipe = client.pipeline(transaction=True)
        pipe.hincrby(RUNS_KEY, task_id, 1)
        pipe.incr(running)
        pipe.expire(running, 86_400)
        return pipe.execute()

    _, now_running, _ = _patiently(enter)
    if int(now_running) > 1:
        _patiently(lambda: client.hincrby(OVERLAPS_KEY, task_id, 1))
    try:
        yield
    finally:
        _patiently(lambda: client.decr(running))


def executions(client: Redis, task_ids: Iterable[str] | None = None) -> Executions:
    """The witness's counts (of ``task_ids``, or of every task it saw)."""
    runs = {_text(k): int(v) for k, v in client.hgetall(RUNS_KEY).items()}
    overlaps = {_text(k): int(v) for k, v in client.hgetall(OVERLAPS_KEY).items()}
    if task_ids is not None:
        wanted = set(task_ids)
        runs = {k: v for k, v in runs.items() if k in wanted}
        overlaps = {k: v for k, v in overlaps.items() if k in wanted}
    return Executions(runs, overlaps)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
