"""A TCP relay in front of a real Redis that can hold chosen scripts on the wire.

It makes the interleavings of a stalled broker deterministic: a held ``EVALSHA`` has been
sent by the client and not yet read by Redis, exactly like a command in the kernel buffer of
a SIGSTOPped server, until the test releases it. Replies the client is no longer there to
read (it timed out and hung up) are kept, so the test can wait for a late script's reply.

Runs its own event loop in a thread: the code under test may run in any other loop
(``asyncio.run``, Starlette's TestClient portal).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from taskq.stack.ports import free_port_block

Command = list[bytes]
Hold = Callable[[Command], bool]


@dataclass
class _Gate:
    """Commands matching ``hold`` wait until ``opened``; ``waiting`` counts them now."""

    hold: Hold
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0
    passed: int = 0


def evalsha_of(sha: str) -> Hold:
    """A hold on every ``EVALSHA`` of the script with digest ``sha``."""
    wanted = sha.encode()
    return lambda command: command[0].upper() == b"EVALSHA" and command[1] == wanted


class RedisWire:
    """``with RedisWire(redis_port) as wire:`` clients connect to ``wire.port``."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.upstream_port = upstream_port
        self.port = free_port_block(1)
        self.hung_up = 0  # clients that closed their connection
        self.orphan_replies = bytearray()  # what Redis answered to clients that hung up
        self._gates: dict[str, _Gate] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._links: set[asyncio.Task[Any]] = set()

    def __enter__(self) -> RedisWire:
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise RuntimeError("the wire did not start")
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    @property
    def url(self) -> str:
        """redis:// URL of the wire (database 0)."""
        return f"redis://{self.host}:{self.port}/0"

    def hold(self, name: str, hold: Hold) -> None:
        """Hold the commands ``hold`` selects from now on, under ``name``."""
        self._call(lambda: self._gates.__setitem__(name, _Gate(hold)))

    def release(self, name: str) -> None:
        """Let the commands held under ``name`` through, and every later one."""
        self._call(lambda: self._gates[name].opened.set())

    def waiting(self, name: str) -> int:
        """Commands held under ``name`` right now."""
        return self._gates[name].waiting

    def passed(self, name: str) -> int:
        """Commands ``name`` selected that were forwarded to Redis so far."""
        return self._gates[name].passed

    def _call(self, action: Callable[[], object]) -> None:
        done = threading.Event()

        def run() -> None:
            action()
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(timeout=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, self.host, self.port)
        )
        self._ready.set()
        self._loop.run_forever()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._links:
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)
        for writer in self._writers:
            writer.close()

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        redis_in, redis_out = await asyncio.open_connection(self.host, self.upstream_port)
        self._writers += [client_out, redis_out]
        commands: asyncio.Queue[tuple[Command, bytes] | None] = asyncio.Queue()
        gone = asyncio.Event()
        for pump in (
            self._read_client(client_in, commands, gone),
            self._forward(commands, redis_out),
            self._answer(redis_in, client_out, gone),
        ):
            task = asyncio.ensure_future(pump)
            self._links.add(task)
            task.add_done_callback(self._links.discard)

    async def _read_client(
        self,
        client_in: asyncio.StreamReader,
        commands: asyncio.Queue[tuple[Command, bytes] | None],
        gone: asyncio.Event,
    ) -> None:
        try:
            while (command := await _read_command(client_in)) is not None:
                await commands.put(command)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.hung_up += 1
            gone.set()
            await commands.put(None)

    async def _forward(
        self, commands: asyncio.Queue[tuple[Command, bytes] | None], redis_out: asyncio.StreamWriter
    ) -> None:
        while (item := await commands.get()) is not None:
            command, raw = item
            for gate in list(self._gates.values()):
                if gate.hold(command):
                    await self._through(gate)
            redis_out.write(raw)
            try:
                await redis_out.drain()
            except ConnectionError:
                return

    async def _through(self, gate: _Gate) -> None:
        gate.waiting += 1
        try:
            await gate.opened.wait()
        finally:
            gate.waiting -= 1
            gate.passed += 1

    async def _answer(
        self, redis_in: asyncio.StreamReader, client_out: asyncio.StreamWriter, gone: asyncio.Event
    ) -> None:
        while chunk := await _read_some(redis_in):
            if gone.is_set():
                self.orphan_replies += chunk
                continue
            try:
                client_out.write(chunk)
                await client_out.drain()
            except ConnectionError:
                self.orphan_replies += chunk


async def _read_some(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read(65536)
    except ConnectionError:
        return b""


async def _read_command(reader: asyncio.StreamReader) -> tuple[Command, bytes] | None:
    """One RESP command (an array of bulk strings) and its raw bytes; None at end of stream."""
    header = await reader.readline()
    if not header:
        return None
    if not header.startswith(b"*"):
        raise ConnectionError(f"not a RESP command: {header[:20]!r}")
    raw = bytearray(header)
    parts: Command = []
    for _ in range(int(header[1:])):
        length_line = await reader.readline()
        data = await reader.readexactly(int(length_line[1:]) + 2)
        raw += length_line + data
        parts.append(data[:-2])
    return parts, bytes(raw)


def until(what: str, condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s}s"
        time.sleep(0.01)
