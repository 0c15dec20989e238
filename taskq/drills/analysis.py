"""From what was sent, what the API says and what the logs say, to the report's numbers:
reconciliation, latency percentiles before/during/after the faults, errors over time."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from taskq.drills.inject_faults import FaultRecord, pool_child_recoveries
from taskq.drills.monitor import Sample, queue_total
from taskq.faults.inject import Kill
from taskq.faults.load import Submission
from taskq.faults.reconcile import Line, Reconciliation, line_time, reconcile
from taskq.faults.trace_check import LineIndex

PHASES = ("before", "during", "after")
BUCKET_S = 5.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return round(ordered[rank - 1], 1)


def spread(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
    }


@dataclass
class Analysis:
    """Everything computed after the run."""

    verdict: Reconciliation
    window: tuple[float, float] | None  # first fault .. last recovery (time.time())
    task_end: dict[str, float] = field(default_factory=dict)  # correlation id -> task end
    task_e2e_ms: dict[str, float] = field(default_factory=dict)  # correlation id -> ms

    def phase(self, at: float) -> str:
        if self.window is None or at < self.window[0]:
            return "before"
        return "during" if at <= self.window[1] else "after"


def analyse(
    submissions: Sequence[Submission],
    statuses: dict[str, str],
    lines: list[Line],
    faults: Sequence[FaultRecord],
) -> Analysis:
    """Reconcile, attach each fault's recovery, and read every accepted task's timing from
    its trace (``taskq trace``'s reconstruction)."""
    kills = [Kill(f.target, f.pid or 0, f.at) for f in faults if f.kind == "worker-kill"]
    verdict = reconcile(submissions, statuses, lines, kills)
    for fault in faults:
        if fault.kind == "worker-kill":
            held = [r for r in verdict.recoveries if r.kill.at == fault.at]
            fault.redelivered_s = [r.seconds for r in held]
        elif fault.kind == "pool-child-kill":
            fault.redelivered_s = pool_child_recoveries(fault, lines, line_time)
        else:
            fault.redelivered_s = []
        fault.interrupted = len(fault.redelivered_s)
    ends = [f.at for f in faults]
    for fault in faults:
        recovered = [s for s in fault.redelivered_s or [] if s is not None]
        if fault.ready_at is not None:
            ends.append(fault.ready_at)
        if recovered:
            ends.append(fault.at + max(recovered))
    window = (min(f.at for f in faults), max(ends)) if faults else None
    result = Analysis(verdict, window)
    index = LineIndex.of(lines)
    for s in submissions:
        if s.status != 202 or not s.task_id:
            continue
        task = next(
            (t for t in index.trace(s.correlation_id).tasks if t.task_id == s.task_id), None
        )
        if task is not None and task.ended_at is not None:
            result.task_end[s.correlation_id] = task.ended_at.timestamp()
            if task.end_to_end_ms is not None:
                result.task_e2e_ms[s.correlation_id] = task.end_to_end_ms
    return result


def latency_by_phase(
    analysis: Analysis, submissions: Sequence[Submission]
) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """p50/p95/p99 of submissions (all answers) and of accepted tasks' end to end (publish
    to terminal), by the phase the submission was sent in."""
    submit: dict[str, list[float]] = defaultdict(list)
    e2e: dict[str, list[float]] = defaultdict(list)
    for s in submissions:
        phase = analysis.phase(s.sent_at)
        submit[phase].append(s.elapsed_s * 1000)
        if s.correlation_id in analysis.task_e2e_ms:
            e2e[phase].append(analysis.task_e2e_ms[s.correlation_id])
    return {
        "submission": {p: spread(submit[p]) for p in PHASES},
        "task_end_to_end": {p: spread(e2e[p]) for p in PHASES},
    }


def client_errors(submissions: Sequence[Submission], started: float) -> dict[str, Any]:
    """Answers other than 202, by status (0: no answer), in total and per 5 s bucket."""
    errors = [s for s in submissions if s.status != 202]
    buckets: dict[int, Counter[str]] = defaultdict(Counter)
    for s in errors:
        buckets[int((s.sent_at - started) // BUCKET_S)][str(s.status)] += 1
    return {
        "total": len(errors),
        "by_status": dict(Counter(str(s.status) for s in errors)),
        #: As the client saw them: the API's error code, else the status (0: no answer).
        "by_code": dict(Counter(s.error_code or str(s.status) for s in errors)),
        "bucket_s": BUCKET_S,
        "over_time": [
            {"t_s": b * BUCKET_S, **dict(counts)} for b, counts in sorted(buckets.items())
        ],
    }


def queue_summary(samples: Sequence[Sample], drained_at: float | None) -> dict[str, Any]:
    """Peak depth per queue (all priorities) and in total, and when the queues drained."""
    peaks: dict[str, int] = {}
    for sample in samples:
        for queue, steps in (sample.depth or {}).items():
            peaks[queue] = max(peaks.get(queue, 0), sum(steps.values()))
    totals = [t for s in samples if (t := queue_total(s)) is not None]
    return {
        "peak_waiting": peaks,
        "peak_total_with_unacked": max(totals, default=0),
        "drained": drained_at is not None,
    }
