"""The tools users already run, against the real stack: real Flower over the stack's broker,
the broker's own queue bindings, and the Prometheus endpoints of replicas and workers.

Independent truths: Flower's view comes from Celery's events, the bindings and depths are
read from Redis itself, and the metrics are compared with the tasks the test submitted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from api.metrics import BrokerCollector
from taskq.broker.queue_depth import PRIORITY_STEPS, priority_lists
from taskq.settings import QUEUES
from taskq.stack.ports import free_port_block
from taskq.stack.render import WORKERS
from tests.integration.stack_client import RunningStack

pytestmark = pytest.mark.integration

T = TypeVar("T")
SECRET = f"ZZ{uuid.uuid4().hex[:12].upper()}"
SECRET_NUMBER = 98765.4321
SECRET_PAYLOAD = f"payload-{uuid.uuid4().hex}"
POSTED = {"method": "POST", "route": "/api/v1/tasks", "status": "202"}


def poll(what: str, probe: Callable[[], T | None], timeout_s: float, last: Callable[[], str]) -> T:
    """Call ``probe`` until it returns something; fail with ``what`` and ``last()``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.25)
    raise AssertionError(f"{what} not seen within {timeout_s}s; last: {last()}")


def _metrics(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = httpx.get(url, timeout=5.0).text
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def _value(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return sum(
        v for lbl, v in samples.get(name, []) if all(lbl.get(k) == x for k, x in labels.items())
    )


# --- bindings --------------------------------------------------------------------------------


def test_each_queue_is_bound_to_its_own_exchange_in_redis(stack: RunningStack) -> None:
    client = Redis.from_url(stack.layout.redis_url())
    try:
        separator = b"\x06\x16"
        for queue in QUEUES:
            members = client.smembers(f"_kombu.binding.{queue}")
            assert members == {separator.join([queue.encode(), b"", queue.encode()])}, queue
        # No other exchange routes into our queues.
        for key in client.scan_iter(match="_kombu.binding.*"):
            exchange = key.decode().removeprefix("_kombu.binding.")
            if exchange in QUEUES:
                continue
            bound = {m.split(separator)[-1].decode() for m in client.smembers(key)}
            assert not bound & set(QUEUES), f"{exchange} also routes to {bound & set(QUEUES)}"
    finally:
        client.close()


# --- queue depth collector against a real Redis -------------------------------------------------


def test_queue_depth_counts_every_priority_list_and_unacked(redis_port: int) -> None:
    client = Redis(host="127.0.0.1", port=redis_port)
    try:
        client.flushdb()
        expected: dict[tuple[str, str], int] = {}
        for q_index, queue in enumerate(QUEUES):
            for s_index, name in enumerate(priority_lists(queue)):
                count = q_index * 4 + s_index + 1
                client.rpush(name, *[b"m"] * count)
                expected[(queue, str(PRIORITY_STEPS[s_index]))] = count
        client.hset("unacked", mapping={f"tag-{i}": b"m" for i in range(7)})
        thresholds = {"high": 100, "medium": 50, "low": 20}
        collector = BrokerCollector(lambda: client, lambda: None, thresholds, 0.8)
        families = {f.name: f for f in collector.collect()}
        depth = {
            (s.labels["queue"], s.labels["priority"]): s.value
            for s in families["taskq_queue_depth"].samples
        }
        assert depth == expected
        assert families["taskq_queue_unacked"].samples[0].value == 7
        assert families["taskq_broker_up"].samples[0].value == 1
        backlog = {s.labels["queue"]: s.value for s in families["taskq_breaker_backlog"].samples}
        per_queue = {q: sum(v for (qq, _), v in expected.items() if qq == q) for q in QUEUES}
        assert backlog["high"] == per_queue["high"] + 7
        assert backlog["low"] == sum(per_queue.values()) + 7
        closes = {s.labels["queue"]: s.value for s in families["taskq_breaker_close_level"].samples}
        assert closes == {"high": 80.0, "medium": 40.0, "low": 16.0}
    finally:
        client.flushdb()
        client.close()


def test_broker_down_is_a_metric_not_an_error() -> None:
    client = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    collector = BrokerCollector(lambda: client, lambda: None, {"high": 1}, 0.8)
    families = {f.name: f for f in collector.collect()}
    assert families["taskq_broker_up"].samples[0].value == 0
    assert "taskq_queue_depth" not in families


# --- Flower --------------------------------------------------------------------------------------


@dataclass
class Flower:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str) -> Any:
        return httpx.get(f"{self.url}{path}", timeout=10.0).json()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@pytest.fixture(scope="module")
def flower(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flower]:
    port = free_port_block(1)
    log = tmp_path_factory.mktemp("flower") / "flower.log"
    env = {
        **os.environ,
        "TASKQ_REDIS_URL": stack.settings.broker_url,
        "TASKQ_LOG_FILE": str(log.with_suffix(".jsonl")),
        "FLOWER_UNAUTHENTICATED_API": "true",
    }
    command = [
        sys.executable, "-m", "celery", "-A", "worker.celery_app",
        "--broker", stack.settings.broker_url,
        "flower", f"--port={port}", f"--address={stack.layout.bind_host}",
        "--inspect_timeout=3000",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    running = Flower(f"http://{stack.layout.bind_host}:{port}", process, log)
    try:

        def up() -> bool | None:
            assert process.poll() is None, f"Flower exited: {running.tail()}"
            try:
                return (
                    httpx.get(f"{running.url}/healthcheck", timeout=2.0).status_code == 200 or None
                )
            except httpx.HTTPError:
                return None

        poll("Flower answering", up, 60.0, running.tail)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _worker_names() -> set[str]:
    return set(WORKERS)


def test_flower_lists_workers_and_tasks_without_their_arguments(
    stack: RunningStack, flower: Flower
) -> None:
    workers: dict[str, Any] = {}

    def both_workers() -> set[str] | None:
        workers.clear()
        workers.update(flower.get("/api/workers?refresh=1"))
        prefixes = {name.split("@", 1)[0] for name in workers}
        return prefixes if _worker_names() <= prefixes else None

    poll("both workers in Flower's /api/workers", both_workers, 60.0, lambda: str(list(workers)))

    # Flower consumes events from its start on: a warm-up task proves it sees them.
    tasks: dict[str, Any] = {}

    def flower_tasks() -> dict[str, Any]:
        tasks.clear()
        tasks.update(flower.get("/api/tasks?limit=1000"))
        return tasks

    def warm_up() -> str | None:
        answer = stack.submit("drill_echo", {"payload": "warm-up"}, priority="high")
        assert answer.status_code == 202, answer.text
        task_id = str(answer.json()["task_id"])
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if flower_tasks().get(task_id, {}).get("state") == "SUCCESS":
                return task_id
            time.sleep(0.25)
        return None

    poll("a task in Flower's /api/tasks", warm_up, 60.0, lambda: str(list(tasks))[:500])

    position = {"symbol": SECRET, "quantity": SECRET_NUMBER, "price": 123.456789}
    prefix = f"flower-{uuid.uuid4().hex[:8]}"
    submissions = {
        "taskq.risk.calculate_var": stack.submit(
            "calculate_var",
            {"portfolio_data": {"positions": [position]}, "confidence_level": 0.95},
            headers={"X-Request-ID": f"{prefix}-var"},
        ),
        "taskq.drills.echo": stack.submit(
            "drill_echo", {"payload": SECRET_PAYLOAD}, headers={"X-Request-ID": f"{prefix}-echo"}
        ),
        # Its retry is published by the worker (Celery's own publish): the id is there too.
        "taskq.drills.flaky": stack.submit(
            "drill_flaky",
            {"fail_times": 1},
            priority="low",
            headers={"X-Request-ID": f"{prefix}-flaky"},
        ),
    }
    ids = {}
    correlation = {}
    for name, answer in submissions.items():
        assert answer.status_code == 202, answer.text
        ids[str(answer.json()["task_id"])] = name
        correlation[str(answer.json()["task_id"])] = str(answer.json()["correlation_id"])
    for task_id in ids:
        assert stack.wait_for_task(task_id, timeout_s=60.0)["status"] == "SUCCESS"

    def all_done() -> dict[str, Any] | None:
        seen = flower_tasks()
        done = all(
            seen.get(t, {}).get("state") == "SUCCESS" and seen[t].get("runtime") is not None
            for t in ids
        )
        return seen if done else None

    seen = poll(
        "the tasks as SUCCESS in Flower",
        all_done,
        30.0,
        lambda: json.dumps({t: tasks.get(t, {}).get("state") for t in ids}),
    )
    for task_id, name in ids.items():
        task = seen[task_id]
        assert task["name"] == name
        assert task["runtime"] > 0
        assert str(task["worker"]).split("@", 1)[0] in _worker_names()
        assert "bytes: redacted" in str(task["kwargs"]), task["kwargs"]
        # What Flower shows as the task's args names the request to trace.
        assert str(task["args"]).startswith(f"correlation_id={correlation[task_id]} "), task
    flaky = flower.get(f"/api/task/info/{next(t for t, n in ids.items() if n.endswith('flaky'))}")
    assert flaky["state"] == "SUCCESS"

    everything = json.dumps(flower.get("/api/tasks?limit=1000"))
    for task_id in ids:
        everything += json.dumps(flower.get(f"/api/task/info/{task_id}"))
    for value in (SECRET, SECRET_PAYLOAD, str(SECRET_NUMBER), "123.456789"):
        assert value not in everything, f"{value} leaked into Flower's task data"


# --- Prometheus endpoints ----------------------------------------------------------------------


def test_replica_and_worker_metrics_count_what_happened(stack: RunningStack) -> None:
    answers = [
        stack.submit("drill_echo", {"payload": f"m{i}"}, priority="medium") for i in range(4)
    ]
    ids = [str(a.json()["task_id"]) for a in answers if a.status_code == 202]
    assert len(ids) == 4
    for task_id in ids:
        assert stack.wait_for_task(task_id)["status"] == "SUCCESS"
    bad = stack.http.post("/api/v1/tasks", json={"task_type": "drill_echo", "data": {"payload": 1}})
    assert bad.status_code == 422

    def posts_counted() -> list[dict[str, list[tuple[dict[str, str], float]]]] | None:
        # A replica counts a request once it has sent the answer: the client may see the
        # answer first. Submission outcomes are counted before it answers.
        replicas = [_metrics(f"{stack.replica_url(i)}/metrics") for i in (1, 2)]
        posted = sum(_value(r, "taskq_http_requests_total", **POSTED) for r in replicas)
        return replicas if posted >= 4 else None

    replicas = poll("4 accepted POSTs counted by the replicas", posts_counted, 15.0, lambda: "")
    accepted = sum(
        _value(r, "taskq_task_submissions_total", task_type="drill_echo", outcome="accepted")
        for r in replicas
    )
    assert accepted >= 4
    invalid = sum(
        _value(
            r, "taskq_task_submissions_total", task_type="drill_echo", outcome="validation_error"
        )
        for r in replicas
    )
    assert invalid >= 1
    posted = sum(_value(r, "taskq_http_requests_total", **POSTED) for r in replicas)
    assert posted >= 4
    latency = sum(
        _value(r, "taskq_http_request_duration_seconds_count", route="/api/v1/tasks", status="202")
        for r in replicas
    )
    assert latency == posted
    for replica in replicas:
        labels = {(lbl["queue"], lbl["priority"]) for lbl, _ in replica["taskq_queue_depth"]}
        assert labels == {(q, str(s)) for q in QUEUES for s in PRIORITY_STEPS}
        assert _value(replica, "taskq_broker_up") == 1
        assert {lbl["queue"] for lbl, _ in replica["taskq_breaker_open"]} == set(QUEUES)

    # nginx does not publish the metrics.
    assert stack.http.get("/metrics").status_code == 404

    def worker_counts() -> list[dict[str, list[tuple[dict[str, str], float]]]] | None:
        workers = [
            _metrics(
                f"http://{stack.layout.bind_host}:{stack.layout.worker_metrics_port(i)}/metrics"
            )
            for i in range(1, len(WORKERS) + 1)
        ]
        # Every figure this test checks: each is counted as its task event is sent, which
        # may be after the backend has the state the API reported.
        echo = {"task_name": "taskq.drills.echo"}
        counts = (
            sum(_value(w, "taskq_worker_tasks_total", state="SUCCESS", **echo) for w in workers),
            sum(_value(w, "taskq_worker_task_runtime_seconds_count", **echo) for w in workers),
            sum(_value(w, "taskq_worker_task_queue_wait_seconds_count", **echo) for w in workers),
            sum(_value(w, "taskq_worker_tasks_total", state="STARTED", **echo) for w in workers),
        )
        seen_counts[:] = counts
        return workers if min(counts) >= 4 else None

    seen_counts: list[float] = []
    workers = poll(
        "4 echo runs in every worker figure (SUCCESS, runtime, queue wait, STARTED)",
        worker_counts,
        15.0,
        lambda: str(seen_counts),
    )
    for worker in workers:
        assert _value(worker, "taskq_worker_up") == 1
