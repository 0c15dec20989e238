"""A replicated Redis group under Sentinel: one redis-server and one redis-sentinel per node.

Node 0 starts as master, the others replicate it. Every master refuses writes unless one
replica is connected and caught up within ``min-replicas-max-lag`` (``min-replicas-to-write
1``), so a master cut off from its replicas stops accepting what the new master would never
see. The sentinels agree by a quorum of two. Each process is started by its own handle and
stopped by its PID on exit, also when the body raised.

``wrap`` puts a prefix before every command (``ip netns exec <ns>``) to run a node inside a
network namespace of its own; the default runs everything on this machine's loopback.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from taskq.redis_urls import sentinel_url

#: Sentinel timing: a master silent this long is down (subjectively, then by quorum). A
#: sentinel pings every second and drops a link whose ping waits over half this long
#: (sentinelCheckSubjectivelyDown, sentinel.c), so at 1 s one ping late on a busy machine made
#: a freshly promoted master look down and failed it over a second time.
DOWN_AFTER_MS = 2_000
#: How long one failover attempt may take before another sentinel tries.
FAILOVER_TIMEOUT_MS = 5_000
#: A replica this many seconds behind no longer counts for min-replicas-to-write.
MAX_REPLICA_LAG_S = 2


@dataclass(frozen=True)
class Node:
    """Where one node's Redis and sentinel listen."""

    host: str
    redis_port: int
    sentinel_port: int


@dataclass
class RedisGroup:
    """The running group: its nodes, processes and the URL clients use."""

    master_name: str
    nodes: list[Node]
    workdir: Path
    password: str = ""
    wrap: Callable[[int], list[str]] = lambda index: []
    redis: list[subprocess.Popen[bytes]] = field(default_factory=list)
    sentinels: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The ``sentinel://`` broker URL of the group."""
        return sentinel_url([(n.host, n.sentinel_port) for n in self.nodes], 0, self.password)

    @property
    def sentinel_list(self) -> str:
        """The value of ``TASKQ_REDIS_SENTINELS``."""
        return ",".join(f"{n.host}:{n.sentinel_port}" for n in self.nodes)

    def node_client(self, index: int, timeout_s: float = 0.5) -> Redis:
        """A plain client of node ``index``'s Redis (no Sentinel: what that node says)."""
        node = self.nodes[index]
        return Redis(
            node.host,
            node.redis_port,
            password=self.password or None,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )

    def start_redis(self, index: int, replica_of: int | None) -> subprocess.Popen[bytes]:
        """Start node ``index``'s redis-server (again, after a kill: as a replica of node
        ``replica_of``, so it never comes back as a second master); it replaces the old
        handle in :attr:`redis` and is stopped with the group."""
        node = self.nodes[index]
        data = self.workdir / f"node{index}"
        conf = data / "redis.conf"
        master = None if replica_of is None else self.nodes[replica_of]
        conf.write_text(_redis_conf(node, master, data, self.password))
        with (data / "redis.log").open("ab") as log:
            process = subprocess.Popen([*self.wrap(index), "redis-server", str(conf)], stdout=log)
        if index < len(self.redis):
            self.redis[index] = process
        else:
            self.redis.append(process)
        return process

    def stop(self) -> None:
        """Stop every process of the group (by its handle), sentinels first."""
        for process in [*self.sentinels, *self.redis]:
            _stop(process)

    def wait_settled(self, timeout_s: float = 30.0) -> None:
        """Until every sentinel sees every replica online and the other sentinels."""
        _wait_known(self, timeout_s)

    def wait_replicated(self, index: int, replicas: int = 1, timeout_s: float = 30.0) -> None:
        """Until node ``index`` has ``replicas`` online replicas: only then does a master
        take writes (min-replicas-to-write)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._online_replicas(index) >= replicas:
                return
            time.sleep(0.05)
        raise TimeoutError(
            f"node{index} has fewer than {replicas} online replica(s): {self.describe()}"
        )

    def wait_whole(self, timeout_s: float = 30.0) -> int:
        """Until some node is master and every other node its replica, said by both sides;
        that master's index. Whichever node it is: the sentinels may have failed over again
        meanwhile. Both sides, because an isolated old master still lists the replicas it had
        as online until its replication timeout, long after they left it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            views = [self._replication(index) for index in range(len(self.nodes))]
            for index, info in enumerate(views):
                if info.get("role") == "master" and self._followed(index, views):
                    return index
            time.sleep(0.05)
        raise TimeoutError(f"no node has every other one as its replica: {self.describe()}")

    def _followed(self, index: int, views: list[dict[str, Any]]) -> bool:
        master = self.nodes[index]
        return len(_online(views[index])) == len(self.nodes) - 1 and all(
            info.get("role") == "slave"
            and str(info.get("master_host")) == master.host
            and int(info.get("master_port", 0)) == master.redis_port
            and info.get("master_link_status") == "up"
            for other, info in enumerate(views)
            if other != index
        )

    def _replication(self, index: int) -> dict[str, Any]:
        """Node ``index``'s INFO replication ({} if unreachable)."""
        client = self.node_client(index)
        try:
            return dict(client.info("replication"))
        except (RedisError, OSError):
            return {}
        finally:
            client.close()

    def _online_replicas(self, index: int) -> int:
        """How many online replicas node ``index`` lists as master (0 if none, or not a
        master, or unreachable)."""
        info = self._replication(index)
        return len(_online(info)) if info.get("role") == "master" else 0

    def describe(self) -> str:
        """What each node says of its replication (or that its process exited): the
        explanation a timeout carries."""
        views = []
        for index, process in enumerate(self.redis):
            if process.poll() is not None:
                views.append(f"node{index} exited {process.returncode}")
                continue
            client = self.node_client(index)
            try:
                views.append(f"node{index} {_replication_view(client.info('replication'))}")
            except (RedisError, OSError) as exc:
                views.append(f"node{index} unreadable ({type(exc).__name__})")
            finally:
                client.close()
        return "; ".join(views)


