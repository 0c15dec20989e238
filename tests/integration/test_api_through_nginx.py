"""The API's endpoints answer through nginx and on each replica, errors as JSON."""

from __future__ import annotations

import os
import signal
import time
import uuid
from datetime import datetime

import pytest

from taskq.stack.control import status
from tests.integration.stack_client import Line, RunningStack, events_of


def _start_sleep(stack: RunningStack, seconds: float, correlation_id: str) -> tuple[str, Line]:
    """Submit a high-priority sleep and wait until a worker starts it: (task_id, started line)."""
    answer = stack.submit(
        "drill_sleep", {"seconds": seconds}, "high", {"X-Request-ID": correlation_id}
    )
    task_id = str(answer.json()["task_id"])
    started = stack.wait_for_lines(
        lambda x: x.get("task_id") == task_id and x.get("event.action") == "task.started", bool
    )
    return task_id, started[0]


#: Beyond what the design bounds: the sweeping worker and the redelivered start getting the
#: CPU on a loaded machine (as in test_kill_workers.py).
SCHEDULING_SLACK_S = 3.0


def _attempt_starts(lines: list[Line]) -> list[Line]:
    """The ``task.started`` lines among ``lines`` in delivery order: by retry number, then by
    the delivery count Redis handed out (they come from different processes, whose files
    and clocks do not order them)."""
    starts = (x for x in lines if x["event.action"] == "task.started")
    return sorted(starts, key=lambda x: (x["task.retries"], x["task.deliveries"]))


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/docs", "/openapi.json"])
def test_endpoints_answer_via_nginx_and_each_replica(stack: RunningStack, path: str) -> None:
    for base in ("", stack.replica_url(1), stack.replica_url(2)):
        answer = stack.http.get(f"{base}{path}")
        assert answer.status_code == 200, (base, answer.text)
        assert answer.headers["X-Request-ID"]


def test_both_replicas_serve_requests(stack: RunningStack) -> None:
    marker = f"rr-{uuid.uuid4().hex[:8]}"
    # Not /healthz: answered probes are not logged at INFO (see test_probes_are_not_logged).
    for i in range(8):
        stack.http.get(f"/api/v1/tasks/{uuid.uuid4()}", headers={"X-Request-ID": f"{marker}-{i}"})
    lines = stack.wait_for_lines(
        lambda x: (
            str(x.get("correlation_id", "")).startswith(marker) and x["service.name"] == "api"
        ),
        lambda found: len(found) == 8,
    )
    assert {line["service.node.name"] for line in lines} == {"api-1", "api-2"}


def test_unknown_task_is_404_with_json_error(stack: RunningStack) -> None:
    answer = stack.http.get(f"/api/v1/tasks/{uuid.uuid4()}")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "task_not_found"
    assert answer.json()["correlation_id"] == answer.headers["X-Request-ID"]


