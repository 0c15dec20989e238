"""What happened to every accepted task, from two independent sources.

* The API's ``GET /api/v1/tasks/{id}`` (the result backend) says whether each accepted task
  reached a terminal state: an accepted task that never does is **lost**.
* The JSON logs say how often each task ran: a task with two or more ``task.succeeded``
  lines **ran twice with effect** (a redelivery that the completion record suppresses
  writes only ``task.duplicate_suppressed``, never a second ``task.succeeded``). Its trace,
  rebuilt by ``taskq trace``'s own code (:mod:`taskq.faults.trace_check`), must show every
  hop; and the lines say when each task a killed worker held ran again (**recovery time**).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from taskq.faults.inject import Kill
from taskq.faults.load import Submission
from taskq.faults.trace_check import LineIndex, missing_hops
from taskq.logs.schema import ATTEMPT_OUTCOMES, Event

Line = dict[str, Any]
TERMINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
#: A worker line saying the task was delivered to, or run by, that worker.
DELIVERY_EVENTS = frozenset({Event.TASK_RECEIVED, Event.TASK_STARTED, Event.TASK_DUPLICATE})


def log_files(log_dir: Path) -> list[Path]:
    """Every JSON log file, the live ``*.jsonl`` and the rotated ``*.jsonl.N``."""
    rotated = [p for p in log_dir.glob("*.jsonl.*") if p.suffix[1:].isdigit()]
    return sorted([*log_dir.glob("*.jsonl"), *rotated])


def read_log_lines(log_dir: Path) -> Iterator[Line]:
    """Every complete JSON line of every log file, rotated ones included (a torn last line
    is skipped)."""
    for path in log_files(log_dir):
        text = path.read_text(encoding="utf-8", errors="replace")
        complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
        for raw in complete.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict):
                yield line


def line_time(line: Line) -> float:
    """The line's ``@timestamp`` as seconds since the epoch (0 when missing)."""
    try:
        return datetime.fromisoformat(str(line["@timestamp"])).timestamp()
    except (KeyError, ValueError):
        return 0.0


