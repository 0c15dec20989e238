"""The hand-built message is the one Celery and kombu would have written (no sockets:
Celery publishes through kombu's in-memory transport here, whose envelope is the virtual
transport's, the same as Redis's)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kombu.transport import memory

from taskq.broker import fast_publish, propagation
from taskq.broker.app import create_celery_app
from taskq.broker.redis_transport import doorbell_key
from taskq.correlation import CELERY_HEADER, PUBLISHED_AT_HEADER, correlation_id_var
from taskq.settings import Settings
from taskq.tracing.context import TRACEPARENT_HEADER, bound_trace, parse_traceparent
from taskq.tracing.messaging import begin_publish

KWARGS = {"payload": "secret portfolio", "n": 3}
#: Differ per message or per process by design.
VARYING_PROPERTIES = {"delivery_tag"}
#: The traceparent names each publish span: same trace, another span id.
VARYING_HEADERS = {PUBLISHED_AT_HEADER, TRACEPARENT_HEADER}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _celery_message(monkeypatch: pytest.MonkeyPatch, queue: str) -> tuple[str, dict[str, Any]]:
    captured: list[tuple[str, dict[str, Any]]] = []

    def capture(self: Any, name: str, message: dict[str, Any], **_: Any) -> None:
        captured.append((name, message))

    monkeypatch.setattr(memory.Channel, "_put", capture)
    app = create_celery_app(Settings(redis_url="redis://127.0.0.1:1/0"))
    app.conf.broker_url = "memory://"
    app.conf.broker_transport = "memory"

    token = correlation_id_var.set("corr-1")
    try:
        propagation.connect_publisher()
        with bound_trace(TRACE_ID, "00f067aa0ba902b7"):
            app.send_task("taskq.drills.echo", kwargs=KWARGS, queue=queue, task_id="tid-1")
    finally:
        correlation_id_var.reset(token)
    ((name, message),) = captured
    return name, message


@pytest.mark.parametrize("queue", ["high", "low"])
def test_message_equals_celerys(monkeypatch: pytest.MonkeyPatch, queue: str) -> None:
    name, expected = _celery_message(monkeypatch, queue)
    app = create_celery_app(Settings(redis_url="redis://127.0.0.1:1/0"))
    template = fast_publish.MessageTemplate(app, "taskq.drills.echo")
    with bound_trace(TRACE_ID, "00f067aa0ba902b7"):
        span = begin_publish({"id": "tid-1", "task": "taskq.drills.echo"}, queue)
    headers, raw = template.build("tid-1", KWARGS, queue, "corr-1", span.traceparent())
    built = json.loads(raw)
    for message in (built, expected):
        parent = parse_traceparent(message["headers"][TRACEPARENT_HEADER])
        assert parent is not None and parent.trace_id == TRACE_ID
        assert parent.span_id != "00f067aa0ba902b7"  # the publish span's, child of the bound one

    assert fast_publish.queue_list(queue) == name == queue
    assert fast_publish.queue_doorbell(queue) == doorbell_key(queue)
    assert set(built) == set(expected)
    for key in ("content-encoding", "content-type"):
        assert built[key] == expected[key]
    assert json.loads(base64.b64decode(built["body"])) == json.loads(
        base64.b64decode(expected["body"])
    )
    strip = lambda d, drop: {k: v for k, v in d.items() if k not in drop}  # noqa: E731
    assert strip(built["headers"], VARYING_HEADERS | {"origin"}) == strip(
        expected["headers"], VARYING_HEADERS | {"origin"}
    )
    assert built["headers"]["origin"].split("@")[1] == expected["headers"]["origin"].split("@")[1]
    assert strip(built["properties"], VARYING_PROPERTIES | {"reply_to"}) == strip(
        expected["properties"], VARYING_PROPERTIES | {"reply_to"}
    )
    assert built["properties"]["delivery_tag"] and built["properties"]["reply_to"]
    assert headers[CELERY_HEADER] == "corr-1" and isinstance(headers[PUBLISHED_AT_HEADER], float)
    assert "secret" not in headers["kwargsrepr"] and "secret" not in headers["argsrepr"]


def test_each_message_has_its_own_delivery_tag() -> None:
    app = create_celery_app(Settings(redis_url="redis://127.0.0.1:1/0"))
    template = fast_publish.MessageTemplate(app, "taskq.drills.echo")
    tags = {
        json.loads(template.build(f"t{i}", {}, "high", "c")[1])["properties"]["delivery_tag"]
        for i in range(50)
    }
    assert len(tags) == 50
