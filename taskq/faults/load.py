"""Steady task submissions through nginx while faults happen, recording every answer."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

#: (task_type, data, priority, weight): mostly instant tasks, some that hold a worker slot
#: long enough for a kill to catch them mid-run.
DEFAULT_MIX: tuple[tuple[str, Mapping[str, Any], str, int], ...] = (
    ("drill_echo", {"payload": "drill"}, "medium", 5),
    ("drill_echo", {"payload": "drill"}, "low", 2),
    ("drill_echo", {"payload": "drill"}, "high", 2),
    ("drill_sleep", {"seconds": 0.4}, "medium", 2),
    ("drill_sleep", {"seconds": 0.4}, "high", 1),
)


@dataclass(frozen=True)
class Submission:
    """One POST /api/v1/tasks: when, what came back, how long it took."""

    sent_at: float  # time.time()
    status: int  # HTTP status, 0 when no answer arrived
    elapsed_s: float
    correlation_id: str
    task_id: str | None
    error_code: str | None


@dataclass
class SteadyLoad:
    """Submit at about ``rate_per_s`` from ``threads`` threads until stopped, at most
    ``max_seconds`` and ``max_count`` submissions (every loop here is bounded)."""

    base_url: str
    rate_per_s: float = 40.0
    threads: int = 4
    max_seconds: float = 120.0
    max_count: int = 20_000
    seed: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    mix: tuple[tuple[str, Mapping[str, Any], str, int], ...] = DEFAULT_MIX
    submissions: list[Submission] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        """Start the submitting threads."""
        for index in range(self.threads):
            thread = threading.Thread(
                target=self._run, args=(index,), name=f"steady-load-{index}", daemon=True
            )
            self._workers.append(thread)
            thread.start()

    def stop(self) -> list[Submission]:
        """Stop and wait for the threads; return every submission, in send order."""
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout=30)
        with self._lock:
            return sorted(self.submissions, key=lambda s: s.sent_at)

    @property
    def accepted(self) -> list[Submission]:
        """Submissions answered 202 so far."""
        with self._lock:
            return [s for s in self.submissions if s.status == 202 and s.task_id]

    def _run(self, index: int) -> None:
        rng = random.Random(f"{self.seed}-{index}")
        period = self.threads / self.rate_per_s
        weights = [entry[3] for entry in self.mix]
        deadline = time.monotonic() + self.max_seconds
        next_at = time.monotonic() + rng.random() * period
        with httpx.Client(base_url=self.base_url, timeout=10.0, headers=dict(self.headers)) as http:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    if len(self.submissions) >= self.max_count:
                        return
                task_type, data, priority, _ = rng.choices(self.mix, weights)[0]
                self._submit(http, task_type, data, priority)
                next_at += period
                pause = next_at - time.monotonic()
                if pause > 0:
                    self._stop.wait(pause)
                else:
                    next_at = time.monotonic()  # behind: do not burst to catch up

    def _submit(
        self, http: httpx.Client, task_type: str, data: Mapping[str, Any], priority: str
    ) -> None:
        correlation_id = f"drill-{uuid.uuid4().hex[:16]}"
        submission = submit_task(http, task_type, data, priority, correlation_id)
        with self._lock:
            self.submissions.append(submission)


def submit_task(
    http: httpx.Client,
    task_type: str,
    data: Mapping[str, Any],
    priority: str,
    correlation_id: str,
) -> Submission:
    """One ``POST /api/v1/tasks`` (``http`` targets nginx), sent with ``correlation_id`` as
    its ``X-Request-ID``; what came back, as a :class:`Submission`."""
    body = {"task_type": task_type, "data": dict(data), "priority": priority}
    sent_at = time.time()
    started = time.monotonic()
    status, task_id, code = 0, None, None
    try:
        answer = http.post("/api/v1/tasks", json=body, headers={"X-Request-ID": correlation_id})
        status = answer.status_code
        payload = answer.json()
        if status == 202:
            task_id = str(payload["task_id"])
        else:
            code = str(payload.get("error", {}).get("code"))
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        code = type(exc).__name__
    return Submission(sent_at, status, time.monotonic() - started, correlation_id, task_id, code)
