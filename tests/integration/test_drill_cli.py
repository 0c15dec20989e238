"""``taskq drill worker-kill`` through the command line against a fresh stack: nothing lost,
every trace complete, and ``accepted`` equal to the 202s nginx itself logged."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taskq.stack import control
from tests.integration.conftest import stack_settings, start_stack, stop_stack
from tests.integration.stack_client import RunningStack, nginx_accepted

TASKQ = Path(sys.executable).with_name("taskq")


@pytest.fixture(scope="module")
def drill_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(stack_settings(tmp_path_factory.mktemp("drill")))
    try:
        yield running
    finally:
        stop_stack(running)


def test_worker_kill_drill_loses_nothing(drill_stack: RunningStack, tmp_path: Path) -> None:
    env = control.stack_environment(drill_stack.layout, drill_stack.settings)
    out = tmp_path / "report"
    command = [str(TASKQ), "drill", "worker-kill", "--duration", "30", "--kills", "2"]
    command += ["--users", "15", "--seed", "11", "--out", str(out), "--json"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert json.loads(result.stdout)["accepted"] == report["accepted"]
    assert report["lost"] == 0
    assert report["trace_completeness"] == 1.0, report["incomplete_traces"]
    assert report["accepted"] > 100
    # nginx writes a request's line after its answer: wait until it has logged as many 202s
    # as the drill counted, then they must be equal (bounded).
    log_dir = drill_stack.layout.log_dir
    deadline = time.monotonic() + 15
    while nginx_accepted(log_dir) < report["accepted"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert report["accepted"] == nginx_accepted(log_dir)
    assert [f["kind"] for f in report["faults"]] == ["worker-kill", "worker-kill"]
    assert all(f["recovery_s"]["readyz_200"] is not None for f in report["faults"])
    for name in ("report.md", "timeline.png", "queue-depth.png"):
        assert (out / name).stat().st_size > 0
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# Drill `worker-kill`: **PASSED**")
    # Each example links to its trace page, which the stack serves.
    examples = report["examples"]
    assert examples["redelivered"], "a passed kill drill has redelivered tasks to show"
    assert set(examples["trace_pages"]) == set(examples["redelivered"])
    for correlation_id, url in examples["trace_pages"].items():
        assert url == f"{drill_stack.layout.base_url}/ui/traces/{correlation_id}"
        assert f"- `taskq trace {correlation_id}`: [trace page]({url})" in markdown
        assert httpx.get(url, timeout=10).status_code == 200


def test_drill_against_a_stopped_stack_exits_2(tmp_path: Path) -> None:
    from taskq.stack.layout import StackLayout

    settings = stack_settings(tmp_path / "nothing")
    env = control.stack_environment(StackLayout.from_settings(settings), settings)
    result = subprocess.run(
        [str(TASKQ), "drill", "redis-kill"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "not running" in result.stderr and "Traceback" not in result.stderr
