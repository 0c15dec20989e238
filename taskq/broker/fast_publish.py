"""Celery task messages built by hand, in one Redis round trip per submission.

Celery's ``send_task`` costs about 0.4 ms of Python per message (routing, signals, kombu's
producer) and one blocking round trip. The API's submission path instead builds the message
itself, from a template made once per task name by Celery's own
:meth:`~celery.app.amqp.AMQP.as_task_v2` (message protocol v2, with the redacted
``argsrepr``/``kwargsrepr`` of :class:`~taskq.broker.event_redaction.RedactingAMQP`), and
writes it with the task record in one atomic script (:data:`SUBMIT`).

What lands in Redis is what kombu's producer and :mod:`taskq.broker.redis_transport` would
write for the same ``send_task`` call (tests/unit/taskq/broker/test_fast_publish.py compares
the two field by field):

* the JSON envelope of kombu's virtual transport: ``body`` (base64 of
  ``[args, kwargs, embed]``), ``content-type``, ``content-encoding``, ``headers``,
  ``properties`` with ``delivery_info`` (exchange ``""``, routing key = queue), ``priority``,
  ``body_encoding`` and a fresh ``delivery_tag``;
* ``LPUSH`` onto the queue's list for the message priority (0, the default: the queue's base
  list; the API never sets another), then the queue's doorbell rung as the transport's
  ``_put`` rings it (``LPUSH`` + ``LTRIM`` to one element);
* the headers :mod:`taskq.broker.propagation` stamps: ``x_correlation_id``,
  ``x_published_at`` and the publish span's W3C ``traceparent``.

Not emitted: Celery's ``task-sent`` event (an event-only publish that nothing here reads;
Flower shows the task from ``task-received`` on), and Celery's ``before/after_task_publish``
signals. The caller makes what taskq's receivers of those signals make, by the same
functions: the publish span (:func:`taskq.tracing.messaging.begin_publish`, ended once the
script answered, so that a refused submission is a span with an error, not a publish) and the
``task.published`` line (:func:`taskq.broker.propagation.log_published`). Sending the
signals instead would run the receivers before the outcome is known (the script may refuse
the message) and cost Celery's dispatch on every submission; third-party receivers
(opentelemetry-instrumentation-celery) are not installed: their span names are not the
messaging conventions' ``publish``/``process``.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from celery import Celery

from taskq.broker.event_redaction import describe_args, describe_kwargs, tag_correlation
from taskq.broker.redis_transport import doorbell_key
from taskq.correlation import CELERY_HEADER, PUBLISHED_AT_HEADER
from taskq.tracing.context import TRACEPARENT_HEADER, TRACESTATE_HEADER

#: Priority of every API submission (kombu's default): the message goes to the base list.
DEFAULT_PRIORITY = 0

#: Redis keys of withdrawn task ids (:data:`RESOLVE`); a SUBMIT of such an id writes nothing.
WITHDRAWN_PREFIX = "taskq:withdrawn:"

#: One atomic submission. KEYS: task record, queue list, doorbell, withdrawn mark[,
#: idempotency key]. ARGV: record JSON, record TTL, message, admitted ("1"/"0")[, idempotency
#: record, its TTL]. Returns ``{"withdrawn"}`` (:data:`RESOLVE` gave the id up: this run came
#: too late; nothing written), ``{"existing", raw}`` (the idempotency key is taken: the caller
#: decides replay, mismatch or in flight), ``{"saturated"}`` (the breaker refused; nothing
#: written), ``{"duplicate_id"}`` (the record exists: with a fresh uuid4 only an earlier run
#: of this same submission wrote it) or ``{"accepted"}``: record, message, doorbell and the
#: idempotency answer were written together. ``#!lua`` declares a writing script: a Redis
#: at ``maxmemory`` refuses it before it runs, never halfway.
SUBMIT = """#!lua
if redis.call('EXISTS', KEYS[4]) == 1 then return {'withdrawn'} end
local keyed = #KEYS == 5
if keyed then
  local existing = redis.call('GET', KEYS[5])
  if existing then return {'existing', existing} end
