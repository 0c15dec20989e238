"""The trace against independent truths, over hundreds of concurrent tasks.

A dedicated stack (one retry, so exhausted retries end quickly) takes 500 submissions
through nginx from 8 threads: fast echo tasks, VaR, transient failures that retry, failures
that exhaust their retries, fan-out children, revocations right after submission,
idempotent replays under other request ids, and one long task whose pool process is
SIGKILLed mid-run. Then, for every accepted task:

- the final status that ``taskq trace --json`` and ``GET /api/v1/traces/{id}`` report
  equals the API's ``GET /api/v1/tasks/{id}`` (the result backend), 100%;
- the number of attempts that started equals the executions the worker's delivery guard
  counted in Redis (``taskq:deliveries:<task>:<retry>``), which no log line feeds;
- ``taskq stats`` counts the same final statuses as the traces.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis import Redis

from taskq.cli import main as taskq_main
from tests.integration.conftest import stack_settings, start_stack, stop_stack
from tests.integration.stack_client import TERMINAL_STATES, RunningStack

VAR_DATA = {
    "portfolio_data": {"positions": [{"symbol": "AAPL", "quantity": 100, "price": 150.0}]},
    "confidence_level": 0.95,
    "time_horizon": 10,
}
PRIORITIES = ("high", "medium", "low")


@dataclass
class Submission:
    """One accepted POST and what the test did with it."""

    correlation_id: str
    task_id: str
    kind: str
    replayed_by: str | None = None
    children: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def oracle_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    settings = stack_settings(
        tmp_path_factory.mktemp("oracle"),
        max_retries=1,
        retry_backoff_max_s=1,
        # No beat snapshot task starts while statuses are being compared with `stats`.
        queue_snapshot_interval_s=3600.0,
        # The logs rotate several times during the test: traces and stats read .jsonl.N too.
        log_max_bytes=256 * 1024,
        log_backups=100,
        rate_limit_exempt="127.0.0.1",
    )
    running = start_stack(settings)
    try:
        yield running
    finally:
        stop_stack(running)


def _plan(rng: random.Random) -> list[tuple[str, dict[str, Any], str]]:
    """(kind, data, task_type) of each of the 500 submissions, shuffled."""
    plan = (
        [("echo", {"payload": "x"}, "drill_echo")] * 220
        + [("var", VAR_DATA, "calculate_var")] * 120
        + [("retry", {"fail_times": 1}, "drill_flaky")] * 60
        + [("exhausted", {"fail_times": 2}, "drill_flaky")] * 30
        + [("fanout", {"children": 2}, "drill_fanout")] * 30
        + [("revoke", {"seconds": 0.2}, "drill_sleep")] * 40
    )
    rng.shuffle(plan)
    return plan


def _submit(
    stack: RunningStack, n: int, kind: str, data: dict[str, Any], task_type: str
) -> Submission:
    correlation_id = f"oracle-{n}-{uuid.uuid4().hex[:8]}"
    headers = {"X-Request-ID": correlation_id}
    replay = kind == "echo" and n % 10 == 0  # 20-odd submissions get a replay
    if replay:
        headers["Idempotency-Key"] = f"oracle-key-{correlation_id}"
    priority = "low" if kind == "revoke" else PRIORITIES[n % 3]
    answer = stack.submit(task_type, data, priority, headers)
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task_id"]
    submission = Submission(correlation_id, task_id, kind)
    if kind == "revoke":
        revoked = stack.http.delete(f"/api/v1/tasks/{task_id}", headers=headers)
        assert revoked.status_code in (200, 409), revoked.text
    if replay:
        again = {**headers, "X-Request-ID": f"{correlation_id}-replay"}
        answer = stack.submit(task_type, data, priority, again)
        assert answer.status_code == 202 and answer.json()["task_id"] == task_id, answer.text
        assert answer.headers.get("Idempotent-Replayed") == "true"
        submission.replayed_by = again["X-Request-ID"]
    return submission


def _kill_pool_child_mid_task(stack: RunningStack) -> Submission:
    """Submit a 3 s task, wait for its start line, SIGKILL the pool process running it."""
    correlation_id = f"oracle-kill-{uuid.uuid4().hex[:8]}"
    answer = stack.submit("drill_sleep", {"seconds": 3.0}, "high", {"X-Request-ID": correlation_id})
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task_id"]
    (started,) = stack.wait_for_lines(
        lambda x: x.get("task_id") == task_id and x.get("event.action") == "task.started",
        lambda found: len(found) >= 1,
        timeout_s=30.0,
    )[:1]
    os.kill(int(started["process.pid"]), signal.SIGKILL)
    return Submission(correlation_id, task_id, "killed")


def _wait_terminal(stack: RunningStack, task_ids: list[str], timeout_s: float) -> dict[str, str]:
    """The API's status of every task once all are terminal for good (bounded).

    A terminal status alone does not say that the task's deliveries are over: a revoked
    task's message still waits in its queue until a worker refuses it, and a copy of any
    task may still be queued or held. So first no message of any task may be left in
    Redis: then no delivery can start, every attempt's delivery counter and lines are
    final (they are compared with the traces below); then the statuses are read.
    """
    deadline = time.monotonic() + timeout_s
    stack.wait_until_released(task_ids, timeout_s=timeout_s)
    statuses: dict[str, str] = {}
    pending = list(task_ids)
    while pending and time.monotonic() < deadline:
        for task_id in list(pending):
            status = stack.http.get(f"/api/v1/tasks/{task_id}").json()["status"]
            statuses[task_id] = status
            if status in TERMINAL_STATES:
                pending.remove(task_id)
        if pending:
            time.sleep(0.5)
    assert not pending, f"{len(pending)} task(s) never ended, e.g. {pending[:3]}"
    return statuses


def _cli_trace(
    stack: RunningStack, key: str, monkeypatch: pytest.MonkeyPatch, by_task: bool = False
) -> Any:
    """``taskq trace <id> --json`` (or ``--task <id>``), run in this process (500 process
    starts would take minutes; the command is the same code)."""
    monkeypatch.setenv("TASKQ_VAR_DIR", str(stack.layout.var_dir))
    monkeypatch.setenv("TASKQ_LOG_DIR", str(stack.layout.log_dir))
    monkeypatch.setenv("TASKQ_LOGSTORE_BACKEND", "duckdb")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = taskq_main(["trace", *(["--task"] if by_task else []), key, "--json"])
    assert code == 0, f"taskq trace {key} exited {code}"
    return json.loads(out.getvalue())


def _executions(redis: Redis, task_id: str) -> int:
    """Deliveries the worker's guard counted for ``task_id``, over all retry numbers."""
    keys = redis.keys(f"taskq:deliveries:{task_id}:*")
    return sum(int(redis.get(k) or 0) for k in keys)


