"""The benchmark's synthetic logs conform to the log schema and can be traced."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.generate_logs import generate
from taskq.logs.schema import validate_line
from taskq.search.store.config import StoreConfig
from taskq.search.store.duckdb_store import DuckDBStore
from taskq.search.trace.build import find_trace


def test_generated_lines_are_schema_lines_and_traceable(tmp_path: Path) -> None:
    logs = tmp_path / "log"
    written = list(generate(logs, lines=3000, ids=150, hours=1.0, seed=3))
    assert 3000 <= written[-1] <= 3050  # the last request is never cut short
    lines = [json.loads(raw) for path in logs.glob("*.jsonl") for raw in path.open()]
    assert len(lines) == written[-1]
    assert [problem for line in lines for problem in validate_line(line)] == []
    correlation_ids = {line["correlation_id"] for line in lines if "correlation_id" in line}
    assert len(correlation_ids) == 150
    store = DuckDBStore(StoreConfig.for_dirs(tmp_path, logs))
    trace = find_trace(store, sorted(correlation_ids)[0])
    assert trace is not None and len(trace.tasks) == 1
    assert trace.tasks[0].final_status in ("SUCCESS", "FAILURE")
    assert trace.tasks[0].queue_wait_ms and trace.tasks[0].execution_ms
    post = trace.requests[0]
    assert post.method == "POST" and post.api_node and trace.tasks[0].publish_ms is not None
