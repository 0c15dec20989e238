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

#: Same rule as nginx's map in nginx/nginx.conf.template: a bounded, log-safe charset.
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

IdSource = Literal["client", "generated", "replaced"]

correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)
task_id_var: ContextVar[str | None] = ContextVar("task_id", default=None)
task_name_var: ContextVar[str | None] = ContextVar("task_name", default=None)


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


@contextmanager
def bound_task_context(
    correlation_id: str | None, task_id: str | None, task_name: str | None
) -> Iterator[None]:
    """Bind the three ids for the duration of a block, restoring the previous values after."""
    tokens = (
        correlation_id_var.set(correlation_id),
        task_id_var.set(task_id),
        task_name_var.set(task_name),
    )
    try:
        yield
    finally:
        task_name_var.reset(tokens[2])
        task_id_var.reset(tokens[1])
        correlation_id_var.reset(tokens[0])
