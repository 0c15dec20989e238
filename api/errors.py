"""Every error leaves the API as JSON with a stable ``error.code``.

Body: ``{"error": {"code", "message", "details"?}, "correlation_id"}``. Clients switch on
``code``; ``message`` is for people and may change.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import KombuError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.content_type_hint import MESSAGE as HINT_MESSAGE
from api.content_type_hint import content_type_hint
from taskq.correlation import correlation_id_var
from taskq.logs.schema import ShedCode
from taskq.tasks import cost

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: ShedCode.PAYLOAD_TOO_LARGE,
    415: "unsupported_media_type",
    422: "validation_error",
    429: ShedCode.RATE_LIMITED,
    500: "internal_error",
    503: ShedCode.SERVICE_UNAVAILABLE,
}


#: What a Redis or broker call raises when Redis is away or too slow (bounded timeouts).
BROKER_ERRORS: tuple[type[BaseException], ...] = (RedisError, KombuError, OSError)
BROKER_RETRY_AFTER_S = "5"


class ApiError(Exception):
    """An error with an HTTP status and a stable code, raised by route handlers."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


#: Nothing was accepted: Redis could not be reached, or the submission was withdrawn.
BROKER_UNAVAILABLE = ShedCode.BROKER_UNAVAILABLE
#: A submission reached Redis and no answer came back in time: it may have been accepted.
OUTCOME_UNKNOWN = ShedCode.SUBMISSION_OUTCOME_UNKNOWN


def broker_unavailable(task_id: str | None = None) -> ApiError:
    """The 503 of a request that could not reach Redis; nothing was accepted.

    A submission names the id it would have had (``details.task_id``): that id was not and
    will never be accepted.
    """
    return ApiError(
        503,
        BROKER_UNAVAILABLE,
        "The task broker is unavailable; nothing was accepted. Retry later.",
        {"task_id": task_id} if task_id is not None else None,
        headers={"Retry-After": BROKER_RETRY_AFTER_S},
    )


def memory_full(task_id: str | None = None) -> ApiError:
    """The 503 of a submission Redis refused at ``maxmemory`` (unrun); nothing was accepted.
    The breaker sheds before this point (api/breaker.py); this covers the moments between
    two of its readings."""
    return ApiError(
        503,
        ShedCode.BROKER_MEMORY_FULL,
        "Redis is near its memory limit; nothing was accepted. Retry later.",
        {"task_id": task_id} if task_id is not None else None,
        headers={"Retry-After": BROKER_RETRY_AFTER_S},
    )


def outcome_unknown(task_id: str) -> ApiError:
    """The 503 of a submission sent to Redis whose outcome could not be learnt in time."""
    return ApiError(
        503,
        OUTCOME_UNKNOWN,
        f"The task broker stopped answering after the submission was sent: the task may have "
        f"been accepted. Retry with the same Idempotency-Key, or look it up by id {task_id} "
        f"(GET /api/v1/tasks/{task_id}).",
        {"task_id": task_id, "status_url": f"/api/v1/tasks/{task_id}"},
        headers={"Retry-After": BROKER_RETRY_AFTER_S},
    )


def refined(exc: ApiError) -> ApiError:
    """A validation error whose cause is the cost model becomes 422 ``task_too_large``.

    The input models raise it as a validation error (so the worker's re-validation refuses it
    too); clients get their own code, with the message naming the measure, cost and limit.
    """
    if exc.code != "validation_error" or not isinstance(exc.details, list):
        return exc
    for detail in exc.details:
        if isinstance(detail, dict) and detail.get("type") == cost.ERROR_TYPE:
            return ApiError(422, cost.ERROR_TYPE, str(detail["message"]), exc.details)
    return exc


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The JSON body of an error response."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error, "correlation_id": correlation_id_var.get()}


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A JSONResponse carrying :func:`error_body`."""
    return JSONResponse(
        error_body(code, message, details), status_code=status_code, headers=headers
    )


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {
            "field": ".".join(str(part) for part in err["loc"]),
            "message": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors()
    ]


async def _on_api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    exc = refined(exc)
    return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = _validation_details(exc)
    hint = content_type_hint(request, exc)
    if hint is not None:
        return error_response(422, "validation_error", HINT_MESSAGE, [*details, hint])
    return error_response(422, "validation_error", "The request is not valid.", details)


async def _on_http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, code, str(exc.detail), headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every error the framework knows about to a JSON error body."""
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
