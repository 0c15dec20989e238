"""Discover's order of a trace is ``taskq trace``'s order.

The trace explorer's saved searches sort by the keys in their ``sort`` attribute. This test
applies those keys the way Elasticsearch sorts ("Sort search results", Elasticsearch
reference: each key in turn, ascending, a document without the field after every document
with it, ``missing: _last``; ``date_nanos`` compares nanoseconds) to lines that tie on their
microsecond timestamp, and compares with ``taskq.search.trace.build.sort_lines``.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

import pytest

from taskq.search.trace.build import sort_lines
from tests.kibana_panels import load_objects

SEARCHES = ["taskq-trace-explorer-search", "taskq-trace-task-lifecycle"]


def _nanos(value: str) -> int:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return int(parsed.timestamp()) * 1_000_000_000 + parsed.microsecond * 1000


def elasticsearch_order(lines: list[dict[str, Any]], sort: list[list[str]]) -> list[str]:
    """Messages of ``lines`` in the order of ``sort`` (ascending keys, missing last)."""

    def key(line: dict[str, Any]) -> tuple[tuple[int, int], ...]:
        parts = []
        for name, direction in sort:
            assert direction == "asc"
            value = line.get(name)
            if value is None:
                parts.append((1, 0))
            else:
                parts.append((0, _nanos(value) if name == "@timestamp" else int(value)))
        return tuple(parts)

    return [line["message"] for line in sorted(lines, key=key)]


def tied_lines() -> list[dict[str, Any]]:
    """Lines of three processes (nginx has no pid or sequence), many in one microsecond."""
    stamp = "2026-12-03T10:00:00.123456+00:00"
    later = "2026-12-03T10:00:00.123457+00:00"
    lines = []
    for pid in (101, 202, 303):
        for seq in range(1, 6):
            lines.append({"@timestamp": stamp, "process.pid": pid, "event.sequence": seq})
        lines.append({"@timestamp": later, "process.pid": pid, "event.sequence": 9})
    lines.append({"@timestamp": stamp, "service.name": "nginx"})
    for n, line in enumerate(lines):
        line["message"] = f"line {n}"
    return lines


@pytest.mark.parametrize("search_id", SEARCHES)
def test_kibana_sorts_a_trace_as_taskq_trace_does(search_id: str) -> None:
    (search,) = [o for o in load_objects() if o["id"] == search_id]
    sort = search["attributes"]["sort"]
    lines = tied_lines()
    expected = elasticsearch_order(lines, sort)
    for seed in range(20):
        shuffled = list(lines)
        random.Random(seed).shuffle(shuffled)
        assert [line["message"] for line in sort_lines(shuffled)] == expected


def test_lines_of_one_process_keep_their_writing_order() -> None:
    """Within one process and one microsecond, the sequence is the order of writing."""
    lines = [line for line in tied_lines() if line.get("process.pid") == 202]
    ordered = sort_lines(list(reversed(lines)))
    assert [line["event.sequence"] for line in ordered] == [1, 2, 3, 4, 5, 9]
