"""W3C Trace Context and OpenTelemetry spans for every hop of a request.

Invariant: every line and every span of one request carries one ``trace.id``. Ids exist
whether or not spans are exported (:mod:`taskq.tracing.context` makes them); the SDK is
loaded only when ``OTEL_TRACES_EXPORTER`` names an exporter (:mod:`taskq.tracing.export`).
"""
