"""The execution guard: an attempt's code runs inside its run lease, at most once per task.

Called in the pool process around a task's code (see ``worker/dedup.py``). :meth:`begin`
counts the delivery (the poison cap), reads the completion record and takes the attempt's
run lease, in one script (:data:`scripts.BEGIN`). A copy that finds a live holder's other
delivery running the attempt waits (:meth:`wait_turn`) instead of running beside it.
:meth:`finish` stores the completion record of a success and ends the run lease.

When Redis cannot be reached the attempt runs unguarded: the broker that could have
redelivered it is unreachable too, and a completion record lost that way costs a repeated
pure computation, never a wrong answer.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from redis.exceptions import RedisError

from taskq.broker.delivery import keys, scripts
from taskq.broker.delivery.lease import current_holder
from taskq.logs.schema import Event

logger = logging.getLogger("taskq.broker.guard")

Verdict = Literal["run", "done", "busy"]

#: The request field (set by the worker's request class) naming the message's delivery tag.
REQUEST_TAG_FIELD = "x_delivery_tag"

#: How often a waiting copy looks whether the running one ended or its holder died.
WAIT_POLL_S = 0.25


@dataclass(frozen=True)
class Begun:
    """What the guard found at an attempt's start."""

    verdict: Verdict
    previous_result: Any
    deliveries: int


def decode_completion(raw: bytes | str | None) -> tuple[bool, Any]:
    """(completed, result) of a stored completion record."""
    if raw in (None, b"", ""):
        return False, None
    try:
        return True, json.loads(raw)["result"]
    except (ValueError, KeyError, TypeError):
        return False, None


class ExecutionGuard:
    """Run leases, completion records and delivery counters in Redis."""

    def __init__(self, client: Any, ttl_s: int, max_redeliveries: int) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self.max_redeliveries = max_redeliveries

    def begin(self, task_id: str, retries: int, tag: str, count: bool = True) -> Begun:
        """Count this delivery (``count``), read the completion record, take the run lease."""
        try:
            verdict, raw, deliveries = self._client.eval(
                scripts.BEGIN,
                3,
                keys.done_key(task_id),
                keys.deliveries_key(task_id, retries),
                keys.run_key(task_id, retries),
                current_holder(),
                tag,
                self._ttl_s,
                1 if count else 0,
            )
        except (RedisError, OSError):
            return Begun("run", None, 1)
        name = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        completed, result = decode_completion(raw)
        if name == "done" and completed:
            return Begun("done", result, int(deliveries))
        return Begun("busy" if name == "busy" else "run", None, int(deliveries))

    def wait_turn(self, task_id: str, retries: int, tag: str, deliveries: int) -> Begun:
        """Wait until the running copy ended (``done``) or its holder died (``run``)."""
        logger.warning(
            "delivery waits for the running copy",
            extra={"event.action": Event.TASK_WAITING, "task_id": task_id},
        )
        while True:
            time.sleep(WAIT_POLL_S)
            begun = self.begin(task_id, retries, tag, count=False)
            if begun.verdict != "busy":
                return Begun(begun.verdict, begun.previous_result, deliveries)

    def finish(self, task_id: str, retries: int, tag: str, result: Any, succeeded: bool) -> None:
        """Store a success's completion record and end the run lease if it is still ours."""
        record = ""
        if succeeded:
            try:
                record = json.dumps({"result": result})
            except (TypeError, ValueError):
                record = ""  # not JSON: no record, a redelivery computes it again
        try:
            self._client.eval(
                scripts.FINISH,
                2,
                keys.done_key(task_id),
                keys.run_key(task_id, retries),
                f"{current_holder()}|{tag}",
                record,
                self._ttl_s,
            )
        except (RedisError, OSError):
            logger.warning(
                "completion record not stored",
                extra={"event.action": Event.TASK_COMPLETION_NOT_STORED, "task_id": task_id},
            )
