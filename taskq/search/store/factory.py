"""Open the configured backend, importing only its own dependencies."""

from __future__ import annotations

from taskq.search.store.base import LogStore
from taskq.search.store.config import StoreConfig


def open_store(config: StoreConfig) -> LogStore:
    """The backend named by ``config.backend``; raises ``LogStoreError`` if it cannot open."""
    if config.backend == "elasticsearch":
        from taskq.search.store.es_store import ElasticsearchStore

        return ElasticsearchStore(config)
    from taskq.search.store.duckdb_store import DuckDBStore

    return DuckDBStore(config)
