"""W3C trace context end to end, with spans exported over OTLP/HTTP to a real endpoint.

The independent truths: the client's own ``traceparent`` (its trace id and span id), what
the OTLP endpoint decoded (official opentelemetry-proto messages), and every JSON line of
nginx, the API replicas, the workers (Celery's own lines included) and beat.
"""

from __future__ import annotations

import json
import os
import re
import signal
import uuid
from collections.abc import Callable, Iterator

import pytest

from taskq.faults import inject
from taskq.tracing.context import new_span_id, new_trace_id
from tests.integration.conftest import stack_settings, start_stack, stop_stack
from tests.integration.otlp_receiver import ReceivedSpan, Receiver, otlp_receiver
from tests.integration.stack_client import Line, RunningStack, events_of, run_taskq

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")
Traced = tuple[RunningStack, Receiver]
#: W3C Trace Context section 3.3.1.3's own example members.
TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    """A stack whose API replicas, workers and beat export to a receiver of this test."""
    with otlp_receiver() as receiver, pytest.MonkeyPatch.context() as env:
        env.setenv("OTEL_TRACES_EXPORTER", "otlp")
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        env.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
        env.delenv("OTEL_SERVICE_NAME", raising=False)
        env.setenv("NO_PROXY", "127.0.0.1,localhost")
        running = start_stack(stack_settings(tmp_path_factory.mktemp("otel")))
        try:
            yield running, receiver
        finally:
            stop_stack(running)


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = new_trace_id(), new_span_id()
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _submit(stack: RunningStack, task_type: str, data: dict[str, object], **headers: str) -> str:
    answer = stack.submit(task_type, data, "high", headers)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["task_id"])


def _lines_of(stack: RunningStack, correlation_id: str, until: object) -> list[Line]:
    return stack.wait_for_lines(
        lambda x: x.get("correlation_id") == correlation_id,
        until,  # type: ignore[arg-type]
        timeout_s=30.0,
    )


def _journey_complete(found: list[Line], succeeded: int = 1) -> bool:
    services = {x["service.name"] for x in found}
    api_events = set(events_of([x for x in found if x["service.name"] == "api"]))
    return (
        {"nginx", "api", "worker"} <= services
        and {"http.request.completed", "task.published"} <= api_events
        and events_of(found).count("task.succeeded") >= succeeded
    )


def _assert_one_trace(lines: list[Line], trace_id: str) -> None:
    wrong = [(x["service.name"], x["event.action"], x.get("trace.id")) for x in lines]
    assert all(x.get("trace.id") == trace_id for x in lines), wrong
    missing = [(x["service.name"], x["event.action"]) for x in lines if not x.get("span.id")]
    assert not missing, missing


def _by_kind(spans: list[ReceivedSpan], kind: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.kind == kind]


def _every_line_exported(
    lines: list[Line], lost: frozenset[str] = frozenset()
) -> Callable[[list[ReceivedSpan]], bool]:
    """A wait condition: every span the lines name (but the ``lost``) has arrived. Each
    process exports its own spans on its own schedule, so one kind having arrived says
    nothing of the others."""
    named = {str(x["span.id"]) for x in lines} - lost
    return lambda spans: named <= {s.span_id for s in spans}


def _lines_name_exported_spans(
    lines: list[Line], spans: list[ReceivedSpan], lost: frozenset[str] = frozenset()
) -> None:
    """Each line's span.id is a span that was exported (nginx's is the API's server span),
    except the ``lost`` attempts: a SIGKILL ended them, their span died with the process."""
    exported = {s.span_id for s in spans}
    for line in lines:
        if line["span.id"] not in lost:
            assert line["span.id"] in exported, (line["service.name"], line["event.action"])


