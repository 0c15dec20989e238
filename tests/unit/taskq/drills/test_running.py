"""Which tasks a fault caught running, from synthetic worker lines; and the live follower
of the worker logs, through a rotation."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from taskq.drills.inject_faults import FaultRecord
from taskq.drills.running import LogFollower, RunningNow, attach_running, ran_in_process, running_at

T0 = 1_800_000_000.0


def line(
    at: float, event: str, task: str, node: str = "worker-general", **extra: Any
) -> dict[str, Any]:
    return {
        "@timestamp": datetime.fromtimestamp(T0 + at, UTC).isoformat(),
        "event.action": event,
        "task_id": task,
        "service.name": "worker",
        "service.node.name": node,
        **extra,
    }


LINES = [
    line(0, "task.started", "a"),
    line(5, "task.succeeded", "a"),
    line(1, "task.started", "b", node="worker-high"),
    line(2, "task.retry", "b", node="worker-high"),
    line(3, "task.started", "b", node="worker-high"),
    line(9, "task.succeeded", "b", node="worker-high"),
    line(4, "task.received", "c"),  # received only: not running
    {"@timestamp": datetime.fromtimestamp(T0 + 1, UTC).isoformat(), "event.action": "x"},
]


def test_running_at_a_moment_on_one_worker_or_any() -> None:
    assert running_at(LINES, T0 + 4) == ["a", "b"]
    assert running_at(LINES, T0 + 4, "worker-general") == ["a"]
    assert running_at(LINES, T0 + 2.5, "worker-high") == []  # between its retry and rerun
    assert running_at(LINES, T0 + 6) == ["b"]
    assert running_at(LINES, T0 + 10) == []


def test_ran_in_process_matches_deliveries_by_attempt_id() -> None:
    lines = [
        line(0, "task.received", "a", **{"process.pid": 7, "task.attempt_id": "a1"}),
        line(0, "task.started", "a", **{"process.pid": 8, "task.attempt_id": "a1"}),
        # received by pid 7 but handed back before it started; it ran elsewhere
        line(1, "task.received", "b", **{"process.pid": 7, "task.attempt_id": "b1"}),
        line(2, "task.started", "b", **{"process.pid": 9, "task.attempt_id": "b2"}),
        line(0, "task.received", "c", **{"process.pid": 3, "task.attempt_id": "c1"}),
        line(0, "task.started", "c", **{"process.pid": 4, "task.attempt_id": "c1"}),
    ]
    assert ran_in_process(lines, 7, {"a", "b", "c"}) == ["a"]
    assert ran_in_process(lines, 7, {"b"}) == []


def test_attach_running_by_fault_kind() -> None:
    restart = FaultRecord("restart", "worker-general", 1, T0 + 4)
    api = FaultRecord("restart", "api-1", 2, T0 + 4)
    stall = FaultRecord("redis-stall", "redis", 3, T0 + 4)
    missed = FaultRecord("redis-stall", "redis", None, T0 + 4, "not injected")
    attach_running([restart, api, stall, missed], LINES, long_ids={"b"})
    assert (restart.running, restart.running_long) == (["a"], 0)
    assert (stall.running, stall.running_long) == (["a", "b"], 1)
    assert api.running is None and missed.running is None
    assert stall.to_json(T0)["running_tasks"] == 2
    assert stall.to_json(T0)["running_long_tasks"] == 1


def _append(path: Path, *rows: dict[str, Any]) -> None:
    with path.open("a") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def test_running_now_follows_the_logs_from_now_on_through_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / "worker-high.jsonl"
    _append(log, line(0, "task.started", "old", node="worker-high"))
    tracker = RunningNow(tmp_path, ["worker-high", "worker-general"])
    assert tracker.running() == {}  # what was there before is not read
    _append(log, line(1, "task.started", "x", node="worker-high"))
    with log.open("a") as handle:
        handle.write('{"event.action": "task.started", "task_id": "torn"')  # no newline yet
    assert set(tracker.running("worker-high")) == {"x"}
    log.rename(tmp_path / "worker-high.jsonl.1")  # the log keeper rotates
    _append(log, line(2, "task.succeeded", "x", node="worker-high"))
    tracker.poll()  # sees the rotation
    assert tracker.running() == {}
    _append(log, line(3, "task.started", "y", node="worker-high"))
    assert tracker.running() == {"y": T0 + 3}
    assert tracker.running("worker-general") == {}
    tracker.close()


def test_follower_of_a_file_not_there_yet(tmp_path: Path) -> None:
    follower = LogFollower(tmp_path / "later.jsonl")
    assert follower.read() == []
    (tmp_path / "later.jsonl").write_text('{"a": 1}\n')
    assert follower.read() == [b'{"a": 1}']
    follower.close()


def test_only_the_drills_own_tasks_count_as_caught(tmp_path: Path) -> None:
    """A maintenance task running on the victim is not work of the drill's."""
    restart = FaultRecord("worker-kill", "worker-general", 1, T0 + 4)
    attach_running([restart], LINES, long_ids=set(), among={"b"})
    assert restart.running == []
    log = tmp_path / "worker-high.jsonl"
    log.touch()
    tracker = RunningNow(tmp_path, ["worker-high"], id_prefix="drill-1")
    _append(
        log,
        line(1, "task.started", "sweep", node="worker-high", correlation_id="beat-9"),
        line(1, "task.started", "mine", node="worker-high", correlation_id="drill-1-abc"),
    )
    assert set(tracker.running()) == {"mine"}
    tracker.close()
