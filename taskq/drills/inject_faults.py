"""One fault against the local stack, by PID or process group (never by name), built on
:mod:`taskq.faults.inject`; and the wait until every ``/readyz`` answers 200 again."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psutil

from taskq.drills.plan import REDIS_PAUSE_MS
from taskq.faults import inject
from taskq.faults.readiness_probe import wait_all_ready
from taskq.logs.schema import ATTEMPT_OUTCOMES, TERMINAL_EVENTS, Event
from taskq.stack.layout import StackLayout

FAULT_KINDS = ("worker-kill", "pool-child-kill", "redis-kill", "redis-pause", "api-kill")


@dataclass
class FaultRecord:
    """A fault made, and how the stack recovered from it."""

    kind: str
    target: str
    pid: int | None
    at: float  # time.time()
    detail: str = ""
    #: When nginx and every replica answered /readyz 200 again (None: not within the bound).
    ready_at: float | None = None
    #: Tasks the fault interrupted, and the seconds until each started again.
    interrupted: int = 0
    redelivered_s: list[float | None] | None = None
    #: Tasks the fault caught running (taskq/drills/running.py); None: not counted.
    running: list[str] | None = None
    #: How many of them were the drill's own long tasks.
    running_long: int | None = None
    #: API faults: submissions the client had sent and not yet seen answered at ``at``.
    in_flight_requests: int | None = None
    #: Memory squeezes: submissions the client saw shed (503 broker_memory_full), and
    #: the fault's own figures (limits set, Redis's refusals, workers consuming again).
    shed: int | None = None
    figures: dict[str, Any] | None = None

    def to_json(self, run_started: float) -> dict[str, Any]:
        redelivered = [s for s in self.redelivered_s or [] if s is not None]
        return {
            "kind": self.kind,
            "target": self.target,
            "pid": self.pid,
            "time": datetime.fromtimestamp(self.at, UTC).isoformat(),
            "offset_s": round(self.at - run_started, 3),
            "detail": self.detail,
            "interrupted_tasks": self.interrupted,
            "never_redelivered": sum(1 for s in self.redelivered_s or [] if s is None),
            "recovery_s": {
                "redelivered_start": round(max(redelivered), 3) if redelivered else None,
                "readyz_200": None if self.ready_at is None else round(self.ready_at - self.at, 3),
            },
            "running_tasks": None if self.running is None else len(self.running),
            "running_long_tasks": self.running_long,
            "running_task_ids": (self.running or [])[:20],
            "in_flight_requests": self.in_flight_requests,
            "shed": self.shed,
            **({"figures": self.figures} if self.figures is not None else {}),
        }


def inject_fault(layout: StackLayout, kind: str, target: str, not_pid: int = 0) -> FaultRecord:
    """Inject ``kind`` into ``target`` now. A worker victim is first waited for until it
    consumes (``not_pid``: its PID killed before, which supervisord may still report)."""
    if kind == "worker-kill":
        inject.wait_worker_ready(layout, target, timeout_s=45, not_pid=not_pid)
        kill = inject.kill_program_group(layout, target)
        return FaultRecord(kind, target, kill.pid, kill.at, "SIGKILL to the process group")
    if kind == "pool-child-kill":
        inject.wait_worker_ready(layout, target, timeout_s=45)
        pid, busy = busy_pool_child(layout, target)
        kill = inject.kill_pid(pid, "pool-child")
        state = "mid-task" if busy else "idle (no task running in 5 s)"
        return FaultRecord(kind, target, pid, kill.at, f"SIGKILL to one pool child, {state}")
    if kind == "redis-kill":
        kill = inject.kill_redis(layout)
        return FaultRecord(kind, "redis", kill.pid, kill.at, "SIGKILL to redis-server")
    if kind == "redis-pause":
        at = time.time()
        inject.pause_redis(layout, REDIS_PAUSE_MS)
        return FaultRecord(kind, "redis", None, at, f"CLIENT PAUSE {REDIS_PAUSE_MS} ALL")
    if kind == "api-kill":
        kill = inject.kill_program_group(layout, target)
        return FaultRecord(kind, target, kill.pid, kill.at, "SIGKILL to one API replica")
    raise inject.FaultError(f"unknown fault {kind!r}; one of {', '.join(FAULT_KINDS)}")


def readiness_urls(layout: StackLayout) -> list[str]:
    """nginx and every API replica."""
    return [layout.base_url] + [f"http://{layout.bind_host}:{p}" for p in layout.api_ports]


def wait_recovered(layout: StackLayout, record: FaultRecord, timeout_s: float = 45.0) -> None:
    """Fill ``record.ready_at``: the first moment every ``/readyz`` answered 200 (a killed
    program is first waited for until supervisord runs it again)."""
    try:
        if record.kind in ("worker-kill", "redis-kill", "api-kill") and record.pid:
            inject.wait_running(layout, record.target, not_pid=record.pid, timeout_s=timeout_s)
        record.ready_at = wait_all_ready(readiness_urls(layout), timeout_s=timeout_s)
    except (inject.FaultError, TimeoutError) as exc:
        record.detail += f"; not recovered: {exc}"


def busy_pool_child(
    layout: StackLayout, program: str, timeout_s: float = 5.0, tail_bytes: int = 262_144
) -> tuple[int, bool]:
    """A pool child of ``program`` that is running a task now (from its ``task.started``
    lines without an end), else its first child; and whether it was busy."""
    main = psutil.Process(inject.program_pid(layout, program))
    deadline = time.monotonic() + timeout_s
    while True:
        children = {c.pid for c in main.children()}
        if not children:
            raise inject.FaultError(f"{program} has no pool child")
        running = _running_pids(layout, program, tail_bytes)
        busy = [pid for pid in running if pid in children]
        if busy:
            return busy[-1], True
        if time.monotonic() >= deadline:
            return min(children), False
        time.sleep(0.1)


def _running_pids(layout: StackLayout, program: str, tail_bytes: int) -> list[int]:
    """PIDs of the tasks started and not ended in the tail of ``program``'s log, oldest
    start first."""
    path = layout.log_dir / f"{program}.jsonl"
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - tail_bytes))
            chunk = handle.read()
    except OSError:
        return []
    started: dict[str, int] = {}
    for raw in chunk.splitlines()[1:]:
        if b'"task.' not in raw:
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        task_id, event = line.get("task_id"), line.get("event.action")
        if event == Event.TASK_STARTED and isinstance(line.get("process.pid"), int):
            started[str(task_id)] = int(line["process.pid"])
        elif event in ATTEMPT_OUTCOMES:
            started.pop(str(task_id), None)
    return list(started.values())


def pool_child_recoveries(
    record: FaultRecord, lines: Sequence[dict[str, Any]], line_time: Any
) -> list[float | None]:
    """For a pool-child kill: the tasks that child had started and not ended, and the
    seconds until each started again (None: never)."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if isinstance(line.get("task_id"), str):
            by_task.setdefault(line["task_id"], []).append(line)
    found: list[float | None] = []
    for task_lines in by_task.values():
        mine = [
            x
            for x in task_lines
            if x.get("process.pid") == record.pid and line_time(x) <= record.at
        ]
        if not any(x.get("event.action") == Event.TASK_STARTED for x in mine):
            continue
        if any(x.get("event.action") in TERMINAL_EVENTS for x in mine):
            continue
        later = [
            line_time(x)
            for x in task_lines
            if x.get("event.action") == Event.TASK_STARTED and line_time(x) > record.at
        ]
        found.append(min(later) - record.at if later else None)
    return found
