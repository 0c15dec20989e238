"""A timeout is not a no: every answer to ``POST /api/v1/tasks`` matches what Redis holds.

Two kinds of proof. Deterministic interleavings, through a relay that holds chosen scripts on
the wire in front of a scratch redis-server (tests/integration/redis_wire.py): a lost reply
of a script that ran, of one withdrawn before it ran, one never settled in time, and a
``SCRIPT FLUSH`` in the middle of a batch. Then the real stack: Redis SIGSTOPped while dozens
of submissions are in flight, every answer checked afterwards against Redis and the
execution witness (the independent truth).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from api.errors import BROKER_UNAVAILABLE, OUTCOME_UNKNOWN
from api.idempotency import REPLAY_HEADER
from api.main import create_app
from api.script_batch import ScriptBatcher
from api.settlement import SETTLE_DEADLINE_S
from api.task_records import records_key
from taskq.broker.fast_publish import RESOLVE, SUBMIT, withdrawn_key
from taskq.faults.inject import program_pid
from taskq.faults.witness import executions, witness_client
from taskq.settings import Settings
from taskq.stack.scratch_redis import scratch_redis
from tests.integration.conftest import require_binaries, stack_settings, start_stack, stop_stack
from tests.integration.redis_wire import RedisWire, evalsha_of, until
from tests.integration.stack_client import RunningStack

ECHO = {"task_type": "drill_echo", "data": {"payload": "outcome"}, "priority": "high"}
SUBMIT_SHA = hashlib.sha1(SUBMIT.encode()).hexdigest()
RESOLVE_SHA = hashlib.sha1(RESOLVE.encode()).hexdigest()
#: The API's Redis socket timeout in the relay tests: short, so a lost reply is noticed soon.
WIRE_TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server of this module's own (no persistence)."""
    require_binaries()
    with scratch_redis(tmp_path_factory.mktemp("outcomes-redis")) as port:
        yield port


@pytest.fixture
def wire(scratch: int) -> Iterator[RedisWire]:
    with Redis(port=scratch) as client:
        client.flushall()
        # Loaded, as in a running stack: a held EVALSHA is then a script that will run.
        client.script_load(SUBMIT)
        client.script_load(RESOLVE)
    with RedisWire(scratch) as relay:
        yield relay


@pytest.fixture
def api(wire: RedisWire) -> Iterator[TestClient]:
    """The real app (every middleware, the fast lane), its Redis behind the relay."""
    settings = Settings(
        redis_url=wire.url,
        redis_socket_timeout_s=WIRE_TIMEOUT_S,
        breaker_enabled=False,
        enable_drill_tasks=True,  # the submissions are drill_echo tasks
    )
    with TestClient(create_app(settings)) as client:
        yield client


def _queued_ids(client: Redis, queue: str) -> list[str]:
    return [json.loads(raw)["headers"]["id"] for raw in client.lrange(queue, 0, -1)]


def _post_in_background(
    pool: ThreadPoolExecutor, api: TestClient, headers: dict[str, str] | None = None
) -> Any:
    return pool.submit(api.post, "/api/v1/tasks", json=ECHO, headers=headers or {})


def test_a_lost_reply_of_a_script_that_ran_is_answered_202(
    wire: RedisWire, api: TestClient, scratch: int
) -> None:
    wire.hold("submit", evalsha_of(SUBMIT_SHA))
    wire.hold("resolve", evalsha_of(RESOLVE_SHA))
    with ThreadPoolExecutor(1) as pool, Redis(port=scratch) as redis:
        pending = _post_in_background(pool, api)
        # The API gave up reading SUBMIT's reply and is settling: SUBMIT runs now, late.
        until("SUBMIT timed out, RESOLVE sent", lambda: wire.waiting("resolve") >= 1)
        wire.release("submit")
        until("the late SUBMIT ran", lambda: bool(redis.keys(records_key("*"))))
        wire.release("resolve")
        answer = pending.result(timeout=10)
        assert answer.status_code == 202, answer.text
        task_id = answer.json()["task_id"]
        assert redis.exists(records_key(task_id)) == 1
        assert _queued_ids(redis, "high") == [task_id]


