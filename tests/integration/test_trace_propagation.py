"""One correlation id joins nginx, the API and the workers, through retries and children."""

from __future__ import annotations

import re
import uuid

from tests.integration.stack_client import Line, RunningStack, events_of

VAR_DATA = {
    "portfolio_data": {"positions": [{"symbol": "AAPL", "quantity": 100, "price": 150.0}]},
    "confidence_level": 0.95,
    "time_horizon": 10,
}
WORKER_EVENTS = {"task.received", "task.started", "task.succeeded"}


def _has_full_journey(lines: list[Line]) -> bool:
    services = {line["service.name"] for line in lines}
    return {"nginx", "api", "worker"} <= services and set(events_of(lines)) >= WORKER_EVENTS


def _assert_journey(stack: RunningStack, correlation_id: str, task_id: str) -> list[Line]:
    lines = stack.wait_for_lines(
        lambda x: x.get("correlation_id") == correlation_id, _has_full_journey
    )
    nginx = [x for x in lines if x["service.name"] == "nginx"]
    assert nginx and nginx[0]["http.response.status_code"] == 202
    assert nginx[0]["upstream.address"].startswith("127.0.0.1:")
    api = [x for x in lines if x["service.name"] == "api"]
    assert {"http.request.completed", "task.published"} <= set(events_of(api))
    worker = [x for x in lines if x["service.name"] == "worker"]
    for line in worker:
        assert line["task_id"] == task_id
        assert line["task_name"] == "taskq.risk.calculate_var"
    return lines


def test_client_request_id_is_kept_on_every_hop(stack: RunningStack) -> None:
    correlation_id = f"e2e-{uuid.uuid4().hex[:12]}"
    answer = stack.submit("calculate_var", VAR_DATA, "high", {"X-Request-ID": correlation_id})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert answer.headers["X-Request-ID"] == correlation_id == body["correlation_id"]
    assert stack.wait_for_task(body["task_id"])["status"] == "SUCCESS"
    _assert_journey(stack, correlation_id, body["task_id"])


def test_generated_id_joins_every_hop(stack: RunningStack) -> None:
    answer = stack.submit("calculate_var", VAR_DATA)
    assert answer.status_code == 202, answer.text
    correlation_id = answer.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", correlation_id)
    assert answer.json()["correlation_id"] == correlation_id
    lines = _assert_journey(stack, correlation_id, answer.json()["task_id"])
    nginx = next(x for x in lines if x["service.name"] == "nginx")
    assert nginx["correlation_id_source"] == "generated"
