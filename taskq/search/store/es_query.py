"""Elasticsearch request bodies and response mapping for the log store, as pure functions.

Kept apart from the client so that they are tested against the documented request and
response shapes (``_search`` hits, ``terms``/``filter``/``percentiles``/``cardinality``
aggregations) without a cluster. Field names are those of :mod:`taskq.logs.schema`, mapped as
``keyword`` except ``message`` and ``error.*`` text fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from taskq.logs.schema import EXECUTION_ENDS, PROBE_USER_AGENT, TERMINAL_EVENTS, Event
from taskq.search.store.base import (
    LogFilter,
    LogLine,
    Percentiles,
    StatsReport,
    TaskNameStats,
)

#: ``index.max_result_window``'s default: the most hits one search returns, and the size
#: of one page of a trace read.
MAX_HITS = 10_000
#: The most lines one trace read returns; a trace with more is cut here and says so
#: (``Lines.capped``, shown by ``taskq trace`` as LOOKUP CAPPED).
TRACE_MAX_LINES = 200_000
#: How long a point in time stays open between two pages (renewed by each page).
PIT_KEEP_ALIVE = "1m"
#: Terminal lines counted per task by the stats aggregation: one writer each (a worker
#: ends a task once; duplicates and the API's revocation would count it twice).
_COUNTED_TERMINAL = {
    event: status
    for event, status in TERMINAL_EVENTS.items()
    if event not in (Event.TASK_DUPLICATE, Event.TASK_REVOKE_REQUESTED)
}
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TEXT_FIELDS = frozenset({"message", "error.message"})
_PERCENTS = [50.0, 95.0, 99.0]
#: Oldest first; ``_shard_doc`` (a point in time's own tiebreaker, unique per document)
#: makes the order total, so ``search_after`` neither skips nor repeats lines that share a
#: timestamp across a page boundary (Elasticsearch docs, "Paginate search results",
#: "Search after": "All search requests that include a PIT automatically add an implicit
#: tiebreaker on the _shard_doc field"; named here to be explicit).
_SORT_PAGED = [{"@timestamp": {"order": "asc"}}, {"_shard_doc": "asc"}]
Body = dict[str, Any]


def trace_query(correlation_id: str) -> Body:
    """Every line of one correlation id."""
    return {"bool": {"filter": [{"term": {"correlation_id": correlation_id}}]}}


def tasks_query(task_ids: set[str]) -> Body:
    """Every line of some task ids."""
    return {"bool": {"filter": [{"terms": {"task_id": sorted(task_ids)}}]}}


def page_body(query: Body, pit_id: str, search_after: list[Any] | None, size: int) -> Body:
    """One page of ``query`` in a point in time, after the sort values of the previous
    page's last hit. A search with ``pit`` names no index (the PIT holds it) and renews
    the PIT's ``keep_alive`` (docs, "Point in time API")."""
    body: Body = {
        "query": query,
        "pit": {"id": pit_id, "keep_alive": PIT_KEEP_ALIVE},
        "sort": _SORT_PAGED,
        "size": size,
        "track_total_hits": False,
    }
    if search_after is not None:
        body["search_after"] = search_after
    return body


def last_sort(response: Mapping[str, Any]) -> list[Any] | None:
    """The ``sort`` values of the last hit: the next page's ``search_after``."""
    hits = response.get("hits", {}).get("hits", [])
    return list(hits[-1]["sort"]) if hits else None


def _range(since: datetime | None, until: datetime | None) -> list[Body]:
    bounds = {}
    if since is not None:
        bounds["gte"] = since.isoformat()
    if until is not None:
        bounds["lte"] = until.isoformat()
    return [{"range": {"@timestamp": bounds}}] if bounds else []


