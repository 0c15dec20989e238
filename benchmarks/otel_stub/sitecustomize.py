"""Benchmark-only: with ``TASKQ_BENCH_NO_OTEL=1`` on ``PYTHONPATH``, taskq runs with its
spans stubbed out (no ids drawn, nothing bound, no SDK): the "no OpenTelemetry at all"
baseline the tracing benchmarks compare export-off and export-on against. Never used by
the stack itself."""

from __future__ import annotations

import os

if os.environ.get("TASKQ_BENCH_NO_OTEL") == "1":
    from typing import Any

    from taskq.tracing import spans

    def _stub(*_: Any, **__: Any) -> spans.ActiveSpan:
        # Constant ids, never bound: the code around the spans still runs as it would.
        return spans.ActiveSpan("0" * 31 + "1", "0" * 15 + "1", "01")

    # Before any module imports the name: taskq.tracing.messaging, api.server_span.
    spans.begin_span = _stub  # type: ignore[assignment]