def test_unknown_route_and_bad_body_are_json_errors(stack: RunningStack) -> None:
    assert stack.http.get("/nope").json()["error"]["code"] == "not_found"
    answer = stack.http.post(
        "/api/v1/tasks", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "validation_error"
    answer = stack.submit("no_such_type", {})
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "unknown_task_type"
    assert "calculate_var" in answer.json()["error"]["details"]["allowed"]


def test_failed_task_reports_a_structured_error(stack: RunningStack) -> None:
    # Valid for the API's schema but not for the worker: published raw through Celery.
    from taskq.broker.app import create_celery_app

    app = create_celery_app(stack.settings)
    result = app.send_task("taskq.risk.calculate_var", kwargs={"bogus": 1}, queue="medium")
    assert result.get(timeout=20, propagate=False) is not None
    assert result.state == "FAILURE"
    lines = stack.wait_for_lines(
        lambda x: x.get("task_id") == result.id, lambda f: "task.failed" in events_of(f)
    )
    failed = next(x for x in lines if x["event.action"] == "task.failed")
    assert "portfolio_data" in failed["error.message"]
    assert "task.retry" not in events_of(lines)


def test_queued_task_can_be_revoked(stack: RunningStack) -> None:
    # Occupy the general worker's two slots with sleeps so the third low task stays queued.
    blockers = [
        stack.submit("drill_sleep", {"seconds": 3}, "low").json()["task_id"] for _ in range(2)
    ]
    stack.wait_for_lines(
        lambda x: x.get("task_id") in blockers and x.get("event.action") == "task.started",
        lambda found: len(found) == 2,
    )
    queued = stack.submit("drill_echo", {"payload": "never"}, "low").json()["task_id"]
    answer = stack.http.delete(f"/api/v1/tasks/{queued}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "REVOKED"
    for blocker in blockers:
        assert stack.wait_for_task(blocker)["status"] == "SUCCESS"
    # Its slots free, the worker takes the queued message and discards it; once no copy of
    # it is left in Redis it can never start.
    stack.wait_until_released([queued])
    assert stack.http.get(f"/api/v1/tasks/{queued}").json()["status"] == "REVOKED"
    again = stack.http.delete(f"/api/v1/tasks/{queued}")  # idempotent: still revoked
    assert again.status_code == 200 and again.json()["status"] == "REVOKED", again.text
    fate = stack.lines(lambda x: x.get("task_id") == queued and x["service.name"] == "worker")
    assert "task.started" not in events_of(fate)
    assert "task.revoked" in events_of(fate)  # refused at start, written before its ack


def test_killed_pool_child_task_is_redelivered_with_its_correlation_id(stack: RunningStack) -> None:
    correlation_id = f"e2e-kill-{uuid.uuid4().hex[:8]}"
    task_id, started = _start_sleep(stack, 2, correlation_id)
    os.kill(started["process.pid"], signal.SIGKILL)
    assert stack.wait_for_task(task_id, timeout_s=40)["status"] == "SUCCESS"
    # The main process writes its lost-worker line after it gave the message back: the
    # redelivery may start, and even succeed, first.
    lines = stack.wait_for_lines(
        lambda x: x.get("task_id") == task_id and x["service.name"] == "worker",
        lambda found: (
            events_of(found).count("task.started") >= 2 and "task.handler_error" in events_of(found)
        ),
    )
    assert events_of(lines).count("task.started") == 2
    assert [x["task.redelivered"] for x in _attempt_starts(lines)] == [False, True]
    assert {line["correlation_id"] for line in lines} == {correlation_id}


def test_killed_worker_is_restarted_by_the_manager(stack: RunningStack) -> None:
    before = {p.name: p for p in status(stack.layout)}
    os.kill(before["worker-high"].pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = {p.name: p for p in status(stack.layout)}
        if (
            now["worker-high"].state == "RUNNING"
            and now["worker-high"].pid != before["worker-high"].pid
        ):
            break
        time.sleep(0.3)
    else:
        raise AssertionError("worker-high was not restarted")
    answer = stack.submit("drill_echo", {"payload": "after restart"}, "high")
    assert stack.wait_for_task(answer.json()["task_id"])["status"] == "SUCCESS"
    # Each start of the worker is a marker in the logs (drills and dashboards use it).
    stack.wait_for_lines(
        lambda x: (
            x.get("event.action") == "worker.ready" and x["service.node.name"] == "worker-high"
        ),
        lambda found: len(found) >= 2,
    )


def test_whole_worker_killed_mid_task_its_task_runs_elsewhere_soon(stack: RunningStack) -> None:
    correlation_id = f"e2e-wkill-{uuid.uuid4().hex[:8]}"
    task_id, started = _start_sleep(stack, 3, correlation_id)
    node = started["service.node.name"]
    worker = {p.name: p for p in status(stack.layout)}[node]
    killed_at = time.time()
    # The worker's main process and its pool, at once: nothing is left to requeue the message,
    # it stays in Redis's unacked set until its heartbeat-refreshed score expires.
    os.killpg(worker.pid, signal.SIGKILL)
    assert stack.wait_for_task(task_id, timeout_s=60)["status"] == "SUCCESS"
    lines = stack.lines(lambda x: x.get("task_id") == task_id and x["service.name"] == "worker")
    starts = _attempt_starts(lines)
    assert len(starts) == 2
    assert {line["correlation_id"] for line in lines} == {correlation_id}
    rerun_after_s = datetime.fromisoformat(starts[1]["@timestamp"]).timestamp() - killed_at
    # The design bound: the victim's lease runs out at most its TTL after the kill and the
    # next sweep gives the message back (about 3.5 s), plus scheduling slack. What this
    # guards against is minutes: a held message left to the visibility timeout (an hour).
    settings = stack.settings
    designed_s = settings.lease_ttl_s + settings.unacked_restore_interval_s
    assert rerun_after_s < designed_s + SCHEDULING_SLACK_S, rerun_after_s


def test_task_longer_than_the_lease_runs_once(stack: RunningStack) -> None:
    # Twice the lease TTL plus two sweeps: only the live worker's lease renewals keep the
    # message from being handed to the other worker meanwhile.
    settings = stack.settings
    seconds = 2 * settings.lease_ttl_s + 2 * settings.unacked_restore_interval_s
    answer = stack.submit("drill_sleep", {"seconds": seconds}, "low")
    task_id = answer.json()["task_id"]
    assert stack.wait_for_task(task_id, timeout_s=seconds + 30)["status"] == "SUCCESS"
    # A copy handed out meanwhile would still be queued or held, or would have written its
    # lines by the time it was acknowledged: once none is left, the count is final.
    stack.wait_until_released([task_id])
    lines = stack.lines(lambda x: x.get("task_id") == task_id and x["service.name"] == "worker")
    assert events_of(lines).count("task.started") == 1
    assert "task.duplicate_suppressed" not in events_of(lines)


def test_probes_are_not_logged_unless_they_fail(stack: RunningStack) -> None:
    marker = f"probe-{uuid.uuid4().hex[:8]}"
    for path in ("/healthz", "/readyz"):
        answer = stack.http.get(path, headers={"X-Request-ID": marker})
        assert answer.status_code == 200, answer.text
    # A request after the probes through nginx and on each replica directly (whichever
    # replica nginx sent each probe to): once their lines are in, so would the probes' be.
    after = f"{marker}-after"
    for base in ("", stack.replica_url(1), stack.replica_url(2)):
        stack.http.get(f"{base}/nope", headers={"X-Request-ID": after})
    stack.wait_for_lines(
        lambda x: x.get("correlation_id") == after,
        lambda found: {x["service.node.name"] for x in found} >= {"nginx", "api-1", "api-2"},
    )
    assert stack.lines(lambda x: x.get("correlation_id") == marker) == []
