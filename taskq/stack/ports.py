"""Free loopback ports for stacks started by tests and benchmarks."""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Any

from taskq.settings import Settings

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: Lowest port handed out: below are well-known and registered services.
_LOWEST = 10_000


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel picks for outgoing connections (Linux default 32768-60999)."""
    try:
        low, high = (int(x) for x in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """First port of ``count`` consecutive ports that are free on ``host`` right now, outside
    the ephemeral range.

    A stack's program that restarts (a drill kills it, a test stops and starts it) binds its
    port again; a port in the ephemeral range may meanwhile be the local end of some outgoing
    connection, and the restart fails with "address in use". Ports below the range are never
    handed out that way. Random choice keeps parallel runs apart; binding proves it free.
    """
    low, high = ephemeral_range()
    spans = [(_LOWEST, low - count), (high + 1, 65535 - count)]
    spans = [(a, b) for a, b in spans if b > a]
    rng = random.SystemRandom()
    for _ in range(200):
        start, end = rng.choice(spans)
        base = rng.randrange(start, end)
        if _all_free(host, base, count):
            return base
    raise RuntimeError("no block of free ports found")


def _all_free(host: str, base: int, count: int) -> bool:
    held: list[socket.socket] = []
    try:
        for port in range(base, base + count):
            sock = socket.socket()
            held.append(sock)
            sock.bind((host, port))
    except OSError:
        return False
    finally:
        for sock in held:
            sock.close()
    return True


def settings_on_free_ports(var_dir: Path, **overrides: Any) -> Settings:
    """Settings of a scratch stack (tests, benchmarks) in ``var_dir``: nginx, Redis, two API
    replicas and the workers' metrics on one block of free ports; ``overrides`` win."""
    base = free_port_block(6)
    values: dict[str, Any] = {
        "var_dir": var_dir,
        "http_port": base,
        "redis_port": base + 1,
        "api_base_port": base + 2,
        "api_replicas": 2,
        "worker_metrics_base_port": base + 4,
    }
    values.update(overrides)
    return Settings(**values)
