"""A throw-away redis-server for tests and benchmarks that need Redis but not the stack."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from taskq.stack.ports import free_port_block


@contextmanager
def scratch_redis(workdir: Path, ready_timeout_s: float = 10.0) -> Iterator[int]:
    """Run redis-server without persistence on a free loopback port; yield the port once it
    answers PING, and stop it by its PID on exit."""
    port = free_port_block(1)
    # No RDB snapshots, no AOF: the data is scratch and dies with the process.
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(workdir)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        client = Redis(port=port)
        deadline = time.monotonic() + ready_timeout_s
        while True:
            try:
                client.ping()
                break
            except RedisError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)
