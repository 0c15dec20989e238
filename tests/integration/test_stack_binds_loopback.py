"""The local stack listens on loopback only: the replicas (API, /docs, /metrics), Redis, the
workers' /metrics and nginx, as the kernel's socket table shows them (not the configs)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.integration.stack_client import RunningStack

LISTEN = "0A"
LOOPBACK_V4 = "0100007F"  # 127.0.0.1, little-endian hex as /proc/net/tcp writes it
LOOPBACK_V6 = "00000000000000000000000001000000"  # ::1


def listening() -> dict[int, set[str]]:
    """Port -> the local addresses listening on it (hex, as in /proc/net/tcp{,6})."""
    found: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            address, port = fields[1].split(":")
            if fields[3] == LISTEN:
                found.setdefault(int(port, 16), set()).add(address)
    return found


def test_every_port_of_the_stack_listens_on_loopback_only(stack: RunningStack) -> None:
    layout = stack.layout
    assert layout.bind_host == "127.0.0.1"
    workers = [layout.worker_metrics_base_port + i for i in range(2)]
    ports = {layout.http_port, layout.redis_port, *layout.api_ports, *workers}
    # The workers open /metrics once their main process is up: wait for every port.
    deadline = time.monotonic() + 60
    while not ports <= listening().keys():
        assert time.monotonic() < deadline, f"not listening: {sorted(ports - listening().keys())}"
        time.sleep(0.2)
    table = listening()
    for port in sorted(ports):
        assert table[port] <= {LOOPBACK_V4, LOOPBACK_V6}, f"port {port}: {table[port]}"
