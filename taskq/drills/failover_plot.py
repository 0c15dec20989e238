"""The broker-failover timeline: one time axis (the drill's monotonic clock), a row per
broker node (its role), the probe write, each API replica's ``/readyz``, and the client's
answers per second; every fault marked, its window to promotion shaded."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from taskq.drills.failover_probes import Reading
from taskq.faults.load import Submission

#: Colours of the states of a row.
COLOURS = {"master": "tab:green", "slave": "tab:blue", "ok": "tab:green", "200": "tab:green"}
OTHER = "tab:red"


def _spans(readings: Sequence[Reading], subject: str, end: float) -> list[tuple[float, float, str]]:
    """(start, width, value) of each run of equal values of ``subject``."""
    rows = [r for r in readings if r.subject == subject]
    spans: list[tuple[float, float, str]] = []
    for i, reading in enumerate(rows):
        until = rows[i + 1].at if i + 1 < len(rows) else end
        if spans and spans[-1][2] == reading.value:
            start, _, value = spans[-1]
            spans[-1] = (start, until - start, value)
        else:
            spans.append((reading.at, until - reading.at, reading.value))
    return spans


def write_timeline(
    out: Path,
    origin: float,
    wall_origin: float,
    readings: Sequence[Reading],
    submissions: Sequence[Submission],
    faults: Sequence[tuple[float, float | None, str]],
    subjects: Sequence[tuple[str, str]],
) -> str:
    """Write ``failover-timeline.png``; ``faults`` are (at, promoted_at, mode), monotonic;
    ``subjects`` (subject, label) are the rows, top to bottom. Returns the file name."""
    end = max((r.at for r in readings), default=origin)
    figure, (states, answers) = plt.subplots(
        2, 1, figsize=(11, 2 + 0.45 * len(subjects) + 3), sharex=True, height_ratios=(2, 1)
    )
    for row, (subject, _) in enumerate(subjects):
        for start, width, value in _spans(readings, subject, end):
            colour = COLOURS.get(value, OTHER)
            states.broken_barh([(start - origin, width)], (row - 0.4, 0.8), color=colour)
    states.set_yticks(range(len(subjects)), [label for _, label in subjects])
    states.invert_yaxis()
    states.set_title(
        "Failover timeline (green: master / writable / ready; blue: replica; red: down)"
    )
    # The client's clock is wall time: its answers are placed by their offset from the
    # load's start, which the drill took on both clocks at one moment.
    for status in sorted({s.status for s in submissions}):
        counts = Counter(int(s.sent_at - wall_origin) for s in submissions if s.status == status)
        xs = sorted(counts)
        label = f"HTTP {status}" if status else "no answer"
        answers.plot(xs, [counts[x] for x in xs], label=label, drawstyle="steps-post")
    answers.set_ylabel("answers per second")
    answers.set_xlabel("seconds since the drill started")
    answers.legend(loc="upper right", fontsize="small")
    for axis in (states, answers):
        for i, (at, promoted, mode) in enumerate(faults):
            axis.axvline(
                at - origin, color="black", linestyle="--", alpha=0.7, label=None if i else "fault"
            )
            if promoted is not None:
                axis.axvspan(at - origin, promoted - origin, color="red", alpha=0.1)
            if axis is states:
                axis.text(at - origin, -0.6, mode, fontsize="small")
    figure.tight_layout()
    figure.savefig(out / "failover-timeline.png", dpi=80)
    plt.close(figure)
    return "failover-timeline.png"
