"""At-least-once delivery, made harmless: the execution guard around every task run.

Around every task run (see ``TracedTask.__call__`` in worker/celery_app.py)
:func:`run_guarded` asks the execution guard (:mod:`taskq.broker.delivery.guard`, where the
delivery contract lives) to count this delivery of this attempt, read the task's stored
state, take the attempt's run lease and store STARTED, in one round trip; has
``task.started`` logged (``on_start``: every started line is one counted delivery); then:

1. a copy whose attempt a live holder's other delivery is running waits for it to end
   (``task.waiting``) and goes on as one of the cases below;
2. a task revoked before it started (``DELETE /api/v1/tasks/{id}``; the revocation is
   stored in Redis, so a worker that was away hears it too) never runs: ``task.revoked``,
   and Celery acknowledges the message without storing a state over REVOKED;
3. if the stored state is SUCCESS the task already ran: the stored result is returned
   without running again, and ``duplicate delivery suppressed`` is logged
   (``task.duplicate_suppressed``) instead of a second ``task.succeeded``;
4. past ``1 + max_redeliveries`` deliveries the task ends as FAILURE with
   :class:`PoisonTaskError` instead of running (``task.poison``; celery#9082: nothing else
   caps the redeliveries of a task that kills its worker);
5. otherwise it runs the task; Celery stores the SUCCESS, which answers every later copy;
   a failure or retry ends the run lease, so a redelivered copy may run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.exceptions import Ignore, Reject

from taskq.broker.delivery.guard import Begun, ExecutionGuard
from taskq.logs.schema import Event
from worker.task_lifecycle import mark_duplicate

logger = logging.getLogger("taskq.worker.dedup")


class PoisonTaskError(RuntimeError):
    """The task was delivered more often than the cap allows; it is not run again."""


def is_poison(deliveries: int, max_redeliveries: int) -> bool:
    """True when this delivery exceeds the first one plus ``max_redeliveries``."""
    return deliveries > 1 + max_redeliveries


def run_guarded(
    guard: ExecutionGuard,
    task_id: str,
    retries: int,
    tag: str,
    run: Callable[[], Any],
    on_start: Callable[[int], None] = lambda deliveries: None,
    started_meta: Callable[[], tuple[bytes | str, int]] = lambda: ("", 0),
) -> Any:
    """Run ``run`` at most once per task id; see the module docstring. ``on_start`` is
    called with the delivery count once this delivery is counted, before anything else;
    ``started_meta`` gives the STARTED state to store and its expiry."""
    meta, expires_s = started_meta()
    begun = guard.begin(task_id, retries, tag, meta, expires_s)
    if begun.verdict not in ("revoked", "fenced", "unsure"):  # they never start, not even on paper
        on_start(begun.deliveries)
    if begun.verdict == "busy":
        begun = guard.wait_turn(task_id, retries, tag, begun.deliveries)
    if begun.verdict == "fenced":
        logger.error(
            "delivery refused: this worker's lease expired",
            extra={"event.action": Event.TASK_FENCED, "task_id": task_id},
        )
        # Back to its queue (or already there: the sweep gave it back); this worker, presumed
        # dead, must not run it beside the copy that runs elsewhere.
        raise Reject("this worker's lease expired", requeue=True)
    if begun.verdict == "unsure":
        # The master may lose this start in a failover: back to the queue, to run once there.
        raise Reject("start not confirmed by a replica", requeue=True)
    if begun.verdict == "revoked":
        logger.warning(
            "revoked task not run",
            extra={"event.action": Event.TASK_REVOKED, "task_id": task_id},
        )
        # Ignore: Celery acks the message and stores nothing over the stored REVOKED.
        raise Ignore()
    if begun.verdict == "done":
        _suppress(task_id, begun)
        return begun.previous_result
    if is_poison(begun.deliveries, guard.max_redeliveries):
        logger.error(
            "poison task stopped",
            extra={
                "event.action": Event.TASK_POISON,
                "task_id": task_id,
                "task.retries": retries,
                "task.deliveries": begun.deliveries,
            },
        )
        guard.release(task_id, retries, tag)
        raise PoisonTaskError(
            f"task delivered {begun.deliveries} times (cap: 1 + {guard.max_redeliveries} "
            "redeliveries); it is not run again"
        )
    try:
        return run()
    except BaseException:
        guard.release(task_id, retries, tag)
        raise


def _suppress(task_id: str, begun: Begun) -> None:
    mark_duplicate(task_id)  # Celery's own "succeeded" line is dropped for this delivery
    logger.warning(
        "duplicate delivery suppressed",
        extra={
            "event.action": Event.TASK_DUPLICATE,
            "task_id": task_id,
            "task.deliveries": begun.deliveries,
        },
    )
