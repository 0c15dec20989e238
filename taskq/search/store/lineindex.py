"""An incremental index of the JSON-lines log files: id -> (file, byte offset, length).

Contract: after :meth:`LineIndex.refresh`, every complete line (ending in ``\\n``) of every
log file is findable by its ``correlation_id`` and its ``task_id``. There is nothing to keep
in sync: each query refreshes first, reading only the bytes appended since the last one.

- A torn last line (no ``\\n`` yet) is not indexed; the offset stays before it, so it is
  read again, complete, at the next refresh.
- Files are known by (device, inode). A rotated file (renamed, e.g. ``api-1.jsonl`` ->
  ``api-1.jsonl.1``) keeps its entries; the new file at the old name is indexed from 0.
- A truncated or rewritten file (smaller than the indexed offset, or whose first bytes
  changed, e.g. ``copytruncate``) is re-read from 0. Deleted files' entries are dropped.

Storage is two SQLite B-trees keyed by id hash: ``recent`` takes small refreshes (cheap
writes) and is merged in key order into ``entries`` every :data:`MERGE_ROWS` rows; a first
build or a large catch-up writes straight into ``entries``.

Keys are stored as CRC-32 of the id, not the id: the table stays small and fast, and the
caller verifies every line it reads against the id it asked for (a hash collision costs a
wasted read, never a wrong answer). Ids are found with a byte pattern over whole chunks
rather than by parsing each line; they are validated to ``[A-Za-z0-9._:-]`` (correlation)
or are UUIDs (tasks), so they never contain the quote or backslash the pattern excludes.
"""

from __future__ import annotations

import os
import re
import sqlite3
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: A log file of the directory: ``name.jsonl`` or a rotated, uncompressed ``name.jsonl.N``.
LOG_FILE_RE = re.compile(r"[^.][^/]*\.jsonl(?:\.\d+)?")
# `"correlation_id": "v"` or `"task_id":"v"`; cannot match inside an escaped JSON string
# (there the quotes are preceded by backslashes) nor `"parent_task_id"`.
_KEY_RE = re.compile(rb'"(?:correlation_id|task_id)": ?"([^"\\\n]*)"')
LOCK_TIMEOUT_S = 300.0
_HEAD_BYTES = 256
_CHUNK_BYTES = 32 * 1024 * 1024
#: A refresh with more new bytes than this writes straight into the main table.
_BULK_BYTES = 64 * 1024 * 1024
#: ``recent`` is merged into ``entries`` once it holds this many rows.
MERGE_ROWS = 200_000
_ENTRY_COLUMNS = (
    " (h INTEGER NOT NULL, file_id INTEGER NOT NULL, offset INTEGER NOT NULL,"
    " length INTEGER NOT NULL, PRIMARY KEY (h, file_id, offset)) WITHOUT ROWID"
)
_SCHEMA = (
    # AUTOINCREMENT: a re-read file gets a new id, never the id of the entries just dropped.
    "CREATE TABLE IF NOT EXISTS files (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL,"
    " dev INTEGER NOT NULL, ino INTEGER NOT NULL, offset INTEGER NOT NULL, head BLOB NOT NULL)",
    # Two levels, as in an LSM tree: small appends go to the small `recent` table (a few
    # pages to write); inserting them one by one into the big `entries` B-tree would dirty
    # one random page of it per line. `recent` is merged in sorted order when it is large.
    "CREATE TABLE IF NOT EXISTS entries" + _ENTRY_COLUMNS,
    "CREATE TABLE IF NOT EXISTS recent" + _ENTRY_COLUMNS,
)


def key_hash(key: bytes) -> int:
    """The stored form of an id."""
    return zlib.crc32(key)


def log_files(log_dir: Path) -> list[Path]:
    """The log files of ``log_dir`` (not hidden, ``*.jsonl`` or ``*.jsonl.N``), sorted."""
    try:
        names = sorted(entry.name for entry in os.scandir(log_dir) if entry.is_file())
    except FileNotFoundError:
        return []
    return [log_dir / name for name in names if LOG_FILE_RE.fullmatch(name)]


