"""The embedded backend: the JSON-lines files of the log directory, read where they lie.

- Lookups by id (``trace``) go through :class:`~taskq.search.store.lineindex.LineIndex`,
  refreshed before every lookup, then read the few lines by offset: no scan, no DuckDB;
  at most ``config.lookup_max_lines``/``_bytes`` of them, bounded in the index query.
- Filters (``logs``) and aggregations (``stats``) are DuckDB scans of the files, with
  malformed lines (a torn last line being written) skipped, and the file list taken again
  if a file is rotated away mid-query.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from taskq.logs.schema import (
    ATTEMPT_OUTCOMES,
    EXECUTION_ENDS,
    FIELDS,
    PROBE_USER_AGENT,
    TERMINAL_EVENTS,
    TERMINAL_STATUSES,
    Event,
    FieldType,
)
from taskq.search.store.base import (
    GREP_FIELDS,
    MAX_MATCHES,
    TASK_SEARCHES,
    CorrelationMatch,
    Lines,
    LogFilter,
    LogLine,
    LogStoreError,
    Percentiles,
    StatsReport,
    Surrounding,
    TaskMatch,
    TaskNameStats,
)
from taskq.search.store.config import StoreConfig
from taskq.search.store.lineindex import LineIndex, StaleIndexError, log_files, read_locations
from taskq.search.store.surrounding import read_around, same_writer

if TYPE_CHECKING:
    import duckdb

_DUCK_TYPES: dict[FieldType, str] = {
    "date": "VARCHAR",
    "keyword": "VARCHAR",
    "text": "VARCHAR",
    "long": "BIGINT",
    "float": "DOUBLE",
    "boolean": "BOOLEAN",
}
COLUMNS: dict[str, str] = {f.name: _DUCK_TYPES[f.type] for f in FIELDS}
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _in(values: Iterable[str]) -> str:
    """A SQL list of string literals (the values are our own event names)."""
    return "(" + ",".join(f"'{v}'" for v in sorted(values)) + ")"


_ENDED_SQL = f'"event.action" IN {_in(EXECUTION_ENDS)}'


def _case(mapping: Mapping[str, object], column: str = "e") -> str:
    whens = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in sorted(mapping.items()))
    return f"CASE {column} {whens} END"


# Final status per task, as taskq/search/trace/attempts.py settles it: the strongest terminal
# event over all lines, else the state of the latest attempt (by retry number, then first
# line time, then attempt id); a lost latest attempt is waiting in its queue (PENDING).
_TERMINAL_RANK = {
    event: str(TERMINAL_STATUSES.index(status)) for event, status in TERMINAL_EVENTS.items()
}
_ATTEMPT_EVENTS = (Event.TASK_RECEIVED, Event.TASK_STARTED, *ATTEMPT_OUTCOMES)
_STATUSES_SQL = f"""
WITH ev AS (
  SELECT task_id, "event.action" AS e, _ts,
    coalesce("task.retries", 0) AS r,
    coalesce("task.attempt_id", coalesce("service.node.name", '?') || '/'
             || CAST(coalesce("task.retries", 0) AS VARCHAR)) AS a
  FROM w WHERE task_id IS NOT NULL AND "event.action" LIKE 'task.%'
), terminal AS (
  SELECT task_id, min(CAST({_case(_TERMINAL_RANK)} AS INTEGER)) AS rank FROM ev GROUP BY task_id
), attempts AS (
  SELECT task_id, a, max(r) AS r, min(_ts) AS first,
    CASE WHEN bool_or(e = '{Event.TASK_RETRY}') THEN 'RETRY'
         WHEN bool_or(e = '{Event.TASK_HANDLER_ERROR}') THEN 'PENDING'
         WHEN bool_or(e = '{Event.TASK_STARTED}') THEN 'STARTED'
         ELSE 'RECEIVED' END AS state
  FROM ev WHERE e IN {_in(_ATTEMPT_EVENTS)} GROUP BY task_id, a
), latest AS (
  SELECT task_id, state FROM (
    SELECT task_id, state, row_number() OVER (
      PARTITION BY task_id ORDER BY r DESC, first DESC NULLS LAST, a DESC) AS n
    FROM attempts) WHERE n = 1
)
SELECT CASE t.rank {" ".join(f"WHEN {i} THEN '{s}'" for i, s in enumerate(TERMINAL_STATUSES))}
         ELSE coalesce(l.state, 'PENDING') END AS status, count(*)
