"""A trace as a waterfall: every exchange, publish, queue wait and attempt on one time axis.

Geometry only: each :class:`Bar` has ``left`` and ``width`` as fractions (0..1) of the axis
from the trace's first to its last known instant; the template turns them into CSS. The
statuses are the trace model's. Times come from different processes' clocks (a worker can
log "received" before the API's "published"): bars are placed where each clock says, and
clamped to the axis, never reordered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from taskq.logs.schema import Event
from taskq.search.explorer.refs import line_ref
from taskq.search.store.base import LogLine
from taskq.search.trace.model import Attempt, Request, TaskSummary, Trace, line_time

#: The narrowest bar drawn, as a fraction of the axis (so a 1 ms step stays visible).
MIN_WIDTH = 0.004


@dataclass(frozen=True)
class Bar:
    """One row of the waterfall."""

    kind: str  # nginx, api, task, publish, wait, attempt
    label: str
    depth: int  # nesting: 0 exchange or top task, +1 per level below
    left: float  # fraction of the axis where it starts
    width: float  # fraction of the axis it covers (>= MIN_WIDTH)
    start: datetime | None
    duration_ms: float | None
    status: str | None = None  # an attempt's outcome or a task's final status
    detail: str = ""
    marks: tuple[str, ...] = ()  # replay, poll, revoke, redelivered, retry N, still running
    ref: str | None = None  # the log line to open for this row
    open_end: bool = False  # the end is unknown (running, or its worker died)


@dataclass(frozen=True)
class Waterfall:
    """The rows of a trace and its axis."""

    start: datetime | None
    end: datetime | None
    span_ms: float
    bars: list[Bar] = field(default_factory=list)
    verdict: str = ""


def _ms(later: datetime, earlier: datetime) -> float:
    return (later - earlier) / timedelta(milliseconds=1)


def seconds(ms: float | None) -> str:
    """A duration for people: ``840 ms``, ``2.4 s``."""
    if ms is None:
        return "?"
    return f"{ms:.0f} ms" if abs(ms) < 1000 else f"{ms / 1000:.1f} s"


class _Axis:
    def __init__(self, instants: list[datetime]) -> None:
        self.start = min(instants) if instants else None
        self.end = max(instants) if instants else None
        span = _ms(self.end, self.start) if self.start and self.end else 0.0
        self.span_ms = max(span, 1.0)

    def place(self, start: datetime | None, end: datetime | None) -> tuple[float, float]:
        """(left, width) of [start, end] clamped to the axis."""
        if self.start is None or start is None:
            return 0.0, MIN_WIDTH
        left = min(max(_ms(start, self.start) / self.span_ms, 0.0), 1.0)
        right = left if end is None else min(max(_ms(end, self.start) / self.span_ms, 0.0), 1.0)
        width = max(right - left, MIN_WIDTH)
        return min(left, 1.0 - width), width


def _plus(at: datetime | None, ms: float | None) -> datetime | None:
    return at + timedelta(milliseconds=ms) if at is not None and ms is not None else None


def _attempt_end(attempt: Attempt, later: Attempt | None) -> tuple[datetime | None, bool]:
    """Where an attempt's bar ends, and whether that end is unknown (open)."""
    if attempt.ended_at is not None:
        return attempt.ended_at, False
    if later is not None:  # LOST: it lasted at most until the message came again
        return later.received_at or later.started_at, True
    return None, True


def _instants(trace: Trace) -> list[datetime]:
    found: list[datetime] = []
    for r in trace.requests:
        found += [t for t in (r.started_at, _plus(r.started_at, r.nginx_ms)) if t]
        found += [t for t in (r.api_started_at, _plus(r.api_started_at, r.api_ms)) if t]
    for task in trace.tasks:
        found += [t for t in (task.published_at, task.ended_at) if t]
        for a in task.attempts:
            found += [t for t in (a.received_at, a.started_at, a.ended_at) if t]
    if not found:
        found = [t for x in trace.lines if (t := line_time(x))]
    return found


def _find(lines: list[LogLine], **wanted: object) -> str | None:
    for line in lines:
        if all(line.get(k) == v for k, v in wanted.items()):
            return line_ref(line)
    return None


