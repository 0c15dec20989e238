"""Verdicts of the drills: the witness fails them; a fault that hit nothing makes them
INCONCLUSIVE (never PASSED); a kill drill's report stays as it was."""

from __future__ import annotations

from typing import Any

import pytest

from taskq.drills.report import fault_hit, judge, markdown, summary_rows, verdict_reasons

SPREAD = {"count": 0, "p50": None, "p95": None, "p99": None}


def fault(running: int | None) -> dict[str, Any]:
    return {
        "kind": "restart",
        "target": "worker-high",
        "offset_s": 9.5,
        "detail": "SIGTERM",
        "interrupted_tasks": 0,
        "recovery_s": {"redelivered_start": None, "readyz_200": 2.0},
        "running_tasks": running,
        "running_long_tasks": running,
    }


def report(**executions: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "drill": "deploy",
        "verdict": "PASSED",
        "command": "taskq drill deploy",
        "accepted": 10,
        "terminal": {"SUCCESS": 10},
        "lost": 0,
        "duplicate_executions": 0,
        "trace_completeness": 1.0,
        "faults": [fault(2), fault(None)],
        "redeliveries": 0,
        "latency_ms": {
            "submission": {p: SPREAD for p in ("before", "during", "after")},
            "task_end_to_end": {p: SPREAD for p in ("before", "during", "after")},
        },
        "client_errors": {"by_status": {}},
        "locust": {"cpu_percent_mean": 1.0, "cpu_percent_max": 2.0},
        "plots": [],
        "id_prefix": "deploy-abc",
        "examples": {"redelivered": []},
        "executions": {
            "source": "execution witness",
            "accepted_tasks": 10,
            "witnessed_tasks": 10,
            "runs": 10,
            "never_ran": 0,
            "never_ran_task_ids": [],
            "ran_more_than_once": 0,
            "duplicate_task_ids": [],
            "overlapping": 0,
            "overlap_task_ids": [],
            "long_tasks": {"accepted": 3, "ran_once": 3},
        },
    }
    data["executions"].update(executions)
    return data


def test_a_clean_witnessed_run_passes() -> None:
    assert verdict_reasons(report()) == []


@pytest.mark.parametrize(
    ("figure", "reason"),
    [
        ("never_ran", "1 accepted task(s) never ran (witness)"),
        ("ran_more_than_once", "1 task(s) ran more than once (witness)"),
        ("overlapping", "1 task(s) ran twice at the same time (witness)"),
    ],
)
def test_the_witness_fails_a_drill(figure: str, reason: str) -> None:
    assert verdict_reasons(report(**{figure: 1})) == [reason]


def test_a_fault_that_hit_nothing_makes_the_drill_inconclusive_not_passed() -> None:
    data = report()
    data["faults"] = [fault(0), fault(None)]
    assert verdict_reasons(data) == []
    verdict, reasons = judge(data)
    assert verdict == "INCONCLUSIVE"
    assert reasons == [
        "the fault hit nothing (restart worker-high: 0 task(s) interrupted, 0 running; "
        "restart worker-high: 0 task(s) interrupted, 0 running)"
    ]
    data["faults"], data["faults_planned"] = [], 1
    assert judge(data) == (
        "INCONCLUSIVE",
        ["the fault hit nothing: none of the 1 planned fault(s) was made"],
    )


def test_a_failure_outranks_a_fault_that_hit_nothing() -> None:
    data = report(never_ran=1)
    data["faults"] = [fault(0)]
    assert judge(data) == ("FAILED", ["1 accepted task(s) never ran (witness)"])


@pytest.mark.parametrize(
    ("changes", "hit"),
    [
        ({"kind": "worker-kill", "running_tasks": None, "interrupted_tasks": 2}, True),
        ({"kind": "worker-kill", "running_tasks": 0, "interrupted_tasks": 0}, False),
        ({"kind": "api-kill", "target": "api-1", "in_flight_requests": 3}, True),
        ({"kind": "api-kill", "target": "api-1", "in_flight_requests": 0}, False),
        ({"kind": "redis-oom", "target": "redis", "running_tasks": 2, "shed": 0}, False),
        ({"kind": "redis-oom", "target": "redis", "running_tasks": 2, "shed": 5}, True),
        ({"running_tasks": 4, "detail": "not injected: gone"}, False),
    ],
)
def test_what_counts_as_a_hit(changes: dict[str, Any], hit: bool) -> None:
    assert fault_hit({**fault(None), **changes}) is hit


def test_a_fault_that_hit_work_passes() -> None:
    assert judge(report()) == ("PASSED", [])


def test_a_kill_drill_report_is_judged_as_before() -> None:
    data = report()
    del data["executions"]
    data["faults"] = [fault(None)]
    assert verdict_reasons(data) == []
    assert "Executions" not in markdown({**data, "reasons": []})
    assert not any(k.startswith("witness") for k, _ in summary_rows(data))


def test_report_md_shows_the_executions_and_what_each_fault_caught() -> None:
    data = report(ran_more_than_once=1, duplicate_task_ids=["t-1"])
    text = markdown({**data, "reasons": verdict_reasons(data)})
    assert "## Executions (execution witness)" in text
    assert "| ran more than once (duplicates) | 1 |" in text
    assert "duplicate_task_ids: `t-1`" in text
    assert "running tasks caught |" in text.splitlines()[text.splitlines().index("## Faults") + 2]
    assert dict(summary_rows(data))["running tasks caught per fault"] == "2, -"


def test_each_example_links_to_its_trace_page() -> None:
    data = report()
    page = "http://127.0.0.1:8080/ui/traces/deploy-abc-7"
    data["examples"] = {"redelivered": ["deploy-abc-7"], "trace_pages": {"deploy-abc-7": page}}
    text = markdown({**data, "reasons": []})
    assert f"- `taskq trace deploy-abc-7`: [trace page]({page})" in text.splitlines()
