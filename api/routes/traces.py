"""/api/v1/traces: the journey of one request, as ``taskq trace --json`` shows it.

A plain ``def`` handler: the lookup reads files and SQLite (or calls Elasticsearch), which
would block the event loop in an ``async def``. The first lookup over a large log
directory builds the index and may take seconds; later ones read only what was appended.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Path

from api.auth import ApiKeyDep
from api.deps import ResourcesDep
from api.errors import ApiError
from api.schemas import ErrorBody
from taskq.correlation import ID_PATTERN
from taskq.search.kibana import trace_url
from taskq.search.store.base import LogStoreError
from taskq.search.store.config import INDEX_FILE_NAME, StoreConfig
from taskq.search.store.factory import open_store
from taskq.search.trace.build import find_trace
from taskq.settings import Settings

# Traces expose request details: the same API keys as the task routes guard them.
router = APIRouter(prefix="/api/v1/traces", tags=["traces"], dependencies=[ApiKeyDep])

# The X-Request-ID rule (taskq/correlation.py; nginx's map uses the same expression).
CorrelationIdPath = Path(pattern=f"^{ID_PATTERN}$")
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (404, 422, 503)}


def store_config(settings: Settings) -> StoreConfig:
    """The backend from the environment; the embedded one over this stack's log dir."""
    config = StoreConfig.from_env()
    if config.backend != "duckdb":
        return config
    return replace(
        config,
        log_dir=settings.resolved_log_dir,
        index_path=settings.var_dir / "run" / INDEX_FILE_NAME,
    )


@router.get("/{correlation_id}", responses=_ERRORS)
def get_trace(resources: ResourcesDep, correlation_id: str = CorrelationIdPath) -> dict[str, Any]:
    """Timeline (``lines``, oldest first), paired HTTP ``requests``, per-task summaries
    with their attempts, and ``end_to_end_ms``; 404 ``trace_not_found`` if no line matches."""
    try:
        store = open_store(store_config(resources.settings))
        try:
            trace = find_trace(store, correlation_id)
        finally:
            store.close()
    except LogStoreError as exc:
        raise ApiError(
            503, "log_store_unavailable", f"The logs cannot be searched: {exc}"
        ) from None
    if trace is None:
        raise ApiError(404, "trace_not_found", "No log line carries this correlation id.")
    if resources.settings.kibana_url:
        trace.kibana_url = trace_url(resources.settings.kibana_url, correlation_id)
    return trace.to_json()