def search_body(f: LogFilter) -> Body:
    """The newest ``f.limit`` lines matching ``f`` (newest first: reverse the hits)."""
    filters: list[Body] = []
    if f.service:
        filters.append(_any_of({"service.name": f.service}, {"service.node.name": f.service}))
    if f.level:
        rank = LEVELS.index(_level(f.level))
        filters.append({"terms": {"log.level": list(LEVELS[rank:])}})
    if f.event:
        if "*" in f.event:
            filters.append({"wildcard": {"event.action": {"value": f.event}}})
        else:
            filters.append({"term": {"event.action": f.event}})
    if f.task_name:
        filters.append(
            {
                "bool": {
                    "should": [
                        {"term": {"task_name": f.task_name}},
                        {"wildcard": {"task_name": {"value": f"*.{f.task_name}"}}},
                    ],
                    "minimum_should_match": 1,
                }
            }
        )
    for name, value in (("correlation_id", f.correlation_id), ("task_id", f.task_id)):
        if value:
            filters.append({"term": {name: value}})
    filters.extend(_range(f.since, f.until))
    if f.grep:
        filters.append(grep_clause(f.grep))
    return {
        "query": {"bool": {"filter": filters}},
        "sort": [{"@timestamp": {"order": "desc"}}],
        "size": max(0, min(f.limit, MAX_HITS)),
    }


def grep_clause(text: str) -> Body:
    """Case-insensitive substring in the ``GREP_FIELDS`` (phrase match on text fields)."""
    from taskq.search.store.base import GREP_FIELDS

    escaped = text.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")
    should: list[Body] = [
        {"match_phrase": {name: text}}
        if name in _TEXT_FIELDS
        else {"wildcard": {name: {"value": f"*{escaped}*", "case_insensitive": True}}}
        for name in GREP_FIELDS
    ]
    return {"bool": {"should": should, "minimum_should_match": 1}}


def _any_of(*terms: Mapping[str, str]) -> Body:
    return {"bool": {"should": [{"term": dict(t)} for t in terms], "minimum_should_match": 1}}


def _level(level: str) -> str:
    name = level.upper()
    name = "WARNING" if name == "WARN" else name
    if name not in LEVELS:
        raise ValueError(f"unknown level {level!r}; one of {', '.join(LEVELS)}")
    return name


def stats_body(since: datetime | None, until: datetime | None) -> Body:
    """Aggregations of ``taskq stats`` over ``[since, until]``; no hits."""
    ended = {"terms": {"event.action": list(EXECUTION_ENDS)}}
    started = {"term": {"event.action": Event.TASK_STARTED}}
    return {
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"filter": _range(since, until)}},
        "aggs": {
            "terminal": {
                "filter": {"terms": {"event.action": sorted(_COUNTED_TERMINAL)}},
                "aggs": {"by_event": {"terms": {"field": "event.action", "size": 10}}},
            },
            "tasks": {"cardinality": {"field": "task_id", "precision_threshold": 40_000}},
            "by_task_name": {
                "terms": {"field": "task_name", "size": 100},
                "aggs": {
                    "ended": {
                        "filter": ended,
                        "aggs": {
                            "ms": {"percentiles": {"field": "duration_ms", "percents": _PERCENTS}}
                        },
                    },
                    "started": {
                        "filter": started,
                        "aggs": {
                            "wait": {
                                "percentiles": {"field": "queue_wait_ms", "percents": _PERCENTS}
                            },
                            "redelivered": {"filter": {"term": {"task.redelivered": True}}},
                        },
                    },
                    "retries": {"filter": {"term": {"event.action": Event.TASK_RETRY}}},
                    "failures": {"filter": {"term": {"event.action": Event.TASK_FAILED}}},
                },
            },
            "http": {
                "filter": {
                    "bool": {
                        "filter": [
                            {"term": {"service.name": "nginx"}},
                            {"term": {"event.action": Event.HTTP_COMPLETED}},
                        ],
                        "must_not": [{"term": {"user_agent.original": PROBE_USER_AGENT}}],
                    }
                },
                "aggs": {"status": {"terms": {"field": "http.response.status_code", "size": 50}}},
            },
            "probes": {
                "filter": {
                    "bool": {
                        "filter": [
                            {"term": {"service.name": "nginx"}},
                            {"term": {"event.action": Event.HTTP_COMPLETED}},
                            {"term": {"user_agent.original": PROBE_USER_AGENT}},
                        ]
                    }
                }
            },
            "busiest": {"terms": {"field": "correlation_id", "size": 10}},
        },
    }


