"""Rotation by the log keeper, with real writers appending while files move."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from taskq.logs.setup import build_handler
from taskq.search.store.config import StoreConfig
from taskq.search.store.duckdb_store import DuckDBStore
from taskq.settings import Settings
from taskq.stack.logkeeper import LogKeeper, rotate_due, rotate_file


def test_rotation_shifts_and_bounds_the_backups(tmp_path: Path) -> None:
    path = tmp_path / "api-1.jsonl"
    for generation in range(5):
        path.write_text(f"{generation}\n")
        rotate_file(path, backups=3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["api-1.jsonl.1", "api-1.jsonl.2", "api-1.jsonl.3"]
    assert [(tmp_path / n).read_text() for n in names] == ["4\n", "3\n", "2\n"]


def test_only_files_over_the_limit_rotate(tmp_path: Path) -> None:
    (tmp_path / "big.jsonl").write_bytes(b"x" * 2000)
    (tmp_path / "small.jsonl").write_bytes(b"x" * 10)
    (tmp_path / "nginx-error.log").write_bytes(b"x" * 5000)
    assert rotate_due(tmp_path, max_bytes=1000, backups=2) == [tmp_path / "big.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "big.jsonl.1",
        "nginx-error.log",
        "small.jsonl",
    ]


def test_no_line_is_lost_or_torn_while_writers_append(tmp_path: Path) -> None:
    """Two threads write 4,000 lines each through the stack's handler while the keeper
    rotates. Each thread stops halfway until the keeper has rotated the file under its open
    handle, so every run exercises a rotation between two writes of the same handler, and
    the keeper keeps rotating while they finish. Every line is found whole, and the trace
    index finds lines that are now in rotated files."""
    var_dir, log_dir = tmp_path, tmp_path / "log"
    settings = Settings(var_dir=var_dir, log_max_bytes=64 * 1024, log_backups=100)
    handler = build_handler("api", "api-1", log_dir / "api-1.jsonl")
    writer = logging.getLogger("test.logkeeper")
    writer.addHandler(handler)
    writer.setLevel(logging.INFO)
    writer.propagate = False
    keeper = LogKeeper(settings)
    halfway = threading.Barrier(3)
    rotated = threading.Event()

    def write(prefix: str) -> None:
        for i in range(4000):
            if i == 2000:
                halfway.wait(timeout=30)
                assert rotated.wait(timeout=30)
            writer.info("line", extra={"correlation_id": f"{prefix}-{i}", "event.action": "t"})

    threads = [threading.Thread(target=write, args=(p,)) for p in ("a", "b")]
    try:
        for thread in threads:
            thread.start()
        halfway.wait(timeout=30)
        keeper.tick()  # 4,000 lines written: far over 64 KiB
        assert (log_dir / "api-1.jsonl.1").exists() and not (log_dir / "api-1.jsonl").exists()
        rotated.set()
        while any(t.is_alive() for t in threads):
            keeper.tick()
        keeper.tick()
    finally:
        writer.removeHandler(handler)
        handler.close()
        keeper.close()
    files = sorted(log_dir.iterdir())
    assert len(files) >= 2  # the rotated half and what the handlers wrote after reopening
    ids = [json.loads(raw)["correlation_id"] for f in files for raw in f.read_text().splitlines()]
    assert sorted(ids) == sorted(f"{p}-{i}" for p in ("a", "b") for i in range(4000))
    store = DuckDBStore(StoreConfig.for_dirs(var_dir, log_dir))
    try:
        assert [x["correlation_id"] for x in store.lines_for_correlation("a-0")] == ["a-0"]
        assert store.stats(None, None).lines == 8000
    finally:
        store.close()
