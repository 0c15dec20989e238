"""/api/v1/tasks: submit, inspect and revoke tasks.

``POST`` is ``async``: its one Redis round trip goes through ``redis.asyncio`` and never
blocks the event loop (see :mod:`api.submission`). The others are plain ``def``: FastAPI runs
them in its thread pool, so their blocking Redis and Celery calls never stall the loop.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Annotated, Any

from celery import states
from celery.exceptions import TaskRevokedError
from fastapi import APIRouter, Header, Path, Request, Response

from api import idempotency, submission
from api.auth import ApiKeyDep, CallerDep, presented_key
from api.deps import ResourcesDep
from api.errors import BROKER_ERRORS, ApiError, broker_unavailable
from api.metrics import metrics_of
from api.schemas import ErrorBody, TaskAccepted, TaskCreate, TaskError, TaskStatus
from taskq.broker.delivery import guard
from taskq.logs.schema import Event

logger = logging.getLogger("taskq.api.tasks")
router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"], dependencies=[ApiKeyDep])

TaskIdPath = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 422, 503)
}
#: The 202's promise, per broker set-up (README "Durability: which writes wait for what").
ACCEPTED_DESCRIPTION = (
    "Accepted: the task is queued and will run. Which write stands behind it depends on "
    "the set-up:\n\n"
    "* **one Redis** (the default, `TASKQ_REDIS_WAIT_REPLICAS=0`): in Redis's append-only "
    "file before Redis answered, fsynced every second (`appendfsync everysec`): a SIGKILL "
    "of Redis loses no 202, a power loss of its host at most the last second;\n"
    "* **replicas** (`TASKQ_REDIS_WAIT_REPLICAS=N`): on N replicas (`WAIT N`) before the "
    "answer, and the master refuses writes without a caught-up replica "
    "(`min-replicas-to-write`): the loss of the master's host loses no 202. Short of a "
    "replica's confirmation the answer is `503 submission_outcome_unknown`, never 202.\n\n"
    "Either way the task then starts only once its start is as durable (replicated, with "
    "replicas) and its result is stored the same way before its message is acknowledged."
)
_SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    202: {"description": ACCEPTED_DESCRIPTION},
    400: {"model": ErrorBody, "description": "Malformed Idempotency-Key."},
    413: {"model": ErrorBody, "description": "Body over client_max_body_size (nginx)."},
    429: {"model": ErrorBody, "description": "Rate limited (nginx)."},
    503: {
        "model": ErrorBody,
        "description": "Nothing accepted, or outcome unknown; the `error.code` says which, "
        "`Retry-After` when to retry.\n\n"
        "* `broker_unavailable`, `queue_saturated`, `overloaded`: **nothing was accepted**, "
        "and nothing will be: the submission never reached Redis (unreachable, or silent "
        "for `TASKQ_REDIS_STALL_GATE_S` while earlier submissions wait), the breaker or admission "
        "refused it, or it reached Redis, its reply was lost and it was settled as "
        "withdrawn (a late run of it writes nothing). `broker_unavailable` names the id it "
        "would have had in `details.task_id`.\n"
        "* `submission_outcome_unknown`: the submission was sent to Redis and Redis did not "
        "answer, not even while the API kept asking for about 4 s after it started: the "
        "task **may have been accepted**. `details.task_id` and `details.status_url` name "
        "it: `GET` it (200: accepted), or retry with the same `Idempotency-Key` (at most "
        "one task per key, either way).\n\n"
        "A submission whose reply was lost but that Redis settles in time is answered as if "
        "nothing had happened: the normal 202 (same `task_id`) if it was written.",
    },
}


@router.post(
    "",
    status_code=202,
    response_model=TaskAccepted,
    responses={**_ERRORS, **_SUBMIT_ERRORS},
)
async def create_task(
    body: TaskCreate,
    resources: ResourcesDep,
    caller: CallerDep,
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
    """Validate and enqueue a task; 202 means it is durably queued in Redis.

    Durable means: with one Redis (the default), in Redis's append-only file, written before
    Redis answers and fsynced every second (`appendfsync everysec`: a SIGKILL of Redis loses
    nothing answered 202, a power loss of its host up to the last second). With replicas
    (`TASKQ_REDIS_WAIT_REPLICAS`), also on that many replicas (`WAIT`), so the loss of the
    master's host loses nothing answered 202; a submission no replica confirmed in time is
    answered `503 submission_outcome_unknown`, never 202.

    A timeout is not a no: a 503 says either that nothing was accepted or, with
    `submission_outcome_unknown`, that the task may have been (see the 503 response).
    """
    metrics = metrics_of(request)
    counting = (
        metrics.counting_submission(body.task_type, resources.task_types, response)
        if metrics is not None
        else contextlib.nullcontext()
    )
    with counting:  # it reads the headers set here: Idempotent-Replayed
        submitted = await submission.submit(
            body, resources, presented_key(request.headers), idempotency_key, caller
        )
        response.status_code = submitted.status_code
        for name, value in submitted.headers.items():
            response.headers[name] = value
    return submitted.accepted


@router.get("/{task_id}", response_model=TaskStatus, responses=_ERRORS)
def get_task(resources: ResourcesDep, caller: CallerDep, task_id: str = TaskIdPath) -> TaskStatus:
    """Status, and the result or error once the task finished. With API keys on, only the
    key that submitted the task (or an admin key) sees it: any other gets the 404 of an
    unknown id."""
    try:
        record = resources.records.get(task_id)
        if record is None or (caller is not None and not caller.owns(record.owner)):
            raise ApiError(404, "task_not_found", "No task with this id was issued here.")
        meta = resources.celery.backend.get_task_meta(task_id)
    except BROKER_ERRORS:
        raise broker_unavailable() from None
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
def revoke_task(
    resources: ResourcesDep, caller: CallerDep, task_id: str = TaskIdPath
) -> TaskStatus:
    """Revoke a task that has not started: 200 REVOKED means it will never run (the
    revocation is stored in Redis, checked atomically when a worker starts the task, and
    never overwritten), also when asked again. A task that started first answers 409
    ``task_running``, one that ended 409 ``task_already_finished``, each with its state.
    Another tenant's task is answered 404 and left alone."""
    current = get_task(resources, caller, task_id)
    backend = resources.celery.backend
    revoked_meta = backend.encoded_meta(
        task_id,
        backend.prepare_exception(TaskRevokedError("revoked by client")),
        states.REVOKED,
        None,
    )
    try:
        outcome, state = guard.revoke(
            backend.client,
            backend.get_key_for_task(task_id),
            task_id,
            revoked_meta,
            backend.expires_s(),
        )
    except BROKER_ERRORS:
        raise broker_unavailable() from None
    if outcome == "finished":
        raise ApiError(409, "task_already_finished", f"The task already ended as {state}.")
    if outcome == "running":
        raise ApiError(
            409, "task_running", "The task is running; running tasks are not interrupted."
        )
    logger.info(
        "task revocation stored",
        extra={
            "event.action": Event.TASK_REVOKE_REQUESTED,
            "task_id": task_id,
            "task_type": current.task_type,
        },
    )
    return current.model_copy(update={"status": states.REVOKED})
