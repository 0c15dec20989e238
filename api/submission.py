"""The submission workflow behind ``POST /api/v1/tasks``.

In order: validate the body against the task type's input model; read the queue-depth
breaker (cached per process); then one atomic Redis script: an Idempotency-Key already taken
answers with the stored response (replay), 422 or 409; otherwise, if the breaker admits it,
the task record, the Celery message (built by :mod:`taskq.broker.fast_publish`) and the
answer for replays are written together, so 202 means all of them are in Redis and a refusal
means none is. Any refusal is an :class:`~api.errors.ApiError` with a stable code.

A timeout is not a no. A script that could not be sent is answered ``503 broker_unavailable``
(nothing was accepted). A script that was sent and never answered is settled before the
answer (:mod:`api.settlement`): accepted gives the normal 202, withdrawn (the id is given up
in Redis, so a late run writes nothing) the 503 that says nothing was accepted, and no answer
from Redis within the bound ``503 submission_outcome_unknown`` with the task id, never a claim
that nothing was accepted.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, NoReturn

import anyio.to_thread
from pydantic import BaseModel, ValidationError
from redis.exceptions import OutOfMemoryError

from api import idempotency
from api.breaker import Verdict, saturated_error
from api.deps import ApiResources
from api.errors import (
    BROKER_ERRORS,
    BROKER_UNAVAILABLE,
    OUTCOME_UNKNOWN,
    ApiError,
    broker_unavailable,
    memory_full,
    outcome_unknown,
)
from api.schemas import TaskAccepted, TaskCreate
from api.script_batch import NotReplicated, OutcomeUnknown, ScriptBatcher
from api.settlement import Unsettled, settle
from api.task_records import TaskRecord, encode_record, records_key
from taskq.broker import fast_publish
from taskq.broker.propagation import log_published
from taskq.correlation import correlation_id_var
from taskq.logs.schema import Event
from taskq.search.trace.links import trace_link_header, trace_path
from taskq.tasks.types import TaskType
from taskq.tenants import Caller
from taskq.tracing.messaging import begin_publish

logger = logging.getLogger("taskq.api.tasks")


@dataclass(frozen=True)
class Submitted:
    """The answer to a submission: the body, its status and the headers to send."""

    accepted: TaskAccepted
    status_code: int
    headers: dict[str, str]


@dataclass(frozen=True)
class _Keyed:
    """A submission's Idempotency-Key: its Redis key, fingerprint and stored answer."""

    redis_key: str
    fingerprint: str
    done: idempotency.Record


async def submit(
    body: TaskCreate,
    resources: ApiResources,
    client_api_key: str | None,
    idempotency_key: str | None,
    caller: Caller | None = None,
) -> Submitted:
    """Run the workflow for one POST; raises :class:`ApiError` for every refusal.

    One Redis round trip (:data:`~taskq.broker.fast_publish.SUBMIT`, pipelined with the
    concurrent submissions of this process by :mod:`api.script_batch`): the idempotency key is
    looked at, and if it is free and the breaker admits the task, the task record, the Celery
    message, the queue's doorbell and the stored answer are written together. A replay is
    answered even while the breaker is open (as before: the key is looked at first). A lost
    reply costs one more (:func:`_settled`).
    """
    key = _parse_idempotency_key(idempotency_key)
    task_type, params = _validated(body, resources)
    queue = body.priority
    verdict = await _verdict(resources, queue)
    task_id = str(uuid.uuid4())
    correlation_id = correlation_id_var.get() or ""
    accepted = TaskAccepted(
        task_id=task_id,
        status="PENDING",
        task_type=task_type.name,
        queue=queue,
        correlation_id=correlation_id,
        status_url=f"/api/v1/tasks/{task_id}",
        trace_url=trace_path(correlation_id),
    )
    # The publish span: ended below when the script answered (an error when it refused).
    span = begin_publish({"id": task_id, "task": task_type.celery_name}, queue)
    headers, message = resources.templates[task_type.celery_name].build(
        task_id,
        params.model_dump(mode="json"),
        queue,
        correlation_id,
        span.traceparent(),
        span.state,
    )
    owner = caller.key_id if caller is not None else None
    record = TaskRecord(task_id, task_type.name, queue, correlation_id, time.time(), owner)
    admitted = verdict is None or verdict.allowed
    keys = [
        records_key(task_id),
        fast_publish.queue_list(queue),
        fast_publish.queue_doorbell(queue),
        fast_publish.withdrawn_key(task_id),
    ]
    args: list[str | bytes | int] = [
        encode_record(record),
        resources.settings.result_expires_s,
        message,
        "1" if admitted else "0",
    ]
    answer_headers = {"Location": accepted.status_url, "Link": trace_link_header(correlation_id)}
    keyed = None
    if key is not None and resources.idempotency is not None:
        keyed = _keyed(client_api_key, key, body, accepted, answer_headers)
        keys.append(keyed.redis_key)
        args += [keyed.done.encode(), resources.settings.idempotency_ttl_s]
    try:
        reply = await _run(resources, task_id, keys, args, keyed)
        replayed = _unless_accepted(reply, task_id, keyed, verdict, resources)
    except BaseException as error:
        span.end(getattr(error, "code", None) or type(error).__name__)
        raise
    if replayed is not None:
        span.end()
        return replayed
    log_published(headers, queue, span)
    span.end()
    return Submitted(accepted, 202, answer_headers)


