"""What the broker-failover drill watches, every reading on the drill's own monotonic clock.

Three observers, each a daemon thread polling until stopped (bounded by ``max_s``):

* **roles**: each broker node's ``INFO replication`` role, read with a plain client of that
  node (what the node says, not what a sentinel believes); ``None`` when it does not answer;
* **writes**: a write through the sentinels (the factory's client, as every taskq process
  uses) confirmed by a replica (``WAIT 1``): the master is writable exactly when this holds,
  the same rule a submission's 202 follows;
* **readiness**: ``/readyz`` of every API replica, directly (not through nginx).

Times from different processes' logs are never compared; only these readings are.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from taskq.hosts.redis_group import RedisGroup
from taskq.redis_clients import sync_client

PROBE_KEY = "taskq:drills:failover-probe"
#: How often each observer reads; a reading's own timeout is below it where it can be.
INTERVAL_S = 0.05
READ_TIMEOUT_S = 0.3
#: A probe write waits this long for its replica (ms).
WAIT_MS = 250
#: A reading is one attempt: a retry would answer for a later moment than it was asked.
_NO_RETRY = Retry(NoBackoff(), 0)


@dataclass(frozen=True)
class Reading:
    """One observation: when (monotonic), of what, and what it said."""

    at: float
    subject: str
    value: str


@dataclass
class Observers:
    """The three observers of one drill; :meth:`readings` is every reading so far."""

    group: RedisGroup
    replica_urls: Sequence[str]
    max_s: float
    _readings: list[Reading] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        loops: list[tuple[str, Callable[[], None]]] = [("writes", self._writes)]
        loops += [(f"role-{i}", self._role_loop(i)) for i in range(len(self.group.nodes))]
        loops += [(f"ready-{i}", self._ready_loop(url)) for i, url in enumerate(self.replica_urls)]
        for name, loop in loops:
            thread = threading.Thread(target=loop, name=f"failover-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> list[Reading]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        return self.readings()

    def readings(self, since: float = 0.0) -> list[Reading]:
        with self._lock:
            return sorted((r for r in self._readings if r.at >= since), key=lambda r: r.at)

    def _record(self, subject: str, value: str, at: float) -> None:
        with self._lock:
            self._readings.append(Reading(at, subject, value))

    def _loop(self, read: Callable[[], tuple[str, str]]) -> None:
        deadline = time.monotonic() + self.max_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            began = time.monotonic()
            subject, value = read()
            # A reading's time is when its answer came (no reading is retried, so it
            # describes a moment at most one timeout earlier): a recovery is never dated
            # before it was seen.
            self._record(subject, value, time.monotonic())
            self._stop.wait(max(0.0, INTERVAL_S - (time.monotonic() - began)))

    def _role_loop(self, index: int) -> Callable[[], None]:
        node = self.group.nodes[index]
        client = Redis(
            node.host,
            node.redis_port,
            password=self.group.password or None,
            socket_timeout=READ_TIMEOUT_S,
            socket_connect_timeout=READ_TIMEOUT_S,
            retry=_NO_RETRY,
        )

        def read() -> tuple[str, str]:
            try:
                role = str(client.info("replication")["role"])
            except (RedisError, OSError):
                role = "down"
            return f"node{index}", role

        return lambda: self._loop(read)

    def _writes(self) -> None:
        client = sync_client(
            self.group.url,
            master=self.group.master_name,
            socket_timeout=READ_TIMEOUT_S + WAIT_MS / 1000,
            socket_connect_timeout=READ_TIMEOUT_S,
            retry=_NO_RETRY,
        )
        counter = 0

        def read() -> tuple[str, str]:
            nonlocal counter
            counter += 1
            try:
                pipe = client.pipeline(transaction=False)
                pipe.set(PROBE_KEY, str(counter), px=60_000)
                pipe.execute_command("WAIT", 1, WAIT_MS)  # type: ignore[no-untyped-call]
                _, replicas = pipe.execute()
                value = "ok" if int(replicas) >= 1 else "unreplicated"
            except (RedisError, OSError) as exc:
                value = type(exc).__name__
            return "writes", value

        try:
            self._loop(read)
        finally:
            client.close()

    def _ready_loop(self, url: str) -> Callable[[], None]:
        def loop() -> None:
            with httpx.Client(base_url=url, timeout=READ_TIMEOUT_S * 3) as http:

                def read() -> tuple[str, str]:
                    try:
                        return url, str(http.get("/readyz").status_code)
                    except httpx.HTTPError:
                        return url, "0"

                self._loop(read)

        return loop


def first(
    readings: Sequence[Reading], subject: str, since: float, want: Callable[[str], bool]
) -> float | None:
    """The time of the first reading of ``subject`` at or after ``since`` that ``want``s."""
    for reading in readings:
        if reading.subject == subject and reading.at >= since and want(reading.value):
            return reading.at
    return None


def last_before(
    readings: Sequence[Reading], subject: str, until: float, want: Callable[[str], bool]
) -> float | None:
    """The time of the last reading of ``subject`` before ``until`` that ``want``s."""
    found = None
    for reading in readings:
        if reading.subject == subject and reading.at < until and want(reading.value):
            found = reading.at
    return found


def readings_json(readings: list[Reading], origin: float) -> list[dict[str, Any]]:
    """The readings where they change value (the timeline's raw data)."""
    rows: list[dict[str, Any]] = []
    last: dict[str, str] = {}
    for reading in readings:
        if last.get(reading.subject) != reading.value:
            last[reading.subject] = reading.value
            rows.append(
                {
                    "t_s": round(reading.at - origin, 3),
                    "of": reading.subject,
                    "value": reading.value,
                }
            )
    return rows
