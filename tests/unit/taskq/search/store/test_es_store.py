"""Elasticsearch backend: request bodies and the mapping of documented response shapes.

No cluster runs here: the client is replaced by a recorder that answers with responses
shaped as the Elasticsearch ``_search`` reference documents them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from elastic_transport import ConnectionError as TransportConnectionError

from taskq.search.store import es_query
from taskq.search.store.base import LogFilter, LogStoreError, Percentiles
from taskq.search.store.config import StoreConfig
from taskq.search.store.es_store import ElasticsearchStore

SINCE = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
UNTIL = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def hit(source: dict[str, Any], sort: int = 0) -> dict[str, Any]:
    return {
        "_index": ".ds-logs-taskq-default-2026.11.22-000001",
        "_id": f"id{sort}",
        "_score": None,
        "_source": source,
        "sort": [sort],
    }


def search_response(*hits: dict[str, Any]) -> dict[str, Any]:
    return {
        "took": 3,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {
            "total": {"value": len(hits), "relation": "eq"},
            "max_score": None,
            "hits": list(hits),
        },
    }


class RecordingClient:
    """Stands in for ``elasticsearch.Elasticsearch``: records calls, returns canned bodies."""

    def __init__(self, *responses: dict[str, Any] | Exception) -> None:
        self.responses = list(responses)
        self.calls: list[dict[str, Any]] = []

    def open_point_in_time(self, **kwargs: Any) -> dict[str, Any]:
        return {"id": "pit-1"}

    def close_point_in_time(self, **kwargs: Any) -> dict[str, Any]:
        return {"succeeded": True, "num_freed": 1}

    def search(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        answer = self.responses.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        pass


def test_trace_is_a_term_query_paged_oldest_first_in_a_point_in_time() -> None:
    query = es_query.trace_query("req-1")
    assert query == {"bool": {"filter": [{"term": {"correlation_id": "req-1"}}]}}
    first = es_query.page_body(query, "pit-1", None, es_query.MAX_HITS)
    assert first["pit"] == {"id": "pit-1", "keep_alive": es_query.PIT_KEEP_ALIVE}
    assert first["sort"] == [{"@timestamp": {"order": "asc"}}, {"_shard_doc": "asc"}]
    assert first["size"] == es_query.MAX_HITS and "search_after" not in first
    assert "index" not in first
    later = es_query.page_body(query, "pit-1", [1, 7], 5)
    assert later["search_after"] == [1, 7]
    assert es_query.last_sort(search_response(hit({}, 1), hit({}, 2))) == [2]
    assert es_query.last_sort(search_response()) is None
    tasks = es_query.tasks_query({"b", "a"})
    assert tasks["bool"]["filter"] == [{"terms": {"task_id": ["a", "b"]}}]


def test_search_body_translates_every_filter() -> None:
    body = es_query.search_body(
        LogFilter(
            service="api-1",
            level="warn",
            event="task.*",
            task_name="calculate_var",
            task_id="t1",
            since=SINCE,
            until=UNTIL,
            grep="Lost",
            limit=20,
        )
    )
    filters = body["query"]["bool"]["filter"]
    assert filters[0]["bool"]["should"] == [
        {"term": {"service.name": "api-1"}},
        {"term": {"service.node.name": "api-1"}},
    ]
    assert filters[1] == {"terms": {"log.level": ["WARNING", "ERROR", "CRITICAL"]}}
    assert filters[2] == {"wildcard": {"event.action": {"value": "task.*"}}}
    assert {"wildcard": {"task_name": {"value": "*.calculate_var"}}} in filters[3]["bool"]["should"]
    assert filters[4] == {"term": {"task_id": "t1"}}
    assert filters[5] == {
        "range": {
            "@timestamp": {"gte": "2026-11-22T09:00:00+00:00", "lte": "2026-11-22T10:00:00+00:00"}
        }
    }
    grep = filters[6]["bool"]["should"]
    assert {"match_phrase": {"message": "Lost"}} in grep
    assert {"wildcard": {"task_id": {"value": "*Lost*", "case_insensitive": True}}} in grep
    assert body["sort"] == [{"@timestamp": {"order": "desc"}}] and body["size"] == 20


def test_grep_escapes_wildcard_characters() -> None:
    clause = es_query.grep_clause("a*b?")
    assert {"wildcard": {"url.path": {"value": "*a\\*b\\?*", "case_insensitive": True}}} in clause[
        "bool"
    ]["should"]


def test_unknown_level_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown level"):
        es_query.search_body(LogFilter(level="LOUD"))


def test_hits_are_flattened_to_schema_names() -> None:
    response = search_response(
        hit({"@timestamp": "t1", "service": {"name": "api", "node": {"name": "api-1"}}}),
        hit({"@timestamp": "t2", "service.name": "nginx", "http.response.status_code": 202}, 1),
    )
    assert es_query.hits_to_lines(response) == [
        {"@timestamp": "t1", "service.name": "api", "service.node.name": "api-1"},
        {"@timestamp": "t2", "service.name": "nginx", "http.response.status_code": 202},
    ]


def stats_response() -> dict[str, Any]:
    def pct(a: float, b: float, c: float) -> dict[str, Any]:
        return {"values": {"50.0": a, "95.0": b, "99.0": c}}

    return {
        "took": 12,
        "timed_out": False,
        "hits": {"total": {"value": 1234, "relation": "eq"}, "max_score": None, "hits": []},
        "aggregations": {
            "terminal": {
                "doc_count": 9,
                "by_event": {
                    "doc_count_error_upper_bound": 0,
                    "sum_other_doc_count": 0,
                    "buckets": [
                        {"key": "task.succeeded", "doc_count": 8},
                        {"key": "task.failed", "doc_count": 1},
                    ],
                },
            },
            "tasks": {"value": 11},
            "by_task_name": {
                "doc_count_error_upper_bound": 0,
                "sum_other_doc_count": 0,
                "buckets": [
                    {
                        "key": "taskq.risk.calculate_var",
                        "doc_count": 40,
                        "ended": {"doc_count": 9, "ms": pct(25.0, 60.5, 99.123456)},
                        "started": {
                            "doc_count": 10,
                            "wait": pct(5.0, 20.0, 40.0),
                            "redelivered": {"doc_count": 1},
                        },
                        "retries": {"doc_count": 2},
                        "failures": {"doc_count": 1},
                    },
                    {
                        "key": "taskq.drills.echo",
                        "doc_count": 1,
                        "ended": {
                            "doc_count": 0,
                            "ms": {"values": {"50.0": None, "95.0": None, "99.0": None}},
                        },
                        "started": {
                            "doc_count": 0,
                            "wait": {"values": {}},
                            "redelivered": {"doc_count": 0},
                        },
                        "retries": {"doc_count": 0},
                        "failures": {"doc_count": 0},
                    },
                ],
            },
            "http": {
                "doc_count": 30,
                "status": {
                    "buckets": [{"key": 503, "doc_count": 2}, {"key": 202, "doc_count": 28}]
                },
            },
            "busiest": {"buckets": [{"key": "req-9", "doc_count": 30}]},
        },
    }


def test_stats_response_mapping() -> None:
    report = es_query.response_to_stats(stats_response(), SINCE, UNTIL)
    assert report.lines == 1234
    assert report.tasks_by_status == {"SUCCESS": 8, "UNFINISHED": 2, "FAILURE": 1}
    first, second = report.by_task_name
    assert first.task_name == "taskq.risk.calculate_var" and first.executions == 9
    assert first.execution_ms == Percentiles(25.0, 60.5, 99.123)
    assert first.queue_wait_ms == Percentiles(5.0, 20.0, 40.0)
    assert (first.retries, first.failures, first.redeliveries) == (2, 1, 1)
    assert second.execution_ms == Percentiles() and second.queue_wait_ms == Percentiles()
    assert report.http_status == {202: 28, 503: 2}
    assert report.busiest_correlation_ids == [("req-9", 30)]


def test_stats_body_shape() -> None:
    body = es_query.stats_body(SINCE, None)
    assert body["size"] == 0 and body["track_total_hits"] is True
    assert body["query"]["bool"]["filter"] == [
        {"range": {"@timestamp": {"gte": "2026-11-22T09:00:00+00:00"}}}
    ]
    per_name = body["aggs"]["by_task_name"]
    assert per_name["terms"]["field"] == "task_name"
    assert per_name["aggs"]["ended"]["aggs"]["ms"]["percentiles"]["percents"] == [50.0, 95.0, 99.0]
    assert es_query.stats_body(None, None)["query"] == {"bool": {"filter": []}}


def test_store_passes_index_and_body_and_reverses_search_hits() -> None:
    client = RecordingClient(
        search_response(hit({"@timestamp": "t2"}, 2), hit({"@timestamp": "t1"}, 1)),
        search_response(hit({"@timestamp": "t1", "correlation_id": "req-1"})),
    )
    store = ElasticsearchStore(StoreConfig(backend="elasticsearch", es_index="logs-x-*"), client)
    assert [x["@timestamp"] for x in store.search(LogFilter(limit=2))] == ["t1", "t2"]
    lines = store.lines_for_correlation("req-1")
    assert lines == [{"@timestamp": "t1", "correlation_id": "req-1"}] and not lines.capped
    assert client.calls[0]["index"] == "logs-x-*"
    assert client.calls[1]["query"] == es_query.trace_query("req-1")


def test_transport_errors_become_store_errors() -> None:
    client = RecordingClient(TransportConnectionError("connection refused"))
    store = ElasticsearchStore(StoreConfig(backend="elasticsearch"), client)
    with pytest.raises(LogStoreError, match="ConnectionError: connection refused"):
        store.stats(None, None)


def test_the_real_client_is_built_from_the_config() -> None:
    store = ElasticsearchStore(StoreConfig(backend="elasticsearch", es_url="http://127.0.0.1:9"))
    store.close()  # building connects nothing
