"""Is a request's trace complete? Decided by the same reconstruction ``taskq trace`` shows
(:func:`taskq.search.trace.build.build_trace`), so a drill and an on-call engineer read one
truth.

A submission's trace is complete when its lines show every hop: nginx's access line, the
API replica's line, the publish, a worker receiving it, a worker starting it, and a terminal
end. A replay (same Idempotency-Key, another correlation id) is complete when the task it
answered with is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from taskq.logs.schema import TERMINAL_STATUSES
from taskq.search.store.base import LogLine
from taskq.search.trace.build import Request, TaskSummary, Trace, build_trace

HOPS = ("nginx", "api", "published", "received", "started", "terminal")


def missing_hops(trace: Trace, task_id: str | None = None) -> list[str]:
    """The hops of :data:`HOPS` that ``trace`` lacks for its submission of ``task_id`` (or
    its first task), in hop order; empty when complete."""
    request = _submission(trace.requests, task_id)
    missing = []
    if request is None or request.nginx_ms is None:
        missing.append("nginx")
    if request is None or request.api_node is None:
        missing.append("api")
    task = _task(trace.tasks, task_id)
    if task is None or task.published_at is None:
        missing.append("published")
    if task is None or not any(a.received_at for a in task.attempts):
        missing.append("received")
    if task is None or not any(a.started_at for a in task.attempts):
        missing.append("started")
    if task is None or task.final_status not in TERMINAL_STATUSES:
        missing.append("terminal")
    return missing


def _submission(requests: list[Request], task_id: str | None) -> Request | None:
    matching = [
        r
        for r in requests
        if r.kind in ("submit", "replay") and (task_id is None or r.task_id == task_id)
    ]
    # The exchange that got the answer (a client retry after a 5xx makes several).
    return next((r for r in matching if r.status == 202), matching[0] if matching else None)


def _task(tasks: list[TaskSummary], task_id: str | None) -> TaskSummary | None:
    return next((t for t in tasks if task_id is None or t.task_id == task_id), None)


@dataclass
class LineIndex:
    """Lines grouped by correlation id and by task id, for many traces out of one read."""

    by_correlation: dict[str, list[LogLine]] = field(default_factory=lambda: defaultdict(list))
    by_task: dict[str, list[LogLine]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def of(cls, lines: Iterable[LogLine]) -> LineIndex:
        index = cls()
        for line in lines:
            correlation_id = line.get("correlation_id")
            if isinstance(correlation_id, str) and correlation_id:
                index.by_correlation[correlation_id].append(line)
            task_id = line.get("task_id")
            if isinstance(task_id, str) and task_id:
                index.by_task[task_id].append(line)
        return index

    def trace(self, correlation_id: str) -> Trace:
        """What :func:`taskq.search.trace.build.find_trace` would assemble from a store."""
        own = list(self.by_correlation.get(correlation_id, []))
        task_ids = {str(x["task_id"]) for x in own if x.get("task_id")}
        lines = own + [x for t in sorted(task_ids) for x in self.by_task.get(t, [])]
        return build_trace(correlation_id, lines)