def test_a_lost_reply_withdrawn_before_the_script_ran_is_nothing_accepted(
    wire: RedisWire, api: TestClient, scratch: int
) -> None:
    wire.hold("submit", evalsha_of(SUBMIT_SHA))
    with ThreadPoolExecutor(1) as pool, Redis(port=scratch) as redis:
        answer = _post_in_background(pool, api).result(timeout=10)
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["code"] == BROKER_UNAVAILABLE and "nothing was accepted" in error["message"]
        task_id = error["details"]["task_id"]
        assert redis.exists(withdrawn_key(task_id)) == 1
        # The SUBMIT that was on the wire all along reaches Redis now: it must write nothing.
        wire.release("submit")
        until("the late SUBMIT answered", lambda: b"withdrawn" in wire.orphan_replies)
        assert redis.exists(records_key(task_id)) == 0
        assert _queued_ids(redis, "high") == []


def test_an_unsettled_submission_says_so_and_names_its_task(
    wire: RedisWire, api: TestClient, scratch: int
) -> None:
    wire.hold("submit", evalsha_of(SUBMIT_SHA))
    wire.hold("resolve", evalsha_of(RESOLVE_SHA))
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    with ThreadPoolExecutor(1) as pool, Redis(port=scratch) as redis:
        started = time.monotonic()
        answer = _post_in_background(pool, api, key).result(timeout=15)
        elapsed_s = time.monotonic() - started
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"]
        error = answer.json()["error"]
        task_id = error["details"]["task_id"]
        assert error["code"] == OUTCOME_UNKNOWN and task_id in error["message"]
        assert "nothing was accepted" not in error["message"]
        assert SETTLE_DEADLINE_S <= elapsed_s < SETTLE_DEADLINE_S + 1.0, elapsed_s
        # Redis reads what was held: the task turns out accepted, and the client's two ways
        # of finding out (its id, a retry with the same key) both say so.
        wire.release("submit")
        until("the late SUBMIT ran", lambda: redis.exists(records_key(task_id)) == 1)
        wire.release("resolve")
        assert api.get(f"/api/v1/tasks/{task_id}").status_code == 200
        retry = api.post("/api/v1/tasks", json=ECHO, headers=key)
        assert retry.status_code == 202 and retry.headers[REPLAY_HEADER] == "true"
        assert retry.json()["task_id"] == task_id
        assert _queued_ids(redis, "high") == [task_id]


def _gated(wire: RedisWire, socket_timeout_s: float, gate_s: float) -> Settings:
    """The API's settings through the wire, with this socket timeout and stall gate."""
    return Settings(
        redis_url=wire.url,
        redis_socket_timeout_s=socket_timeout_s,
        redis_stall_gate_s=gate_s,
        breaker_enabled=False,
        enable_drill_tasks=True,
    )


def test_while_redis_answers_nothing_new_submissions_are_refused_unsent(
    wire: RedisWire, scratch: int
) -> None:
    """Past the stall gate a submission is not sent: its 503 comes at once, not after the
    socket timeout, and it is true (Redis never saw it)."""
    gate_s = 0.2
    # A stall this long would hold every submission sent.
    settings = _gated(wire, socket_timeout_s=10.0, gate_s=gate_s)
    wire.hold("submit", evalsha_of(SUBMIT_SHA))
    with (
        TestClient(create_app(settings)) as api,
        ThreadPoolExecutor(1) as pool,
        Redis(port=scratch) as redis,
    ):
        first = _post_in_background(pool, api)
        until("the first SUBMIT on the wire", lambda: wire.waiting("submit") == 1)
        # The API sent it before the wire saw it, so its silence is at least this long.
        silent_since = time.monotonic()
        until("the gate's time passed", lambda: time.monotonic() - silent_since > gate_s)

        refused = api.post("/api/v1/tasks", json=ECHO)
        assert not first.done()  # answered while the first submission still waits
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"]
        error = refused.json()["error"]
        assert error["code"] == BROKER_UNAVAILABLE
        refused_id = error["details"]["task_id"]
        assert wire.waiting("submit") == 1 and wire.passed("submit") == 0  # never sent
        assert redis.exists(records_key(refused_id), withdrawn_key(refused_id)) == 0

        wire.release("submit")  # Redis answers again: the gate opens with the reply
        assert first.result(timeout=15).status_code == 202
        after = api.post("/api/v1/tasks", json=ECHO)
        assert after.status_code == 202, after.text
        assert sorted(_queued_ids(redis, "high")) == sorted(
            [first.result().json()["task_id"], after.json()["task_id"]]
        )


