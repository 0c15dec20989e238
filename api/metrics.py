"""Prometheus metrics of one API replica, served at ``GET /metrics`` on the replica.

Each uvicorn replica is its own process with its own registry (no multiprocess mode: that
mode has no custom collectors and needs its directory wiped at every start). Prometheus
scrapes every replica directly; nginx does not expose ``/metrics`` on the public port
(nginx/nginx.conf.template), so request and queue figures are not public.

* ``taskq_http_requests_total`` and ``taskq_http_request_duration_seconds`` by method,
  route template and status, from a pure-ASGI middleware inside the correlation one;
* ``taskq_task_submissions_total`` by task type and outcome (``accepted``, ``replayed``, or
  the error code: ``queue_saturated``, ``broker_unavailable``, ``validation_error``, ...);
* read from Redis at scrape time, by :class:`BrokerCollector`: ``taskq_queue_depth`` for
  every queue and kombu priority list (``name``, ``name\\x06\\x16N``), ``taskq_queue_unacked``,
  ``taskq_broker_up``, and from the breaker ``taskq_breaker_open``, its backlog and the
  level at which an open breaker closes;
* Redis's memory: ``taskq_redis_memory_used_bytes`` and ``taskq_redis_memory_max_bytes``
  (``INFO memory`` at scrape time, in the same round trip; 0: no limit), and as the breaker
  last read it ``taskq_breaker_memory_used_ratio`` (used / maxmemory),
  ``taskq_breaker_memory_shed_ratio`` (where it sheds) and ``taskq_breaker_memory_open``
  (1 while every submission is shed with 503 ``broker_memory_full``).
* prometheus_client's own ``process_*``, ``python_info`` and ``python_gc_*`` series
  (:mod:`taskq.process_metrics`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.breaker import QueueBreaker, backlog_ahead
from api.errors import ApiError
from taskq.broker.queue_depth import PRIORITY_STEPS, UNACKED_KEY, QueueDepths, priority_lists
from taskq.process_metrics import add_standard_collectors
from taskq.settings import QUEUES

METRICS_PATH = "/metrics"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass
class ApiMetrics:
    """One replica's registry and the metrics recorded during requests."""

    registry: CollectorRegistry = field(
        default_factory=lambda: add_standard_collectors(CollectorRegistry())
    )

    def __post_init__(self) -> None:
        self.requests = Counter(
            "taskq_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "taskq_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status.",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.submissions = Counter(
            "taskq_task_submissions",
            "POST /api/v1/tasks by task type and outcome (accepted, replayed or error code).",
            ["task_type", "outcome"],
            registry=self.registry,
        )

    @contextlib.contextmanager
    def counting_submission(
        self, task_type: str, known: Container[str], response: Response
    ) -> Iterator[None]:
        """Count one submission; the outcome is the error code, or accepted/replayed."""
        label = task_type if task_type in known else "unknown"
        try:
            yield
        except ApiError as exc:
            self.submissions.labels(label, exc.code).inc()
            raise
        except Exception:
            self.submissions.labels(label, "internal_error").inc()
            raise
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        self.submissions.labels(label, "replayed" if replayed else "accepted").inc()


def metrics_of(request: Request) -> ApiMetrics | None:
    """The app's metrics, if it has them."""
    metrics: ApiMetrics | None = getattr(request.app.state, "metrics", None)
    return metrics