def api_statuses(
    base_url: str,
    task_ids: Sequence[str],
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Each task's status from the API, polling the unfinished ones until every one is
    terminal or ``timeout_s`` passed."""
    statuses: dict[str, str] = {}
    pending = list(dict.fromkeys(task_ids))
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base_url, timeout=5.0, headers=dict(headers or {})) as http:
        while pending:
            still = []
            for task_id in pending:
                try:
                    answer = http.get(f"/api/v1/tasks/{task_id}")
                    status = str(answer.json().get("status", f"HTTP {answer.status_code}"))
                except (httpx.HTTPError, ValueError):
                    status = "UNREACHABLE"
                statuses[task_id] = status
                if status not in TERMINAL_STATES:
                    still.append(task_id)
            pending = still
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
    return statuses


@dataclass(frozen=True)
class Recovery:
    """A task a killed worker held, and how long after the kill it was delivered again."""

    kill: Kill
    task_id: str
    seconds: float | None  # None: never delivered again


@dataclass
class Reconciliation:
    """The verdict of one drill."""

    submitted: int
    accepted: int
    rejected: Counter[str]
    statuses: Counter[str]
    lost: list[str]
    failed: list[str]
    duplicated: list[str]
    reruns: int
    suppressed: int
    #: correlation id -> the hops its trace lacks (nginx, api, published, ...).
    incomplete_traces: dict[str, str]
    recoveries: list[Recovery] = field(default_factory=list)
    #: Accepted submissions whose traces were checked (replays included).
    checked_traces: int = 0

    @property
    def trace_completeness(self) -> float:
        """Share of accepted correlation ids whose trace shows every hop (1.0 when none)."""
        if not self.checked_traces:
            return 1.0
        return 1.0 - len(self.incomplete_traces) / self.checked_traces

    @property
    def recovery_seconds(self) -> list[float]:
        """Recovery times of the held tasks that were delivered again."""
        return sorted(r.seconds for r in self.recoveries if r.seconds is not None)

    def recovery_summary(self) -> dict[str, float | None]:
        """min/median/max of the recovery times (None when no kill caught a task)."""
        values = self.recovery_seconds
        if not values:
            return {"min": None, "median": None, "max": None}
        return {"min": values[0], "median": statistics.median(values), "max": values[-1]}

    def summary(self) -> dict[str, Any]:
        """Plain numbers, for reports and JSON."""
        return {
            "submitted": self.submitted,
            "accepted": self.accepted,
            "rejected": dict(self.rejected),
            "statuses": dict(self.statuses),
            "lost": len(self.lost),
            "failed": len(self.failed),
            "duplicated_executions": len(self.duplicated),
            "redelivered_reruns": self.reruns,
            "duplicates_suppressed": self.suppressed,
            "incomplete_traces": len(self.incomplete_traces),
            "held_by_killed_workers": len(self.recoveries),
            "never_redelivered": sum(1 for r in self.recoveries if r.seconds is None),
            "recovery_s": self.recovery_summary(),
        }


def reconcile(
    submissions: Sequence[Submission],
    statuses: Mapping[str, str],
    lines: Iterable[Line],
    kills: Sequence[Kill] = (),
) -> Reconciliation:
    """Compare what was accepted with what the API and the logs say happened."""
    accepted = {s.task_id: s for s in submissions if s.status == 202 and s.task_id}
    index = LineIndex.of(lines)
    by_task: dict[str, list[Line]] = {t: index.by_task.get(t, []) for t in accepted}
    status_counts = Counter(statuses.get(t, "UNKNOWN") for t in accepted)
    lost = sorted(t for t in accepted if statuses.get(t) not in TERMINAL_STATES)
    failed = sorted(t for t in accepted if statuses.get(t) == "FAILURE")
    duplicated, reruns, suppressed = [], 0, 0
    for task_id in accepted:
        events = Counter(str(x.get("event.action")) for x in by_task[task_id])
        if events[Event.TASK_SUCCEEDED] >= 2:
            duplicated.append(task_id)
        reruns += events[Event.TASK_STARTED] > 1
        suppressed += events[Event.TASK_DUPLICATE]
    incomplete: dict[str, str] = {}
    for submission in submissions:
        if submission.status != 202 or not submission.task_id:
            continue
        trace = index.trace(submission.correlation_id)
        missing = missing_hops(trace, submission.task_id)
        if missing:
            incomplete[submission.correlation_id] = "no " + ", ".join(missing)
    rejected = Counter(
        s.error_code or str(s.status) for s in submissions if not (s.status == 202 and s.task_id)
    )
    return Reconciliation(
        submitted=len(submissions),
        accepted=len(accepted),
        rejected=rejected,
        statuses=status_counts,
        lost=lost,
        failed=failed,
        duplicated=sorted(duplicated),
        reruns=reruns,
        suppressed=suppressed,
        incomplete_traces=incomplete,
        recoveries=recoveries(kills, by_task),
        checked_traces=sum(1 for s in submissions if s.status == 202 and s.task_id),
    )


def recoveries(kills: Sequence[Kill], by_task: Mapping[str, list[Line]]) -> list[Recovery]:
    """For each whole-worker kill, the tasks that worker held (delivered to it since its
    previous kill and not finished there) and when each was delivered again."""
    found: list[Recovery] = []
    previous: dict[str, float] = {}
    for kill in sorted(kills, key=lambda k: k.at):
        since = previous.get(kill.program, 0.0)
        previous[kill.program] = kill.at
        if not kill.program.startswith("worker"):
            continue
        for task_id, lines in by_task.items():
            mine = [
                x
                for x in lines
                if x.get("service.node.name") == kill.program and since < line_time(x) <= kill.at
            ]
            if not any(x.get("event.action") in DELIVERY_EVENTS for x in mine):
                continue
            # An attempt's outcome: the worker was done with that delivery before the kill.
            if any(x.get("event.action") in ATTEMPT_OUTCOMES for x in mine):
                continue
            later = [
                line_time(x)
                for x in lines
                if x.get("event.action") in DELIVERY_EVENTS and line_time(x) > kill.at
            ]
            found.append(Recovery(kill, task_id, min(later) - kill.at if later else None))
    return found
