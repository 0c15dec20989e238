"""Shared resources of the API and their dependency aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from redis import Redis

from api.breaker import QueueBreaker
from api.idempotency import IdempotencyStore
from api.task_records import TaskRecords
from taskq.settings import Settings
from taskq.tasks.types import TaskType


@dataclass
class ApiResources:
    """Everything a request handler needs, built once per process in the lifespan."""

    settings: Settings
    celery: Celery
    redis: Redis
    records: TaskRecords
    task_types: dict[str, TaskType]
    #: None when the breaker is disabled (``TASKQ_BREAKER_ENABLED=false``).
    breaker: QueueBreaker | None = None
    #: None: Idempotency-Key headers are validated but not honoured.
    idempotency: IdempotencyStore | None = None


def get_resources(request: Request) -> ApiResources:
    """The process's :class:`ApiResources`."""
    resources: ApiResources = request.app.state.resources
    return resources


ResourcesDep = Annotated[ApiResources, Depends(get_resources)]
