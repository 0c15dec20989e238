"""nginx against slow and greedy clients, on a real stack, judged by what the sockets got.

- A client that sends half a request header and then nothing is disconnected by nginx
  (``client_header_timeout``), instead of holding its connection.
- One address holding ``rate_limit_conn`` requests open (headers sent, body pending) gets a
  fast 503 ``overloaded`` for one more, while another address is served meanwhile, and is
  served again once it lets go.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import stack_settings, start_stack, stop_stack
from tests.integration.stack_client import RunningStack

PER_ADDRESS = 4
GREEDY = "127.0.0.1"
OTHER = "127.0.0.3"
#: How long the greedy address may take to be limited. The held requests stay open however
#: long that takes: each gets one more byte of its body before every probe, which restarts
#: nginx's client_body_timeout (10 s between two reads), so no probe outlives the hold.
HOLD_DEADLINE_S = 60.0
#: The promised body: more bytes than the probes can trickle before the deadline.
BODY_BYTES = 100_000


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    settings = stack_settings(tmp_path_factory.mktemp("nginx-hostile"), rate_limit_conn=PER_ADDRESS)
    running = start_stack(settings)
    try:
        yield running
    finally:
        stop_stack(running)


def _connect(stack: RunningStack, source: str) -> socket.socket:
    sock = socket.create_connection(
        (stack.layout.bind_host, stack.layout.http_port), timeout=30, source_address=(source, 0)
    )
    return sock


def _get(stack: RunningStack, source: str, path: str = "/healthz") -> tuple[int, bytes]:
    """One GET on a fresh connection: (status, body)."""
    with _connect(stack, source) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _keep_holding(held: list[socket.socket]) -> None:
    """One more byte of each held body: nginx's body timer starts again."""
    for sock in held:
        sock.sendall(b" ")


def test_a_client_that_stops_sending_its_header_is_disconnected(small_stack: RunningStack) -> None:
    with _connect(small_stack, OTHER) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line: never ends
        # recv returns b"" (or the 408 nginx may write first, then b"") once nginx gives up;
        # the socket's own 30 s timeout fails the test if nginx kept waiting.
        got = b""
        while chunk := sock.recv(4096):
            got += chunk
    assert got == b"" or got.startswith(b"HTTP/1.1 408"), got[:200]


def test_one_address_cannot_hold_more_than_its_share(small_stack: RunningStack) -> None:
    held: list[socket.socket] = []
    try:
        # Each of these requests has sent its headers and promises a body that never comes:
        # nginx counts it (and waits for the body) until client_body_timeout.
        for _ in range(PER_ADDRESS):
            sock = _connect(small_stack, GREEDY)
            sock.sendall(
                b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n{" % BODY_BYTES
            )
            held.append(sock)
        deadline = time.monotonic() + HOLD_DEADLINE_S
        while True:
            _keep_holding(held)
            status, body = _get(small_stack, GREEDY)
            if status == 503:
                break
            assert status == 200, (status, body)
            assert time.monotonic() < deadline, "the greedy address was never limited"
            time.sleep(0.05)
        error = json.loads(body)["error"]
        assert error["code"] == "overloaded", body
        # Another address is served while the greedy one is at its limit.
        _keep_holding(held)
        assert _get(small_stack, OTHER)[0] == 200
        _keep_holding(held)
        assert _get(small_stack, GREEDY)[0] == 503
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 30
    while (status := _get(small_stack, GREEDY)[0]) != 200:
        assert status == 503, status
        assert time.monotonic() < deadline, "the greedy address stayed limited after letting go"
        time.sleep(0.05)
