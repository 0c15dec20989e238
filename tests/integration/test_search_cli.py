"""``taskq trace`` and ``GET /api/v1/traces`` over the logs of real requests.

Requests go through nginx -> api -> Redis -> worker; the command runs as its own process
with TASKQ_VAR_DIR/TASKQ_LOG_DIR pointing at the stack, as an on-call engineer runs it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from taskq.search.trace.build import parse_time
from tests.integration.stack_client import Line, RunningStack, events_of, run_taskq

VAR_DATA = {
    "portfolio_data": {"positions": [{"symbol": "AAPL", "quantity": 100, "price": 150.0}]},
    "confidence_level": 0.95,
    "time_horizon": 10,
}


def submit(
    stack: RunningStack, task_type: str, data: dict[str, Any], prefix: str
) -> tuple[str, str]:
    correlation_id = f"{prefix}-{uuid.uuid4().hex[:12]}"
    answer = stack.submit(task_type, data, "high", {"X-Request-ID": correlation_id})
    assert answer.status_code == 202, answer.text
    task_id = str(answer.json()["task_id"])
    assert stack.wait_for_task(task_id)["status"] == "SUCCESS"
    return correlation_id, task_id


def wait_for_success_lines(
    stack: RunningStack, correlation_id: str, started: int, retries: int = 0
) -> None:
    """Until every line the traces are checked against is written: nginx's and the API's
    request lines (both after the answer), ``started`` task.started lines, ``retries``
    task.retry lines (each after its attempt queued the next one) and a task.succeeded
    (after the stored status)."""

    def done(lines: list[Line]) -> bool:
        events = events_of(lines)
        requests = {
            x["service.name"] for x in lines if x["event.action"] == "http.request.completed"
        }
        return (
            requests >= {"nginx", "api"}
            and events.count("task.started") >= started
            and events.count("task.retry") >= retries
            and "task.succeeded" in events
        )

    stack.wait_for_lines(lambda x: x.get("correlation_id") == correlation_id, done)


def test_trace_shows_every_hop_and_the_timings(stack: RunningStack) -> None:
    correlation_id, task_id = submit(stack, "calculate_var", VAR_DATA, "trace")
    wait_for_success_lines(stack, correlation_id, started=1)

    result = run_taskq(stack, "trace", correlation_id, "--json")
    assert result.returncode == 0, result.stderr
    trace = json.loads(result.stdout)
    lines = trace["lines"]
    hops = {(x["service.name"], x["event.action"]) for x in lines}
    assert {
        ("nginx", "http.request.completed"),
        ("api", "http.request.completed"),
        ("api", "task.published"),
        ("worker", "task.received"),
        ("worker", "task.started"),
        ("worker", "task.succeeded"),
    } <= hops
    times = [parse_time(x["@timestamp"]) for x in lines]
    assert times == sorted(times)  # type: ignore[type-var]  # oldest first
    (request,) = [r for r in trace["requests"] if r["method"] == "POST"]
    assert request["status"] == 202 and request["api_node"].startswith("api-")
    assert request["nginx_ms"] is not None and request["api_ms"] > 0
    (task,) = trace["tasks"]
    assert task["task_id"] == task_id and task["task_name"] == "taskq.risk.calculate_var"
    assert task["queue_wait_ms"] > 0 and task["execution_ms"] > 0
    assert task["publish_ms"] is not None and task["publish_ms"] >= 0
    assert task["final_status"] == "SUCCESS" and request["end_to_end_ms"] > 0
    assert request["kind"] == "submit" and request["task_id"] == task_id
    worker_lines = [x for x in lines if x["service.name"] == "worker"]
    assert {x.get("task.attempt_id") for x in worker_lines} == {task["attempts"][0]["attempt_id"]}
    nginx_line, api_line = (
        next(x for x in lines if x["service.name"] == s and x.get("url.path") == "/api/v1/tasks")
        for s in ("nginx", "api")
    )
    assert nginx_line["http.request.id"] == api_line["http.request.id"] == request["exchange_id"]

    table = run_taskq(stack, "trace", "--task", task_id)
    assert table.returncode == 0, table.stderr
    assert correlation_id in table.stdout and "SUCCESS" in table.stdout
    assert "task.received" in table.stdout and "nginx" in table.stdout

    via_api = stack.http.get(f"/api/v1/traces/{correlation_id}")
    assert via_api.status_code == 200, via_api.text
    assert [t["task_id"] for t in via_api.json()["tasks"]] == [task_id]


def test_retried_task_shows_each_attempt(stack: RunningStack) -> None:
    correlation_id, task_id = submit(stack, "drill_flaky", {"fail_times": 1}, "retry")
    wait_for_success_lines(stack, correlation_id, started=2, retries=1)

    result = run_taskq(stack, "trace", correlation_id, "--json")
    assert result.returncode == 0, result.stderr
    (task,) = json.loads(result.stdout)["tasks"]
    assert task["task_id"] == task_id and task["retries"] == 1
    first, second = task["attempts"]
    assert first["outcome"] == "RETRY" and first["retries"] == 0 and first["worker"]
    assert "simulated lost connection" in first["error"]
    assert second["outcome"] == "SUCCESS" and second["retries"] == 1 and second["worker"]
    assert task["final_status"] == "SUCCESS"


def test_unknown_id_exits_1_and_api_answers_404(stack: RunningStack) -> None:
    unknown = f"never-{uuid.uuid4().hex}"
    result = run_taskq(stack, "trace", unknown)
    assert result.returncode == 1
    assert unknown in result.stderr
    answer = stack.http.get(f"/api/v1/traces/{unknown}")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "trace_not_found"


def test_logs_and_stats_commands(stack: RunningStack) -> None:
    correlation_id, _ = submit(stack, "calculate_var", VAR_DATA, "logs")
    wait_for_success_lines(stack, correlation_id, started=1)
    result = run_taskq(
        stack, "logs", "--correlation-id", correlation_id, "--service", "worker", "--json"
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(x)["event.action"] for x in result.stdout.splitlines()]
    assert {"task.received", "task.started", "task.succeeded"} <= set(events)
    stats = run_taskq(stack, "stats", "--since", "1h", "--json")
    assert stats.returncode == 0, stats.stderr
    report = json.loads(stats.stdout)
    assert report["tasks_by_status"].get("SUCCESS", 0) >= 1
    assert report["http_status"].get("202", 0) >= 1
