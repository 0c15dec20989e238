"""/ui: the trace explorer, server-rendered HTML over the trace model.

Two kinds of route:
- the **pages** (``/ui/``, ``/ui/traces/{id}``, ``/ui/tasks/{id}``, ``/ui/traces/{id}/lines/{ref}``)
  are one static shell, carrying no data, so they need no key: a browser navigation cannot
  send a header;
- the **fragments** (the same paths under ``/ui/fragments``) are the rendered views; the
  shell's script fetches the one of its URL with the API key kept in ``sessionStorage``
  (``X-API-Key``), so keys are guarded exactly like ``/api/v1/traces`` and never appear in
  a URL. Without keys configured it all works without asking.

The fragments run on the search gate (:mod:`api.search_gate`: bounded, 503 when full),
read the logs as the caller may see them (:func:`api.routes.traces.open_for`: with API keys
on, only its own lines, searches and tasks) and show one page of a trace's timeline
(:mod:`taskq.search.trace.page`), with a marker and a link to the next page.

Everything from the logs reaches the HTML through Jinja2's autoescaping, and the pages'
Content-Security-Policy allows only this origin's own script and styles, so a hostile
``X-Request-ID`` or error message is text, never markup. Handlers are plain ``def``: the
lookups read files (see :mod:`api.routes.traces`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path as FsPath
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, FastAPI, Path, Query
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from api.auth import API_KEY_HEADER, ApiKeyDep, CallerDep
from api.deps import ApiResources, ResourcesDep
from api.errors import ApiError
from api.middleware import ERROR_CODE_HEADER
from api.routes.traces import open_for, require_gate
from taskq.correlation import ID_PATTERN
from taskq.logs.schema import ShedCode
from taskq.search.explorer.lookup import QueryError, parse_query, run_query
from taskq.search.explorer.refs import REF_PATTERN, find_line, line_ref
from taskq.search.explorer.waterfall import build_waterfall, seconds
from taskq.search.kibana import query_url, trace_url
from taskq.search.plain import escape_controls
from taskq.search.store.base import (
    TASK_SEARCHES,
    LogStore,
    LogStoreError,
    UnsupportedQueryError,
)
from taskq.search.trace.build import find_trace, find_trace_by_task
from taskq.search.trace.model import Trace
from taskq.search.trace.page import page_of
from taskq.settings import Settings
from taskq.tenants import Caller

UI_DIR = FsPath(__file__).resolve().parent.parent / "ui"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline';"
    " img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none';"
    " frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: Lines shown before and after a line, from the same process.
SURROUNDING = 5
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

CorrelationId = Annotated[str, Path(pattern=f"^{ID_PATTERN}$")]
TaskId = Annotated[str, Path(pattern=f"^{_UUID}$")]
LineRef = Annotated[str, Path(pattern=f"^{REF_PATTERN}$")]


def utc(value: datetime | None) -> str:
    """``2026-11-22 10:00:01.015 +00:00``: UTC, with the offset shown."""
    if value is None:
        return "?"
    text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f"{text} +00:00"


def pct(fraction: float) -> str:
    """A fraction of the axis as a CSS percentage (numbers only: safe in a style)."""
    return f"{max(0.0, min(float(fraction), 1.0)) * 100:.3f}%"


def pretty(line: object) -> str:
    return orjson.dumps(line, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def _shown(value: object) -> object:
    # Markup (macro output, already escaped) is the templates' own HTML: left alone.
    if isinstance(value, str) and not isinstance(value, Markup):
        return escape_controls(value, keep="\n\t")
    return value


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(UI_DIR / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        # Control characters of log values are shown escaped; newlines and tabs stay, the
        # pretty-printed JSON of a line needs them.
        finalize=_shown,
    )
    env.filters.update(utc=utc, pct=pct, pretty=pretty, seconds=seconds, ref=line_ref)
    env.globals.update(searches=TASK_SEARCHES, key_header=API_KEY_HEADER)
    return env


TEMPLATES = _environment()


def render(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = TEMPLATES.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


pages = APIRouter(prefix="/ui", include_in_schema=False)
fragments = APIRouter(prefix="/ui/fragments", include_in_schema=False, dependencies=[ApiKeyDep])


@pages.get("")
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=308)


@pages.get("/")
@pages.get("/traces/{correlation_id}")
@pages.get("/tasks/{task_id}")
@pages.get("/traces/{correlation_id}/lines/{ref}")
def shell() -> HTMLResponse:
    """The page; its script loads the view of this URL from ``/ui/fragments``."""
    return render("shell.html")


class _Store:
    """The log store of one request as its caller may see it, closed afterwards."""

    def __init__(self, settings: Settings, caller: Caller | None) -> None:
        self.settings = settings
        self.caller = caller
        self.store: LogStore | None = None

    def __enter__(self) -> LogStore:
        self.store = open_for(self.settings, self.caller)
        return self.store

    def __exit__(self, *exc: object) -> None:
        if self.store is not None:
            self.store.close()


def _failure(exc: LogStoreError, settings: Settings, kql: str | None = None) -> HTMLResponse:
    unsupported = isinstance(exc, UnsupportedQueryError)
    kibana = query_url(settings.kibana_url, kql) if settings.kibana_url and kql else None
    response = render(
        "error.html",
        status=501 if unsupported else 503,
        title="Not available with this backend" if unsupported else "The logs cannot be read",
        message=str(exc),
        kibana=kibana,
    )
    if not unsupported:
        # The access line's error.type, as for the JSON API's 503 (api/middleware.py).
        response.headers[ERROR_CODE_HEADER] = ShedCode.LOG_STORE_UNAVAILABLE
    return response


Offset = Annotated[int, Query(ge=0)]


async def _gated(resources: ApiResources, view: Callable[[], HTMLResponse]) -> HTMLResponse:
    """``view()`` on the search gate; a full gate is the error page with its 503."""
    try:
        return await require_gate(resources).run(view)
    except ApiError as exc:
        if exc.status_code != 503:
            raise
        response = render("error.html", 503, title="Busy", message=exc.message)
        response.headers.update(exc.headers or {})
        response.headers[ERROR_CODE_HEADER] = exc.code
        return response


@fragments.get("/")
async def search_fragment(
    resources: ResourcesDep,
    caller: CallerDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[str | None, Query(max_length=40)] = None,
) -> HTMLResponse:
    """The search form and, for a query, its results (newest first; the caller's own)."""
    return await _gated(resources, lambda: _search(resources.settings, caller, q, status))


def _search(
    settings: Settings, caller: Caller | None, q: str | None, status: str | None
) -> HTMLResponse:
    try:
        query = parse_query(q, status)
    except QueryError as exc:
        return render("search.html", status=422, q=q, status_=status, error=str(exc))
    if query is None:
        return render("search.html", q=q, status_=status)
    kibana = query_url(settings.kibana_url, query.kql) if settings.kibana_url else None
    try:
        with _Store(settings, caller) as store:
            results = run_query(store, query)
    except LogStoreError as exc:
        return _failure(exc, settings, query.kql)
    return render("search.html", q=q, status_=status, results=results, kibana=kibana)


def _trace_view(trace: Trace, settings: Settings, offset: int) -> HTMLResponse:
    kibana = (
        trace_url(settings.kibana_url, trace.correlation_id)
        if (settings.kibana_url and trace.correlation_id)
        else None
    )
    page, info = page_of(trace, offset, settings.trace_max_lines, settings.trace_max_bytes)
    return render(
        "trace.html",
        trace=page,
        page=info,
        waterfall=build_waterfall(page),
        kibana=kibana,
    )


@fragments.get("/traces/{correlation_id}")
async def trace_fragment(
    resources: ResourcesDep, caller: CallerDep, correlation_id: CorrelationId, offset: Offset = 0
) -> HTMLResponse:
    """Verdict, waterfall, exchanges, tasks and one page of the timeline of one
    correlation id."""
    return await _gated(
        resources,
        lambda: _trace_page(
            resources.settings,
            caller,
            lambda store: find_trace(store, correlation_id),
            f"No log line carries the correlation id {correlation_id}.",
            offset,
        ),
    )


@fragments.get("/tasks/{task_id}")
async def task_fragment(
    resources: ResourcesDep, caller: CallerDep, task_id: TaskId, offset: Offset = 0
) -> HTMLResponse:
    """The trace of the request that published ``task_id``."""
    return await _gated(
        resources,
        lambda: _trace_page(
            resources.settings,
            caller,
            lambda store: find_trace_by_task(store, task_id.lower()),
            f"No log line carries the task id {task_id}.",
            offset,
        ),
    )


def _trace_page(
    settings: Settings,
    caller: Caller | None,
    lookup: Callable[[LogStore], Trace | None],
    missing: str,
    offset: int,
) -> HTMLResponse:
    try:
        with _Store(settings, caller) as store:
            trace = lookup(store)
    except LogStoreError as exc:
        return _failure(exc, settings)
    if trace is None:
        return render("error.html", 404, title="Not found", message=missing)
    return _trace_view(trace, settings, offset)


@fragments.get("/traces/{correlation_id}/lines/{ref}")
async def line_fragment(
    resources: ResourcesDep,
    caller: CallerDep,
    correlation_id: CorrelationId,
    ref: LineRef,
    n: Annotated[int, Query(ge=1, le=50)] = SURROUNDING,
) -> HTMLResponse:
    """One line of a trace in full, and the lines its process wrote around it."""
    return await _gated(
        resources, lambda: _line(resources.settings, caller, correlation_id, ref, n)
    )


def _line(
    settings: Settings, caller: Caller | None, correlation_id: str, ref: str, n: int
) -> HTMLResponse:
    try:
        with _Store(settings, caller) as store:
            trace = find_trace(store, correlation_id)
            line = find_line(trace.lines, ref) if trace is not None else None
            if line is None:
                return render(
                    "error.html",
                    404,
                    title="Not found",
                    message=("This line is not part of the trace (any more)."),
                )
            try:
                around = store.surrounding(line, n)
                unavailable = None
            except UnsupportedQueryError as exc:
                around, unavailable = None, str(exc)
    except LogStoreError as exc:
        return _failure(exc, settings)
    return render(
        "line.html",
        correlation_id=correlation_id,
        line=line,
        around=around,
        unavailable=unavailable,
        n=n,
        kibana=trace_url(settings.kibana_url, correlation_id) if settings.kibana_url else None,
    )


def install_ui(app: FastAPI) -> None:
    """The explorer's pages, fragments and static files (its own JavaScript and CSS)."""
    app.include_router(pages)
    app.include_router(fragments)
    app.mount("/ui/static", StaticFiles(directory=UI_DIR / "static"), name="ui-static")
