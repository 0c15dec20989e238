"""Shared resources of the API and their dependency aliases."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from api.breaker import QueueBreaker
from api.idempotency import IdempotencyStore
from api.script_batch import ScriptBatcher
from api.search_gate import SearchGate
from api.task_records import TaskRecords
from taskq.broker.fast_publish import MessageTemplate
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
    #: The submission path's client (event loop) and its one-round-trip script.
    aredis: AsyncRedis | None = None
    submit_script: ScriptBatcher | None = None
    #: Celery message templates by Celery task name.
    templates: dict[str, MessageTemplate] = field(default_factory=dict)
    #: Bounded capacity of trace and search lookups (built in the event loop).
    search_gate: SearchGate | None = None


async def get_resources(request: Request) -> ApiResources:
    """The process's :class:`ApiResources` (``async``: no thread hop for a dict lookup)."""
    resources: ApiResources = request.app.state.resources
    return resources


ResourcesDep = Annotated[ApiResources, Depends(get_resources)]