def _unless_accepted(
    reply: Any,
    task_id: str,
    keyed: _Keyed | None,
    verdict: Verdict | None,
    resources: ApiResources,
) -> Submitted | None:
    """None if SUBMIT's (or RESOLVE's) reply means this task was accepted; a replay of
    another request's answer; otherwise the refusal is raised."""
    outcome = _text(reply[0])
    if outcome == "existing":
        stored = idempotency.Record.decode(reply[1])
        if keyed is None or stored.owner != keyed.done.owner:
            return _answer_taken_key(stored, keyed)
        return None  # this submission's own stored answer: an earlier run accepted it
    if outcome in ("withdrawn", "saturated"):
        _refuse(outcome, task_id, verdict, resources)
    # duplicate_id: the record of this fresh uuid4 exists, and only this submission writes
    # it: an earlier run of this same script was accepted.
    if outcome not in ("accepted", "duplicate_id"):
        raise RuntimeError(f"unexpected submit outcome {outcome!r}")
    return None


def _keyed(
    client_api_key: str | None,
    key: str,
    body: TaskCreate,
    accepted: TaskAccepted,
    answer_headers: dict[str, str],
) -> _Keyed:
    identity = idempotency.client_identity(client_api_key)
    request_fingerprint = idempotency.fingerprint(identity, body.model_dump(mode="json"))
    done = idempotency.Record(
        "done",
        request_fingerprint,
        uuid.uuid4().hex,
        idempotency.StoredResponse(202, accepted.model_dump(mode="json"), answer_headers),
    )
    return _Keyed(idempotency.redis_key(identity, key), request_fingerprint, done)


async def _run(
    resources: ApiResources,
    task_id: str,
    keys: list[str],
    args: list[str | bytes | int],
    keyed: _Keyed | None,
) -> Any:
    """SUBMIT's reply, or RESOLVE's if SUBMIT's was lost; 503 when there is neither."""
    script = resources.submit_script
    if script is None:
        raise RuntimeError("the API's resources have no submission script")
    if script.silent_for() > resources.settings.redis_stall_gate_s:
        # Redis has answered nothing past the gate while a batch waits: stalled or cut off,
        # it would leave this one unanswered too, for a socket timeout and a settlement.
        # Unsent, its 503 is certain and immediate.
        raise broker_unavailable(task_id)
    started = asyncio.get_running_loop().time()
    try:
        return await script(keys, args)
    except OutcomeUnknown:
        return await _settled(script, task_id, keyed, resources.settings.result_expires_s, started)
    except NotReplicated:
        # On the master alone: a failover may drop it, so it is not answered as accepted;
        # the id lets the client look (and an Idempotency-Key retry replays or resubmits).
        _log_outcome_unknown(task_id, asyncio.get_running_loop().time() - started)
        raise outcome_unknown(task_id) from None
    except OutOfMemoryError:
        # SUBMIT is a declared writing script: Redis at maxmemory refuses it unrun.
        raise memory_full(task_id) from None
    except BROKER_ERRORS:
        raise broker_unavailable(task_id) from None  # not sent, or refused unrun: known


async def _settled(
    script: ScriptBatcher,
    task_id: str,
    keyed: _Keyed | None,
    withdrawn_ttl_s: int,
    started: float,
) -> Any:
    """RESOLVE's reply for ``task_id``; ``503 submission_outcome_unknown`` if none in time.

    The withdrawn mark lives as long as an issued record, far beyond any stalled command.
    """
    keys = [records_key(task_id), fast_publish.withdrawn_key(task_id)]
    if keyed is not None:
        keys.append(keyed.redis_key)
    try:
        return await settle(
            script.companion(fast_publish.RESOLVE), keys, [withdrawn_ttl_s], started
        )
    except Unsettled:
        _log_outcome_unknown(task_id, asyncio.get_running_loop().time() - started)
        raise outcome_unknown(task_id) from None


