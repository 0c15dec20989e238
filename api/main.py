"""The ASGI application: ``create_app()`` builds it; ``app_factory`` is uvicorn's entry.

uvicorn --factory api.main:app_factory
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis import Redis

from api.admission import AdmissionMiddleware
from api.breaker import QueueBreaker
from api.deps import ApiResources
from api.docs import install_docs
from api.errors import install_error_handlers
from api.fast_lane import SubmissionFastLane
from api.idempotency import IdempotencyStore
from api.metrics import ApiMetrics, BrokerCollector, install_metrics, resources_attr
from api.middleware import CorrelationMiddleware
from api.openapi_headers import install_openapi_headers
from api.routes import health, tasks, traces
from api.routes.ui import install_ui
from api.script_batch import ScriptBatcher
from api.search_gate import SearchGate
from api.task_records import TaskRecords
from taskq import __version__
from taskq.broker import propagation
from taskq.broker.app import create_celery_app
from taskq.broker.fast_publish import SUBMIT, MessageTemplate
from taskq.broker.queue_depth import read_depths
from taskq.logs.setup import configure_logging
from taskq.redis_clients import async_client, sync_client
from taskq.settings import QUEUES, Settings, get_settings
from taskq.tasks.types import task_types
from taskq.tracing import export as tracing_export


def build_resources(settings: Settings) -> ApiResources:
    """Connections and catalogues for one API process."""
    # Every publish carries the correlation id in its headers and writes task.published.
    propagation.connect_publisher()
    client = sync_client(
        settings.broker_url,
        socket_timeout=settings.redis_socket_timeout_s,
        # As the submission pool's, below: a reconnect to a partitioned master (readiness,
        # status reads) must not cost the whole socket timeout before Sentinel is asked again.
        socket_connect_timeout=settings.redis_connect_timeout_s,
        health_check_interval=30,
    )
    celery = create_celery_app(settings)
    types = task_types(settings.enable_drill_tasks)
    # The submission path: one bounded pool, so a herd cannot open a connection per request.
    aredis = async_client(
        settings.broker_url,
        max_connections=settings.api_max_inflight,
        timeout=settings.redis_socket_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s,
        # A SYN to a partitioned master is never answered: each reconnect while settling a
        # lost submission (api/settlement.py) would cost the whole socket timeout, and the
        # settlement's bound would pass before it reached the promoted master.
        socket_connect_timeout=settings.redis_connect_timeout_s,
    )
    return ApiResources(
        settings=settings,
        celery=celery,
        redis=client,
        records=TaskRecords(client, settings.result_expires_s),
        task_types=types,
        breaker=_build_breaker(settings, client),
        idempotency=IdempotencyStore(
            client, settings.idempotency_ttl_s, settings.idempotency_lock_s
        ),
        aredis=aredis,
        submit_script=ScriptBatcher(
            aredis, SUBMIT, settings.redis_wait_replicas, settings.redis_wait_timeout_ms
        ),
        templates={t.celery_name: MessageTemplate(celery, t.celery_name) for t in types.values()},
    )


def _build_breaker(settings: Settings, client: Redis) -> QueueBreaker | None:
    if not settings.breaker_enabled:
        return None
    return QueueBreaker(
        lambda: read_depths(client, QUEUES, memory=True),
        settings.breaker_thresholds,
        close_ratio=settings.breaker_close_ratio,
        cache_s=settings.breaker_cache_s,
        memory_ratio=settings.breaker_memory_ratio,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app. Connections are made in the lifespan, not here."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = build_resources(settings)
        resources.search_gate = SearchGate(settings.search_slots, retry_after_s=1)
        app.state.resources = resources
        try:
            yield
        finally:
            resources.redis.close()
            if resources.aredis is not None:
                await resources.aredis.aclose()
            tracing_export.shutdown()

    app = FastAPI(
        title="taskq",
        version=__version__,
        description="Submit risk computations and follow them by task id or correlation id.",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry hooks asked the global providers (and os.environ)
        # on every request, about 7% of a submission's time; taskq traces with its log lines
        # and counts with Prometheus (api/metrics.py), so they stay off.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # Served from local files by install_docs: FastAPI's own pages load a CDN.
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(tasks.router)
    app.include_router(traces.router)
    install_ui(app)
    install_docs(app)
    install_openapi_headers(app)
    collector = BrokerCollector(
        resources_attr(app, "redis"),
        resources_attr(app, "breaker"),
        settings.breaker_thresholds,
        settings.breaker_close_ratio,
    )
    # Innermost: well-formed submissions skip FastAPI's routing and dependency machinery.
    app.add_middleware(SubmissionFastLane, fastapi=app)
    # Inside the metrics middleware, so shed requests are counted like any other answer.
    app.add_middleware(
        AdmissionMiddleware,
        max_inflight=settings.api_max_inflight,
        queue_budget_ms=settings.api_queue_budget_ms,
        max_followup_inflight=settings.api_max_followup_inflight,
    )
    install_metrics(app, ApiMetrics(), collector)
    # Added last, so it wraps every other middleware: even a 500 carries X-Request-ID.
    app.add_middleware(CorrelationMiddleware)
    return app


def app_factory() -> FastAPI:
    """uvicorn's entry point: configure JSON logging, then build the app."""
    settings = get_settings()
    configure_logging(
        service=settings.service_name,
        node=settings.node_name or f"api-{os.getpid()}",
        level=settings.log_level,
        log_file=settings.log_file,
    )
    tracing_export.configure_tracing(settings.service_name)
    return create_app(settings)
