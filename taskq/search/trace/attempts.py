"""One task from its lines: its attempts and its final status, for lines in any order.

Celery writes a task's lines from different processes (the API that publishes, a worker's
main process that receives, the pool child that runs), so neither their order in a file
nor their timestamps are their causal order: a fast worker logs ``task.received`` before
the API logs ``task.published``. Nothing here depends on line order, and time is used
only to order whole attempts, never to decide what happened:

- An attempt is one delivery of the message to a worker, named by the
  ``task.attempt_id`` that the worker writes on every line of it (worker/traced_request.py).
- Each attempt's state is the strongest event among its lines: an end (SUCCESS, FAILURE,
  RETRY, REVOKED, REJECTED, DUPLICATE, LOST) beats started beats received.
- The task's final status is the strongest terminal outcome over all attempts (SUCCESS,
  then FAILURE, REVOKED, REJECTED: the result backend never overwrites SUCCESS), else the
  state of the latest attempt. Attempts are ordered by retry number (causal: attempt n
  publishes retry n + 1), then by their first line's time (a redelivery of the same retry
  follows its predecessor's death by at least its run time or the visibility timeout).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from taskq.logs.schema import ATTEMPT_OUTCOMES, TERMINAL_STATUSES, Event
from taskq.search.store.base import LogLine
from taskq.search.trace.model import (
    Attempt,
    TaskSummary,
    line_time,
    ms_between,
    number,
    publish_time,
)

#: Strength of an attempt's outcome when one attempt has several end lines.
_OUTCOME_RANK = {
    "SUCCESS": 7,
    "FAILURE": 6,
    "REVOKED": 5,
    "REJECTED": 4,
    "RETRY": 3,
    "DUPLICATE": 2,
    "LOST": 1,
}
_FAR = datetime.fromisoformat("9999-12-31T00:00:00+00:00")


@dataclass
class _AttemptLines:
    """The lines of one attempt, sorted into what they say."""

    key: str
    received: list[LogLine] = field(default_factory=list)
    started: list[LogLine] = field(default_factory=list)
    ends: list[LogLine] = field(default_factory=list)

    def first_time(self) -> datetime:
        times = [t for x in (*self.received, *self.started, *self.ends) if (t := line_time(x))]
        return min(times, default=_FAR)

    def retries(self) -> int:
        values = [
            int(v)
            for x in (*self.received, *self.started, *self.ends)
            if isinstance(v := x.get("task.retries"), int) and not isinstance(v, bool)
        ]
        return max(values, default=0)


def summarize_task(task_id: str, lines: Iterable[LogLine], own_id: str | None) -> TaskSummary:
    """The :class:`TaskSummary` of ``task_id`` from every line carrying it, in any order.

    ``own_id`` is the correlation id being traced: other ids on the task's lines are
    listed in ``touched_by`` (polls, replays, revocations by other requests).
    """
    lines = [x for x in lines if x.get("task_id") == task_id]
    task = TaskSummary(task_id=task_id)
    task.task_name = _pick(x.get("task_name") for x in lines)
    publish = _original_publish(lines)
    if publish is not None:
        task.published_at = publish_time(publish)
        task.published_by = _str(publish.get("correlation_id"))
        task.queue = _str(publish.get("queue"))
        task.parent_task_id = _parent(publish, task_id)
    task.queue = task.queue or _pick(x.get("queue") for x in lines)
    others = {_str(x.get("correlation_id")) for x in lines} - {own_id, task.published_by, None}
    task.touched_by = sorted(str(x) for x in others)
    task.attempts = _attempts(lines, task.published_at)
    _settle(task, [x for x in lines if x.get("event.action") == Event.TASK_REVOKE_REQUESTED])
    return task


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _pick(values: Iterable[object]) -> str | None:
    """The most common non-empty string (ties: the smallest), whatever the order."""
    counts = Counter(v for v in values if isinstance(v, str) and v)
    if not counts:
        return None
    return min(counts, key=lambda v: (-counts[v], v))


def _parent(line: LogLine, task_id: str) -> str | None:
    parent = line.get("parent_task_id")
    return parent if isinstance(parent, str) and parent and parent != task_id else None


def _original_publish(lines: list[LogLine]) -> LogLine | None:
    """The publish of the first attempt: lowest retry number, then earliest."""
    published = [x for x in lines if x.get("event.action") == Event.TASK_PUBLISHED]
    return min(
        published,
        key=lambda x: (int(x.get("task.retries") or 0), line_time(x) or _FAR),
        default=None,
    )


def _group(lines: list[LogLine]) -> dict[str, _AttemptLines]:
    groups: dict[str, _AttemptLines] = {}
    for line in lines:
        event = line.get("event.action")
        if event == Event.TASK_RECEIVED:
            bucket = "received"
        elif event == Event.TASK_STARTED:
            bucket = "started"
        elif event in ATTEMPT_OUTCOMES:
            bucket = "ends"
        else:
            continue
        key = _str(line.get("task.attempt_id")) or _fallback_key(line)
        getattr(groups.setdefault(key, _AttemptLines(key)), bucket).append(line)
    return groups


def _fallback_key(line: LogLine) -> str:
    # Lines written before attempts had ids: one attempt per worker and retry number.
    node = line.get("service.node.name") or "?"
    return f"{node}/{int(line.get('task.retries') or 0)}"


def _attempts(lines: list[LogLine], published_at: datetime | None) -> list[Attempt]:
    groups = sorted(_group(lines).values(), key=lambda g: (g.retries(), g.first_time(), g.key))
    attempts = [_attempt(i + 1, g, published_at) for i, g in enumerate(groups)]
    for i, attempt in enumerate(attempts):
        if attempt.outcome is not None:
            continue
        later = [a.retries or 0 for a in attempts[i + 1 :]]
        if any(r == (attempt.retries or 0) for r in later):
            attempt.outcome = "LOST"  # the same message was delivered again: its worker died
        elif later:
            attempt.outcome = "RETRY"  # it published the next retry; its retry line is missing
    return attempts


def _attempt(number_: int, group: _AttemptLines, published_at: datetime | None) -> Attempt:
    attempt = Attempt(number_, attempt_id=group.key, retries=group.retries())
    received = min(group.received, key=_line_order, default=None)
    started = min(group.started, key=_line_order, default=None)
    if received is not None:
        attempt.received_at = line_time(received)
        attempt.worker = _str(received.get("service.node.name"))
        attempt.receive_wait_ms = ms_between(attempt.received_at, published_at)
    if started is not None:
        attempt.started_at = line_time(started)
        attempt.worker = _str(started.get("service.node.name")) or attempt.worker
        pid = started.get("process.pid")
        attempt.worker_pid = pid if isinstance(pid, int) else None
        attempt.redelivered = bool(started.get("task.redelivered"))
        wait = number(started.get("queue_wait_ms"))
        attempt.queue_wait_ms = (
            wait if wait is not None else ms_between(attempt.started_at, published_at)
        )
    end = min(group.ends, key=_end_order, default=None)
    if end is not None:
        attempt.outcome = ATTEMPT_OUTCOMES[str(end.get("event.action"))]
        attempt.ended_at = line_time(end)
        attempt.worker = attempt.worker or _str(end.get("service.node.name"))
        attempt.error = _str(end.get("error.message"))
        attempt.error_type = _str(end.get("error.type"))
        duration = number(end.get("duration_ms"))
        attempt.execution_ms = (
            duration if duration is not None else ms_between(attempt.ended_at, attempt.started_at)
        )
    return attempt


def _line_order(line: LogLine) -> tuple[datetime, str]:
    return line_time(line) or _FAR, str(line.get("process.pid"))


def _end_order(line: LogLine) -> tuple[int, datetime]:
    """Strongest outcome first; among equal ones the earliest line."""
    outcome = ATTEMPT_OUTCOMES[str(line.get("event.action"))]
    return -_OUTCOME_RANK[outcome], line_time(line) or _FAR


def _settle(task: TaskSummary, revocations: list[LogLine]) -> None:
    """Final status, timings and counters of ``task`` from its ordered attempts."""
    attempts = task.attempts
    outcomes = {a.outcome for a in attempts}
    if "DUPLICATE" in outcomes:
        outcomes.add("SUCCESS")  # a duplicate is answered from a stored success
    if revocations:
        outcomes.add("REVOKED")
    final = next((s for s in TERMINAL_STATUSES if s in outcomes), None)
    if final is not None:
        task.final_status = final
        decider = _deciding_attempt(attempts, final)
        if decider is not None:
            task.ended_at = decider.ended_at
            task.execution_ms = decider.execution_ms
            task.error, task.error_type = decider.error, decider.error_type
        elif revocations:
            task.ended_at = min((t for x in revocations if (t := line_time(x))), default=None)
    elif attempts:
        last = attempts[-1]
        # A lost attempt's message is back in its queue, waiting for its redelivery.
        task.final_status = "PENDING" if last.outcome == "LOST" else last.state
    task.retries = sum(1 for a in attempts if a.outcome == "RETRY")
    seen: set[int] = set()
    for attempt in attempts:
        again = (attempt.retries or 0) in seen
        seen.add(attempt.retries or 0)
        task.redeliveries += 1 if again or attempt.redelivered else 0
    task.queue_wait_ms = next((a.queue_wait_ms for a in attempts if a.started_at), None)
    task.end_to_end_ms = ms_between(task.ended_at, task.published_at)
    for attempt in attempts:
        if attempt.receive_wait_ms is not None and attempt.receive_wait_ms < 0:
            # The message is stamped before it is pushed and received after it is popped:
            # on one clock the gap is never negative, so a negative one measures two clocks.
            task.notes.append(
                f"attempt #{attempt.number} was received {-attempt.receive_wait_ms:.1f} ms "
                "before the message's own publish time: the publisher's and the worker's "
                "clocks differ by at least that much; its wait is shown as 0"
            )
            attempt.receive_wait_ms = 0.0


def _deciding_attempt(attempts: list[Attempt], final: str) -> Attempt | None:
    wanted = {final, "DUPLICATE"} if final == "SUCCESS" else {final}
    matching = [a for a in attempts if a.outcome in wanted]
    # The real success, not a duplicate answered from it, when both are there.
    matching.sort(key=lambda a: (a.outcome != final, a.number))
    return matching[0] if matching else None
