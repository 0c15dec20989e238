"""/api/v1/tasks: submit, inspect and revoke tasks.

Handlers are plain ``def``: FastAPI runs them in its thread pool, so the blocking Redis and
Celery calls never stall the event loop (a blocking publish inside ``async def`` would).
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from celery import states
from fastapi import APIRouter, Path, Response
from kombu.exceptions import KombuError
from pydantic import ValidationError
from redis.exceptions import RedisError

from api.deps import ApiResources, ResourcesDep
from api.errors import ApiError
from api.schemas import ErrorBody, TaskAccepted, TaskCreate, TaskError, TaskStatus
from taskq.correlation import correlation_id_var

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])

BROKER_ERRORS: tuple[type[BaseException], ...] = (RedisError, KombuError, OSError)
RETRY_AFTER_S = "5"
TaskIdPath = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (404, 409, 422, 503)
}


def _broker_unavailable() -> ApiError:
    return ApiError(
        503,
        "broker_unavailable",
        "The task broker is unavailable; nothing was accepted. Retry later.",
        headers={"Retry-After": RETRY_AFTER_S},
    )


@router.post("", status_code=202, response_model=TaskAccepted, responses=_ERRORS)
def create_task(body: TaskCreate, resources: ResourcesDep, response: Response) -> TaskAccepted:
    """Validate and enqueue a task; 202 means it is durably queued in Redis."""
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
    task_id = str(uuid.uuid4())
    correlation_id = correlation_id_var.get() or ""
    try:
        resources.records.create(task_id, task_type.name, body.priority, correlation_id)
        resources.celery.send_task(
            task_type.celery_name,
            kwargs=params.model_dump(mode="json"),
            queue=body.priority,
            task_id=task_id,
        )
    except BROKER_ERRORS:
        _forget_quietly(resources, task_id)
        raise _broker_unavailable() from None
    status_url = f"/api/v1/tasks/{task_id}"
    response.headers["Location"] = status_url
    return TaskAccepted(
        task_id=task_id,
        status="PENDING",
        task_type=task_type.name,
        queue=body.priority,
        correlation_id=correlation_id,
        status_url=status_url,
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
    return current.model_copy(update={"status": states.REVOKED})
