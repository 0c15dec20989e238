"""Assemble the journey of one request from its log lines.

Pure functions over parsed lines (:func:`build_trace`) plus the two lookups that feed them
from any :class:`~taskq.search.store.base.LogStore` (:func:`find_trace`,
:func:`find_trace_by_task`).
The result does not depend on the order of the lines: exchanges are joined by
``http.request.id`` (:mod:`taskq.search.trace.requests`), attempts by ``task.attempt_id`` and
settled by precedence (:mod:`taskq.search.trace.attempts`).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime

from taskq.logs.schema import Event
from taskq.search.store.base import MAX_MATCHES, LogFilter, LogLine, LogStore
from taskq.search.trace.attempts import summarize_task
from taskq.search.trace.model import (
    Attempt,
    Request,
    TaskSummary,
    Trace,
    line_started,
    line_time,
    ms_between,
    parse_time,
)
from taskq.search.trace.requests import exchanges

__all__ = [
    "Attempt",
    "Request",
    "TaskSummary",
    "Trace",
    "build_trace",
    "find_trace",
    "find_trace_by_task",
    "parse_time",
    "sort_lines",
]

_FAR = datetime.fromisoformat("9999-12-31T00:00:00+00:00")


#: Sorts after every number: a line without the field goes last, as Elasticsearch's
#: ``missing: _last`` (the default of an ascending sort) puts it.
_MISSING = float("inf")


def _number(line: LogLine, name: str) -> float:
    value = line.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else _MISSING


def sort_lines(lines: list[LogLine]) -> list[LogLine]:
    """For display: oldest first, then as Kibana's trace search sorts (``event.sequence``,
    then ``process.pid``: kibana-dashboards/10-trace-explorer.ndjson), the remaining ties
    broken by the line's content (so any input order gives the same timeline); lines
    without a parseable time go last."""
    return sorted(
        lines,
        key=lambda x: (
            line_time(x) or _FAR,
            _number(x, "event.sequence"),
            _number(x, "process.pid"),
            _canonical(x),
        ),
    )


def _canonical(line: LogLine) -> str:
    return json.dumps(line, sort_keys=True, default=str)


def _dedupe(lines: list[LogLine]) -> list[LogLine]:
    unique = {_canonical(line): line for line in lines}
    return list(unique.values())


def build_trace(correlation_id: str | None, lines: list[LogLine]) -> Trace:
    """The :class:`Trace` of ``correlation_id`` from its lines and every line of its tasks
    (any order, duplicates allowed, other requests' task lines included)."""
    unique = _dedupe(lines)
    own = [x for x in unique if correlation_id is None or x.get("correlation_id") == correlation_id]
    by_task: dict[str, list[LogLine]] = {}
    for line in unique:
        task_id = line.get("task_id")
        if isinstance(task_id, str) and task_id:
            by_task.setdefault(task_id, []).append(line)
    task_ids = sorted({t for x in own if isinstance(t := x.get("task_id"), str) and t})
    tasks = [summarize_task(t, by_task[t], correlation_id) for t in task_ids]
    tasks.sort(key=lambda t: (t.published_at or _FAR, t.task_id))
    requests = exchanges(own)
    _request_totals(requests, {t.task_id: t for t in tasks})
    # The timeline: this request's lines and its tasks' lifecycle lines, whoever wrote them
    # (a replayed task's lines carry the original request's id).
    own_ids = {id(x) for x in own}
    lifecycle = [
        x
        for t in task_ids
        for x in by_task[t]
        if id(x) not in own_ids and str(x.get("event.action", "")).startswith("task.")
    ]
    timeline = sort_lines([*own, *lifecycle])
    starts = [s for x in own if (s := line_started(x, line_time(x)))]
    ends = [t.ended_at for t in tasks]
    return Trace(
        correlation_id=correlation_id,
        lines=timeline,
        requests=requests,
        tasks=tasks,
        started_at=min(starts, default=None),
        ended_at=_ended_at(own, ends),
        replay_of=sorted(
            {
                t.published_by
                for t in tasks
                if t.published_by
                and t.published_by != correlation_id
                and any(r.kind == "replay" and r.task_id == t.task_id for r in requests)
            }
        ),
    )


def _ended_at(own: list[LogLine], task_ends: list[datetime | None]) -> datetime | None:
    """When the last task ended; None while one is unfinished; the last line without tasks."""
    if task_ends:
        return None if None in task_ends else max(t for t in task_ends if t is not None)
    return max((t for x in own if (t := line_time(x))), default=None)


def _request_totals(requests: list[Request], tasks: dict[str, TaskSummary]) -> None:
    """Per request end to end: received -> its task's end for a submit or replay (None while
    the task runs), else the exchange itself."""
    for request in requests:
        task = tasks.get(request.task_id or "")
        if request.kind == "submit" and task is not None:
            # Both times come from the same API process: no clock skew in between.
            task.publish_ms = ms_between(task.published_at, request.api_started_at)
        if request.kind in ("submit", "replay") and task is not None:
            request.end_to_end_ms = ms_between(task.ended_at, request.started_at)
        else:
            request.end_to_end_ms = (
                request.nginx_ms if request.nginx_ms is not None else request.api_ms
            )


def find_trace(store: LogStore, correlation_id: str) -> Trace | None:
    """The trace of ``correlation_id``: its lines plus every line of its tasks (a replayed
    task's lines carry the original request's id); ``None`` if nothing matches."""
    lines = store.lines_for_correlation(correlation_id)
    if not lines:
        return None
    capped = lines.capped
    task_ids = {str(x["task_id"]) for x in lines if x.get("task_id")}
    if task_ids:
        task_lines = store.lines_for_tasks(task_ids)
        capped |= task_lines.capped
        lines.extend(task_lines)
    trace = build_trace(correlation_id, lines)
    # Summaries and pages then cover the lines read, and say that there were more.
    trace.lookup_capped = capped
    return trace


def publisher_of(lines: list[LogLine]) -> str | None:
    """The correlation id of the request that published the task whose lines these are:
    the id on its first publish, else the id most of its worker lines carry (the message
    header's), never a poll's or a replay's."""
    published = [
        x
        for x in lines
        if x.get("event.action") == Event.TASK_PUBLISHED and x.get("correlation_id")
    ]
    if published:
        first = min(
            published, key=lambda x: (int(x.get("task.retries") or 0), line_time(x) or _FAR)
        )
        return str(first["correlation_id"])
    worker = Counter(
        str(x["correlation_id"])
        for x in lines
        if x.get("service.name") == "worker" and x.get("correlation_id")
    )
    return min(worker, key=lambda c: (-worker[c], c)) if worker else None


def find_trace_by_task(store: LogStore, task_id: str) -> Trace | None:
    """The trace of the request that published ``task_id``; ``None`` if unknown."""
    lines = store.lines_for_tasks({task_id})
    if not lines:
        return None
    correlation_id = publisher_of(lines)
    if correlation_id is None:
        return build_trace(None, lines)
    return find_trace(store, correlation_id)


def find_trace_by_trace_id(store: LogStore, trace_id: str) -> Trace | None:
    """The trace of the request whose W3C trace id is ``trace_id`` (``trace.id`` on its
    lines); ``None`` if no line carries it."""
    found = store.search(LogFilter(grep=trace_id, limit=MAX_MATCHES))
    lines = [x for x in found if x.get("trace.id") == trace_id]
    if not lines:
        return None
    # The request's id: on the HTTP lines, else the one most of the lines carry.
    http = [x for x in lines if x.get("event.action") == Event.HTTP_COMPLETED]
    ids = Counter(str(x["correlation_id"]) for x in http or lines if x.get("correlation_id"))
    if not ids:
        return build_trace(None, lines)
    return find_trace(store, ids.most_common(1)[0][0])