def _request_bars(axis: _Axis, r: Request, lines: list[LogLine]) -> list[Bar]:
    what = f"{r.method or '?'} {r.path or '?'} -> {r.status if r.status is not None else '?'}"
    marks: tuple[str, ...] = (r.kind,) if r.kind in ("replay", "poll", "revoke") else ()
    if r.error_type:
        marks += (r.error_type,)
    bars: list[Bar] = []
    done = {"http.request.id": r.exchange_id, "event.action": Event.HTTP_COMPLETED}
    if r.started_at is not None and r.nginx_ms is not None:
        left, width = axis.place(r.started_at, _plus(r.started_at, r.nginx_ms))
        ref = _find(lines, **{**done, "service.name": "nginx"})
        bars.append(
            Bar(
                "nginx",
                f"nginx {what}",
                0,
                left,
                width,
                r.started_at,
                r.nginx_ms,
                detail=f"{r.kind}, nginx {seconds(r.nginx_ms)}",
                marks=marks,
                ref=ref,
            )
        )
    if r.api_started_at is not None:
        left, width = axis.place(r.api_started_at, _plus(r.api_started_at, r.api_ms))
        ref = _find(lines, **{**done, "service.node.name": r.api_node})
        depth = 1 if bars else 0
        bars.append(
            Bar(
                "api",
                f"{r.api_node or 'api'} {what}",
                depth,
                left,
                width,
                r.api_started_at,
                r.api_ms,
                detail=f"{r.kind}, replica {seconds(r.api_ms)}",
                marks=() if bars else marks,
                ref=ref,
            )
        )
    return bars


def _task_bars(axis: _Axis, task: TaskSummary, depth: int, lines: list[LogLine]) -> list[Bar]:
    short = (task.task_name or "task").rsplit(".", 1)[-1]
    left, width = axis.place(task.published_at, task.ended_at)
    task_marks = tuple(
        m for m, n in (("retried", task.retries), ("redelivered", task.redeliveries)) if n
    )
    bars = [
        Bar(
            "task",
            f"{short} {task.task_id}",
            depth,
            left,
            width,
            task.published_at,
            task.end_to_end_ms,
            status=task.final_status,
            open_end=task.ended_at is None,
            detail=f"{task.final_status}, queue {task.queue or '?'}",
            marks=task_marks,
            ref=_find(lines, task_id=task.task_id, **{"event.action": Event.TASK_PUBLISHED}),
        )
    ]
    first_run = next((a for a in task.attempts if a.started_at or a.received_at), None)
    if task.published_at is not None:
        left, width = axis.place(task.published_at, task.published_at)
        bars.append(
            Bar(
                "publish",
                "published",
                depth + 1,
                left,
                width,
                task.published_at,
                task.publish_ms,
                detail=f"API -> broker {seconds(task.publish_ms)}",
                ref=bars[0].ref,
            )
        )
        if first_run is not None:
            begun = first_run.started_at or first_run.received_at
            left, width = axis.place(task.published_at, begun)
            bars.append(
                Bar(
                    "wait",
                    "queue wait",
                    depth + 1,
                    left,
                    width,
                    task.published_at,
                    task.queue_wait_ms,
                    detail=f"queue wait {seconds(task.queue_wait_ms)}",
                )
            )
    for i, a in enumerate(task.attempts):
        later = task.attempts[i + 1] if i + 1 < len(task.attempts) else None
        begun = a.started_at or a.received_at
        end, open_end = _attempt_end(a, later)
        left, width = axis.place(begun, end)
        marks = tuple(
            m
            for m, on in (
                (f"retry {a.retries}", bool(a.retries)),
                ("redelivered", a.redelivered),
                ("still running", a.outcome is None and a.started_at is not None),
            )
            if on
        )
        who = f"{a.worker or '?'} pid {a.worker_pid if a.worker_pid is not None else '?'}"
        error = f", {a.error_type}" if a.error_type else ""
        ref = _find(lines, **{"task.attempt_id": a.attempt_id, "event.action": Event.TASK_STARTED})
        ref = ref or _find(lines, **{"task.attempt_id": a.attempt_id})
        bars.append(
            Bar(
                "attempt",
                f"attempt {a.number}: {who}",
                depth + 1,
                left,
                width,
                begun,
                a.execution_ms,
                status=a.state,
                detail=f"{a.state}{error}",
                marks=marks,
                ref=ref,
                open_end=open_end,
            )
        )
    return bars


