"""The drill's seeded long tasks, and which of them count as running on a victim."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from taskq.drills.long_tasks import (
    LONG_MAX_S,
    LONG_MIN_S,
    MAX_PLANNED,
    MIN_LEFT_S,
    LongTasks,
    long_task_plan,
    victim_priority,
)
from taskq.drills.running import RunningNow


def test_the_plan_is_seeded_bounded_and_spread() -> None:
    plan = long_task_plan(seed=4, horizon_s=40)
    assert plan == long_task_plan(seed=4, horizon_s=40)
    assert plan != long_task_plan(seed=5, horizon_s=40)
    assert 3 <= len(plan) <= 9
    assert all(LONG_MIN_S <= t.seconds <= LONG_MAX_S for t in plan)
    offsets = [t.offset_s for t in plan]
    assert offsets == sorted(offsets) and offsets[0] == 0.5 and offsets[-1] < 40
    assert {t.priority for t in long_task_plan(seed=1, horizon_s=200)} == {"high", "medium", "low"}
    assert len(long_task_plan(seed=1, horizon_s=10_000, every_s=1)) == MAX_PLANNED


@pytest.mark.parametrize(
    ("node", "priority"), [("worker-high", "high"), ("worker-general", "medium"), (None, "high")]
)
def test_an_aimed_task_goes_to_a_queue_the_victim_consumes(node: str | None, priority: str) -> None:
    assert victim_priority(node) == priority


class FixedRunning(RunningNow):
    """A tracker that reports fixed running tasks."""

    def __init__(self, running: dict[str, dict[str, float]]) -> None:
        super().__init__(Path("/nonexistent"), [])
        self.by_node = running

    def running(self, node: str | None = None) -> dict[str, float]:
        if node is None:
            return {t: at for tasks in self.by_node.values() for t, at in tasks.items()}
        return dict(self.by_node.get(node, {}))


def test_running_long_counts_our_long_tasks_with_time_left() -> None:
    now = time.time()
    tracker = FixedRunning(
        {
            "worker-high": {"long-a": now - 1, "echo": now - 0.1},
            "worker-general": {"long-b": now - 9.9},  # 10 s task, ends in 0.1 s
        }
    )
    tasks = LongTasks("http://127.0.0.1:9", "p", [], tracker)
    tasks.seconds.update({"long-a": 8.0, "long-b": 10.0})
    assert tasks.running_long("worker-high") == ["long-a"]
    assert tasks.running_long("worker-general") == []  # less than MIN_LEFT_S left
    assert tasks.running_long(None) == ["long-a"]
    assert MIN_LEFT_S > 0.1
