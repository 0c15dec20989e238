"""Every client the factory makes follows the master across a real Sentinel failover.

Truth is the servers themselves: which node says ``role:master`` (INFO replication, read
with a plain client of that node), and what that node holds. The group is three real
redis-server + redis-sentinel pairs on loopback; the master is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from kombu import Connection
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from api.script_batch import NotReplicated, ScriptBatcher
from taskq.hosts.redis_group import Node, RedisGroup, redis_group
from taskq.redis_clients import async_client, sync_client
from taskq.redis_sentinels import SafeAsyncSentinel, SafeSentinel
from taskq.stack.ports import free_port_block
from tests.missing_tool import tool_missing

MASTER = "taskq"


def _require_sentinel() -> None:
    missing = [b for b in ("redis-server", "redis-sentinel") if shutil.which(b) is None]
    if not missing:
        return
    tool_missing(f"missing {', '.join(missing)}: apt-get install -y redis-server redis-sentinel")


@pytest.fixture
def group(tmp_path: Path) -> Iterator[RedisGroup]:
    _require_sentinel()
    base = free_port_block(6)
    nodes = [Node("127.0.0.1", base + i, base + 3 + i) for i in range(3)]
    with redis_group(nodes, tmp_path, MASTER) as running:
        yield running


def _role(group: RedisGroup, index: int) -> str | None:
    client = group.node_client(index)
    try:
        return str(client.info("replication")["role"])
    except (RedisError, OSError):
        return None
    finally:
        client.close()


def _kill_master_and_wait_promotion(group: RedisGroup, timeout_s: float = 30.0) -> Node:
    """SIGKILL node 0 (the master); return the node that then says role:master and has an
    online replica again (it takes writes only then)."""
    group.redis[0].send_signal(signal.SIGKILL)
    group.redis[0].wait(timeout=10)
    return group.nodes[_promoted(group, 0, timeout_s)]


def _promoted(group: RedisGroup, old: int, timeout_s: float = 30.0) -> int:
    """Index of the node other than ``old`` that says role:master and has an online replica
    again."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for index in range(len(group.nodes)):
            if index != old and _role(group, index) == "master":
                group.wait_replicated(index)
                return index
        time.sleep(0.05)
    raise TimeoutError("no replica was promoted")


def _until_written(write: object, timeout_s: float = 15.0) -> None:
    """Call ``write`` until it goes through: the first calls after a kill meet the dead
    master's connections; the client must find the new one by itself."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            write()  # type: ignore[operator]
            return
        except (RedisError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _until_replicated(client: Redis, timeout_s: float = 15.0) -> None:
    """Until a replica confirmed this client's writes (``WAIT``, as a submission's 202 is).
    Each WAIT waits less than the client's socket timeout, on the same connection."""
    deadline = time.monotonic() + timeout_s
    while client.wait(1, 200) < 1:
        assert time.monotonic() < deadline, "no replica confirmed the writes"


def test_sync_and_async_clients_follow_the_new_master(group: RedisGroup) -> None:
    client = sync_client(group.url, master=MASTER, socket_timeout=0.5, socket_connect_timeout=0.5)

    async def async_set(key: str) -> None:
        aclient = async_client(
            group.url, master=MASTER, max_connections=4, timeout=0.5, socket_timeout=0.5
        )
        try:
            await aclient.set(key, "1")
        finally:
            await aclient.aclose()

    asyncio.run(async_set("async-before"))
    client.set("before", "1")
    # Only writes a replica confirmed survive a kill (min-replicas-to-write bounds the lag,
    # it does not wait): WAIT, as a submission's 202 does. It covers this client's last write
    # and, the replication stream being ordered, the earlier one of the async client.
    _until_replicated(client)
    promoted = _kill_master_and_wait_promotion(group)

    _until_written(lambda: client.set("after", "1"))
    _until_written(lambda: asyncio.run(async_set("async-after")))

    truth = Redis(promoted.host, promoted.redis_port)
    # The writes before the kill were confirmed on a replica and survive.
    assert truth.mget("before", "async-before", "after", "async-after") == [b"1"] * 4
    client.close()
    truth.close()


