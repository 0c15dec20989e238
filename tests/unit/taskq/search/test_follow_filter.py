"""The follower's line filter selects what ``taskq logs`` (DuckDB over the same file) does.

Independent truth: DuckDB evaluating the store's SQL filter over the lines written here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskq.search.follow import matches
from taskq.search.store.base import LogFilter
from taskq.search.store.config import StoreConfig
from taskq.search.store.factory import open_store

LINES = [
    {"@timestamp": f"2026-01-01T00:00:{i:02d}+00:00", "task_id": f"t{i}", **fields}
    for i, fields in enumerate(
        [
            {"service.name": "api", "service.node.name": "api-1", "log.level": "INFO",
             "event.action": "task.published", "task_name": "taskq.risk.calculate_var"},
            {"service.name": "worker", "service.node.name": "worker-high", "log.level": "ERROR",
             "event.action": "task.failed", "message": "Timeout in step", "task_name": "x.y"},
            {"service.name": "nginx", "log.level": "WARNING",
             "event.action": "http.request.completed", "url.path": "/api/v1/tasks",
             "correlation_id": "c-1"},
            {"service.name": "worker", "log.level": "debug", "event.action": "task.started"},
        ]
    )
]  # fmt: skip
FILTERS = [
    LogFilter(service="api"),
    LogFilter(service="worker-high"),
    LogFilter(level="warning"),
    LogFilter(level="WARN"),
    LogFilter(event="task.*"),
    LogFilter(event="task.failed"),
    LogFilter(task_name="calculate_var"),
    LogFilter(correlation_id="c-1"),
    LogFilter(task_id="t3"),
    LogFilter(grep="timeout"),
    LogFilter(grep="/API/V1"),
    LogFilter(service="worker", level="info"),
]


@pytest.mark.parametrize("log_filter", FILTERS, ids=repr)
def test_follow_filter_agrees_with_the_store(tmp_path: Path, log_filter: LogFilter) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / "mixed.jsonl").write_text("".join(json.dumps(x) + "\n" for x in LINES))
    store = open_store(StoreConfig.for_dirs(tmp_path / "var", log_dir))
    try:
        from_store = {line["task_id"] for line in store.search(log_filter)}
    finally:
        store.close()
    assert {line["task_id"] for line in LINES if matches(line, log_filter)} == from_store