class MetricsMiddleware:
    """Pure ASGI: counts and times every HTTP request by its route template."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            labels = (str(scope.get("method")), route, str(status["code"]))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - started)


class BrokerCollector(Collector):
    """Reads queue depths from Redis at every scrape (one pipelined round trip)."""

    def __init__(
        self,
        client: Callable[[], Redis | None],
        breaker: Callable[[], QueueBreaker | None],
        thresholds: dict[str, int],
        close_ratio: float,
        queues: Iterable[str] = QUEUES,
    ) -> None:
        self._client = client
        self._breaker = breaker
        self._thresholds = thresholds
        self._close_ratio = close_ratio
        self._queues = list(queues)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        broker_up = GaugeMetricFamily("taskq_broker_up", "1 when Redis answered this scrape.")
        depths = self._read()
        broker_up.add_metric([], 0 if depths is None else 1)
        yield broker_up
        if depths is not None:
            per_list, unacked, memory = depths
            yield from _memory_metrics(memory)
            depth = GaugeMetricFamily(
                "taskq_queue_depth",
                "Messages waiting, per queue and kombu priority list (0 is the base list).",
                labels=["queue", "priority"],
            )
            for (queue, step), count in per_list.items():
                depth.add_metric([queue, str(step)], count)
            yield depth
            yield GaugeMetricFamily(
                "taskq_queue_unacked", "Messages delivered but not acknowledged.", value=unacked
            )
            yield from self._breaker_metrics(per_list, unacked)

    def _read(self) -> tuple[dict[tuple[str, int], int], int, dict[str, Any]] | None:
        client = self._client()
        if client is None:
            return None
        pipe = client.pipeline(transaction=False)
        keys = [(q, step) for q in self._queues for step in PRIORITY_STEPS]
        for queue in self._queues:
            for name in priority_lists(queue):
                pipe.llen(name)
        pipe.hlen(UNACKED_KEY)
        pipe.info("memory")
        try:
            replies = pipe.execute()
        except (RedisError, OSError):
            return None
        memory: dict[str, Any] = replies.pop()
        counts = [int(c) for c in replies]
        return dict(zip(keys, counts[:-1], strict=True)), counts[-1], memory

    def _breaker_metrics(
        self, per_list: dict[tuple[str, int], int], unacked: int
    ) -> Iterator[GaugeMetricFamily]:
        waiting: dict[str, int] = {}
        for (queue, _), count in per_list.items():
            waiting[queue] = waiting.get(queue, 0) + count
        reading = QueueDepths(waiting=waiting, unacked=unacked)
        backlog = GaugeMetricFamily(
            "taskq_breaker_backlog",
            "Messages a new task of this queue waits behind (what the breaker compares).",
            labels=["queue"],
        )
        threshold = GaugeMetricFamily(
            "taskq_breaker_threshold", "Backlog that opens the breaker.", labels=["queue"]
        )
        closes = GaugeMetricFamily(
            "taskq_breaker_close_level",
            "Backlog under which an open breaker closes (threshold * close ratio).",
            labels=["queue"],
        )
        for queue, limit in self._thresholds.items():
            backlog.add_metric([queue], backlog_ahead(reading, queue))
            threshold.add_metric([queue], limit)
            closes.add_metric([queue], limit * self._close_ratio)
        yield backlog
        yield threshold
        yield closes
        breaker = self._breaker()
        if breaker is not None:
            state = GaugeMetricFamily(
                "taskq_breaker_open",
                "1 while the queue's breaker sheds submissions (this replica's view).",
                labels=["queue"],
            )
            for queue in self._thresholds:
                state.add_metric([queue], 1 if breaker.is_open(queue) else 0)
            yield state
            yield from _breaker_memory_metrics(breaker)


def _memory_metrics(memory: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
    """Redis's memory use and limit at scrape time."""
    yield GaugeMetricFamily(
        "taskq_redis_memory_used_bytes",
        "Redis used_memory (INFO memory) at scrape time.",
        value=int(memory.get("used_memory", 0)),
    )
    yield GaugeMetricFamily(
        "taskq_redis_memory_max_bytes",
        "Redis maxmemory at scrape time (0: no limit).",
        value=int(memory.get("maxmemory", 0)),
    )


def _breaker_memory_metrics(breaker: QueueBreaker) -> Iterator[GaugeMetricFamily]:
    """The memory breaker's state and the reading it decided on (this replica's view)."""
    yield GaugeMetricFamily(
        "taskq_breaker_memory_open",
        "1 while every submission is shed for Redis's memory (503 broker_memory_full).",
        value=1 if breaker.memory_pressure() else 0,
    )
    reading = breaker.memory_reading()
    if reading is None:
        return
    used, limit, shed_ratio = reading
    yield GaugeMetricFamily(
        "taskq_breaker_memory_shed_ratio",
        "Share of maxmemory at which the breaker sheds every submission.",
        value=shed_ratio,
    )
    if limit > 0:
        yield GaugeMetricFamily(
            "taskq_breaker_memory_used_ratio",
            "Redis used_memory / maxmemory as the breaker last read it.",
            value=used / limit,
        )


def install_metrics(app: FastAPI, metrics: ApiMetrics, collector: Collector) -> None:
    """The /metrics route (not in the OpenAPI document) and the request middleware."""
    metrics.registry.register(collector)
    app.state.metrics = metrics

    @app.get(METRICS_PATH, include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(MetricsMiddleware, metrics=metrics)


def resources_attr(app: FastAPI, name: str) -> Callable[[], Any]:
    """A getter for ``app.state.resources.<name>`` (None before the lifespan ran)."""

    def get() -> Any:
        resources = getattr(app.state, "resources", None)
        return None if resources is None else getattr(resources, name)

    return get