def _answer_taken_key(stored: idempotency.Record, keyed: _Keyed | None) -> Submitted:
    """Another request holds the key: its replay, or 422/409."""
    decided = idempotency.decide(stored, keyed.fingerprint if keyed is not None else "")
    if isinstance(decided, idempotency.Replay):
        return _replay(decided.response)
    _refuse_key(decided)


def _refuse(
    outcome: str, task_id: str, verdict: Verdict | None, resources: ApiResources
) -> NoReturn:
    """Nothing was accepted: the breaker refused, or the lost submission was withdrawn.

    A withdrawn submission the breaker had refused gets the answer SUBMIT would have given.
    """
    if verdict is not None and not verdict.allowed:
        raise saturated_error(verdict, resources.settings.breaker_retry_after_s)
    if outcome == "saturated":
        raise RuntimeError("SUBMIT refused a task the breaker admitted")
    _log_withdrawn(task_id)
    raise broker_unavailable(task_id)


def _log_withdrawn(task_id: str) -> None:
    logger.warning(
        "lost submission withdrawn",
        extra={
            "event.action": Event.HTTP_REJECTED,
            "task_id": task_id,
            "http.response.status_code": 503,
            "error.type": BROKER_UNAVAILABLE,
        },
    )


def _log_outcome_unknown(task_id: str, waited_s: float) -> None:
    logger.warning(
        "submission outcome unknown",
        extra={
            "event.action": Event.HTTP_REJECTED,
            "task_id": task_id,
            "http.response.status_code": 503,
            "error.type": OUTCOME_UNKNOWN,
            "duration_ms": round(waited_s * 1000.0, 3),
        },
    )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _verdict(resources: ApiResources, queue: str) -> Verdict | None:
    breaker = resources.breaker
    if breaker is None:
        return None
    if breaker.stale():
        # One blocking, pipelined read every cache_s per process: off the event loop.
        return await anyio.to_thread.run_sync(breaker.check, queue)
    return breaker.check(queue)


def _parse_idempotency_key(raw: str | None) -> str | None:
    try:
        return idempotency.parse_key(raw)
    except idempotency.MalformedKey as exc:
        raise ApiError(400, "invalid_idempotency_key", str(exc)) from None


def _validated(body: TaskCreate, resources: ApiResources) -> tuple[TaskType, BaseModel]:
    task_type = resources.task_types.get(body.task_type)
    if task_type is None:
        raise ApiError(
            422,
            "unknown_task_type",
            f"Unknown task_type {body.task_type!r}.",
            {"allowed": sorted(resources.task_types)},
        )
    try:
        params = task_type.input_model.model_validate(body.data)
    except ValidationError as exc:
        details = [
            {
                "field": ".".join(["data", *(str(p) for p in err["loc"])]),
                "message": err["msg"],
                "type": err["type"],
            }
            for err in exc.errors()
        ]
        raise ApiError(422, "validation_error", "The task data is not valid.", details) from None
    return task_type, params


def _refuse_key(outcome: idempotency.Mismatch | idempotency.InFlight) -> NoReturn:
    _log_idempotency_rejection(outcome)
    if isinstance(outcome, idempotency.Mismatch):
        raise ApiError(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was used with a different request; use a new key.",
        )
    raise ApiError(
        409,
        "idempotency_key_in_flight",
        "A request with this Idempotency-Key is still being processed; retry shortly.",
        headers={"Retry-After": "1"},
    )


def _log_idempotency_rejection(outcome: idempotency.Mismatch | idempotency.InFlight) -> None:
    mismatch = isinstance(outcome, idempotency.Mismatch)
    logger.info(
        "request rejected",
        extra={
            "event.action": Event.HTTP_REJECTED,
            "http.response.status_code": 422 if mismatch else 409,
            "error.type": "idempotency_key_reused" if mismatch else "idempotency_key_in_flight",
        },
    )


def _replay(stored: idempotency.StoredResponse) -> Submitted:
    logger.info(
        "idempotent request replayed",
        extra={
            "event.action": Event.IDEMPOTENT_REPLAY,
            "task_id": stored.body.get("task_id"),
        },
    )
    headers = {**stored.headers, idempotency.REPLAY_HEADER: "true"}
    return Submitted(TaskAccepted.model_validate(stored.body), stored.status_code, headers)