def test_taskq_sentinel_transport_publishes_and_consumes_across_a_failover(
    group: RedisGroup,
) -> None:
    options = {"master_name": MASTER, "socket_timeout": 0.5, "socket_connect_timeout": 0.5}
    transport = "taskq.broker.sentinel_transport:SentinelTransport"

    def publish(body: str) -> None:
        with Connection(group.url, transport=transport, transport_options=options) as conn:
            conn.SimpleQueue("failover-q").put(body)

    def consume() -> str:
        with Connection(group.url, transport=transport, transport_options=options) as conn:
            queue = conn.SimpleQueue("failover-q")
            message = queue.get(timeout=5)
            message.ack()
            return str(message.payload)

    publish("before")
    # Only what a replica confirmed survives the kill. WAIT covers its own client's writes;
    # the replication stream is ordered, so a marker written after the publish and confirmed
    # covers the publish too (as a submission's 202 waits for its batch).
    marker = sync_client(group.url, master=MASTER, socket_timeout=0.5, socket_connect_timeout=0.5)
    marker.set("published", "1")
    _until_replicated(marker)
    marker.close()
    promoted = _kill_master_and_wait_promotion(group)
    _until_written(lambda: publish("after"))

    assert sorted([consume(), consume()]) == ["after", "before"]
    truth = Redis(promoted.host, promoted.redis_port)
    assert truth.llen("failover-q") == 0
    truth.close()


def test_a_batch_is_answered_only_once_a_replica_has_it(group: RedisGroup) -> None:
    script = "redis.call('INCR', KEYS[1]); return redis.call('GET', KEYS[1])"

    async def run_batch(wait_timeout_ms: int) -> list[object]:
        aclient = async_client(group.url, master=MASTER, max_connections=2, timeout=1.0)
        batcher = ScriptBatcher(aclient, script, wait_replicas=1, wait_timeout_ms=wait_timeout_ms)
        try:
            calls = [batcher(["counter"], []) for _ in range(5)]
            return list(await asyncio.gather(*calls, return_exceptions=True))
        finally:
            await aclient.aclose()

    # WAIT returns at the replica's acknowledgement, however busy the machine: its deadline
    # is only reached if none comes, which is what the frozen half below checks.
    replicated = asyncio.run(run_batch(wait_timeout_ms=30_000))
    assert sorted(int(r) for r in replicated) == [1, 2, 3, 4, 5]  # type: ignore[call-overload]

    # Replicas frozen: the master cannot get a WAIT acknowledgement (or, once their lag is
    # over min-replicas-max-lag, refuses the write with NOREPLICAS). Neither is an answer.
    for process in group.redis[1:]:
        process.send_signal(signal.SIGSTOP)
    try:
        frozen = asyncio.run(run_batch(wait_timeout_ms=200))
    finally:
        for process in group.redis[1:]:
            process.send_signal(signal.SIGCONT)
    for outcome in frozen:
        assert isinstance(outcome, NotReplicated) or (
            isinstance(outcome, ResponseError) and str(outcome).startswith("NOREPLICAS")
        ), outcome


def test_a_closed_sentinel_channel_fails_with_a_connection_error(group: RedisGroup) -> None:
    # A task that ends after its consumer reconnected acks or rejects on the closed channel:
    # that must be a connection error (retried by the lease keeper), not an AttributeError
    # that ends the worker.
    transport = "taskq.broker.sentinel_transport:SentinelTransport"
    with Connection(
        group.url, transport=transport, transport_options={"master_name": MASTER}
    ) as conn:
        channel = conn.channel()
        with channel.conn_or_acquire() as client:
            assert client.ping()
        channel.close()
        with pytest.raises(RedisConnectionError), channel.conn_or_acquire() as client:
            client.ping()


