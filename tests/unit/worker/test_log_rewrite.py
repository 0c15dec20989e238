"""Celery's own task lines become schema lines with ids, using Celery's real formats."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from celery.app import trace as celery_trace

from taskq.logs.schema import validate_line
from tests.unit.log_capture import CapturedLogs
from worker.log_rewrite import CeleryRecordFilter, Delivery, remember
from worker.task_lifecycle import mark_duplicate


@pytest.fixture
def logs() -> Iterator[CapturedLogs]:
    captured = CapturedLogs("celery.test", [CeleryRecordFilter()])
    yield captured
    captured.close()


def _log_like_celery(
    logs: CapturedLogs, fmt: str, context: dict[str, Any], level: int = logging.INFO
) -> dict[str, Any]:
    logs.logger.log(level, fmt, context, extra={"data": context})
    line = logs.lines()[-1]
    assert validate_line(line) == []
    return line


def test_received_line_gets_the_remembered_correlation_id(logs: CapturedLogs) -> None:
    remember("t-1", Delivery("req-42", "att-1", 0))
    context = {
        "id": "t-1",
        "name": "taskq.risk.calculate_var",
        "args": "()",
        "kwargs": "{}",
        "eta": None,
    }
    line = _log_like_celery(logs, celery_trace.LOG_RECEIVED, context)
    assert line["event.action"] == "task.received"
    assert line["message"] == "task received"
    assert (line["task_id"], line["correlation_id"]) == ("t-1", "req-42")
    assert line["task_name"] == "taskq.risk.calculate_var"


def test_success_line_has_duration_and_no_return_value(logs: CapturedLogs) -> None:
    context = {
        "id": "t-2",
        "name": "n",
        "return_value": "{'secret': 1}",
        "runtime": 0.25,
        "args": "",
        "kwargs": "",
    }
    line = _log_like_celery(logs, celery_trace.LOG_SUCCESS, context)
    assert line["event.action"] == "task.succeeded"
    assert line["duration_ms"] == 250.0
    assert line["task.state"] == "SUCCESS"
    assert "secret" not in logs.buffer.getvalue()


def test_failure_and_retry_lines(logs: CapturedLogs) -> None:
    failure = {
        "id": "t-3",
        "name": "n",
        "exc": "ValueError('bad')",
        "description": "raised unexpected",
        "hostname": "h",
        "traceback": "",
        "args": "",
        "kwargs": "",
        "internal": False,
    }
    line = _log_like_celery(logs, celery_trace.LOG_FAILURE.strip(), failure, logging.ERROR)
    assert (line["event.action"], line["task.state"]) == ("task.failed", "FAILURE")
    assert line["error.message"] == "ValueError('bad')"
    assert line["error.type"] == "ValueError"
    retry = {"id": "t-3", "name": "n", "exc": "Retry in 1.0s: ConnectionError('lost')"}
    line = _log_like_celery(logs, celery_trace.LOG_RETRY, retry)
    assert (line["event.action"], line["task.state"]) == ("task.retry", "RETRY")
    assert line["error.type"] == "ConnectionError"


def test_positional_revoked_line(logs: CapturedLogs) -> None:
    remember("t-4", Delivery("req-4", "att-4", 0))
    logs.logger.info("Discarding revoked task: %s[%s]", "taskq.drills.echo", "t-4")
    line = logs.lines()[-1]
    assert line["event.action"] == "task.revoked"
    assert (line["task_id"], line["correlation_id"], line["task_name"]) == (
        "t-4",
        "req-4",
        "taskq.drills.echo",
    )


def test_other_lines_pass_untouched(logs: CapturedLogs) -> None:
    logs.logger.info("Connected to %s", "redis://x")
    line = logs.lines()[-1]
    assert line["message"] == "Connected to redis://x"
    assert line["event.action"] == "log"


def test_suppressed_duplicate_writes_no_success_line(logs: CapturedLogs) -> None:
    context = {"id": "t-5", "name": "n", "return_value": "1", "runtime": 0.1}
    mark_duplicate("t-5")
    logs.logger.info(celery_trace.LOG_SUCCESS, context, extra={"data": context})
    assert logs.lines() == []
    other = {**context, "id": "t-6"}
    line = _log_like_celery(logs, celery_trace.LOG_SUCCESS, other)
    assert line["event.action"] == "task.succeeded"
