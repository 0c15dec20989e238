"""The Elasticsearch backend: the official client, the bodies of :mod:`es_query`.

A trace is read whole, page by page: ``search_after`` in a point in time (Elasticsearch
docs, "Paginate search results"), not one search capped at ``index.max_result_window``;
past :data:`es_query.TRACE_MAX_LINES` it stops and says so (``Lines.capped``). The loop is
the one ``elasticsearch.dsl``'s ``Search.iterate`` runs, written out so that the point in time
is closed also when the read stops at the cap (``iterate`` closes it only when exhausted)
and the last page is known by its short length (no extra empty search). Tested
with the official client against a small HTTP server that speaks the endpoints used
(tests/integration/test_es_store_paging.py); not yet against a live cluster.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from taskq.search.store import es_query
from taskq.search.store.base import (
    CorrelationMatch,
    Lines,
    LogFilter,
    LogLine,
    LogStoreError,
    StatsReport,
    Surrounding,
    TaskMatch,
    UnsupportedQueryError,
)
from taskq.search.store.config import StoreConfig


class ElasticsearchStore:
    """Queries ``config.es_index`` (a data stream or index pattern) at ``config.es_url``."""

    def __init__(
        self,
        config: StoreConfig,
        client: Any = None,
        max_lines: int = es_query.TRACE_MAX_LINES,
    ) -> None:
        self._index = config.es_index
        self._url = config.es_url
        self._max_lines = max_lines
        if client is None:
            from elasticsearch import Elasticsearch

            client = Elasticsearch(
                config.es_url, api_key=config.es_api_key, request_timeout=config.timeout_s
            )
        self._client = client

    def close(self) -> None:
        self._client.close()

    def _call(self, method: Any, **kwargs: Any) -> dict[str, Any]:
        from elasticsearch import ApiError, TransportError

        try:
            response = method(**kwargs)
        except (ApiError, TransportError) as exc:
            detail = getattr(exc, "message", None) or str(exc)
            raise LogStoreError(
                f"elasticsearch at {self._url}, index {self._index}: {type(exc).__name__}: {detail}"
            ) from exc
        body_of = getattr(response, "body", response)  # ObjectApiResponse or a plain dict
        return dict(body_of)

    def _search(self, body: es_query.Body) -> dict[str, Any]:
        return self._call(self._client.search, index=self._index, **body)

    def _read_all(self, query: es_query.Body) -> Lines:
        """Every line matching ``query``, up to ``max_lines``, page by page in one point in
        time: a consistent view however fast lines are being indexed meanwhile."""
        opened = self._call(
            self._client.open_point_in_time, index=self._index, keep_alive=es_query.PIT_KEEP_ALIVE
        )
        pit_id = str(opened["id"])
        lines: list[LogLine] = []
        after: list[Any] | None = None
        try:
            while True:
                # One line past the cap tells "capped" from "exactly the cap".
                size = min(es_query.MAX_HITS, self._max_lines + 1 - len(lines))
                page = self._call(
                    self._client.search, **es_query.page_body(query, pit_id, after, size)
                )
                pit_id = str(page.get("pit_id", pit_id))  # the PIT id may change per page
                got = es_query.hits_to_lines(page)
                lines.extend(got)
                after = es_query.last_sort(page)
                if len(got) < size or after is None:
                    return Lines(lines)
                if len(lines) > self._max_lines:
                    return Lines(lines[: self._max_lines], capped=True)
        finally:
            self._close_pit(pit_id)

    def _close_pit(self, pit_id: str) -> None:
        from elasticsearch import ApiError, TransportError

        # The PIT expires on its own after keep_alive; the lines are read.
        with contextlib.suppress(ApiError, TransportError):
            self._client.close_point_in_time(id=pit_id)

    def lines_for_correlation(self, correlation_id: str) -> Lines:
        return self._read_all(es_query.trace_query(correlation_id))

    def lines_for_tasks(self, task_ids: set[str]) -> Lines:
        return self._read_all(es_query.tasks_query(task_ids))

    def search(self, log_filter: LogFilter) -> list[LogLine]:
        try:
            body = es_query.search_body(log_filter)
        except ValueError as exc:
            raise LogStoreError(str(exc)) from exc
        return list(reversed(es_query.hits_to_lines(self._search(body))))

    def stats(self, since: datetime | None, until: datetime | None) -> StatsReport:
        response = self._search(es_query.stats_body(since, until))
        return es_query.response_to_stats(response, since, until)

    # The trace explorer's searches are implemented by the embedded backend only; with
    # Elasticsearch, Kibana (its "surrounding documents" and KQL prefix queries) does them.

    def correlation_ids(self, prefix: str, limit: int = 50) -> list[CorrelationMatch]:
        raise UnsupportedQueryError(_USE_KIBANA.format("prefix searches"))

    def find_tasks(self, search: str, limit: int = 50) -> list[TaskMatch]:
        raise UnsupportedQueryError(_USE_KIBANA.format("status searches"))

    def surrounding(self, line: LogLine, n: int) -> Surrounding | None:
        raise UnsupportedQueryError(_USE_KIBANA.format("surrounding lines"))


_USE_KIBANA = (
    "{} are not implemented for the Elasticsearch backend: use Kibana"
    " (the explorer's 'open in Kibana' link), or the embedded backend"
)
