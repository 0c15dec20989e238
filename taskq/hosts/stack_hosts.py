"""The stack as hosts on one machine: every host a network namespace of its own.

Hosts: ``broker1..3`` (redis-server + redis-sentinel each, :mod:`taskq.hosts.redis_group`),
``api`` (nginx + the uvicorn replicas), ``worker1..N`` (one Celery worker each) and
``witness`` (a plain Redis for the execution witness, outside the broker group so that no
failover can lose what it counted). Every process binds its host's own address and reaches
the others by theirs; the broker is found through the sentinels only.

nginx's config is rendered by :mod:`taskq.stack.render` (the same template as ``make up``),
and every process gets the environment :func:`taskq.stack.control.stack_environment` gives
the local stack's programs, plus its own ``TASKQ_LOG_FILE``: one JSON file per process, all
in one directory (as a log shipper would gather them), each named ``<host>-<program>``, so
that ``taskq trace`` with ``TASKQ_LOG_DIR`` set to it follows a request across hosts.

Invariant: every process is started here by its own handle and stopped by its PID on exit,
also when the body raised; the namespaces go with :func:`taskq.hosts.netns.host_network`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from taskq.hosts import netns
from taskq.hosts.redis_group import Node, RedisGroup, redis_group
from taskq.settings import QUEUES, Settings
from taskq.stack import render
from taskq.stack.control import local_stack_settings, stack_environment
from taskq.stack.layout import NGINX_TEMPLATE, REPO_ROOT, StackLayout

BROKERS = ("broker1", "broker2", "broker3")
API_HOST = "api"
WITNESS_HOST = "witness"
MASTER_NAME = "taskq"
REDIS_PORT = 6379
SENTINEL_PORT = 26379
HTTP_PORT = 8080
API_BASE_PORT = 8101
#: How long a process may take to stop after SIGTERM before its group is SIGKILLed.
STOP_GRACE_S = 20.0


class HostsStackError(RuntimeError):
    """The hosts stack did not come up; the message says why (with log tails)."""


@dataclass
class Process:
    """One process of one host."""

    host: str
    name: str
    popen: subprocess.Popen[bytes]
    console: Path


@dataclass
class HostsStack:
    """The running hosts: the network, the broker group and every other process."""

    network: netns.HostNetwork
    group: RedisGroup
    settings: Settings
    log_dir: Path
    workdir: Path
    api_ports: tuple[int, ...]
    workers: tuple[str, ...]
    processes: list[Process] = field(default_factory=list)
    #: The environment every process of the stack was started with.
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api_address(self) -> str:
        return self.network[API_HOST].address

    @property
    def base_url(self) -> str:
        """nginx on the API host: the public entry."""
        return f"http://{self.api_address}:{HTTP_PORT}"

    @property
    def replica_urls(self) -> tuple[str, ...]:
        """Each API replica, directly (readiness is measured per replica)."""
        return tuple(f"http://{self.api_address}:{port}" for port in self.api_ports)

    @property
    def witness_url(self) -> str:
        return f"redis://{self.network[WITNESS_HOST].address}:{REDIS_PORT}/15"

    def broker_index(self, host: str) -> int:
        return BROKERS.index(host)

    def host_of_node(self, index: int) -> netns.Host:
        return self.network[BROKERS[index]]

    def find(self, name: str) -> Process:
        return next(p for p in self.processes if p.name == name)

    def dead(self) -> list[str]:
        """Names of the stack's processes (brokers excepted) that exited."""
        return [f"{p.host}/{p.name}" for p in self.processes if p.popen.poll() is not None]

    def log_tail(self, lines: int = 12) -> str:
        parts = []
        for process in self.processes:
            try:
                tail = process.console.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            if tail:
                parts.append(f"--- {process.host}/{process.name}\n" + "\n".join(tail))
        return "\n".join(parts)


def host_names(workers: int) -> tuple[str, ...]:
    """Every host of a stack with ``workers`` worker hosts."""
    return (*BROKERS, API_HOST, *(f"worker{i}" for i in range(1, workers + 1)), WITNESS_HOST)


