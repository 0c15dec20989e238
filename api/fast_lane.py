"""The submission fast lane: ``POST /api/v1/tasks`` without FastAPI's per-request machinery.

Under load, FastAPI's routing, dependency solving (body, headers, the API-key dependencies)
and response-model serialization took about half of a submission's time in the API
process; the submission itself (validation, one Redis round trip, the log lines) the rest.
This pure-ASGI layer answers the well-formed submissions itself, with the same workflow
(:func:`api.submission.submit`), the same answers and the same metrics, and hands
everything else to FastAPI *unchanged* (the body it read is replayed), so every error answer
(malformed JSON, a wrong ``Content-Type``, validation errors, missing or unknown API keys)
is still produced by the one code path that always produced it:

* handled here: ``Content-Type: application/json``, a body that parses as JSON and
  validates as :class:`~api.schemas.TaskCreate`, and, when API keys are on, an accepted key;
* the answer: 202 with the body FastAPI's response model would serialize, ``Location`` and
  ``Idempotent-Replayed``; or the :class:`~api.errors.ApiError` of the workflow, rendered by
  :func:`~api.errors.error_response` as the app's exception handler renders it (both
  through :func:`~api.errors.refined`, so a cost-model refusal is ``task_too_large``);
* the route is set in the scope, so the request line (``http.route``) and the request metrics
  name ``/api/v1/tasks`` as before.

The FastAPI route stays: it documents the operation in OpenAPI and serves what this layer
hands over.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import orjson
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import idempotency
from api.auth import caller_of, presented_key
from api.deps import ApiResources
from api.errors import ApiError, error_response, refined
from api.metrics import ApiMetrics
from api.schemas import TaskCreate
from api.submission import submit
from taskq.tenants import Caller

PATH = "/api/v1/tasks"


@dataclass(frozen=True)
class _Route:
    """What the request line and the metrics read from ``scope["route"]``: its template."""

    path: str


_ROUTE = _Route(PATH)
_MAX_BODY = 1 << 20  # nginx caps bodies far lower (client_max_body_size)


class SubmissionFastLane:
    """See module docstring. ``fastapi`` is the app whose state holds the resources."""

    def __init__(self, app: ASGIApp, fastapi: FastAPI) -> None:
        self.app = app
        self.fastapi = fastapi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        resources: ApiResources | None = getattr(self.fastapi.state, "resources", None)
        body, complete = await _read_body(receive)
        task = _parse(headers, body) if complete and resources is not None else None
        authorized, caller = _authorized(resources, headers) if resources else (False, None)
        if task is None or resources is None or not authorized:
            await self.app(scope, _replaying(body, complete, receive), send)
            return
        scope["route"] = _ROUTE
        response = await self._submit(task, resources, headers, caller)
        await response(scope, receive, send)

    async def _submit(
        self, task: TaskCreate, resources: ApiResources, headers: Headers, caller: Caller | None
    ) -> Response:
        metrics: ApiMetrics | None = getattr(self.fastapi.state, "metrics", None)
        counted = Response()  # carries Idempotent-Replayed to the submission counter
        counting = (
            metrics.counting_submission(task.task_type, resources.task_types, counted)
            if metrics is not None
            else contextlib.nullcontext()
        )
        try:
            with counting:
                submitted = await submit(
                    task,
                    resources,
                    presented_key(headers),
                    headers.get(idempotency.HEADER),
                    caller,
                )
                for name, value in submitted.headers.items():
                    counted.headers[name] = value
        except ApiError as raised:
            exc = refined(raised)
            return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)
        return Response(
            orjson.dumps(submitted.accepted.model_dump(mode="json")),
            status_code=submitted.status_code,
            headers=submitted.headers,
            media_type="application/json",
        )


def _parse(headers: Headers, body: bytes) -> TaskCreate | None:
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        return TaskCreate.model_validate(data)
    except ValidationError:
        return None


def _authorized(resources: ApiResources, headers: Headers) -> tuple[bool, Caller | None]:
    """Whether this layer may serve the request, and its caller (None: keys are off)."""
    if not resources.settings.api_key_entries:
        return True, None
    caller = caller_of(resources.settings, presented_key(headers))
    return caller is not None, caller


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request body; ``complete`` is False if the client left or it is too large."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > _MAX_BODY:
            return b"".join(chunks), False
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replaying(body: bytes, complete: bool, receive: Receive) -> Receive:
    """A ``receive`` that first gives back what was read, then the rest of the stream."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return replay
