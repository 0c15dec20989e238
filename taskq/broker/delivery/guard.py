"""The execution guard: an attempt's code runs inside its run lease, at most once per task.

Called in the pool process around a task's code (see ``worker/dedup.py``). :meth:`begin`
counts the delivery (the poison cap), reads the task's result meta (a stored SUCCESS is
the completion record: a later copy answers its result instead of running), takes the
attempt's run lease and writes STARTED, in one script (:data:`scripts.BEGIN`). A copy that
finds a live holder's other delivery running the attempt waits (:meth:`wait_turn`) instead
of running beside it. :meth:`release` ends the run lease of an attempt that did not
succeed; a success needs no second round trip (its SUCCESS meta, written by the result
backend, answers every later copy).

When Redis cannot be reached the attempt runs unguarded: the broker that could have
redelivered it is unreachable too (its message stays held by this worker's lease).

With replicas (``wait_replicas`` > 0) the start is pipelined with ``WAIT``: the code runs
only once a replica has the run lease and, being earlier in the master's stream, the pop's
held record. Short of that (WAIT timed out, or the connection broke: the master may be
gone and its writes with it) the verdict is ``unsure``: nothing runs, the message goes back
to its queue by compare-and-move, and the copy that runs is the only one (a new master
that lacks the held record has the message in its queue anyway). A master that is still
there gets the delivery's count taken back: requeues for a slow replica are no deliveries
toward the poison cap.
"""

from __future__ import annotations

import contextlib
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

Verdict = Literal["run", "done", "busy", "revoked", "fenced", "unsure"]

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
    """(succeeded, result) of a stored result meta (JSON, as the backend writes it)."""
    if raw in (None, b"", ""):
        return False, None
    try:
        meta = json.loads(raw)
    except (ValueError, TypeError):
        return False, None
    if not isinstance(meta, dict) or meta.get("status") != "SUCCESS":
        return False, None
    return True, meta.get("result")


class ExecutionGuard:
    """Run leases and delivery counters in Redis, beside the result backend's metas."""

    def __init__(
        self,
        client: Any,
        meta_key: Any,
        ttl_s: int,
        max_redeliveries: int,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1_000,
    ) -> None:
        """``meta_key(task_id)`` names a task's result meta (the backend's key);
        ``wait_replicas`` > 0: a start counts only once that many replicas have it."""
        self._client = client
        self._meta_key = meta_key
        self._ttl_s = ttl_s
        self.max_redeliveries = max_redeliveries
        self._wait = (wait_replicas, wait_timeout_ms)
        self._begin = client.register_script(scripts.BEGIN) if client is not None else None
        self._release = client.register_script(scripts.RELEASE_RUN) if client is not None else None

    def begin(
        self,
        task_id: str,
        retries: int,
        tag: str,
        started_meta: bytes | str = "",
        meta_expires_s: int = 0,
        count: bool = True,
    ) -> Begun:
        """Count this delivery (``count``), read the completion, take the run lease and
        write ``started_meta``."""
        script_keys = [
            self._meta_key(task_id),
            keys.deliveries_key(task_id, retries),
            keys.run_key(task_id, retries),
            keys.revoked_key(task_id),
        ]
        args = [
            current_holder(),
            tag,
            self._ttl_s,
            1 if count else 0,
            started_meta,
            meta_expires_s,
        ]
        replicas, timeout_ms = self._wait
        try:
            if replicas <= 0:
                verdict, raw, deliveries = self._begin(keys=script_keys, args=args)  # type: ignore[misc]
            else:
                pipe = self._client.pipeline(transaction=False)
                self._begin(keys=script_keys, args=args, client=pipe)  # type: ignore[misc]
                pipe.wait(replicas, timeout_ms)
                (verdict, raw, deliveries), acked = pipe.execute()
                if int(acked) < replicas:
                    if int(deliveries) > 0:
                        self._uncount(task_id, retries)
                    return self._unsure(task_id)
        except (RedisError, OSError):
            if replicas > 0:
                return self._unsure(task_id)
            return Begun("run", None, 1)
        name = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        succeeded, result = decode_completion(raw)
        if name == "done" and succeeded:
            return Begun("done", result, int(deliveries))
        verdict_of: dict[str, Verdict] = {"busy": "busy", "revoked": "revoked", "fenced": "fenced"}
        return Begun(verdict_of.get(name, "run"), None, int(deliveries))

    def _uncount(self, task_id: str, retries: int) -> None:
        """Take back the count of a delivery that will not run: a replica slow for a while
        must not make a task poison by requeueing it."""
        # Failing, the master is gone, and with it (most likely) the count.
        with contextlib.suppress(RedisError, OSError):
            self._client.decr(keys.deliveries_key(task_id, retries))

    def _unsure(self, task_id: str) -> Begun:
        logger.warning(
            "start not confirmed by a replica",
            extra={"event.action": Event.TASK_START_UNCONFIRMED, "task_id": task_id},
        )
        return Begun("unsure", None, 0)

    def wait_turn(self, task_id: str, retries: int, tag: str, deliveries: int) -> Begun:
        """Wait until the running copy succeeded (``done``), or ended otherwise or lost its
        holder (``run``: the run lease is now ours; or ``revoked`` meanwhile)."""
        logger.warning(
            "delivery waits for the running copy",
            extra={"event.action": Event.TASK_WAITING, "task_id": task_id},
        )
        while True:
            time.sleep(WAIT_POLL_S)
            begun = self.begin(task_id, retries, tag, count=False)
            if begun.verdict != "busy":
                return Begun(begun.verdict, begun.previous_result, deliveries)

    def release(self, task_id: str, retries: int, tag: str) -> None:
        """End the run lease of an attempt that did not succeed, if it is still ours."""
        try:
            self._release(  # type: ignore[misc]
                keys=[keys.run_key(task_id, retries)], args=[f"{current_holder()}|{tag}"]
            )
        except (RedisError, OSError):
            logger.warning(
                "run lease not released",
                extra={"event.action": Event.RUN_LEASE_NOT_RELEASED, "task_id": task_id},
            )


RevokeOutcome = Literal["revoked", "running", "finished"]


def revoke(
    client: Any, meta_key: str, task_id: str, revoked_meta: bytes | str, expires_s: int
) -> tuple[RevokeOutcome, str]:
    """Revoke ``task_id`` unless it started: ``(outcome, stored status)``. Atomic with the
    start script, so a task either never starts or was running/finished before."""
    outcome, status = client.eval(
        scripts.REVOKE, 2, meta_key, keys.revoked_key(task_id), revoked_meta, expires_s
    )
    name = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
    state = status.decode() if isinstance(status, bytes) else str(status)
    return name, state  # type: ignore[return-value]
