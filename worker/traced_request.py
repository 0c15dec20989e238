"""Celery request class that remembers each message's correlation id in the worker's
main process, where Celery logs "received", revocations and lost-worker failures."""

from __future__ import annotations

from typing import Any

from celery.worker.request import Request

from taskq.celery_logs import remember
from taskq.correlation import CELERY_HEADER


class TracedRequest(Request):  # type: ignore[misc]
    """A :class:`celery.worker.request.Request` that calls :func:`remember` on arrival."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        remember(self.id, self.request_dict.get(CELERY_HEADER))
