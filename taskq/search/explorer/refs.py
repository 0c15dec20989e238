"""A stable, URL-safe reference to one log line: a hash of its canonical JSON.

A line has no id of its own, and its file and offset change when the file is rotated; its
content does not. Two identical lines (same time, same writer, same fields) are one line
to the trace model too (it de-duplicates them).
"""

from __future__ import annotations

import hashlib
import json
import re

from taskq.search.store.base import LogLine

REF_PATTERN = r"[0-9a-f]{16}"
_REF_RE = re.compile(REF_PATTERN)


def line_ref(line: LogLine) -> str:
    """16 hex digits naming ``line``."""
    canonical = json.dumps(line, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def find_line(lines: list[LogLine], ref: str) -> LogLine | None:
    """The line of ``lines`` that ``ref`` names, or ``None``."""
    if not _REF_RE.fullmatch(ref):
        return None
    return next((x for x in lines if line_ref(x) == ref), None)
