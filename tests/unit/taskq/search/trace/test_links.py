"""The trace page's path and its Link header (RFC 8288)."""

from __future__ import annotations

from taskq.search.trace.links import trace_link_header, trace_page_url, trace_path


def test_path_url_and_header_name_the_same_page() -> None:
    assert trace_path("req-1.a:b_c") == "/ui/traces/req-1.a:b_c"
    assert (
        trace_page_url("http://127.0.0.1:8080/", "req-1") == "http://127.0.0.1:8080/ui/traces/req-1"
    )
    assert trace_link_header("req-1") == '</ui/traces/req-1>; rel="related"; title="trace"'


def test_an_id_of_another_origin_cannot_break_out_of_the_path() -> None:
    assert trace_path("a/../b>; rel=x") == "/ui/traces/a%2F..%2Fb%3E%3B%20rel%3Dx"
