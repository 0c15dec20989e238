"""Spans without an exporter: ids made and bound, nothing else; the export settings."""

from __future__ import annotations

import pytest

from taskq.tracing import export
from taskq.tracing.context import TraceParent, span_id_var, trace_id_var, trace_state_var
from taskq.tracing.spans import Kind, begin_span

PARENT = TraceParent("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01", "rojo=1")


def test_a_child_continues_the_trace_and_is_bound_until_it_ends() -> None:
    assert export.tracer() is None  # no exporter in the unit tests: no SDK
    span = begin_span("process high", Kind.CONSUMER, PARENT)
    assert span.trace_id == PARENT.trace_id and span.span_id != PARENT.span_id
    assert (trace_id_var.get(), span_id_var.get()) == (span.trace_id, span.span_id)
    assert trace_state_var.get() == "rojo=1" == span.state
    assert span.traceparent() == f"00-{PARENT.trace_id}-{span.span_id}-01"
    span.end()
    span.end()  # idempotent
    assert (trace_id_var.get(), span_id_var.get(), trace_state_var.get()) == (None, None, None)


def test_chosen_ids_are_taken_and_unbound_spans_leave_the_context_alone() -> None:
    root = begin_span("POST", Kind.SERVER, None, trace_id="a" * 32, span_id="b" * 16, bind=False)
    assert (root.trace_id, root.span_id) == ("a" * 32, "b" * 16)
    assert trace_id_var.get() is None
    root.end()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", []), ("none", []), ("otlp", ["otlp"]), (" OTLP , console ", ["otlp", "console"])],
)
def test_exporters_by_the_standard_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", value)
    assert export.exporters_from_env() == expected


def test_an_unknown_exporter_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    with pytest.raises(export.TracingConfigError, match="unsupported jaeger"):
        export.exporters_from_env()


def test_export_off_builds_no_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert export.configure_tracing("api") is False
    assert export.tracer() is None
