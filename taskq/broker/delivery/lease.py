"""A worker process's lease: who it is to the broker, and the thread that keeps it alive.

The keeper thread is started once per worker main process (``worker_init``) and lives until
the process ends, not with the consumer: Celery stops the consumer's bootsteps before its
pool drains the running tasks at a warm shutdown, and restarts them after every broker
reconnect. Pool children inherit the holder id (they run the execution guard under it).

Each round, every ``renew_s``: renew the lease (:data:`scripts.RENEW`), retry the
acknowledgements and restores that did not land (:func:`defer`), and write
the readiness beat while the consumer is connected (:func:`set_consuming`). A failing
round is logged once and retried next round; the lease simply expires if it keeps failing.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from taskq.broker import readiness
from taskq.broker.delivery import keys, scripts
from taskq.logs.schema import Event
from taskq.redis_clients import sync_client

logger = logging.getLogger("taskq.broker.lease")

_holder = ""
_consuming = threading.Event()
#: Delivery tag -> the operation (ack or restore) that did not land, retried by the keeper.
_deferred: dict[str, Callable[[Redis], object]] = {}
_deferred_lock = threading.Lock()


@dataclass(frozen=True)
class LeaseTiming:
    """The lease's numbers (from :class:`taskq.settings.Settings`), in seconds."""

    ttl_s: float
    renew_s: float
    stall_gap_s: float

    @property
    def ttl_ms(self) -> int:
        """The lease TTL in milliseconds."""
        return int(self.ttl_s * 1000)

    @property
    def gap_ms(self) -> int:
        """No renewal for this long means the broker (or everyone) was away."""
        return int(self.stall_gap_s * 1000)

    @property
    def grace_ms(self) -> int:
        """After a stall, nobody is presumed dead for one TTL plus one renewal."""
        return int((self.ttl_s + self.renew_s) * 1000)


#: The defaults of :class:`taskq.settings.Settings` (a transport without options uses them).
DEFAULT_TIMING = LeaseTiming(ttl_s=3.0, renew_s=0.5, stall_gap_s=1.5)


def current_holder() -> str:
    """This process's holder id ('' outside a worker: its records have no lease)."""
    return _holder


def set_consuming(consuming: bool) -> None:
    """The consumer is connected (or not): the readiness beat follows it."""
    if consuming:
        _consuming.set()
    else:
        _consuming.clear()


def defer(tag: str, operation: Callable[[Redis], object]) -> None:
    """Remember an ack or restore of ``tag`` that did not land (Redis away, or refusing):
    the keeper retries it each round until it does. While it waits, this process's lease
    keeps the message held, so nobody else runs it, and a record is never forgotten."""
    with _deferred_lock:
        _deferred[tag] = operation


def deferred_count() -> int:
    """How many acks or restores wait for a retry."""
    with _deferred_lock:
        return len(_deferred)


def ack(client: Redis, tag: str, unacked_key: str, index_key: str) -> None:
    """Acknowledge ``tag``: its record and holder entry go, in one step (unless another
    holder holds the tag now)."""
    _script(client, scripts.ACK)(
        keys=[unacked_key, index_key, keys.HOLDERS], args=[tag, current_holder()]
    )


def _script(client: Redis, text: str) -> Any:
    """``text`` registered on ``client`` once (then sent by its SHA, not its body)."""
    cache: dict[str, Any] = client.__dict__.setdefault("_taskq_scripts", {})
    script = cache.get(text)
    if script is None:
        script = cache[text] = client.register_script(text)
    return script


class LeaseKeeper:
    """The thread that renews this process's lease; see the module docstring."""

    def __init__(
        self,
        broker_url: str,
        node: str,
        timing: LeaseTiming,
        on_round: Callable[[], None] = lambda: None,
    ) -> None:
        global _holder
        _holder = f"{node}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.holder = _holder
        self._node = node
        self._timing = timing
        self._on_round = on_round
        timeout = max(timing.renew_s, 0.5)
        self._client = sync_client(
            broker_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taskq-lease", daemon=True)

    def start(self) -> None:
        """Renew once now (so the first pop is covered), then every ``renew_s``."""
        self._round()
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and give the lease up: what this process still holds is swept."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        try:
            self._round(renew=False)
            self._client.eval(scripts.RELEASE, 1, keys.lease_key(self.holder))
        except (RedisError, OSError):
            pass  # the lease expires by itself
        self._client.close()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self._timing.renew_s):
            try:
                self._round()
                if failing:
                    failing = False
                    logger.info(
                        "lease renewal resumed", extra={"event.action": Event.LEASE_RESUMED}
                    )
            except (RedisError, OSError):
                if not failing:
                    failing = True
                    logger.warning(
                        "lease renewal failed", extra={"event.action": Event.LEASE_FAILED}
                    )

    def _round(self, renew: bool = True) -> None:
        timing = self._timing
        if renew:
            _script(self._client, scripts.RENEW)(
                keys=[keys.lease_key(self.holder), keys.CLOCK, keys.HOLDERS],
                args=[timing.ttl_ms, timing.gap_ms, timing.grace_ms],
            )
        self._retry_deferred()
        if renew and _consuming.is_set():
            readiness.record_beat(self._client, self._node)
        self._on_round()

    def _retry_deferred(self) -> None:
        with _deferred_lock:
            pending = list(_deferred.items())
        for tag, operation in pending:
            operation(self._client)
            with _deferred_lock:
                if _deferred.get(tag) is operation:
                    del _deferred[tag]
            logger.info("deferred operation landed", extra={"event.action": Event.DEFERRED_LANDED})
