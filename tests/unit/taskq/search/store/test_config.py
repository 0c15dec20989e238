"""The log store resolves the same directories as Settings, without importing pydantic."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskq.search.store.config import INDEX_FILE_NAME, StoreConfig
from taskq.settings import Settings


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"TASKQ_VAR_DIR": "/srv/taskq"},
        {"TASKQ_VAR_DIR": "/srv/taskq", "TASKQ_LOG_DIR": "/var/log/taskq"},
    ],
)
def test_same_log_dir_as_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TASKQ_VAR_DIR", "TASKQ_LOG_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    config = StoreConfig.from_env(env)
    assert config.log_dir == settings.resolved_log_dir
    assert config.index_path == settings.var_dir / "run" / INDEX_FILE_NAME


def test_backend_and_elasticsearch_options() -> None:
    config = StoreConfig.from_env(
        {
            "TASKQ_LOGSTORE_BACKEND": "elasticsearch",
            "TASKQ_ES_URL": "https://es:9200",
            "TASKQ_ES_INDEX": "logs-taskq-prod",
            "TASKQ_LOG_INDEX": "/tmp/i.sqlite3",
        }
    )
    assert (config.backend, config.es_url, config.es_index) == (
        "elasticsearch",
        "https://es:9200",
        "logs-taskq-prod",
    )
    assert config.index_path == Path("/tmp/i.sqlite3")
    with pytest.raises(ValueError, match="TASKQ_LOGSTORE_BACKEND"):
        StoreConfig.from_env({"TASKQ_LOGSTORE_BACKEND": "kibana"})


def test_lookup_bounds_come_from_the_environment_with_the_settings_defaults() -> None:
    from taskq.search.store.base import LOOKUP_MAX_BYTES, LOOKUP_MAX_LINES
    from taskq.settings import Settings

    assert Settings.model_fields["trace_lookup_max_lines"].default == LOOKUP_MAX_LINES
    assert Settings.model_fields["trace_lookup_max_bytes"].default == LOOKUP_MAX_BYTES
    default = StoreConfig.from_env({})
    assert (default.lookup_max_lines, default.lookup_max_bytes) == (
        LOOKUP_MAX_LINES,
        LOOKUP_MAX_BYTES,
    )
    env = {"TASKQ_TRACE_LOOKUP_MAX_LINES": "50", "TASKQ_TRACE_LOOKUP_MAX_BYTES": "70000"}
    assert StoreConfig.from_env(env).lookup_max_lines == 50
    assert StoreConfig.from_env(env).lookup_max_bytes == 70000
