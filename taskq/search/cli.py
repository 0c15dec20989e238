"""``taskq trace``, ``taskq logs`` and ``taskq stats``: the log search commands.

Exit codes: 0 something was found, 1 nothing matches, 2 usage or backend errors (with a
message on stderr). Importing this module is cheap: backends, DuckDB and rich are
imported only by the command that runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from taskq.settings import Settings

if TYPE_CHECKING:
    from taskq.search.store.base import LogFilter, LogStore

#: The API's page bounds (TASKQ_TRACE_MAX_LINES / _BYTES defaults): one answer, one size.
TRACE_MAX_LINES: int = Settings.model_fields["trace_max_lines"].default
TRACE_MAX_BYTES: int = Settings.model_fields["trace_max_bytes"].default

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class UsageError(Exception):
    """A bad argument value; reported with exit code 2."""


def parse_when(text: str | None, now: datetime | None = None) -> datetime | None:
    """``15m``, ``2h``, ``1d`` (ago), an ISO 8601 time (UTC if no offset), or ``all`` -> None."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    now = now or datetime.now(UTC)
    match = _DURATION.fullmatch(text.strip())
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"cannot read time {text!r}: use 15m, 2h, 1d or ISO 8601") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _backend_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backend (default from TASKQ_LOGSTORE_BACKEND, TASKQ_ES_*)")
    group.add_argument("--backend", choices=("duckdb", "elasticsearch"), help="default duckdb")
    group.add_argument(
        "--log-dir", help="JSON log files (duckdb); default TASKQ_LOG_DIR or var/log"
    )
    group.add_argument("--es-url", help="Elasticsearch URL; default TASKQ_ES_URL")
    group.add_argument("--es-index", help="data stream or index pattern; default logs-taskq-*")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the three commands to the ``taskq`` parser."""
    text = "the whole journey of one request: timeline and per-task timings"
    trace = sub.add_parser("trace", help=text, description=text)
    trace.add_argument("correlation_id", nargs="?", help="the request's X-Request-ID")
    trace.add_argument("--task", dest="task_id", help="start from a task id instead")
    trace.add_argument(
        "--trace-id", dest="trace_id", help="start from a W3C trace id (trace.id) instead"
    )
    trace.add_argument(
        "--offset", type=int, default=0, help="first timeline line shown (paging; default 0)"
    )
    trace.add_argument(
        "--max-lines",
        type=int,
        default=TRACE_MAX_LINES,
        help=f"timeline lines shown at most (default {TRACE_MAX_LINES})",
    )
    _backend_options(trace)
    trace.set_defaults(handler=_run, action="trace")

    text = "filter the log lines (newest --limit matches, printed oldest first)"
    logs = sub.add_parser("logs", help=text, description=text)
    logs.add_argument("--service", help="service or node: nginx, api, api-1, worker, beat, ...")
    logs.add_argument("--level", help="this level and above: DEBUG, INFO, WARNING, ERROR")
    logs.add_argument("--event", help="event name; * is a wildcard (task.*)")
    logs.add_argument("--task-name", help="full or short task name (calculate_var)")
    logs.add_argument("--correlation-id")
    logs.add_argument("--task-id")
    logs.add_argument("--since", help="15m, 2h, 1d or ISO 8601")
    logs.add_argument("--until", help="15m, 2h, 1d or ISO 8601")
    logs.add_argument("--grep", help="case-insensitive text in message, error, ids, path")
    logs.add_argument("--limit", type=int, default=100)
    logs.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="print matching lines as they are written, across rotation, until Ctrl-C",
    )
    _backend_options(logs)
    logs.set_defaults(handler=_run, action="logs")

    text = "tasks by status, timing percentiles, retries, HTTP statuses, busiest requests"
    stats = sub.add_parser("stats", help=text, description=text)
    stats.add_argument("--since", default="1h", help="15m, 2h, 1d, ISO 8601 or all (default 1h)")
    stats.add_argument("--until", help="15m, 2h, 1d or ISO 8601")
    _backend_options(stats)
    stats.set_defaults(handler=_run, action="stats")


def _open(args: argparse.Namespace) -> LogStore:
    """The backend named by the options, else by the environment."""
    from dataclasses import replace
    from pathlib import Path

    from taskq.search.store.config import StoreConfig
    from taskq.search.store.factory import open_store

    try:
        config = StoreConfig.from_env()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    overrides: dict[str, Any] = {
        "backend": args.backend,
        "log_dir": Path(args.log_dir) if args.log_dir else None,
        "es_url": args.es_url,
        "es_index": args.es_index,
    }
    return open_store(replace(config, **{k: v for k, v in overrides.items() if v is not None}))


def _run(args: argparse.Namespace) -> int:
    from taskq.search.store.base import LogStoreError

    name = f"taskq {args.action}"
    try:
        if args.action == "trace":
            given = [bool(args.correlation_id), bool(args.task_id), bool(args.trace_id)]
            if sum(given) != 1:
                raise UsageError(
                    "give a correlation id, --task TASK_ID or --trace-id TRACE_ID (one of them)"
                )
        store = _open(args)
        try:
            command = {"trace": _trace, "logs": _logs, "stats": _stats}[args.action]
            return command(store, args)
        finally:
            store.close()
    except (UsageError, LogStoreError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `taskq logs | head`: the reader left; silence the flush at exit, as grep does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _trace(store: LogStore, args: argparse.Namespace) -> int:
    from taskq.search.trace import build as tracing
    from taskq.search.trace.page import page_of

    if args.offset < 0 or args.max_lines < 1:
        raise UsageError("--offset must be at least 0 and --max-lines at least 1")
    if args.task_id:
        found = tracing.find_trace_by_task(store, args.task_id)
        what = f"task {args.task_id}"
    elif args.trace_id:
        found = tracing.find_trace_by_trace_id(store, args.trace_id)
        what = f"trace id {args.trace_id}"
    else:
        found = tracing.find_trace(store, args.correlation_id)
        what = f"correlation id {args.correlation_id}"
    if found is None:
        print(f"taskq trace: no log line with {what}", file=sys.stderr)
        return 1
    kibana = os.environ.get("TASKQ_KIBANA_URL")
    if kibana and found.correlation_id:
        from taskq.search.kibana import trace_url

        found.kibana_url = trace_url(kibana, found.correlation_id)
    if found.correlation_id:
        from taskq.search.trace.links import trace_page_url

        try:
            base = Settings().public_base_url
        except ValueError:  # settings that do not validate: no link, the trace still prints
            base = None
        if base is not None:
            found.page_url = trace_page_url(base, found.correlation_id)
    page, info = page_of(found, args.offset, args.max_lines, TRACE_MAX_BYTES)
    if args.json:
        _print_json({**page.to_json(), "page": info.to_json()})
    else:
        from taskq.search.render import render_trace

        render_trace(page, info)
    return 0


def _log_filter(args: argparse.Namespace) -> LogFilter:
    """The field filters of ``taskq logs`` (no time window, default limit)."""
    from taskq.search.store.base import LogFilter

    return LogFilter(
        service=args.service,
        level=args.level,
        event=args.event,
        task_name=args.task_name,
        correlation_id=args.correlation_id,
        task_id=args.task_id,
        grep=args.grep,
    )


def _logs(store: LogStore, args: argparse.Namespace) -> int:
    from dataclasses import replace

    if args.follow:
        return _follow(args)
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    log_filter = replace(
        _log_filter(args),
        since=parse_when(args.since),
        until=parse_when(args.until),
        limit=args.limit,
    )
    lines = store.search(log_filter)
    if args.json:
        for line in lines:
            sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
    else:
        from taskq.search.render import render_lines

        render_lines(lines)
    return 0 if lines else 1


def _follow(args: argparse.Namespace) -> int:
    """``taskq logs --follow``: the log directory's new lines, filtered, until Ctrl-C."""
    from pathlib import Path

    from taskq.search.follow import follow
    from taskq.search.render import console, lines_table
    from taskq.search.store.config import StoreConfig

    if args.backend == "elasticsearch" or args.until:
        raise UsageError("--follow reads the local log files: no --backend elasticsearch, --until")
    log_dir = Path(args.log_dir) if args.log_dir else StoreConfig.from_env().log_dir
    log_filter = _log_filter(args)
    out = console()
    try:
        for batch in follow(log_dir, log_filter):
            if args.json:
                for line in batch:
                    sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
                sys.stdout.flush()
            else:
                out.print(lines_table(batch))
    except KeyboardInterrupt:
        return 0
    return 0


def _stats(store: LogStore, args: argparse.Namespace) -> int:
    report = store.stats(parse_when(args.since), parse_when(args.until))
    if args.json:
        from dataclasses import asdict

        _print_json(asdict(report))
    else:
        from taskq.search.render import render_stats

        render_stats(report)
    return 0 if report.lines else 1


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, default=_default, indent=2) + "\n")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)