def test_after_an_unanswered_batch_the_next_one_goes_out_alone(
    wire: RedisWire, scratch: int
) -> None:
    """A batch lost to the socket timeout keeps the gate shut while the next one (the probe
    of whether Redis answers again) is on the wire: a third submission is not sent to join it."""
    # The gate is shorter than a lost batch's wait; the probe's own timeout leaves the
    # refused submission below seconds to arrive while the probe is still on the wire.
    settings = _gated(wire, socket_timeout_s=3.0, gate_s=0.8)
    wire.hold("submit", evalsha_of(SUBMIT_SHA))
    with (
        TestClient(create_app(settings)) as api,
        ThreadPoolExecutor(1) as pool,
        Redis(port=scratch) as redis,
    ):
        lost = api.post("/api/v1/tasks", json=ECHO)  # unanswered, settled as withdrawn
        assert lost.json()["error"]["code"] == BROKER_UNAVAILABLE, lost.text
        probe = _post_in_background(pool, api)
        until("the probe on the wire", lambda: wire.waiting("submit") == 2)

        refused = api.post("/api/v1/tasks", json=ECHO)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == BROKER_UNAVAILABLE
        assert wire.waiting("submit") == 2  # not sent

        wire.release("submit")
        answer = probe.result(timeout=15)
        # Released at once or after its own timeout and settlement: either way the truth.
        if answer.status_code == 202:
            assert redis.exists(records_key(answer.json()["task_id"])) == 1
        else:
            task_id = answer.json()["error"]["details"]["task_id"]
            assert redis.exists(records_key(task_id)) == 0
        assert api.post("/api/v1/tasks", json=ECHO).status_code == 202  # Redis answers again


def _submit_call(task_id: str) -> tuple[list[str], list[str | bytes | int]]:
    keys = [records_key(task_id), "flush-test", "flush-test-doorbell", withdrawn_key(task_id)]
    message = json.dumps({"headers": {"id": task_id}})
    return keys, [json.dumps({"task_id": task_id}), 600, message, "1"]


def test_a_script_flush_mid_batch_answers_every_real_outcome(wire: RedisWire, scratch: int) -> None:
    batch, ran_first = 8, 3
    ids = [str(uuid.uuid4()) for _ in range(batch)]
    seen = [0]

    def after_first(command: list[bytes]) -> bool:
        if not evalsha_of(SUBMIT_SHA)(command):
            return False
        seen[0] += 1
        return seen[0] > ran_first

    wire.hold("after-first", after_first)
    wire.hold("every-evalsha", evalsha_of(SUBMIT_SHA))
    wire.release("every-evalsha")  # counts, never holds

    def flush_between(redis: Redis) -> None:
        until("the batch held after its first scripts", lambda: wire.waiting("after-first") == 1)
        until("the first scripts ran", lambda: redis.exists(*map(records_key, ids)) == ran_first)
        redis.script_flush()
        wire.release("after-first")

    async def scenario(redis: Redis) -> list[Any]:
        client = AsyncRedis.from_url(wire.url, socket_timeout=5)
        try:
            batcher = ScriptBatcher(client, SUBMIT)
            calls = asyncio.gather(*(batcher(*_submit_call(task_id)) for task_id in ids))
            await asyncio.to_thread(flush_between, redis)
            return await calls
        finally:
            await client.aclose()

    with Redis(port=scratch) as redis:
        redis.script_load(SUBMIT)
        replies = asyncio.run(scenario(redis))
        assert replies == [[b"accepted"]] * batch
        assert sorted(_queued_ids(redis, "flush-test")) == sorted(ids)
    # One pipeline of 8, then only the 5 that answered NOSCRIPT again: nothing ran twice.
    assert wire.passed("every-evalsha") == batch + (batch - ran_first)


async def _until_close_seen(client: AsyncRedis, timeout_s: float = 10.0) -> None:
    """Until the pooled connection has read the server's end of stream (the FIN of a process
    that exited reaches the client a little after the exit)."""
    deadline = time.monotonic() + timeout_s
    while True:
        connection = await client.connection_pool.get_connection()
        try:
            if await connection.can_read():
                return
        finally:
            await client.connection_pool.release(connection)
        assert time.monotonic() < deadline, "the client never saw the server close"
        await asyncio.sleep(0.01)


