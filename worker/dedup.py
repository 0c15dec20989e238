"""At-least-once delivery, made harmless: duplicate suppression and a poison-task cap.

Redis delivers a message again when a worker dies holding it (``acks_late`` +
``reject_on_worker_lost``, visibility timeout), and nothing stops a message that kills its
worker from being delivered forever (celery#9082). Around every task run (see
``TracedTask.__call__`` in worker/celery_app.py) :func:`run_guarded` reads the task's
completion record and counts this delivery of this attempt (task id + retry number; Celery
retries are new attempts, not redeliveries) in one round trip, has ``task.started`` logged
(``on_start``: every started line is one counted delivery), then:

1. if there is a completion record the task already succeeded: the stored result is
   returned without running again, and ``duplicate delivery suppressed`` is logged
   (``task.duplicate_suppressed``) instead of a second ``task.succeeded``;
2. past ``1 + max_redeliveries`` deliveries the task ends as FAILURE with
   :class:`PoisonTaskError` instead of running (``task.poison``);
3. otherwise it runs the task and stores its result as the completion record for ``ttl_s``.

The records are best-effort: when Redis cannot be reached the task simply runs (every task
is idempotent, so a lost record costs a repeated computation, never a wrong answer).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from taskq.logs.schema import Event
from worker.task_lifecycle import mark_duplicate

logger = logging.getLogger("taskq.worker.dedup")

DONE_PREFIX = "taskq:done:"
DELIVERIES_PREFIX = "taskq:deliveries:"


class PoisonTaskError(RuntimeError):
    """The task was delivered more often than the cap allows; it is not run again."""


@dataclass(frozen=True)
class DeliveryState:
    """What Redis says about a delivery before it runs."""

    previous_result: Any
    completed: bool
    deliveries: int


def done_key(task_id: str) -> str:
    """Redis key of a task's completion record."""
    return DONE_PREFIX + task_id


def deliveries_key(task_id: str, retries: int) -> str:
    """Redis key of the delivery counter of one attempt."""
    return f"{DELIVERIES_PREFIX}{task_id}:{retries}"


def is_poison(deliveries: int, max_redeliveries: int) -> bool:
    """True when this delivery exceeds the first one plus ``max_redeliveries``."""
    return deliveries > 1 + max_redeliveries


def decode_completion(raw: bytes | str | None) -> tuple[bool, Any]:
    """(completed, result) of a stored completion record."""
    if raw is None:
        return False, None
    try:
        return True, json.loads(raw)["result"]
    except (ValueError, KeyError, TypeError):
        return False, None


class DeliveryGuard:
    """Completion records and delivery counters in Redis."""

    def __init__(self, client: Any, ttl_s: int, max_redeliveries: int) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self.max_redeliveries = max_redeliveries

    def begin(self, task_id: str, retries: int) -> DeliveryState:
        """Read the completion record and count this delivery, in one round trip."""
        counter = deliveries_key(task_id, retries)
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.get(done_key(task_id))
            pipe.incr(counter)
            pipe.expire(counter, self._ttl_s)
            raw, deliveries, _ = pipe.execute()
        except (RedisError, OSError):
            return DeliveryState(None, False, 1)
        completed, result = decode_completion(raw)
        return DeliveryState(result, completed, int(deliveries))

    def complete(self, task_id: str, result: Any) -> None:
        """Store ``result`` as the completion record (skipped if it is not JSON)."""
        try:
            payload = json.dumps({"result": result})
        except (TypeError, ValueError):
            return
        try:
            self._client.set(done_key(task_id), payload, ex=self._ttl_s)
        except (RedisError, OSError):
            logger.warning(
                "completion record not stored",
                extra={"event.action": "task.completion_not_stored", "task_id": task_id},
            )


def run_guarded(
    guard: DeliveryGuard,
    task_id: str,
    retries: int,
    run: Callable[[], Any],
    on_start: Callable[[int], None] = lambda deliveries: None,
) -> Any:
    """Run ``run`` at most once per task id; see the module docstring. ``on_start`` is
    called with the delivery count once this delivery is counted, before anything else."""
    state = guard.begin(task_id, retries)
    on_start(state.deliveries)
    if state.completed:
        mark_duplicate(task_id)  # Celery's own "succeeded" line is dropped for this delivery
        logger.warning(
            "duplicate delivery suppressed",
            extra={
                "event.action": Event.TASK_DUPLICATE,
                "task_id": task_id,
                "task.deliveries": state.deliveries,
            },
        )
        return state.previous_result
    if is_poison(state.deliveries, guard.max_redeliveries):
        logger.error(
            "poison task stopped",
            extra={
                "event.action": Event.TASK_POISON,
                "task_id": task_id,
                "task.retries": retries,
                "task.deliveries": state.deliveries,
            },
        )
        raise PoisonTaskError(
            f"task delivered {state.deliveries} times (cap: 1 + {guard.max_redeliveries} "
            "redeliveries); it is not run again"
        )
    result = run()
    guard.complete(task_id, result)
    return result
