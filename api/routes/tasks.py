"""/api/v1/tasks: submit, inspect and revoke tasks.

Handlers are plain ``def``: FastAPI runs them in its thread pool, so the blocking Redis and
Celery calls never stall the event loop (a blocking publish inside ``async def`` would).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Annotated, Any

from celery import states
from fastapi import APIRouter, Header, Path, Request, Response
from kombu.exceptions import KombuError
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError

from api import idempotency
from api.auth import ApiKeyDep, presented_key
from api.breaker import saturated_error
from api.deps import ApiResources, ResourcesDep
from api.errors import ApiError
from api.metrics import metrics_of
from api.schemas import ErrorBody, Priority, TaskAccepted, TaskCreate, TaskError, TaskStatus
from taskq.correlation import correlation_id_var
from taskq.logs.schema import Event
from taskq.tasks.types import TaskType

logger = logging.getLogger("taskq.api.tasks")
router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"], dependencies=[ApiKeyDep])

BROKER_ERRORS: tuple[type[BaseException], ...] = (RedisError, KombuError, OSError)
RETRY_AFTER_S = "5"
TaskIdPath = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 422, 503)
}
_SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed Idempotency-Key."},
    413: {"model": ErrorBody, "description": "Body over client_max_body_size (nginx)."},
    429: {"model": ErrorBody, "description": "Rate limited (nginx)."},
}


def _broker_unavailable() -> ApiError:
    return ApiError(
        503,
        "broker_unavailable",
        "The task broker is unavailable; nothing was accepted. Retry later.",
        headers={"Retry-After": RETRY_AFTER_S},
    )


@router.post(
    "",
    status_code=202,
    response_model=TaskAccepted,
    responses={**_ERRORS, **_SUBMIT_ERRORS},
)
def create_task(
    body: TaskCreate,
    resources: ResourcesDep,
    request: Request,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=idempotency.HEADER,
            description="Makes retries safe: the same key with the same body answers with "
            "the original response (same task_id, header Idempotent-Replayed: true); with a "
            "different body 422; while the first request is in flight 409. 1-255 characters "
            "of A-Z a-z 0-9 . _ : ~ + / = -, optionally in double quotes; otherwise 400.",
        ),
    ] = None,
) -> TaskAccepted:
    """Validate and enqueue a task; 202 means it is durably queued in Redis."""
    metrics = metrics_of(request)
    if metrics is None:
        return _submit(body, resources, request, response, idempotency_key)
    with metrics.counting_submission(body.task_type, resources.task_types, response):
        return _submit(body, resources, request, response, idempotency_key)


def _submit(
    body: TaskCreate,
    resources: ApiResources,
    request: Request,
    response: Response,
    idempotency_key: str | None,
) -> TaskAccepted:
    key = _parse_idempotency_key(idempotency_key)
    task_type, params = _validated(body, resources)
    claim: idempotency.Claimed | None = None
    if key is not None and resources.idempotency is not None:
        outcome = _claim(resources.idempotency, key, body, request)
        if isinstance(outcome, idempotency.Replay):
            return _replay(outcome.response, response)
        claim = outcome
    try:
        _admit(resources, body.priority)
        accepted = _enqueue(resources, task_type, params, body.priority)
    except BaseException:
        if claim is not None:
            _release_quietly(resources, claim)
        raise
    status_url = accepted.status_url
    response.headers["Location"] = status_url
    if claim is not None and resources.idempotency is not None:
        stored = idempotency.StoredResponse(
            202, accepted.model_dump(mode="json"), {"Location": status_url}
        )
        # The task is queued whatever happens here: never turn that into an error.
        with contextlib.suppress(*BROKER_ERRORS):
            resources.idempotency.complete(claim, stored)
    return accepted


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
    store: idempotency.IdempotencyStore, key: str, body: TaskCreate, request: Request
) -> idempotency.Claimed | idempotency.Replay:
    identity = idempotency.client_identity(presented_key(request.headers))
    request_fingerprint = idempotency.fingerprint(identity, body.model_dump(mode="json"))
    try:
        outcome = store.claim(identity, key, request_fingerprint)
    except BROKER_ERRORS:
        raise _broker_unavailable() from None
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


def _replay(stored: idempotency.StoredResponse, response: Response) -> TaskAccepted:
    logger.info(
        "idempotent request replayed",
        extra={
            "event.action": Event.IDEMPOTENT_REPLAY,
            "task_id": stored.body.get("task_id"),
        },
    )
    response.status_code = stored.status_code
    for name, value in stored.headers.items():
        response.headers[name] = value
    response.headers[idempotency.REPLAY_HEADER] = "true"
    return TaskAccepted.model_validate(stored.body)


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
        raise _broker_unavailable() from None
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


@router.get("/{task_id}", response_model=TaskStatus, responses=_ERRORS)
def get_task(resources: ResourcesDep, task_id: str = TaskIdPath) -> TaskStatus:
    """Status, and the result or error once the task finished."""
    try:
        record = resources.records.get(task_id)
        if record is None:
            raise ApiError(404, "task_not_found", "No task with this id was issued here.")
        meta = resources.celery.backend.get_task_meta(task_id)
    except BROKER_ERRORS:
        raise _broker_unavailable() from None
    state = str(meta.get("status", states.PENDING))
    result = meta.get("result")
    error = None
    if isinstance(result, BaseException):
        error = TaskError(type=type(result).__name__, message=str(result))
        result = None
    return TaskStatus(
        task_id=task_id,
        task_type=record.task_type,
        status=state if state in states.ALL_STATES else states.PENDING,  # type: ignore[arg-type]
        queue=record.queue,  # type: ignore[arg-type]
        correlation_id=record.correlation_id,
        submitted_at=record.submitted_at,
        retries=int(meta.get("retries") or 0),
        date_done=str(meta["date_done"]) if meta.get("date_done") else None,
        result=result if state == states.SUCCESS else None,
        error=error,
    )


@router.delete("/{task_id}", response_model=TaskStatus, responses=_ERRORS)
def revoke_task(resources: ResourcesDep, task_id: str = TaskIdPath) -> TaskStatus:
    """Revoke a task that has not started; running and finished tasks answer 409."""
    current = get_task(resources, task_id)
    if current.status in states.READY_STATES:
        raise ApiError(409, "task_already_finished", f"The task already ended as {current.status}.")
    if current.status == states.STARTED:
        raise ApiError(
            409, "task_running", "The task is running; running tasks are not interrupted."
        )
    try:
        resources.celery.control.revoke(task_id)
        resources.celery.backend.mark_as_revoked(task_id, reason="revoked by client")
    except BROKER_ERRORS:
        raise _broker_unavailable() from None
    logger.info(
        "task revocation stored",
        extra={
            "event.action": Event.TASK_REVOKE_REQUESTED,
            "task_id": task_id,
            "task_type": current.task_type,
        },
    )
    return current.model_copy(update={"status": states.REVOKED})