def test_a_connection_closed_before_the_write_is_not_an_unknown_outcome(tmp_path: Path) -> None:
    """The pooled connection was closed by the server while idle: a kill (the script is sent
    on a new connection and runs) or the server's exit (known: nothing was sent)."""

    async def scenario(port: int) -> tuple[Any, BaseException]:
        client = AsyncRedis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=2)
        try:
            batcher = ScriptBatcher(client, "return 1")
            assert await batcher([], []) == 1
            with Redis(port=port) as admin:
                admin.client_kill_filter(_type="normal", skipme=True)
            await _until_close_seen(client)
            after_kill = await batcher([], [])
            with Redis(port=port, retry=Retry(NoBackoff(), 0)) as admin:
                admin.shutdown(nosave=True)
            await _until_close_seen(client)
            try:
                await batcher([], [])
            except Exception as exc:
                return after_kill, exc
            raise AssertionError("a script ran on a stopped server")
        finally:
            await client.aclose()

    require_binaries()
    with scratch_redis(tmp_path) as port:
        after_kill, after_exit = asyncio.run(scenario(port))
    assert after_kill == 1
    assert isinstance(after_exit, RedisConnectionError), repr(after_exit)


# --- the real stack: Redis SIGSTOPped under in-flight submissions ---------------------------

#: (seconds Redis is stopped, submissions in flight). 3 s: every sent submission outlives its
#: 2 s socket timeout and is settled when Redis wakes; 4.8 s: outlives the settling bound
#: (4 s from its start) too. Kept under the execution witness's own 5 s socket timeout: a
#: longer stall makes the witness retry a HINCRBY whose reply it lost and count a run twice.
ROUNDS = ((3.0, 40), (3.0, 40), (4.8, 40))
#: Answers within the settling bound plus slack for a loaded 2-core machine.
ANSWER_WITHIN_S = SETTLE_DEADLINE_S + 1.0


@dataclass(frozen=True)
class Answer:
    """One POST: status, error code (None for 202), task id (from any body), seconds."""

    status: int
    code: str | None
    task_id: str
    elapsed_s: float


@pytest.fixture(scope="module")
def stalled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(stack_settings(tmp_path_factory.mktemp("outcomes")))
    try:
        yield running
    finally:
        stop_stack(running)


def _answer(response: httpx.Response, elapsed_s: float) -> Answer:
    body = response.json()
    if response.status_code == 202:
        return Answer(202, None, body["task_id"], elapsed_s)
    error = body["error"]
    task_id = (error.get("details") or {}).get("task_id", "")
    return Answer(response.status_code, error["code"], task_id, elapsed_s)


#: A start signal already given.
_GO = threading.Event()
_GO.set()


def _post(client: httpx.Client, go: threading.Event) -> Answer:
    go.wait()
    started = time.monotonic()
    response = client.post("/api/v1/tasks", json=ECHO)
    return _answer(response, time.monotonic() - started)


def _round(stack: RunningStack, stop_s: float, count: int) -> list[Answer]:
    """``count`` POSTs released together, Redis SIGSTOPped as they go out, for ``stop_s``."""
    limits = httpx.Limits(max_connections=count)
    go = threading.Event()
    with (
        httpx.Client(base_url=stack.layout.base_url, timeout=20.0, limits=limits) as client,
        ThreadPoolExecutor(count) as pool,
    ):
        futures = [pool.submit(_post, client, go) for _ in range(count)]
        pid = program_pid(stack.layout, "redis")
        go.set()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(stop_s)  # the fault itself: how long Redis is frozen
        finally:
            os.kill(pid, signal.SIGCONT)
        return [f.result(timeout=30) for f in futures]


def _warm(stack: RunningStack, count: int) -> list[Answer]:
    """``count`` plain submissions at once: each replica's pool then holds live connections,
    so the stalled submissions are sent (not stuck opening a connection).

    First one submission to each replica directly, alone: after a batch the stall left
    unanswered, a replica sends its next batch as the lone probe of whether Redis answers
    again and refuses others meanwhile (api/script_batch.py); its reply opens the gate."""
    probes = []
    for port in stack.layout.api_ports:
        with httpx.Client(
            base_url=f"http://{stack.layout.bind_host}:{port}", timeout=20.0
        ) as replica:
            probes.append(_post(replica, _GO))
    limits = httpx.Limits(max_connections=count)
    with (
        httpx.Client(base_url=stack.layout.base_url, timeout=20.0, limits=limits) as client,
        ThreadPoolExecutor(count) as pool,
    ):
        go = threading.Event()
        futures = [pool.submit(_post, client, go) for _ in range(count)]
        go.set()
        answers = probes + [f.result(timeout=30) for f in futures]
    assert {a.status for a in answers} == {202}, answers
    return answers


def _written(redis: Redis, task_ids: list[str]) -> set[str]:
    """Of ``task_ids``, those whose task record SUBMIT wrote."""
    pipe = redis.pipeline()  # one round trip for all
    for task_id in task_ids:
        pipe.exists(records_key(task_id))
    return {t for t, n in zip(task_ids, pipe.execute(), strict=True) if n}


