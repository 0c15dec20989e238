"""The Elasticsearch backend reads a trace past ``index.max_result_window``, page by page.

No Elasticsearch binary exists here. The official client (``elasticsearch`` 8.x, which
checks the ``X-Elastic-Product`` header and parses every answer) talks over real HTTP to a
small server that speaks the three endpoints used, with their documented semantics
(Elasticsearch docs, "Point in time API" and "Paginate search results" / "Search after"):

- ``POST /<index>/_pit?keep_alive=`` opens a point in time and answers its ``id``;
- ``POST /_search`` with ``pit`` (and no index in the path: "a search request with the pit
  parameter must not specify index") answers at most ``size`` hits, refusing a ``size``
  over ``index.max_result_window`` (10,000) with a 400; each hit carries its ``sort``
  values, and ``search_after`` returns the hits strictly after those values in sort order;
  the response carries ``pit_id``;
- ``DELETE /_pit`` closes it.

The truth is the server's own documents: every line of the trace exactly once, none of
another, many sharing a timestamp across page boundaries (where a sort on ``@timestamp``
alone would skip or repeat lines).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from taskq.search.store.config import StoreConfig
from taskq.search.store.es_store import ElasticsearchStore
from taskq.search.trace.build import find_trace

MAX_RESULT_WINDOW = 10_000
TRACE_LINES = 23_457
#: Lines per timestamp: page boundaries fall inside groups of equal timestamps.
SAME_TIME = 7
INDEX = "logs-taskq-*"


@dataclass
class Cluster:
    """The server's state: its documents, open PITs, and what the client asked."""

    docs: list[dict[str, Any]]
    open_pits: set[str] = field(default_factory=set)
    pits_opened: int = 0
    searches: list[dict[str, Any]] = field(default_factory=list)


def _documents() -> list[dict[str, Any]]:
    docs = []
    for i in range(TRACE_LINES):
        ns = 1_764_800_000_000_000_000 + (i // SAME_TIME) * 1_000
        docs.append({"_id": f"big-{i}", "ns": ns, "_source": _line(ns, "big", f"big-{i}")})
    for i in range(50):  # another trace's lines, interleaved in time
        ns = 1_764_800_000_000_000_000 + i * 3_000
        docs.append({"_id": f"other-{i}", "ns": ns, "_source": _line(ns, "other", f"o-{i}")})
    for i, doc in enumerate(docs):
        doc["shard_doc"] = i  # unique per document, as _shard_doc is
    return docs


def _line(ns: int, correlation_id: str, message: str) -> dict[str, Any]:
    seconds, nanos = divmod(ns, 1_000_000_000)
    stamp = f"2025-12-03T22:13:{seconds % 60:02d}.{nanos:09d}Z"
    return {
        "@timestamp": stamp,
        "correlation_id": correlation_id,
        "service": {"name": "api"},
        "message": message,
    }


def _matches(query: dict[str, Any], source: dict[str, Any]) -> bool:
    for clause in query["bool"]["filter"]:
        ((kind, spec),) = clause.items()
        ((name, value),) = spec.items()
        if kind == "term" and source.get(name) != value:
            return False
        if kind == "terms" and source.get(name) not in value:
            return False
    return True


def _handler(cluster: Cluster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Elastic-Product", "Elasticsearch")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length)) if length else {}

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            if url.path.endswith("/_pit"):
                assert parse_qs(url.query)["keep_alive"], url.query
                cluster.pits_opened += 1
                pit_id = f"pit-{cluster.pits_opened}"
                cluster.open_pits.add(pit_id)
                self._answer(200, {"id": pit_id})
            elif url.path == "/_search":
                self._search(self._body())
            else:
                self._answer(404, {"error": {"type": "not_handled", "reason": url.path}})

        def _search(self, body: dict[str, Any]) -> None:
            cluster.searches.append(body)
            pit_id = body.get("pit", {}).get("id")
            if pit_id not in cluster.open_pits:
                self._answer(404, {"error": {"type": "search_context_missing_exception"}})
                return
            size = int(body.get("size", 10))
            if size > MAX_RESULT_WINDOW:
                reason = f"Result window is too large, size [{size}]"
                self._answer(
                    400, {"error": {"type": "illegal_argument_exception", "reason": reason}}
                )
                return
            assert body["sort"] == [{"@timestamp": {"order": "asc"}}, {"_shard_doc": "asc"}]
            hits = sorted(
                (d for d in cluster.docs if _matches(body["query"], d["_source"])),
                key=lambda d: (d["ns"], d["shard_doc"]),
            )
            if "search_after" in body:
                after = tuple(body["search_after"])
                hits = [d for d in hits if (d["ns"], d["shard_doc"]) > after]
            page = [
                {"_index": ".ds-x", "_id": d["_id"], "_source": d["_source"]}
                | {"sort": [d["ns"], d["shard_doc"]]}
                for d in hits[:size]
            ]
            self._answer(
                200,
                {
                    "pit_id": pit_id,
                    "took": 1,
                    "timed_out": False,
                    "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                    "hits": {"max_score": None, "hits": page},
                },
            )

        def do_DELETE(self) -> None:
            pit_id = self._body().get("id")
            freed = int(pit_id in cluster.open_pits)
            cluster.open_pits.discard(pit_id)
            self._answer(200, {"succeeded": True, "num_freed": freed})

    return Handler


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Cluster, str]]:
    state = Cluster(_documents())
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _store(url: str, max_lines: int | None = None) -> ElasticsearchStore:
    config = StoreConfig(backend="elasticsearch", es_url=url, es_index=INDEX)
    if max_lines is None:
        return ElasticsearchStore(config)
    return ElasticsearchStore(config, max_lines=max_lines)


def test_a_trace_longer_than_the_result_window_is_read_whole(
    cluster: tuple[Cluster, str],
) -> None:
    state, url = cluster
    before = len(state.searches)
    store = _store(url)
    try:
        lines = store.lines_for_correlation("big")
    finally:
        store.close()
    messages = [str(x["message"]) for x in lines]
    assert messages == [f"big-{i}" for i in range(TRACE_LINES)]  # each once, in order
    assert not lines.capped
    pages = state.searches[before:]
    assert len(pages) == -(-TRACE_LINES // MAX_RESULT_WINDOW)
    assert "search_after" not in pages[0] and all("search_after" in p for p in pages[1:])
    assert state.open_pits == set(), "the point in time was not closed"


def test_a_trace_past_the_cap_is_cut_and_says_so(cluster: tuple[Cluster, str]) -> None:
    state, url = cluster
    store = _store(url, max_lines=12_000)
    try:
        trace = find_trace(store, "big")
    finally:
        store.close()
    assert trace is not None
    assert trace.lookup_capped
    assert len(trace.lines) == 12_000
    assert state.open_pits == set()


def test_a_trace_of_exactly_the_cap_is_whole(cluster: tuple[Cluster, str]) -> None:
    _state, url = cluster
    store = _store(url, max_lines=TRACE_LINES)
    try:
        lines = store.lines_for_correlation("big")
    finally:
        store.close()
    assert len(lines) == TRACE_LINES and not lines.capped
