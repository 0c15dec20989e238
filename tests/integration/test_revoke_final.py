"""A revocation is final: stored in Redis, checked when a worker starts the task, never
overwritten; ``DELETE`` answers what really happened. The execution witness (drill tasks
count each run of their code in a database the delivery code never touches) is the truth.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from httpx import Response

from taskq.faults import inject
from taskq.faults.witness import executions, witness_client
from taskq.stack.control import supervisor_rpc
from tests.integration.conftest import stack_settings, start_stack, stop_stack
from tests.integration.stack_client import RunningStack

WORKERS = ("worker-high", "worker-general")


@pytest.fixture(scope="module")
def revoke_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(stack_settings(tmp_path_factory.mktemp("revoke")))
    try:
        yield running
    finally:
        stop_stack(running)


def test_a_task_revoked_while_no_worker_listened_never_runs(revoke_stack: RunningStack) -> None:
    stack = revoke_stack
    rpc = supervisor_rpc(stack.layout)
    for program in WORKERS:
        rpc.stopProcess(program, True)
    try:
        task_id = stack.submit("drill_echo", {"payload": "never"}, "high").json()["task_id"]
        answer = stack.http.delete(f"/api/v1/tasks/{task_id}")
        assert answer.status_code == 200 and answer.json()["status"] == "REVOKED", answer.text
    finally:
        for program in WORKERS:
            rpc.startProcess(program, True)
    # A worker that was not running when the revocation was asked takes the message, refuses
    # it at start and acknowledges it; then no copy is left that could ever start.
    stack.wait_until_released([task_id])
    assert stack.http.get(f"/api/v1/tasks/{task_id}").json()["status"] == "REVOKED"
    runs = executions(witness_client(stack.settings.broker_url), [task_id])
    assert runs.runs.get(task_id, 0) == 0, runs


def _submit_then_revoke(stack: RunningStack, n: int, delay_s: float) -> tuple[str, Response]:
    body = stack.submit("drill_sleep", {"seconds": 0.05}, "medium", {"X-Request-ID": f"rv-{n}"})
    task_id = body.json()["task_id"]
    time.sleep(delay_s)  # the race under test: a worker may start it meanwhile, or not
    return task_id, stack.http.delete(f"/api/v1/tasks/{task_id}")


def test_every_delete_answer_matches_what_ran(revoke_stack: RunningStack) -> None:
    stack = revoke_stack
    for program in WORKERS:
        inject.wait_worker_ready(stack.layout, program, timeout_s=60)
    rng = random.Random(20261203)
    delays = [rng.uniform(0.0, 0.15) for _ in range(80)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        pairs = list(pool.map(lambda a: _submit_then_revoke(stack, *a), enumerate(delays)))
    ids = [task_id for task_id, _ in pairs]
    answers = [answer for _, answer in pairs]
    stack.wait_until_released(ids, timeout_s=60)
    runs = executions(witness_client(stack.settings.broker_url), ids).runs
    outcomes: dict[str, int] = {}
    for task_id, answer in zip(ids, answers, strict=True):
        body = answer.json()
        if answer.status_code == 200:
            assert body["status"] == "REVOKED", body
            assert runs.get(task_id, 0) == 0, (task_id, "revoked but it ran")
            final = stack.http.get(f"/api/v1/tasks/{task_id}").json()["status"]
            assert final == "REVOKED", (task_id, final)
            outcomes["revoked"] = outcomes.get("revoked", 0) + 1
        else:
            assert answer.status_code == 409, answer.text
            assert body["error"]["code"] in ("task_running", "task_already_finished"), body
            assert runs.get(task_id, 0) == 1, (task_id, body, runs.get(task_id))
            outcomes[body["error"]["code"]] = outcomes.get(body["error"]["code"], 0) + 1
    print(outcomes)  # shown with -s
    assert sum(outcomes.values()) == len(ids)
    # Both sides of the race happened, or the test proved only half of it.
    assert outcomes.get("revoked") and len(outcomes) > 1, outcomes
