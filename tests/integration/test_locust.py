"""Locust, headless and bounded, against the real local stack: requests succeed and every
correlation id Locust sent with an accepted task shows up in the worker logs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.integration.stack_client import Line, RunningStack, events_of

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).with_name("locust")
RUN_TIME_S = 15


def _run_locust(
    stack: RunningStack, prefix: str, csv_prefix: Path
) -> subprocess.CompletedProcess[str]:
    command = [
        str(LOCUST),
        "--config",
        str(REPO_ROOT / "loadtest" / "locust.conf"),
        "-f",
        str(REPO_ROOT / "loadtest" / "locustfile.py"),
        "--headless",
        "--host",
        stack.layout.base_url,
        "--users",
        "6",
        "--spawn-rate",
        "6",
        "--run-time",
        f"{RUN_TIME_S}s",
        "--stop-timeout",
        "3",
        "--csv",
        str(csv_prefix),
        "--loglevel",
        "WARNING",
    ]
    env = {**os.environ, "TASKQ_LOCUST_ID_PREFIX": prefix}
    # Bounded twice: Locust's own run time, and this timeout if it ever hangs.
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=RUN_TIME_S + 30, check=False
    )


def test_locust_run_succeeds_and_its_ids_reach_the_workers(
    stack: RunningStack, tmp_path: Path
) -> None:
    prefix = f"lt{uuid.uuid4().hex[:8]}"
    result = _run_locust(stack, prefix, tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]

    with (tmp_path / "run_stats.csv").open(newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 10, rows
    assert int(total["Failure Count"]) == 0, rows
    assert int(rows["/api/v1/tasks"]["Request Count"]) > 0
    assert int(rows["/api/v1/tasks/[task_id]"]["Request Count"]) > 0

    def ours(line: Line) -> bool:
        return str(line.get("correlation_id", "")).startswith(f"{prefix}-")

    # Every submission Locust counted was a 202 (no failures). nginx writes a request's line
    # after its answer: wait until it logged as many, so that none escapes the check below.
    submitted = int(rows["/api/v1/tasks"]["Request Count"])
    nginx_posts = stack.wait_for_lines(
        lambda x: (
            ours(x)
            and x["service.name"] == "nginx"
            and x["http.request.method"] == "POST"
            and x["http.response.status_code"] == 202
        ),
        lambda found: len(found) >= submitted,
    )
    accepted = {line["correlation_id"] for line in nginx_posts}
    assert accepted, "nginx logged no accepted submission with Locust's ids"

    def all_reached_workers(found: list[Line]) -> bool:
        # Every accepted id started, and a success line (checked last) is in: it is written
        # after its task's status was stored.
        started = {x["correlation_id"] for x in found if x["event.action"] == "task.started"}
        return accepted <= started and "task.succeeded" in events_of(found)

    worker_lines = stack.wait_for_lines(
        lambda x: ours(x) and x["service.name"] == "worker", all_reached_workers, timeout_s=20.0
    )
    succeeded = {x["correlation_id"] for x in worker_lines if x["event.action"] == "task.succeeded"}
    assert succeeded, "no task of the run succeeded"
