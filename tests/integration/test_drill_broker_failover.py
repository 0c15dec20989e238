"""The stack as hosts (network namespaces) and ``taskq drill broker-failover`` across them.

* One short failover through the command line (SIGKILL of the master under load): exit 0,
  and the report checked against sources the drill does not compute: the sentinels' own
  ``+switch-master`` log lines (old and new master's addresses), nginx's own access lines
  (every 202 the report counts as accepted, no more), and every namespace gone after it.
* ``taskq trace`` follows one request across the hosts' logs: every line any host's
  process wrote with that correlation id (read from the files themselves) is in the trace,
  from nginx on the API host, an API replica and the worker host that ran the task.

Skipped, with the reason, only where network namespaces cannot be created; under
``CI=true`` on a root machine a missing capability fails (tests/missing_tool.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taskq.hosts import netns
from taskq.hosts.stack_hosts import BROKERS, HostsStack, hosts_stack
from taskq.logs.schema import Event
from tests.missing_tool import tool_missing

pytestmark = pytest.mark.integration

TASKQ = [sys.executable, "-m", "taskq.cli"]
#: The drill's whole run (hosts up, load, one failover, drain, report) stays under this.
DRILL_BOUND_S = 90


def _require_hosts() -> None:
    missing = [
        t
        for t in ("redis-server", "redis-sentinel", "nginx", "ip", "iptables")
        if not shutil.which(t)
    ]
    if missing:
        tool_missing(
            f"missing {', '.join(missing)}: apt-get install -y redis-server "
            "redis-sentinel nginx iproute2 iptables"
        )
    reason = netns.probe()
    if reason is not None:
        # Only root can make namespaces: CI that is not root may skip.
        tool_missing(reason, ci_must_have=os.geteuid() == 0)


def _namespaces() -> set[str]:
    run = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return {line.split()[0] for line in run.stdout.splitlines() if line.strip()}


def _lines(path: Path) -> list[dict[str, object]]:
    rows = []
    for raw in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(raw)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def test_one_master_kill_under_load_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    _require_hosts()
    before = _namespaces()
    out = tmp_path / "drill"
    run = subprocess.run(
        [*TASKQ, "drill", "broker-failover", "--kills", "1", "--json", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=DRILL_BOUND_S,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["verdict"] == "PASSED", report["reasons"]
    assert report["lost"] == 0 and report["duplicate_executions"] == 0
    assert report["held_messages"]["tasks"] >= 1
    assert report["held_messages"]["ran_once"] == report["held_messages"]["tasks"]
    (failover,) = report["failovers"]
    assert failover["new_master"] != failover["old_master"]
    # The sentinels' own word: each logged the switch from the old to the new address.
    hosts = json.loads((out / "hosts" / "addresses.json").read_text())
    old, new = hosts[failover["old_master"]], hosts[failover["new_master"]]
    switch = re.compile(rf"\+switch-master taskq {re.escape(old)} 6379 {re.escape(new)} 6379")
    logs = [out / "hosts" / "brokers" / f"node{i}" / "sentinel.log" for i in range(len(BROKERS))]
    switched = [p for p in logs if switch.search(p.read_text(errors="replace"))]
    assert switched, "no sentinel logged +switch-master to the new master"
    # nginx's own access lines: every 202 the report counts, and only those.
    nginx = _lines(out / "hosts" / "log" / "api-nginx.jsonl")
    accepted = [
        line
        for line in nginx
        if line.get("url.path") == "/api/v1/tasks"
        and line.get("http.request.method") == "POST"
        and line.get("http.response.status_code") == 202
    ]
    assert len(accepted) == report["accepted"]
    refused = report["client_refusals"]
    assert refused["other"] == 0, refused
    assert refused["switch_503_with_retry_after"] == refused["switch_503"]
    assert (out / "failover-timeline.png").stat().st_size > 0
    assert not (_namespaces() - before), "the drill left network namespaces behind"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[HostsStack]:
    _require_hosts()
    with hosts_stack(tmp_path / "hosts", ready_timeout_s=60) as running:
        yield running


def _wait_for_line(
    stack: HostsStack, correlation_id: str, action: str, timeout_s: float, in_file: str = "*"
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for path in stack.log_dir.glob(f"{in_file}.jsonl"):
            for line in _lines(path):
                if (
                    line.get("correlation_id") == correlation_id
                    and line.get("event.action") == action
                ):
                    return
        time.sleep(0.1)
    raise AssertionError(f"no {action} line for {correlation_id} within {timeout_s:g} s")


def test_taskq_trace_follows_one_request_across_every_host(stack: HostsStack) -> None:
    correlation_id = f"hosts-trace-{uuid.uuid4().hex[:12]}"
    body = {"task_type": "drill_echo", "data": {"payload": "hosts"}, "priority": "medium"}
    answer = httpx.post(
        stack.base_url + "/api/v1/tasks",
        json=body,
        headers={"X-Request-ID": correlation_id},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task_id"]
    _wait_for_line(stack, correlation_id, Event.TASK_SUCCEEDED, 30)
    # nginx writes its access log from a buffer, flushed every second: wait for its own line.
    _wait_for_line(stack, correlation_id, Event.HTTP_COMPLETED, 10, in_file="api-nginx")
    # Truth: the lines with this id in every host's files, read here.
    written: dict[str, int] = {}
    for path in sorted(stack.log_dir.glob("*.jsonl")):
        count = sum(
            1
            for line in _lines(path)
            if line.get("correlation_id") == correlation_id or line.get("task_id") == task_id
        )
        if count:
            written[path.stem] = count
    hosts_seen = {name.split("-", 1)[0] for name in written}
    assert "api" in hosts_seen and any(h.startswith("worker") for h in hosts_seen), written
    assert "api-nginx" in written and any(n.startswith("api-api-") for n in written), written
    env = {**os.environ, "TASKQ_LOG_DIR": str(stack.log_dir)}
    run = subprocess.run(
        [*TASKQ, "trace", correlation_id, "--json", "--log-dir", str(stack.log_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    trace = json.loads(run.stdout)
    nodes: dict[str, int] = {}
    for line in trace["lines"]:
        node = str(line["service.node.name"]).replace("/", "-")
        nodes[node] = nodes.get(node, 0) + 1
    assert nodes == written
    assert [t["task_id"] for t in trace["tasks"]] == [task_id]
