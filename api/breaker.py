"""Queue-depth circuit breaker: shed submissions before the backlog becomes unbounded.

Contract:

* The load a new task of priority ``p`` faces is the *backlog ahead of it*: every message
  waiting in ``p``'s queue and in the queues drained before it (``high`` before ``medium``
  before ``low``, see ``queue_order_strategy`` in worker/celery_app.py), all priority
  sub-lists included, plus every delivered-but-unacknowledged message
  (:func:`taskq.broker.queue_depth.read_depths`). ``low`` therefore always sees the largest
  backlog and has the lowest threshold: it sheds first, ``high`` last.
* A queue's breaker opens when its backlog reaches its threshold and closes only when the
  backlog falls to ``threshold * close_ratio`` (hysteresis: no flapping at the edge).
* Depths are read in one pipelined round trip at most every ``cache_s`` seconds per process,
  by one request thread while the others use the previous reading: the check costs a dict
  lookup per request, not a Redis round trip.
* Memory: with a ``maxmemory`` set, Redis's ``used_memory`` is read in the same round trip;
  at ``memory_ratio`` of the limit every submission is shed (503 ``broker_memory_full``)
  until it falls to ``memory_ratio * close_ratio``. Redis with ``noeviction`` refuses
  writes at the limit; shedding first keeps room for what accepted tasks still write
  (their states, acks, leases).
* When Redis cannot be read the last reading and states are kept; the publish that follows
  fails fast on its own (503 ``broker_unavailable``).
* Transitions are logged once per process as ``breaker.opened`` / ``breaker.closed``; each
  rejected request as ``http.request.rejected`` (by the caller, :func:`saturated_error`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from redis.exceptions import RedisError

from api.errors import ApiError
from taskq.broker.queue_depth import QueueDepths
from taskq.logs.schema import Event, ShedCode
from taskq.settings import QUEUES

logger = logging.getLogger("taskq.api.breaker")

#: The order in which the general worker drains its queues (highest priority first).
PRIORITY_ORDER: tuple[str, ...] = QUEUES  # settings.QUEUES lists them in drain order


def backlog_ahead(depths: QueueDepths, queue: str) -> int:
    """Messages a new task on ``queue`` waits behind: its queue, the queues drained before
    it, and everything delivered but not yet acknowledged."""
    position = PRIORITY_ORDER.index(queue)
    ahead = PRIORITY_ORDER[: position + 1]
    return sum(depths.waiting.get(name, 0) for name in ahead) + depths.unacked


@dataclass(frozen=True)
class Verdict:
    """The breaker's answer for one submission."""

    allowed: bool
    queue: str
    depth: int
    threshold: int
    #: Why a submission is refused: the queue's backlog, or Redis's memory (then ``depth``
    #: and ``threshold`` are bytes).
    reason: str = "queue"


