"""Trace assembly: exchanges, attempts and final status, for lines in any order.

The scenarios are the lines the stack writes (see tests/integration for the real ones):
nginx and the API share ``http.request.id``; every worker line of one delivery shares
``task.attempt_id``. The property test at the end feeds each scenario in many shuffled
orders, with each process's clock skewed, and expects the same summary every time.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from taskq.search.trace.build import Trace, build_trace, parse_time, publisher_of

T = "2026-11-22T10:00:"
TASK = "5f106800-637a-41bb-9a14-2fb796573af7"
CHILD = "c0000000-0000-4000-8000-000000000000"


def at(seconds: float) -> str:
    return f"{T}{seconds:09.6f}+00:00"


def ln(ts: float, event: str, node: str, cid: str = "req-1", **fields: Any) -> dict[str, Any]:
    service = "nginx" if node == "nginx" else node.split("-")[0]
    return {
        "@timestamp": at(ts),
        "event.action": event,
        "service.name": service,
        "service.node.name": node,
        "correlation_id": cid,
        "message": event,
        **fields,
    }


def exchange(
    ts: float,
    exchange_id: str,
    method: str,
    path: str,
    status: int,
    cid: str = "req-1",
    replica: str = "api-2",
    **api_fields: Any,
) -> list[dict[str, Any]]:
    """nginx's and the replica's line of one exchange; nginx took 30 ms, the API 26 ms
    starting 2 ms after nginx."""
    http = {
        "http.request.method": method,
        "url.path": path,
        "http.response.status_code": status,
        "http.request.id": exchange_id,
    }
    return [
        ln(ts + 0.030, "http.request.completed", "nginx", cid, duration_ms=30, **http),
        ln(
            ts + 0.028,
            "http.request.completed",
            replica,
            cid,
            duration_ms=26.0,
            **http,
            **api_fields,
        ),
    ]


def submit(
    ts: float = 1.0, cid: str = "req-1", exchange_id: str = "ex-post"
) -> list[dict[str, Any]]:
    """A POST whose task is published 12 ms after nginx received it."""
    published = ln(
        ts + 0.012,
        "task.published",
        "api-2",
        cid,
        task_id=TASK,
        task_name="t.flaky",
        queue="high",
        **{"task.retries": 0, "http.request.id": exchange_id},
    )
    return [*exchange(ts, exchange_id, "POST", "/api/v1/tasks", 202, cid), published]


def wk(
    ts: float, event: str, node: str, pid: int, attempt: str, task: str = TASK, **fields: Any
) -> dict[str, Any]:
    """A worker line of one attempt (the message header's correlation id: req-1)."""
    return ln(
        ts,
        event,
        node,
        task_id=task,
        task_name="t.flaky",
        **{"process.pid": pid, "task.attempt_id": attempt},
        **fields,
    )


def test_one_task_timings() -> None:
    lines = [
        *submit(),
        wk(1.015, "task.received", "worker-high", 10, "a1"),
        wk(1.020, "task.started", "worker-high", 11, "a1", queue_wait_ms=8.0),
        wk(1.070, "task.succeeded", "worker-high", 11, "a1", duration_ms=49.5),
    ]
    trace = build_trace("req-1", list(reversed(lines)))
    assert [x["event.action"] for x in trace.lines][:3] == [
        "task.published",
        "task.received",
        "task.started",
    ]
    (request,) = trace.requests
    assert (request.kind, request.task_id, request.exchange_id) == ("submit", TASK, "ex-post")
    assert request.nginx_ms == 30 and request.api_ms == 26.0 and request.api_node == "api-2"
    assert request.nginx_to_api_ms == pytest.approx(2.0)
    assert request.end_to_end_ms == pytest.approx(70.0)  # nginx received 1.000 -> end 1.070
    (task,) = trace.tasks
    assert task.publish_ms == pytest.approx(10.0)  # API start 1.002 -> publish 1.012
    assert task.queue_wait_ms == 8.0
    assert task.attempts[0].receive_wait_ms == pytest.approx(3.0)
    assert task.execution_ms == 49.5
    assert task.final_status == "SUCCESS" and task.retries == 0 and task.redeliveries == 0
    assert task.end_to_end_ms == pytest.approx(58.0)  # publish 1.012 -> end 1.070
    assert trace.started_at == parse_time(at(1.000))


def test_worker_that_logs_before_the_publish_line() -> None:
    """The API writes task.published after the broker accepted the message: a fast worker
    receives, runs and finishes before that line's time. Still one attempt, SUCCESS."""
    lines = [
        *submit(),
        wk(1.0105, "task.received", "worker-high", 10, "a1"),
        wk(1.0110, "task.started", "worker-high", 11, "a1", queue_wait_ms=0.4),
        wk(1.0115, "task.succeeded", "worker-high", 11, "a1", duration_ms=0.5),
    ]
    (task,) = build_trace("req-1", lines).tasks
    assert task.final_status == "SUCCESS" and len(task.attempts) == 1
    assert task.attempts[0].receive_wait_ms == 0.0
    assert task.notes and "clocks" in task.notes[0]


def test_retry_is_closed_by_its_own_attempt() -> None:
    """Celery logs the retry line after the next attempt may already run elsewhere."""
    lines = [
        *submit(),
        wk(1.015, "task.received", "worker-general", 10, "a1", **{"task.retries": 0}),
        wk(1.020, "task.started", "worker-general", 11, "a1", **{"task.retries": 0}),
        wk(1.040, "task.published", "worker-general", 11, "a1", **{"task.retries": 1}),
        wk(1.045, "task.received", "worker-high", 20, "a2", **{"task.retries": 1}),
        wk(1.050, "task.started", "worker-high", 21, "a2", **{"task.retries": 1}),
        wk(1.055, "task.retry", "worker-general", 11, "a1", **{"error.message": "boom"}),
        wk(1.080, "task.succeeded", "worker-high", 21, "a2", duration_ms=30.0),
    ]
    task = build_trace("req-1", lines).tasks[0]
    first, second = task.attempts
    assert (first.worker, first.outcome, first.error) == ("worker-general", "RETRY", "boom")
    assert first.execution_ms == pytest.approx(35.0)  # no duration field: started -> retry line
    assert first.queue_wait_ms == pytest.approx(8.0)  # no field: published -> started
    assert (second.worker, second.outcome, second.retries) == ("worker-high", "SUCCESS", 1)
    assert task.retries == 1 and task.final_status == "SUCCESS"
    assert task.execution_ms == 30.0


def test_permanent_failure_carries_its_error_type() -> None:
    lines = [
        *submit(),
        wk(1.02, "task.started", "worker-high", 11, "a1"),
        wk(
            1.03,
            "task.failed",
            "worker-high",
            11,
            "a1",
            **{"error.type": "ValueError", "error.message": "portfolio is empty"},
        ),
    ]
    (task,) = build_trace("req-1", lines).tasks
    assert (task.final_status, task.error_type, task.error) == (
        "FAILURE",
        "ValueError",
        "portfolio is empty",
    )


def test_redelivery_after_a_lost_pool_child() -> None:
    lines = [
        *submit(),
        wk(1.015, "task.received", "worker-general", 10, "a1"),
        wk(1.020, "task.started", "worker-general", 11, "a1"),
        wk(
            3.000,
            "task.handler_error",
            "worker-general",
            10,
            "a1",
            **{"error.type": "WorkerLostError"},
        ),
        wk(3.001, "task.received", "worker-high", 30, "a2"),
        wk(3.002, "task.started", "worker-high", 31, "a2", **{"task.redelivered": True}),
        wk(3.5, "task.succeeded", "worker-high", 31, "a2"),
    ]
    task = build_trace("req-1", lines).tasks[0]
    first, second = task.attempts
    assert first.outcome == "LOST" and first.worker == "worker-general"
    assert second.redelivered and second.outcome == "SUCCESS" and second.worker == "worker-high"
    assert task.redeliveries == 1 and task.final_status == "SUCCESS"


def test_whole_worker_lost_without_a_line() -> None:
    """A SIGKILLed worker writes nothing more: its attempt is lost because the same
    delivery number came again, not because of any line."""
    lines = [
        *submit(),
        wk(1.015, "task.received", "worker-high", 10, "a1"),
        wk(1.020, "task.started", "worker-high", 11, "a1"),
        wk(9.0, "task.received", "worker-general", 30, "a2"),
        wk(9.01, "task.started", "worker-general", 31, "a2", **{"task.redelivered": True}),
    ]
    task = build_trace("req-1", lines).tasks[0]
    assert [a.outcome for a in task.attempts] == ["LOST", None]
    assert task.final_status == "STARTED" and task.end_to_end_ms is None


def test_unfinished_and_lost_latest_attempt() -> None:
    lines = [*submit(), wk(1.02, "task.started", "worker-high", 11, "a1")]
    trace = build_trace("req-1", lines)
    assert trace.tasks[0].final_status == "STARTED"
    assert trace.tasks[0].end_to_end_ms is None and trace.ended_at is None
    assert trace.requests[0].end_to_end_ms is None
    lost = [*lines, wk(1.5, "task.handler_error", "worker-high", 10, "a1")]
    assert build_trace("req-1", lost).tasks[0].final_status == "PENDING"  # back in its queue


def test_duplicate_delivery_counts_one_success() -> None:
    lines = [
        *submit(),
        wk(1.02, "task.started", "worker-high", 11, "a1"),
        wk(1.03, "task.succeeded", "worker-high", 11, "a1", duration_ms=10.0),
        wk(9.0, "task.started", "worker-general", 31, "a2", **{"task.redelivered": True}),
        wk(9.001, "task.duplicate_suppressed", "worker-general", 31, "a2"),
    ]
    task = build_trace("req-1", lines).tasks[0]
    assert [a.outcome for a in task.attempts] == ["SUCCESS", "DUPLICATE"]
    assert task.final_status == "SUCCESS" and task.execution_ms == 10.0
    assert task.ended_at == parse_time(at(1.03))


def test_children_polls_and_other_requests() -> None:
    child_lines = [
        ln(1.03, "task.published", "worker-high", task_id=CHILD, parent_task_id=TASK),
        ln(1.05, "task.started", "worker-general", task_id=CHILD, **{"task.attempt_id": "c1"}),
        ln(1.06, "task.succeeded", "worker-general", task_id=CHILD, **{"task.attempt_id": "c1"}),
    ]
    lines = [
        *submit(),
        wk(1.02, "task.started", "worker-high", 11, "a1"),
        wk(1.04, "task.succeeded", "worker-high", 11, "a1", duration_ms=20.0),
        *child_lines,
        *exchange(
            2.0, "ex-poll", "GET", f"/api/v1/tasks/{TASK}", 200, replica="api-1", task_id=TASK
        ),
        # Another client polls the same task under its own id.
        *exchange(2.5, "ex-other", "GET", f"/api/v1/tasks/{TASK}", 200, cid="ops-7", task_id=TASK),
    ]
    trace = build_trace("req-1", lines)
    assert [t.task_id for t in trace.tasks] == [TASK, CHILD]
    assert trace.tasks[1].parent_task_id == TASK and trace.tasks[1].publish_ms is None
    assert [(r.kind, r.api_node) for r in trace.requests] == [
        ("submit", "api-2"),
        ("poll", "api-1"),
    ]
    assert trace.tasks[0].touched_by == ["ops-7"]
    assert all(x.get("correlation_id") != "ops-7" for x in trace.lines)
    assert trace.ended_at == parse_time(at(1.06))


def test_reused_request_id_makes_one_request_per_exchange() -> None:
    lines = [
        *exchange(1.0, "ex-1", "GET", "/healthz", 200),
        *exchange(5.0, "ex-2", "GET", "/healthz", 200),
        *exchange(9.0, "ex-3", "POST", "/api/v1/tasks", 422, **{"error.type": "validation_error"}),
    ]
    trace = build_trace("req-1", lines)
    assert [(r.exchange_id, r.end_to_end_ms) for r in trace.requests] == [
        ("ex-1", 30),
        ("ex-2", 30),
        ("ex-3", 30),
    ]
    assert trace.requests[2].error_type == "validation_error"


def test_replay_shows_the_real_task_and_its_original_request() -> None:
    original = [
        *submit(cid="first"),
        ln(1.02, "task.started", "worker-high", "first", task_id=TASK, **{"task.attempt_id": "a1"}),
        ln(
            1.03,
            "task.succeeded",
            "worker-high",
            "first",
            task_id=TASK,
            **{"task.attempt_id": "a1"},
        ),
    ]
    replay = [
        *exchange(5.0, "ex-replay", "POST", "/api/v1/tasks", 202, cid="second"),
        ln(
            5.01,
            "idempotency.replayed",
            "api-2",
            "second",
            task_id=TASK,
            **{"http.request.id": "ex-replay"},
        ),
    ]
    trace = build_trace("second", original + replay)
    (task,) = trace.tasks
    assert (task.final_status, task.queue, task.published_by) == ("SUCCESS", "high", "first")
    assert trace.replay_of == ["first"]
    assert trace.requests[0].kind == "replay"
    assert publisher_of(original + replay) == "first"


def test_revocation_by_the_api_and_a_success_that_beats_it() -> None:
    revoke = exchange(2.0, "ex-del", "DELETE", f"/api/v1/tasks/{TASK}", 200, task_id=TASK)
    revoke.append(
        ln(2.01, "task.revoke_requested", "api-2", task_id=TASK, **{"http.request.id": "ex-del"})
    )
    queued = [*submit(), *revoke]
    task = build_trace("req-1", queued).tasks[0]
    assert task.final_status == "REVOKED" and task.ended_at == parse_time(at(2.01))
    ran_anyway = [
        *queued,
        wk(1.9, "task.started", "worker-high", 11, "a1"),
        wk(2.5, "task.succeeded", "worker-high", 11, "a1"),
    ]
    assert build_trace("req-1", ran_anyway).tasks[0].final_status == "SUCCESS"


def test_duplicates_are_dropped_and_json_is_serialisable() -> None:
    lines = submit()
    trace = build_trace("req-1", lines + lines)
    assert len(trace.lines) == 3
    data = trace.to_json()
    assert data["correlation_id"] == "req-1"
    assert data["tasks"][0]["published_at"].startswith("2026-11-22T10:00:01.012")


# --- any order, any skew ------------------------------------------------------------------


def _scenarios() -> dict[str, list[dict[str, Any]]]:
    retry_then_redelivery = [
        *submit(),
        wk(1.015, "task.received", "worker-general", 10, "a1", **{"task.retries": 0}),
        wk(1.020, "task.started", "worker-general", 11, "a1", **{"task.retries": 0}),
        wk(1.040, "task.published", "worker-general", 11, "a1", **{"task.retries": 1}),
        wk(1.041, "task.received", "worker-high", 20, "a2", **{"task.retries": 1}),
        wk(1.042, "task.started", "worker-high", 21, "a2", **{"task.retries": 1}),
        wk(1.043, "task.retry", "worker-general", 11, "a1", **{"task.retries": 0}),
        wk(2.0, "task.handler_error", "worker-high", 20, "a2", **{"task.retries": 1}),
        wk(2.001, "task.received", "worker-general", 10, "a3", **{"task.retries": 1}),
        wk(2.002, "task.started", "worker-general", 12, "a3", **{"task.retries": 1}),
        wk(2.010, "task.succeeded", "worker-general", 12, "a3", **{"task.retries": 1}),
        *exchange(3.0, "ex-poll", "GET", f"/api/v1/tasks/{TASK}", 200, task_id=TASK),
    ]
    fast_echo = [
        *submit(),
        wk(1.0101, "task.received", "worker-high", 10, "a1"),
        wk(1.0102, "task.started", "worker-high", 11, "a1"),
        wk(1.0103, "task.succeeded", "worker-high", 11, "a1"),
    ]
    exhausted = [*submit()]
    for n in range(3):
        t = 1.02 + n * 0.01
        exhausted += [
            wk(t, "task.started", "worker-high", 11, f"b{n}", **{"task.retries": n}),
            wk(t + 0.001, "task.published", "worker-high", 11, f"b{n}", **{"task.retries": n + 1})
            if n < 2
            else wk(t + 0.001, "task.failed", "worker-high", 11, f"b{n}", **{"error.type": "E"}),
            *(
                [wk(t + 0.002, "task.retry", "worker-high", 11, f"b{n}", **{"task.retries": n})]
                if n < 2
                else []
            ),
        ]
    fanout = [
        *submit(),
        wk(1.02, "task.started", "worker-high", 11, "a1"),
        ln(1.021, "task.published", "worker-high", task_id=CHILD, parent_task_id=TASK),
        ln(1.0205, "task.started", "worker-general", task_id=CHILD, **{"task.attempt_id": "c1"}),
        wk(1.03, "task.succeeded", "worker-high", 11, "a1"),
        ln(1.025, "task.succeeded", "worker-general", task_id=CHILD, **{"task.attempt_id": "c1"}),
    ]
    return {
        "retry_then_redelivery": retry_then_redelivery,
        "fast_echo": fast_echo,
        "exhausted": exhausted,
        "fanout": fanout,
    }


def _summary(trace: Trace) -> Any:
    return (
        [
            (
                t.task_id,
                t.final_status,
                t.retries,
                t.redeliveries,
                t.published_by,
                t.parent_task_id,
                [(a.attempt_id, a.retries, a.outcome, a.worker) for a in t.attempts],
            )
            for t in trace.tasks
        ],
        [(r.exchange_id, r.kind, r.task_id, r.status) for r in trace.requests],
        len(trace.lines),
    )


def _skewed(lines: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Each process's clock off by up to 0.5 ms either way (same box: far less in practice)."""
    offsets: dict[str, timedelta] = {}
    out = []
    for line in lines:
        node = line["service.node.name"]
        offset = offsets.setdefault(node, timedelta(microseconds=rng.uniform(-500, 500)))
        moved = parse_time(line["@timestamp"])
        assert moved is not None
        out.append({**line, "@timestamp": (moved + offset).isoformat()})
    return out


@pytest.mark.parametrize("name", sorted(_scenarios()))
def test_any_order_and_skew_gives_the_same_summary(name: str) -> None:
    lines = _scenarios()[name]
    expected = _summary(build_trace("req-1", lines))
    for seed in range(200):
        rng = random.Random(seed)
        shuffled = _skewed(lines, rng) if seed % 2 else list(lines)
        rng.shuffle(shuffled)
        assert _summary(build_trace("req-1", shuffled)) == expected, f"seed {seed}"


def test_scenario_expectations() -> None:
    """What the property test holds constant is itself right."""
    traces = {name: build_trace("req-1", lines) for name, lines in _scenarios().items()}
    redelivered = traces["retry_then_redelivery"].tasks[0]
    assert [a.outcome for a in redelivered.attempts] == ["RETRY", "LOST", "SUCCESS"]
    assert (redelivered.final_status, redelivered.retries, redelivered.redeliveries) == (
        "SUCCESS",
        1,
        1,
    )
    assert [r.kind for r in traces["retry_then_redelivery"].requests] == ["submit", "poll"]
    assert traces["fast_echo"].tasks[0].final_status == "SUCCESS"
    exhausted = traces["exhausted"].tasks[0]
    assert [a.outcome for a in exhausted.attempts] == ["RETRY", "RETRY", "FAILURE"]
    assert exhausted.final_status == "FAILURE" and exhausted.error_type == "E"
    assert [t.final_status for t in traces["fanout"].tasks] == ["SUCCESS", "SUCCESS"]
