"""/api/v1/traces: the journey of one request, as ``taskq trace --json`` shows it.

The lookup reads files and SQLite (or calls Elasticsearch): it runs on the search gate's own
threads (:mod:`api.search_gate`), so a slow or inflated trace never holds up the probes,
the status polls or the submissions. An answer is one page of the timeline
(:mod:`taskq.search.trace.page`); with API keys on, it holds only the caller's lines
(:mod:`taskq.search.store.tenant`), and a trace with none of them is a 404.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api.auth import ApiKeyDep, CallerDep
from api.deps import ApiResources, ResourcesDep
from api.errors import ApiError
from api.schemas import ErrorBody
from api.search_gate import SearchGate
from taskq.correlation import ID_PATTERN
from taskq.logs.schema import ShedCode
from taskq.search.kibana import trace_url
from taskq.search.store.base import LogStore, LogStoreError
from taskq.search.store.config import INDEX_FILE_NAME, StoreConfig
from taskq.search.store.factory import open_store
from taskq.search.store.tenant import TenantStore
from taskq.search.trace.build import find_trace
from taskq.search.trace.page import page_of
from taskq.settings import Settings
from taskq.tenants import Caller

# Traces expose request details: the same API keys as the task routes guard them.
router = APIRouter(prefix="/api/v1/traces", tags=["traces"], dependencies=[ApiKeyDep])

# The X-Request-ID rule (taskq/correlation.py; nginx's map uses the same expression).
CorrelationIdPath = Path(pattern=f"^{ID_PATTERN}$")
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (404, 422, 503)}


def store_config(settings: Settings) -> StoreConfig:
    """The backend from the environment; the embedded one over this stack's log dir."""
    config = replace(
        StoreConfig.from_env(),
        lookup_max_lines=settings.trace_lookup_max_lines,
        lookup_max_bytes=settings.trace_lookup_max_bytes,
    )
    if config.backend != "duckdb":
        return config
    return replace(
        config,
        log_dir=settings.resolved_log_dir,
        index_path=settings.var_dir / "run" / INDEX_FILE_NAME,
    )


def open_for(settings: Settings, caller: Caller | None) -> LogStore:
    """The log store as ``caller`` may see it: everything for an admin or with keys off."""
    store = open_store(store_config(settings))
    if caller is None or caller.admin:
        return store
    return TenantStore(store, caller.key_id)


def require_gate(resources: ApiResources) -> SearchGate:
    """The process's search gate (built in the lifespan)."""
    if resources.search_gate is None:
        raise RuntimeError("the API's resources have no search gate")
    return resources.search_gate


@router.get("/{correlation_id}", responses=_ERRORS)
async def get_trace(
    resources: ResourcesDep,
    caller: CallerDep,
    correlation_id: str = CorrelationIdPath,
    offset: Annotated[int, Query(ge=0, description="First timeline line of the page.")] = 0,
) -> dict[str, Any]:
    """Timeline (``lines``, oldest first), paired HTTP ``requests``, per-task summaries
    with their attempts, and ``end_to_end_ms``; 404 ``trace_not_found`` if no line matches
    (or none is the caller's). ``page`` says what this answer holds: at most
    ``TASKQ_TRACE_MAX_LINES`` lines and ``TASKQ_TRACE_MAX_BYTES`` of them; when
    ``page.truncated``, ask again with ``?offset=page.next_offset`` for the next lines.
    503 ``search_busy`` when every lookup slot of this replica is taken."""
    settings = resources.settings

    def lookup() -> dict[str, Any]:
        try:
            store = open_for(settings, caller)
            try:
                trace = find_trace(store, correlation_id)
            finally:
                store.close()
        except LogStoreError as exc:
            raise ApiError(
                503, ShedCode.LOG_STORE_UNAVAILABLE, f"The logs cannot be searched: {exc}"
            ) from None
        if trace is None:
            raise ApiError(404, "trace_not_found", "No log line carries this correlation id.")
        if settings.kibana_url:
            trace.kibana_url = trace_url(settings.kibana_url, correlation_id)
        page, info = page_of(trace, offset, settings.trace_max_lines, settings.trace_max_bytes)
        return {**page.to_json(), "page": info.to_json()}

    result: dict[str, Any] = await require_gate(resources).run(lookup)
    return result