def stack_settings(network: netns.HostNetwork, password: str, **overrides: object) -> Settings:
    """Settings every process of the hosts shares: the sentinels of the broker hosts, a 202
    only once a replica has the write, the witness on its own host."""
    sentinels = ",".join(f"{network[b].address}:{SENTINEL_PORT}" for b in BROKERS)
    values: dict[str, object] = {
        # Only its password and database are used: the sentinels name the master.
        "redis_url": f"redis://:{password}@{network[BROKERS[0]].address}:{REDIS_PORT}/0",
        "redis_sentinels": sentinels,
        "redis_master": MASTER_NAME,
        "redis_wait_replicas": 1,
        "drill_witness_url": f"redis://{network[WITNESS_HOST].address}:{REDIS_PORT}/15",
        "bind_host": network[API_HOST].address,
        "http_port": HTTP_PORT,
        "api_base_port": API_BASE_PORT,
        # The drill's load comes from the machine itself (the bridge): never rate-limited.
        "rate_limit_exempt": network.bridge_address,
    }
    values.update(overrides)
    return local_stack_settings(Settings(**values))  # type: ignore[arg-type]


def _start(
    stack: HostsStack,
    host: str,
    name: str,
    command: list[str],
    env: dict[str, str],
    service: str | None,
) -> Process:
    console = stack.workdir / "console" / f"{host}-{name}.log"
    console.parent.mkdir(parents=True, exist_ok=True)
    if service is not None:
        env = {
            **env,
            "TASKQ_SERVICE_NAME": service,
            "TASKQ_NODE_NAME": f"{host}/{name}",
            "TASKQ_LOG_FILE": str(stack.log_dir / f"{host}-{name}.jsonl"),
        }
    with console.open("ab") as out:
        popen = subprocess.Popen(
            [*stack.network[host].wrap(), *command],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stopped with its children, by PID
        )
    process = Process(host, name, popen, console)
    stack.processes.append(process)
    return process