# --- responses --------------------------------------------------------------------------


def flatten(source: Mapping[str, Any], prefix: str = "") -> LogLine:
    """``{"service": {"name": "api"}}`` -> ``{"service.name": "api"}``; flat keys stay."""
    flat: LogLine = {}
    for key, value in source.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def hits_to_lines(response: Mapping[str, Any]) -> list[LogLine]:
    """The ``_source`` of each hit, flattened to schema field names, in hit order."""
    hits = response.get("hits", {}).get("hits", [])
    return [flatten(hit.get("_source", {})) for hit in hits]


def _percentiles(agg: Mapping[str, Any] | None) -> Percentiles:
    values = (agg or {}).get("values", {})

    def pick(p: float) -> float | None:
        value = values.get(str(p), values.get(f"{p:.1f}"))
        return None if value is None else round(float(value), 3)

    return Percentiles(pick(50.0), pick(95.0), pick(99.0))


def _count(agg: Mapping[str, Any] | None) -> int:
    return int((agg or {}).get("doc_count", 0))


def response_to_stats(
    response: Mapping[str, Any], since: datetime | None, until: datetime | None
) -> StatsReport:
    """Map the answer to :func:`stats_body` onto a :class:`StatsReport`.

    Elasticsearch cannot cheaply find each task's *last* event, so statuses are the
    terminal events' statuses plus ``UNFINISHED`` = distinct task ids without one
    (``cardinality`` is approximate above 40,000 tasks).
    """
    aggs = response.get("aggregations", {})
    total = response.get("hits", {}).get("total", 0)
    lines = int(total.get("value", 0)) if isinstance(total, Mapping) else int(total)
    statuses: dict[str, int] = {}
    for bucket in aggs.get("terminal", {}).get("by_event", {}).get("buckets", []):
        status = _COUNTED_TERMINAL.get(str(bucket["key"]))
        if status:
            statuses[status] = statuses.get(status, 0) + int(bucket["doc_count"])
    unfinished = int(aggs.get("tasks", {}).get("value", 0)) - sum(statuses.values())
    if unfinished > 0:
        statuses["UNFINISHED"] = unfinished
    by_name = [
        TaskNameStats(
            task_name=str(bucket["key"]),
            executions=_count(bucket.get("ended")),
            execution_ms=_percentiles(bucket.get("ended", {}).get("ms")),
            queue_wait_ms=_percentiles(bucket.get("started", {}).get("wait")),
            retries=_count(bucket.get("retries")),
            failures=_count(bucket.get("failures")),
            redeliveries=_count(bucket.get("started", {}).get("redelivered")),
        )
        for bucket in aggs.get("by_task_name", {}).get("buckets", [])
    ]
    by_name.sort(key=lambda s: (-s.executions, s.task_name))
    http = {
        int(b["key"]): int(b["doc_count"])
        for b in aggs.get("http", {}).get("status", {}).get("buckets", [])
    }
    busiest = [
        (str(b["key"]), int(b["doc_count"])) for b in aggs.get("busiest", {}).get("buckets", [])
    ]
    return StatsReport(
        since=since,
        until=until,
        lines=lines,
        tasks_by_status=dict(sorted(statuses.items(), key=lambda kv: -kv[1])),
        by_task_name=by_name,
        http_status=dict(sorted(http.items())),
        probe_requests=_count(aggs.get("probes")),
        busiest_correlation_ids=busiest,
    )
