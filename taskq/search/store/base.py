"""The backend-neutral interface of the log stores and the values that cross it.

A log line is the parsed JSON object of one line, keyed by the flat field names of
:mod:`taskq.logs.schema` (``"service.name"``, never nested objects).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

LogLine = dict[str, Any]


class LogStoreError(Exception):
    """The backend cannot answer (unreachable, misconfigured, unreadable files)."""


@dataclass(frozen=True)
class LogFilter:
    """Filters of ``taskq logs``; ``None`` means "any". Times are tz-aware."""

    service: str | None = None
    level: str | None = None
    event: str | None = None
    task_name: str | None = None
    correlation_id: str | None = None
    task_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    grep: str | None = None
    limit: int = 100


#: Fields that ``--grep`` searches (case-insensitive substring), in every backend.
GREP_FIELDS: tuple[str, ...] = (
    "message",
    "error.message",
    "error.type",
    "event.action",
    "correlation_id",
    "task_id",
    "task_name",
    "url.path",
)


@dataclass(frozen=True)
class Percentiles:
    """p50/p95/p99 of one measure, milliseconds; ``None`` when there were no samples."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


@dataclass(frozen=True)
class TaskNameStats:
    """Per ``task_name`` numbers of ``taskq stats``."""

    task_name: str
    executions: int
    execution_ms: Percentiles
    queue_wait_ms: Percentiles
    retries: int
    failures: int
    redeliveries: int


@dataclass(frozen=True)
class StatsReport:
    """What an on-call engineer looks at first, over one time window."""

    since: datetime | None
    until: datetime | None
    lines: int
    tasks_by_status: dict[str, int] = field(default_factory=dict)
    by_task_name: list[TaskNameStats] = field(default_factory=list)
    http_status: dict[int, int] = field(default_factory=dict)
    busiest_correlation_ids: list[tuple[str, int]] = field(default_factory=list)


class LogStore(Protocol):
    """One backend. Every method raises :class:`LogStoreError` when it cannot answer."""

    def lines_for_correlation(self, correlation_id: str) -> list[LogLine]:
        """Every line carrying ``correlation_id``, in no particular order."""
        ...

    def lines_for_tasks(self, task_ids: set[str]) -> list[LogLine]:
        """Every line whose ``task_id`` is one of ``task_ids``, in no particular order."""
        ...

    def search(self, log_filter: LogFilter) -> list[LogLine]:
        """The newest ``log_filter.limit`` matching lines, returned oldest first."""
        ...

    def stats(self, since: datetime | None, until: datetime | None) -> StatsReport:
        """The :class:`StatsReport` of the lines written in ``[since, until]``."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...
