"""``taskq logs --follow``: the lines appended to the log directory's ``*.jsonl`` files from
now on, across rotation, with the filters of ``taskq logs``.

Invariant: every complete line appended after the start is read once. The log keeper rotates
by rename (``name.jsonl`` -> ``name.jsonl.1``) and writers reopen the path before their next
line, so a line being written during the rename lands at the end of the renamed file: a
rotated file's handle is kept and drained until the name rotates again or the file is
deleted, and the new file is read from its first byte. Wake-ups come from the directory's
change notifications (watchfiles), with a periodic look in case one was missed.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import BinaryIO

from taskq.search.store.base import GREP_FIELDS, LogFilter, LogLine

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def matches(line: LogLine, f: LogFilter) -> bool:
    """Whether ``line`` passes the filters of ``taskq logs`` (the stores' semantics)."""
    if "@timestamp" not in line:
        return False
    if f.service and f.service not in (line.get("service.name"), line.get("service.node.name")):
        return False
    if f.level:
        wanted = "WARNING" if f.level.upper() == "WARN" else f.level.upper()
        level = str(line.get("log.level", "")).upper()
        if level not in LEVELS or LEVELS.index(level) < LEVELS.index(wanted):
            return False
    if f.event and not fnmatchcase(str(line.get("event.action", "")), f.event):
        return False
    name = str(line.get("task_name") or "")
    if f.task_name and not (name == f.task_name or name.endswith("." + f.task_name)):
        return False
    if f.correlation_id and line.get("correlation_id") != f.correlation_id:
        return False
    if f.task_id and line.get("task_id") != f.task_id:
        return False
    if f.grep:
        needle = f.grep.lower()
        if not any(needle in str(line.get(k) or "").lower() for k in GREP_FIELDS):
            return False
    return True


@dataclass
class _Reader:
    handle: BinaryIO
    inode: int
    partial: bytes = b""
    retired: list[tuple[BinaryIO, bytes]] = field(default_factory=list)


def _complete_lines(handle: BinaryIO, partial: bytes) -> tuple[list[bytes], bytes]:
    data = partial + handle.read()
    *lines, rest = data.split(b"\n")
    return lines, rest


class Follower:
    """Reads what is appended to ``log_dir/*.jsonl`` since it was created."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._readers: dict[str, _Reader] = {}
        for path in self._paths():
            self._open(path, at_end=True)

    def _paths(self) -> list[Path]:
        with contextlib.suppress(FileNotFoundError):
            return sorted(p for p in self.log_dir.iterdir() if p.name.endswith(".jsonl"))
        return []

    def _open(self, path: Path, at_end: bool) -> None:
        with contextlib.suppress(FileNotFoundError):
            handle = path.open("rb")
            if at_end:
                handle.seek(0, os.SEEK_END)
            self._readers[path.name] = _Reader(handle, os.fstat(handle.fileno()).st_ino)

    def _unread_generations(self, path: Path, read_inode: int) -> list[tuple[BinaryIO, bytes]]:
        """Rotated files newer than the one being read (rotated more than once between two
        looks): ``name.jsonl.K`` ... ``name.jsonl.1`` after the read one, oldest first."""
        generations: list[Path] = []
        for n in range(1, 1000):
            rotated = path.with_name(f"{path.name}.{n}")
            try:
                if rotated.stat().st_ino == read_inode:
                    break
            except FileNotFoundError:
                return []  # the read file is gone: no way to tell which are newer
            generations.append(rotated)
        handles: list[tuple[BinaryIO, bytes]] = []
        for rotated in reversed(generations):
            with contextlib.suppress(FileNotFoundError):
                handles.append((rotated.open("rb"), b""))
        return handles

    def read(self) -> list[LogLine]:
        """The complete lines appended since the last call, parsed (malformed ones skipped)."""
        raw: list[bytes] = []
        for path in self._paths():
            reader = self._readers.get(path.name)
            if reader is None:
                self._open(path, at_end=False)
                continue
            try:
                inode = path.stat().st_ino
            except FileNotFoundError:
                continue
            if inode != reader.inode:  # rotated by rename: keep draining the old file
                lines, rest = _complete_lines(reader.handle, reader.partial)
                raw += lines
                for old, _ in reader.retired:
                    old.close()
                retired = [(reader.handle, rest), *self._unread_generations(path, reader.inode)]
                self._open(path, at_end=False)
                self._readers[path.name].retired = retired
        for reader in self._readers.values():
            drained = []
            for old, rest in reader.retired:
                lines, rest = _complete_lines(old, rest)
                raw += lines
                if os.fstat(old.fileno()).st_nlink == 0:
                    old.close()
                else:
                    drained.append((old, rest))
            reader.retired = drained
            lines, reader.partial = _complete_lines(reader.handle, reader.partial)
            raw += lines
        return [line for line in map(_parse, raw) if line is not None]

    def close(self) -> None:
        """Close every file."""
        for reader in self._readers.values():
            reader.handle.close()
            for old, _ in reader.retired:
                old.close()


def _parse(raw: bytes) -> LogLine | None:
    try:
        line = json.loads(raw)
    except ValueError:
        return None
    return line if isinstance(line, dict) else None


def follow(
    log_dir: Path, log_filter: LogFilter, stop: threading.Event | None = None
) -> Iterator[list[LogLine]]:
    """Batches of matching lines as they are written, until ``stop`` is set (or Ctrl-C)."""
    from watchfiles import watch

    follower = Follower(log_dir)
    stop = stop or threading.Event()
    try:
        changes = watch(log_dir, stop_event=stop, rust_timeout=1000, yield_on_timeout=True)
        for _ in changes:
            batch = [line for line in follower.read() if matches(line, log_filter)]
            if batch:
                yield batch
    finally:
        follower.close()
