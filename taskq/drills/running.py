"""Which tasks were running, where and when, from the workers' JSON lines.

* After the fact (:func:`running_at`, :func:`attach_running`): every line of the run says
  which tasks a fault caught running; that is the fault record's ``running_tasks``.
* Live (:class:`RunningNow`): the drill follows the worker logs while it runs, to wait
  until a victim is running a long task before it restarts or stalls anything.

A task runs from its ``task.started`` line to the attempt's outcome line (success, failure,
retry, lost, ...), on the node and process that wrote them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from taskq.drills.inject_faults import FaultRecord
from taskq.faults.load import Submission
from taskq.faults.reconcile import line_time
from taskq.logs.schema import ATTEMPT_OUTCOMES, Event

Line = dict[str, Any]
#: A byte test that skips every line that is not about a task, unparsed.
_TASK_MARK = b'"task.'


def _worker_task_line(line: Line) -> tuple[str, str, str] | None:
    """(node, task id, event) of a worker's start or outcome line, else None."""
    event = line.get("event.action")
    if event != Event.TASK_STARTED and event not in ATTEMPT_OUTCOMES:
        return None
    task_id, node = line.get("task_id"), line.get("service.node.name")
    if line.get("service.name") != "worker" or not isinstance(task_id, str):
        return None
    return str(node), task_id, str(event)


def running_at(lines: Iterable[Line], at: float, node: str | None = None) -> list[str]:
    """Tasks whose code was running at ``at`` (``time.time()``) on worker ``node`` (on any
    worker when None): started at or before ``at``, the attempt not ended by then."""
    events = []
    for line in lines:
        parsed = _worker_task_line(line)
        if parsed is None or (node is not None and parsed[0] != node):
            continue
        when = line_time(line)
        if when <= at:
            events.append((when, parsed))
    running: set[tuple[str, str]] = set()
    for _, (where, task_id, event) in sorted(events):
        if event == Event.TASK_STARTED:
            running.add((where, task_id))
        else:
            running.discard((where, task_id))
    return sorted({task_id for _, task_id in running})


def ran_in_process(lines: Iterable[Line], main_pid: int, among: Collection[str]) -> list[str]:
    """Of the tasks ``among``, those that a worker whose main process is ``main_pid`` ran:
    deliveries it received (``task.received``) that its pool started, matched by attempt id
    (its clock stamped the lines, so no time is compared)."""
    received: dict[str, str] = {}
    started: set[str] = set()
    for line in lines:
        task_id, attempt = line.get("task_id"), line.get("task.attempt_id")
        if task_id not in among or not isinstance(attempt, str):
            continue
        event = line.get("event.action")
        if event == Event.TASK_RECEIVED and line.get("process.pid") == main_pid:
            received[attempt] = str(task_id)
        elif event == Event.TASK_STARTED:
            started.add(attempt)
    return sorted({task_id for attempt, task_id in received.items() if attempt in started})


def attach_running(
    faults: Sequence[FaultRecord],
    lines: list[Line],
    long_ids: Collection[str],
    among: Collection[str] | None = None,
) -> None:
    """Fill each fault's ``running``: a worker restart or kill, the tasks running on its
    victim when it got the signal; a Redis fault, the tasks running anywhere then; a clock
    skew, the long tasks the skewed worker ran. Other faults keep None (not counted).
    ``among``: count only these tasks (the drill's own accepted ones: a maintenance task
    caught running proves nothing about them)."""
    for fault in faults:
        if fault.detail.startswith("not injected"):
            continue
        worker_fault = fault.kind in ("restart", "worker-kill", "pool-child-kill")
        if worker_fault and fault.target.startswith("worker"):
            fault.running = running_at(lines, fault.at, fault.target)
        elif fault.kind in ("redis-stall", "redis-kill", "redis-pause", "redis-oom"):
            fault.running = running_at(lines, fault.at)
        elif fault.kind == "clock-skew" and fault.pid is not None:
            fault.running = ran_in_process(lines, fault.pid, long_ids)
        if fault.running is not None and among is not None:
            fault.running = [t for t in fault.running if t in among]
        if fault.running is not None:
            fault.running_long = sum(1 for t in fault.running if t in long_ids)


class LogFollower:
    """New complete lines of one log file since it was opened; follows a rotation (the
    file renamed away and a new one created under the same name)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[bytes] | None = None
        self._partial = b""
        self._open(at_end=True)

    def _open(self, at_end: bool) -> None:
        try:
            self._handle = self.path.open("rb")
        except OSError:
            self._handle = None
            return
        if at_end:
            self._handle.seek(0, os.SEEK_END)

    def read(self) -> list[bytes]:
        if self._handle is None:
            self._open(at_end=False)
            if self._handle is None:
                return []
        data = self._partial + self._handle.read()
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        try:
            rotated = os.stat(self.path).st_ino != os.fstat(self._handle.fileno()).st_ino
        except OSError:
            rotated = False
        if rotated:
            self._handle.close()
            self._handle, self._partial = None, b""
        return data[:cut].splitlines()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


class RunningNow:
    """The tasks running on each worker right now, from the worker logs followed live
    (from the moment this object was made: start it before the tasks it must see); with
    ``id_prefix``, only the tasks of one drill."""

    def __init__(self, log_dir: Path, nodes: Sequence[str], id_prefix: str | None = None) -> None:
        #: Only tasks whose correlation id starts with this (a drill's own), when given.
        self.id_prefix = id_prefix
        self._followers = [LogFollower(log_dir / f"{node}.jsonl") for node in nodes]
        #: (node, task id) -> time of its task.started line.
        self._running: dict[tuple[str, str], float] = {}

    def poll(self) -> None:
        """Read what the workers logged since the last poll."""
        for follower in self._followers:
            for raw in follower.read():
                if _TASK_MARK not in raw:
                    continue
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                parsed = _worker_task_line(line) if isinstance(line, dict) else None
                if parsed is None:
                    continue
                node, task_id, event = parsed
                if self.id_prefix and not str(line.get("correlation_id", "")).startswith(
                    self.id_prefix
                ):
                    continue
                if event == Event.TASK_STARTED:
                    self._running[(node, task_id)] = line_time(line)
                else:
                    self._running.pop((node, task_id), None)

    def running(self, node: str | None = None) -> dict[str, float]:
        """Task id -> start time of the tasks running on ``node`` (any worker: None)."""
        self.poll()
        return {t: at for (n, t), at in self._running.items() if node is None or n == node}

    def close(self) -> None:
        for follower in self._followers:
            follower.close()


def attach_in_flight(faults: Sequence[FaultRecord], submissions: Sequence[Submission]) -> None:
    """Fill each API fault's ``in_flight_requests``: submissions sent before it and answered
    (as the client saw) after it."""
    for fault in faults:
        if fault.kind == "api-kill" or fault.target.startswith("api"):
            fault.in_flight_requests = sum(
                1 for s in submissions if s.sent_at <= fault.at <= s.sent_at + s.elapsed_s
            )
