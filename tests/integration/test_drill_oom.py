"""``taskq drill redis-oom`` and the honest verdicts of ``taskq drill``, against a fresh stack.

* /metrics while Redis's memory is really constrained: what a replica's scrape says against
  the limit the test set (``CONFIG GET``) and the 503 the client got from that replica.
* The short redis-oom drill through the command line: accepted equals nginx's own 202s,
  every accepted task ran exactly once (execution witness) and ended, the shed answers the
  report counts by code are the client's own record, Redis itself refused writes while it
  was held, every worker consumed again within 5 s, the limit is back.
* A worker-kill whose victim holds no task (worker-high, with a load that never submits
  ``high``) is INCONCLUSIVE with exit code 3, never PASSED; its progress lines appear piped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from taskq.stack import control
from tests.integration.conftest import stack_settings, start_stack, stop_stack
from tests.integration.stack_client import RunningStack, nginx_accepted

TASKQ = Path(sys.executable).with_name("taskq")


@pytest.fixture(scope="module")
def oom_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    settings = stack_settings(tmp_path_factory.mktemp("oom-drill"), breaker_cache_s=0.1)
    running = start_stack(settings)
    try:
        yield running
    finally:
        stop_stack(running)


def _redis(stack: RunningStack) -> Redis:
    return Redis.from_url(stack.settings.broker_url)


def _scrape(url: str) -> dict[str, float]:
    """Unlabelled gauges of one /metrics answer, by name."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


def _submit_until(url: str, status: int, timeout_s: float = 20.0) -> httpx.Response:
    """POST drill_echo to one replica until it answers ``status`` (bounded)."""
    body = {"task_type": "drill_echo", "data": {"payload": "m"}, "priority": "high"}
    deadline = time.monotonic() + timeout_s
    while True:
        answer = httpx.post(f"{url}/api/v1/tasks", json=body, timeout=10)
        if answer.status_code == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def test_metrics_say_why_while_memory_is_constrained(oom_stack: RunningStack) -> None:
    client = _redis(oom_stack)
    replica = oom_stack.replica_url(1)
    used = int(client.info("memory")["used_memory"])
    limit = int(used / 0.95)  # 95 % in use: past the breaker's 90 %, short of refusing writes
    client.config_set("maxmemory", str(limit))
    try:
        shed = _submit_until(replica, 503)
        assert shed.json()["error"]["code"] == "broker_memory_full", shed.text
        constrained = _scrape(replica)
        after = client.info("memory")
    finally:
        client.config_set("maxmemory", "0")
    assert constrained["taskq_redis_memory_max_bytes"] == limit == int(after["maxmemory"])
    assert constrained["taskq_breaker_memory_open"] == 1
    shed_ratio = constrained["taskq_breaker_memory_shed_ratio"]
    assert constrained["taskq_breaker_memory_used_ratio"] >= shed_ratio
    assert constrained["taskq_redis_memory_used_bytes"] >= shed_ratio * limit
    accepted = _submit_until(replica, 202)
    assert accepted.status_code == 202, accepted.text
    free = _scrape(replica)
    assert free["taskq_breaker_memory_open"] == 0
    assert free["taskq_redis_memory_max_bytes"] == 0
    oom_stack.wait_for_task(accepted.json()["task_id"])


