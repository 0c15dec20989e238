"""Print the README's settings table from :class:`taskq.settings.Settings`.

.venv/bin/python scripts/settings_table.py
"""

from __future__ import annotations

from taskq.settings import Settings

#: Read by the log search commands without building Settings (taskq/search/store/config.py).
SEARCH_VARIABLES = (
    (
        "TASKQ_LOGSTORE_BACKEND",
        "duckdb",
        "Backend of taskq trace/logs/stats: duckdb or elasticsearch.",
    ),
    ("TASKQ_LOG_INDEX", "(var_dir/run/log-index.sqlite3)", "Side index of the embedded backend."),
    ("TASKQ_ES_URL", "http://localhost:9200", "Elasticsearch URL for the elasticsearch backend."),
    ("TASKQ_ES_INDEX", "logs-taskq-*", "Index pattern searched in Elasticsearch."),
    ("TASKQ_ES_API_KEY", "(unset)", "Elasticsearch API key, if the cluster needs one."),
)


def rows() -> list[str]:
    """Markdown table rows, header first."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "(unset)" if default is None else "(empty)" if default == "" else str(default)
        lines.append(f"| `TASKQ_{name.upper()}` | `{shown}` | {field.description or ''} |")
    for name, default, meaning in SEARCH_VARIABLES:
        lines.append(f"| `{name}` | `{default}` | {meaning} |")
    return lines


if __name__ == "__main__":
    print("\n".join(rows()))
