"""One page of a trace: lines and exchanges bounded in count and bytes, said so."""

from __future__ import annotations

from typing import Any

from taskq.search.trace.build import build_trace
from taskq.search.trace.page import page_of


def _exchange(i: int, path: str) -> list[dict[str, Any]]:
    """nginx's and the API's line of one 404 under the id ``v``."""
    common = {
        "correlation_id": "v",
        "event.action": "http.request.completed",
        "http.request.id": f"x{i:04d}",
        "http.request.method": "GET",
        "url.path": path,
        "http.response.status_code": 404,
        "@timestamp": f"2026-12-01T10:00:{i // 1000:02d}.{i % 1000:03d}+00:00",
    }
    return [
        {**common, "service.name": "nginx", "service.node.name": "nginx", "duration_ms": 1},
        {**common, "service.name": "api", "service.node.name": "api-1", "duration_ms": 1},
    ]


def _trace(n: int, path: str = "/x") -> Any:
    return build_trace("v", [line for i in range(n) for line in _exchange(i, path)])


def test_a_page_is_bounded_in_lines_and_pages_on() -> None:
    trace = _trace(30)
    page, info = page_of(trace, 0, 10, 1 << 20)
    assert len(page.lines) == 10 and info.next_offset == 10 and info.truncated
    assert info.lines_total == 60 and info.requests_total == 30 and info.requests == 10
    last, info = page_of(trace, 50, 10, 1 << 20)
    assert len(last.lines) == 10 and info.next_offset is None
    assert info.to_json()["lookup_capped"] is False


def test_long_client_paths_cannot_inflate_the_exchanges_past_the_byte_budget() -> None:
    trace = _trace(40, "/" + "a" * 4000)
    page, info = page_of(trace, 0, 1000, 16 * 1024)
    assert 1 <= len(page.requests) < 40 and info.requests == len(page.requests)
    assert info.truncated
    assert 1 <= len(page.lines) < 80  # the lines' own budget


def test_a_capped_lookup_makes_every_page_truncated() -> None:
    trace = _trace(3)
    trace.lookup_capped = True
    _, info = page_of(trace, 0, 1000, 1 << 20)
    assert info.lines == info.lines_total and info.truncated and info.lookup_capped