def _nested(tasks: list[TaskSummary]) -> list[tuple[TaskSummary, int]]:
    """Tasks in trace order with children right under their parent, and their depth."""
    ids = {t.task_id for t in tasks}
    children: dict[str, list[TaskSummary]] = {}
    roots: list[TaskSummary] = []
    for t in tasks:
        if t.parent_task_id in ids and t.parent_task_id != t.task_id:
            children.setdefault(str(t.parent_task_id), []).append(t)
        else:
            roots.append(t)
    out: list[tuple[TaskSummary, int]] = []
    seen: set[str] = set()

    def walk(task: TaskSummary, depth: int) -> None:
        if task.task_id in seen:
            return
        seen.add(task.task_id)
        out.append((task, depth))
        for child in children.get(task.task_id, []):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    for t in tasks:  # a parent cycle (corrupt lines) must not hide a task
        walk(t, 0)
    return out


#: Plurals that are not the word plus "s".
_PLURALS = {"retry": "retries", "redelivery": "redeliveries", "child task": "child tasks"}


def _count(n: int, word: str) -> str:
    """``1 retry``, ``2 retries``."""
    return f"{n} {word if n == 1 else _PLURALS.get(word, word + 's')}"


def verdict(trace: Trace) -> str:
    """One sentence first: what happened, e.g. ``SUCCESS after 1 retry and 1 redelivery,
    end to end 2.4 s``; a replay says whose task it replayed."""
    tasks = {t.task_id: t for t in trace.tasks}
    roots = [t for t, depth in _nested(trace.tasks) if depth == 0]
    parts: list[str] = []
    if trace.replay_of:
        parts.append("replay of " + ", ".join(trace.replay_of))
    for task in roots[:3]:
        extra = [
            _count(n, w)
            for n, w in ((task.retries, "retry"), (task.redeliveries, "redelivery"))
            if n
        ]
        text = task.final_status + (" after " + " and ".join(extra) if extra else "")
        submit = next(
            (r for r in trace.requests if r.task_id == task.task_id and r.kind == "submit"), None
        )
        total = submit.end_to_end_ms if submit is not None else task.end_to_end_ms
        if total is not None:
            text += f", end to end {seconds(total)}"
        kids = [t for t in tasks.values() if t.parent_task_id == task.task_id]
        if kids:
            by: dict[str, int] = {}
            for kid in kids:
                by[kid.final_status] = by.get(kid.final_status, 0) + 1
            states = ", ".join(f"{n} {s}" for s, n in sorted(by.items()))
            text += f" ({_count(len(kids), 'child task')}: {states})"
        parts.append(text)
    if len(roots) > 3:
        parts.append(f"and {_count(len(roots) - 3, 'more task')}")
    if not tasks:
        kinds = sorted({_exchange_label(r) for r in trace.requests})
        parts.append(
            (", ".join(kinds) if kinds else _count(len(trace.lines), "line")) + ", no task"
        )
    return "; ".join(parts)


def _exchange_label(request: Request) -> str:
    """``POST /api/v1/tasks -> 422 validation_error``: what was asked and answered (an
    exchange that did nothing to a task has no better name than its method and path)."""
    asked = " ".join(x for x in (request.method, request.path) if x) or request.kind
    error = f" {request.error_type}" if request.error_type else ""
    return f"{asked} -> {request.status or '?'}{error}"


def build_waterfall(trace: Trace) -> Waterfall:
    """The :class:`Waterfall` of ``trace``: exchanges in time order, then each task with
    its publish, queue wait and attempts, children nested under their parent."""
    axis = _Axis(_instants(trace))
    lines = trace.lines
    bars: list[Bar] = []
    requests = sorted(trace.requests, key=lambda r: r.started_at or r.api_started_at or _FAR)
    for request in requests:
        bars += _request_bars(axis, request, lines)
    for task, depth in _nested(trace.tasks):
        bars += _task_bars(axis, task, depth, lines)
    return Waterfall(axis.start, axis.end, axis.span_ms, bars, verdict(trace))


_FAR = datetime.fromisoformat("9999-12-31T00:00:00+00:00")
