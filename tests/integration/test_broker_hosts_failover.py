"""Failover across hosts: three broker hosts (redis-server + redis-sentinel each, in network
namespaces of their own on one bridge); the test talks to them from the root namespace.

Truth is each node's own ``INFO replication`` role and what a write to it answers, read with
plain clients of that node's address; never the factory's choices.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskq.hosts import netns
from taskq.hosts.redis_group import Node, RedisGroup, redis_group
from taskq.redis_clients import sync_client
from tests.integration.test_sentinel_clients import (
    _promoted,
    _require_sentinel,
    _until_replicated,
    _until_written,
)
from tests.missing_tool import tool_missing

MASTER = "taskq"
#: Redis refuses other hosts without a password (protected mode); the factory passes it on.
PASSWORD = "broker-hosts-secret"
BROKERS = ("broker1", "broker2", "broker3")


def _require_namespaces() -> None:
    reason = netns.probe()
    if reason is None:
        return
    # Only root can make namespaces: CI that is not root may skip.
    tool_missing(reason, ci_must_have=os.geteuid() == 0)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[netns.HostNetwork, RedisGroup]]:
    _require_sentinel()
    _require_namespaces()
    with netns.host_network(BROKERS) as network:
        hosts = [network[name] for name in BROKERS]
        nodes = [Node(host.address, 6379, 26379) for host in hosts]
        wrap = lambda i: hosts[i].wrap()  # noqa: E731
        with redis_group(nodes, tmp_path, MASTER, PASSWORD, wrap) as group:
            yield network, group


def test_sigkill_of_the_master_host_moves_clients_to_another_host(
    hosts: tuple[netns.HostNetwork, RedisGroup],
) -> None:
    _, group = hosts
    client = sync_client(group.url, master=MASTER, socket_timeout=0.5, socket_connect_timeout=0.5)
    client.set("before", "1")
    # Only a write a replica confirmed (WAIT, as a submission's 202 does) survives a kill.
    _until_replicated(client)
    group.redis[0].send_signal(signal.SIGKILL)
    group.redis[0].wait(timeout=10)
    new = _promoted(group, 0)
    _until_written(lambda: client.set("after", "1"))
    truth = group.node_client(new)
    assert truth.mget("before", "after") == [b"1", b"1"]
    truth.close()
    client.close()


def test_a_partitioned_master_refuses_writes_and_clients_follow_the_majority(
    hosts: tuple[netns.HostNetwork, RedisGroup],
) -> None:
    network, group = hosts
    client = sync_client(group.url, master=MASTER, socket_timeout=0.5, socket_connect_timeout=0.5)
    client.set("before", "1")
    _until_replicated(client)  # confirmed by a replica, as a 202 is
    old = network[BROKERS[0]]
    old.partition()
    new = _promoted(group, 0)
    _until_written(lambda: client.set("after", "1"))
    # From inside its own host the old master still runs, but takes no write (its replicas
    # are gone: min-replicas-to-write), so nothing is accepted that the new master lacks.
    command = [*old.wrap(), "redis-cli", "-h", old.address, "-p", "6379", "SET", "isolated", "1"]
    env = {**os.environ, "REDISCLI_AUTH": PASSWORD}
    deadline = time.monotonic() + 30
    answer = ""
    while time.monotonic() < deadline:  # until its replicas' lag passed min-replicas-max-lag
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=10)
        answer = run.stdout.strip()
        if answer.startswith("NOREPLICAS"):
            break
        time.sleep(0.1)
    assert answer.startswith("NOREPLICAS"), answer
    truth = group.node_client(new)
    assert truth.mget("before", "after", "isolated") == [b"1", b"1", None]
    truth.close()
    client.close()
    old.heal()