def stop_process(process: Process, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM (a warm shutdown for a worker), then SIGKILL to its group past the grace."""
    popen = process.popen
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)  # leftover children of its group
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=10)


def _stop_all(stack: HostsStack) -> None:
    # nginx and the API first (no new work), then the workers (drain), the witness last.
    for process in reversed(stack.processes):
        stop_process(process)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def wait_ready(
    stack: HostsStack, timeout_s: float, path: str = "/readyz", urls: list[str] | None = None
) -> None:
    """Until nginx and every replica answer ``path`` with 200; fail fast if a process died
    (``/healthz`` for a stack without workers, which is never ready)."""
    deadline = time.monotonic() + timeout_s
    urls = urls or [stack.base_url, *stack.replica_urls]
    while True:
        dead = stack.dead()
        if dead:
            raise HostsStackError(f"exited: {', '.join(dead)}\n{stack.log_tail()}")
        if all(_http_ok(url + path) for url in urls):
            return
        if time.monotonic() > deadline:
            raise HostsStackError(f"not ready after {timeout_s:.0f}s\n{stack.log_tail()}")
        time.sleep(0.2)


def _start_witness(stack: HostsStack, env: dict[str, str]) -> None:
    host = stack.network[WITNESS_HOST]
    data = stack.workdir / "witness"
    data.mkdir(parents=True, exist_ok=True)
    command = [
        "redis-server",
        *("--bind", host.address, "--port", str(REDIS_PORT), "--dir", str(data)),
        # A counter of what ran, not a broker: reachable from the stack's hosts only.
        *("--protected-mode", "no", "--save", "", "--appendonly", "yes"),
    ]
    _start(stack, WITNESS_HOST, "redis", command, env, None)


def _start_api_host(stack: HostsStack, env: dict[str, str]) -> None:
    settings = stack.settings
    layout = StackLayout(
        var_dir=stack.workdir / "api",
        log_dir=stack.log_dir,
        http_port=HTTP_PORT,
        redis_port=REDIS_PORT,
        api_ports=stack.api_ports,
        bind_host=stack.api_address,
    )
    layout.ensure_dirs()
    values = render.nginx_values(layout, settings)
    values["NGINX_ACCESS_LOG"] = str(stack.log_dir / f"{API_HOST}-nginx.jsonl")
    values["NGINX_ERROR_LOG"] = str(stack.workdir / "console" / f"{API_HOST}-nginx-error.log")
    values["NGINX_NODE_NAME"] = f"{API_HOST}/nginx"
    layout.nginx_conf.write_text(render.render_template(NGINX_TEMPLATE.read_text(), values))
    for index, port in enumerate(stack.api_ports, start=1):
        start_api_replica(stack, f"api-{index}", port, env)
    nginx = ["nginx", "-c", str(layout.nginx_conf), "-p", str(layout.run_dir)]
    _start(stack, API_HOST, "nginx", nginx, env, None)


def start_api_replica(stack: HostsStack, name: str, port: int, env: dict[str, str]) -> Process:
    """One uvicorn replica on the API host (``env``: the stack's, perhaps with changes)."""
    command = [
        sys.executable,
        *("-m", "uvicorn", "--factory", "api.main:app_factory"),
        *("--host", stack.api_address, "--port", str(port)),
        *("--no-access-log", "--timeout-graceful-shutdown", "10"),
    ]
    return _start(stack, API_HOST, name, command, env, "api")


def _start_worker(stack: HostsStack, host: str, env: dict[str, str]) -> None:
    state = stack.workdir / host
    state.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        *("-m", "celery", "-A", "worker.celery_app", "worker", "-Q", ",".join(QUEUES)),
        *("-c", str(stack.settings.worker_concurrency), "-n", f"{host}@%h"),
        *("--statedb", str(state / "worker.state"), *render.WORKER_FLAGS.split()),
    ]
    _start(stack, host, "worker", command, env, "worker")


@contextmanager
def hosts_stack(
    workdir: Path,
    workers: int = 2,
    api_replicas: int = 2,
    ready_timeout_s: float = 90.0,
    ready_path: str = "/readyz",
    **overrides: object,
) -> Iterator[HostsStack]:
    """Start every host and process; yield once nginx and every replica answer
    ``ready_path`` with 200."""
    names = host_names(workers)
    password = secrets.token_urlsafe(18)
    log_dir = workdir / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as exits:
        network = exits.enter_context(netns.host_network(names))
        addresses = {name: host.address for name, host in network.hosts.items()}
        (workdir / "addresses.json").write_text(json.dumps(addresses, indent=2) + "\n")
        # Which namespaces are this stack's (others' may exist beside them), for a check
        # that none of them outlives the stack.
        namespaces = {name: host.namespace for name, host in network.hosts.items()}
        (workdir / "namespaces.json").write_text(json.dumps(namespaces, indent=2) + "\n")
        brokers = [network[b] for b in BROKERS]
        nodes = [Node(h.address, REDIS_PORT, SENTINEL_PORT) for h in brokers]
        group = exits.enter_context(
            redis_group(
                nodes, workdir / "brokers", MASTER_NAME, password, lambda i: brokers[i].wrap()
            )
        )
        api_ports = tuple(API_BASE_PORT + i for i in range(api_replicas))
        settings = stack_settings(
            network, password, api_replicas=api_replicas, log_dir=log_dir, **overrides
        )
        stack = HostsStack(
            network,
            group,
            settings,
            log_dir,
            workdir,
            api_ports,
            tuple(f"worker{i}" for i in range(1, workers + 1)),
        )
        exits.callback(_stop_all, stack)
        layout = StackLayout.from_settings(settings.model_copy(update={"var_dir": workdir}))
        env = stack_environment(layout, settings)
        env["TASKQ_LOG_DIR"] = str(log_dir)
        stack.env = env
        _start_witness(stack, env)
        for host in stack.workers:
            _start_worker(stack, host, env)
        _start_api_host(stack, env)
        wait_ready(stack, ready_timeout_s, ready_path)
        yield stack
