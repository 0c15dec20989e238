"""One tenant's view of a log store: only the lines of its own requests and tasks.

Invariant: a line is visible to a key id when it is attributed to that key id:

* an API line carries ``user.id``, the key id of its request; the other lines of the same
  HTTP exchange (nginx's, joined by ``http.request.id``) belong to that key id too;
* a line with neither, but with a ``task_id`` (a worker's), belongs to the key that
  published the task: the ``user.id`` of the task's ``task.published`` line, which only
  the API writes, at submission.

Anything else (a request without a key, a child task published inside a worker) belongs to
nobody and is visible to admins only. A lookup by task id finds the caller's own tasks only
(its poll of another's task id shows under its correlation id, never as that task).
So a tenant that reuses another tenant's correlation
id sees its own lines under it, never the other's, and a search lists only correlation ids
and tasks that have a line of its own. Wrap a store per request (it memoises task lines).
"""

from __future__ import annotations

from datetime import datetime

from taskq.logs.schema import Event
from taskq.search.store.base import (
    MAX_MATCHES,
    CorrelationMatch,
    Lines,
    LogFilter,
    LogLine,
    LogStore,
    StatsReport,
    Surrounding,
    TaskMatch,
    UnsupportedQueryError,
)

#: A prefix or status search looks at this many times the matches it may answer with,
#: since other tenants' matches are dropped after the store found them.
SCAN_FACTOR = 10


def task_owners(lines: list[LogLine]) -> dict[str, str]:
    """task id -> key id of the request that published it, from ``task.published`` lines."""
    owners: dict[str, str] = {}
    for line in lines:
        if line.get("event.action") != Event.TASK_PUBLISHED or line.get("service.name") != "api":
            continue
        task_id, key_id = line.get("task_id"), line.get("user.id")
        if isinstance(task_id, str) and isinstance(key_id, str):
            owners.setdefault(task_id, key_id)
    return owners


def visible_lines(lines: list[LogLine], key_id: str, owners: dict[str, str]) -> list[LogLine]:
    """The lines of ``lines`` attributed to ``key_id`` (module docstring); ``owners``
    holds the publishers of the tasks the lines mention."""
    by_exchange: dict[str, str] = {}
    for line in lines:
        exchange, owner = line.get("http.request.id"), line.get("user.id")
        if isinstance(exchange, str) and isinstance(owner, str):
            by_exchange.setdefault(exchange, owner)
    shown = []
    for line in lines:
        owner = line.get("user.id")
        if not isinstance(owner, str):
            exchange = line.get("http.request.id")
            owner = by_exchange.get(exchange) if isinstance(exchange, str) else None
        if owner is None and line.get("http.request.id") is None:
            task_id = line.get("task_id")
            owner = owners.get(task_id) if isinstance(task_id, str) else None
        if owner == key_id:
            shown.append(line)
    return shown


class TenantStore:
    """A :class:`LogStore` showing ``key_id``'s lines only (module docstring)."""

    def __init__(self, store: LogStore, key_id: str) -> None:
        self._store = store
        self._key_id = key_id
        self._task_lines: dict[str, list[LogLine]] = {}
        #: A lookup of task lines stopped at its bound (some task lines were left out).
        self._tasks_capped = False

    def _lines_of_tasks(self, task_ids: set[str]) -> list[LogLine]:
        missing = task_ids - self._task_lines.keys()
        if missing:
            fetched = self._store.lines_for_tasks(missing)
            self._tasks_capped |= fetched.capped
            for wanted in missing:
                self._task_lines[wanted] = []
            for line in fetched:
                owner_task = line.get("task_id")
                if isinstance(owner_task, str) and owner_task in self._task_lines:
                    self._task_lines[owner_task].append(line)
        return [line for t in sorted(task_ids) for line in self._task_lines.get(t, [])]

    def _visible(self, lines: list[LogLine]) -> list[LogLine]:
        task_ids = {t for x in lines if isinstance(t := x.get("task_id"), str) and t}
        owners = task_owners(self._lines_of_tasks(task_ids)) if task_ids else {}
        return visible_lines(lines, self._key_id, owners)

    def lines_for_correlation(self, correlation_id: str) -> Lines:
        found = self._store.lines_for_correlation(correlation_id)
        return Lines(self._visible(found), capped=found.capped)

    def lines_for_tasks(self, task_ids: set[str]) -> Lines:
        # Only the caller's tasks: its poll of another's task id finds nothing by that id.
        lines = self._lines_of_tasks(task_ids)
        owners = task_owners(lines)
        own = [x for x in lines if owners.get(str(x.get("task_id"))) == self._key_id]
        return Lines(visible_lines(own, self._key_id, owners), capped=self._tasks_capped)

    def correlation_ids(self, prefix: str, limit: int = MAX_MATCHES) -> list[CorrelationMatch]:
        found = self._store.correlation_ids(prefix, limit * SCAN_FACTOR)
        own = [m for m in found if self.lines_for_correlation(m.correlation_id)]
        return own[:limit]

    def find_tasks(self, search: str, limit: int = MAX_MATCHES) -> list[TaskMatch]:
        found = self._store.find_tasks(search, limit * SCAN_FACTOR)
        owners = task_owners(self._lines_of_tasks({m.task_id for m in found}))
        return [m for m in found if owners.get(m.task_id) == self._key_id][:limit]

    def surrounding(self, line: LogLine, n: int) -> Surrounding | None:
        around = self._store.surrounding(line, n)
        if around is None:
            return None
        # The neighbours are other requests' lines of the same process: only own ones.
        return Surrounding(
            around.file,
            around.line,
            self._visible(around.before),
            self._visible(around.after),
        )

    def search(self, log_filter: LogFilter) -> list[LogLine]:
        raise UnsupportedQueryError("free log searches are for operators (taskq logs)")

    def stats(self, since: datetime | None, until: datetime | None) -> StatsReport:
        raise UnsupportedQueryError("log statistics are for operators (taskq stats)")

    def close(self) -> None:
        self._store.close()
