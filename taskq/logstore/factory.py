"""Open the configured backend, importing only its own dependencies."""

from __future__ import annotations

from taskq.logstore.base import LogStore
from taskq.logstore.config import StoreConfig


def open_store(config: StoreConfig) -> LogStore:
    """The backend named by ``config.backend``; raises ``LogStoreError`` if it cannot open."""
    if config.backend == "elasticsearch":
        from taskq.logstore.es_store import ElasticsearchStore

        return ElasticsearchStore(config)
    from taskq.logstore.duckdb_store import DuckDBStore

    return DuckDBStore(config)