def _drill(stack: RunningStack, out: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = control.stack_environment(stack.layout, stack.settings)
    command = [str(TASKQ), "drill", *argv, "--out", str(out)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


def _client_record(out: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in (out / "submissions.jsonl").read_text().splitlines()]


def test_redis_oom_drill_sheds_loses_nothing_and_no_worker_wedges(
    oom_stack: RunningStack, tmp_path: Path
) -> None:
    client = _redis(oom_stack)
    maxmemory_before = client.config_get("maxmemory")
    out = tmp_path / "oom"
    argv = ["redis-oom", "--duration", "25", "--users", "12", "--hold", "3", "--seed", "31"]
    result = _drill(oom_stack, out, *argv)
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    assert result.returncode == 0, (report["verdict"], report["reasons"], result.stderr[-2000:])
    assert report["verdict"] == "PASSED"
    # Accepted: the client's count equals nginx's own 202 lines (bounded wait for the last).
    deadline = time.monotonic() + 15
    log_dir, prefix = oom_stack.layout.log_dir, report["id_prefix"]
    while nginx_accepted(log_dir, prefix) < report["accepted"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert report["accepted"] == nginx_accepted(log_dir, prefix)
    executions = report["executions"]
    assert executions["accepted_tasks"] == report["accepted_tasks"] > 20
    assert executions["never_ran"] == 0, executions["never_ran_task_ids"]
    assert executions["ran_more_than_once"] == 0, executions["duplicate_task_ids"]
    assert executions["overlapping"] == 0, executions["overlap_task_ids"]
    assert report["lost"] == 0
    assert report["terminal"] == {"SUCCESS": report["accepted_tasks"]}
    # Shed answers by code: what the client itself recorded (Locust's record and the probes).
    seen = Counter(r["error"] for r in _client_record(out) if r["status"] != 202)
    by_code = report["client_errors"]["by_code"]
    assert seen["broker_memory_full"] > 0
    assert by_code.get("broker_memory_full", 0) >= seen["broker_memory_full"]
    assert set(by_code) <= {"broker_memory_full"}, by_code
    (fault,) = report["faults"]
    assert fault["kind"] == "redis-oom" and fault["shed"] > 0 and fault["running_tasks"] > 0
    figures = fault["figures"]
    assert figures["writes_refused"] is True  # Redis itself refused writes
    assert report["memory"]["wedged_workers"] == 0
    assert all(s is not None and s <= 5.0 for s in figures["consuming_again_s"].values())
    assert set(figures["consuming_again_s"]) == {"worker-high", "worker-general"}
    assert client.config_get("maxmemory") == maxmemory_before
    assert (out / "report.md").read_text().startswith("# Drill `redis-oom`: **PASSED**")
    print(json.dumps({"accepted": report["accepted"], "shed": by_code, "memory": figures}))


def test_a_kill_that_hits_nothing_is_inconclusive_and_progress_shows_piped(
    oom_stack: RunningStack, tmp_path: Path
) -> None:
    out = tmp_path / "idle-kill"
    argv = ["worker-kill", "--kills", "1", "--victim", "worker-high"]
    argv += ["--priorities", "medium,low", "--duration", "15", "--users", "4", "--seed", "3"]
    result = _drill(oom_stack, out, *argv)
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    assert result.returncode == 3, (report["verdict"], report["reasons"])
    assert report["verdict"] == "INCONCLUSIVE"
    (reason,) = report["reasons"]
    assert reason.startswith("the fault hit nothing (worker-kill worker-high:"), reason
    (fault,) = report["faults"]
    assert fault["interrupted_tasks"] == 0 and fault["running_tasks"] == 0
    # The truth behind it: worker-high started none of this run's tasks.
    ids = {r["task_id"] for r in _client_record(out) if r["task_id"]}
    started = oom_stack.lines(
        lambda x: x.get("task_id") in ids and x.get("event.action") == "task.started"
    )
    assert started and {x["service.node.name"] for x in started} == {"worker-general"}
    assert report["accepted"] > 0 and report["lost"] == 0
    # Piped: plain progress lines, one per phase at least, none rewritten in place.
    progress = [x for x in result.stderr.splitlines() if x.startswith("drill worker-kill: ")]
    phases = {x.split("phase ", 1)[1].split(",", 1)[0] for x in progress}
    assert {"load", "fault worker-kill worker-high", "drain", "reconcile"} <= phases, progress
    assert "\r" not in result.stderr
    assert any("faults 1 of 1" in x for x in progress), progress
    text = (out / "report.md").read_text()
    assert text.startswith("# Drill `worker-kill`: **INCONCLUSIVE**")