def _statuses_agree(
    stack: RunningStack,
    submissions: list[Submission],
    api: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, dict[str, Any]]:
    """Each submission's task from the CLI trace, once its status matches the API's (the
    log lines follow the backend's write by milliseconds) and its submission's nginx line
    (written after the answer) is in; bounded."""
    tasks: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 30.0
    pending = list(submissions)
    while pending and time.monotonic() < deadline:
        for submission in list(pending):
            trace = _cli_trace(stack, submission.correlation_id, monkeypatch)
            found = {t["task_id"]: t for t in trace["tasks"]}
            task = found[submission.task_id]
            children_done = all(
                found.get(c, {}).get("final_status") == "SUCCESS" for c in submission.children
            )
            nginx_in = any(
                r["kind"] == "submit" and r["nginx_ms"] is not None for r in trace["requests"]
            )
            if task["final_status"] == api[submission.task_id] and children_done and nginx_in:
                tasks[submission.task_id] = {**task, "_trace": trace}
                pending.remove(submission)
        if pending:
            time.sleep(0.5)
    mismatches = [(s.correlation_id, api[s.task_id]) for s in pending]
    assert not mismatches, (
        f"{len(mismatches)} trace(s) disagree with the API or lack nginx's line: {mismatches[:5]}"
    )
    return tasks


