"""The broker-failover drill's verdict, refusal counts and readings (no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from taskq.drills.broker_failover import FailoverOptions
from taskq.drills.failover_probes import Reading, first, last_before, readings_json
from taskq.drills.failover_report import command_line, failed_over_again, judge, refusals
from taskq.faults.load import Submission


def _data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "lost": 0,
        "duplicate_executions": 0,
        "overlapping_executions": 0,
        "held_messages": {"tasks": 2, "ran_once": 2, "never_ran": [], "ran_twice": []},
        "trace_completeness": 1.0,
        "accepted": 100,
        "dead_processes": [],
        "client_refusals": {"other": 0, "switch_503": 3, "switch_503_with_retry_after": 3},
        "worst": {"readyz_200_after_promotion_s": 1.2},
        "failovers": [{"held_messages": 2}],
    }
    data.update(changes)
    return data


def test_a_clean_run_passes() -> None:
    assert judge(_data()) == ("PASSED", [])


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"lost": 1}, "lost"),
        ({"duplicate_executions": 1}, "more than once"),
        ({"overlapping_executions": 1}, "twice at a time"),
        (
            {"held_messages": {"tasks": 1, "ran_once": 0, "never_ran": ["t"], "ran_twice": []}},
            "held messages",
        ),
        ({"trace_completeness": 0.99}, "trace completeness"),
        ({"failed_tasks": ["t"]}, "ended FAILURE"),
        ({"aborted": "failover 1 (kill): no master"}, "stopped early"),
        ({"dead_processes": ["worker1/worker"]}, "exited"),
        (
            {"client_refusals": {"other": 2, "switch_503": 0, "switch_503_with_retry_after": 0}},
            "other",
        ),
        (
            {"client_refusals": {"other": 0, "switch_503": 2, "switch_503_with_retry_after": 1}},
            "Retry-After",
        ),
        ({"worst": {"readyz_200_after_promotion_s": 3.5}}, "/readyz"),
        ({"worst": {"readyz_200_after_promotion_s": None}}, "no failover saw /readyz 200"),
    ],
)
def test_each_broken_promise_fails_the_drill(changes: dict[str, Any], reason: str) -> None:
    verdict, reasons = judge(_data(**changes))
    assert verdict == "FAILED"
    assert any(reason in r for r in reasons), reasons


def test_a_failover_that_caught_no_held_message_is_inconclusive() -> None:
    verdict, reasons = judge(_data(failovers=[{"held_messages": 0}]))
    assert verdict == "INCONCLUSIVE" and "hit nothing" in reasons[0]


def _sub(status: int, code: str | None, cid: str) -> Submission:
    return Submission(0.0, status, 0.01, cid, "t" if status == 202 else None, code)


def test_refusals_count_the_switch_codes_and_their_retry_after() -> None:
    run = {
        "submissions": [
            _sub(202, None, "a"),
            _sub(503, "broker_unavailable", "b"),
            _sub(503, "submission_outcome_unknown", "c"),
            _sub(503, "overloaded", "d"),
            _sub(0, "ReadTimeout", "e"),
        ],
        "retry_after": {"b": "1", "c": "1", "d": None, "e": None},
    }
    counted = refusals(run)
    assert counted["switch_503"] == 2 and counted["switch_503_with_retry_after"] == 2
    assert counted["broker_unavailable"] == 1 and counted["outcome_unknown"] == 1
    assert counted["other"] == 2
    assert counted["by_code"] == {
        "503 broker_unavailable": 1,
        "503 submission_outcome_unknown": 1,
        "503 overloaded": 1,
        "0 ReadTimeout": 1,
    }


def test_first_and_last_readings_by_subject_and_time() -> None:
    readings = [
        Reading(1.0, "writes", "ok"),
        Reading(2.0, "writes", "ConnectionError"),
        Reading(2.5, "node1", "master"),
        Reading(3.0, "writes", "ok"),
        Reading(4.0, "writes", "ok"),
    ]
    ok = lambda v: v == "ok"  # noqa: E731
    assert last_before(readings, "writes", 2.0, ok) == 1.0
    assert first(readings, "writes", 2.0, ok) == 3.0
    assert first(readings, "node1", 0.0, lambda v: v == "master") == 2.5
    assert first(readings, "node2", 0.0, ok) is None


def test_readings_json_keeps_only_changes() -> None:
    readings = [
        Reading(10.0, "writes", "ok"),
        Reading(10.1, "writes", "ok"),
        Reading(10.2, "writes", "ConnectionError"),
        Reading(10.3, "writes", "ok"),
    ]
    assert [r["value"] for r in readings_json(readings, 10.0)] == ["ok", "ConnectionError", "ok"]
    assert readings_json(readings, 10.0)[1]["t_s"] == 0.2


def test_alternate_mode_takes_turns_and_the_command_repeats_it() -> None:
    options = FailoverOptions(failovers=4, mode="alternate")
    assert [options.mode_of(i) for i in range(4)] == ["kill", "partition", "kill", "partition"]
    assert "--alternate" in command_line(options)
    assert "--partition" in command_line(FailoverOptions(mode="partition"))


def test_a_second_failover_before_the_group_was_whole_is_named() -> None:
    once = {"new_master": "broker3", "settled_master": "broker3"}
    again = {"new_master": "broker3", "settled_master": "broker2"}
    aborted = {"new_master": "broker3", "settled_master": None}
    assert [f for f in (once, again, aborted) if failed_over_again(f)] == [again]
