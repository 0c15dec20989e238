"""The OpenTelemetry SDK, configured by the standard variables only, or not at all.

Invariant: with ``OTEL_TRACES_EXPORTER`` unset or ``none`` no SDK object exists: no
TracerProvider, no span processor, no exporter thread; spans cost nothing and ids are
still made (:mod:`taskq.tracing.spans`). Otherwise the SDK reads its own variables:
``OTEL_SERVICE_NAME`` (the resource), ``OTEL_TRACES_SAMPLER``/``_ARG`` (the sampler),
``OTEL_EXPORTER_OTLP_ENDPOINT``/``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` and the
``OTEL_BSP_*`` batch settings; ``OTEL_EXPORTER_OTLP_PROTOCOL`` must be ``http/protobuf``
(the one protocol installed; the SDK specification's default).
"""

from __future__ import annotations

import os
import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.id_generator import IdGenerator
    from opentelemetry.trace import Tracer

EXPORTERS = frozenset({"otlp", "console", "none"})
PROTOCOL = "http/protobuf"
TRACER_NAME = "taskq"

#: Ids a span about to start must take (the id that the lines of its hop already carry):
#: read once by :class:`ChosenIdGenerator`, set by :func:`taskq.tracing.spans.begin_span`.
chosen_span_id: ContextVar[int | None] = ContextVar("chosen_span_id", default=None)
chosen_trace_id: ContextVar[int | None] = ContextVar("chosen_trace_id", default=None)

_provider: TracerProvider | None = None
_tracer: Tracer | None = None
_lock = threading.Lock()


class TracingConfigError(ValueError):
    """An OTEL_* variable names something this installation cannot do."""


def exporters_from_env() -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (comma-separated, per the SDK
    specification's environment variables); empty when tracing export is off."""
    raw = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = sorted(set(names) - EXPORTERS)
    if unknown:
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER: unsupported {', '.join(unknown)}")
    return [n for n in names if n != "none"]


def configure_tracing(default_service_name: str) -> bool:
    """Build the SDK when an exporter is named; True when spans are exported. Idempotent."""
    global _provider, _tracer
    names = exporters_from_env()
    if not names:
        return False
    with _lock:
        if _provider is not None:
            return True
        _provider = _build_provider(default_service_name, names)
        _tracer = _provider.get_tracer(TRACER_NAME)
    return True


def _build_provider(default_service_name: str, names: list[str]) -> TracerProvider:
    # Imported here: a process without an exporter never loads the SDK.
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (which wins).
    resource = Resource.create({"service.name": default_service_name})
    # The sampler is the SDK's default: OTEL_TRACES_SAMPLER (parentbased_always_on unset).
    provider = TracerProvider(resource=resource, id_generator=_chosen_id_generator())
    for name in names:
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        else:
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
    trace.set_tracer_provider(provider)
    return provider


def _otlp_exporter() -> SpanExporter:
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    if protocol.strip() not in ("", PROTOCOL):
        raise TracingConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL: only {PROTOCOL} is installed")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # The exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT/HEADERS/TIMEOUT itself.
    return OTLPSpanExporter()


def _chosen_id_generator() -> IdGenerator:
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class ChosenIdGenerator(RandomIdGenerator):
        """The SDK's random ids, except a span id (or a root's trace id) chosen beforehand:
        the worker's main process names an attempt's span before the pool child starts
        it, and an API replica takes the span id nginx wrote on its line."""

        def generate_span_id(self) -> int:
            return chosen_span_id.get() or super().generate_span_id()

        def generate_trace_id(self) -> int:
            return chosen_trace_id.get() or super().generate_trace_id()

    return ChosenIdGenerator()


def tracer() -> Tracer | None:
    """The SDK tracer, or None when nothing is exported."""
    return _tracer


def flush(timeout_ms: int = 5000) -> None:
    """Export what is batched (a pool child about to exit, an API replica stopping)."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def shutdown() -> None:
    """Flush and stop the exporter threads."""
    if _provider is not None:
        _provider.shutdown()
