"""The drill reconciliation: lost, duplicated, incomplete traces and recovery times, for
every order of its input lines."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from taskq.faults.inject import Kill
from taskq.faults.load import Submission
from taskq.faults.reconcile import reconcile


def _at(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def _line(t: float, event: str, task: str, node: str, cid: str) -> dict[str, Any]:
    service = "api" if node.startswith("api") else "worker"
    return {
        "@timestamp": _at(t),
        "event.action": event,
        "task_id": task,
        "service.name": service,
        "service.node.name": node,
        "correlation_id": cid,
    }


def _story() -> tuple[list[Submission], dict[str, str], list[dict[str, Any]], list[Kill]]:
    subs = [
        Submission(100.0, 202, 0.01, "c-a", "a", None),
        Submission(100.0, 202, 0.01, "c-b", "b", None),
        Submission(100.0, 202, 0.01, "c-c", "c", None),
        Submission(100.0, 503, 0.01, "c-d", None, "broker_unavailable"),
    ]
    statuses = {"a": "SUCCESS", "b": "SUCCESS", "c": "PENDING"}
    lines = [
        {"@timestamp": _at(100), "service.name": "nginx", "correlation_id": c}
        for c in ("c-a", "c-b", "c-c")
    ]
    # a: held by worker-general when it was killed at 110, run again at 113.5.
    lines += [
        _line(100.1, "task.published", "a", "api-1", "c-a"),
        _line(109.0, "task.received", "a", "worker-general", "c-a"),
        _line(109.0, "task.started", "a", "worker-general", "c-a"),
        _line(113.0, "task.restored", "a", "worker-high", "c-a"),
        _line(113.5, "task.received", "a", "worker-general", "c-a"),
        _line(113.5, "task.started", "a", "worker-general", "c-a"),
        _line(114.0, "task.succeeded", "a", "worker-general", "c-a"),
    ]
    # b: ran to the end twice (a heartbeat stall): a duplicate with effect.
    lines += [
        _line(100.1, "task.published", "b", "api-2", "c-b"),
        _line(101.0, "task.received", "b", "worker-high", "c-b"),
        _line(101.0, "task.started", "b", "worker-high", "c-b"),
        _line(102.0, "task.received", "b", "worker-general", "c-b"),
        _line(102.0, "task.started", "b", "worker-general", "c-b"),
        _line(103.0, "task.succeeded", "b", "worker-high", "c-b"),
        _line(103.1, "task.succeeded", "b", "worker-general", "c-b"),
    ]
    # c: accepted, never ran.
    lines += [_line(100.1, "task.published", "c", "api-1", "c-c")]
    return subs, statuses, lines, [Kill("worker-general", 42, 110.0)]


def test_verdict_is_the_same_for_every_order_of_the_lines() -> None:
    subs, statuses, lines, kills = _story()
    verdicts = set()
    rng = random.Random(3)
    for _ in range(50):
        rng.shuffle(lines)
        verdict = reconcile(subs, statuses, lines, kills)
        verdicts.add(repr(sorted(verdict.summary().items())))
    assert len(verdicts) == 1
    verdict = reconcile(subs, statuses, lines, kills)
    assert verdict.accepted == 3 and dict(verdict.rejected) == {"broker_unavailable": 1}
    assert verdict.lost == ["c"]
    assert verdict.duplicated == ["b"]
    assert set(verdict.incomplete_traces) == {"c"}
    assert [(r.task_id, r.seconds) for r in verdict.recoveries] == [("a", 3.5)]


def test_a_suppressed_redelivery_is_not_a_duplicate() -> None:
    subs, statuses, lines, _ = _story()
    second_run = [
        x
        for x in lines
        if x.get("task_id") == "b"
        and x.get("service.node.name") == "worker-general"
        and x["event.action"] != "task.received"
    ]
    kept = [x for x in lines if x not in second_run]
    suppressed = _line(102.5, "task.duplicate_suppressed", "b", "worker-general", "c-b")
    # Whether dedup also logs task.succeeded for the suppressed run or not, b ran once.
    for extra in ([], [_line(102.6, "task.succeeded", "b", "worker-general", "c-b")]):
        assert reconcile(subs, statuses, [*kept, suppressed, *extra]).duplicated == []
