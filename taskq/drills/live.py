"""Live pipeline figures for the Locust web UI's Drills tab: accepted, finished, in flight,
lost so far, end-to-end percentiles and redeliveries (from the workers' log lines, read
incrementally), and queue depth per queue and priority (from Redis)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from taskq.drills.analysis import percentile
from taskq.drills.monitor import read_priority_depths
from taskq.faults.reconcile import line_time
from taskq.logs.schema import TERMINAL_EVENTS, Event
from taskq.stack.layout import StackLayout

#: An accepted task without an end after this long counts as lost so far.
LOST_AFTER_S = 60.0


@dataclass
class LiveFigures:
    """Fed by Locust's request events (accepted) and by the worker logs (the rest)."""

    layout: StackLayout
    accepted: dict[str, float] = field(default_factory=dict)  # task id -> time accepted
    finished: dict[str, float] = field(default_factory=dict)  # task id -> end line time
    redeliveries: int = 0
    _offsets: dict[Path, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def accept(self, task_id: str) -> None:
        with self._lock:
            self.accepted.setdefault(task_id, time.time())

    def _read_logs(self) -> None:
        for path in sorted(self.layout.log_dir.glob("worker-*.jsonl")):
            offset = self._offsets.get(path, 0)
            try:
                size = path.stat().st_size
                if size < offset:  # rotated
                    offset = 0
                with path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read(8_000_000)
            except OSError:
                continue
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._offsets[path] = offset + len(complete)
            for raw in complete.splitlines():
                if b'"task.' not in raw:
                    continue
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                self._take(line)

    def _take(self, line: dict[str, Any]) -> None:
        event, task_id = line.get("event.action"), str(line.get("task_id"))
        if event == Event.TASK_STARTED and line.get("task.redelivered"):
            self.redeliveries += 1
        elif event in TERMINAL_EVENTS and task_id not in self.finished:
            self.finished[task_id] = line_time(line)

    def counts(self) -> tuple[int, int]:
        """Accepted tasks, and how many of them finished (read from the logs now)."""
        with self._lock:
            self._read_logs()
            return len(self.accepted), sum(1 for t in self.accepted if t in self.finished)

    def sample(self) -> dict[str, int | None]:
        """The charted figures now (taskq.drills.live_history.SERIES): waiting messages over
        every queue and priority (None when Redis does not answer), in flight, accepted and
        lost so far."""
        with self._lock:
            self._read_logs()
            now = time.time()
            waiting = [t for t in self.accepted if t not in self.finished]
            figures: dict[str, int | None] = {
                "accepted": len(self.accepted),
                "in flight": len(waiting),
                "lost": sum(1 for t in waiting if now - self.accepted[t] > LOST_AFTER_S),
            }
        client = Redis.from_url(self.layout.redis_url(), socket_timeout=0.5)
        try:
            read = read_priority_depths(client)
            figures["queue depth"] = sum(
                c for steps in read["depth"].values() for c in steps.values()
            )
        except (RedisError, OSError):
            figures["queue depth"] = None
        finally:
            client.close()
        return figures

    def rows(self) -> list[dict[str, Any]]:
        """The Drills tab's rows (figure, value)."""
        with self._lock:
            self._read_logs()
            now = time.time()
            done = [t for t in self.accepted if t in self.finished]
            e2e = [(self.finished[t] - self.accepted[t]) * 1000 for t in done]
            waiting = [t for t in self.accepted if t not in self.finished]
            rows: list[tuple[str, Any]] = [
                ("accepted", len(self.accepted)),
                ("finished", len(done)),
                ("in flight", len(waiting)),
                (
                    f"lost so far (no end after {LOST_AFTER_S:.0f} s)",
                    sum(1 for t in waiting if now - self.accepted[t] > LOST_AFTER_S),
                ),
                ("task end-to-end p50 ms", percentile(e2e, 50)),
                ("task end-to-end p95 ms", percentile(e2e, 95)),
                ("redeliveries", self.redeliveries),
            ]
        client = Redis.from_url(self.layout.redis_url(), socket_timeout=0.5)
        try:
            read = read_priority_depths(client)
            for queue, steps in read["depth"].items():
                for step, count in steps.items():
                    rows.append((f"queue {queue} priority {step}", count))
            rows.append(("unacked", read["unacked"]))
        except (RedisError, OSError):
            rows.append(("queue depth", "Redis does not answer"))
        finally:
            client.close()
        return [{"name": name, "value": value} for name, value in rows]
