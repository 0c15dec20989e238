"""The report's PNG plots (matplotlib, Agg backend): throughput, latency and errors over
time with the faults marked, and queue depth per queue."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from taskq.drills.analysis import Analysis
from taskq.drills.inject_faults import FaultRecord
from taskq.drills.monitor import Sample
from taskq.faults.load import Submission


def _mark_faults(axis: Axes, faults: Sequence[FaultRecord], started: float) -> None:
    for i, fault in enumerate(faults):
        label = "fault" if i == 0 else None
        axis.axvline(fault.at - started, color="red", linestyle="--", alpha=0.7, label=label)
        if fault.ready_at is not None:
            axis.axvspan(fault.at - started, fault.ready_at - started, color="red", alpha=0.08)


def _per_second(times: Sequence[float], started: float) -> tuple[list[int], list[int]]:
    counts = Counter(int(t - started) for t in times if t >= started)
    if not counts:
        return [], []
    xs = list(range(0, max(counts) + 1))
    return xs, [counts.get(x, 0) for x in xs]


def write_plots(
    out: Path,
    started: float,
    submissions: Sequence[Submission],
    analysis: Analysis,
    faults: Sequence[FaultRecord],
    samples: Sequence[Sample],
) -> list[str]:
    """Write the PNGs into ``out``; their file names."""
    names = []
    figure, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    throughput, latency, errors = axes
    accepted = [s.sent_at + s.elapsed_s for s in submissions if s.status == 202]
    for label, times in (("accepted/s", accepted), ("finished/s", analysis.task_end.values())):
        xs, ys = _per_second(list(times), started)
        throughput.plot(xs, ys, label=label)
    throughput.set_ylabel("tasks per second")
    throughput.set_title("Throughput")
    xs_sub = [s.sent_at - started for s in submissions]
    latency.scatter(xs_sub, [s.elapsed_s * 1000 for s in submissions], s=4, label="submission")
    e2e = [
        (s.sent_at - started, analysis.task_e2e_ms[s.correlation_id])
        for s in submissions
        if s.correlation_id in analysis.task_e2e_ms
    ]
    if e2e:
        latency.scatter(*zip(*e2e, strict=True), s=4, label="task end to end")
    latency.set_yscale("log")
    latency.set_ylabel("ms (log)")
    latency.set_title("Latency")
    statuses = sorted({s.status for s in submissions if s.status != 202})
    for status in statuses:
        xs, ys = _per_second([s.sent_at for s in submissions if s.status == status], started)
        errors.plot(xs, ys, label=f"HTTP {status}" if status else "no answer")
    errors.set_ylabel("per second")
    errors.set_title("Client errors" + ("" if statuses else " (none)"))
    errors.set_xlabel("seconds since the load started")
    for axis in axes:
        _mark_faults(axis, faults, started)
        axis.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    figure.savefig(out / "timeline.png", dpi=80)
    plt.close(figure)
    names.append("timeline.png")

    figure, axis = plt.subplots(figsize=(10, 4))
    queues = sorted({q for s in samples for q in (s.depth or {})})
    for queue in queues:
        points = [
            (s.at - started, sum(s.depth[queue].values())) for s in samples if s.depth is not None
        ]
        if points:
            axis.plot(*zip(*points, strict=True), label=f"{queue} (all priorities)")
    unacked = [(s.at - started, s.unacked) for s in samples if s.unacked is not None]
    if unacked:
        axis.plot(*zip(*unacked, strict=True), label="unacked", linestyle=":")
    _mark_faults(axis, faults, started)
    axis.set_title("Queue depth per queue")
    axis.set_xlabel("seconds since the load started")
    axis.set_ylabel("messages")
    axis.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    figure.savefig(out / "queue-depth.png", dpi=80)
    plt.close(figure)
    names.append("queue-depth.png")
    return names
