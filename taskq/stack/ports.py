"""Free loopback ports for stacks started by tests and benchmarks."""

from __future__ import annotations

import socket


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """First port of ``count`` consecutive ports that are free on ``host`` right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((host, 0))
            base = int(probe.getsockname()[1])
        if base + count > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind((host, port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return base
    raise RuntimeError("no block of free ports found")
