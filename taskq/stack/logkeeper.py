"""The local stack's log keeper: rotates the JSON log files by size and keeps the search
index current. Runs as one supervised program (``python -m taskq.stack.logkeeper``).

Every :data:`INTERVAL_S`:

1. each ``name.jsonl`` over ``log_max_bytes`` is renamed to ``name.jsonl.1``; older ones
   shift to ``.2`` ... ``.<log_backups>`` and the oldest is deleted. Writers follow without
   losing a line: the Python processes write through ``WatchedFileHandler``, which sees the
   new inode and reopens the path before its next line (a pool process that forked from a
   worker has its own handler and does the same); nginx is told to reopen by SIGUSR1. A
   line being written during the rename lands, whole, at the end of the renamed file.
2. the line index of ``taskq trace`` reads what was appended since the last tick, so the
   first query after a busy hour does not have to index it. Rotated files keep their
   entries (the index follows inodes); deleted ones lose them.

One process rotates, so rotation never races itself; the files' many writers only append.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import threading
from pathlib import Path

from taskq.logs.schema import Event
from taskq.logs.setup import configure_logging
from taskq.search.store.config import StoreConfig
from taskq.search.store.lineindex import LineIndex
from taskq.settings import Settings, get_settings

logger = logging.getLogger("taskq.stack.logkeeper")

INTERVAL_S = 1.0


def rotate_file(path: Path, backups: int) -> None:
    """``path`` -> ``path.1``, ``path.1`` -> ``path.2`` ... dropping ``path.<backups>``."""
    oldest = path.with_name(f"{path.name}.{backups}")
    oldest.unlink(missing_ok=True)
    for n in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            older.rename(path.with_name(f"{path.name}.{n + 1}"))
    path.rename(path.with_name(f"{path.name}.1"))


def rotate_due(log_dir: Path, max_bytes: int, backups: int) -> list[Path]:
    """Rotate every ``*.jsonl`` of ``log_dir`` larger than ``max_bytes``; the rotated paths."""
    rotated: list[Path] = []
    for path in sorted(log_dir.glob("*.jsonl")):
        try:
            if path.stat().st_size <= max_bytes:
                continue
            rotate_file(path, backups)
        except FileNotFoundError:
            continue
        rotated.append(path)
    return rotated


def reopen_nginx(pid_file: Path) -> None:
    """Ask nginx to reopen its log files (SIGUSR1 to its master), if it runs."""
    # Not started yet, or restarting: it opens the new file when it starts.
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pid_file.read_text().strip()), signal.SIGUSR1)


class LogKeeper:
    """One tick: rotate, then refresh the index."""

    def __init__(self, settings: Settings) -> None:
        self.log_dir = settings.resolved_log_dir.resolve()
        self.max_bytes = settings.log_max_bytes
        self.backups = settings.log_backups
        self.nginx_pid = settings.var_dir.resolve() / "run" / "nginx.pid"
        config = StoreConfig.for_dirs(settings.var_dir.resolve(), self.log_dir)
        self.index = LineIndex(config.index_path, self.log_dir)

    def tick(self) -> None:
        rotated = rotate_due(self.log_dir, self.max_bytes, self.backups)
        for path in rotated:
            logger.info(
                "log file rotated",
                extra={"event.action": Event.LOG_ROTATED, "log.file.path": str(path)},
            )
            if path.name.startswith("nginx"):
                reopen_nginx(self.nginx_pid)
        # A long query holds the index: the next tick catches up.
        with contextlib.suppress(sqlite3.OperationalError):
            self.index.refresh()

    def close(self) -> None:
        self.index.close()


def run(settings: Settings, stop: threading.Event) -> None:
    """Tick every :data:`INTERVAL_S` until ``stop`` is set."""
    keeper = LogKeeper(settings)
    try:
        while not stop.wait(INTERVAL_S):
            keeper.tick()
    finally:
        keeper.close()


def main() -> None:
    """The supervised program: JSON logging, SIGTERM stops it after the current tick."""
    settings = get_settings()
    configure_logging(
        service=settings.service_name,
        node=settings.node_name or "logkeeper",
        level=settings.log_level,
        log_file=settings.log_file,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run(settings, stop)


if __name__ == "__main__":
    main()
