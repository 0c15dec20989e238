"""Ports for test stacks come from outside the kernel's ephemeral range."""

from __future__ import annotations

import socket

from taskq.stack.ports import ephemeral_range, free_port_block


def test_blocks_are_free_and_never_ephemeral() -> None:
    low, high = ephemeral_range()
    for _ in range(50):
        base = free_port_block(6)
        assert not any(low <= port <= high for port in range(base, base + 6)), base
        for port in range(base, base + 6):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))  # free: binding succeeds
