"""The lines written around one line by the same process, read from its log file by offset.

Kibana's "surrounding documents" for the embedded backend: the line index knows where a
line is (file, byte offset); its neighbours are read backwards and forwards from there,
keeping only lines of the same writer (``service.node.name`` and ``process.pid``: a
worker's file holds its main process and its pool children). Reading stops after ``n``
kept lines each way or :data:`BUDGET_BYTES` read, so a busy file cannot make it slow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from taskq.search.store.base import LogLine
from taskq.search.store.lineindex import Location, StaleIndexError

#: At most this many bytes are read on each side of the line.
BUDGET_BYTES = 4 * 1024 * 1024
_STEP = 64 * 1024


def same_writer(line: LogLine) -> Callable[[LogLine], bool]:
    """A predicate: was a line written by the process that wrote ``line``?"""
    node, pid = line.get("service.node.name"), line.get("process.pid")
    return lambda x: x.get("service.node.name") == node and x.get("process.pid") == pid


def _parse(raw: bytes) -> LogLine | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_around(
    loc: Location, n: int, keep: Callable[[LogLine], bool], budget: int = BUDGET_BYTES
) -> tuple[list[LogLine], list[LogLine]]:
    """Up to ``n`` kept lines before (oldest first) and after the line at ``loc``;
    :class:`StaleIndexError` if the file at ``loc.path`` is no longer that file."""
    try:
        fd = os.open(loc.path, os.O_RDONLY)
    except FileNotFoundError:
        raise StaleIndexError(loc.path) from None
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (loc.dev, loc.ino):
            raise StaleIndexError(loc.path)
        before = _backwards(fd, loc.offset, n, keep, budget)
        after = _forwards(fd, loc.offset + loc.length + 1, st.st_size, n, keep, budget)
    finally:
        os.close(fd)
    return before, after


def _backwards(
    fd: int, end: int, n: int, keep: Callable[[LogLine], bool], budget: int
) -> list[LogLine]:
    found: list[LogLine] = []
    tail = b""  # bytes of a line cut by the previous chunk's start
    position = end
    while position > 0 and len(found) < n and end - position < budget:
        start = max(0, position - _STEP)
        chunk = os.pread(fd, position - start, start) + tail
        position = start
        pieces = chunk.split(b"\n")
        # The first piece may be cut by the chunk start (unless we are at the file start).
        tail = pieces.pop(0) if start > 0 else b""
        for raw in reversed(pieces):
            line = _parse(raw) if raw else None
            if line is not None and keep(line):
                found.append(line)
                if len(found) == n:
                    break
    if position == 0 and tail and len(found) < n:
        line = _parse(tail)
        if line is not None and keep(line):
            found.append(line)
    return list(reversed(found))


def _forwards(
    fd: int, start: int, size: int, n: int, keep: Callable[[LogLine], bool], budget: int
) -> list[LogLine]:
    found: list[LogLine] = []
    carry = b""
    position = start
    while position < size and len(found) < n and position - start < budget:
        chunk = carry + os.pread(fd, min(_STEP, size - position), position)
        position += _STEP
        pieces = chunk.split(b"\n")
        carry = pieces.pop()  # no newline yet: a torn line, or cut by the chunk end
        for raw in pieces:
            line = _parse(raw) if raw else None
            if line is not None and keep(line):
                found.append(line)
                if len(found) == n:
                    break
    return found
