"""Samples taken once a second while a drill runs: queue depth per queue and priority,
/readyz of nginx and of every replica, and Locust's CPU."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
from redis import Redis
from redis.exceptions import RedisError

from taskq.broker.queue_depth import read_step_depths
from taskq.faults.readiness_probe import readyz_statuses
from taskq.settings import QUEUES
from taskq.stack.layout import StackLayout


@dataclass
class Sample:
    """One second of the drill."""

    at: float
    #: queue -> priority step -> waiting messages (None: Redis did not answer).
    depth: dict[str, dict[int, int]] | None
    unacked: int | None
    readyz: list[int]
    locust_cpu: float | None


def read_priority_depths(client: Redis, queues: tuple[str, ...] = QUEUES) -> dict[str, Any]:
    """Waiting messages per queue and priority step, and the unacked count."""
    depth, unacked = read_step_depths(client, queues)
    return {"depth": depth, "unacked": unacked}


def wait_until_drained(client: Redis, timeout_s: float, poll_s: float = 0.3) -> bool:
    """Until no message waits or is unacknowledged (True), or ``timeout_s`` passed (False);
    a reading Redis does not answer is taken again (a drill's fault may still be healing)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            read = read_priority_depths(client)
            waiting = sum(sum(p.values()) for p in read["depth"].values())
            if waiting + read["unacked"] == 0:
                return True
        except (RedisError, OSError):
            pass
        time.sleep(poll_s)
    return False


@dataclass
class Monitor:
    """A daemon thread sampling until stopped (at most ``max_s`` seconds)."""

    layout: StackLayout
    max_s: float
    interval_s: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    locust_pid: int | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def urls(self) -> list[str]:
        replicas = [f"http://{self.layout.bind_host}:{p}" for p in self.layout.api_ports]
        return [self.layout.base_url, *replicas]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="drill-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return list(self.samples)

    def _locust_cpu(self, process: psutil.Process | None) -> float | None:
        if process is None:
            return None
        try:
            return float(process.cpu_percent(interval=None))
        except psutil.Error:
            return None

    def _run(self) -> None:
        client = Redis.from_url(self.layout.redis_url(), socket_timeout=0.5)
        process: psutil.Process | None = None
        deadline = time.monotonic() + self.max_s
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                if process is None and self.locust_pid:
                    try:
                        process = psutil.Process(self.locust_pid)
                        process.cpu_percent(interval=None)
                    except psutil.Error:
                        process = None
                try:
                    read = read_priority_depths(client)
                    depth, unacked = read["depth"], read["unacked"]
                except (RedisError, OSError):
                    depth, unacked = None, None
                statuses = readyz_statuses(self.urls, timeout_s=0.5)
                self.samples.append(
                    Sample(time.time(), depth, unacked, statuses, self._locust_cpu(process))
                )
                self._stop.wait(self.interval_s)
        finally:
            client.close()


def queue_total(sample: Sample) -> int | None:
    """Waiting plus unacked messages in one sample (None when Redis did not answer)."""
    if sample.depth is None or sample.unacked is None:
        return None
    return sum(sum(p.values()) for p in sample.depth.values()) + sample.unacked
