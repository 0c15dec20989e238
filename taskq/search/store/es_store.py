"""The Elasticsearch backend: the official client, the bodies of :mod:`es_query`, no logic.

Not yet run against a live cluster; the request
bodies and the response mapping are unit-tested against the documented shapes.
"""

from __future__ import annotations

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

    def __init__(self, config: StoreConfig, client: Any = None) -> None:
        self._index = config.es_index
        self._url = config.es_url
        if client is None:
            from elasticsearch import Elasticsearch

            client = Elasticsearch(
                config.es_url, api_key=config.es_api_key, request_timeout=config.timeout_s
            )
        self._client = client

    def close(self) -> None:
        self._client.close()

    def _search(self, body: es_query.Body) -> dict[str, Any]:
        from elasticsearch import ApiError, TransportError

        try:
            response = self._client.search(index=self._index, **body)
        except (ApiError, TransportError) as exc:
            detail = getattr(exc, "message", None) or str(exc)
            raise LogStoreError(
                f"elasticsearch at {self._url}, index {self._index}: {type(exc).__name__}: {detail}"
            ) from exc
        body_of = getattr(response, "body", response)  # ObjectApiResponse or a plain dict
        return dict(body_of)

    def lines_for_correlation(self, correlation_id: str) -> Lines:
        return _capped(es_query.hits_to_lines(self._search(es_query.trace_body(correlation_id))))

    def lines_for_tasks(self, task_ids: set[str]) -> Lines:
        return _capped(es_query.hits_to_lines(self._search(es_query.tasks_body(task_ids))))

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


def _capped(lines: list[LogLine]) -> Lines:
    """A full page of hits (``size`` reached): more lines may carry the id."""
    return Lines(lines, capped=len(lines) >= es_query.MAX_HITS)