@pytest.fixture
def refusing_address() -> Iterator[tuple[str, int]]:
    """A bound port nobody listens on: a sentinel host that is down refuses at once."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()


#: Long enough that no discovery gives up on the paused sentinel.
TIMEOUTS = {"socket_timeout": 10.0, "socket_connect_timeout": 10.0}


@contextmanager
def _paused(process: subprocess.Popen[bytes]) -> Iterator[None]:
    process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)


def _wait_connections(port: int, count: int, timeout_s: float = 30.0) -> None:
    """Until this process holds ``count`` established connections to ``port``: the paused
    sentinel's kernel still accepts them, so each one is a discovery waiting on it."""
    me = psutil.Process()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        held = [
            c
            for c in me.net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
        ]
        if len(held) >= count:
            return
        time.sleep(0.01)
    raise TimeoutError(f"fewer than {count} discoveries reached the paused sentinel")


def _sentinel_addresses(group: RedisGroup, refusing: tuple[str, int]) -> list[tuple[str, int]]:
    # Every discovery is refused by the first, then waits on the second (paused); when it
    # resumes it answers all of them in turn. redis-py's own discovery swaps the answering
    # sentinel to the front by the position it read before waiting, so from the second
    # answer on it writes the first sentinel over the refused one: one kept twice, one lost.
    return [refusing, *((n.host, n.sentinel_port) for n in group.nodes)]


def _kept(clients: list[Redis] | list[AsyncRedis]) -> list[tuple[str, int]]:
    kwargs = [c.connection_pool.connection_kwargs for c in clients]
    return sorted((str(k["host"]), int(k["port"])) for k in kwargs)


DISCOVERIES = 16


def test_overlapping_async_discoveries_keep_every_sentinel(
    group: RedisGroup, refusing_address: tuple[str, int]
) -> None:
    addresses = _sentinel_addresses(group, refusing_address)
    paused_port = group.nodes[0].sentinel_port

    async def discover() -> tuple[list[tuple[str, int]], set[tuple[str, int]]]:
        manager = SafeAsyncSentinel(addresses, sentinel_kwargs=TIMEOUTS)  # type: ignore[no-untyped-call]
        with _paused(group.sentinels[0]):
            asking = [
                asyncio.create_task(manager.discover_master(MASTER)) for _ in range(DISCOVERIES)
            ]
            await asyncio.to_thread(_wait_connections, paused_port, DISCOVERIES)
        answers = await asyncio.gather(*asking)
        return _kept(manager.sentinels), set(answers)

    kept, masters = asyncio.run(discover())
    assert kept == sorted(addresses)
    assert masters == {(group.nodes[0].host, group.nodes[0].redis_port)}


def test_overlapping_threaded_discoveries_keep_every_sentinel(
    group: RedisGroup, refusing_address: tuple[str, int]
) -> None:
    addresses = _sentinel_addresses(group, refusing_address)
    manager = SafeSentinel(addresses, sentinel_kwargs=TIMEOUTS)  # type: ignore[no-untyped-call]
    with ThreadPoolExecutor(max_workers=DISCOVERIES) as pool:
        with _paused(group.sentinels[0]):
            asking = [pool.submit(manager.discover_master, MASTER) for _ in range(DISCOVERIES)]
            _wait_connections(group.nodes[0].sentinel_port, DISCOVERIES)
        masters = {future.result() for future in asking}
    assert _kept(manager.sentinels) == sorted(addresses)
    assert masters == {(group.nodes[0].host, group.nodes[0].redis_port)}


def test_a_replication_timeout_says_what_each_node_was_doing(group: RedisGroup) -> None:
    group.redis[2].send_signal(signal.SIGKILL)
    group.redis[2].wait(timeout=10)
    with pytest.raises(TimeoutError) as raised:
        group.wait_replicated(0, replicas=2, timeout_s=0.2)
    told = str(raised.value)
    assert "node0 master, replicas [" in told and "node2 exited -9" in told, told
    assert f"node1 replica of 127.0.0.1:{group.nodes[0].redis_port} link up" in told, told


def test_the_group_is_whole_only_while_every_replica_follows_its_master(
    group: RedisGroup,
) -> None:
    assert group.wait_whole(timeout_s=5) == 0
    # node2 leaves: node0 no longer lists it, and node2 is a master nobody follows.
    client = group.node_client(2)
    client.replicaof("NO", "ONE")
    client.close()
    with pytest.raises(TimeoutError, match="no node has every other one as its replica"):
        group.wait_whole(timeout_s=0.3)
