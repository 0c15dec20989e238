"""Celery messages and events describe task arguments and results, never show them."""

from __future__ import annotations

from typing import Any

from kombu.entity import Exchange, Queue

from taskq.broker.app import create_celery_app
from taskq.broker.event_redaction import (
    describe_args,
    describe_kwargs,
    redact_event_fields,
)
from taskq.settings import Settings

SECRET = "ZZ-SECRET-SYMBOL-4711"
KWARGS = {"portfolio_data": {"positions": [{"symbol": SECRET, "quantity": 98765.4321}]}}


def test_descriptions_name_keys_and_size_only() -> None:
    text = describe_kwargs(KWARGS)
    assert "portfolio_data" in text and "bytes" in text
    assert SECRET not in text and "98765" not in text
    assert describe_args([SECRET, 1]).startswith("<2 args")
    assert SECRET not in describe_args([SECRET])
    assert describe_args(()) == "()" and describe_kwargs({}) == "{}"


def test_every_message_the_app_builds_carries_the_descriptions() -> None:
    app = create_celery_app(Settings(redis_url="redis://127.0.0.1:1/0"))
    message = app.amqp.create_task_message(
        "id-1", "taskq.risk.calculate_var", (), KWARGS, create_sent_event=True
    )
    headers: dict[str, Any] = message.headers
    assert headers["kwargsrepr"] == describe_kwargs(KWARGS)
    assert headers["argsrepr"] == "()"
    assert message.sent_event is not None
    assert SECRET not in repr(message.sent_event) and SECRET not in repr(headers)
    # The body still carries the real arguments: only the descriptions change.
    assert SECRET in repr(message.body)


def test_worker_event_results_exceptions_and_tracebacks_are_redacted() -> None:
    fields = {
        "result": f"{{'echo': '{SECRET}'}}",
        "exception": f"ValueError('bad symbol {SECRET}')",
        "traceback": f"Traceback ...\nValueError: bad symbol {SECRET}",
        "runtime": 0.5,
    }
    redacted = redact_event_fields("task-failed", fields)
    assert SECRET not in repr(redacted)
    assert redacted["exception"] == "ValueError(<redacted>)"
    assert redacted["runtime"] == 0.5
    unchanged = {"hostname": "w1"}
    assert redact_event_fields("task-started", unchanged) is unchanged


def test_each_queue_has_its_own_exchange_and_routing_key() -> None:
    app = create_celery_app(Settings(redis_url="redis://127.0.0.1:1/0"))
    queues: list[Queue] = list(app.conf.task_queues)
    for queue in queues:
        assert queue.exchange == Exchange(queue.name)
        assert queue.routing_key == queue.name
    # Task events are Celery's default (off) unless asked for; Flower turns them on.
    assert app.conf.task_send_sent_event and not app.conf.worker_send_task_events
    events_on = create_celery_app(
        Settings(redis_url="redis://127.0.0.1:1/0", worker_task_events=True)
    )
    assert events_on.conf.worker_send_task_events


def test_argsrepr_leads_with_the_correlation_id_once() -> None:
    from taskq.broker.event_redaction import tag_correlation

    tagged = tag_correlation("()", "req-1")
    assert tagged == "correlation_id=req-1 ()"
    assert tag_correlation(tagged, "req-2") == "correlation_id=req-2 ()"
