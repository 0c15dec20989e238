"""The drill's own long tasks: ``drill_sleep`` of 5-20 s, so that a restart or a stall
always catches tasks running.

A thread submits a seeded plan of them through nginx while the faults happen; before each
fault the drill can :meth:`LongTasks.aim` at its victim (submit more, on a queue the victim
consumes, until the victim is running one). Every submission is recorded like a Locust
user's (:class:`taskq.faults.load.Submission`) and reconciled with the rest.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx

from taskq.drills.running import RunningNow
from taskq.faults.load import Submission, submit_task

LONG_MIN_S = 5.0
LONG_MAX_S = 20.0
#: Mean gap between two planned long tasks: about two run at any time (four pool slots).
EVERY_S = 8.0
MAX_PLANNED = 60
#: Extra tasks one :meth:`LongTasks.aim` may submit, and how long one waits to start.
MAX_AIMED = 4
AIM_PATIENCE_S = 4.0
#: A task that ends sooner than this is not counted as caught: it may end before the fault.
MIN_LEFT_S = 1.5
PRIORITIES = ("high", "medium", "low")
#: Submissions wait longer than the longest stall a drill makes.
HTTP_TIMEOUT_S = 45.0


@dataclass(frozen=True)
class LongTask:
    """One planned submission: seconds after the load starts, its length, its priority."""

    offset_s: float
    seconds: float
    priority: str


def long_task_plan(seed: int, horizon_s: float, every_s: float = EVERY_S) -> list[LongTask]:
    """Long tasks from the start to ``horizon_s``, about one per ``every_s`` (at most
    :data:`MAX_PLANNED`); lengths, gaps and priorities drawn from ``seed``."""
    rng = random.Random(f"long-{seed}")
    plan: list[LongTask] = []
    offset = 0.5
    while offset < horizon_s and len(plan) < MAX_PLANNED:
        seconds = round(rng.uniform(LONG_MIN_S, LONG_MAX_S), 1)
        plan.append(LongTask(round(offset, 3), seconds, rng.choice(PRIORITIES)))
        offset += every_s * rng.uniform(0.6, 1.4)
    return plan


def victim_priority(node: str | None) -> str:
    """A priority whose queue ``node`` consumes: worker-high takes only ``high``;
    ``medium`` goes to worker-general alone."""
    return "high" if node in (None, "worker-high") else "medium"


@dataclass
class LongTasks:
    """Submits the plan from a thread (bounded by the plan and :meth:`stop`) and the aimed
    extras from the caller's thread; remembers every submission and each task's length."""

    base_url: str
    id_prefix: str
    plan: list[LongTask]
    tracker: RunningNow
    seed: int = 1
    submissions: list[Submission] = field(default_factory=list)
    #: Accepted task id -> its seconds.
    seconds: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(f"aim-{self.seed}")

    def start(self) -> None:
        """Submit the plan, its offsets counted from now."""
        self._thread = threading.Thread(target=self._run, name="drill-long-tasks", daemon=True)
        self._thread.start()

    def stop(self) -> list[Submission]:
        """Stop submitting (what was sent stays sent); every submission, in send order."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HTTP_TIMEOUT_S + 5)
        with self._lock:
            return sorted(self.submissions, key=lambda s: s.sent_at)

    def _run(self) -> None:
        began = time.monotonic()
        with httpx.Client(base_url=self.base_url, timeout=HTTP_TIMEOUT_S) as http:
            for task in self.plan:
                if self._stop.wait(max(0.0, began + task.offset_s - time.monotonic())):
                    return
                self._submit(http, task.seconds, task.priority)

    def _submit(self, http: httpx.Client, seconds: float, priority: str) -> str | None:
        correlation_id = f"{self.id_prefix}-long-{uuid.uuid4().hex[:20]}"
        body = {"seconds": seconds}
        submission = submit_task(http, "drill_sleep", body, priority, correlation_id)
        with self._lock:
            self.submissions.append(submission)
            if submission.status == 202 and submission.task_id:
                self.seconds[submission.task_id] = seconds
        return submission.task_id

    def running_long(self, node: str | None) -> list[str]:
        """Long tasks running on ``node`` (any worker: None) with at least
        :data:`MIN_LEFT_S` of their sleep left."""
        now = time.time()
        with self._lock:
            seconds = dict(self.seconds)
        return sorted(
            task_id
            for task_id, started in self.tracker.running(node).items()
            if task_id in seconds and started + seconds[task_id] - now >= MIN_LEFT_S
        )

    def aim(self, node: str | None, timeout_s: float = 25.0) -> list[str]:
        """Wait until ``node`` (any worker: None) runs a long task, submitting extra ones
        on a queue it consumes (at most :data:`MAX_AIMED`, one per
        :data:`AIM_PATIENCE_S`); the long tasks it runs then (empty: none in time)."""
        deadline = time.monotonic() + timeout_s
        aimed, last = 0, float("-inf")
        with httpx.Client(base_url=self.base_url, timeout=HTTP_TIMEOUT_S) as http:
            while time.monotonic() < deadline:
                running = self.running_long(node)
                if running:
                    return running
                if aimed < MAX_AIMED and time.monotonic() - last >= AIM_PATIENCE_S:
                    seconds = round(self._rng.uniform(LONG_MIN_S, LONG_MAX_S), 1)
                    self._submit(http, seconds, victim_priority(node))
                    aimed, last = aimed + 1, time.monotonic()
                time.sleep(0.2)
        return []
