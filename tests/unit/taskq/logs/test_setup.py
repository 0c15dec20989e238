from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskq.correlation import correlation_id_var, task_id_var
from taskq.logs.schema import TERMINAL_EVENTS, Event, validate_line
from tests.unit.log_capture import CapturedLogs


@pytest.fixture
def logs() -> Iterator[CapturedLogs]:
    captured = CapturedLogs("taskq.test.logs")
    yield captured
    captured.close()


def test_lines_are_json_in_the_schema(logs: CapturedLogs) -> None:
    logs.logger.info("task started", extra={"event.action": "task.started", "queue": "high"})
    (line,) = logs.lines()
    assert validate_line(line) == []
    assert line["message"] == "task started"
    assert line["log.level"] == "INFO"
    assert line["service.name"] == "worker"
    assert line["service.node.name"] == "worker-test"
    assert line["queue"] == "high"
    assert isinstance(line["process.pid"], int)


def test_context_ids_are_stamped_and_explicit_ones_win(logs: CapturedLogs) -> None:
    token_c = correlation_id_var.set("req-1")
    token_t = task_id_var.set("task-1")
    try:
        logs.logger.info("one")
        logs.logger.info("two", extra={"task_id": "other"})
    finally:
        task_id_var.reset(token_t)
        correlation_id_var.reset(token_c)
    logs.logger.info("three")
    one, two, three = logs.lines()
    assert (one["correlation_id"], one["task_id"]) == ("req-1", "task-1")
    assert (two["correlation_id"], two["task_id"]) == ("req-1", "other")
    assert "correlation_id" not in three and "task_id" not in three


def test_lines_without_an_event_get_the_default(logs: CapturedLogs) -> None:
    logs.logger.warning("library line")
    assert logs.lines()[0]["event.action"] == "log"


def test_fields_outside_the_schema_are_dropped(logs: CapturedLogs) -> None:
    logs.logger.info("x", extra={"color_message": "\x1b[1m", "data": {"args": "secret"}})
    line = logs.lines()[0]
    assert "color_message" not in line and "data" not in line
    assert validate_line(line) == []


def test_exceptions_become_error_stack_trace(logs: CapturedLogs) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logs.logger.exception("failed", extra={"event.action": "x.failed"})
    line = logs.lines()[0]
    assert "ValueError: boom" in line["error.stack_trace"]
    assert validate_line(line) == []


def test_hostile_text_stays_one_line(logs: CapturedLogs) -> None:
    logs.logger.info("x", extra={"error.message": 'a"b\nc\r\n{"forged": 1}'})
    assert len(logs.buffer.getvalue().splitlines()) == 1
    assert logs.lines()[0]["error.message"] == 'a"b\nc\r\n{"forged": 1}'


def test_every_line_that_settles_a_task_says_its_status(logs: CapturedLogs) -> None:
    """The panels count tasks by ``task.state`` (a revocation the API stored and the worker's
    discard of the message are one REVOKED task): each terminal event carries its status."""
    for event in TERMINAL_EVENTS:
        logs.logger.info("ended", extra={"event.action": event, "task_id": "t-1"})
    logs.logger.info("retry", extra={"event.action": Event.TASK_RETRY, "task.state": "RETRY"})
    logs.logger.info("started", extra={"event.action": Event.TASK_STARTED})
    *ended, retry, started = logs.lines()
    assert [x["task.state"] for x in ended] == list(TERMINAL_EVENTS.values())
    assert retry["task.state"] == "RETRY"
    assert "task.state" not in started
