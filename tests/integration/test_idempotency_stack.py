"""Idempotency through nginx and at-least-once delivery in the workers, on the shared stack."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from celery import Celery
from redis import Redis

from api.idempotency import REPLAY_HEADER
from taskq.broker.app import create_celery_app
from taskq.broker.delivery.keys import deliveries_key
from tests.integration.stack_client import Line, RunningStack

CONCURRENT = 50


def _body(payload: str) -> dict[str, Any]:
    return {"task_type": "drill_echo", "data": {"payload": payload}, "priority": "high"}


@pytest.fixture(scope="module")
def publisher(stack: RunningStack) -> Celery:
    """A Celery client of the stack's broker, to deliver messages the API never would."""
    return create_celery_app(stack.settings)


def _worker_lines(stack: RunningStack, task_id: str, event: str) -> list[Line]:
    return stack.lines(
        lambda x: (
            x.get("service.name") == "worker"
            and x.get("task_id") == task_id
            and x.get("event.action") == event
        )
    )


def test_concurrent_identical_requests_execute_once(stack: RunningStack) -> None:
    key, correlation_id = f"k-{uuid.uuid4()}", f"idem-{uuid.uuid4().hex[:12]}"
    headers = {"Idempotency-Key": key, "X-Request-ID": correlation_id}
    body = _body(correlation_id)

    with httpx.Client(base_url=stack.layout.base_url, timeout=10.0) as client:

        def post(_: int) -> httpx.Response:
            return client.post("/api/v1/tasks", json=body, headers=headers)

        with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
            answers = list(pool.map(post, range(CONCURRENT)))
        retry = client.post("/api/v1/tasks", json=body, headers=headers)

    codes = sorted({a.status_code for a in answers})
    assert set(codes) <= {202, 409}, [a.text for a in answers if a.status_code not in (202, 409)]
    accepted = [a for a in answers if a.status_code == 202]
    task_ids = {a.json()["task_id"] for a in accepted} | {retry.json()["task_id"]}
    assert len(task_ids) == 1, task_ids
    for conflict in (a for a in answers if a.status_code == 409):
        assert conflict.json()["error"]["code"] == "idempotency_key_in_flight"
        assert conflict.headers["Retry-After"]
    assert retry.status_code == 202 and retry.headers[REPLAY_HEADER] == "true"
    assert sum(a.headers.get(REPLAY_HEADER) == "true" for a in accepted) == len(accepted) - 1
    (task_id,) = task_ids
    assert stack.wait_for_task(task_id)["status"] == "SUCCESS"
    # Executions, not responses: one publish, one run in the workers' logs. The API writes
    # task.published before it answers, so every answer received means every publish line
    # is in; a second run would need a message of the task still queued or held, or would
    # have written its started line before that message was acknowledged.
    published = stack.lines(
        lambda x: (
            x.get("correlation_id") == correlation_id and x.get("event.action") == "task.published"
        )
    )
    stack.wait_until_released([task_id])
    started = stack.lines(
        lambda x: (
            x.get("correlation_id") == correlation_id and x.get("event.action") == "task.started"
        )
    )
    assert len(published) == 1 and len(started) == 1
    assert started[0]["task_id"] == task_id
    replays = len(accepted)  # every 202 but the first, plus the retry
    stack.wait_for_lines(
        lambda x: x.get("task_id") == task_id and x.get("event.action") == "idempotency.replayed",
        lambda found: len(found) == replays,
    )


def test_same_key_different_body_is_422(stack: RunningStack) -> None:
    headers = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = stack.submit("drill_echo", {"payload": "one"}, "high", headers)
    assert first.status_code == 202
    second = stack.submit("drill_echo", {"payload": "two"}, "high", headers)
    assert second.status_code == 422
    assert second.json()["error"]["code"] == "idempotency_key_reused"
    assert REPLAY_HEADER not in second.headers


def test_a_request_that_fails_validation_stores_nothing(stack: RunningStack) -> None:
    headers = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    invalid = stack.submit("drill_echo", {"payload": "x" * 5_000}, "high", headers)
    assert invalid.status_code == 422
    valid = stack.submit("drill_echo", {"payload": "ok"}, "high", headers)
    assert valid.status_code == 202 and REPLAY_HEADER not in valid.headers


def test_malformed_key_is_400(stack: RunningStack) -> None:
    answer = stack.submit("drill_echo", {}, "high", {"Idempotency-Key": "x" * 256})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_idempotency_key"


def test_oversized_body_is_a_json_413_from_nginx(stack: RunningStack) -> None:
    correlation_id = f"big-{uuid.uuid4().hex[:12]}"
    answer = stack.http.post(
        "/api/v1/tasks",
        content=b'{"task_type":"drill_echo","data":{"payload":"' + b"x" * 400_000 + b'"}}',
        headers={"Content-Type": "application/json", "X-Request-ID": correlation_id},
    )
    assert answer.status_code == 413
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == {
        "error": {"code": "payload_too_large", "message": "Request body too large."},
        "correlation_id": correlation_id,
    }


def test_duplicate_delivery_returns_the_first_result(
    stack: RunningStack, publisher: Celery
) -> None:
    task_id = f"dup-{uuid.uuid4()}"
    first = publisher.send_task(
        "taskq.drills.echo", kwargs={"payload": "once"}, task_id=task_id, queue="high"
    )
    assert first.get(timeout=30) == {"payload": "once"}
    # The same message again, as a redelivery after a lost ack would bring it.
    again = publisher.send_task(
        "taskq.drills.echo", kwargs={"payload": "once"}, task_id=task_id, queue="high"
    )
    suppressed = stack.wait_for_lines(
        lambda x: (
            x.get("task_id") == task_id and x.get("event.action") == "task.duplicate_suppressed"
        ),
        lambda found: len(found) == 1,
    )
    assert suppressed[0]["message"] == "duplicate delivery suppressed"
    assert suppressed[0]["log.level"] == "WARNING"
    assert again.get(timeout=30) == {"payload": "once"}


def test_poison_task_ends_as_failure_instead_of_looping(
    stack: RunningStack, publisher: Celery
) -> None:
    task_id = f"poison-{uuid.uuid4()}"
    cap = stack.settings.max_redeliveries
    # This attempt has already been delivered 1 + cap times (each time killing its worker).
    with Redis.from_url(stack.settings.broker_url) as client:
        client.set(deliveries_key(task_id, 0), 1 + cap, ex=60)
    result = publisher.send_task(
        "taskq.drills.echo", kwargs={"payload": "boom"}, task_id=task_id, queue="high"
    )
    result.get(timeout=30, propagate=False)
    assert result.state == "FAILURE"
    assert "delivered" in str(result.result) and "not run again" in str(result.result)
    poison = _worker_lines(stack, task_id, "task.poison")
    assert poison and poison[0]["task.deliveries"] == 2 + cap
    assert not _worker_lines(stack, task_id, "task.succeeded")
