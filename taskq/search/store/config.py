"""Where the log store looks, read from ``TASKQ_*`` variables without building ``Settings``.

``taskq trace`` must start fast, and pydantic alone costs ~0.2 s to import: this module
resolves the same paths as :class:`taskq.settings.Settings` (``var_dir``, ``log_dir`` and
its ``resolved_log_dir``) from the environment directly. A unit test keeps them equal.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from taskq.search.store.base import LOOKUP_MAX_BYTES, LOOKUP_MAX_LINES

Backend = Literal["duckdb", "elasticsearch"]
BACKENDS: tuple[Backend, ...] = ("duckdb", "elasticsearch")
#: The data stream / index pattern the full stack ships these logs to.
DEFAULT_ES_INDEX = "logs-taskq-*"
DEFAULT_ES_URL = "http://localhost:9200"
INDEX_FILE_NAME = "log-index.sqlite3"


@dataclass(frozen=True)
class StoreConfig:
    """Everything a backend needs to open.

    ``index_path`` is the SQLite side index of the embedded backend: by default
    ``<var_dir>/run/log-index.sqlite3`` (the log directory may be read-only).
    """

    backend: Backend = "duckdb"
    log_dir: Path = Path("var/log")
    index_path: Path = Path("var/run") / INDEX_FILE_NAME
    es_url: str = DEFAULT_ES_URL
    es_index: str = DEFAULT_ES_INDEX
    es_api_key: str | None = None
    timeout_s: float = 10.0
    #: Bounds of one lookup by id (``TASKQ_TRACE_LOOKUP_MAX_LINES``/``_BYTES``).
    lookup_max_lines: int = LOOKUP_MAX_LINES
    lookup_max_bytes: int = LOOKUP_MAX_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StoreConfig:
        """Resolve from ``TASKQ_VAR_DIR``, ``TASKQ_LOG_DIR``, ``TASKQ_LOG_INDEX``,
        ``TASKQ_LOGSTORE_BACKEND``, ``TASKQ_ES_URL``, ``TASKQ_ES_INDEX``, ``TASKQ_ES_API_KEY``,
        ``TASKQ_TRACE_LOOKUP_MAX_LINES``, ``TASKQ_TRACE_LOOKUP_MAX_BYTES``."""
        env = os.environ if environ is None else environ
        var_dir = Path(env.get("TASKQ_VAR_DIR") or "var")
        log_dir = Path(env["TASKQ_LOG_DIR"]) if env.get("TASKQ_LOG_DIR") else var_dir / "log"
        index = env.get("TASKQ_LOG_INDEX")
        backend = env.get("TASKQ_LOGSTORE_BACKEND") or "duckdb"
        if backend not in BACKENDS:
            raise ValueError(f"TASKQ_LOGSTORE_BACKEND must be one of {', '.join(BACKENDS)}")
        return cls(
            backend=backend,
            log_dir=log_dir,
            index_path=Path(index) if index else var_dir / "run" / INDEX_FILE_NAME,
            es_url=env.get("TASKQ_ES_URL") or DEFAULT_ES_URL,
            es_index=env.get("TASKQ_ES_INDEX") or DEFAULT_ES_INDEX,
            es_api_key=env.get("TASKQ_ES_API_KEY") or None,
            lookup_max_lines=int(env.get("TASKQ_TRACE_LOOKUP_MAX_LINES") or LOOKUP_MAX_LINES),
            lookup_max_bytes=int(env.get("TASKQ_TRACE_LOOKUP_MAX_BYTES") or LOOKUP_MAX_BYTES),
        )

    @classmethod
    def for_dirs(cls, var_dir: Path, log_dir: Path) -> StoreConfig:
        """The embedded backend over ``log_dir``, its index under ``var_dir/run``."""
        return cls(log_dir=log_dir, index_path=var_dir / "run" / INDEX_FILE_NAME)