end
if ARGV[4] ~= '1' then return {'saturated'} end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return {'duplicate_id'}
end
redis.call('LPUSH', KEYS[2], ARGV[3])
redis.call('LPUSH', KEYS[3], 1)
redis.call('LTRIM', KEYS[3], 0, 0)
if keyed then redis.call('SET', KEYS[5], ARGV[5], 'EX', ARGV[6]) end
return {'accepted'}
"""

#: Settles a SUBMIT whose reply was lost (sent, then a timeout or a reset). KEYS: the task
#: record, the withdrawn mark[, idempotency key]; ARGV: the mark's TTL. The record exists:
#: ``{"accepted"}``. Otherwise the id is withdrawn first (so a SUBMIT of it still on its way,
#: in a kernel buffer or a stopped server, writes nothing when it runs), then ``{"existing",
#: raw}`` if the idempotency key is taken (what SUBMIT would have answered), else
#: ``{"withdrawn"}``: nothing was accepted and nothing will be. Running it again answers the
#: same, so a RESOLVE that itself got no reply may simply be sent again.
RESOLVE = """#!lua
if redis.call('EXISTS', KEYS[1]) == 1 then return {'accepted'} end
redis.call('SET', KEYS[2], 1, 'EX', ARGV[1])
if #KEYS == 3 then
  local existing = redis.call('GET', KEYS[3])
  if existing then return {'existing', existing} end
end
return {'withdrawn'}
"""


class MessageTemplate:
    """Celery messages of one task name, built from one ``as_task_v2`` call."""

    def __init__(self, app: Celery, task_name: str) -> None:
        message = app.amqp.as_task_v2(
            "template", task_name, (), {}, reply_to=app.thread_oid, ignore_result=None
        )
        self.task_name = task_name
        self._headers: dict[str, Any] = dict(message.headers)
        self._properties: dict[str, Any] = dict(message.properties)
        self._embed: dict[str, Any] = dict(message.body[2])
        self._args_repr = describe_args(())

    def build(
        self,
        task_id: str,
        kwargs: Mapping[str, Any],
        queue: str,
        correlation_id: str,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> tuple[dict[str, Any], bytes]:
        """The headers and the serialized message of one task (stamped as published now);
        ``traceparent`` is the publish span's, ``tracestate`` the trace's."""
        headers = dict(self._headers)
        headers["id"] = task_id
        headers["root_id"] = task_id
        headers["argsrepr"] = tag_correlation(self._args_repr, correlation_id)
        headers["kwargsrepr"] = describe_kwargs(kwargs)
        headers[CELERY_HEADER] = correlation_id
        headers[PUBLISHED_AT_HEADER] = time.time()
        if traceparent is not None:
            headers[TRACEPARENT_HEADER] = traceparent
        if tracestate:
            headers[TRACESTATE_HEADER] = tracestate
        body = orjson.dumps([[], kwargs, self._embed])
        properties = dict(self._properties)
        properties["correlation_id"] = task_id
        properties["delivery_mode"] = 2
        properties["delivery_info"] = {"exchange": "", "routing_key": queue}
        properties["priority"] = DEFAULT_PRIORITY
        properties["body_encoding"] = "base64"
        properties["delivery_tag"] = str(uuid.uuid4())
        envelope = {
            "body": base64.b64encode(body).decode("ascii"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
        return headers, orjson.dumps(envelope)


def queue_list(queue: str) -> str:
    """The Redis list a message of :data:`DEFAULT_PRIORITY` on ``queue`` is pushed to."""
    return queue


def queue_doorbell(queue: str) -> str:
    """The doorbell the transport's ``_put`` rings for ``queue``."""
    return doorbell_key(queue)


def withdrawn_key(task_id: str) -> str:
    """The mark :data:`RESOLVE` leaves on a task id it gave up (SUBMIT checks it first)."""
    return WITHDRAWN_PREFIX + task_id
