"""Records of the task ids this API issued, kept in Redis for ``result_expires``.

Celery cannot tell an unknown id from a queued one (both read as PENDING); the record can,
and it remembers the task type, queue and correlation id for the status endpoint, and the
key id of the API key that submitted the task (its owner; None with API keys off): the
record is written by the submission script with the task, so a task never exists without
its owner.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from redis import Redis

KEY_PREFIX = "taskq:task:"


@dataclass(frozen=True)
class TaskRecord:
    """What the API knows about a task it accepted."""

    task_id: str
    task_type: str
    queue: str
    correlation_id: str
    submitted_at: float
    #: Key id of the submitting API key (None: submitted with API keys off).
    owner: str | None = None


def records_key(task_id: str) -> str:
    """Redis key of ``task_id``'s record."""
    return KEY_PREFIX + task_id


def encode_record(record: TaskRecord) -> str:
    """The stored form of ``record`` (what :meth:`TaskRecords.get` reads)."""
    return json.dumps(asdict(record))


class TaskRecords:
    """Store of :class:`TaskRecord` in Redis with a TTL."""

    def __init__(self, client: Redis, ttl_s: int) -> None:
        self._client = client
        self._ttl_s = ttl_s

    def create(self, task_id: str, task_type: str, queue: str, correlation_id: str) -> TaskRecord:
        """Store a new record; raises if the id exists (fresh uuid4s: it never should)."""
        record = TaskRecord(task_id, task_type, queue, correlation_id, time.time())
        stored = self._client.set(
            records_key(task_id), encode_record(record), nx=True, ex=self._ttl_s
        )
        if not stored:
            raise RuntimeError("task id already issued")
        return record

    def get(self, task_id: str) -> TaskRecord | None:
        """The record of ``task_id``, or None if this API never issued it (or it expired)."""
        raw = self._client.get(KEY_PREFIX + task_id)
        if raw is None:
            return None
        return TaskRecord(**json.loads(raw))

    def delete(self, task_id: str) -> None:
        """Forget ``task_id`` (its publish failed, so it was never accepted)."""
        self._client.delete(KEY_PREFIX + task_id)
