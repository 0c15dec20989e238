"""Query side of the logs: one :class:`~taskq.search.store.base.LogStore` interface, two backends.

- ``duckdb`` (default, embedded): reads the JSON-lines files of the log directory directly;
  ``trace`` lookups go through an incrementally built SQLite index of byte offsets
  (:mod:`taskq.search.store.lineindex`), filters and statistics through DuckDB scans.
- ``elasticsearch``: the same questions as Elasticsearch queries
  (:mod:`taskq.search.store.es_store`).

Backends are imported lazily by :func:`taskq.search.store.factory.open_store`, so that a
``taskq trace`` pays neither for DuckDB nor for the Elasticsearch client it does not use.
"""