FROM terminal t LEFT JOIN latest l USING (task_id)
GROUP BY 1 ORDER BY 2 DESC, 1
"""


def q(name: str) -> str:
    """A column name quoted for SQL (the schema's names contain dots)."""
    return '"' + name.replace('"', '""') + '"'


class DuckDBStore:
    """See module docstring. Not thread-safe: one instance per thread or request."""

    def __init__(self, config: StoreConfig) -> None:
        if not config.log_dir.is_dir():
            raise LogStoreError(f"log directory {config.log_dir} does not exist")
        self._config = config
        self._index: LineIndex | None = None
        self._duck: duckdb.DuckDBPyConnection | None = None

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
        if self._duck is not None:
            self._duck.close()

    # --- lookups by id, through the index ----------------------------------------------

    def _line_index(self) -> LineIndex:
        if self._index is None:
            try:
                self._index = LineIndex(self._config.index_path, self._config.log_dir)
            except (OSError, sqlite3.Error) as exc:
                raise LogStoreError(
                    f"cannot open the log index {self._config.index_path}: {exc}"
                ) from exc
        return self._index

    def _read(self, keys: set[str]) -> Lines:
        try:
            raw, capped = self._line_index().read_first(
                keys, self._config.lookup_max_lines, self._config.lookup_max_bytes
            )
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise LogStoreError(f"log index {self._config.index_path}: {exc}") from exc
            raise LogStoreError(
                f"log index {self._config.index_path} is being updated by another process"
                " for too long; try again"
            ) from exc
        except sqlite3.DatabaseError as exc:
            raise LogStoreError(
                f"log index {self._config.index_path} is unusable ({exc}); delete it to rebuild"
            ) from exc
        except (OSError, StaleIndexError) as exc:
            raise LogStoreError(f"cannot read the log files: {exc}") from exc
        lines = Lines(capped=capped)
        for data in raw:
            try:
                line = json.loads(data)
            except ValueError:
                continue  # a corrupt line: the index only points, the file decides
            if isinstance(line, dict):
                lines.append(line)
        return lines

    def lines_for_correlation(self, correlation_id: str) -> Lines:
        found = self._read({correlation_id})
        return Lines(
            (x for x in found if x.get("correlation_id") == correlation_id), capped=found.capped
        )

    def lines_for_tasks(self, task_ids: set[str]) -> Lines:
        found = self._read(task_ids)
        return Lines((x for x in found if x.get("task_id") in task_ids), capped=found.capped)

    def surrounding(self, line: LogLine, n: int) -> Surrounding | None:
        keys = {v for k in ("correlation_id", "task_id") if isinstance(v := line.get(k), str)}
        if not keys:
            return None  # only lines carrying an id are indexed
        index = self._line_index()
        bounds = (self._config.lookup_max_lines, self._config.lookup_max_bytes)
        for _ in range(3):
            try:
                index.refresh()
                # Within the bounded lookup of one of its ids, where a trace found it: an
                # inflated id costs at most the bound here too.
                candidates = [
                    loc for key in sorted(keys) for loc in index.locate_first([key], *bounds)[0]
                ]
                for loc in candidates:
                    (raw,) = read_locations([loc])
                    try:
                        if json.loads(raw) != line:
                            continue
                    except ValueError:
                        continue
                    before, after = read_around(loc, n, same_writer(line))
                    return Surrounding(loc.path.rsplit("/", 1)[-1], line, before, after)
                return None
            except StaleIndexError:
                continue
            except (OSError, sqlite3.Error) as exc:
                raise LogStoreError(f"cannot read the log files: {exc}") from exc
        raise LogStoreError("log files kept changing while being read")

    # --- scans, through DuckDB -----------------------------------------------------------

    def correlation_ids(self, prefix: str, limit: int = MAX_MATCHES) -> list[CorrelationMatch]:
        columns = {"@timestamp": "TIMESTAMPTZ", "correlation_id": "VARCHAR"}
        rows = self._query(
            f"SELECT correlation_id, min({q('@timestamp')}) AS first, max({q('@timestamp')}),"
            f" count(*) FROM {_SOURCE} WHERE starts_with(correlation_id, ?)"
            " GROUP BY 1 ORDER BY 3 DESC NULLS LAST, 1 LIMIT ?",
            [prefix, max(0, min(limit, MAX_MATCHES))],
            columns,
        )
        return [CorrelationMatch(str(c), _utc(f), _utc(la), int(k)) for c, f, la, k in rows]

    def find_tasks(self, search: str, limit: int = MAX_MATCHES) -> list[TaskMatch]:
        if search not in TASK_SEARCHES:
            raise LogStoreError(f"unknown search {search!r}; one of {', '.join(TASK_SEARCHES)}")
        ev, started = q("event.action"), Event.TASK_STARTED
        where, order = {
            "failures": (f"{ev} = '{Event.TASK_FAILED}'", "2 DESC NULLS LAST"),
            "retries": (f"{ev} = '{Event.TASK_RETRY}'", "2 DESC NULLS LAST"),
            "redeliveries": (f"{ev} = '{started}' AND {q('task.redelivered')}", "2 DESC"),
            "slowest": (f"{_ENDED_SQL} AND duration_ms IS NOT NULL", "3 DESC, 2 DESC"),
        }[search]
        columns = {
            "@timestamp": "TIMESTAMPTZ",
            "event.action": "VARCHAR",
            "task_id": "VARCHAR",
            "task.redelivered": "BOOLEAN",
            "duration_ms": "DOUBLE",
        }
        rows = self._query(
            f"SELECT task_id, max({q('@timestamp')}), max(duration_ms) FROM {_SOURCE}"
            f" WHERE task_id IS NOT NULL AND {where} GROUP BY 1 ORDER BY {order}, 1 LIMIT ?",
            [max(0, min(limit, MAX_MATCHES))],
            columns,
        )
        return [
            TaskMatch(str(t), _utc(at), float(d) if search == "slowest" else None)
            for t, at, d in rows
        ]

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._duck is None:
            import duckdb  # ~0.1 s: only the scanning commands pay for it

            self._duck = duckdb.connect()
        return self._duck

    def _query(
        self, sql: str, params: list[Any], columns: dict[str, str] = COLUMNS
    ) -> list[tuple[Any, ...]]:
        """Run ``sql`` whose first two parameters are the file list and the columns;
        retry if files move."""
        import duckdb

        for _ in range(3):
            files = [str(p) for p in log_files(self._config.log_dir)]
            if not files:
                return []
            try:
                return self._connection().execute(sql, [files, columns, *params]).fetchall()
            except duckdb.IOException:
                continue  # a file rotated away between listing and reading
            except duckdb.Error as exc:
                raise LogStoreError(f"query failed: {exc}") from exc
        raise LogStoreError("log files kept disappearing while being read")

    def search(self, log_filter: LogFilter) -> list[LogLine]:
        where, params = filter_sql(log_filter)
        names = list(COLUMNS)
        select = ", ".join(q(n) for n in names)
        sql = (
            f"SELECT {select} FROM (SELECT *, TRY_CAST({q('@timestamp')} AS TIMESTAMPTZ) AS _ts"
            f" FROM {_SOURCE} WHERE {where} ORDER BY _ts DESC NULLS LAST LIMIT ?)"
            " ORDER BY _ts NULLS FIRST"
        )
        rows = self._query(sql, [*params, max(0, log_filter.limit)])
        return [{k: v for k, v in zip(names, row, strict=True) if v is not None} for row in rows]

    def stats(self, since: datetime | None, until: datetime | None) -> StatsReport:
        # The reader parses the timestamps itself (faster than a cast of every string).
        window, params = filter_sql(LogFilter(since=since, until=until), ts=q("@timestamp"))
        cols = [
            "event.action",
            "service.name",
            "service.node.name",
            "task.attempt_id",
            "task.retries",
            "task_id",
            "task_name",
            "correlation_id",
            "duration_ms",
            "queue_wait_ms",
            "task.redelivered",
            "http.response.status_code",
            "user_agent.original",
        ]
        if not log_files(self._config.log_dir):
            return StatsReport(since=since, until=until, lines=0)
        con = self._connection()
        con.execute("DROP TABLE IF EXISTS w")
        select = ", ".join(q(c) for c in cols)
        columns = {c: COLUMNS[c] for c in ("@timestamp", *cols)}
        columns["@timestamp"] = "TIMESTAMPTZ"
        # One scan of the files into a narrow table; the aggregations then run in memory.
        self._query(
            f"CREATE TEMP TABLE w AS SELECT {select}, {q('@timestamp')} AS _ts"
            f" FROM {_SOURCE} WHERE {window}",
            params,
            columns,
        )
        try:
            return self._aggregate(con, since, until)
        except duckdb_error() as exc:
            raise LogStoreError(f"query failed: {exc}") from exc
        finally:
            con.execute("DROP TABLE IF EXISTS w")

    def _aggregate(
        self, con: duckdb.DuckDBPyConnection, since: datetime | None, until: datetime | None
    ) -> StatsReport:
        fetch = con.execute
        (count,) = fetch("SELECT count(*) FROM w").fetchone() or (0,)
        statuses = fetch(_STATUSES_SQL).fetchall()
        ev = q("event.action")
        per_name = fetch(
            f"SELECT task_name, count(*) FILTER (WHERE {_ENDED_SQL}),"
            f" quantile_cont(duration_ms, [0.5, 0.95, 0.99]) FILTER (WHERE {_ENDED_SQL}),"
            " quantile_cont(queue_wait_ms, [0.5, 0.95, 0.99])"
            f" FILTER (WHERE {ev} = '{Event.TASK_STARTED}'),"
            f" count(*) FILTER (WHERE {ev} = '{Event.TASK_RETRY}'),"
            f" count(*) FILTER (WHERE {ev} = '{Event.TASK_FAILED}'),"
            f" count(*) FILTER (WHERE {ev} = '{Event.TASK_STARTED}' AND {q('task.redelivered')})"
            " FROM w WHERE task_name IS NOT NULL GROUP BY task_name ORDER BY 2 DESC, 1"
        ).fetchall()
        nginx = (
            f"FROM w WHERE {q('service.name')} = 'nginx' AND {ev} = '{Event.HTTP_COMPLETED}'"
            f" AND {q('http.response.status_code')} IS NOT NULL"
        )
        probe = f"{q('user_agent.original')} IS NOT DISTINCT FROM ?"
        http = fetch(
            f"SELECT {q('http.response.status_code')}, count(*) {nginx} AND NOT ({probe})"
            " GROUP BY 1 ORDER BY 1",
            [PROBE_USER_AGENT],
        ).fetchall()
        (probes,) = fetch(
            f"SELECT count(*) {nginx} AND {probe}", [PROBE_USER_AGENT]
        ).fetchone() or (0,)
        busiest = fetch(
            "SELECT correlation_id, count(*) FROM w WHERE correlation_id IS NOT NULL"
            " GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10"
        ).fetchall()
        return StatsReport(
            since=since,
            until=until,
            lines=int(count),
            tasks_by_status={str(s): int(n) for s, n in statuses},
            by_task_name=[
                TaskNameStats(
                    task_name=str(row[0]),
                    executions=int(row[1]),
                    execution_ms=_percentiles(row[2]),
                    queue_wait_ms=_percentiles(row[3]),
                    retries=int(row[4]),
                    failures=int(row[5]),
                    redeliveries=int(row[6]),
                )
                for row in per_name
            ],
            http_status={int(s): int(n) for s, n in http},
            probe_requests=int(probes),
            busiest_correlation_ids=[(str(c), int(n)) for c, n in busiest],
        )


_SOURCE = "read_ndjson(?, columns = ?, ignore_errors = true, format = 'newline_delimited')"


def duckdb_error() -> type[Exception]:
    """DuckDB's base exception class (imported lazily)."""
    import duckdb

    return duckdb.Error


def _utc(value: Any) -> datetime | None:
    """A DuckDB TIMESTAMPTZ (a datetime in the session's zone) in UTC."""
    return value.astimezone(UTC) if isinstance(value, datetime) else None


def _percentiles(values: list[float] | None) -> Percentiles:
    if not values:
        return Percentiles()
    p50, p95, p99 = (round(float(v), 3) for v in values)
    return Percentiles(p50, p95, p99)


def filter_sql(
    log_filter: LogFilter, ts: str = f"TRY_CAST({q('@timestamp')} AS TIMESTAMPTZ)"
) -> tuple[str, list[Any]]:
    """A DuckDB ``WHERE`` clause (over the raw columns) and its parameters; ``ts`` is the
    expression of the line's time as a TIMESTAMPTZ."""
    # ignore_errors turns a malformed (torn) line into a row of NULLs: skip those.
    clauses: list[str] = [f"{q('@timestamp')} IS NOT NULL"]
    params: list[Any] = []
    f = log_filter
    if f.service:
        clauses.append(f"({q('service.name')} = ? OR {q('service.node.name')} = ?)")
        params += [f.service, f.service]
    if f.level:
        at_least = [lv for lv in LEVELS if LEVELS.index(lv) >= _level_rank(f.level)]
        clauses.append(f"upper({q('log.level')}) IN ({', '.join('?' * len(at_least))})")
        params += at_least
    if f.event:
        if "*" in f.event:
            clauses.append(f"{q('event.action')} LIKE ?")
            params.append(f.event.replace("%", "").replace("_", "\\_").replace("*", "%"))
            clauses[-1] += " ESCAPE '\\'"
        else:
            clauses.append(f"{q('event.action')} = ?")
            params.append(f.event)
    if f.task_name:
        clauses.append("(task_name = ? OR ends_with(task_name, ?))")
        params += [f.task_name, "." + f.task_name]
    for name, value in (("correlation_id", f.correlation_id), ("task_id", f.task_id)):
        if value:
            clauses.append(f"{q(name)} = ?")
            params.append(value)
    if f.since is not None:
        clauses.append(f"{ts} >= ?")
        params.append(f.since)
    if f.until is not None:
        clauses.append(f"{ts} <= ?")
        params.append(f.until)
    if f.grep:
        ors = " OR ".join(f"contains(lower({q(n)}), ?)" for n in GREP_FIELDS)
        clauses.append(f"({ors})")
        params += [f.grep.lower()] * len(GREP_FIELDS)
    return " AND ".join(clauses), params


def _level_rank(level: str) -> int:
    name = level.upper()
    if name == "WARN":
        name = "WARNING"
    if name not in LEVELS:
        raise LogStoreError(f"unknown level {level!r}; one of {', '.join(LEVELS)}")
    return LEVELS.index(name)
