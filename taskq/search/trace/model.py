"""The values of a trace: HTTP exchanges, task attempts, task summaries, the trace itself.

Durations are milliseconds; times are tz-aware datetimes (ISO 8601 strings in JSON).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from taskq.search.store.base import LogLine


def parse_time(value: Any) -> datetime | None:
    """``@timestamp`` as a tz-aware datetime, ``None`` if absent or malformed."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def ms_between(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return round((later - earlier) / timedelta(milliseconds=1), 3)


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def line_time(line: LogLine) -> datetime | None:
    """The line's ``@timestamp``."""
    return parse_time(line.get("@timestamp"))


def publish_time(line: LogLine) -> datetime | None:
    """When a ``task.published`` line's message was published: the message's own stamp
    (``task.published_at``), else, for lines written before it was logged, the line's time
    (written after the broker's round trip, so later than the publish)."""
    return parse_time(line.get("task.published_at")) or line_time(line)


def line_started(line: LogLine, at: datetime | None) -> datetime | None:
    """When the operation a line reports began: its ``event.start``, else its time minus
    its ``duration_ms``."""
    if (start := parse_time(line.get("event.start"))) is not None:
        return start
    duration = number(line.get("duration_ms"))
    return at - timedelta(milliseconds=duration) if at and duration is not None else at


@dataclass
class Request:
    """One HTTP exchange: nginx's line and the API replica's line of the same
    ``http.request.id``, and what the exchange did to a task."""

    exchange_id: str | None
    correlation_id: str | None
    method: str | None
    path: str | None
    status: int | None
    kind: str  # submit, replay, poll, revoke or other
    task_id: str | None  # the task it published, replayed, polled or revoked
    error_type: str | None
    started_at: datetime | None
    nginx_ms: float | None
    upstream_ms: float | None
    api_ms: float | None
    api_node: str | None
    api_started_at: datetime | None
    nginx_to_api_ms: float | None  # nginx received -> API replica started handling
    end_to_end_ms: float | None = None  # received -> its task ended (submit), else its own time


@dataclass
class Attempt:
    """One delivery of a task to a worker: the first run, a retry or a redelivery."""

    number: int
    attempt_id: str | None = None
    retries: int | None = None
    worker: str | None = None
    worker_pid: int | None = None
    redelivered: bool = False
    received_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    queue_wait_ms: float | None = None  # published -> started (the worker's own figure)
    receive_wait_ms: float | None = None  # published -> received by a worker
    execution_ms: float | None = None
    #: SUCCESS, FAILURE, RETRY, REVOKED, REJECTED, LOST (its worker died), DUPLICATE (a
    #: redelivery answered from the completion record) or None (still waiting or running).
    outcome: str | None = None
    error: str | None = None
    error_type: str | None = None

    @property
    def state(self) -> str:
        """The furthest point this attempt reached."""
        if self.outcome is not None:
            return self.outcome
        return "STARTED" if self.started_at is not None else "RECEIVED"


@dataclass
class TaskSummary:
    """One task across its attempts, and the requests that touched it."""

    task_id: str
    task_name: str | None = None
    queue: str | None = None
    parent_task_id: str | None = None
    published_by: str | None = None  # correlation id of the request that published it
    touched_by: list[str] = field(default_factory=list)  # other ids: polls, replays, revokes
    published_at: datetime | None = None
    publish_ms: float | None = None  # API started handling the request -> task published
    queue_wait_ms: float | None = None  # of the first attempt that started
    execution_ms: float | None = None  # of the attempt that decided the final status
    retries: int = 0
    redeliveries: int = 0
    final_status: str = "PENDING"
    error_type: str | None = None
    error: str | None = None
    ended_at: datetime | None = None
    end_to_end_ms: float | None = None  # first publish -> final end
    attempts: list[Attempt] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Trace:
    """The journey of one correlation id."""

    correlation_id: str | None
    lines: list[LogLine]
    requests: list[Request]
    tasks: list[TaskSummary]
    started_at: datetime | None
    ended_at: datetime | None
    #: Correlation ids of the original requests when this one replayed their tasks.
    replay_of: list[str] = field(default_factory=list)
    kibana_url: str | None = None
    #: The trace page of the API's UI (taskq.search.trace.links), when the caller knows
    #: the public base URL.
    page_url: str | None = None
    #: The store's lookup stopped at its bound (``LOOKUP_MAX_LINES``/``_BYTES``): more lines
    #: carry this id than were read; the earliest of each process were kept.
    lookup_capped: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; datetimes as ISO 8601 strings."""
        data = asdict(self)
        return json.loads(json.dumps(data, default=_json_default))  # type: ignore[no-any-return]


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)