def test_client_trace_runs_through_every_hop_and_retry(traced: Traced) -> None:
    stack, receiver = traced
    header, trace_id, client_span = _traceparent()
    correlation_id = f"otel-retry-{uuid.uuid4().hex[:8]}"
    task_id = _submit(
        stack,
        "drill_flaky",
        {"fail_times": 2},
        traceparent=header,
        tracestate=TRACESTATE,
        **{"X-Request-ID": correlation_id},
    )
    assert stack.wait_for_task(task_id)["status"] == "SUCCESS"
    lines = _lines_of(
        stack,
        correlation_id,
        lambda f: _journey_complete(f) and events_of(f).count("task.retry") >= 2,
    )
    _assert_one_trace(lines, trace_id)
    nginx = [x for x in lines if x["service.name"] == "nginx"]
    assert len(nginx) == 1 and nginx[0]["trace_context_source"] == "client"
    (api_request,) = [
        x
        for x in lines
        if x["service.name"] == "api" and x["event.action"] == "http.request.completed"
    ]
    assert api_request["trace_context_source"] == "client"
    # Celery's own lines (rewritten, written by the worker's main process and pool) join.
    assert {"task.received", "task.retry", "task.succeeded"} <= set(events_of(lines))

    exported = _every_line_exported(lines)
    spans = receiver.wait_for(
        trace_id,
        lambda s: (
            len(_by_kind(s, "CONSUMER")) >= 3
            and len(_by_kind(s, "PRODUCER")) >= 3
            and len(_by_kind(s, "SERVER")) == 1
            and exported(s)
        ),
    )
    (server,) = _by_kind(spans, "SERVER")
    assert server.parent_span_id == client_span and server.service == "api"
    assert server.name == "POST /api/v1/tasks"
    assert server.span_id == nginx[0]["span.id"]  # nginx's line names the same exchange
    by_id = {s.span_id: s for s in spans}
    producers, consumers = _by_kind(spans, "PRODUCER"), _by_kind(spans, "CONSUMER")
    assert all(p.name == "publish high" for p in producers)
    assert all(c.name == "process high" and c.service == "worker" for c in consumers)
    assert all(c.attributes["messaging.operation.name"] == "process" for c in consumers)
    # The API's publish is the request's child; each attempt is a publish's child; each
    # retry is published from inside the attempt before it.
    api_publish = [p for p in producers if p.parent_span_id == server.span_id]
    assert len(api_publish) == 1 and api_publish[0].service == "api"
    for consumer in consumers:
        assert by_id[consumer.parent_span_id].kind == "PRODUCER"
    for retry in [p for p in producers if p is not api_publish[0]]:
        assert by_id[retry.parent_span_id].kind == "CONSUMER"
    assert sorted(c.attributes["celery.retries"] for c in consumers) == [0, 1, 2]
    # The client's tracestate travels with the trace, through the messages too.
    assert {s.trace_state for s in spans} == {TRACESTATE}
    _lines_name_exported_spans(lines, spans)


def test_child_tasks_stay_in_the_trace(traced: Traced) -> None:
    stack, receiver = traced
    header, trace_id, _ = _traceparent()
    correlation_id = f"otel-child-{uuid.uuid4().hex[:8]}"
    parent_id = _submit(
        stack,
        "drill_fanout",
        {"children": 2},
        traceparent=header,
        **{"X-Request-ID": correlation_id},
    )
    # Child tasks have no API record: their success lines are what the wait below reads.
    children = stack.wait_for_task(parent_id)["result"]["children"]
    lines = _lines_of(stack, correlation_id, lambda f: _journey_complete(f, succeeded=3))
    _assert_one_trace(lines, trace_id)
    assert {x["task_id"] for x in lines if x["event.action"] == "task.started"} == {
        parent_id,
        *children,
    }
    exported = _every_line_exported(lines)
    spans = receiver.wait_for(trace_id, lambda s: len(_by_kind(s, "CONSUMER")) >= 3 and exported(s))
    by_id = {s.span_id: s for s in spans}
    parent_attempt = next(
        s for s in _by_kind(spans, "CONSUMER") if s.attributes["messaging.message.id"] == parent_id
    )
    for child in children:
        (attempt,) = [
            s for s in _by_kind(spans, "CONSUMER") if s.attributes["messaging.message.id"] == child
        ]
        publish = by_id[attempt.parent_span_id]
        assert publish.kind == "PRODUCER" and publish.parent_span_id == parent_attempt.span_id
    _lines_name_exported_spans(lines, spans)


