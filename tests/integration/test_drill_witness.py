"""``taskq drill deploy`` and ``taskq drill redis-stall`` through the command line against a
fresh stack, judged by the execution witness: every accepted task ran exactly once, no two
runs overlapped, every accepted task is terminal, a fault caught the drill's long tasks
running, and ``accepted`` equals the 202s nginx itself logged for the drill's ids."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskq.stack import control
from tests.integration.conftest import stack_settings, start_stack, stop_stack
from tests.integration.stack_client import RunningStack, nginx_accepted

TASKQ = Path(sys.executable).with_name("taskq")


@pytest.fixture(scope="module")
def witness_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(stack_settings(tmp_path_factory.mktemp("witness-drill")))
    try:
        yield running
    finally:
        stop_stack(running)


def run_drill(stack: RunningStack, out: Path, *argv: str) -> dict[str, Any]:
    """Run ``taskq drill ARGV --out OUT --json``; its report.json (the run must pass)."""
    env = control.stack_environment(stack.layout, stack.settings)
    command = [str(TASKQ), "drill", *argv, "--out", str(out), "--json"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    assert json.loads(result.stdout)["accepted"] == report["accepted"]
    return report


def assert_exactly_once(stack: RunningStack, report: dict[str, Any]) -> None:
    """The witness's verdict, every accepted task terminal, a fault that caught long tasks
    running, and the client's count of accepted tasks equal to nginx's."""
    executions = report["executions"]
    assert report["verdict"] == "PASSED", report["reasons"]
    assert executions["accepted_tasks"] == report["accepted_tasks"] > 50
    assert executions["never_ran"] == 0, executions["never_ran_task_ids"]
    assert executions["ran_more_than_once"] == 0, executions["duplicate_task_ids"]
    assert executions["overlapping"] == 0, executions["overlap_task_ids"]
    assert executions["witnessed_tasks"] == executions["runs"] == report["accepted_tasks"]
    assert report["lost"] == 0 and report["duplicate_executions"] == 0
    assert report["terminal"] == {"SUCCESS": report["accepted_tasks"]}
    assert executions["long_tasks"]["accepted"] == executions["long_tasks"]["ran_once"] > 0
    assert any(f["running_long_tasks"] for f in report["faults"]), report["faults"]
    # nginx writes a request's line after its answer: wait until it has logged as many 202s
    # as the drill counted, then they must be equal (bounded).
    log_dir, prefix = stack.layout.log_dir, report["id_prefix"]
    deadline = time.monotonic() + 15
    while nginx_accepted(log_dir, prefix) < report["accepted"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert report["accepted"] == nginx_accepted(log_dir, prefix)


def test_rolling_restart_runs_every_task_exactly_once(
    witness_stack: RunningStack, tmp_path: Path
) -> None:
    out = tmp_path / "deploy"
    report = run_drill(
        witness_stack, out, "deploy", "--duration", "35", "--users", "12", "--seed", "21"
    )
    assert_exactly_once(witness_stack, report)
    faults = report["faults"]
    assert [(f["kind"], f["target"]) for f in faults] == [
        ("restart", "worker-high"),
        ("restart", "worker-general"),
        ("restart", "api-1"),
        ("restart", "api-2"),
    ]
    assert all(f["recovery_s"]["readyz_200"] is not None for f in faults)
    assert all(f["running_tasks"] for f in faults[:2])  # each worker drained running tasks
    assert (out / "report.md").read_text().startswith("# Drill `deploy`: **PASSED**")


def test_redis_stall_runs_every_task_exactly_once(
    witness_stack: RunningStack, tmp_path: Path
) -> None:
    out = tmp_path / "stall"
    argv = ["redis-stall", "--ms", "10000", "--kills", "1", "--duration", "25", "--seed", "22"]
    report = run_drill(witness_stack, out, *argv, "--users", "12")
    assert_exactly_once(witness_stack, report)
    (fault,) = report["faults"]
    assert (fault["kind"], fault["detail"]) == ("redis-stall", "CLIENT PAUSE 10000 ALL")
    assert fault["recovery_s"]["readyz_200"] is not None
    assert "## Executions (execution witness)" in (out / "report.md").read_text()
