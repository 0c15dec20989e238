"""Admission control: a replica sheds what it cannot serve soon, fast and on purpose.

Pure ASGI, inside the correlation middleware (a shed answer carries ``X-Request-ID`` and
its ``http.request.completed`` line). Two bounds, both answered with a JSON
``503 overloaded`` and ``Retry-After: 1`` before any Redis call or body parsing:

* **in-flight**: at most ``TASKQ_API_MAX_INFLIGHT`` requests are being served at once;
  one more is shed at once instead of queueing behind the others;
* **queue time**: nginx stamps each request with the time it read it (``X-Queue-Start``,
  seconds since the epoch, ``$msec``). While the replica is busy (at least half of its
  in-flight bound taken), a request that already waited more than
  ``TASKQ_API_QUEUE_BUDGET_MS`` (in nginx's connection to the replica, the kernel's
  buffers or the event loop) is shed: its client is better told to come back than served
  late. An idle replica never sheds: a request delayed by a slow machine, not by a
  backlog, is served. Same machine or same kernel clock: nginx and the API share one host.

Two admission classes, each with its own in-flight count, so that new work never takes the
places of work already accepted:

* **follow-ups**, reading or revoking one accepted task (``GET``/``HEAD``/``DELETE``
  ``/api/v1/tasks/{id}``): at most ``TASKQ_API_MAX_FOLLOWUP_INFLIGHT`` at once, and never
  shed for their queue time (a client holding a 202 is better answered late than told to
  come back: its poll is cheap and its task is already paid for);
* **everything else**, new submissions first: both bounds above.

Probes (``/healthz``, ``/readyz``) and ``/metrics`` are never shed: under a herd they must
still tell the truth. nginx bounds the requests it proxies as a whole (``limit_conn``, the
same ``503 overloaded``), so this layer mostly catches an uneven spread or a stalled loop.
"""

from __future__ import annotations

import json
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_body
from taskq.logs.schema import ShedCode

QUEUE_START_HEADER = b"x-queue-start"
RETRY_AFTER_S = "1"
_NEVER_SHED = frozenset({"/healthz", "/readyz", "/metrics"})


_FOLLOWUP_METHODS = frozenset({"GET", "HEAD", "DELETE"})
_TASKS_PREFIX = "/api/v1/tasks/"


def is_followup(scope: Scope) -> bool:
    """A read or revoke of one task (``/api/v1/tasks/{id}``, not a sub-resource)."""
    path = str(scope.get("path", ""))
    return (
        scope.get("method") in _FOLLOWUP_METHODS
        and path.startswith(_TASKS_PREFIX)
        and len(path) > len(_TASKS_PREFIX)
        and "/" not in path[len(_TASKS_PREFIX) :]
    )


class AdmissionMiddleware:
    """See module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        max_inflight: int,
        queue_budget_ms: int,
        max_followup_inflight: int = 256,
    ) -> None:
        self.app = app
        self.max_inflight = max_inflight
        self.max_followup_inflight = max_followup_inflight
        self.queue_budget_s = queue_budget_ms / 1000.0
        #: Requests being served, per class: new work and follow-ups.
        self.inflight = {False: 0, True: 0}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in _NEVER_SHED:
            await self.app(scope, receive, send)
            return
        followup = is_followup(scope)
        taken = self.inflight[followup]
        bound = self.max_followup_inflight if followup else self.max_inflight
        if taken >= bound:
            await _overloaded(send, "in_flight")
            return
        if (
            not followup
            and self.queue_budget_s > 0
            and taken * 2 >= bound
            and _waited_s(scope) > self.queue_budget_s
        ):
            await _overloaded(send, "queue_time")
            return
        self.inflight[followup] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight[followup] -= 1


def _waited_s(scope: Scope) -> float:
    for key, value in scope.get("headers", ()):
        if key == QUEUE_START_HEADER:
            try:
                return time.time() - float(value)
            except ValueError:
                return 0.0
    return 0.0


async def _overloaded(send: Send, reason: str) -> None:
    body = json.dumps(
        error_body(
            ShedCode.OVERLOADED,
            "The service is at capacity; nothing was accepted. Retry after the given delay.",
            {"reason": reason},
        )
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", RETRY_AFTER_S.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
