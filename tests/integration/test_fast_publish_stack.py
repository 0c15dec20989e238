"""The API's hand-built messages (taskq/broker/fast_publish.py) on the shared stack: a real
Celery worker consumes them, ``celery inspect`` shows them as Celery's own, and the
idempotency answers that need Redis state older than the submission script still hold."""

from __future__ import annotations

import time
import uuid
from typing import Any

from redis import Redis

from api.idempotency import Claimed, IdempotencyStore, client_identity, fingerprint
from taskq.broker.app import create_celery_app
from tests.integration.stack_client import RunningStack


def _active(stack: RunningStack, task_id: str, timeout_s: float = 15.0) -> dict[str, Any]:
    app = create_celery_app(stack.settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        replies = app.control.inspect(timeout=1.0).active() or {}
        for tasks in replies.values():
            for task in tasks:
                if task.get("id") == task_id:
                    return dict(task)
        time.sleep(0.2)
    raise AssertionError(f"celery inspect never showed {task_id} as active")


def test_worker_runs_it_and_inspect_shows_it(stack: RunningStack) -> None:
    correlation_id = f"fast-{uuid.uuid4().hex[:12]}"
    answer = stack.submit("drill_sleep", {"seconds": 2.0}, "high", {"X-Request-ID": correlation_id})
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task_id"]
    active = _active(stack, task_id)
    assert active["name"] == "taskq.drills.sleep"
    assert active["delivery_info"]["routing_key"] == "high"
    assert active["kwargs"] == {"seconds": 2.0}  # the worker decoded the hand-built body
    assert stack.wait_for_task(task_id)["status"] == "SUCCESS"
    lines = stack.wait_for_lines(
        lambda x: x.get("task_id") == task_id,
        lambda found: (
            {"task.published", "task.started", "task.succeeded"}
            <= {x.get("event.action") for x in found}
        ),
    )
    published = next(x for x in lines if x.get("event.action") == "task.published")
    assert published["service.name"] == "api" and published["correlation_id"] == correlation_id
    assert published.get("http.request.id")
    # Every line about the task but those of the status polls (other requests, other ids).
    own = [x for x in lines if x.get("http.request.method") != "GET"]
    assert {x["correlation_id"] for x in own} == {correlation_id}


def test_a_claim_still_in_flight_is_409(stack: RunningStack) -> None:
    key = f"k-{uuid.uuid4()}"
    body = {"task_type": "drill_echo", "data": {"payload": "held"}, "priority": "high"}
    store = IdempotencyStore(Redis.from_url(stack.settings.broker_url), 60, 30)
    identity = client_identity(None)
    claim = store.claim(identity, key, fingerprint(identity, body))
    assert isinstance(claim, Claimed)
    answer = stack.http.post("/api/v1/tasks", json=body, headers={"Idempotency-Key": key})
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"]["code"] == "idempotency_key_in_flight"
    assert answer.headers["Retry-After"]
    other = {**body, "data": {"payload": "different"}}
    mismatch = stack.http.post("/api/v1/tasks", json=other, headers={"Idempotency-Key": key})
    assert mismatch.status_code == 422
    assert mismatch.json()["error"]["code"] == "idempotency_key_reused"
    store.release(claim)
    after = stack.http.post("/api/v1/tasks", json=body, headers={"Idempotency-Key": key})
    assert after.status_code == 202, after.text