class QueueBreaker:
    """Per-process breaker over all priority queues; thread-safe, see module docstring."""

    def __init__(
        self,
        read_depths: Callable[[], QueueDepths],
        thresholds: Mapping[str, int],
        close_ratio: float = 0.8,
        cache_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        memory_ratio: float = 0.9,
    ) -> None:
        unknown = set(thresholds) - set(PRIORITY_ORDER)
        if unknown:
            raise ValueError(f"unknown queues: {sorted(unknown)}")
        if not 0 < close_ratio < 1:
            raise ValueError("close_ratio must be between 0 and 1")
        self._read = read_depths
        self._thresholds = dict(thresholds)
        self._close_ratio = close_ratio
        self._cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()
        self._depths: QueueDepths | None = None
        self._read_at = -math.inf
        self._open: dict[str, bool] = dict.fromkeys(self._thresholds, False)
        self._memory_ratio = memory_ratio
        self._memory_open = False

    def check(self, queue: str) -> Verdict:
        """Whether a submission to ``queue`` is admitted now."""
        self._refresh_if_stale()
        depths = self._depths
        if self._memory_open and depths is not None:
            limit = int(depths.memory_max * self._memory_ratio)
            return Verdict(False, queue, depths.memory_used, limit, reason="memory")
        threshold = self._thresholds[queue]
        depth = backlog_ahead(depths, queue) if depths is not None else 0
        return Verdict(not self._open[queue], queue, depth, threshold)

    def stale(self) -> bool:
        """Whether the next :meth:`check` would read Redis (an async caller runs that
        check in a thread). Not while another thread is reading: :meth:`check` then answers
        from the previous reading without waiting, so a caller need not leave the event
        loop (under a herd, every request in flight took a thread hop at each expiry)."""
        return self._clock() - self._read_at >= self._cache_s and not self._lock.locked()

    def is_open(self, queue: str) -> bool:
        """The current state of ``queue``'s breaker (as of the last reading)."""
        return self._open[queue]

    def _refresh_if_stale(self) -> None:
        if self._clock() - self._read_at < self._cache_s:
            return
        # One thread reads; the others go on with the previous reading instead of queueing.
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._clock() - self._read_at < self._cache_s:
                return
            try:
                depths = self._read()
            except (RedisError, OSError):
                return
            finally:
                self._read_at = self._clock()
            self._depths = depths
            self._update_states(depths)
        finally:
            self._lock.release()

    def memory_pressure(self) -> bool:
        """Whether submissions are shed for Redis's memory (as of the last reading)."""
        return self._memory_open

    def memory_reading(self) -> tuple[int, int, float] | None:
        """Redis's ``used_memory`` and ``maxmemory`` as the last reading saw them, and the
        share of the limit at which submissions are shed (None before any reading)."""
        depths = self._depths
        if depths is None:
            return None
        return depths.memory_used, depths.memory_max, self._memory_ratio

    def _update_states(self, depths: QueueDepths) -> None:
        self._update_memory(depths)
        for queue, threshold in self._thresholds.items():
            depth = backlog_ahead(depths, queue)
            was_open = self._open[queue]
            if not was_open and depth >= threshold:
                self._open[queue] = True
                _log_transition("breaker opened", Event.BREAKER_OPENED, queue, depth, threshold)
            elif was_open and depth <= threshold * self._close_ratio:
                self._open[queue] = False
                _log_transition("breaker closed", Event.BREAKER_CLOSED, queue, depth, threshold)

    def _update_memory(self, depths: QueueDepths) -> None:
        if depths.memory_max <= 0:
            self._memory_open = False
            return
        limit = int(depths.memory_max * self._memory_ratio)
        if not self._memory_open and depths.memory_used >= limit:
            self._memory_open = True
            _log_transition(
                "breaker opened", Event.BREAKER_OPENED, "memory", depths.memory_used, limit
            )
        elif self._memory_open and depths.memory_used <= limit * self._close_ratio:
            self._memory_open = False
            _log_transition(
                "breaker closed", Event.BREAKER_CLOSED, "memory", depths.memory_used, limit
            )


def _log_transition(message: str, event: Event, queue: str, depth: int, threshold: int) -> None:
    level = logging.WARNING if event == Event.BREAKER_OPENED else logging.INFO
    logger.log(
        level,
        message,
        extra={
            "event.action": event,
            "queue": queue,
            "queue.depth": depth,
            "queue.threshold": threshold,
        },
    )


def saturated_error(verdict: Verdict, retry_after_s: int) -> ApiError:
    """The 503 for a rejected submission; logs the ``http.request.rejected`` event."""
    code = ShedCode.BROKER_MEMORY_FULL if verdict.reason == "memory" else ShedCode.QUEUE_SATURATED
    logger.warning(
        "request rejected",
        extra={
            "event.action": Event.HTTP_REJECTED,
            "queue": verdict.queue,
            "queue.depth": verdict.depth,
            "queue.threshold": verdict.threshold,
            "http.response.status_code": 503,
            "error.type": code,
        },
    )
    if verdict.reason == "memory":
        return ApiError(
            503,
            code,
            "Redis is near its memory limit; nothing was accepted. Retry later.",
            {"used_bytes": verdict.depth, "shed_at_bytes": verdict.threshold},
            headers={"Retry-After": str(retry_after_s)},
        )
    return ApiError(
        503,
        ShedCode.QUEUE_SATURATED,
        f"Queue {verdict.queue!r} is saturated; nothing was accepted. Retry later.",
        {"queue": verdict.queue, "depth": verdict.depth, "threshold": verdict.threshold},
        headers={"Retry-After": str(retry_after_s)},
    )
