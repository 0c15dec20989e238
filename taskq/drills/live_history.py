"""The Drills tab's history: queue depth, in flight, accepted and lost over the run.

Invariant: one sample per :meth:`History.record` call, oldest first, at most
:data:`MAX_SAMPLES` kept (the oldest dropped), each series as long as ``t``; a figure that
could not be read (Redis down) is ``None`` in its series, never a made-up 0.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

#: One sample a second for an hour: a drill or a Locust run of the web UI fits.
MAX_SAMPLES = 3600

#: The charted figures, in the order the tab shows them.
SERIES = ("queue depth", "in flight", "accepted", "lost")


@dataclass
class History:
    """Timestamped samples of :data:`SERIES`, thread-safe."""

    started: float
    _samples: deque[tuple[float, dict[str, int | None]]] = field(
        default_factory=lambda: deque(maxlen=MAX_SAMPLES)
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, at: float, figures: dict[str, int | None]) -> None:
        """Add the sample of ``figures`` (keyed by :data:`SERIES`) taken at ``at``."""
        with self._lock:
            self._samples.append((at, {name: figures.get(name) for name in SERIES}))

    def to_json(self) -> dict[str, Any]:
        """``{"t": [seconds since start], "series": {name: [value or null]}}``."""
        with self._lock:
            samples = list(self._samples)
        return {
            "t": [round(at - self.started, 3) for at, _ in samples],
            "series": {name: [values[name] for _, values in samples] for name in SERIES},
        }
