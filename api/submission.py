"""The submission workflow behind ``POST /api/v1/tasks``.

In order: validate the body against the task type's input model; claim the
Idempotency-Key (atomic ``SET NX``: a replay answers with the stored response); admit the
submission through the queue-depth breaker; enqueue it (the task record, then the Celery
message: 202 means both are in Redis); store the answer for replays. Any refusal is an
:class:`~api.errors.ApiError` with a stable code; a claim is released if a later step fails.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from api import idempotency
from api.breaker import saturated_error
from api.deps import ApiResources
from api.errors import BROKER_ERRORS, ApiError, broker_unavailable
from api.schemas import Priority, TaskAccepted, TaskCreate
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


def submit(
    body: TaskCreate,
    resources: ApiResources,
    client_api_key: str | None,
    idempotency_key: str | None,
) -> Submitted:
    """Run the workflow for one POST; raises :class:`ApiError` for every refusal."""
    key = _parse_idempotency_key(idempotency_key)
    task_type, params = _validated(body, resources)
    claim: idempotency.Claimed | None = None
    if key is not None and resources.idempotency is not None:
        outcome = _claim(resources.idempotency, key, body, client_api_key)
        if isinstance(outcome, idempotency.Replay):
            return _replay(outcome.response)
        claim = outcome
    try:
        _admit(resources, body.priority)
        accepted = _enqueue(resources, task_type, params, body.priority)
    except BaseException:
        if claim is not None:
            _release_quietly(resources, claim)
        raise
    status_url = accepted.status_url
    if claim is not None and resources.idempotency is not None:
        stored = idempotency.StoredResponse(
            202, accepted.model_dump(mode="json"), {"Location": status_url}
        )
        # The task is queued whatever happens here: never turn that into an error.
        with contextlib.suppress(*BROKER_ERRORS):
            resources.idempotency.complete(claim, stored)
    return Submitted(accepted, 202, {"Location": status_url})


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


def _claim(
    store: idempotency.IdempotencyStore, key: str, body: TaskCreate, client_api_key: str | None
) -> idempotency.Claimed | idempotency.Replay:
    identity = idempotency.client_identity(client_api_key)
    request_fingerprint = idempotency.fingerprint(identity, body.model_dump(mode="json"))
    try:
        outcome = store.claim(identity, key, request_fingerprint)
    except BROKER_ERRORS:
        raise broker_unavailable() from None
    if isinstance(outcome, idempotency.Mismatch | idempotency.InFlight):
        _log_idempotency_rejection(outcome)
    if isinstance(outcome, idempotency.Mismatch):
        raise ApiError(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was used with a different request; use a new key.",
        )
    if isinstance(outcome, idempotency.InFlight):
        raise ApiError(
            409,
            "idempotency_key_in_flight",
            "A request with this Idempotency-Key is still being processed; retry shortly.",
            headers={"Retry-After": "1"},
        )
    return outcome


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


def _release_quietly(resources: ApiResources, claim: idempotency.Claimed) -> None:
    # If Redis is down the claim expires by itself after idempotency_lock_s.
    if resources.idempotency is not None:
        with contextlib.suppress(*BROKER_ERRORS):
            resources.idempotency.release(claim)


def _admit(resources: ApiResources, queue: str) -> None:
    if resources.breaker is None:
        return
    verdict = resources.breaker.check(queue)
    if not verdict.allowed:
        raise saturated_error(verdict, resources.settings.breaker_retry_after_s)


def _enqueue(
    resources: ApiResources, task_type: TaskType, params: BaseModel, queue: Priority
) -> TaskAccepted:
    task_id = str(uuid.uuid4())
    correlation_id = correlation_id_var.get() or ""
    try:
        resources.records.create(task_id, task_type.name, queue, correlation_id)
        resources.celery.send_task(
            task_type.celery_name,
            kwargs=params.model_dump(mode="json"),
            queue=queue,
            task_id=task_id,
        )
    except BROKER_ERRORS:
        _forget_quietly(resources, task_id)
        raise broker_unavailable() from None
    return TaskAccepted(
        task_id=task_id,
        status="PENDING",
        task_type=task_type.name,
        queue=queue,
        correlation_id=correlation_id,
        status_url=f"/api/v1/tasks/{task_id}",
    )


def _forget_quietly(resources: ApiResources, task_id: str) -> None:
    # Redis is down: the orphan record expires with its TTL and names no queued task.
    with contextlib.suppress(*BROKER_ERRORS):
        resources.records.delete(task_id)
