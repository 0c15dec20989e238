"""The incremental line index: appends, torn lines, rotation, truncation, deletion."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from taskq.search.store.lineindex import (
    LineIndex,
    StaleIndexError,
    extract_entries,
    key_hash,
    log_files,
    read_locations,
)


def line(cid: str | None, task_id: str | None = None, **extra: Any) -> str:
    data: dict[str, Any] = {"@timestamp": "2026-01-01T00:00:00+00:00", "message": "m", **extra}
    if cid is not None:
        data["correlation_id"] = cid
    if task_id is not None:
        data["task_id"] = task_id
    return json.dumps(data) + "\n"


def cids(index: LineIndex, key: str) -> list[dict[str, Any]]:
    """Lines found for ``key``, verified like the store does."""
    found = [json.loads(raw) for raw in index.read([key])]
    return [x for x in found if key in (x.get("correlation_id"), x.get("task_id"))]


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    directory = tmp_path / "log"
    directory.mkdir()
    return directory


@pytest.fixture
def index(tmp_path: Path, logs: Path) -> LineIndex:
    return LineIndex(tmp_path / "run" / "index.sqlite3", logs)


def test_extracts_both_ids_with_and_without_space_after_colon() -> None:
    buf = (
        b'{"correlation_id": "c1", "task_id": "t1"}\n'
        b'{"correlation_id":"c2","parent_task_id":"p"}\n'
        b'{"message": "no ids"}\n'
    )
    rows = extract_entries(buf, 7, 100)
    assert [(h, f, off) for h, f, off, _ in rows] == [
        (key_hash(b"c1"), 7, 100),
        (key_hash(b"t1"), 7, 100),
        (key_hash(b"c2"), 7, 142),
    ]
    assert buf[42 : 42 + rows[2][3]] == b'{"correlation_id":"c2","parent_task_id":"p"}'


def test_ids_quoted_inside_a_string_value_are_not_keys() -> None:
    text = json.dumps({"message": '{"correlation_id": "fake"}', "correlation_id": "real"})
    rows = extract_entries(text.encode() + b"\n", 1, 0)
    assert [h for h, *_ in rows] == [key_hash(b"real")]


def test_appended_lines_are_found_at_the_next_query(logs: Path, index: LineIndex) -> None:
    path = logs / "api-1.jsonl"
    path.write_text(line("a", "t1") + line("b"))
    assert len(cids(index, "a")) == 1
    with path.open("a") as handle:
        handle.write(line("a", "t2"))
    assert [x["task_id"] for x in cids(index, "a")] == ["t1", "t2"]
    assert len(cids(index, "t2")) == 1


def test_a_torn_last_line_is_indexed_once_complete(logs: Path, index: LineIndex) -> None:
    path = logs / "worker-high.jsonl"
    full = line("torn", "t9")
    path.write_text(line("x") + full[:20])
    assert cids(index, "torn") == []
    with path.open("a") as handle:
        handle.write(full[20:])
    assert cids(index, "torn") == [json.loads(full)]


def test_rotated_file_keeps_its_lines_and_new_file_is_read(logs: Path, index: LineIndex) -> None:
    path = logs / "api-1.jsonl"
    path.write_text(line("old"))
    assert len(cids(index, "old")) == 1
    path.rename(logs / "api-1.jsonl.1")
    path.write_text(line("new") + line("old", "t-after"))
    assert len(cids(index, "new")) == 1
    assert sorted(str(x.get("task_id")) for x in cids(index, "old")) == ["None", "t-after"]


def test_truncated_file_is_read_again(logs: Path, index: LineIndex) -> None:
    path = logs / "nginx-access.jsonl"
    path.write_text(line("gone") + line("gone"))
    assert len(cids(index, "gone")) == 2
    with path.open("r+") as handle:  # copytruncate: same inode, size 0
        handle.truncate(0)
    path.write_text(line("fresh"))
    assert cids(index, "gone") == []
    assert len(cids(index, "fresh")) == 1


def test_rewritten_file_grown_past_old_offset_is_read_again(logs: Path, index: LineIndex) -> None:
    path = logs / "beat.jsonl"
    path.write_text(line("first"))
    assert len(cids(index, "first")) == 1
    inode = os.stat(path).st_ino
    with path.open("r+") as handle:  # same inode, longer, different first bytes
        handle.truncate(0)
        handle.write(line("second", extra="x" * 50) + line("third"))
    assert os.stat(path).st_ino == inode
    assert cids(index, "first") == []
    assert len(cids(index, "second")) == 1 and len(cids(index, "third")) == 1


def test_deleted_file_drops_its_lines(logs: Path, index: LineIndex) -> None:
    (logs / "api-2.jsonl").write_text(line("deleted"))
    assert len(cids(index, "deleted")) == 1
    (logs / "api-2.jsonl").unlink()
    assert cids(index, "deleted") == []


def test_no_change_means_no_work(logs: Path, index: LineIndex) -> None:
    (logs / "api-1.jsonl").write_text(line("a") * 3)
    first = index.refresh()
    assert first.entries_added == 3
    second = index.refresh()
    assert second.entries_added == 0 and second.bytes_read == 0


def test_only_log_files_are_read(logs: Path) -> None:
    for name in ("a.jsonl", "a.jsonl.1", "a.jsonl.2.gz", "redis.log", ".hidden.jsonl"):
        (logs / name).write_text("")
    assert [p.name for p in log_files(logs)] == ["a.jsonl", "a.jsonl.1"]


def test_two_log_dirs_share_one_index_file(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    (first / "a.jsonl").write_text(line("same"))
    (second / "a.jsonl").write_text(line("same") + line("same"))
    db = tmp_path / "index.sqlite3"
    assert len(cids(LineIndex(db, first), "same")) == 1
    assert len(cids(LineIndex(db, second), "same")) == 2
    assert len(cids(LineIndex(db, first), "same")) == 1


def test_lines_longer_than_a_chunk(
    logs: Path, index: LineIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("taskq.search.store.lineindex._CHUNK_BYTES", 64)
    (logs / "a.jsonl").write_text(line("long", message="y" * 300) + line("short"))
    assert len(cids(index, "long")) == 1 and len(cids(index, "short")) == 1


def test_sibling_directory_with_a_common_prefix_is_not_mixed_in(tmp_path: Path) -> None:
    first, second = tmp_path / "log", tmp_path / "log2"
    first.mkdir()
    second.mkdir()
    (second / "a.jsonl").write_text(line("x"))
    db = tmp_path / "index.sqlite3"
    assert len(cids(LineIndex(db, second), "x")) == 1
    assert cids(LineIndex(db, first), "x") == []


def test_two_connections_see_each_others_work(tmp_path: Path, logs: Path) -> None:
    db = tmp_path / "index.sqlite3"
    one, two = LineIndex(db, logs), LineIndex(db, logs)
    path = logs / "a.jsonl"
    path.write_text(line("shared"))
    assert len(cids(one, "shared")) == 1
    assert two.refresh().entries_added == 0  # the other connection already indexed it
    with path.open("a") as handle:
        handle.write(line("shared"))
    assert len(cids(two, "shared")) == 2 and len(cids(one, "shared")) == 2


def test_a_file_replaced_between_lookup_and_read_is_detected(logs: Path, index: LineIndex) -> None:
    path = logs / "a.jsonl"
    path.write_text(line("moving"))
    index.refresh()
    locations = index.locate(["moving"])
    path.rename(logs / "a.jsonl.1")  # rotated: the old inode lives on under a new name
    path.write_text(line("other") + line("moving", "t2"))
    with pytest.raises(StaleIndexError):
        read_locations(locations)
    assert sorted(str(x.get("task_id")) for x in cids(index, "moving")) == ["None", "t2"]


def test_small_appends_are_merged_into_the_main_table(
    tmp_path: Path, logs: Path, index: LineIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("taskq.search.store.lineindex.MERGE_ROWS", 4)
    path = logs / "a.jsonl"
    counts = sqlite3.connect(tmp_path / "run" / "index.sqlite3")
    for i in range(5):
        with path.open("a") as handle:
            handle.write(line("merged", f"t{i}"))
        assert len(cids(index, "merged")) == i + 1
        recent, main = (
            counts.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
            for name in ("recent", "entries")
        )
        assert recent + main == 2 * (i + 1)  # both ids of every line, in one table or the other
    assert main >= 4 and recent < 4
    path.unlink()
    assert cids(index, "merged") == []  # deleted files leave neither table


def test_a_large_refresh_writes_straight_to_the_main_table(
    tmp_path: Path, logs: Path, index: LineIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("taskq.search.store.lineindex._BULK_BYTES", 10)
    (logs / "a.jsonl").write_text(line("bulk") * 3)
    assert len(cids(index, "bulk")) == 3
    db = sqlite3.connect(tmp_path / "run" / "index.sqlite3")
    assert db.execute("SELECT count(*) FROM recent").fetchone()[0] == 0


def test_bounded_read_keeps_each_files_earliest_lines_in_turn(logs: Path, index: LineIndex) -> None:
    # One process's file inflated with 50 lines of the id, another with 3: a bound of 8
    # keeps the 3 of the quiet file and the 5 earliest of the loud one.
    (logs / "nginx.jsonl").write_text("".join(line("v", n=i) for i in range(50)))
    (logs / "worker-1.jsonl").write_text("".join(line("v", n=100 + i) for i in range(3)))
    raw, capped = index.read_first(["v"], max_lines=8, max_bytes=1 << 20)
    assert capped
    assert sorted(json.loads(x)["n"] for x in raw) == [0, 1, 2, 3, 4, 100, 101, 102]


def test_bounded_read_is_not_capped_when_everything_fits(logs: Path, index: LineIndex) -> None:
    (logs / "api-1.jsonl").write_text("".join(line("v", n=i) for i in range(8)))
    raw, capped = index.read_first(["v"], max_lines=8, max_bytes=1 << 20)
    assert not capped
    assert [json.loads(x)["n"] for x in raw] == list(range(8))


def test_bounded_read_stops_at_the_byte_budget_but_keeps_one_line(
    logs: Path, index: LineIndex
) -> None:
    big = "x" * 1000
    (logs / "api-1.jsonl").write_text("".join(line("v", n=i, pad=big) for i in range(10)))
    raw, capped = index.read_first(["v"], max_lines=100, max_bytes=3500)
    assert capped
    assert [json.loads(x)["n"] for x in raw] == [0, 1, 2]
    raw, capped = index.read_first(["v"], max_lines=100, max_bytes=10)
    assert capped
    assert [json.loads(x)["n"] for x in raw] == [0]
