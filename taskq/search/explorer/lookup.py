"""What a search box query means, and its results with the trace model's statuses.

- ``run42-*``: correlation ids with that prefix (the newest :data:`MAX_MATCHES`);
- a UUID: the task with that id (its request is the one that published it);
- anything else: one correlation id, exactly; 32 lowercase hex that no line carries as
  its correlation id is looked up as a W3C trace id (``trace.id``);
- a status search (``failures``, ``retries``, ``redeliveries``, ``slowest``): tasks found
  by the store, each summarised by :func:`summarize_task` (the final status the trace
  model decides, not the event that matched).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from taskq.correlation import ID_PATTERN
from taskq.logs.schema import EXECUTION_ENDS, Event
from taskq.search.explorer.waterfall import verdict
from taskq.search.kibana import kql_events
from taskq.search.store.base import MAX_MATCHES, TASK_SEARCHES, LogLine, LogStore
from taskq.search.trace.attempts import summarize_task
from taskq.search.trace.build import (
    find_trace,
    find_trace_by_task,
    find_trace_by_trace_id,
    publisher_of,
)
from taskq.search.trace.model import Trace

_ID_RE = re.compile(ID_PATTERN)
_TRACE_ID_RE = re.compile(r"[0-9a-f]{32}")
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


#: Each of :data:`TASK_SEARCHES` in Kibana's query language: the lines the store matches.
_SEARCH_KQL = {
    "failures": kql_events([Event.TASK_FAILED]),
    "retries": kql_events([Event.TASK_RETRY]),
    "redeliveries": kql_events([Event.TASK_STARTED]) + " and task.redelivered:true",
    "slowest": kql_events(EXECUTION_ENDS),
}


class QueryError(ValueError):
    """The query is not a valid id, prefix or search."""


@dataclass(frozen=True)
class Query:
    """A parsed query: ``kind`` is exact, prefix, task or status; ``value`` its operand."""

    kind: str
    value: str

    @property
    def kql(self) -> str:
        """The same question in Kibana's query language."""
        if self.kind == "prefix":
            # Unquoted KQL value: escape its special characters; ``*`` is the wildcard.
            return "correlation_id:" + re.sub(r'([\\():<>"*{}])', r"\\\1", self.value) + "*"
        if self.kind == "task":
            return f'task_id:"{self.value}"'
        if self.kind == "exact":
            if _TRACE_ID_RE.fullmatch(self.value):
                return f'correlation_id:"{self.value}" or trace.id:"{self.value}"'
            return f'correlation_id:"{self.value}"'
        return _SEARCH_KQL[self.value]


def parse_query(text: str | None, status: str | None) -> Query | None:
    """The :class:`Query` of the search form; ``None`` when both are empty."""
    text = (text or "").strip()
    if status:
        if status not in TASK_SEARCHES:
            raise QueryError(f"unknown search {status!r}; one of {', '.join(TASK_SEARCHES)}")
        return Query("status", status)
    if not text:
        return None
    if text.endswith("*"):
        prefix = text.rstrip("*")
        if not prefix or not _ID_RE.fullmatch(prefix):
            raise QueryError("a prefix is 1-128 characters of A-Z a-z 0-9 . _ : - then *")
        return Query("prefix", prefix)
    if _UUID_RE.fullmatch(text):
        return Query("task", text.lower())
    if not _ID_RE.fullmatch(text):
        raise QueryError("a correlation id is 1-128 characters of A-Z a-z 0-9 . _ : -")
    return Query("exact", text)


@dataclass(frozen=True)
class Result:
    """One row of the result list."""

    correlation_id: str | None
    task_id: str | None
    at: datetime | None
    status: str  # the trace's verdict, or the task's final status
    detail: str = ""
    lines: int | None = None
    duration_ms: float | None = None


@dataclass(frozen=True)
class Results:
    query: Query
    rows: list[Result] = field(default_factory=list)
    truncated: bool = False


def run_query(store: LogStore, query: Query) -> Results:
    """The results of ``query`` (at most :data:`MAX_MATCHES` rows)."""
    if query.kind == "exact":
        trace = find_trace(store, query.value)
        if trace is None and _TRACE_ID_RE.fullmatch(query.value):
            trace = find_trace_by_trace_id(store, query.value)
        rows = [] if trace is None else [_trace_row(trace.correlation_id, trace.started_at, trace)]
        return Results(query, rows)
    if query.kind == "task":
        trace = find_trace_by_task(store, query.value)
        if trace is None:
            return Results(query, [])
        return Results(query, [_trace_row(trace.correlation_id, trace.started_at, trace)])
    if query.kind == "prefix":
        matches = store.correlation_ids(query.value, MAX_MATCHES)
        rows = []
        for match in matches:
            trace = find_trace(store, match.correlation_id)
            if trace is not None:
                rows.append(_trace_row(match.correlation_id, match.first_at, trace))
        return Results(query, rows, truncated=len(matches) >= MAX_MATCHES)
    found = store.find_tasks(query.value, MAX_MATCHES)
    lines = store.lines_for_tasks({m.task_id for m in found}) if found else []
    by_task: dict[str, list[LogLine]] = {}
    for line in lines:
        by_task.setdefault(str(line.get("task_id")), []).append(line)
    task_rows: list[Result] = []
    for m in found:
        own = by_task.get(m.task_id, [])
        cid = publisher_of(own)
        task = summarize_task(m.task_id, own, cid)
        extra = [
            f"{n} {w}"
            for n, w in ((task.retries, "retries"), (task.redeliveries, "redeliveries"))
            if n
        ]
        name = (task.task_name or "?").rsplit(".", 1)[-1]
        detail = ", ".join([name, *extra, *([task.error_type] if task.error_type else [])])
        task_rows.append(
            Result(cid, m.task_id, m.at, task.final_status, detail, duration_ms=m.duration_ms)
        )
    return Results(query, task_rows, truncated=len(found) >= MAX_MATCHES)


def _trace_row(cid: str | None, at: datetime | None, trace: Trace) -> Result:
    tasks = ", ".join(t.task_id for t in trace.tasks[:3]) + (" ..." if len(trace.tasks) > 3 else "")
    return Result(cid, None, at, verdict(trace), tasks, lines=len(trace.lines))
