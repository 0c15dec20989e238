"""The correlation id: context variables, validation and generation.

No framework imports here: the API middleware, the Celery hooks and the log filters all
read and write these variables.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

REQUEST_ID_HEADER = "X-Request-ID"
#: Message header that carries the id through Celery. Celery itself owns ``correlation_id``
#: (it sets it to the task id), so ours has a distinct name.
CELERY_HEADER = "x_correlation_id"
#: Message header with the publish time (epoch seconds), for queue-wait measurement.
PUBLISHED_AT_HEADER = "x_published_at"
#: Request-dict key of one delivery of a message to a worker (set by the worker, never sent).
ATTEMPT_HEADER = "x_attempt_id"
#: Header by which nginx hands its per-exchange ``$request_id`` to the API replica, so the
#: two lines of one HTTP exchange share ``http.request.id`` even when a client reuses its
#: ``X-Request-ID`` for many requests.
EXCHANGE_ID_HEADER = "X-Exchange-ID"

#: Same rule as nginx's map in nginx/nginx.conf.template: a bounded, log-safe charset.
#: The one rule for ids we accept as they are (correlation ids, exchange ids). nginx's map
#: must use the same expression: tests/contract checks it.
ID_PATTERN = r"[A-Za-z0-9._:-]{1,128}"
_VALID_ID = re.compile(ID_PATTERN)

IdSource = Literal["client", "generated", "replaced"]

correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)
task_id_var: ContextVar[str | None] = ContextVar("task_id", default=None)
task_name_var: ContextVar[str | None] = ContextVar("task_name", default=None)
#: One delivery of a task to a worker: every line of that execution carries it.
attempt_id_var: ContextVar[str | None] = ContextVar("attempt_id", default=None)
#: One HTTP exchange (``http.request.id``): every API line written while serving it.
exchange_id_var: ContextVar[str | None] = ContextVar("exchange_id", default=None)


def is_valid_id(value: str) -> bool:
    """True when ``value`` may be used as a correlation id as it is."""
    return _VALID_ID.fullmatch(value) is not None


def new_id() -> str:
    """A fresh id, 32 hex characters like nginx's ``$request_id``."""
    return uuid.uuid4().hex


def resolve_id(candidate: str | None) -> tuple[str, IdSource]:
    """Keep a valid client id, generate one when absent, replace an invalid one."""
    if candidate is None or candidate == "":
        return new_id(), "generated"
    if is_valid_id(candidate):
        return candidate, "client"
    return new_id(), "replaced"


def new_attempt_id() -> str:
    """A fresh id for one delivery of a task (16 hex characters)."""
    return uuid.uuid4().hex[:16]


@contextmanager
def bound_task_context(
    correlation_id: str | None,
    task_id: str | None,
    task_name: str | None,
    attempt_id: str | None = None,
) -> Iterator[None]:
    """Bind the task's ids for the duration of a block, restoring the previous values after."""
    tokens = (
        correlation_id_var.set(correlation_id),
        task_id_var.set(task_id),
        task_name_var.set(task_name),
        attempt_id_var.set(attempt_id),
    )
    try:
        yield
    finally:
        attempt_id_var.reset(tokens[3])
        task_name_var.reset(tokens[2])
        task_id_var.reset(tokens[1])
        correlation_id_var.reset(tokens[0])
