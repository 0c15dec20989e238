"""Lines around one line from the same writer, read backwards and forwards by offset,
across chunk boundaries, at the file's ends, within the byte budget."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from taskq.search.store import surrounding
from taskq.search.store.lineindex import Location
from taskq.search.store.surrounding import read_around, same_writer


def _write(path: Path, lines: list[dict[str, Any]]) -> list[Location]:
    st_locs: list[tuple[int, int]] = []
    with open(path, "wb") as out:
        for line in lines:
            raw = json.dumps(line).encode()
            st_locs.append((out.tell(), len(raw)))
            out.write(raw + b"\n")
        out.write(b'{"torn": ')  # a line being written: never returned
    st = os.stat(path)
    return [Location(str(path), st.st_dev, st.st_ino, o, n) for o, n in st_locs]


def _lines(n: int) -> list[dict[str, Any]]:
    # pid 1 and pid 2 of the same node interleave; one line of another node.
    return [
        {
            "i": i,
            "service.node.name": "w" if i != 7 else "x",
            "process.pid": 1 + i % 2,
            "pad": "p" * (i * 13 % 50),
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("step", [7, 64, 65536])
def test_neighbours_of_the_same_process_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: int
) -> None:
    monkeypatch.setattr(surrounding, "_STEP", step)
    lines = _lines(40)
    locs = _write(tmp_path / "w.jsonl", lines)
    keep = same_writer(lines[20])
    before, after = read_around(locs[20], 3, keep)
    assert [x["i"] for x in before] == [14, 16, 18]
    assert [x["i"] for x in after] == [22, 24, 26]
    # At the start and the end of the file, fewer; the torn last line is never returned.
    before, _ = read_around(locs[2], 5, same_writer(lines[2]))
    assert [x["i"] for x in before] == [0]
    _, after = read_around(locs[37], 5, same_writer(lines[37]))
    assert [x["i"] for x in after] == [39]
    before, after = read_around(locs[8], 2, same_writer(lines[8]))
    assert [x["i"] for x in before] == [4, 6] and [x["i"] for x in after] == [10, 12]


def test_budget_bounds_the_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(surrounding, "_STEP", 64)  # the budget counts whole steps
    lines = _lines(200)
    locs = _write(tmp_path / "w.jsonl", lines)
    before, after = read_around(locs[100], 50, same_writer(lines[100]), budget=300)
    assert 0 < len(before) < 50 and 0 < len(after) < 50
