"""Assemble the journey of one request from its log lines: a timeline and per-hop timings.

Pure functions over parsed lines (:func:`build_trace`) plus the two lookups that feed them
from any :class:`~taskq.logstore.base.LogStore` (:func:`find_trace`, :func:`find_trace_by_task`).
Durations are milliseconds. nginx writes milliseconds, so hop times that involve an nginx
line have 1 ms resolution.
"""

from __future__ import annotations

import json
from datetime import datetime

from taskq.logstore.base import LogLine, LogStore
from taskq.trace_attempts import summarize_task
from taskq.trace_model import (
    Attempt,
    Request,
    TaskSummary,
    Trace,
    line_started,
    ms_between,
    number,
    parse_time,
)

__all__ = [
    "Attempt",
    "Request",
    "TaskSummary",
    "Trace",
    "build_trace",
    "find_trace",
    "find_trace_by_task",
    "pair_requests",
    "parse_time",
    "sort_lines",
]

HTTP_EVENT = "http.request.completed"
_FAR = datetime.fromisoformat("9999-12-31T00:00:00+00:00")


def sort_lines(lines: list[LogLine]) -> list[LogLine]:
    """Oldest first; lines without a parseable time go last, in their given order."""
    return sorted(lines, key=lambda line: parse_time(line.get("@timestamp")) or _FAR)


def pair_requests(lines: list[LogLine]) -> list[Request]:
    """Pair each nginx request line with the API line of the same request.

    Same method, path and status, nearest in time; API lines nginx never saw (direct
    calls to a replica) become requests of their own.
    """
    http = [x for x in lines if x.get("event.action") == HTTP_EVENT]
    nginx = [x for x in http if x.get("service.name") == "nginx"]
    api = [x for x in http if x.get("service.name") != "nginx"]
    used: set[int] = set()
    requests: list[Request] = []
    for front in nginx:
        at = parse_time(front.get("@timestamp"))
        best: int | None = None
        for i, back in enumerate(api):
            if i in used or not _same_request(front, back):
                continue
            gap = ms_between(at, parse_time(back.get("@timestamp")))
            best_gap = (
                ms_between(at, parse_time(api[best].get("@timestamp"))) if best is not None else 0
            )
            if best is None or abs(gap or 0) < abs(best_gap or 0):
                best = i
        back_line = None if best is None else api[best]
        if best is not None:
            used.add(best)
        requests.append(_request(front, back_line))
    requests.extend(_request(None, back) for i, back in enumerate(api) if i not in used)
    requests.sort(key=lambda r: r.started_at or _FAR)
    return requests


def _same_request(front: LogLine, back: LogLine) -> bool:
    keys = ("http.request.method", "url.path", "http.response.status_code")
    return all(front.get(k) == back.get(k) for k in keys)


def _request(front: LogLine | None, back: LogLine | None) -> Request:
    first = front or back or {}
    front_start = line_started(front, parse_time(front.get("@timestamp"))) if front else None
    back_start = line_started(back, parse_time(back.get("@timestamp"))) if back else None
    gap = ms_between(back_start, front_start)
    return Request(
        method=first.get("http.request.method"),
        path=first.get("url.path"),
        status=first.get("http.response.status_code"),
        started_at=front_start or back_start,
        nginx_ms=number(front.get("duration_ms")) if front else None,
        upstream_ms=number(front.get("upstream.response_time_ms")) if front else None,
        api_ms=number(back.get("duration_ms")) if back else None,
        api_node=back.get("service.node.name") if back else None,
        api_started_at=back_start,
        nginx_to_api_ms=None if gap is None else max(0.0, gap),
    )


def build_trace(correlation_id: str | None, lines: list[LogLine]) -> Trace:
    """The :class:`Trace` of ``lines`` (any order, duplicates allowed)."""
    ordered = sort_lines(_dedupe(lines))
    requests = pair_requests(ordered)
    by_task: dict[str, list[LogLine]] = {}
    for line in ordered:
        task_id = line.get("task_id")
        if isinstance(task_id, str) and task_id:
            by_task.setdefault(task_id, []).append(line)
    tasks = [summarize_task(tid, task_lines, requests) for tid, task_lines in by_task.items()]
    tasks.sort(key=lambda t: t.published_at or _first_time(by_task[t.task_id]) or _FAR)
    starts = [
        s for line in ordered if (s := line_started(line, parse_time(line.get("@timestamp"))))
    ]
    started_at = min(starts) if starts else None
    task_ends = [t.ended_at for t in tasks if t.ended_at is not None]
    if tasks:
        ended_at = max(task_ends) if len(task_ends) == len(tasks) else None
    else:
        ended_at = parse_time(ordered[-1].get("@timestamp")) if ordered else None
    return Trace(
        correlation_id=correlation_id,
        lines=ordered,
        requests=requests,
        tasks=tasks,
        started_at=started_at,
        ended_at=ended_at,
        end_to_end_ms=ms_between(ended_at, started_at),
    )


def _first_time(lines: list[LogLine]) -> datetime | None:
    return next((t for x in lines if (t := parse_time(x.get("@timestamp")))), None)


def _dedupe(lines: list[LogLine]) -> list[LogLine]:
    seen: set[str] = set()
    unique: list[LogLine] = []
    for line in lines:
        key = json.dumps(line, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            unique.append(line)
    return unique


def find_trace(store: LogStore, correlation_id: str) -> Trace | None:
    """The trace of ``correlation_id``: its lines plus the lines of its tasks that lack it
    (e.g. a worker line written before the id was known); ``None`` if nothing matches."""
    lines = store.lines_for_correlation(correlation_id)
    if not lines:
        return None
    task_ids = {str(x["task_id"]) for x in lines if x.get("task_id")}
    if task_ids:
        extra = store.lines_for_tasks(task_ids)
        lines.extend(x for x in extra if x.get("correlation_id") in (None, correlation_id))
    return build_trace(correlation_id, lines)


def find_trace_by_task(store: LogStore, task_id: str) -> Trace | None:
    """The trace of the correlation id that ``task_id`` belongs to; ``None`` if unknown."""
    lines = store.lines_for_tasks({task_id})
    if not lines:
        return None
    correlation_id = next(
        (str(x["correlation_id"]) for x in lines if x.get("correlation_id")), None
    )
    if correlation_id is None:
        return build_trace(None, lines)
    return find_trace(store, correlation_id)
