"""The drill reconciliation on synthetic log sets: a lost task, a duplicate execution, a
suppressed redelivery, a replay, out-of-order lines; the verdict is the same for every
order of its input lines. Trace completeness is decided by ``build_trace``."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from taskq.faults.inject import Kill
from taskq.faults.load import Submission
from taskq.faults.reconcile import reconcile

Line = dict[str, Any]


def _at(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def _http(t: float, cid: str, exchange: str, status: int = 202, key: str = "") -> list[Line]:
    """nginx's and the API replica's lines of one POST /api/v1/tasks."""
    common = {
        "event.action": "http.request.completed",
        "correlation_id": cid,
        "http.request.id": exchange,
        "http.request.method": "POST",
        "url.path": "/api/v1/tasks",
        "http.response.status_code": status,
        "duration_ms": 5,
    }
    return [
        {**common, "@timestamp": _at(t + 0.01), "service.name": "nginx"},
        {**common, "@timestamp": _at(t), "service.name": "api", "service.node.name": "api-1"},
    ]


def _task(t: float, event: str, task: str, cid: str, node: str, attempt: str = "") -> Line:
    service = "api" if node.startswith("api") else "worker"
    line: Line = {
        "@timestamp": _at(t),
        "event.action": event,
        "task_id": task,
        "service.name": service,
        "service.node.name": node,
        "correlation_id": cid,
    }
    if attempt:
        line["task.attempt_id"] = attempt
    return line


def _submitted(t: float, task: str, cid: str) -> list[Line]:
    published = _task(t, "task.published", task, cid, "api-1")
    published["http.request.id"] = f"x-{cid}"
    return [*_http(t, cid, f"x-{cid}"), published]


def _run(t: float, task: str, cid: str, node: str, attempt: str, end: str) -> list[Line]:
    lines = [
        _task(t, "task.received", task, cid, node, attempt),
        _task(t + 0.01, "task.started", task, cid, node, attempt),
    ]
    if end:
        lines.append(_task(t + 0.5, end, task, cid, node, attempt))
    return lines


def _story() -> tuple[list[Submission], dict[str, str], list[Line], list[Kill]]:
    subs = [
        Submission(100.0, 202, 0.01, "c-a", "a", None),
        Submission(100.0, 202, 0.01, "c-b", "b", None),
        Submission(100.0, 202, 0.01, "c-c", "c", None),
        Submission(100.0, 202, 0.01, "c-d", "d", None),
        Submission(101.0, 202, 0.01, "c-r", "d", None),  # a replay of d's Idempotency-Key
        Submission(100.0, 503, 0.01, "c-e", None, "broker_unavailable"),
    ]
    statuses = {"a": "SUCCESS", "b": "SUCCESS", "c": "PENDING", "d": "SUCCESS"}
    lines: list[Line] = []
    # a: held by worker-general when it was killed at 110, redelivered at 113.5.
    lines += _submitted(100, "a", "c-a")
    lines += _run(109.0, "a", "c-a", "worker-general", "a1", "")
    lines += _run(113.5, "a", "c-a", "worker-general", "a2", "task.succeeded")
    # b: ran to the end twice: a duplicate execution with effect.
    lines += _submitted(100, "b", "c-b")
    lines += _run(101.0, "b", "c-b", "worker-high", "b1", "task.succeeded")
    lines += _run(102.0, "b", "c-b", "worker-general", "b2", "task.succeeded")
    # c: accepted, never ran: lost, and its trace has no worker hop.
    lines += _submitted(100, "c", "c-c")
    # d: ran, a redelivery was suppressed by the completion record; then replayed by c-r.
    lines += _submitted(100, "d", "c-d")
    lines += _run(101.0, "d", "c-d", "worker-general", "d1", "task.succeeded")
    lines += _run(104.0, "d", "c-d", "worker-high", "d2", "task.duplicate_suppressed")
    replay = _task(101.0, "idempotency.replayed", "d", "c-r", "api-2")
    replay["http.request.id"] = "x-c-r"
    lines += [*_http(101.0, "c-r", "x-c-r"), replay]
    return subs, statuses, lines, [Kill("worker-general", 42, 110.0)]


def test_lost_duplicate_suppressed_and_replay() -> None:
    subs, statuses, lines, kills = _story()
    verdict = reconcile(subs, statuses, lines, kills)
    assert verdict.accepted == 4 and dict(verdict.rejected) == {"broker_unavailable": 1}
    assert verdict.lost == ["c"]
    assert verdict.duplicated == ["b"]  # d's suppressed redelivery is not a duplicate
    assert verdict.suppressed == 1
    assert verdict.incomplete_traces == {"c-c": "no received, started, terminal"}
    assert verdict.checked_traces == 5  # the replay's trace is checked (and complete)
    assert verdict.trace_completeness == 0.8
    assert [(r.task_id, r.seconds) for r in verdict.recoveries] == [("a", 3.5)]


def test_verdict_is_the_same_for_every_order_of_the_lines() -> None:
    subs, statuses, lines, kills = _story()
    expected = repr(sorted(reconcile(subs, statuses, lines, kills).summary().items()))
    rng = random.Random(3)
    for _ in range(30):
        rng.shuffle(lines)
        assert repr(sorted(reconcile(subs, statuses, lines, kills).summary().items())) == expected


def test_out_of_order_clocks_do_not_break_a_trace() -> None:
    """A fast worker's lines are stamped before the API's publish line (trap 20)."""
    subs = [Submission(100.0, 202, 0.01, "c-o", "o", None)]
    lines = _submitted(100.2, "o", "c-o") + _run(
        100.0, "o", "c-o", "worker-high", "o1", "task.succeeded"
    )
    verdict = reconcile(subs, {"o": "SUCCESS"}, list(reversed(lines)))
    assert verdict.incomplete_traces == {} and verdict.lost == [] and verdict.duplicated == []


def test_a_missing_nginx_line_makes_the_trace_incomplete() -> None:
    subs = [Submission(100.0, 202, 0.01, "c-n", "n", None)]
    lines = _submitted(100, "n", "c-n") + _run(
        100.5, "n", "c-n", "worker-high", "n1", "task.succeeded"
    )
    lines = [x for x in lines if x.get("service.name") != "nginx"]
    verdict = reconcile(subs, {"n": "SUCCESS"}, lines)
    assert verdict.incomplete_traces == {"c-n": "no nginx"}
