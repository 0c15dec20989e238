"""Log lines of whole requests, as the stack writes them, for the explorer's tests."""

from __future__ import annotations

from typing import Any

from tests.unit.taskq.search.trace.test_build import CHILD, TASK, at, exchange, ln, submit, wk

__all__ = ["CHILD", "TASK", "fanout_with_retry_and_redelivery", "hostile", "wk"]

HOSTILE_ID = "x<script>alert(1)</script>"  # what a client could send (nginx replaces it)
HOSTILE_ERROR = '<img src=x onerror="alert(2)">&amp;"\'</td>'


def fanout_with_retry_and_redelivery() -> list[dict[str, Any]]:
    """req-1 submits TASK at 1.0 s: attempt a1 retries (retry 1), a2's worker dies (LOST),
    a3 (redelivered) succeeds at 3.4 s and published CHILD, which succeeds."""
    return [
        *submit(),
        wk(1.015, "task.received", "worker-high", 10, "a1"),
        wk(1.020, "task.started", "worker-high", 11, "a1", queue_wait_ms=8.0),
        wk(1.100, "task.retry", "worker-high", 11, "a1", **{"error.type": "FlakyError"}),
        wk(1.300, "task.received", "worker-high", 10, "a2", **{"task.retries": 1}),
        wk(1.310, "task.started", "worker-high", 12, "a2", **{"task.retries": 1}),
        wk(
            2.300,
            "task.received",
            "worker-general",
            20,
            "a3",
            **{"task.retries": 1, "task.redelivered": True},
        ),
        wk(
            2.310,
            "task.started",
            "worker-general",
            21,
            "a3",
            **{"task.retries": 1, "task.redelivered": True},
        ),
        ln(
            3.000,
            "task.published",
            "worker-general",
            task_id=CHILD,
            task_name="t.child",
            queue="high",
            parent_task_id=TASK,
            **{"task.retries": 0, "process.pid": 21},
        ),
        wk(
            3.400,
            "task.succeeded",
            "worker-general",
            21,
            "a3",
            duration_ms=1090.0,
            **{"task.retries": 1, "task.redelivered": True},
        ),
        wk(3.010, "task.received", "worker-high", 10, "c1", task=CHILD, parent_task_id=TASK),
        wk(3.020, "task.started", "worker-high", 11, "c1", task=CHILD, parent_task_id=TASK),
        wk(3.200, "task.succeeded", "worker-high", 11, "c1", task=CHILD, duration_ms=180.0),
        *exchange(4.0, "ex-poll", "GET", f"/api/v1/tasks/{TASK}", 200, task_id=TASK),
    ]


def hostile() -> list[dict[str, Any]]:
    """A request whose id and error message are markup."""
    lines = [
        *submit(cid=HOSTILE_ID),
        wk(1.015, "task.received", "worker-high", 30, "h1"),
        wk(1.020, "task.started", "worker-high", 31, "h1"),
        wk(
            1.100,
            "task.failed",
            "worker-high",
            31,
            "h1",
            **{"error.type": "ValueError", "error.message": HOSTILE_ERROR},
        ),
    ]
    for line in lines:
        line["correlation_id"] = HOSTILE_ID
        line["message"] = HOSTILE_ERROR
    return lines


_ = at