def test_trace_equals_the_api_and_the_executions(
    oracle_stack: RunningStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = oracle_stack
    rng = random.Random(20261126)
    with ThreadPoolExecutor(max_workers=8) as pool:
        killed = pool.submit(_kill_pool_child_mid_task, stack)
        counter = itertools.count()
        futures = [
            pool.submit(_submit, stack, next(counter), kind, data, task_type)
            for kind, data, task_type in _plan(rng)
        ]
        submissions = [f.result() for f in futures] + [killed.result()]
    assert len(submissions) == 501

    api = _wait_terminal(stack, [s.task_id for s in submissions], timeout_s=180.0)
    for submission in submissions:
        if submission.kind == "fanout":
            result = stack.http.get(f"/api/v1/tasks/{submission.task_id}").json()["result"]
            submission.children = list(result["children"])
    # The children's delivery counters are compared with their traces too: final once none
    # of their messages is left.
    stack.wait_until_released([c for s in submissions for c in s.children])
    tasks = _statuses_agree(stack, submissions, api, monkeypatch)

    # Every status the API gave, the trace gave; the expected mix is really there.
    by_kind = Counter((s.kind, api[s.task_id]) for s in submissions)
    assert by_kind[("echo", "SUCCESS")] == 220 and by_kind[("var", "SUCCESS")] == 120
    assert by_kind[("retry", "SUCCESS")] == 60 and by_kind[("exhausted", "FAILURE")] == 30
    assert by_kind[("fanout", "SUCCESS")] == 30 and by_kind[("killed", "SUCCESS")] == 1
    assert by_kind[("revoke", "REVOKED")] + by_kind[("revoke", "SUCCESS")] == 40

    redis = Redis.from_url(stack.layout.redis_url())
    for submission in submissions:
        task = tasks[submission.task_id]
        started = [a for a in task["attempts"] if a["started_at"] is not None]
        assert len(started) == _executions(redis, submission.task_id), submission
        if submission.kind == "retry":
            assert [a["outcome"] for a in started] == ["RETRY", "SUCCESS"]
        if submission.kind == "exhausted":
            assert [a["outcome"] for a in started] == ["RETRY", "FAILURE"]
            assert task["error_type"] == "SimulatedTransientError"
        if submission.kind == "killed":
            assert [a["outcome"] for a in started] == ["LOST", "SUCCESS"]
            assert task["redeliveries"] == 1
        trace = task["_trace"]
        (post,) = [r for r in trace["requests"] if r["kind"] == "submit"]
        assert post["task_id"] == submission.task_id and post["status"] == 202
        assert post["nginx_ms"] is not None, submission  # nginx's line survived rotation
        for child in submission.children:
            (child_task,) = [t for t in trace["tasks"] if t["task_id"] == child]
            assert child_task["parent_task_id"] == submission.task_id
            child_started = [a for a in child_task["attempts"] if a["started_at"]]
            assert len(child_started) == _executions(redis, child)

    # The API's trace endpoint gives the same answer as the command.
    for submission in submissions:
        via_api = stack.http.get(f"/api/v1/traces/{submission.correlation_id}")
        assert via_api.status_code == 200, via_api.text
        (task,) = [t for t in via_api.json()["tasks"] if t["task_id"] == submission.task_id]
        assert task["final_status"] == api[submission.task_id], submission

    # A replay's trace shows the real task and names the original request.
    for submission in (s for s in submissions if s.replayed_by):
        assert submission.replayed_by is not None
        trace = _cli_trace(stack, submission.replayed_by, monkeypatch)
        (task,) = trace["tasks"]
        assert task["task_id"] == submission.task_id
        assert task["final_status"] == api[submission.task_id] and task["queue"] is not None
        assert trace["replay_of"] == [submission.correlation_id]

    rotated = [p for p in stack.log_files() if not p.name.endswith(".jsonl")]
    assert len(rotated) >= 3, "the logs were expected to rotate during the test"

    # `taskq stats` over the same lines counts the same final statuses as the traces.
    every_task = {
        t["task_id"]: t["final_status"]
        for s in submissions
        for t in tasks[s.task_id]["_trace"]["tasks"]
    }
    published = {
        str(x["task_id"]) for x in stack.lines(lambda x: x.get("event.action") == "task.published")
    }
    for task_id in sorted(published - set(every_task)):  # tasks of no submission: beat's
        trace = _cli_trace(stack, task_id, monkeypatch, by_task=True)
        every_task[task_id] = trace["tasks"][0]["final_status"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert taskq_main(["stats", "--since", "all", "--json"]) == 0
    stats = json.loads(out.getvalue())["tasks_by_status"]
    assert stats == dict(Counter(every_task.values())), stats


def test_trace_by_task_opens_the_publishing_request(
    oracle_stack: RunningStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = oracle_stack
    correlation_id = f"owner-{uuid.uuid4().hex[:8]}"
    headers = {"X-Request-ID": correlation_id, "Idempotency-Key": f"k-{correlation_id}"}
    task_id = stack.submit("drill_echo", {"payload": "p"}, "high", headers).json()["task_id"]
    stack.submit("drill_echo", {"payload": "p"}, "high", {**headers, "X-Request-ID": "replayer-1"})
    stack.wait_for_task(task_id)
    stack.http.get(f"/api/v1/tasks/{task_id}", headers={"X-Request-ID": "poller-1"})
    monkeypatch.setenv("TASKQ_VAR_DIR", str(stack.layout.var_dir))
    monkeypatch.setenv("TASKQ_LOG_DIR", str(stack.layout.log_dir))
    deadline = time.monotonic() + 15.0
    while True:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert taskq_main(["trace", "--task", task_id, "--json"]) == 0
        trace = json.loads(out.getvalue())
        (task,) = trace["tasks"]
        # The poll's request line and the success line are written after what the client saw.
        settled = task["final_status"] == "SUCCESS"
        if settled and {"replayer-1", "poller-1"} <= set(task["touched_by"]):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert trace["correlation_id"] == correlation_id
    assert task["published_by"] == correlation_id and task["final_status"] == "SUCCESS"
    assert {"replayer-1", "poller-1"} <= set(task["touched_by"])


def test_every_error_answer_logs_its_error_type(oracle_stack: RunningStack) -> None:
    stack = oracle_stack
    cases = {
        "unknown_task_type": {"task_type": "nope", "data": {}},
        "validation_error": {"task_type": "drill_sleep", "data": {"seconds": -1}},
    }
    for code, body in cases.items():
        correlation_id = f"err-{code}-{uuid.uuid4().hex[:6]}"
        answer = stack.http.post(
            "/api/v1/tasks", json=body, headers={"X-Request-ID": correlation_id}
        )
        assert answer.status_code == 422 and answer.json()["error"]["code"] == code
        (line,) = stack.wait_for_lines(
            lambda x, c=correlation_id: (
                x.get("correlation_id") == c
                and x.get("service.name") == "api"
                and x.get("event.action") == "http.request.completed"
            ),
            lambda found: len(found) == 1,
        )
        assert line["error.type"] == code and line["http.response.status_code"] == 422
    missing = stack.http.get(f"/api/v1/tasks/{uuid.uuid4()}", headers={"X-Request-ID": "err-404"})
    assert missing.status_code == 404
    (line,) = stack.wait_for_lines(
        lambda x: x.get("correlation_id") == "err-404" and x.get("service.name") == "api",
        lambda found: len(found) == 1,
    )
    assert line["error.type"] == missing.json()["error"]["code"] == "task_not_found"
