"""Locust, headless and bounded, against the real local stack: requests succeed and every
correlation id Locust sent with an accepted task shows up in the worker logs; a short herd
(both client variants, in one Locust process) reports each task's end-to-end time as
its own request type and its failures under a handful of stable messages, each one findable
by the correlation id on its log line, which nginx logged with the same status."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import stack_settings, start_stack, stop_stack
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
        lambda x: ours(x) and x["service.name"] == "worker", all_reached_workers, timeout_s=120.0
    )
    succeeded = {x["correlation_id"] for x in worker_lines if x["event.action"] == "task.succeeded"}
    assert succeeded, "no task of the run succeeded"


HERD_USERS = 40
HERD_HOLD_S = 8
HERD_STOP_TIMEOUT_S = 5
#: A failure's grouped message: status, error code, reason; never an id.
STABLE_FAILURE = re.compile(r"^HTTP (429|503) [a-z_]+( \([a-z_]+\))?$")


@pytest.fixture(scope="module")
def shedding_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """A stack whose submission bound (4 per replica) a herd of 40 users certainly overflows."""
    running = start_stack(stack_settings(tmp_path_factory.mktemp("herd"), api_max_inflight=4))
    try:
        yield running
    finally:
        stop_stack(running)


def _run_herd(
    stack: RunningStack, user_class: str, prefix: str, csv_prefix: Path
) -> subprocess.CompletedProcess[str]:
    command = [
        str(LOCUST),
        "--config",
        str(REPO_ROOT / "loadtest" / "locust.conf"),
        "-f",
        f"{REPO_ROOT / 'loadtest' / 'herd_users.py'},"
        f"{REPO_ROOT / 'loadtest' / 'shapes' / 'thundering_herd.py'}",
        "--headless",
        # One process: its stats and its failure lines are counted in the same process.
        # With --processes the workers' last stats reports can be lost at the stop of a
        # loaded run (seen: 3,200 failures counted, 4,408 logged); the README's command
        # and benchmarks/bench_locust_herd.py run the herd with --processes.
        "--host",
        stack.layout.base_url,
        "--stop-timeout",
        str(HERD_STOP_TIMEOUT_S),
        "--exit-code-on-error",
        "0",
        "--csv",
        str(csv_prefix),
        "--loglevel",
        "WARNING",
        user_class,
    ]
    env = {
        **os.environ,
        "TASKQ_LOCUST_ID_PREFIX": prefix,
        "HERD_USERS": str(HERD_USERS),
        "HERD_HOLD_S": str(HERD_HOLD_S),
    }
    timeout = HERD_HOLD_S + HERD_STOP_TIMEOUT_S + 60
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _unwrap(error: str) -> str:
    """Locust shows a failure raised by ``response.failure`` as ``CatchResponseError('...')``."""
    match = re.fullmatch(r"(?:CatchResponseError|TaskNotCompleted)\('(.*)'\)", error)
    return match.group(1) if match else error


@pytest.mark.parametrize("user_class", ["HerdHammerUser", "HerdPoliteUser"])
def test_locust_herd_reports_end_to_end_and_groups_its_failures(
    shedding_stack: RunningStack, tmp_path: Path, user_class: str
) -> None:
    prefix = f"hd{uuid.uuid4().hex[:8]}"
    began = time.monotonic()
    result = _run_herd(shedding_stack, user_class, prefix, tmp_path / "herd")
    ran_s = time.monotonic() - began  # the users ran within this, however loaded the host
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]

    with (tmp_path / "herd_stats.csv").open(newline="") as handle:
        stats = {(row["Type"], row["Name"]): row for row in csv.DictReader(handle)}
    with (tmp_path / "herd_failures.csv").open(newline="") as handle:
        failures = list(csv.DictReader(handle))
    posts = stats[("POST", "/api/v1/tasks")]
    accepted = int(posts["Request Count"]) - int(posts["Failure Count"])
    end_to_end = stats[("TASK", "task end-to-end")]
    # Each accepted task is followed to its end (one sample each); the run's stop may cut
    # the last flows of each user short.
    assert 0 < int(end_to_end["Request Count"]) <= accepted, stats
    assert float(end_to_end["Average Response Time"]) > 0

    # The herd overflowed the bound, and its failures fall into a handful of stable rows.
    shed_rows = [row for row in failures if row["Name"] == "/api/v1/tasks"]
    assert shed_rows, failures
    assert len(failures) <= 8, failures
    for row in shed_rows:
        assert STABLE_FAILURE.match(_unwrap(row["Error"])), row

    # One log line per failure, with the correlation id that finds it.
    logged = [
        json.loads(line)
        for line in result.stderr.splitlines()
        if line.startswith("{") and '"request failed"' in line
    ]
    # Exact but for the run's stop: a user stopped mid-request may have logged a failure
    # whose sample its Locust worker no longer reported (one request in flight per user).
    counted = sum(int(row["Occurrences"]) for row in failures)
    assert counted <= len(logged) <= counted + HERD_USERS, (len(logged), counted)
    messages = {(row["Name"], _unwrap(row["Error"])) for row in failures}
    assert {(x["request"], x["failure"]) for x in logged} <= messages
    shed_posts = {
        x["correlation_id"]: int(x["failure"].split()[1])
        for x in logged
        if x["request"] == "/api/v1/tasks" and STABLE_FAILURE.match(x["failure"])
    }
    shed_counted = sum(int(row["Occurrences"]) for row in shed_rows)
    assert shed_counted <= len(shed_posts) <= shed_counted + HERD_USERS
    assert all(cid.startswith(f"{prefix}-") for cid in shed_posts)

    # nginx (the independent record) answered each of those ids with the status logged.
    def ours(line: Line) -> bool:
        return line.get("service.name") == "nginx" and str(
            line.get("correlation_id", "")
        ).startswith(f"{prefix}-")

    def ours_posted(line: Line) -> bool:
        return ours(line) and line.get("http.request.method") == "POST"

    # The POST lines themselves: those are what the assertion below reads.
    nginx = shedding_stack.wait_for_lines(
        ours_posted, lambda found: shed_posts.keys() <= {x["correlation_id"] for x in found}
    )
    answered = {x["correlation_id"]: x["http.response.status_code"] for x in nginx}
    assert {cid: answered[cid] for cid in shed_posts} == shed_posts

    if user_class == "HerdPoliteUser":
        # Each shed answer is followed by a sleep of at least Retry-After (1 s), so a polite
        # user can have been shed at most once per second of the run (as long as the run
        # really took: spawning and stopping on a loaded host add to the shape's hold).
        run_s = math.ceil(ran_s) + 1
        assert len(shed_posts) <= HERD_USERS * run_s, (len(shed_posts), ran_s)
    print(
        f"{user_class}: {posts['Request Count']} POST, {accepted} accepted,"
        f" end-to-end p50 {end_to_end['50%']} ms p99 {end_to_end['99%']} ms;"
        f" failures {[(r['Name'], _unwrap(r['Error']), r['Occurrences']) for r in failures]}"
    )
