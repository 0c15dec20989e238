"""Readable output of the search commands (rich tables; no colours when not a terminal).

Every value read from the logs is printed through :func:`~taskq.search.plain.plain`: plain
text, never markup, control characters escaped (log values are client input).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from taskq.search.plain import plain
from taskq.search.store.base import LogLine, Percentiles, StatsReport
from taskq.search.trace.build import Attempt, Request, TaskSummary, Trace, parse_time
from taskq.search.trace.page import LOOKUP_CAPPED_NOTE, PageInfo

#: Fields worth showing beside the message in a timeline row.
_DETAILS = (
    "http.request.method",
    "url.path",
    "http.response.status_code",
    "duration_ms",
    "upstream.response_time_ms",
    "upstream.address",
    "queue",
    "task.retries",
    "task.redelivered",
    "queue_wait_ms",
    "parent_task_id",
    "error.type",
    "error.message",
)


#: Width of piped output when neither ``COLUMNS`` nor a terminal says one: wide, so that a
#: file keeps each line on one row.
UNBOUNDED_WIDTH = 240


def output_width(environ: Mapping[str, str] | None = None) -> int:
    """Columns for piped output: ``COLUMNS`` if set, else the width of the terminal the
    command runs in (``taskq trace ID | less``: stderr or stdin is still that terminal),
    else :data:`UNBOUNDED_WIDTH`."""
    columns = (os.environ if environ is None else environ).get("COLUMNS", "")
    if columns.strip().isdigit() and int(columns) > 0:
        return int(columns)
    for stream in (sys.stderr, sys.stdin):
        try:
            return os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            continue
    return UNBOUNDED_WIDTH


def console() -> Console:
    """A console for stdout; plain (no colours) when stdout is not a terminal (pipes,
    files), as wide as :func:`output_width` says."""
    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(width=output_width(), no_color=True, highlight=False, soft_wrap=False)


def _time(value: Any) -> str:
    parsed = parse_time(value)
    if parsed is None:
        return str(value or "")
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def _details(line: LogLine) -> str:
    return " ".join(f"{k}={line[k]}" for k in _DETAILS if line.get(k) not in (None, ""))


def lines_table(lines: list[LogLine], title: str | Text | None = None) -> Table:
    """One row per line: time, service node, level, event, task id, message and details."""
    table = Table(title=title, show_edge=False, pad_edge=False, expand=False)
    for name in ("time (UTC)", "service", "level", "event", "task_id"):
        table.add_column(name, no_wrap=True)
    table.add_column("message", overflow="fold")
    for line in lines:
        level = str(line.get("log.level", ""))
        style = "red" if level in ("ERROR", "CRITICAL") else "yellow" if level == "WARNING" else ""
        message = str(line.get("message", ""))
        details = _details(line)
        table.add_row(
            plain(_time(line.get("@timestamp"))),
            plain(line.get("service.node.name") or line.get("service.name") or ""),
            plain(level, style=style),
            plain(line.get("event.action", "")),
            plain(line.get("task_id") or ""),
            plain(f"{message}  {details}" if details else message),
        )
    return table


def render_lines(lines: list[LogLine]) -> None:
    """``taskq logs`` output."""
    out = console()
    out.print(lines_table(lines))
    out.print(f"{len(lines)} line(s)")


def _request_row(request: Request) -> list[str]:
    return [
        f"{request.method or ''} {request.path or ''}",
        str(request.status or ""),
        request.kind + (f" {request.task_id}" if request.task_id else ""),
        request.error_type or "",
        _ms(request.nginx_ms),
        request.api_node or "-",
        _ms(request.api_ms),
        _ms(request.nginx_to_api_ms),
        _ms(request.end_to_end_ms),
    ]


def _attempt_row(attempt: Attempt) -> list[str]:
    error = " ".join(x for x in (attempt.error_type, attempt.error) if x)
    return [
        f"#{attempt.number}",
        attempt.worker or "-",
        "-" if attempt.worker_pid is None else str(attempt.worker_pid),
        "-" if attempt.retries is None else str(attempt.retries),
        "yes" if attempt.redelivered else "no",
        _ms(attempt.queue_wait_ms),
        _ms(attempt.execution_ms),
        attempt.outcome or attempt.state.lower(),
        error,
    ]


def _task_block(out: Console, task: TaskSummary, correlation_id: str | None) -> None:
    error = " ".join(x for x in (task.error_type, task.error) if x)
    out.print(
        Text.assemble(
            "\n",
            plain(f"task {task.task_id}", style="bold"),
            plain(f"  {task.task_name or '?'}  queue={task.queue or '?'}  final status "),
            plain(task.final_status, style="bold"),
            plain(f"  {error}" if error else ""),
            plain(f"  parent {task.parent_task_id}" if task.parent_task_id else ""),
        )
    )
    if task.published_by and task.published_by != correlation_id:
        out.print(plain(f"  published by request {task.published_by}"))
    if task.touched_by:
        out.print(plain(f"  also touched by: {', '.join(task.touched_by)}"))
    out.print(
        f"  API -> broker publish {_ms(task.publish_ms)}   queue wait {_ms(task.queue_wait_ms)}"
        f"   execution {_ms(task.execution_ms)}   retries {task.retries}"
        f"   redeliveries {task.redeliveries}   publish -> end {_ms(task.end_to_end_ms)}"
    )
    for note in task.notes:
        out.print(plain(f"  note: {note}"))
    if not task.attempts:
        # Revoked before any worker took it, or still queued: no attempts table to show.
        out.print(plain("  no attempt: no worker received it"))
        return
    table = Table(show_edge=False, pad_edge=False)
    for name in ("attempt", "worker", "pid", "retries", "redelivered", "queue wait", "execution"):
        table.add_column(name, no_wrap=True)
    table.add_column("outcome", no_wrap=True)
    table.add_column("error", overflow="fold")
    for attempt in task.attempts:
        table.add_row(*map(plain, _attempt_row(attempt)))
    out.print(table)


def render_trace(trace: Trace, page: PageInfo | None = None) -> None:
    """``taskq trace`` output: timeline (one page of it), requests, tasks, a Kibana link."""
    out = console()
    title = plain(f"correlation id {trace.correlation_id or '?'}")
    out.print(lines_table(trace.lines, title=title))
    if page is not None and page.truncated:
        more = f"; next: --offset {page.next_offset}" if page.next_offset is not None else ""
        out.print(
            plain(
                f"TRUNCATED: lines {page.offset + 1}-{page.offset + page.lines} of "
                f"{page.lines_total}, requests {page.requests} of {page.requests_total}{more}"
            )
        )
        if page.lookup_capped:
            out.print(plain(LOOKUP_CAPPED_NOTE))
    if trace.replay_of:
        out.print()
        out.print(plain(f"replay of {', '.join(trace.replay_of)} (same Idempotency-Key)"))
    if trace.requests:
        table = Table(title="HTTP requests", show_edge=False, pad_edge=False)
        columns = ("request", "status", "did", "error", "nginx", "replica", "api")
        for name in (*columns, "nginx -> api", "end to end"):
            table.add_column(name, no_wrap=True)
        for request in trace.requests:
            table.add_row(*map(plain, _request_row(request)))
        out.print()
        out.print(table)
    for task in trace.tasks:
        _task_block(out, task, trace.correlation_id)
    statuses = ", ".join(f"{t.final_status}" for t in trace.tasks) or "no task"
    out.print()
    out.print(
        plain(
            f"{len(trace.lines)} line(s), {len(trace.requests)} request(s), "
            f"{len(trace.tasks)} task(s): {statuses}"
        )
    )
    if trace.page_url:
        out.print(plain(f"Trace page: {trace.page_url}"))
    if trace.kibana_url:
        out.print(plain(f"Kibana: {trace.kibana_url}"))


def _p(p: Percentiles) -> list[str]:
    return [_ms(p.p50), _ms(p.p95), _ms(p.p99)]


def render_stats(report: StatsReport) -> None:
    """``taskq stats`` output."""
    out = console()
    since = report.since.isoformat(timespec="seconds") if report.since else "the beginning"
    until = report.until.isoformat(timespec="seconds") if report.until else "now"
    out.print(f"{report.lines:,} line(s) from {since} to {until}\n")
    status = ", ".join(f"{k} {v:,}" for k, v in report.tasks_by_status.items()) or "none"
    out.print(plain(f"tasks by final status: {status}"))
    http = ", ".join(f"{k}: {v:,}" for k, v in report.http_status.items()) or "none"
    probes = (
        f" ({report.probe_requests:,} probe(s) of taskq's own tools not counted)"
        if report.probe_requests
        else ""
    )
    out.print(plain(f"HTTP status (nginx): {http}{probes}\n"))
    table = Table(title="by task name", show_edge=False, pad_edge=False)
    columns = ("task_name", "runs", "exec p50", "exec p95", "exec p99")
    for name in (*columns, "wait p50", "wait p95", "wait p99", "retries", "failed", "redeliv."):
        table.add_column(name, no_wrap=True, justify="left" if name == "task_name" else "right")
    for row in report.by_task_name:
        table.add_row(
            plain(row.task_name),
            f"{row.executions:,}",
            *_p(row.execution_ms),
            *_p(row.queue_wait_ms),
            f"{row.retries:,}",
            f"{row.failures:,}",
            f"{row.redeliveries:,}",
        )
    out.print(table)
    busiest = Table(title="busiest correlation ids", show_edge=False, pad_edge=False)
    busiest.add_column("correlation_id", no_wrap=True)
    busiest.add_column("lines", justify="right")
    for correlation_id, count in report.busiest_correlation_ids:
        busiest.add_row(plain(correlation_id), f"{count:,}")
    out.print()
    out.print(busiest)