def _replicas(info: dict[str, Any]) -> list[dict[str, Any]]:
    """The replicas a master's INFO replication lists (``slave0``, ``slave1``, ...)."""
    return [v for k, v in info.items() if str(k).startswith("slave") and isinstance(v, dict)]


def _online(info: dict[str, Any]) -> list[dict[str, Any]]:
    """The online replicas a master's INFO replication lists."""
    return [v for v in _replicas(info) if v.get("state") == "online"]


def _replication_view(info: dict[str, Any]) -> str:
    if info.get("role") != "master":
        return (
            f"replica of {info.get('master_host')}:{info.get('master_port')} "
            f"link {info.get('master_link_status')}, sync in progress "
            f"{info.get('master_sync_in_progress')}"
        )
    states = [f"{v.get('ip')}:{v.get('port')} {v.get('state')}" for v in _replicas(info)]
    return f"master, replicas [{', '.join(states)}]"


def _redis_conf(node: Node, master: Node | None, data: Path, password: str) -> str:
    lines = [
        *([f"requirepass {password}", f"masterauth {password}"] if password else []),
        f"bind {node.host}",
        f"port {node.redis_port}",
        f"dir {data}",
        'save ""',
        "appendonly yes",
        "appendfsync everysec",
        "min-replicas-to-write 1",
        f"min-replicas-max-lag {MAX_REPLICA_LAG_S}",
        # Sentinel rewrites replicaof after a failover; announce the address clients use.
        f"replica-announce-ip {node.host}",
    ]
    if master is not None:
        lines.append(f"replicaof {master.host} {master.redis_port}")
    return "\n".join(lines) + "\n"


def _sentinel_conf(node: Node, master: Node, name: str, data: Path, password: str) -> str:
    return (
        "\n".join(
            [
                # Sentinels listen on the group's own addresses only.
                "protected-mode no",
                *([f"sentinel auth-pass {name} {password}"] if password else []),
                f"bind {node.host}",
                f"port {node.sentinel_port}",
                f"dir {data}",
                f"sentinel announce-ip {node.host}",
                f"sentinel monitor {name} {master.host} {master.redis_port} 2",
                f"sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {name} 1",
            ]
        )
        + "\n"
    )


def _wait_ping(
    host: str, port: int, process: subprocess.Popen[bytes], timeout_s: float, password: str = ""
) -> None:
    deadline = time.monotonic() + timeout_s
    client = Redis(
        host, port, password=password or None, socket_timeout=0.5, socket_connect_timeout=0.5
    )
    try:
        while True:
            try:
                client.ping()
                return
            except (RedisError, OSError):
                if process.poll() is not None:
                    raise RuntimeError(f"{host}:{port} exited with {process.returncode}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


@contextmanager
def redis_group(
    nodes: Sequence[Node],
    workdir: Path,
    master_name: str = "taskq",
    password: str = "",
    wrap: Callable[[int], list[str]] = lambda index: [],
    ready_timeout_s: float = 20.0,
) -> Iterator[RedisGroup]:
    """Start the group (node 0 master), yield it once every sentinel knows every replica."""
    group = RedisGroup(master_name, list(nodes), workdir, password, wrap)
    with ExitStack() as stack:
        stack.callback(group.stop)
        for index in range(len(group.nodes)):
            (workdir / f"node{index}").mkdir(parents=True, exist_ok=True)
            group.start_redis(index, 0 if index else None)
        for node, process in zip(group.nodes, group.redis, strict=True):
            _wait_ping(node.host, node.redis_port, process, ready_timeout_s, password)
        for index, node in enumerate(group.nodes):
            data = workdir / f"node{index}"
            conf = data / "sentinel.conf"
            conf.write_text(_sentinel_conf(node, group.nodes[0], master_name, data, password))
            with (data / "sentinel.log").open("ab") as log:
                process = subprocess.Popen([*wrap(index), "redis-sentinel", str(conf)], stdout=log)
            group.sentinels.append(process)
        for node, process in zip(group.nodes, group.sentinels, strict=True):
            _wait_ping(node.host, node.sentinel_port, process, ready_timeout_s)
        group.wait_replicated(0, len(group.nodes) - 1, ready_timeout_s)
        _wait_known(group, ready_timeout_s)
        yield group


def _wait_known(group: RedisGroup, timeout_s: float) -> None:
    """Until every sentinel sees every replica online and the other sentinels."""
    want = len(group.nodes) - 1
    deadline = time.monotonic() + timeout_s
    while True:
        ready = 0
        for node in group.nodes:
            client = Redis(node.host, node.sentinel_port, socket_timeout=0.5)
            try:
                master = client.sentinel_master(group.master_name)
                if not isinstance(master, dict):  # redis-py types it dict | bool
                    continue
                replicas: list[dict[str, Any]] = client.sentinel_slaves(group.master_name)
                online = [r for r in replicas if not r.get("is_odown") and not r.get("is_sdown")]
                if len(online) >= want and int(master.get("num-other-sentinels", 0)) >= want:
                    ready += 1
            except (RedisError, OSError):
                pass
            finally:
                client.close()
        if ready == len(group.nodes):
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the sentinels did not discover the whole group")
        time.sleep(0.1)
