"""Turns Celery's own worker log lines into schema lines with task and correlation ids.

Celery logs "Task x[id] received", "succeeded in", "retry", "raised" with the task id in
the record's arguments, often in the worker's main process where no task context exists.
:class:`CeleryRecordFilter` gives each such record a constant message, an event name, the
task id and name, and the correlation id remembered when the message arrived
(:func:`remember`, called by ``worker.traced_request.TracedRequest``).
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from celery.app import trace as celery_trace

from taskq.correlation import attempt_id_var, correlation_id_var, task_id_var
from taskq.logs.schema import Event
from taskq.tracing.context import span_id_var, trace_id_var
from worker.task_lifecycle import elapsed_ms, is_duplicate, retries_var

_MAX_REMEMBERED = 20_000


@dataclass(frozen=True)
class Delivery:
    """What the worker's main process knows about one delivered message."""

    correlation_id: str | None
    attempt_id: str | None
    retries: int
    #: The delivery's trace and the id of its ``process`` span (chosen on arrival).
    trace_id: str | None = None
    span_id: str | None = None


_remembered: OrderedDict[str, Delivery] = OrderedDict()


def remember(task_id: str, delivery: Delivery) -> None:
    """Record the latest delivery of a task id (bounded, oldest dropped first)."""
    _remembered[task_id] = delivery
    _remembered.move_to_end(task_id)
    while len(_remembered) > _MAX_REMEMBERED:
        _remembered.popitem(last=False)


def recall(task_id: str) -> Delivery | None:
    """The delivery of ``task_id`` being handled here: the running task's context in a
    pool process, else the latest one remembered by the main process."""
    if task_id_var.get() == task_id:
        return Delivery(
            correlation_id_var.get(),
            attempt_id_var.get(),
            retries_var.get(),
            trace_id_var.get(),
            span_id_var.get(),
        )
    return _remembered.get(task_id)


@dataclass(frozen=True)
class _Rule:
    event: Event
    message: str
    id_arg: int | None = None  # position of the task id in a tuple of args
    name_arg: int | None = None


_DATA_RULES: dict[str, _Rule] = {
    celery_trace.LOG_RECEIVED: _Rule(Event.TASK_RECEIVED, "task received"),
    celery_trace.LOG_SUCCESS: _Rule(Event.TASK_SUCCEEDED, "task succeeded"),
    celery_trace.LOG_FAILURE.strip(): _Rule(Event.TASK_FAILED, "task failed"),
    celery_trace.LOG_INTERNAL_ERROR.strip(): _Rule(Event.TASK_FAILED, "task failed"),
    celery_trace.LOG_RETRY: _Rule(Event.TASK_RETRY, "task retry scheduled"),
    celery_trace.LOG_REJECTED.strip(): _Rule(Event.TASK_REJECTED, "task rejected"),
    celery_trace.LOG_IGNORED.strip(): _Rule(Event.TASK_IGNORED, "task ignored"),
}
_ARGS_RULES: dict[str, _Rule] = {
    "Discarding revoked task: %s[%s]": _Rule(Event.TASK_REVOKED, "revoked task discarded", 1, 0),
    "Task %s[%s] retry: %s": _Rule(Event.TASK_RETRY, "task retry scheduled", 1, 0),
    "Soft time limit (%ss) exceeded for %s[%s]": _Rule(
        Event.TASK_SOFT_TIME_LIMIT, "task soft time limit exceeded", 2, 1
    ),
    "Hard time limit (%ss) exceeded for %s[%s]": _Rule(
        Event.TASK_TIME_LIMIT, "task hard time limit exceeded", 2, 1
    ),
    "Task handler raised error: %r": _Rule(Event.TASK_HANDLER_ERROR, "task handler raised error"),
}


class CeleryRecordFilter(logging.Filter):
    """Rewrites Celery's task lines; other records pass through untouched.

    Drops Celery's "succeeded" line of a delivery answered from the completion record:
    that delivery wrote ``task.duplicate_suppressed`` instead (one success line per task).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str):
            return True
        data = record.__dict__.get("data")
        if isinstance(data, dict) and (rule := _DATA_RULES.get(record.msg)) is not None:
            if rule.event == Event.TASK_SUCCEEDED and is_duplicate(str(data.get("id"))):
                return False
            self._apply_data(record, rule, data)
        elif (rule := _ARGS_RULES.get(record.msg)) is not None:
            self._apply_args(record, rule)
        return True

    def _apply_data(self, record: logging.LogRecord, rule: _Rule, data: dict[str, Any]) -> None:
        attrs = record.__dict__
        task_id = str(data.get("id"))
        self._stamp(record, rule, task_id, data.get("name"))
        if rule.event == Event.TASK_SUCCEEDED and isinstance(data.get("runtime"), int | float):
            attrs["duration_ms"] = round(float(data["runtime"]) * 1000.0, 3)
            attrs["task.state"] = "SUCCESS"
        if rule.event in (Event.TASK_FAILED, Event.TASK_RETRY, Event.TASK_REJECTED):
            exc = data.get("exc")
            if exc is not None:
                attrs["error.message"] = str(exc)
                attrs["error.type"] = exception_type(record, str(exc))
            if rule.event == Event.TASK_FAILED:
                attrs["task.state"] = "FAILURE"
                if (duration := elapsed_ms(task_id)) is not None:
                    attrs["duration_ms"] = duration
            if rule.event == Event.TASK_RETRY:
                attrs["task.state"] = "RETRY"

    def _apply_args(self, record: logging.LogRecord, rule: _Rule) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        task_id = (
            str(args[rule.id_arg]) if rule.id_arg is not None and len(args) > rule.id_arg else None
        )
        name = (
            args[rule.name_arg] if rule.name_arg is not None and len(args) > rule.name_arg else None
        )
        if rule.id_arg is None and args:
            record.__dict__["error.message"] = repr(args[0])
            record.__dict__["error.type"] = type(args[0]).__name__
        self._stamp(record, rule, task_id, name)

    @staticmethod
    def _stamp(record: logging.LogRecord, rule: _Rule, task_id: str | None, name: Any) -> None:
        attrs = record.__dict__
        record.msg, record.args = rule.message, ()
        attrs["event.action"] = rule.event
        if task_id:
            attrs["task_id"] = task_id
            delivery = recall(task_id)
            if delivery is not None:
                if delivery.correlation_id:
                    attrs["correlation_id"] = delivery.correlation_id
                if delivery.attempt_id:
                    attrs["task.attempt_id"] = delivery.attempt_id
                attrs.setdefault("task.retries", delivery.retries)
                if delivery.trace_id and delivery.span_id:
                    attrs["trace.id"] = delivery.trace_id
                    attrs["span.id"] = delivery.span_id
        if name:
            attrs["task_name"] = str(name)


_EXC_NAME = re.compile(r"(?:^|: )([A-Za-z_][A-Za-z0-9_]*)\(")


def exception_type(record: logging.LogRecord, exc_repr: str) -> str:
    """The exception's class name: from the record's exc_info, else from the text Celery
    hands over: ``repr(exc)`` (``ValueError('x')``), or for a retry the Retry's text with
    the cause's repr after the colon (``Retry in 1.0s: ConnectionError('x')``)."""
    if record.exc_info and record.exc_info[0] is not None:
        return record.exc_info[0].__name__
    match = _EXC_NAME.search(exc_repr)
    return match.group(1) if match else "Exception"
