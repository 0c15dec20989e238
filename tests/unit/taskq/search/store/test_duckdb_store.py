"""The embedded backend over real files: lookups, filters, statistics, torn lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from taskq.search.store.base import LogFilter, LogStoreError
from taskq.search.store.config import StoreConfig
from taskq.search.store.duckdb_store import DuckDBStore


def ln(ts: str, node: str, event: str, **fields: Any) -> dict[str, Any]:
    service = "nginx" if node == "nginx" else node.split("-")[0]
    return {
        "@timestamp": f"2026-11-22T{ts}+00:00",
        "log.level": fields.pop("level", "INFO"),
        "message": fields.pop("message", event.replace(".", " ")),
        "service.name": service,
        "service.node.name": node,
        "event.action": event,
        **fields,
    }


def write(path: Path, lines: list[dict[str, Any]], tail: str = "") -> None:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + tail)


@pytest.fixture
def store(tmp_path: Path) -> DuckDBStore:
    logs = tmp_path / "log"
    logs.mkdir()
    ids = {"correlation_id": "req-1", "task_id": "t-1", "task_name": "taskq.risk.calculate_var"}
    write(
        logs / "nginx-access.jsonl",
        [
            ln(
                "10:00:00.030",
                "nginx",
                "http.request.completed",
                correlation_id="req-1",
                **{"http.response.status_code": 202},
            ),
            ln(
                "10:00:01.000",
                "nginx",
                "http.request.completed",
                correlation_id="req-2",
                level="ERROR",
                **{"http.response.status_code": 503},
            ),
        ],
    )
    write(
        logs / "worker-high.jsonl",
        [
            ln("10:00:00.040", "worker-high", "task.started", queue_wait_ms=5.0, **ids),
            ln("10:00:00.090", "worker-high", "task.retry", **ids),
            ln(
                "10:00:00.100",
                "worker-high",
                "task.started",
                queue_wait_ms=15.0,
                **{"task.redelivered": True},
                **ids,
            ),
            ln("10:00:00.200", "worker-high", "task.succeeded", duration_ms=100.0, **ids),
            ln(
                "10:00:02.000",
                "worker-high",
                "task.started",
                correlation_id="req-3",
                task_id="t-3",
                task_name="taskq.drills.echo",
            ),
            ln(
                "10:00:03.000",
                "worker-high",
                "log",
                level="WARNING",
                message="missed heartbeat from worker",
            ),
        ],
        tail='{"@timestamp": "2026-11-22T10:00:04+00:00", "correlation_id": "req-1", "mess',
    )
    return DuckDBStore(StoreConfig.for_dirs(tmp_path, logs))


def test_lookups_by_id_skip_the_torn_line(store: DuckDBStore) -> None:
    assert len(store.lines_for_correlation("req-1")) == 5
    assert {x["event.action"] for x in store.lines_for_tasks({"t-3"})} == {"task.started"}
    assert store.lines_for_correlation("nope") == []


def test_search_filters(store: DuckDBStore) -> None:
    def events(**kwargs: Any) -> list[str]:
        return [x["event.action"] for x in store.search(LogFilter(**kwargs))]

    assert events(service="nginx") == ["http.request.completed"] * 2
    assert events(level="warning") == ["http.request.completed", "log"]
    assert events(event="task.s*") == [
        "task.started",
        "task.started",
        "task.succeeded",
        "task.started",
    ]
    assert events(task_name="drills.echo") == ["task.started"]
    assert events(grep="HEARTBEAT") == ["log"]
    assert events(correlation_id="req-1", limit=2) == ["task.started", "task.succeeded"]
    since = datetime(2026, 11, 22, 10, 0, 1, tzinfo=UTC)
    assert events(since=since, until=since.replace(second=2)) == [
        "http.request.completed",
        "task.started",
    ]
    lines = store.search(LogFilter(task_id="t-3"))
    assert lines[0]["task_name"] == "taskq.drills.echo" and "duration_ms" not in lines[0]


def test_unknown_level_is_a_store_error(store: DuckDBStore) -> None:
    with pytest.raises(LogStoreError, match="unknown level"):
        store.search(LogFilter(level="LOUD"))


def test_stats(store: DuckDBStore) -> None:
    report = store.stats(None, None)
    assert report.lines == 8
    assert report.tasks_by_status == {"SUCCESS": 1, "STARTED": 1}
    var, echo = report.by_task_name
    assert (var.task_name, var.executions, var.retries, var.redeliveries) == (
        "taskq.risk.calculate_var",
        1,
        1,
        1,
    )
    assert var.execution_ms.p50 == 100.0 and var.queue_wait_ms.p50 == 10.0
    assert echo.executions == 0 and echo.execution_ms.p50 is None
    assert report.http_status == {202: 1, 503: 1}
    assert report.busiest_correlation_ids[0] == ("req-1", 5)
    later = store.stats(datetime(2026, 11, 22, 10, 0, 1, tzinfo=UTC), None)
    assert later.lines == 3 and later.http_status == {503: 1}


def test_missing_log_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LogStoreError, match="does not exist"):
        DuckDBStore(StoreConfig.for_dirs(tmp_path, tmp_path / "nope"))


def test_empty_log_dir(tmp_path: Path) -> None:
    store = DuckDBStore(StoreConfig.for_dirs(tmp_path, tmp_path))
    assert store.search(LogFilter()) == [] and store.stats(None, None).lines == 0


def test_an_inflated_trace_is_read_up_to_the_lookup_bound_and_says_so(tmp_path: Path) -> None:
    from dataclasses import replace

    from taskq.search.trace.build import find_trace
    from taskq.search.trace.page import page_of

    logs = tmp_path / "log"
    logs.mkdir()
    task = {"correlation_id": "victim", "task_id": "t-1"}
    write(logs / "api-1.jsonl", [ln("10:00:00.000", "api-1", "task.published", **task)])
    write(
        logs / "worker-1.jsonl",
        [ln("10:00:01.000", "worker-1", "task.succeeded", **task, duration_ms=5.0)],
    )
    noise = [
        ln(f"10:00:02.{i:03d}", "nginx", "http.request.completed", correlation_id="victim")
        for i in range(200)
    ]
    write(logs / "nginx-access.jsonl", noise)
    store = DuckDBStore(replace(StoreConfig.for_dirs(tmp_path, logs), lookup_max_lines=20))
    try:
        found = store.lines_for_correlation("victim")
        trace = find_trace(store, "victim")
    finally:
        store.close()
    assert found.capped and len(found) == 20
    assert trace is not None and trace.lookup_capped
    # The quiet processes' lines survive the inflation: the task is still seen to succeed.
    assert [t.task_id for t in trace.tasks] == ["t-1"]
    assert trace.tasks[0].final_status == "SUCCESS"
    _, info = page_of(trace, 0, 1000, 1 << 20)
    assert info.truncated and info.to_json()["lookup_capped"] is True


def test_surrounding_lines_are_found_within_the_lookup_bound(tmp_path: Path) -> None:
    from dataclasses import replace

    logs = tmp_path / "log"
    logs.mkdir()
    lines = [
        ln(f"10:00:{i:02d}.000", "api-1", "http.request.completed", correlation_id="v", n=i)
        for i in range(50)
    ]
    write(logs / "api-1.jsonl", lines)
    store = DuckDBStore(replace(StoreConfig.for_dirs(tmp_path, logs), lookup_max_lines=20))
    try:
        around = store.surrounding(lines[5], 2)
        # A line past the bound is not one a trace shows: not looked for either.
        beyond = store.surrounding(lines[40], 2)
    finally:
        store.close()
    assert around is not None
    assert [x["n"] for x in around.before] == [3, 4] and [x["n"] for x in around.after] == [6, 7]
    assert beyond is None
