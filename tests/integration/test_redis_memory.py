"""Near and at Redis's ``maxmemory`` nothing wedges and nothing is forgotten.

Under steady load, ``maxmemory`` is lowered to just above the memory in use: the API must
shed with ``503 broker_memory_full`` before Redis refuses writes. Then it is lowered to the
memory in use (Redis now refuses every write that is not flagged ``allow-oom``: new pops
and submissions) while tasks are in flight, and lifted again. The truths: every 202 ends
SUCCESS according to the API, the execution witness saw each run exactly once, Redis
itself counted refused (OOM) commands (the fault hit something), and every worker runs
new work after the lift.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from redis import Redis

from taskq.faults import inject
from taskq.faults.load import SteadyLoad
from taskq.faults.reconcile import api_statuses
from taskq.faults.witness import executions, witness_client
from tests.integration.conftest import stack_settings, start_stack, stop_stack
from tests.integration.stack_client import RunningStack

WORKERS = ("worker-high", "worker-general")


@pytest.fixture(scope="module")
def memory_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(stack_settings(tmp_path_factory.mktemp("oom"), breaker_cache_s=0.1))
    try:
        yield running
    finally:
        stop_stack(running)


def _oom_refusals(client: Redis) -> int:
    stats = client.info("errorstats")
    return int(stats.get("errorstat_OOM", {}).get("count", 0))


def _wait_for(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.1)


def _under_pressure(client: Redis) -> bool:
    memory = client.info("memory")
    return int(memory["used_memory"]) >= 0.9 * int(memory["maxmemory"]) > 0


def _assert_readyz_names_the_pressure(stack: RunningStack, client: Redis) -> None:
    """/readyz against Redis's own reading: an answer bracketed by two readings that both
    show pressure must name it (memory moves while tasks finish, so a single reading next to
    the answer proves nothing); bounded."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        before = _under_pressure(client)
        ready = stack.http.get("/readyz")
        if before and _under_pressure(client):
            assert ready.status_code == 503, ready.text
            assert "pressure" in ready.json()["error"]["details"]["memory"], ready.text
            return
        time.sleep(0.05)
    raise AssertionError("Redis never stayed under memory pressure around a /readyz answer")


def test_memory_pressure_sheds_then_recovers(memory_stack: RunningStack) -> None:
    stack = memory_stack
    for program in WORKERS:
        inject.wait_worker_ready(stack.layout, program, timeout_s=60)
    client = Redis.from_url(stack.settings.broker_url)
    refused_before = _oom_refusals(client)
    load = SteadyLoad(stack.layout.base_url, rate_per_s=40, threads=4, max_seconds=60, seed=7)
    load.start()
    try:
        _wait_for(lambda: len(load.accepted) >= 40, 30, "40 tasks accepted")
        used = int(client.info("memory")["used_memory"])
        # Shedding starts at 90 % of the limit: the limit sits just above what is in use.
        client.config_set("maxmemory", str(int(used / 0.9) + 256 * 1024))
        _wait_for(
            lambda: any(s.error_code == "broker_memory_full" for s in load.submissions),
            30,
            "a submission shed for memory",
        )
        # Past the limit: Redis itself refuses writes while tasks are still in flight. At
        # exactly the memory in use it refuses only once a write has grown it (Redis
        # refuses when used > maxmemory), which a draining queue may never do.
        over = int(client.info("memory")["used_memory"]) - 64 * 1024
        client.config_set("maxmemory", str(over))
        _wait_for(lambda: _oom_refusals(client) > refused_before, 30, "Redis refused a write")
        _assert_readyz_names_the_pressure(stack, client)
        time.sleep(2.0)  # the fault's length: load and workers keep running into the limit
    finally:
        client.config_set("maxmemory", "0")
        lifted_at = time.time()
        submissions = load.stop()
    accepted = [s.task_id for s in submissions if s.status == 202 and s.task_id]
    codes = {s.error_code for s in submissions if s.status != 202}
    assert codes <= {"broker_memory_full"}, codes  # no 500, no other refusal
    statuses = api_statuses(stack.layout.base_url, accepted, timeout_s=90)
    assert set(statuses.values()) == {"SUCCESS"}, {
        k: v for k, v in statuses.items() if v != "SUCCESS"
    }
    stack.wait_until_released(accepted, timeout_s=60)
    runs = executions(witness_client(stack.settings.broker_url), accepted)
    assert runs.never_ran(accepted) == [] and runs.duplicated() == [], runs
    assert runs.overlaps == {}, runs.overlaps
    # Every worker takes new work after the lift (no tag left delivered, no wedge).
    after = {
        program: stack.submit("drill_echo", {"payload": "after"}, queue).json()["task_id"]
        for program, queue in zip(WORKERS, ("high", "low"), strict=True)
    }
    for task_id in after.values():
        assert stack.wait_for_task(task_id, timeout_s=30)["status"] == "SUCCESS"
    ran_on = {
        line["service.node.name"]
        for line in stack.lines(
            lambda x: x.get("task_id") in after.values() and x.get("event.action") == "task.started"
        )
    }
    assert "worker-general" in ran_on, ran_on
    print(f"accepted {len(accepted)}, shed {len(submissions) - len(accepted)}, lifted {lifted_at}")