def _metas(redis: Redis, task_ids: list[str]) -> dict[str, str | None]:
    """Each task's stored status (None: the result backend never heard of it)."""
    raw = redis.mget([f"celery-task-meta-{t}" for t in task_ids]) if task_ids else []
    return {t: json.loads(r)["status"] if r else None for t, r in zip(task_ids, raw, strict=True)}


def _wait_all_succeeded(redis: Redis, task_ids: list[str], timeout_s: float = 60.0) -> None:
    until(
        f"{len(task_ids)} accepted tasks SUCCESS",
        lambda: set(_metas(redis, task_ids).values()) <= {"SUCCESS"},
        timeout_s,
    )


def _kind(answer: Answer) -> str:
    """accepted (202), nothing (503 nothing was accepted) or unknown; fails on anything else."""
    if answer.status == 202:
        return "accepted"
    kind = {BROKER_UNAVAILABLE: "nothing", OUTCOME_UNKNOWN: "unknown"}.get(answer.code or "")
    assert kind is not None and answer.status == 503, answer
    return kind


def _by_kind(answers: list[Answer]) -> dict[str, list[str]]:
    """Task ids by kind of answer (every answer names its task id, 503s in details)."""
    kinds: dict[str, list[str]] = {"accepted": [], "nothing": [], "unknown": []}
    for answer in answers:
        assert answer.task_id, answer
        kinds[_kind(answer)].append(answer.task_id)
    return kinds


def _report(round_: int, stop_s: float, answers: list[Answer], redis: Redis) -> None:
    kinds = _by_kind(answers)
    withdrawn = sum(redis.exists(withdrawn_key(t)) for t in kinds["nothing"])
    late = sum(a.status == 202 and a.elapsed_s >= 2.0 for a in answers)
    print(
        f"round {round_} (Redis stopped {stop_s:.1f} s): "
        + ", ".join(f"{k} {len(v)}" for k, v in kinds.items())
        + f"; 202 after a lost reply {late}; nothing accepted by withdrawal {withdrawn}"
    )


def test_every_answer_during_a_redis_stall_matches_redis(stalled: RunningStack) -> None:
    stalls: list[list[Answer]] = []
    answers: list[Answer] = []
    for stop_s, count in ROUNDS:
        answers += _warm(stalled, count)
        stalls.append(_round(stalled, stop_s, count))
        answers += stalls[-1]
    kinds = _by_kind(answers)
    slowest = max(answers, key=lambda a: a.elapsed_s)
    assert slowest.elapsed_s < ANSWER_WITHIN_S, slowest
    timeout_s = stalled.settings.redis_socket_timeout_s
    assert any(a.status == 202 and a.elapsed_s >= timeout_s for a in answers), (
        "no 202 came from settling a lost reply: the stall proves nothing"
    )
    assert kinds["unknown"], "the long stall left no submission unsettled"
    every_id = [t for ids in kinds.values() for t in ids]
    assert len(set(every_id)) == len(every_id)
    with Redis.from_url(stalled.settings.broker_url) as redis:
        for i, (stall, (stop_s, _)) in enumerate(zip(stalls, ROUNDS, strict=True), 1):
            _report(i, stop_s, stall, redis)
        written = _written(redis, every_id)
        # Every 202 is in Redis; no "nothing was accepted" is.
        assert written >= set(kinds["accepted"])
        assert written.isdisjoint(kinds["nothing"]), written & set(kinds["nothing"])
        ran = [t for t in every_id if t in written]
        never = [t for t in every_id if t not in written]
        # Drained: no message of any of these ids is queued or held any more.
        stalled.wait_until_released(every_id, timeout_s=60)
        _wait_all_succeeded(redis, ran)
        assert set(_metas(redis, never).values()) <= {None}
    with witness_client(stalled.settings.broker_url) as witness:
        seen = executions(witness, every_id)
    assert {t: seen.runs.get(t, 0) for t in ran} == dict.fromkeys(ran, 1)
    assert {t: seen.runs.get(t, 0) for t in never} == dict.fromkeys(never, 0)
    # Each unknown outcome is reconciled by its id, as its answer tells the client to.
    unknown_accepted = sum(t in written for t in kinds["unknown"])
    print(f"outcome unknown: {unknown_accepted} of {len(kinds['unknown'])} turned out accepted")
    for task_id in kinds["unknown"]:
        expected = 200 if task_id in written else 404
        assert stalled.http.get(f"/api/v1/tasks/{task_id}").status_code == expected, task_id