def _running_sleep(stack: RunningStack, prefix: str) -> tuple[str, str, str, Line]:
    """A task in a client's trace, once it runs: its correlation id, trace id, task id and
    its ``task.started`` line (which names the process running it). It sleeps long enough
    to be still running when a loaded machine's poll has found that line."""
    header, trace_id, _ = _traceparent()
    correlation_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    task_id = _submit(
        stack,
        "drill_sleep",
        {"seconds": 8.0},
        traceparent=header,
        **{"X-Request-ID": correlation_id},
    )
    (started,) = stack.wait_for_lines(
        lambda x: x.get("task_id") == task_id and x.get("event.action") == "task.started",
        lambda found: len(found) >= 1,
        timeout_s=30.0,
    )[:1]
    return correlation_id, trace_id, task_id, started


def test_redelivery_after_sigkill_stays_in_the_trace(traced: Traced) -> None:
    stack, receiver = traced
    correlation_id, trace_id, task_id, started = _running_sleep(stack, "otel-kill")
    # The pool process running the attempt: acks_late + reject_on_worker_lost requeue it.
    os.kill(int(started["process.pid"]), signal.SIGKILL)
    assert stack.wait_for_task(task_id, timeout_s=60.0)["status"] == "SUCCESS"
    lines = _lines_of(
        stack,
        correlation_id,
        lambda f: _journey_complete(f) and events_of(f).count("task.started") >= 2,
    )
    _assert_one_trace(lines, trace_id)
    attempts = {x["span.id"] for x in lines if x["event.action"] == "task.started"}
    assert len(attempts) >= 2  # each delivery is its own span
    assert started["span.id"] in {
        x["span.id"] for x in lines if x["event.action"] == "task.handler_error"
    }
    exported = _every_line_exported(lines, lost=frozenset({started["span.id"]}))
    spans = receiver.wait_for(trace_id, exported)
    (publish,) = [s for s in _by_kind(spans, "PRODUCER")]
    for attempt in _by_kind(spans, "CONSUMER"):
        assert attempt.parent_span_id == publish.span_id  # the same message, delivered again
    _lines_name_exported_spans(lines, spans, lost=frozenset({started["span.id"]}))


def test_request_without_traceparent_gets_one_generated_trace(traced: Traced) -> None:
    stack, receiver = traced
    answer = stack.submit("drill_echo", {"payload": "x"}, "high")
    assert answer.status_code == 202, answer.text
    correlation_id = answer.headers["X-Request-ID"]
    stack.wait_for_task(answer.json()["task_id"])
    lines = _lines_of(stack, correlation_id, _journey_complete)
    (trace_id,) = {x.get("trace.id") for x in lines}
    assert trace_id and HEX32.fullmatch(trace_id)
    _assert_one_trace(lines, trace_id)
    nginx = next(x for x in lines if x["service.name"] == "nginx")
    assert nginx["trace_context_source"] == "generated"
    # nginx started the trace: the API continued it (the id nginx sent), no traceparent came.
    api_request = next(
        x
        for x in lines
        if x["service.name"] == "api" and x["event.action"] == "http.request.completed"
    )
    assert api_request["trace_context_source"] == "generated"
    exported = _every_line_exported(lines)
    spans = receiver.wait_for(
        trace_id,
        lambda s: bool(_by_kind(s, "CONSUMER")) and bool(_by_kind(s, "SERVER")) and exported(s),
    )
    (server,) = _by_kind(spans, "SERVER")
    assert server.parent_span_id == ""  # the trace's root
    _lines_name_exported_spans(lines, spans)


@pytest.mark.parametrize(
    "malformed",
    [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"x',
    ],
)
def test_malformed_traceparent_is_replaced_and_logged(traced: Traced, malformed: str) -> None:
    stack, _ = traced
    correlation_id = f"otel-bad-{uuid.uuid4().hex[:8]}"
    task_id = _submit(
        stack,
        "drill_echo",
        {"payload": "x"},
        traceparent=malformed,
        tracestate="rojo=00f067aa0ba902b7",
        **{"X-Request-ID": correlation_id},
    )
    stack.wait_for_task(task_id)
    lines = _lines_of(stack, correlation_id, _journey_complete)
    (trace_id,) = {x.get("trace.id") for x in lines}
    assert HEX32.fullmatch(str(trace_id)) and str(trace_id) not in malformed.lower()
    _assert_one_trace(lines, str(trace_id))
    nginx = next(x for x in lines if x["service.name"] == "nginx")
    assert nginx["trace_context_source"] == "replaced"
    logged = "".join(path.read_text() for path in stack.log_files())
    assert malformed not in logged


