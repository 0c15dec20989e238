"""Guarantees that need a stack of their own: short idempotency TTL, API keys, a tight
rate limit, low breaker thresholds, and a Redis that is stopped and started again.

The tests of this module share one stack and run in file order; each leaves it running
normally (every process up) for the next. The Redis outage comes last.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from api.idempotency import REPLAY_HEADER, client_identity, redis_key
from taskq.stack.control import supervisor_rpc
from tests.integration.conftest import stack_settings, start_stack, stop_stack
from tests.integration.stack_client import Line, RunningStack

API_KEY = f"guard-{uuid.uuid4().hex}"
#: The test client's address is exempt from the rate limit; the abusive one is not.
ABUSIVE_ADDRESS = "127.0.0.2"
ECHO = {"payload": "guard"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    settings = stack_settings(
        tmp_path_factory.mktemp("guarded"),
        idempotency_ttl_s=2,
        api_keys=f"other-{uuid.uuid4().hex},{API_KEY}",
        rate_limit_rps=5,
        rate_limit_burst=5,
        rate_limit_exempt="127.0.0.1",
        breaker_threshold_low=5,
        breaker_threshold_medium=500,
        breaker_threshold_high=1000,
        breaker_close_ratio=0.5,
        breaker_cache_s=0.1,
        # Short reliability numbers, so a message caught in an outage is redelivered soon.
        task_soft_time_limit_s=8,
        task_time_limit_s=10,
        retry_backoff_max_s=5,
    )
    running = start_stack(settings)
    running.http.headers["X-API-Key"] = API_KEY
    try:
        yield running
    finally:
        stop_stack(running)


def _events(stack: RunningStack, event: str, **fields: Any) -> list[Line]:
    return stack.lines(
        lambda x: x.get("event.action") == event and all(x.get(k) == v for k, v in fields.items())
    )


def _until(what: str, condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s}s"
        time.sleep(0.05)


def _set_program(stack: RunningStack, name: str, running: bool) -> None:
    rpc = supervisor_rpc(stack.layout)
    if running:
        rpc.startProcess(name, True)
    else:
        rpc.stopProcess(name, True)


def test_api_keys_through_nginx_and_never_logged(guarded: RunningStack) -> None:
    body = {"task_type": "drill_echo", "data": ECHO, "priority": "high"}
    with httpx.Client(base_url=guarded.layout.base_url, timeout=10.0) as anonymous:
        missing = anonymous.post("/api/v1/tasks", json=body)
        wrong = anonymous.post("/api/v1/tasks", json=body, headers={"X-API-Key": "wrong-key"})
        bearer = anonymous.post(
            "/api/v1/tasks", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
        )
        health = anonymous.get("/readyz")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"
    assert bearer.status_code == 202 and health.status_code == 200
    assert guarded.wait_for_task(bearer.json()["task_id"])["status"] == "SUCCESS"
    # Every line these requests write is in before the logs are searched for the keys:
    # nginx's and the API's request lines come after the answers, the worker's success line
    # after the stored status. (An answered probe writes none.)
    posts = {a.headers["X-Request-ID"] for a in (missing, wrong, bearer)}
    expected = {
        (cid, service, "http.request.completed") for cid in posts for service in ("nginx", "api")
    }
    expected.add((bearer.headers["X-Request-ID"], "worker", "task.succeeded"))
    guarded.wait_for_lines(
        lambda x: x.get("correlation_id") in posts,
        lambda found: (
            expected <= {(x["correlation_id"], x["service.name"], x["event.action"]) for x in found}
        ),
    )
    for path in guarded.layout.log_dir.iterdir():
        text = path.read_text(errors="replace")
        assert API_KEY not in text and "wrong-key" not in text, path.name


def test_key_reuse_after_expiry_creates_a_new_task(guarded: RunningStack) -> None:
    key = f"k-{uuid.uuid4()}"
    headers = {"Idempotency-Key": key}
    first = guarded.submit("drill_echo", ECHO, "high", headers)
    replay = guarded.submit("drill_echo", ECHO, "high", headers)
    assert first.status_code == replay.status_code == 202
    assert replay.headers[REPLAY_HEADER] == "true"
    assert replay.json()["task_id"] == first.json()["task_id"]
    # The key's record expires in Redis (its TTL, Redis's clock): wait for exactly that.
    record = redis_key(client_identity(API_KEY), key)
    with Redis.from_url(guarded.settings.broker_url) as client:
        _until("the idempotency record expired", lambda: not client.exists(record))
    after = guarded.submit("drill_echo", ECHO, "high", headers)
    assert after.status_code == 202 and REPLAY_HEADER not in after.headers
    assert after.json()["task_id"] != first.json()["task_id"]


def test_an_abusive_client_is_cut_off_with_json_429(guarded: RunningStack) -> None:
    # Until 20 answers were refused (bounded): how many it takes depends on this machine's
    # speed; how many get through in that time is nginx's design (checked below).
    transport = httpx.HTTPTransport(local_address=ABUSIVE_ADDRESS)
    answers: list[httpx.Response] = []
    with httpx.Client(
        base_url=guarded.layout.base_url, transport=transport, timeout=10.0
    ) as abusive:
        started = time.monotonic()
        for i in range(400):
            answers.append(abusive.get("/healthz", headers={"X-Request-ID": f"abuse-{i}"}))
            if sum(a.status_code == 429 for a in answers) == 20:
                break
        elapsed_s = time.monotonic() - started
    limited = [a for a in answers if a.status_code == 429]
    assert len(limited) == 20, [a.status_code for a in answers]
    assert {a.status_code for a in answers} == {200, 429}
    # limit_req (leaky bucket, burst, nodelay): the first request, the burst, then the rate;
    # one more for nginx's millisecond clock.
    settings = guarded.settings
    allowed = len(answers) - len(limited)
    assert allowed <= 2 + settings.rate_limit_burst + math.ceil(settings.rate_limit_rps * elapsed_s)
    sample = limited[-1]
    assert sample.headers["Retry-After"] and sample.headers["content-type"] == "application/json"
    assert sample.json()["error"]["code"] == "rate_limited"
    assert sample.json()["correlation_id"] == sample.headers["X-Request-ID"]
    assert sample.json()["correlation_id"].startswith("abuse-")
    # The exempt (load-test) address is not limited meanwhile.
    assert all(guarded.http.get("/healthz").status_code == 200 for _ in range(40))
    refused = {a.headers["X-Request-ID"] for a in limited}
    rejected = guarded.wait_for_lines(
        lambda x: x.get("service.name") == "nginx" and x.get("http.response.status_code") == 429,
        lambda found: refused <= {x["correlation_id"] for x in found},
    )
    assert {line["client.address"] for line in rejected} == {ABUSIVE_ADDRESS}


def test_breaker_sheds_low_first_and_closes_again(guarded: RunningStack) -> None:
    _set_program(guarded, "worker-general", running=False)  # nothing drains medium and low
    try:
        accepted: list[str] = []
        rejection = None
        deadline = time.monotonic() + 20
        while rejection is None and time.monotonic() < deadline:
            answer = guarded.submit("drill_echo", ECHO, "low")
            if answer.status_code == 202:
                accepted.append(answer.json()["task_id"])
            else:
                assert answer.status_code == 503, answer.text
                rejection = answer
            time.sleep(0.05)
        assert rejection is not None, f"breaker never opened after {len(accepted)} tasks"
        error = rejection.json()["error"]
        assert error["code"] == "queue_saturated" and error["details"]["queue"] == "low"
        assert error["details"]["depth"] >= error["details"]["threshold"] == 5
        assert rejection.headers["Retry-After"] == str(guarded.settings.breaker_retry_after_s)
        # Low sheds first: medium is still accepted.
        medium = guarded.submit("drill_echo", ECHO, "medium")
        assert medium.status_code == 202
        accepted.append(medium.json()["task_id"])
        assert _events(guarded, "breaker.opened", queue="low")
        assert _events(guarded, "http.request.rejected", queue="low")
    finally:
        _set_program(guarded, "worker-general", running=True)
    for task_id in accepted:
        assert guarded.wait_for_task(task_id)["status"] == "SUCCESS"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        answer = guarded.submit("drill_echo", ECHO, "low")
        if answer.status_code == 202:
            break
        time.sleep(0.2)
    assert answer.status_code == 202, answer.text
    guarded.wait_for_lines(
        lambda x: x.get("event.action") == "breaker.closed" and x.get("queue") == "low",
        lambda found: len(found) >= 1,
    )


@dataclass
class Flow:
    """Submissions sent steadily from a thread: status, latency and task id of each."""

    stack: RunningStack
    results: list[tuple[float, int, float, str | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(
            base_url=self.stack.layout.base_url,
            timeout=20.0,
            headers={"X-API-Key": API_KEY},
        ) as client:
            while not self.stop.is_set() and len(self.results) < 2_000:
                started = time.monotonic()
                body = {"task_type": "drill_echo", "data": ECHO, "priority": "medium"}
                answer = client.post("/api/v1/tasks", json=body)
                elapsed = time.monotonic() - started
                task_id = answer.json().get("task_id") if answer.status_code == 202 else None
                self.results.append((started, answer.status_code, elapsed, task_id))
                time.sleep(0.05)


def _aof_files(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob("*") if p.is_file() and ".aof" in p.name]


def test_redis_outage_fails_fast_and_loses_nothing(guarded: RunningStack) -> None:
    # The general worker is held, so accepted tasks are certainly still queued in Redis (not
    # held by a worker) when it stops: what must survive is the AOF.
    _set_program(guarded, "worker-general", running=False)
    queued = [guarded.submit("drill_echo", ECHO, "medium") for _ in range(10)]
    assert {a.status_code for a in queued} == {202}
    flow = Flow(guarded)
    thread = threading.Thread(target=flow.run, daemon=True)
    thread.start()
    try:
        _until(
            "the flow accepted before the outage", lambda: any(r[1] == 202 for r in flow.results)
        )
        _set_program(guarded, "redis", running=False)  # returns once Redis has exited
        outage_start = time.monotonic()
        # Submissions fail fast with a JSON 503; readiness reports Redis.
        during = guarded.submit("drill_echo", ECHO, "medium")
        assert during.status_code == 503, during.text
        assert during.json()["error"]["code"] == "broker_unavailable"
        assert during.headers["Retry-After"]
        readyz = guarded.http.get("/readyz")
        assert readyz.status_code == 503
        assert readyz.json()["error"]["details"]["redis"] == "unreachable"
        # The flow meets the outage too: a submission of it sent, and answered, meanwhile.
        _until(
            "a flow submission during the outage",
            lambda: any(r[0] > outage_start for r in flow.results),
        )
        outage_end = time.monotonic()
        _set_program(guarded, "redis", running=True)
        # Service resumes by itself: the flow is accepted again, worker-high (up all along)
        # reconnected and runs a high task.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            r[1] == 202 and r[0] > outage_end for r in flow.results
        ):
            time.sleep(0.2)
        high = guarded.submit("drill_echo", ECHO, "high")
        assert high.status_code == 202, high.text
        assert guarded.wait_for_task(high.json()["task_id"], timeout_s=40)["status"] == "SUCCESS"
    finally:
        flow.stop.set()
        thread.join(timeout=30)
        _set_program(guarded, "worker-general", running=True)
        if supervisor_rpc(guarded.layout).getProcessInfo("redis")["statename"] != "RUNNING":
            _set_program(guarded, "redis", running=True)
    statuses = {r[1] for r in flow.results}
    assert statuses <= {202, 503}, statuses
    during_outage = [r for r in flow.results if outage_start < r[0] and r[0] + r[2] < outage_end]
    assert during_outage and {r[1] for r in during_outage} == {503}
    # A design bound: with Redis gone a connection is refused at once and every Redis call
    # is bounded by its 2 s socket timeout; the hang this catches is a request held until
    # nginx's 15 s proxy_read_timeout or this client's 20 s timeout.
    assert max(r[2] for r in flow.results) < 5.0, "a request hung"
    assert any(r[1] == 202 and r[0] > outage_end for r in flow.results), "service did not resume"
    # Nothing accepted is lost: every 202, before, during and after the outage, completes.
    accepted = [a.json()["task_id"] for a in queued] + [r[3] for r in flow.results if r[3]]
    for task_id in accepted:
        assert guarded.wait_for_task(task_id, timeout_s=60)["status"] == "SUCCESS", task_id
    assert _aof_files(guarded.layout.data_dir)
