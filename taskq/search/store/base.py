"""The backend-neutral interface of the log stores and the values that cross it.

A log line is the parsed JSON object of one line, keyed by the flat field names of
:mod:`taskq.logs.schema` (``"service.name"``, never nested objects).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

LogLine = dict[str, Any]


class LogStoreError(Exception):
    """The backend cannot answer (unreachable, misconfigured, unreadable files)."""


class UnsupportedQueryError(LogStoreError):
    """This backend does not implement the query (the API answers 501)."""


#: The status searches of the trace explorer: what each finds, newest first.
TASK_SEARCHES: dict[str, str] = {
    "failures": "tasks with a failed attempt",
    "retries": "tasks that were retried",
    "redeliveries": "tasks that a broker redelivered",
    "slowest": "the slowest executions",
}
#: At most this many matches for a prefix or status search.
MAX_MATCHES = 50
#: A lookup by id (``lines_for_correlation``, ``lines_for_tasks``) reads at most this many
#: lines, and the embedded backend at most :data:`LOOKUP_MAX_BYTES` of them (defaults of
#: ``TASKQ_TRACE_LOOKUP_MAX_LINES``/``_BYTES``; Elasticsearch: its ``size``): clients choose
#: their ``X-Request-ID``, so anyone can inflate anyone's trace with cheap requests, and
#: the cost of a lookup must not grow with that (Elasticsearch's ``size`` is the same).
LOOKUP_MAX_LINES = 10_000
LOOKUP_MAX_BYTES = 16 * 1024 * 1024


class Lines(list[dict[str, Any]]):
    """The lines of one lookup by id; ``capped`` when it stopped at its bound and more
    lines carry the id."""

    def __init__(self, lines: Iterable[LogLine] = (), *, capped: bool = False) -> None:
        super().__init__(lines)
        self.capped = capped


@dataclass(frozen=True)
class CorrelationMatch:
    """A correlation id found by a prefix search: its first and last line, and count."""

    correlation_id: str
    first_at: datetime | None
    last_at: datetime | None
    lines: int


@dataclass(frozen=True)
class TaskMatch:
    """A task found by a status search: when the matching line was written, and the
    measure it was found by (``duration_ms`` for "slowest", else ``None``)."""

    task_id: str
    at: datetime | None
    duration_ms: float | None = None


@dataclass(frozen=True)
class Surrounding:
    """A line and its neighbours written by the same process (same file, same
    ``service.node.name`` and ``process.pid``), oldest first."""

    file: str
    line: LogLine
    before: list[LogLine] = field(default_factory=list)
    after: list[LogLine] = field(default_factory=list)


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
    "trace.id",
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
    #: nginx's answers to clients, by status; taskq's own probes left out (below).
    http_status: dict[int, int] = field(default_factory=dict)
    #: Requests of taskq's own probes (``PROBE_USER_AGENT``): readiness waits, monitors.
    probe_requests: int = 0
    busiest_correlation_ids: list[tuple[str, int]] = field(default_factory=list)


class LogStore(Protocol):
    """One backend. Every method raises :class:`LogStoreError` when it cannot answer."""

    def lines_for_correlation(self, correlation_id: str) -> Lines:
        """The lines carrying ``correlation_id`` (at most :data:`LOOKUP_MAX_LINES`, the
        oldest first kept), in no particular order."""
        ...

    def lines_for_tasks(self, task_ids: set[str]) -> Lines:
        """The lines whose ``task_id`` is one of ``task_ids`` (bounded as
        :meth:`lines_for_correlation`), in no particular order."""
        ...

    def search(self, log_filter: LogFilter) -> list[LogLine]:
        """The newest ``log_filter.limit`` matching lines, returned oldest first."""
        ...

    def stats(self, since: datetime | None, until: datetime | None) -> StatsReport:
        """The :class:`StatsReport` of the lines written in ``[since, until]``."""
        ...

    def correlation_ids(self, prefix: str, limit: int = MAX_MATCHES) -> list[CorrelationMatch]:
        """Correlation ids starting with ``prefix``, the most recently seen first."""
        ...

    def find_tasks(self, search: str, limit: int = MAX_MATCHES) -> list[TaskMatch]:
        """Tasks found by one of :data:`TASK_SEARCHES`: newest first (``slowest``: by
        execution time, longest first); one match per task."""
        ...

    def surrounding(self, line: LogLine, n: int) -> Surrounding | None:
        """Up to ``n`` lines before and after ``line`` from the same process, or ``None``
        when the line is not found."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...
