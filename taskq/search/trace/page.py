"""One page of a trace: its timeline cut to a bound of lines and bytes, said so plainly.

Invariant: an answer about a trace (API, explorer, ``taskq trace``) holds at most
``max_lines`` timeline lines, whose JSON takes at most ``max_bytes`` (at least one line is
always shown, however long), and at most ``max_lines`` requests, whose JSON takes at most
``max_bytes`` too. What was left out is never
silent: :class:`PageInfo` gives the totals, ``truncated`` and the ``next_offset`` to ask for
(``None`` on the last page). The summaries (verdict, tasks, timings) are computed from every
line the lookup read, whatever the page; a lookup is bounded too
(:data:`~taskq.search.store.base.LOOKUP_MAX_LINES`), and ``lookup_capped`` says it stopped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import orjson

from taskq.search.store.base import LogLine
from taskq.search.trace.model import Request, Trace

#: What ``taskq trace`` and the explorer say when the lookup stopped at its bound.
LOOKUP_CAPPED_NOTE = (
    "LOOKUP CAPPED: more lines carry this id than one lookup reads; the earliest lines of"
    " each process are shown (taskq logs --correlation-id finds the others)"
)


@dataclass(frozen=True)
class PageInfo:
    """What a page holds of the whole trace."""

    offset: int
    lines: int
    lines_total: int
    requests: int
    requests_total: int
    next_offset: int | None
    #: The lookup itself stopped at its bound: lines beyond ``lines_total`` exist.
    lookup_capped: bool = False

    @property
    def truncated(self) -> bool:
        """True when lines or requests were left out of this page (or of the lookup)."""
        return (
            self.lines < self.lines_total
            or self.requests < self.requests_total
            or self.lookup_capped
        )

    def to_json(self) -> dict[str, object]:
        return {
            "offset": self.offset,
            "lines": self.lines,
            "lines_total": self.lines_total,
            "requests": self.requests,
            "requests_total": self.requests_total,
            "truncated": self.truncated,
            "next_offset": self.next_offset,
            "lookup_capped": self.lookup_capped,
        }


def page_of(trace: Trace, offset: int, max_lines: int, max_bytes: int) -> tuple[Trace, PageInfo]:
    """The trace with its timeline cut to the page starting at line ``offset``."""
    total = len(trace.lines)
    start = min(max(offset, 0), total)
    shown: list[LogLine] = []
    size = 0
    for line in trace.lines[start : start + max_lines]:
        size += len(orjson.dumps(line, default=str)) + 1
        if shown and size > max_bytes:
            break
        shown.append(line)
    end = start + len(shown)
    # The exchanges have their own budget of the same size: a path is the client's choice
    # (up to nginx's header buffers, kilobytes), so a count alone would not bound them.
    requests: list[Request] = []
    size = 0
    for request in trace.requests[:max_lines]:
        size += len(orjson.dumps(asdict(request), default=str)) + 1
        if requests and size > max_bytes:
            break
        requests.append(request)
    info = PageInfo(
        offset=start,
        lines=len(shown),
        lines_total=total,
        requests=len(requests),
        requests_total=len(trace.requests),
        next_offset=end if end < total else None,
        lookup_capped=trace.lookup_capped,
    )
    return replace(trace, lines=shown, requests=requests), info
