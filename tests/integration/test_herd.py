"""A short thundering herd against a real stack, judged by what the clients got and by the
execution witness: only 202/429/503 answers, each shed one with Retry-After and a
machine-readable code; status polls of accepted tasks answered all through it; every
accepted task run exactly once and terminal in the API's status.

The stack's submission bound is small (8 per replica), so 400 connections certainly
overflow it; the pollers come from another loopback address (per-address rate limit).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from taskq.faults.witness import executions, witness_client
from taskq.logs.schema import SHED_ERROR_CODES
from tests.integration.conftest import stack_settings, start_stack, stop_stack
from tests.integration.herd_client import Answer, Connection
from tests.integration.stack_client import TERMINAL_STATES, RunningStack

HERD_CONNECTIONS = 400
HERD_SECONDS = 3.0
POLLERS = 8
HERD_SOURCE = "127.0.0.1"
POLL_SOURCE = "127.0.0.3"
BODY = json.dumps({"task_type": "drill_echo", "data": {"payload": "herd"}}).encode()
PATH = "/api/v1/tasks"


@pytest.fixture(scope="module")
def herd_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(stack_settings(tmp_path_factory.mktemp("herd"), api_max_inflight=8))
    try:
        yield running
    finally:
        stop_stack(running)


async def _herd(stack: RunningStack, seed: list[str]) -> tuple[list[Answer], list[Answer], float]:
    host, port = stack.layout.bind_host, stack.layout.http_port
    accepted = list(seed)
    end = time.monotonic() + HERD_SECONDS

    async def hammer() -> list[Answer]:
        conn, got = Connection(host, port, HERD_SOURCE), []
        while time.monotonic() < end:
            answer = await conn.request("POST", PATH, BODY)
            got.append(answer)
            if answer.status == 202:
                accepted.append(json.loads(answer.body)["task_id"])
        await conn.close()
        return got

    async def poll(index: int) -> list[Answer]:
        conn, got = Connection(host, port, POLL_SOURCE), []
        while time.monotonic() < end:
            task_id = accepted[(index + len(got) * POLLERS) % len(accepted)]
            got.append(await conn.request("GET", f"{PATH}/{task_id}"))
        await conn.close()
        return got

    herd = asyncio.gather(*(hammer() for _ in range(HERD_CONNECTIONS)))
    polls = asyncio.gather(*(poll(i) for i in range(POLLERS)))
    herd_answers, poll_answers = await asyncio.gather(herd, polls)
    return [a for c in herd_answers for a in c], [a for c in poll_answers for a in c], end


def test_short_herd_sheds_cleanly_and_serves_accepted_work(herd_stack: RunningStack) -> None:
    seed = [
        herd_stack.submit("drill_echo", {"payload": "seed"}).json()["task_id"] for _ in range(8)
    ]
    answers, polls, end = asyncio.run(_herd(herd_stack, seed))
    statuses = {a.status for a in answers}
    assert statuses <= {202, 429, 503}, statuses
    shed = [a for a in answers if a.status != 202]
    assert shed, "the herd never overflowed the admission bound: not a herd"
    for answer in shed:
        assert int(answer.headers["retry-after"]) >= 1, answer.headers
        code = json.loads(answer.body)["error"]["code"]
        assert SHED_ERROR_CODES.get(code) == answer.status, (code, answer.status)
        assert code != "submission_outcome_unknown"
    # Every poll of an accepted task was answered, and answered while the herd ran.
    assert [p.status for p in polls if p.status != 200] == []
    assert sum(p.done_at < end for p in polls) >= POLLERS
    accepted = seed + [json.loads(a.body)["task_id"] for a in answers if a.status == 202]
    assert len(set(accepted)) == len(accepted)
    for task_id in accepted:
        assert herd_stack.wait_for_task(task_id, timeout_s=120)["status"] in TERMINAL_STATES
    with witness_client(herd_stack.settings.broker_url) as witness:
        seen = executions(witness, accepted)
    assert {t: seen.runs.get(t, 0) for t in accepted} == dict.fromkeys(accepted, 1)
    print(
        f"herd: {len(answers)} answers, {len(accepted) - len(seed)} accepted, {len(shed)} shed;"
        f" polls: {len(polls)}, slowest {max(p.done_at - p.sent_at for p in polls) * 1000:.0f} ms"
    )
