"""Liveness (/healthz) and readiness (/readyz)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ResourcesDep
from api.errors import error_response
from api.schemas import ErrorBody, Health
from taskq.broker import readiness
from taskq.logs.schema import ShedCode

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive and serving; says nothing about dependencies."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": ErrorBody}})
def readyz(resources: ResourcesDep) -> Health | JSONResponse:
    """Redis answers, a worker's consumer beat recently and Redis is not near its memory
    limit; 503 names what is missing.

    The verdict is read from Redis on every call (one round trip, see
    :mod:`taskq.broker.readiness`), so every replica gives the same answer at the same moment.
    """
    settings = resources.settings
    checks = readiness.check(resources.redis, settings.worker_beat_s, settings.breaker_memory_ratio)
    if all(value == "ok" for value in checks.values()):
        return Health(status="ok", checks=checks)
    failing = ", ".join(f"{name}: {value}" for name, value in checks.items() if value != "ok")
    return error_response(
        503, ShedCode.NOT_READY, f"Not ready ({failing}).", checks, {"Retry-After": "1"}
    )
