"""Task arguments and results never leave a process through Celery's events.

Celery puts ``repr(args)``/``repr(kwargs)`` into every message (headers ``argsrepr`` and
``kwargsrepr``) and into the ``task-sent``/``task-received`` events, and the result's and
exception's repr into ``task-succeeded``/``task-failed``; Flower and ``celery events`` show
them to anyone who can open them, and Flower switches events on remotely whatever the
worker config says. Task inputs here are client portfolios: they are described (which
keyword names, how many bytes), never shown.

* :class:`RedactingAMQP` is the Celery app's ``amqp`` class: every message this app builds
  (API submissions, retries, child tasks, beat) gets the descriptions, so the ``task-sent``
  event, built from the same values, carries them too.
* :func:`tag_correlation` puts the request's correlation id in front of ``argsrepr`` when
  the message is stamped (:mod:`taskq.broker.propagation`, :mod:`taskq.broker.fast_publish`).
* :func:`redact_event_fields` is applied by the worker's request class to the events it
  sends (results, exception messages and tracebacks, which may quote inputs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from celery.app.amqp import AMQP

from taskq.correlation import correlation_id_var

_REDACTED_FIELDS = ("result", "exception", "traceback")


def _size(value: Any) -> int:
    try:
        return len(orjson.dumps(value, default=str))
    except (TypeError, orjson.JSONEncodeError):
        return len(repr(value))


def describe_args(args: Sequence[Any] | None) -> str:
    """``argsrepr``: how many positional arguments and their size, no values."""
    items = list(args or ())
    if not items:
        return "()"
    return f"<{len(items)} args, {_size(items)} bytes: redacted>"


def describe_kwargs(kwargs: Mapping[str, Any] | None) -> str:
    """``kwargsrepr``: the keyword names and the size of the values, no values."""
    items = dict(kwargs or {})
    if not items:
        return "{}"
    names = ", ".join(sorted(str(k) for k in items))
    return f"<{{{names}}}, {_size(items)} bytes: redacted>"


#: How ``argsrepr`` names the request that published the task: Flower shows ``argsrepr`` as
#: the task's "args" (list, task page, search box), where an on-call engineer then finds
#: the correlation id to trace. Ids are of a URL- and repr-safe charset (taskq.correlation).
CORRELATION_PREFIX = "correlation_id="


def tag_correlation(argsrepr: str, correlation_id: str) -> str:
    """``correlation_id=<id> ()``: ``argsrepr`` (already a description) led by the id;
    an ``argsrepr`` that names one already gets the given one instead."""
    if argsrepr.startswith(CORRELATION_PREFIX):
        argsrepr = argsrepr.split(" ", 1)[1] if " " in argsrepr else "()"
    return f"{CORRELATION_PREFIX}{correlation_id} {argsrepr}"


def describe_exception(text: str) -> str:
    """``ValueError('...portfolio...')`` -> ``ValueError(<redacted>)``: the type only."""
    name = text.split("(", 1)[0].strip()
    return f"{name}(<redacted>)" if name.isidentifier() else "<redacted>"


def redact_event_fields(event_type: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The fields of a worker event with results, exception texts and tracebacks replaced
    (the JSON log lines keep the details, see :mod:`taskq.logs.redaction`)."""
    if not any(name in fields for name in _REDACTED_FIELDS):
        return fields
    redacted = dict(fields)
    if "result" in redacted:
        redacted["result"] = f"<{len(str(redacted['result']))} chars: redacted>"
    if "exception" in redacted:
        redacted["exception"] = describe_exception(str(redacted["exception"]))
    if "traceback" in redacted:
        redacted["traceback"] = "<redacted: see the worker's log lines for this task_id>"
    return redacted


class RedactingAMQP(AMQP):  # type: ignore[misc]
    """Celery's message builder with argument descriptions instead of their repr."""

    def as_task_v2(
        self,
        task_id: str,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *rest: Any,
        **options: Any,
    ) -> Any:
        options["argsrepr"] = describe_args(args)
        correlation_id = correlation_id_var.get()
        if correlation_id:
            # Tagged here too, not only when the headers are stamped: the ``task-sent`` event
            # is built from this value, and Flower keeps a late one's args over the tagged
            # ``task-received``'s (seen with retries). Without a current id (beat) the stamp
            # picks one and tags the message only.
            options["argsrepr"] = tag_correlation(options["argsrepr"], correlation_id)
        options["kwargsrepr"] = describe_kwargs(kwargs)
        return super().as_task_v2(task_id, name, args, kwargs, *rest, **options)