def test_api_replaces_a_malformed_traceparent_sent_to_it_directly(traced: Traced) -> None:
    stack, _ = traced
    correlation_id = f"otel-direct-{uuid.uuid4().hex[:8]}"
    answer = stack.http.get(
        f"{stack.replica_url(1)}/api/v1/tasks/{uuid.uuid4()}",
        headers={"traceparent": "00-nothex-01", "X-Request-ID": correlation_id},
    )
    assert answer.status_code == 404
    (replaced,) = stack.wait_for_lines(
        lambda x: (
            x.get("correlation_id") == correlation_id
            and x.get("event.action") == "trace_context.replaced"
        ),
        bool,
    )
    assert replaced["trace_context_source"] == "replaced"
    assert HEX32.fullmatch(replaced["trace.id"]) and HEX16.fullmatch(replaced["span.id"])


def test_beat_tasks_start_a_trace_each(traced: Traced) -> None:
    stack, receiver = traced
    (published,) = stack.wait_for_lines(
        lambda x: x["service.name"] == "beat" and x.get("event.action") == "task.published",
        bool,
        timeout_s=20.0,
    )[:1]
    trace_id, task_id = published["trace.id"], published["task_id"]
    assert HEX32.fullmatch(trace_id) and HEX16.fullmatch(published["span.id"])
    lines = stack.wait_for_lines(
        lambda x: x.get("task_id") == task_id and x["service.name"] == "worker",
        lambda found: "task.succeeded" in events_of(found),
    )
    _assert_one_trace(lines, trace_id)
    spans = receiver.wait_for(
        trace_id, lambda s: bool(_by_kind(s, "CONSUMER")) and bool(_by_kind(s, "PRODUCER"))
    )
    (publish,) = _by_kind(spans, "PRODUCER")
    assert publish.service == "beat" and publish.parent_span_id == ""
    assert publish.span_id == published["span.id"]


def test_taskq_trace_and_the_explorer_find_a_request_by_its_trace_id(traced: Traced) -> None:
    stack, _ = traced
    header, trace_id, _ = _traceparent()
    correlation_id = f"otel-find-{uuid.uuid4().hex[:8]}"
    task_id = _submit(
        stack,
        "drill_echo",
        {"payload": "x"},
        traceparent=header,
        **{"X-Request-ID": correlation_id},
    )
    stack.wait_for_task(task_id)
    lines = _lines_of(stack, correlation_id, _journey_complete)
    done = run_taskq(stack, "trace", "--trace-id", trace_id, "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["correlation_id"] == correlation_id
    assert [t["task_id"] for t in found["tasks"]] == [task_id]
    assert found["page"]["lines_total"] >= len(lines)
    page = stack.http.get("/ui/fragments/", params={"q": trace_id})
    assert page.status_code == 200 and correlation_id in page.text


def test_redelivery_after_a_whole_worker_sigkill_stays_in_the_trace(traced: Traced) -> None:
    """The worker's main process and its pool killed at once: nothing is left to requeue the
    message; the broker lease hands it to a worker again, still in the client's trace."""
    stack, receiver = traced
    correlation_id, trace_id, task_id, started = _running_sleep(stack, "otel-killall")
    inject.kill_program_group(stack.layout, started["service.node.name"])
    assert stack.wait_for_task(task_id, timeout_s=120.0)["status"] == "SUCCESS"
    lines = _lines_of(
        stack,
        correlation_id,
        lambda f: _journey_complete(f) and events_of(f).count("task.started") >= 2,
    )
    _assert_one_trace(lines, trace_id)
    attempts = {x["span.id"] for x in lines if x["event.action"] == "task.started"}
    assert len(attempts) >= 2 and started["span.id"] in attempts
    exported = _every_line_exported(lines, lost=frozenset({started["span.id"]}))
    spans = receiver.wait_for(trace_id, exported)
    (publish,) = _by_kind(spans, "PRODUCER")
    for attempt in _by_kind(spans, "CONSUMER"):
        assert attempt.parent_span_id == publish.span_id
        assert attempt.span_id != started["span.id"]  # the killed attempt's span died with it
    _lines_name_exported_spans(lines, spans, lost=frozenset({started["span.id"]}))
