"""Queue depth as Redis holds it: every priority sub-list of every queue, plus unacked.

kombu's Redis transport splits a queue with message priorities into lists named
``name``, ``name\\x06\\x163``, ``name\\x06\\x166``, ``name\\x06\\x169``; a depth that reads only
``name`` undercounts. Messages a worker holds but has not acknowledged sit in the
``unacked`` hash until they finish or their visibility timeout passes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from redis import Redis

PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED_KEY = "unacked"


@dataclass(frozen=True)
class QueueDepths:
    """Waiting messages per queue and the broker-wide unacknowledged count (and, when read,
    Redis's memory: ``used_memory`` and ``maxmemory``, 0 meaning no limit)."""

    waiting: dict[str, int]
    unacked: int
    memory_used: int = 0
    memory_max: int = 0

    @property
    def total(self) -> int:
        """Everything not yet done: waiting plus unacked."""
        return sum(self.waiting.values()) + self.unacked


def priority_lists(queue: str) -> list[str]:
    """The Redis list names that together hold ``queue``."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS]


def _read(
    client: Redis, names: list[str], memory: bool
) -> tuple[dict[str, dict[int, int]], int, dict[str, object]]:
    """Per queue and priority step, the unacked count and (with ``memory``) ``INFO memory``:
    one pipelined round trip."""
    pipe = client.pipeline(transaction=False)
    for queue in names:
        for key in priority_lists(queue):
            pipe.llen(key)
    pipe.hlen(UNACKED_KEY)
    if memory:
        pipe.info("memory")
    replies = pipe.execute()
    info: dict[str, object] = replies.pop() if memory else {}
    counts = [int(c) for c in replies]
    steps = len(PRIORITY_STEPS)
    by_step = {
        q: dict(zip(PRIORITY_STEPS, counts[i * steps : (i + 1) * steps], strict=True))
        for i, q in enumerate(names)
    }
    return by_step, counts[-1], info


def read_step_depths(client: Redis, queues: Iterable[str]) -> tuple[dict[str, dict[int, int]], int]:
    """Waiting messages per queue and priority step, and the unacked count: one pipelined
    round trip."""
    by_step, unacked, _ = _read(client, list(queues), memory=False)
    return by_step, unacked


def read_depths(client: Redis, queues: Iterable[str], memory: bool = False) -> QueueDepths:
    """All depths in one pipelined round trip, each queue's priority lists summed; with
    ``memory``, Redis's memory use and limit in the same round trip."""
    by_step, unacked, info = _read(client, list(queues), memory)
    return QueueDepths(
        waiting={q: sum(d.values()) for q, d in by_step.items()},
        unacked=unacked,
        memory_used=int(str(info.get("used_memory", 0))),
        memory_max=int(str(info.get("maxmemory", 0))),
    )
