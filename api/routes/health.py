"""Liveness (/healthz) and readiness (/readyz)."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ApiResources, ResourcesDep
from api.errors import error_response
from api.schemas import ErrorBody, Health

router = APIRouter(tags=["health"])

WORKER_PING_TIMEOUT_S = 1.0


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive and serving; says nothing about dependencies."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": ErrorBody}})
def readyz(resources: ResourcesDep) -> Health | JSONResponse:
    """Redis answers and at least one worker replies to a ping; 503 names what is missing."""
    cache = resources.readiness
    if not cache.fresh(resources.settings.readiness_cache_s):
        cache.checks = _run_checks(resources)
        cache.checked_at = time.monotonic()
    checks = dict(cache.checks)
    if all(value == "ok" for value in checks.values()):
        return Health(status="ok", checks=checks)
    failing = ", ".join(f"{name}: {value}" for name, value in checks.items() if value != "ok")
    return error_response(503, "not_ready", f"Not ready ({failing}).", checks, {"Retry-After": "5"})


def _run_checks(resources: ApiResources) -> dict[str, str]:
    checks = {"redis": "ok", "workers": "ok"}
    try:
        resources.redis.ping()
    except Exception:  # any failure means "not ready", whatever raised it
        checks["redis"] = "unreachable"
        checks["workers"] = "unknown"
        return checks
    try:
        replies = resources.celery.control.ping(timeout=WORKER_PING_TIMEOUT_S)
    except Exception:
        replies = []
    if not replies:
        checks["workers"] = "none answering"
    return checks
