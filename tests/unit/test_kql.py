"""tests/kql.py against KQL's documented semantics (Kibana docs, "Kibana Query Language")."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kql import UnsupportedQuery, compile_kql, compile_query

TYPES = {
    "event.action": "keyword",
    "service.name": "keyword",
    "log.logger": "keyword",
    "task_id": "keyword",
    "error.type": "keyword",
    "http.response.status_code": "long",
    "duration_ms": "double",
    "task.redelivered": "boolean",
    "message": "text",
}
LINES: list[dict[str, Any]] = [
    {"event.action": "task.succeeded", "service.name": "worker", "task_id": "t1"},
    {"event.action": "task.failed", "service.name": "worker", "task_id": "t2", "error.type": "E"},
    {"event.action": "worker.ready", "service.name": "worker", "log.logger": "celery.apps.worker"},
    {
        "event.action": "http.request.completed",
        "service.name": "nginx",
        "http.response.status_code": 429,
    },
    {
        "event.action": "http.request.completed",
        "service.name": "nginx",
        "http.response.status_code": 200,
    },
    {"event.action": "task.started", "service.name": "worker", "task.redelivered": True},
    {"event.action": "task.started", "service.name": "worker", "task.redelivered": False},
]


def select(query: str) -> list[int]:
    predicate = compile_kql(query, TYPES)
    return [i for i, line in enumerate(LINES) if predicate(line)]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", [0, 1, 2, 3, 4, 5, 6]),
        ("event.action:task.succeeded", [0]),
        ("event.action:(task.succeeded or task.failed)", [0, 1]),
        ("event.action:(task.succeeded OR task.failed)", [0, 1]),
        ('event.action:"task.failed"', [1]),
        ("event.action:task.*", [0, 1, 5, 6]),
        ('event.action:"task.*"', []),  # no wildcards inside quotes
        ("event.action:worker.* or task.redelivered:true", [2, 5]),
        ("task.redelivered:false", [6]),
        ("http.response.status_code:(429 or 503)", [3]),
        ("http.response.status_code:429.0", [3]),
        ("error.type:*", [1]),
        ("not error.type:*", [0, 2, 3, 4, 5, 6]),
        ("service.name:nginx and not http.response.status_code:200", [3]),
        # not > and > or
        ("service.name:nginx and http.response.status_code:429 or task_id:t1", [0, 3]),
        ("service.name:nginx and (http.response.status_code:429 or task_id:t1)", [3]),
        ("not service.name:worker or task_id:t2", [1, 3, 4]),
        ('log.logger:"celery.apps.worker"', [2]),
        ("event.action:(task.* and not task.started)", [0, 1]),
        ("task_id:t", []),  # keywords match whole values
    ],
)
def test_selection(query: str, expected: list[int]) -> None:
    assert select(query) == expected


@pytest.mark.parametrize(
    "query",
    [
        "task.succeeded",  # free text
        "message:hello",  # text fields are analysed; not modelled
        "unknown.field:x",
        "event.*:x",
        "duration_ms > 5",
        "http.response.status_code:abc",
        "task.redelivered:yes",
        "event.action:(a or b",
    ],
)
def test_unsupported_queries_fail_loudly(query: str) -> None:
    with pytest.raises(UnsupportedQuery):
        compile_kql(query, TYPES)


def test_only_kuery_is_accepted() -> None:
    assert compile_query({"query": "task_id:t1", "language": "kuery"}, TYPES)(LINES[0])
    with pytest.raises(UnsupportedQuery):
        compile_query({"query": "task_id:t1", "language": "lucene"}, TYPES)