def extract_entries(buf: bytes, file_id: int, base: int) -> list[tuple[int, int, int, int]]:
    """Index rows ``(hash, file_id, offset, length)`` of the complete lines in ``buf``.

    ``buf`` must end with ``\\n``; ``base`` is its offset in the file.
    """
    rows: list[tuple[int, int, int, int]] = []
    last_start, length = -1, 0
    for match in _KEY_RE.finditer(buf):
        start = buf.rfind(b"\n", 0, match.start()) + 1
        if start != last_start:
            last_start = start
            length = buf.find(b"\n", match.end()) - start
        rows.append((zlib.crc32(match.group(1)), file_id, base + start, length))
    return rows


@dataclass(frozen=True)
class FileRow:
    """What the index knows about one file."""

    id: int
    path: str
    dev: int
    ino: int
    offset: int
    head: bytes


@dataclass(frozen=True)
class Location:
    """Where one indexed line is."""

    path: str
    dev: int
    ino: int
    offset: int
    length: int


@dataclass
class RefreshResult:
    """What one refresh did."""

    files: int = 0
    bytes_read: int = 0
    entries_added: int = 0
    files_reset: int = 0


class StaleIndexError(Exception):
    """A file changed between refresh and read; refresh and read again."""


class LineIndex:
    """The index of one log directory, stored in the SQLite file ``index_path``."""

    def __init__(self, index_path: Path, log_dir: Path) -> None:
        self.log_dir = log_dir.resolve()
        # Rows of other log directories sharing this index file are not ours.
        self._prefix = str(self.log_dir) + os.sep
        index_path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below).
        # A first build over millions of lines takes a minute; others wait for it.
        self._db = sqlite3.connect(index_path, timeout=LOCK_TIMEOUT_S, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # The index can always be rebuilt from the files: durability buys nothing here.
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("PRAGMA cache_size=-65536")
        for statement in _SCHEMA:
            self._db.execute(statement)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    # --- reading --------------------------------------------------------------------------

    def locate(self, keys: Iterable[str]) -> list[Location]:
        """Candidate lines for ``keys`` (callers verify them), in file order."""
        hashes = sorted({key_hash(k.encode()) for k in keys})
        if not hashes:
            return []
        prefix = self._prefix
        rows: list[Location] = []
        for start in range(0, len(hashes), 500):
            batch = hashes[start : start + 500]
            marks = ",".join("?" * len(batch))
            cursor = self._db.execute(
                "SELECT f.path, f.dev, f.ino, e.offset, e.length FROM ("
                f"SELECT file_id, offset, length FROM entries WHERE h IN ({marks}) UNION ALL"
                f" SELECT file_id, offset, length FROM recent WHERE h IN ({marks})) e"
                " JOIN files f ON f.id = e.file_id",
                batch + batch,
            )
            rows.extend(Location(*row) for row in cursor if row[0].startswith(prefix))
        rows.sort(key=lambda loc: (loc.path, loc.offset))
        return rows

    def locate_first(
        self, keys: Iterable[str], max_lines: int, max_bytes: int
    ) -> tuple[list[Location], bool]:
        """At most ``max_lines`` candidate lines for ``keys`` of at most ``max_bytes`` in
        all (at least one), in file order, and whether more were left out.

        The bound is applied in the query, so an id with a million lines costs what
        ``max_lines`` do. Kept first: the earliest lines of every file, taken in turn
        (each file's 1st line, then each one's 2nd, ...): each process's part of the
        journey, from its start, whoever inflated the id in one of them.
        """
        hashes = sorted({key_hash(k.encode()) for k in keys})
        if not hashes:
            return [], False
        picked: list[tuple[int, str, Location]] = []
        for start in range(0, len(hashes), 500):
            batch = hashes[start : start + 500]
            marks = ",".join("?" * len(batch))
            cursor = self._db.execute(
                "SELECT rn, path, dev, ino, offset, length FROM ("
                " SELECT f.path, f.dev, f.ino, e.offset, e.length,"
                " row_number() OVER (PARTITION BY e.file_id ORDER BY e.offset) AS rn FROM ("
                f"SELECT file_id, offset, length FROM entries WHERE h IN ({marks}) UNION ALL"
                f" SELECT file_id, offset, length FROM recent WHERE h IN ({marks})) e"
                " JOIN files f ON f.id = e.file_id WHERE substr(f.path, 1, ?) = ?)"
                " ORDER BY rn, path LIMIT ?",
                [*batch, *batch, len(self._prefix), self._prefix, max_lines + 1],
            )
            picked.extend((rn, path, Location(path, *rest)) for rn, path, *rest in cursor)
        picked.sort(key=lambda row: (row[0], row[1]))
        capped = len(picked) > max_lines
        rows: list[Location] = []
        size = 0
        for _, _, loc in picked[:max_lines]:
            size += loc.length + 1
            if rows and size > max_bytes:
                capped = True
                break
            rows.append(loc)
        rows.sort(key=lambda loc: (loc.path, loc.offset))
        return rows, capped

    def read(self, keys: Iterable[str]) -> list[bytes]:
        """The raw candidate lines for ``keys``; refreshes first, retries if files move."""
        wanted = list(keys)
        for _ in range(3):
            self.refresh()
            try:
                return read_locations(self.locate(wanted))
            except StaleIndexError:
                continue
        raise StaleIndexError("log files kept changing while being read")

    def read_first(
        self, keys: Iterable[str], max_lines: int, max_bytes: int
    ) -> tuple[list[bytes], bool]:
        """:meth:`read` bounded as :meth:`locate_first`: the lines and whether more exist."""
        wanted = list(keys)
        for _ in range(3):
            self.refresh()
            locations, capped = self.locate_first(wanted, max_lines, max_bytes)
            try:
                return read_locations(locations), capped
            except StaleIndexError:
                continue
        raise StaleIndexError("log files kept changing while being read")

    # --- refreshing -----------------------------------------------------------------------

    def refresh(self) -> RefreshResult:
        """Bring the index up to date with the files; cheap when nothing changed."""
        disk = self._stat_files()
        if not self._plan(disk, self._rows())[0]:
            return RefreshResult(files=len(disk))
        with self._write():
            _, work, stale = self._plan(self._stat_files(), self._rows())
            result = RefreshResult(files=len(work))
            pending = sum(st.st_size - (row.offset if row else 0) for _, st, row in work)
            table = "entries" if pending > _BULK_BYTES else "recent"
            for row_id in stale:
                self._db.execute("DELETE FROM files WHERE id = ?", (row_id,))
            for path, st, row in work:
                if row is None:
                    result.files_reset += 1
                    row = self._new_row(path, st)
                elif row.path != str(path):
                    self._db.execute("UPDATE files SET path = ? WHERE id = ?", (str(path), row.id))
                self._grow(row, path, result, table)
            if stale:
                # Entries of files deleted, truncated or rewritten (their rows are stale, a
                # re-read gets a new row): a full scan, but only after such events.
                for name in ("entries", "recent"):
                    self._db.execute(
                        f"DELETE FROM {name} WHERE file_id NOT IN (SELECT id FROM files)"
                    )
            if table == "recent" and result.entries_added:
                (count,) = self._db.execute("SELECT count(*) FROM recent").fetchone()
                if count >= MERGE_ROWS:
                    self._merge()
            return result

    def _merge(self) -> None:
        """Move ``recent`` into ``entries``, in key order (each page of it written once)."""
        self._db.execute("INSERT OR IGNORE INTO entries SELECT * FROM recent ORDER BY h")
        self._db.execute("DELETE FROM recent")

    def _stat_files(self) -> dict[Path, os.stat_result]:
        disk: dict[Path, os.stat_result] = {}
        for path in log_files(self.log_dir):
            try:
                disk[path] = os.stat(path)
            except FileNotFoundError:
                continue  # rotated away between listing and stat
        return disk

    def _rows(self) -> list[FileRow]:
        cursor = self._db.execute("SELECT id, path, dev, ino, offset, head FROM files")
        prefix = self._prefix
        return [FileRow(*row) for row in cursor if row[1].startswith(prefix)]

    def _plan(
        self, disk: dict[Path, os.stat_result], rows: list[FileRow]
    ) -> tuple[bool, list[tuple[Path, os.stat_result, FileRow | None]], list[int]]:
        """(anything to do, files with their current row or None to re-read, rows to drop)."""
        by_inode = {(row.dev, row.ino): row for row in rows}
        kept: set[int] = set()
        work: list[tuple[Path, os.stat_result, FileRow | None]] = []
        changed = False
        for path, st in disk.items():
            row = by_inode.get((st.st_dev, st.st_ino))
            if row is not None and row.id not in kept and _same_content(row, path, st):
                kept.add(row.id)
                changed |= row.path != str(path) or st.st_size > row.offset
                work.append((path, st, row))
            else:
                changed = True
                work.append((path, st, None))
        stale = [row.id for row in rows if row.id not in kept]
        return changed or bool(stale), work, stale

    def _new_row(self, path: Path, st: os.stat_result) -> FileRow:
        cursor = self._db.execute(
            "INSERT INTO files (path, dev, ino, offset, head) VALUES (?, ?, ?, 0, x'')",
            (str(path), st.st_dev, st.st_ino),
        )
        assert cursor.lastrowid is not None
        return FileRow(cursor.lastrowid, str(path), st.st_dev, st.st_ino, 0, b"")

    def _grow(self, row: FileRow, path: Path, result: RefreshResult, table: str) -> None:
        """Index the complete lines appended after ``row.offset``."""
        offset = row.offset
        try:
            handle = open(path, "rb")  # noqa: SIM115 (closed below; loop needs the handle)
        except FileNotFoundError:
            return  # gone since the stat: the next refresh drops it
        with handle:
            size = _CHUNK_BYTES
            while True:
                handle.seek(offset)
                chunk = handle.read(size)
                end = chunk.rfind(b"\n")
                if end < 0:
                    if len(chunk) < size:
                        break  # only a torn line left
                    size *= 2  # one line longer than the chunk
                    continue
                rows = extract_entries(chunk[: end + 1], row.id, offset)
                rows.sort()  # key order: neighbouring inserts land on the same pages
                self._db.executemany(f"INSERT OR IGNORE INTO {table} VALUES (?, ?, ?, ?)", rows)
                result.entries_added += len(rows)
                result.bytes_read += end + 1
                offset += end + 1
                size = _CHUNK_BYTES
            head = row.head
            if len(head) < _HEAD_BYTES and offset > len(head):
                handle.seek(0)
                head = handle.read(min(_HEAD_BYTES, offset))
        self._db.execute(
            "UPDATE files SET offset = ?, head = ? WHERE id = ?", (offset, head, row.id)
        )

    @contextmanager
    def _write(self) -> Iterator[None]:
        # IMMEDIATE: two refreshing processes serialise here instead of deadlocking later.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def _same_content(row: FileRow, path: Path, st: os.stat_result) -> bool:
    """False when the file was truncated or rewritten since it was indexed."""
    if st.st_size < row.offset:
        return False
    if not row.head:
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(len(row.head)) == row.head
    except FileNotFoundError:
        return False


def read_locations(locations: list[Location]) -> list[bytes]:
    """The bytes of each location; :class:`StaleIndexError` if a file was replaced."""
    lines: list[bytes] = []
    current: str | None = None
    fd = -1
    try:
        for loc in locations:
            if loc.path != current:
                if fd >= 0:
                    os.close(fd)
                    fd = -1
                try:
                    fd = os.open(loc.path, os.O_RDONLY)
                except FileNotFoundError:
                    raise StaleIndexError(loc.path) from None
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != (loc.dev, loc.ino):
                    raise StaleIndexError(loc.path)
                current = loc.path
            lines.append(os.pread(fd, loc.length, loc.offset))
    finally:
        if fd >= 0:
            os.close(fd)
    return lines
