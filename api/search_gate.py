"""Trace and search calls run on their own bounded capacity, never on the shared pool.

Invariant: at most ``slots`` trace or search lookups run at once per API process, each in a
thread of its own limiter (not the thread pool FastAPI runs the plain ``def`` handlers of
``/readyz`` and ``GET /api/v1/tasks/{id}`` on, nor the event loop submissions use). A call
that finds every slot taken is answered at once with ``503 search_busy`` and
``Retry-After``: an inflated trace or a locked log index makes lookups slow, never the
probes, status polls or submissions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from api.errors import ApiError
from taskq.logs.schema import Event, ShedCode

logger = logging.getLogger("taskq.api.search")

T = TypeVar("T")
SEARCH_BUSY = ShedCode.SEARCH_BUSY


class SearchGate:
    """``slots`` concurrent lookups; create it inside the event loop (the lifespan)."""

    def __init__(self, slots: int, retry_after_s: int) -> None:
        self._admission = anyio.CapacityLimiter(slots)
        self._threads = anyio.CapacityLimiter(slots)
        self._retry_after_s = retry_after_s

    @property
    def busy(self) -> int:
        """Lookups running now."""
        return int(self._admission.borrowed_tokens)

    async def run(self, lookup: Callable[[], T]) -> T:
        """``lookup()`` in a thread of this gate; ``503 search_busy`` when all are taken."""
        try:
            self._admission.acquire_nowait()
        except anyio.WouldBlock:
            logger.warning(
                "search refused",
                extra={
                    "event.action": Event.HTTP_REJECTED,
                    "http.response.status_code": 503,
                    "error.type": SEARCH_BUSY,
                },
            )
            raise ApiError(
                503,
                SEARCH_BUSY,
                "Every trace and search slot is taken; retry shortly.",
                headers={"Retry-After": str(self._retry_after_s)},
            ) from None
        try:
            # Not abandoned on cancel: the slot stays taken until the thread is done.
            return await anyio.to_thread.run_sync(lookup, limiter=self._threads)
        finally:
            self._admission.release()
