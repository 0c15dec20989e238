"""Admission control sheds at once, with Retry-After, and never sheds the probes."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from api import admission
from api.admission import AdmissionMiddleware


def _scope(
    path: str = "/api/v1/tasks",
    headers: list[tuple[bytes, bytes]] | None = None,
    method: str = "POST",
) -> Scope:
    return {"type": "http", "method": method, "path": path, "headers": headers or []}


async def _call(mw: AdmissionMiddleware, scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await mw(scope, receive, send)
    return sent


class _Slow:
    """An app that holds each request until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def _idle_call(mw: AdmissionMiddleware, app: _Slow, stamp: bytes) -> list[Message]:
    task = asyncio.create_task(_call(mw, _scope(headers=[(b"x-queue-start", stamp)])))
    await asyncio.sleep(0)
    app.release.set()
    sent = await task
    app.release.clear()
    return sent


def _status(sent: list[Message]) -> int:
    return int(sent[0]["status"])


def _headers(sent: list[Message]) -> dict[bytes, bytes]:
    return dict(sent[0]["headers"])


def test_in_flight_bound_sheds_with_retry_after() -> None:
    async def run() -> tuple[list[Message], list[Message], list[list[Message]]]:
        app = _Slow()
        mw = AdmissionMiddleware(app, max_inflight=2, queue_budget_ms=0)
        held = [asyncio.create_task(_call(mw, _scope())) for _ in range(2)]
        await asyncio.sleep(0)
        shed = await _call(mw, _scope())
        probe_task = asyncio.create_task(_call(mw, _scope("/healthz")))
        await asyncio.sleep(0)
        app.release.set()
        done = await asyncio.gather(*held)
        return shed, await probe_task, done

    shed, probe, done = asyncio.run(run())
    assert _status(shed) == 503
    assert _headers(shed)[b"retry-after"] == b"1"
    body: dict[str, Any] = json.loads(shed[1]["body"])
    assert body["error"]["code"] == "overloaded"
    assert body["error"]["details"] == {"reason": "in_flight"}
    assert _status(probe) == 202  # probes are never shed
    assert [_status(d) for d in done] == [202, 202]


def test_queue_budget_sheds_a_request_that_waited_too_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The middleware's clock stands still: how long a request waited is what its stamp says,
    # not how long this process took to get from the stamp to the check.
    now = 1_800_000_000.0
    monkeypatch.setattr(admission, "time", SimpleNamespace(time=lambda: now))

    async def run() -> tuple[list[Message], list[Message], list[Message]]:
        app = _Slow()
        mw = AdmissionMiddleware(app, max_inflight=4, queue_budget_ms=100)
        stale = str(now - 0.5).encode()  # waited 500 ms: over the 100 ms budget
        idle = await asyncio.wait_for(asyncio.shield(_idle_call(mw, app, stale)), timeout=5)
        busy = [asyncio.create_task(_call(mw, _scope())) for _ in range(2)]
        await asyncio.sleep(0)
        late = await _call(mw, _scope(headers=[(b"x-queue-start", stale)]))
        fresh = str(now - 0.05).encode()  # waited 50 ms: within it
        prompt_task = asyncio.create_task(_call(mw, _scope(headers=[(b"x-queue-start", fresh)])))
        direct_task = asyncio.create_task(_call(mw, _scope()))  # no nginx stamp: not judged
        await asyncio.sleep(0)
        app.release.set()
        await asyncio.gather(*busy)
        assert _status(idle) == 202  # an idle replica serves a late request
        return late, await prompt_task, await direct_task

    late, prompt, direct = asyncio.run(run())
    assert _status(late) == 503
    assert json.loads(late[1]["body"])["error"]["details"] == {"reason": "queue_time"}
    assert _status(prompt) == 202 and _status(direct) == 202


def test_follow_ups_have_their_own_class_ahead_of_submissions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With every submission place taken, reads and revokes of a task are still served,
    also after a long queue time; they are shed only at their own bound."""
    now = 1_800_000_000.0
    monkeypatch.setattr(admission, "time", SimpleNamespace(time=lambda: now))
    stale = [(b"x-queue-start", str(now - 5.0).encode())]

    async def run() -> tuple[list[Message], list[list[Message]], list[Message]]:
        app = _Slow()
        mw = AdmissionMiddleware(app, max_inflight=2, queue_budget_ms=100, max_followup_inflight=2)
        submissions = [asyncio.create_task(_call(mw, _scope())) for _ in range(2)]
        follow_ups = [
            asyncio.create_task(_call(mw, _scope("/api/v1/tasks/abc", stale, method)))
            for method in ("GET", "DELETE")
        ]
        await asyncio.sleep(0)
        extra_submission = await _call(mw, _scope())
        extra_follow_up = await _call(mw, _scope("/api/v1/tasks/abc", method="GET"))
        app.release.set()
        await asyncio.gather(*submissions)
        return extra_submission, list(await asyncio.gather(*follow_ups)), extra_follow_up

    extra_submission, follow_ups, extra_follow_up = asyncio.run(run())
    assert _status(extra_submission) == 503
    assert [_status(f) for f in follow_ups] == [202, 202]
    assert _status(extra_follow_up) == 503
    assert _headers(extra_follow_up)[b"retry-after"] == b"1"


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/api/v1/tasks/abc-123", True),
        ("HEAD", "/api/v1/tasks/abc-123", True),
        ("DELETE", "/api/v1/tasks/abc-123", True),
        ("POST", "/api/v1/tasks", False),
        ("GET", "/api/v1/tasks/", False),
        ("GET", "/api/v1/tasks/abc/trace", False),
        ("POST", "/api/v1/tasks/abc", False),
    ],
)
def test_follow_up_class(method: str, path: str, expected: bool) -> None:
    assert admission.is_followup(_scope(path, method=method)) is expected
