"""Leases and results across a Sentinel failover, with real workers and a real Redis group.

The group is three redis-server + redis-sentinel pairs on loopback. In the clock tests both
replicas run with their wall clock 5 s ahead or 30 s behind (:mod:`tests.integration.clock_shift`),
so the promoted master's ``TIME`` and key expiry are another clock than the one the leases
and held records were written with. Truth is the execution witness (taskq/faults/witness.py:
how often each task's code ran, and whether two runs overlapped) and what the new master
itself stores, read with a plain client of that node.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from redis import Redis

from taskq.broker.app import create_celery_app
from taskq.broker.delivery import keys
from taskq.broker.delivery.guard import ExecutionGuard
from taskq.broker.delivery.lease import DEFAULT_TIMING
from taskq.faults.witness import RUNNING_PREFIX, WITNESS_DB, executions
from taskq.hosts.redis_group import Node, RedisGroup, redis_group
from taskq.redis_clients import sync_client
from taskq.settings import Settings
from taskq.stack.ports import free_port_block
from tests.integration import clock_shift
from tests.integration.test_sentinel_clients import _promoted, _require_sentinel

MASTER = "taskq"
REPO = Path(__file__).resolve().parents[2]
#: Long enough to span the failover and the grace after it: a false sweep of its live holder
#: would start a second run while the first still runs.
LIVE_TASK_S = 15.0
#: The dead holder's running task must still run when its worker is killed, after a second
#: worker has started and begun its own task: far longer than a worker start on a loaded host.
CUT_TASK_S = 30.0
DEADLINE_S = 120.0


def _settings(group: RedisGroup) -> Settings:
    first = group.nodes[0]
    return Settings(
        redis_url=f"redis://{first.host}:{first.redis_port}/0",
        redis_sentinels=group.sentinel_list,
        redis_master=MASTER,
        redis_wait_replicas=1,
    )


class Workers:
    """Celery workers of the taskq worker app on the group, each in a process group of its
    own, ended by PID (SIGKILL of its group) at the end of the test."""

    def __init__(self, group: RedisGroup, tmp: Path) -> None:
        self._group = group
        self._tmp = tmp
        self._running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, queues: str, **env: str) -> subprocess.Popen[bytes]:
        first = self._group.nodes[0]
        var = self._tmp / name
        var.mkdir()
        environment = {
            **os.environ,
            "TASKQ_REDIS_URL": f"redis://{first.host}:{first.redis_port}/0",
            "TASKQ_REDIS_SENTINELS": self._group.sentinel_list,
            "TASKQ_REDIS_MASTER": MASTER,
            "TASKQ_REDIS_WAIT_REPLICAS": "1",
            "TASKQ_VAR_DIR": str(var),
            "TASKQ_NODE_NAME": name,
            **env,
        }
        command = [
            sys.executable,
            *("-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queues),
            *("-c", environment.get("TASKQ_WORKER_CONCURRENCY", "2"), "-n", f"{name}@%h"),
            *("--without-mingle", "--without-gossip"),
        ]
        log = (var / "worker.out").open("ab")
        process = subprocess.Popen(
            command, cwd=REPO, env=environment, stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        self._running.append(process)
        return process

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its pool children (its own process group)."""
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for process in self._running:
            self.kill(process)


def _group(tmp_path: Path, wrap: Callable[[int], list[str]]) -> Iterator[RedisGroup]:
    _require_sentinel()
    base = free_port_block(6)
    nodes = [Node("127.0.0.1", base + i, base + 3 + i) for i in range(3)]
    with redis_group(nodes, tmp_path / "redis", MASTER, wrap=wrap) as running:
        yield running


@pytest.fixture(params=[5_000, -30_000], ids=["replicas-5s-ahead", "replicas-30s-behind"])
def skewed_group(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisGroup]:
    shim = clock_shift.build(tmp_path)
    shift = int(request.param)
    # Both replicas are off by the same amount: whichever Sentinel promotes, the new
    # master's clock is off from the one every lease and record was written with. Behind
    # by 30 s, the dead holder's lease would outlive it by 30 s on the new master.
    yield from _group(tmp_path, lambda i: clock_shift.wrap(shim, shift) if i else [])


@pytest.fixture
def group(tmp_path: Path) -> Iterator[RedisGroup]:
    yield from _group(tmp_path, lambda i: [])


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[RedisGroup], Workers]]:
    made: list[Workers] = []

    def make(group: RedisGroup) -> Workers:
        made.append(Workers(group, tmp_path))
        return made[-1]

    yield make
    for running in made:
        running.stop_all()


