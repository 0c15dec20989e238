"""Waterfall geometry from a Trace: one axis, offsets and widths, nesting, the verdict."""

from __future__ import annotations

import pytest

from taskq.search.explorer.refs import find_line, line_ref
from taskq.search.explorer.waterfall import MIN_WIDTH, build_waterfall, seconds, verdict
from taskq.search.trace.build import build_trace
from tests.unit.taskq.search.explorer.scenarios import (
    CHILD,
    TASK,
    fanout_with_retry_and_redelivery,
)
from tests.unit.taskq.search.trace.test_build import submit, wk


def test_bars_share_one_axis_from_first_to_last_instant() -> None:
    trace = build_trace("req-1", fanout_with_retry_and_redelivery())
    fall = build_waterfall(trace)
    # nginx received the POST at 1.000 s; the poll's nginx line ended at 4.030 s.
    assert fall.start is not None and fall.start.second == 1 and fall.start.microsecond == 0
    assert fall.span_ms == pytest.approx(3030.0)
    for bar in fall.bars:
        assert bar.left >= 0.0 and bar.width >= MIN_WIDTH and bar.left + bar.width <= 1.0 + 1e-9
    attempts = [b for b in fall.bars if b.kind == "attempt"]
    first, lost, redelivered, child = attempts
    # attempt 1 ran 1.020 -> 1.100 s: offset 20 ms, width 80 ms, on a 3030 ms axis.
    assert first.left == pytest.approx(20 / 3030) and first.width == pytest.approx(80 / 3030)
    assert (first.status, first.marks) == ("RETRY", ())
    # The attempt whose worker died ends where the redelivery was received, and says so.
    assert lost.status == "LOST" and lost.open_end
    assert lost.left + lost.width == pytest.approx((2300 - 1000) / 3030)
    assert redelivered.status == "SUCCESS" and redelivered.marks == ("retry 1", "redelivered")
    assert redelivered.left + redelivered.width == pytest.approx(2400 / 3030)
    assert child.status == "SUCCESS"


def test_children_are_nested_under_their_parent_and_exchanges_come_first() -> None:
    fall = build_waterfall(build_trace("req-1", fanout_with_retry_and_redelivery()))
    kinds = [(b.kind, b.depth) for b in fall.bars]
    assert kinds[:4] == [("nginx", 0), ("api", 1), ("nginx", 0), ("api", 1)]
    tasks = [(b.label.split()[-1], b.depth) for b in fall.bars if b.kind == "task"]
    assert tasks == [(TASK, 0), (CHILD, 1)]
    child_at = next(i for i, b in enumerate(fall.bars) if b.kind == "task" and CHILD in b.label)
    assert all(b.depth == 2 for b in fall.bars[child_at + 1 :])
    poll = fall.bars[2]
    assert "poll" in poll.marks


def test_every_row_opens_the_line_it_was_drawn_from() -> None:
    trace = build_trace("req-1", fanout_with_retry_and_redelivery())
    fall = build_waterfall(trace)
    by_kind = {}
    for bar in fall.bars:
        if bar.ref:
            line = find_line(trace.lines, bar.ref)
            assert line is not None
            by_kind.setdefault(bar.kind, line)
    assert by_kind["nginx"]["service.name"] == "nginx"
    assert by_kind["api"]["event.action"] == "http.request.completed"
    assert by_kind["task"]["event.action"] == "task.published"
    assert by_kind["attempt"]["event.action"] == "task.started"
    assert find_line(trace.lines, "not-a-ref") is None
    assert line_ref(trace.lines[0]) == line_ref(dict(reversed(trace.lines[0].items())))


def test_verdict_comes_from_the_model() -> None:
    trace = build_trace("req-1", fanout_with_retry_and_redelivery())
    assert verdict(trace) == (
        "SUCCESS after 1 retry and 1 redelivery, end to end 2.4 s (1 child task: 1 SUCCESS)"
    )
    running = build_trace("req-1", [*submit(), wk(1.02, "task.started", "worker-high", 11, "a1")])
    assert verdict(running).startswith("STARTED")
    fall = build_waterfall(running)
    (attempt,) = [b for b in fall.bars if b.kind == "attempt"]
    assert attempt.open_end and "still running" in attempt.marks


def test_a_trace_without_tasks_still_has_an_axis() -> None:
    from tests.unit.taskq.search.trace.test_build import exchange

    trace = build_trace("req-1", exchange(1.0, "ex-1", "GET", "/healthz", 200))
    fall = build_waterfall(trace)
    assert fall.verdict == "GET /healthz -> 200, no task"
    assert [b.kind for b in fall.bars] == ["nginx", "api"]
    assert seconds(840) == "840 ms" and seconds(2400) == "2.4 s" and seconds(None) == "?"


def test_a_replay_says_whose_task_it_replayed_and_is_marked() -> None:
    from tests.unit.taskq.search.trace.test_build import exchange, ln

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
    fall = build_waterfall(build_trace("second", original + replay))
    assert fall.verdict.startswith("replay of first; SUCCESS")
    assert "replay" in fall.bars[0].marks
