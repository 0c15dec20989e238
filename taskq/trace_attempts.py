"""The attempts of one task from its lines: publishes, deliveries, starts and ends.

Celery writes these lines from different processes (the API, a worker's main process that
receives, the pool child that runs), so their order in time is not their causal order: a
retry's ``task.retry`` line can follow the next attempt's start on another worker. Each end
event is matched to the running attempt of the same worker process.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from taskq.logstore.base import TERMINAL_EVENTS, LogLine
from taskq.trace_model import Attempt, Request, TaskSummary, ms_between, number, parse_time

_END_EVENTS = {**TERMINAL_EVENTS, "task.retry": "RETRY"}


def summarize_task(task_id: str, lines: list[LogLine], requests: list[Request]) -> TaskSummary:
    """Attempts and timings of one task from its lines (sorted oldest first)."""
    task = TaskSummary(task_id=task_id)
    attempts = task.attempts
    for line in lines:
        event = str(line.get("event.action"))
        at = parse_time(line.get("@timestamp"))
        task.task_name = task.task_name or line.get("task_name")
        task.queue = task.queue or line.get("queue")
        task.parent_task_id = task.parent_task_id or _parent(line, task_id)
        if event == "task.published":
            attempts.append(Attempt(len(attempts) + 1, line.get("task.retries"), published_at=at))
            task.published_at = task.published_at or at
            if task.publish_ms is None and line.get("service.name") == "api":
                task.publish_ms = _publish_ms(at, requests)
        elif event == "task.received":
            attempt = _first(attempts, lambda a: a.received_at is None and a.started_at is None)
            if attempt is None:
                _lose_running(attempts)
                attempt = _new(attempts)
            attempt.received_at = at
            attempt.receive_wait_ms = ms_between(at, attempt.published_at)
            attempt.worker = line.get("service.node.name")
        elif event == "task.started":
            attempt = _first(attempts, lambda a: a.started_at is None and a.outcome is None)
            if attempt is None:
                _lose_running(attempts)
                attempt = _new(attempts)
            attempt.started_at = at
            attempt.worker = line.get("service.node.name")
            attempt.worker_pid = line.get("process.pid")
            attempt.retries = line.get("task.retries", attempt.retries)
            attempt.redelivered = bool(line.get("task.redelivered"))
            wait = number(line.get("queue_wait_ms"))
            attempt.queue_wait_ms = (
                wait if wait is not None else ms_between(at, attempt.published_at)
            )
        elif event in _END_EVENTS:
            attempt = _running_attempt(attempts, line) or _new(attempts)
            attempt.ended_at = at
            attempt.outcome = _END_EVENTS[event]
            attempt.error = line.get("error.message")
            duration = number(line.get("duration_ms"))
            attempt.execution_ms = (
                duration if duration is not None else ms_between(at, attempt.started_at)
            )
            attempt.worker = attempt.worker or line.get("service.node.name")
    return _finish(task)


def _parent(line: LogLine, task_id: str) -> str | None:
    parent = line.get("parent_task_id")
    return parent if isinstance(parent, str) and parent != task_id else None


def _publish_ms(at: datetime | None, requests: list[Request]) -> float | None:
    """From the API starting the request that published the task to the publish."""
    for request in requests:
        api_start = request.api_started_at
        if request.api_ms is None or api_start is None or at is None:
            continue
        if api_start <= at <= api_start + timedelta(milliseconds=request.api_ms):
            return ms_between(at, api_start)
    return None


def _first(attempts: list[Attempt], pred: Callable[[Attempt], bool]) -> Attempt | None:
    return next((a for a in attempts if pred(a)), None)


def _last(attempts: list[Attempt], pred: Callable[[Attempt], bool]) -> Attempt | None:
    return next((a for a in reversed(attempts) if pred(a)), None)


def _running_attempt(attempts: list[Attempt], end: LogLine) -> Attempt | None:
    """The attempt an end event closes: the running one in the same worker process (a
    retry's ``task.retry`` is logged after the next attempt may already have started
    elsewhere), else the same worker, else the latest running, else the latest open."""
    running = [a for a in attempts if a.started_at is not None and a.outcome is None]
    node, pid = end.get("service.node.name"), end.get("process.pid")
    for pred in (
        lambda a: a.worker == node and a.worker_pid == pid,
        lambda a: a.worker == node,
        lambda a: True,
    ):
        found = _last(running, pred)
        if found is not None:
            return found
    return _last(attempts, lambda a: a.outcome is None)


def _new(attempts: list[Attempt]) -> Attempt:
    attempts.append(Attempt(len(attempts) + 1))
    return attempts[-1]


def _lose_running(attempts: list[Attempt]) -> None:
    """A new delivery while an attempt still runs: that attempt's worker was lost."""
    for attempt in attempts:
        if attempt.outcome is None and (attempt.started_at or attempt.received_at):
            attempt.outcome = "LOST"


def _finish(task: TaskSummary) -> TaskSummary:
    attempts = task.attempts
    task.retries = sum(1 for a in attempts if a.outcome == "RETRY")
    task.redeliveries = sum(1 for a in attempts if a.redelivered)
    if attempts:
        task.queue_wait_ms = next((a.queue_wait_ms for a in attempts if a.queue_wait_ms), None)
        ended = [a for a in attempts if a.execution_ms is not None]
        task.execution_ms = ended[-1].execution_ms if ended else None
        last = attempts[-1]
        if last.outcome is not None:
            task.final_status = last.outcome
        elif last.started_at is not None:
            task.final_status = "STARTED"
        elif last.received_at is not None:
            task.final_status = "RECEIVED"
        task.ended_at = last.ended_at if last.outcome in TERMINAL_EVENTS.values() else None
        task.end_to_end_ms = ms_between(task.ended_at, task.published_at)
    return task
