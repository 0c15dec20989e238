"""Turns Celery's own worker log lines into schema lines with task and correlation ids.

Celery logs "Task x[id] received", "succeeded in", "retry", "raised" with the task id in
the record's arguments, often in the worker's main process where no task context exists.
:class:`CeleryRecordFilter` gives each such record a constant message, an event name, the
task id and name, and the correlation id remembered when the message arrived
(:func:`remember`, called by ``worker.traced_request.TracedRequest``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from celery.app import trace as celery_trace

from taskq.celery_signals import elapsed_ms
from taskq.correlation import correlation_id_var, task_id_var

_MAX_REMEMBERED = 20_000
_remembered: OrderedDict[str, str] = OrderedDict()


def remember(task_id: str, correlation_id: str | None) -> None:
    """Record which correlation id a task id belongs to (bounded, oldest dropped first)."""
    if not correlation_id:
        return
    _remembered[task_id] = correlation_id
    _remembered.move_to_end(task_id)
    while len(_remembered) > _MAX_REMEMBERED:
        _remembered.popitem(last=False)


def recall(task_id: str) -> str | None:
    """The correlation id remembered for ``task_id``, if any."""
    if task_id_var.get() == task_id:
        return correlation_id_var.get()
    return _remembered.get(task_id)


@dataclass(frozen=True)
class _Rule:
    event: str
    message: str
    id_arg: int | None = None  # position of the task id in a tuple of args
    name_arg: int | None = None


_DATA_RULES: dict[str, _Rule] = {
    celery_trace.LOG_RECEIVED: _Rule("task.received", "task received"),
    celery_trace.LOG_SUCCESS: _Rule("task.succeeded", "task succeeded"),
    celery_trace.LOG_FAILURE.strip(): _Rule("task.failed", "task failed"),
    celery_trace.LOG_INTERNAL_ERROR.strip(): _Rule("task.failed", "task failed"),
    celery_trace.LOG_RETRY: _Rule("task.retry", "task retry scheduled"),
    celery_trace.LOG_REJECTED.strip(): _Rule("task.rejected", "task rejected"),
    celery_trace.LOG_IGNORED.strip(): _Rule("task.ignored", "task ignored"),
}
_ARGS_RULES: dict[str, _Rule] = {
    "Discarding revoked task: %s[%s]": _Rule("task.revoked", "revoked task discarded", 1, 0),
    "Task %s[%s] retry: %s": _Rule("task.retry", "task retry scheduled", 1, 0),
    "Soft time limit (%ss) exceeded for %s[%s]": _Rule(
        "task.soft_time_limit", "task soft time limit exceeded", 2, 1
    ),
    "Hard time limit (%ss) exceeded for %s[%s]": _Rule(
        "task.time_limit", "task hard time limit exceeded", 2, 1
    ),
    "Task handler raised error: %r": _Rule("task.handler_error", "task handler raised error"),
}


class CeleryRecordFilter(logging.Filter):
    """Rewrites Celery's task lines; other records pass through untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str):
            return True
        data = record.__dict__.get("data")
        if isinstance(data, dict) and (rule := _DATA_RULES.get(record.msg)) is not None:
            self._apply_data(record, rule, data)
        elif (rule := _ARGS_RULES.get(record.msg)) is not None:
            self._apply_args(record, rule)
        return True

    def _apply_data(self, record: logging.LogRecord, rule: _Rule, data: dict[str, Any]) -> None:
        attrs = record.__dict__
        task_id = str(data.get("id"))
        self._stamp(record, rule, task_id, data.get("name"))
        if rule.event == "task.succeeded" and isinstance(data.get("runtime"), int | float):
            attrs["duration_ms"] = round(float(data["runtime"]) * 1000.0, 3)
            attrs["task.state"] = "SUCCESS"
        if rule.event in ("task.failed", "task.retry", "task.rejected"):
            exc = data.get("exc")
            if exc is not None:
                attrs["error.message"] = str(exc)
            if rule.event == "task.failed":
                attrs["task.state"] = "FAILURE"
                if (duration := elapsed_ms(task_id)) is not None:
                    attrs["duration_ms"] = duration
            if rule.event == "task.retry":
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
        self._stamp(record, rule, task_id, name)

    @staticmethod
    def _stamp(record: logging.LogRecord, rule: _Rule, task_id: str | None, name: Any) -> None:
        attrs = record.__dict__
        record.msg, record.args = rule.message, ()
        attrs["event.action"] = rule.event
        if task_id:
            attrs["task_id"] = task_id
            correlation_id = recall(task_id)
            if correlation_id:
                attrs["correlation_id"] = correlation_id
        if name:
            attrs["task_name"] = str(name)
