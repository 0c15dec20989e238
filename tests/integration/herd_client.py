"""A small HTTP/1.1 load client on raw asyncio sockets, for short bounded herds in tests.

httpx at hundreds of connections costs more CPU than the stack it measures on two cores;
this client writes one request per connection at a time over keep-alive and reads the
status line, the headers and a ``Content-Length`` body, nothing more.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    """What the client got for one request, and when (monotonic seconds)."""

    status: int
    headers: dict[str, str]
    body: bytes
    sent_at: float
    done_at: float


class Connection:
    """One keep-alive connection from ``source`` to ``host:port``; reopened when closed."""

    def __init__(self, host: str, port: int, source: str) -> None:
        self.host, self.port, self.source = host, port, source
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> Answer:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, local_addr=(self.source, 0)
            )
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        sent_at = time.monotonic()
        self.writer.write(head.encode() + b"\r\n" + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)
        }
        payload = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Answer(status, headers, payload, sent_at, time.monotonic())

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
