"""The publish time of a task is its message's own stamp, and the timings agree with it.

The API stamps ``x_published_at`` when it builds the message, pushes it, and logs
``task.published`` after Redis answered (with the stamp as ``task.published_at``). A fast
worker receives the message before that line's time, never before the stamp.
"""

from __future__ import annotations

from typing import Any

import pytest

from taskq.search.trace.build import build_trace, parse_time
from tests.unit.taskq.search.trace.test_build import TASK, at, exchange, ln, wk


def _submit(stamp: float | None, logged: float = 1.012) -> list[dict[str, Any]]:
    fields: dict[str, Any] = {"task.retries": 0, "http.request.id": "ex-post"}
    if stamp is not None:
        fields["task.published_at"] = at(stamp)
    published = ln(
        logged, "task.published", "api-2", task_id=TASK, task_name="t", queue="high", **fields
    )
    return [*exchange(1.0, "ex-post", "POST", "/api/v1/tasks", 202), published]


def _fast_worker(stamp: float) -> list[dict[str, Any]]:
    """Received 0.5 ms after the stamp, started 1 ms after it, done 1 ms later: all before
    the publish line's time (1.012)."""
    return [
        wk(stamp + 0.0005, "task.received", "worker-high", 10, "a1"),
        wk(stamp + 0.0010, "task.started", "worker-high", 11, "a1", queue_wait_ms=1.0),
        wk(stamp + 0.0020, "task.succeeded", "worker-high", 11, "a1", duration_ms=1.0),
    ]


def test_the_stamp_is_the_publish_time_and_no_note_appears() -> None:
    lines = [*_submit(stamp=1.005), *_fast_worker(1.005)]
    (task,) = build_trace("req-1", lines).tasks
    assert task.published_at == parse_time(at(1.005))
    assert task.notes == []
    (attempt,) = task.attempts
    assert attempt.receive_wait_ms == pytest.approx(0.5)
    assert task.queue_wait_ms == 1.0
    assert task.end_to_end_ms == pytest.approx(2.0)
    assert task.queue_wait_ms is not None and task.end_to_end_ms is not None
    assert task.queue_wait_ms <= task.end_to_end_ms
    assert task.publish_ms == pytest.approx(3.0)  # API started 1.002 -> stamped 1.005


def test_a_line_without_the_stamp_falls_back_to_its_own_time() -> None:
    lines = [*_submit(stamp=None), *_fast_worker(1.005)]
    (task,) = build_trace("req-1", lines).tasks
    assert task.published_at == parse_time(at(1.012))


def test_a_receive_before_the_stamp_is_measured_as_two_clocks() -> None:
    """Only a worker whose clock is behind the API's receives 'before' the stamp."""
    lines = [*_submit(stamp=1.005), *_fast_worker(1.000)]
    (task,) = build_trace("req-1", lines).tasks
    (note,) = task.notes
    assert "received 4.5 ms before the message's own publish time" in note
    assert "clocks differ by at least that much" in note
    assert task.attempts[0].receive_wait_ms == 0.0


def test_the_api_start_is_its_own_stamp_not_line_time_minus_duration() -> None:
    """The API's line is written after its duration was measured: line time minus duration
    is later than the start by the logging overhead, which can pass a stamp taken right
    at the start. ``event.start`` (the same wall clock as the stamp) is the start."""
    lines = [*_submit(stamp=1.0015), *_fast_worker(1.0015)]
    # Line time 1.028 minus 26 ms says 1.002, after the stamp; the API began at 1.001.
    api_line = next(x for x in lines if x["service.node.name"] == "api-2" and "duration_ms" in x)
    api_line["event.start"] = at(1.001)
    (task,) = build_trace("req-1", lines).tasks
    assert task.publish_ms == pytest.approx(0.5)
