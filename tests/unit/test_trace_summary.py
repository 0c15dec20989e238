"""Trace assembly: ordering, request pairing, attempts and the summary arithmetic."""

from __future__ import annotations

from typing import Any

import pytest

from taskq.trace import build_trace, parse_time

T = "2026-11-22T10:00:"
TASK = "5f106800-637a-41bb-9a14-2fb796573af7"


def at(seconds: float) -> str:
    return f"{T}{seconds:09.6f}+00:00"


def ln(ts: float, event: str, node: str, **fields: Any) -> dict[str, Any]:
    service = "nginx" if node == "nginx" else node.split("-")[0]
    return {
        "@timestamp": at(ts),
        "event.action": event,
        "service.name": service,
        "service.node.name": node,
        "correlation_id": "req-1",
        "message": event,
        **fields,
    }


def post_lines() -> list[dict[str, Any]]:
    """nginx took 30 ms, the API 26 ms starting 2 ms after nginx; publish 10 ms in."""
    http = {"http.request.method": "POST", "url.path": "/api/v1/tasks"}
    http["http.response.status_code"] = 202  # type: ignore[assignment]
    return [
        ln(1.030, "http.request.completed", "nginx", duration_ms=30, **http),
        ln(1.028, "http.request.completed", "api-2", duration_ms=26.0, **http),
        ln(1.012, "task.published", "api-2", task_id=TASK, task_name="t.flaky", queue="high"),
    ]


def worker(ts: float, event: str, node: str, pid: int, **fields: Any) -> dict[str, Any]:
    return ln(ts, event, node, task_id=TASK, task_name="t.flaky", **{"process.pid": pid}, **fields)


def test_one_task_timings() -> None:
    lines = [
        *post_lines(),
        worker(1.015, "task.received", "worker-high", 10),
        worker(1.020, "task.started", "worker-high", 11, queue_wait_ms=8.0, **{"task.retries": 0}),
        worker(1.070, "task.succeeded", "worker-high", 11, duration_ms=49.5),
    ]
    trace = build_trace("req-1", list(reversed(lines)))
    assert [x["event.action"] for x in trace.lines][:3] == [
        "task.published",
        "task.received",
        "task.started",
    ]
    (request,) = trace.requests
    assert request.nginx_ms == 30 and request.api_ms == 26.0 and request.api_node == "api-2"
    assert request.nginx_to_api_ms == pytest.approx(2.0)
    (task,) = trace.tasks
    assert task.publish_ms == pytest.approx(10.0)  # API start 1.002 -> publish 1.012
    assert task.queue_wait_ms == 8.0
    assert task.attempts[0].receive_wait_ms == pytest.approx(3.0)
    assert task.execution_ms == 49.5
    assert task.final_status == "SUCCESS" and task.retries == 0 and task.redeliveries == 0
    assert task.end_to_end_ms == pytest.approx(58.0)  # publish 1.012 -> end 1.070
    assert trace.started_at == parse_time(at(1.000))
    assert trace.end_to_end_ms == pytest.approx(70.0)  # nginx received 1.000 -> end 1.070


def test_retry_is_closed_in_the_worker_process_that_ran_it() -> None:
    """Celery logs the retry line after the next attempt may already run elsewhere."""
    lines = [
        *post_lines(),
        worker(1.015, "task.received", "worker-general", 10),
        worker(1.020, "task.started", "worker-general", 11, **{"task.retries": 0}),
        worker(1.040, "task.published", "worker-general", 11, **{"task.retries": 1}),
        worker(1.045, "task.received", "worker-high", 20),
        worker(1.050, "task.started", "worker-high", 21, **{"task.retries": 1}),
        worker(1.055, "task.retry", "worker-general", 11, **{"error.message": "boom"}),
        worker(1.080, "task.succeeded", "worker-high", 21, duration_ms=30.0),
    ]
    task = build_trace("req-1", lines).tasks[0]
    first, second = task.attempts
    assert (first.worker, first.outcome, first.error) == ("worker-general", "RETRY", "boom")
    assert first.execution_ms == pytest.approx(35.0)  # no duration field: started -> retry line
    assert first.queue_wait_ms == pytest.approx(8.0)  # no field: published -> started
    assert (second.worker, second.outcome, second.retries) == ("worker-high", "SUCCESS", 1)
    assert second.queue_wait_ms == pytest.approx(10.0)
    assert task.retries == 1 and task.final_status == "SUCCESS"
    assert task.execution_ms == 30.0


def test_redelivery_after_a_lost_worker() -> None:
    lines = [
        *post_lines(),
        worker(1.015, "task.received", "worker-high", 10),
        worker(1.020, "task.started", "worker-high", 11),
        worker(40.0, "task.received", "worker-general", 30),
        worker(40.01, "task.started", "worker-general", 31, **{"task.redelivered": True}),
        worker(41.0, "task.failed", "worker-general", 31, **{"error.message": "bad"}),
    ]
    task = build_trace("req-1", lines).tasks[0]
    first, second = task.attempts
    assert first.outcome == "LOST" and first.worker == "worker-high"
    assert second.redelivered and second.outcome == "FAILURE" and second.worker == "worker-general"
    assert task.redeliveries == 1 and task.final_status == "FAILURE"


def test_unfinished_task_has_no_end_to_end() -> None:
    lines = [*post_lines(), worker(1.02, "task.started", "worker-high", 11)]
    trace = build_trace("req-1", lines)
    assert trace.tasks[0].final_status == "STARTED"
    assert trace.tasks[0].end_to_end_ms is None and trace.end_to_end_ms is None


def test_children_and_polls() -> None:
    child = "c0000000-0000-4000-8000-000000000000"
    poll = {"http.request.method": "GET", "url.path": f"/api/v1/tasks/{TASK}"}
    poll["http.response.status_code"] = 200  # type: ignore[assignment]
    lines = [
        *post_lines(),
        worker(1.02, "task.started", "worker-high", 11),
        ln(1.03, "task.published", "worker-high", task_id=child, parent_task_id=TASK),
        worker(1.04, "task.succeeded", "worker-high", 11, duration_ms=20.0),
        ln(1.05, "task.started", "worker-general", task_id=child),
        ln(1.06, "task.succeeded", "worker-general", task_id=child, duration_ms=10.0),
        ln(2.0, "http.request.completed", "nginx", duration_ms=3, **poll),
        ln(1.9995, "http.request.completed", "api-1", duration_ms=2.0, **poll),
    ]
    trace = build_trace("req-1", lines)
    assert [t.task_id for t in trace.tasks] == [TASK, child]
    assert trace.tasks[1].parent_task_id == TASK and trace.tasks[1].publish_ms is None
    assert [(r.method, r.api_node) for r in trace.requests] == [("POST", "api-2"), ("GET", "api-1")]
    assert trace.end_to_end_ms == pytest.approx(60.0)  # until the last task ended, not the poll


def test_duplicates_are_dropped_and_json_is_serialisable() -> None:
    lines = post_lines()
    trace = build_trace("req-1", lines + lines)
    assert len(trace.lines) == 3
    data = trace.to_json()
    assert data["correlation_id"] == "req-1"
    assert data["tasks"][0]["published_at"].startswith("2026-11-22T10:00:01.012")
