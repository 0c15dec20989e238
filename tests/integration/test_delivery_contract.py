"""The delivery contract's scripts against a real redis-server (taskq/broker/delivery).

Each test builds the state a real worker would leave (a message popped and held by a holder,
leases renewed or not, a run lease taken) with the scripts themselves, then checks what a
sweep, a restore or a start decides. The clock-skew test runs the sweep in a process whose
clock is five seconds off (faketime): nothing may change, because every time comes from
Redis.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Producer, Queue
from redis import Redis

from taskq.broker.delivery import keys, lease, scripts
from taskq.broker.delivery.lease import DEFAULT_TIMING
from taskq.broker.redis_transport import POP_AND_HOLD
from tests.missing_tool import tool_missing

TRANSPORT = "taskq.broker.redis_transport:Transport"
REPO = Path(__file__).resolve().parents[2]
TIMING = DEFAULT_TIMING


@pytest.fixture
def client(redis_port: int) -> Iterator[Redis]:
    redis = Redis(port=redis_port)
    shared = ("unacked", "unacked_index", keys.HOLDERS, keys.CLOCK)
    redis.delete(*shared)
    yield redis
    redis.delete(*shared)  # the Redis is shared with other test modules
    redis.close()


@pytest.fixture
def queue() -> Queue:
    name = f"q-{uuid.uuid4().hex[:8]}"
    return Queue(name, Exchange(name), routing_key=name)


def _connection(redis_port: int) -> Connection:
    return Connection(f"redis://127.0.0.1:{redis_port}/0", transport=TRANSPORT)


def renew(client: Redis, holder: str) -> None:
    """One lease renewal of ``holder``, as its keeper thread does it."""
    client.eval(
        scripts.RENEW,
        3,
        keys.lease_key(holder),
        keys.CLOCK,
        keys.HOLDERS,
        TIMING.ttl_ms,
        TIMING.gap_ms,
        TIMING.grace_ms,
    )


def end_grace(client: Redis) -> None:
    """A broker that has been answering renewals for a while: no stall, no grace."""
    seconds, micros = client.time()
    now = int(seconds) * 1000 + int(micros) // 1000
    epoch = client.info("server")["run_id"]
    client.hset(keys.CLOCK, mapping={"last": now, "grace_until": 0, "epoch": epoch})


def hold(redis_port: int, client: Redis, queue: Queue, holder: str) -> tuple[str, dict[str, Any]]:
    """Publish one task message and pop it as ``holder`` (alive at that moment: a consumer
    whose lease expired pops nothing): (delivery tag, payload)."""
    renew(client, holder)
    task_id = str(uuid.uuid4())
    with _connection(redis_port) as conn:
        Producer(conn.channel()).publish(
            {"n": 1},
            exchange=queue.exchange,
            routing_key=queue.name,
            declare=[queue],
            headers={"id": task_id, "retries": 0, "task": "t"},
        )
    pop = [queue.name, "unacked", "unacked_index", keys.HOLDERS]
    _, payload, tag = client.eval(POP_AND_HOLD, len(pop), *pop, holder, keys.lease_key(holder))
    return tag.decode(), json.loads(payload)


def sweep(redis_port: int) -> None:
    with _connection(redis_port) as conn:
        conn.default_channel.qos.restore_visible(num=100, interval=1)


def meta_key(task_id: str) -> str:
    return f"celery-task-meta-{task_id}"


def begin(client: Redis, task_id: str, holder: str, tag: str) -> str:
    started = json.dumps({"status": "STARTED", "result": {}, "retries": 0})
    verdict, _, _ = client.eval(
        scripts.BEGIN,
        4,
        meta_key(task_id),
        keys.deliveries_key(task_id, 0),
        keys.run_key(task_id, 0),
        keys.revoked_key(task_id),
        holder,
        tag,
        60,
        1,
        started,
        60,
    )
    return str(verdict.decode())


def test_a_live_holder_keeps_its_message_however_old(
    redis_port: int, client: Redis, queue: Queue
) -> None:
    renew(client, "alive")
    tag, _ = hold(redis_port, client, queue, "alive")
    client.zadd("unacked_index", {tag: 1.0})  # delivered in 1970: age decides nothing
    end_grace(client)
    sweep(redis_port)
    assert client.hexists("unacked", tag) and client.llen(queue.name) == 0


def test_a_dead_holders_message_goes_back_once(
    redis_port: int, client: Redis, queue: Queue
) -> None:
    tag, _ = hold(redis_port, client, queue, "dead")
    client.delete(keys.lease_key("dead"))  # its worker died
    end_grace(client)
    sweep(redis_port)
    sweep(redis_port)  # a second sweeper finds nothing left to move
    assert client.llen(queue.name) == 1
    assert not client.hexists("unacked", tag) and not client.hexists(keys.HOLDERS, tag)


def test_after_a_stall_nobody_is_presumed_dead_for_a_grace(
    redis_port: int, client: Redis, queue: Queue
) -> None:
    tag, _ = hold(redis_port, client, queue, "silent")
    client.delete(keys.lease_key("silent"))  # expired while Redis was away
    # The last renewal anyone made is older than the stall gap: Redis was away.
    seconds, _ = client.time()
    epoch = client.info("server")["run_id"]
    stamp = (int(seconds) - 60) * 1000
    client.hset(keys.CLOCK, mapping={"last": stamp, "grace_until": 0, "epoch": epoch})
    sweep(redis_port)
    assert client.hexists("unacked", tag), "swept during the grace after a stall"
    grace_until = int(client.hget(keys.CLOCK, "grace_until") or 0)
    assert grace_until >= (int(seconds) * 1000) + TIMING.grace_ms - 1000
    end_grace(client)
    sweep(redis_port)
    assert not client.hexists("unacked", tag) and client.llen(queue.name) == 1


def test_a_restore_that_lost_a_race_changes_nothing(
    redis_port: int, client: Redis, queue: Queue
) -> None:
    tag, _ = hold(redis_port, client, queue, "dead")
    client.delete(keys.lease_key("dead"))
    end_grace(client)
    with _connection(redis_port) as conn:
        qos = conn.default_channel.qos
        qos.restore_by_tag(tag, mode="sweep")
        # The same tag is delivered again (kombu reuses tags across redeliveries) and held
        # by a live worker; a late restorer decided from the old record.
        renew(client, "alive")
        pop = [queue.name, "unacked", "unacked_index", keys.HOLDERS]
        client.eval(POP_AND_HOLD, len(pop), *pop, "alive", keys.lease_key("alive"))
        qos.restore_by_tag(tag, mode="sweep")
    assert client.llen(queue.name) == 0 and client.hget(keys.HOLDERS, tag) == b"alive"


def test_a_holder_whose_lease_expired_takes_and_starts_nothing(
    redis_port: int, client: Redis, queue: Queue
) -> None:
    tag, payload = hold(redis_port, client, queue, "stalled")
    client.delete(keys.lease_key("stalled"))  # its renewals stopped; it still runs
    assert begin(client, payload["headers"]["id"], "stalled", tag) == "fenced"
    hold_keys = [queue.name, "unacked", "unacked_index", keys.HOLDERS]
    with _connection(redis_port) as conn:
        Producer(conn.channel()).publish({"n": 2}, exchange=queue.exchange, routing_key=queue.name)
    args = ("stalled", keys.lease_key("stalled"))
    assert client.eval(POP_AND_HOLD, len(hold_keys), *hold_keys, *args) is None
    assert client.llen(queue.name) == 1


def test_a_late_ack_leaves_the_new_holders_record(
    redis_port: int, client: Redis, queue: Queue
) -> None:
    tag, _ = hold(redis_port, client, queue, "old")
    client.hset(keys.HOLDERS, tag, "new")  # redelivered under the same tag to another worker
    client.eval(scripts.ACK, 3, "unacked", "unacked_index", keys.HOLDERS, tag, "old")
    assert client.hexists("unacked", tag) and client.hget(keys.HOLDERS, tag) == b"new"


def test_return_keeps_a_started_delivery_and_reject_gives_it_back(
    redis_port: int, client: Redis, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lease, "_holder", "alive")  # this process acts as the holder
    renew(client, "alive")
    tag, payload = hold(redis_port, client, queue, "alive")
    task_id = payload["headers"]["id"]
    assert begin(client, task_id, "alive", tag) == "run"
    with _connection(redis_port) as conn:
        qos = conn.default_channel.qos
        qos.restore_by_tag(tag, mode="return")  # a channel closing under a running task
        assert client.hexists("unacked", tag) and client.llen(queue.name) == 0
        qos.restore_by_tag(tag, mode="reject", leftmost=True)  # its pool child died
    assert client.llen(queue.name) == 1 and not client.exists(keys.run_key(task_id, 0))


def test_a_copy_waits_while_a_live_holder_runs_the_attempt(
    redis_port: int, client: Redis, queue: Queue
) -> None:
    for holder in ("first", "second", "third"):
        renew(client, holder)
    task_id = str(uuid.uuid4())
    assert begin(client, task_id, "first", "tag-1") == "run"
    assert begin(client, task_id, "second", "tag-2") == "busy"
    assert json.loads(client.get(meta_key(task_id)))["status"] == "STARTED"
    client.delete(keys.lease_key("first"))  # the first holder died
    assert begin(client, task_id, "second", "tag-2") == "run"
    client.set(meta_key(task_id), json.dumps({"status": "SUCCESS", "result": 1}))
    assert begin(client, task_id, "third", "tag-3") == "done"
    # STARTED never overwrites a SUCCESS (the result backend's rule).
    assert json.loads(client.get(meta_key(task_id)))["status"] == "SUCCESS"


@pytest.mark.parametrize("offset", ["+5s", "-5s"])
def test_a_sweeper_with_a_skewed_clock_restores_nothing_alive(
    redis_port: int, client: Redis, queue: Queue, offset: str
) -> None:
    faketime = shutil.which("faketime")
    if faketime is None:
        tool_missing("faketime is missing: apt-get install -y faketime")
    renew(client, "alive")
    tag, _ = hold(redis_port, client, queue, "alive")
    end_grace(client)
    code = (
        "import sys, time;"
        f"sys.path.insert(0, {str(REPO)!r});"
        f"from tests.integration.test_delivery_contract import sweep;"
        "print(time.time());"
        f"sweep({redis_port})"
    )
    before = time.time()
    # Only the wall clock moves, as in a real skew (libfaketime 0.9.10 faking the monotonic
    # clock too hangs Python's timed waits, wolfcw/libfaketime#390).
    done = subprocess.run(
        [faketime, "--exclude-monotonic", "-f", offset, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    after = time.time()
    # The child read its clock while it ran, shifted by the offset: however long it took to
    # start (seconds on a loaded machine), its reading minus the offset lies in between.
    unshifted = float(done.stdout.strip().splitlines()[0]) - float(offset.removesuffix("s"))
    assert before <= unshifted <= after, f"faketime did not shift the clock by {offset}"
    assert client.hexists("unacked", tag) and client.llen(queue.name) == 0


def test_a_new_master_opens_the_grace_whatever_its_clock_says(
    redis_port: int, client: Redis, queue: Queue
) -> None:
    # The clock record as a replica carries it after a failover: a fresh stamp (no stall
    # visible) written by another server, whose clock may be ahead of this one's.
    tag, _ = hold(redis_port, client, queue, "live-elsewhere")
    client.delete(keys.lease_key("live-elsewhere"))  # expired by the new master's clock
    end_grace(client)
    client.hset(keys.CLOCK, "epoch", "the-old-masters-run-id")
    sweep(redis_port)
    assert client.hexists("unacked", tag), "swept at once on a new master"
    assert client.hget(keys.CLOCK, "epoch") == client.info("server")["run_id"].encode()
    end_grace(client)
    sweep(redis_port)
    assert not client.hexists("unacked", tag) and client.llen(queue.name) == 1


def test_a_clock_that_went_back_caps_every_lease_at_one_grace(
    redis_port: int, client: Redis, queue: Queue
) -> None:
    # A new master whose clock is behind: leases written in the old master's clock would
    # outlive their holder by the difference; they are cut to one grace instead.
    tag, _ = hold(redis_port, client, queue, "died-before-failover")
    client.pexpire(keys.lease_key("died-before-failover"), 60_000)
    end_grace(client)
    client.hincrby(keys.CLOCK, "last", 60_000)  # stamped by a clock a minute ahead
    renew(client, "someone-else")
    left = client.pttl(keys.lease_key("died-before-failover"))
    assert 0 < left <= TIMING.grace_ms, left
    sweep(redis_port)
    assert client.hexists("unacked", tag), "swept during the grace"
