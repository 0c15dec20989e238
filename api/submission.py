"""The submission workflow behind ``POST /api/v1/tasks``.

In order: validate the body against the task type's input model; read the queue-depth
breaker (cached per process); then one atomic Redis script: an Idempotency-Key already taken
answers with the stored response (replay), 422 or 409; otherwise, if the breaker admits it,
the task record, the Celery message (built by :mod:`taskq.broker.fast_publish`) and the
answer for replays are written together, so 202 means all of them are in Redis and a refusal
means none is. Any refusal is an :class:`~api.errors.ApiError` with a stable code.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import NoReturn

import anyio.to_thread
from pydantic import BaseModel, ValidationError

from api import idempotency
from api.breaker import Verdict, saturated_error
from api.deps import ApiResources
from api.errors import BROKER_ERRORS, ApiError, broker_unavailable
from api.schemas import TaskAccepted, TaskCreate
from api.task_records import TaskRecord, encode_record, records_key
from taskq.broker import fast_publish
from taskq.broker.propagation import log_published
from taskq.correlation import correlation_id_var
from taskq.logs.schema import Event
from taskq.tasks.types import TaskType

logger = logging.getLogger("taskq.api.tasks")


@dataclass(frozen=True)
class Submitted:
    """The answer to a submission: the body, its status and the headers to send."""

    accepted: TaskAccepted
    status_code: int
    headers: dict[str, str]


async def submit(
    body: TaskCreate,
    resources: ApiResources,
    client_api_key: str | None,
    idempotency_key: str | None,
) -> Submitted:
    """Run the workflow for one POST; raises :class:`ApiError` for every refusal.

    One Redis round trip (:data:`~taskq.broker.fast_publish.SUBMIT`, pipelined with the
    concurrent submissions of this process by :mod:`api.script_batch`): the idempotency key is
    looked at, and if it is free and the breaker admits the task, the task record, the Celery
    message, the queue's doorbell and the stored answer are written together. A replay is
    answered even while the breaker is open (as before: the key is looked at first).
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
    )
    headers, message = resources.templates[task_type.celery_name].build(
        task_id, params.model_dump(mode="json"), queue, correlation_id
    )
    record = TaskRecord(task_id, task_type.name, queue, correlation_id, time.time())
    keys = [
        records_key(task_id),
        fast_publish.queue_list(queue),
        fast_publish.queue_doorbell(queue),
    ]
    args: list[str | bytes | int] = [
        encode_record(record),
        resources.settings.result_expires_s,
        message,
        "1" if verdict is None or verdict.allowed else "0",
    ]
    request_fingerprint = ""
    answer_headers = {"Location": accepted.status_url}
    if key is not None and resources.idempotency is not None:
        identity = idempotency.client_identity(client_api_key)
        request_fingerprint = idempotency.fingerprint(identity, body.model_dump(mode="json"))
        done = idempotency.Record(
            "done",
            request_fingerprint,
            uuid.uuid4().hex,
            idempotency.StoredResponse(202, accepted.model_dump(mode="json"), answer_headers),
        )
        keys.append(idempotency.redis_key(identity, key))
        args += [done.encode(), resources.settings.idempotency_ttl_s]
    if resources.submit_script is None:
        raise RuntimeError("the API's resources have no submission script")
    try:
        reply = await resources.submit_script(keys, args)
    except BROKER_ERRORS:
        raise broker_unavailable() from None
    outcome = _text(reply[0])
    if outcome == "existing":
        decided = idempotency.decide(idempotency.Record.decode(reply[1]), request_fingerprint)
        if isinstance(decided, idempotency.Replay):
            return _replay(decided.response)
        _refuse_key(decided)
    if outcome == "saturated" and verdict is not None:
        raise saturated_error(verdict, resources.settings.breaker_retry_after_s)
    if outcome != "accepted":
        raise RuntimeError(f"unexpected submit outcome {outcome!r}")
    log_published(headers, queue)
    return Submitted(accepted, 202, answer_headers)


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