def _until(check: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


def _master(group: RedisGroup) -> int:
    """Index of the node that says role:master now."""
    for index in range(len(group.nodes)):
        client = group.node_client(index)
        try:
            if client.info("replication")["role"] == "master":
                return index
        except OSError:
            pass
        finally:
            client.close()
    raise AssertionError("no node says role:master")


def _client(group: RedisGroup, index: int, db: int = 0) -> Redis:
    node = group.nodes[index]
    return Redis(node.host, node.redis_port, db=db, socket_timeout=2, socket_connect_timeout=2)


def _running(witness: Redis, task_id: str) -> bool:
    return bool(witness.scard(RUNNING_PREFIX + task_id))


def _status(client: Redis, task_id: str) -> str | None:
    try:
        raw = client.get(f"celery-task-meta-{task_id}")
    except OSError:
        return None
    return str(json.loads(raw)["status"]) if raw else None


def _held_by(client: Redis, task_id: str) -> str | None:
    """The holder of ``task_id``'s held record on this node, if it is held."""
    for tag, raw in client.hgetall("unacked").items():
        payload = json.loads(raw)[0]
        if payload.get("headers", {}).get("id") == task_id:
            holder = client.hget(keys.HOLDERS, tag)
            return holder.decode() if isinstance(holder, bytes) else str(holder or "")
    return None


def _has(client: Redis, key: str) -> bool:
    return client.get(key) is not None


def _replicated(group: RedisGroup, index: int) -> None:
    """Until both replicas have every write the master took so far (a marker, then WAIT)."""
    client = _client(group, index)
    client.set(f"marker-{uuid.uuid4().hex}", 1)
    _until(lambda: int(client.wait(2, 200)) >= 2, "both replicas confirmed the writes", 30)
    client.close()


def _kill_master(group: RedisGroup) -> int:
    """SIGKILL node 0's Redis (the master); the index of the node promoted instead."""
    group.redis[0].send_signal(signal.SIGKILL)
    group.redis[0].wait(timeout=10)
    return _promoted(group, 0)


def test_a_failover_to_a_skewed_clock_redelivers_the_dead_and_only_the_dead(
    skewed_group: RedisGroup, workers: Callable[[RedisGroup], Workers]
) -> None:
    group = skewed_group
    app = create_celery_app(_settings(group))
    pool = workers(group)
    master = _client(group, 0)
    witness = _client(group, 0, WITNESS_DB)
    # The holder that dies: one pool process running a task, a second task prefetched
    # behind it (held, never started).
    doomed = pool.start(
        "doomed", "low", TASKQ_WORKER_CONCURRENCY="1", TASKQ_WORKER_PREFETCH_MULTIPLIER="2"
    )
    cut = app.send_task("taskq.drills.sleep", kwargs={"seconds": CUT_TASK_S}, queue="low").id
    _until(lambda: _running(witness, cut), "the doomed worker runs its task")
    waiting = app.send_task("taskq.drills.sleep", kwargs={"seconds": 0.1}, queue="low").id
    _until(lambda: bool(_held_by(master, waiting)), "the doomed worker holds the second task")
    doomed_lease = keys.lease_key(str(_held_by(master, waiting)))
    # The holder that lives through the failover, running a task across it.
    pool.start("survivor", "high,low")
    live = app.send_task("taskq.drills.sleep", kwargs={"seconds": LIVE_TASK_S}, queue="high").id
    _until(lambda: _running(witness, live), "the surviving worker runs its task")
    assert _running(witness, cut), "the cut task ended before its worker was killed (slow start)"
    pool.kill(doomed)
    _replicated(group, 0)
    master.close()
    witness.close()

    new = _kill_master(group)
    truth = _client(group, new)
    stamp = truth.hget(keys.CLOCK, "last")
    _until(lambda: truth.hget(keys.CLOCK, "last") != stamp, "a lease is renewed on the new master")
    # From the first renewal there on, no lease outlives one grace, whatever the clock it
    # was written with.
    assert truth.pttl(doomed_lease) <= DEFAULT_TIMING.grace_ms, "a dead holder looks alive"
    tasks = (cut, waiting, live)
    _until(
        lambda: all(_status(truth, task) == "SUCCESS" for task in tasks),
        "every task succeeded on the new master",
    )
    seen = executions(_client(group, new, WITNESS_DB), tasks)
    assert seen.runs.get(live) == 1 and live not in seen.overlaps, (
        f"the live holder's task ran again after the failover: {seen}"
    )
    assert seen.runs.get(waiting) == 1, f"the dead holder's prefetched task: {seen}"
    # The cut task's first run died with its worker; it ran to its end once more.
    assert seen.runs.get(cut) == 2, f"the dead holder's running task: {seen}"
    truth.close()


def test_a_success_answered_before_the_master_dies_stays_and_never_runs_again(
    group: RedisGroup, workers: Callable[[RedisGroup], Workers]
) -> None:
    app = create_celery_app(_settings(group))
    pool = workers(group)
    first = pool.start("first", "medium")
    master = _client(group, 0)
    witness = _client(group, 0, WITNESS_DB)
    # For this test only the master takes writes without its replicas, so the client can
    # be answered a SUCCESS that no replica has: the window in which a failover loses a
    # result, held open as long as the test needs.
    master.config_set("min-replicas-to-write", 0)
    # Long enough to outlast the cut of the replicas below on a loaded host (2 s did not
    # always); short enough that the frozen replicas stay eligible for promotion (sentinel
    # skips one cut off for over 10 x down-after).
    task = app.send_task("taskq.drills.sleep", kwargs={"seconds": 5.0}, queue="medium").id
    _until(lambda: _running(witness, task), "the task runs")
    _replicated(group, 0)  # its start is on both replicas
    # Replicas frozen, then cut off: what the master takes now reaches no replica (a frozen
    # one would still find it in its socket buffer when it wakes).
    for process in group.redis[1:]:
        process.send_signal(signal.SIGSTOP)
    try:
        master.client_kill_filter(_type="replica")
        assert _status(master, task) != "SUCCESS", "the task ended before the replicas were cut"
        _until(lambda: _status(master, task) == "SUCCESS", "the task is answered SUCCESS")
        group.redis[0].send_signal(signal.SIGKILL)
        group.redis[0].wait(timeout=10)
    finally:
        for process in group.redis[1:]:
            process.send_signal(signal.SIGCONT)
    master.close()
    witness.close()
    new = _promoted(group, 0)
    truth = _client(group, new)
    # The promoted replica never had that SUCCESS: the worker writes it again there.
    _until(lambda: _status(truth, task) == "SUCCESS", "the result is SUCCESS on the new master")
    # Whatever else the old master had not passed on (the ack, say) is the new master's
    # now: the worker that ran the task dies too, a fresh one sweeps what it held.
    pool.kill(first)
    pool.start("second", "medium")

    def settled() -> bool:
        return _held_by(truth, task) is None and truth.llen("medium") == 0

    _until(settled, "nothing of the task is held or queued on the new master")
    assert _status(truth, task) == "SUCCESS"
    seen = executions(_client(group, new, WITNESS_DB), [task])
    assert seen.runs.get(task) == 1, f"the task ran again after the failover: {seen}"
    truth.close()


def test_with_frozen_replicas_nothing_starts_and_a_result_is_written_until_one_has_it(
    group: RedisGroup, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_celery_app(_settings(group))
    backend = app.backend
    client = sync_client(group.url, master=MASTER, socket_timeout=2, socket_connect_timeout=2)
    guard = ExecutionGuard(
        client, backend.get_key_for_task, 60, 3, wait_replicas=1, wait_timeout_ms=200
    )
    assert guard.begin("replicated", 0, "tag-1").verdict == "run"
    done = json.dumps({"status": "SUCCESS", "result": 1, "task_id": "stored", "retries": 0})
    key = backend.get_key_for_task("stored")
    writer: list[BaseException | None] = []
    # Replicas frozen: the master cannot get a WAIT acknowledgement (or, once their lag is
    # over min-replicas-max-lag, refuses the write with NOREPLICAS).
    for process in group.redis[1:]:
        process.send_signal(signal.SIGSTOP)
    try:
        assert guard.begin("frozen", 0, "tag-2").verdict == "unsure"
        # A start that does not run is not a delivery (else a slow replica makes poison).
        assert int(client.get(keys.deliveries_key("frozen", 0)) or 0) == 0

        def store() -> None:
            try:
                backend.set(key, done)
                writer.append(None)
            except BaseException as exc:  # reported to the test below
                writer.append(exc)

        thread = threading.Thread(target=store)
        with caplog.at_level(logging.ERROR, logger="celery.backends.redis"):
            thread.start()
            _until(
                lambda: any("Retry" in r.getMessage() for r in caplog.records) or bool(writer),
                "the result write is retried",
                30,
            )
            assert not writer, f"the write ended while no replica could have it: {writer}"
    finally:
        for process in group.redis[1:]:
            process.send_signal(signal.SIGCONT)
    thread.join(timeout=60)
    assert writer == [None], writer
    for index in (1, 2):  # the replicas themselves have it
        replica = _client(group, index)
        _until(partial(_has, replica, key), f"replica {index} has the result", 30)
        replica.close()
    client.close()
