"""The Elasticsearch index template of the taskq logs, generated from :mod:`taskq.logs.schema`.

``python -m taskq.logs.es_template --write`` writes :data:`TEMPLATE_PATH` (committed, read by
the compose ``setup`` job); ``--check`` exits 1 when the committed file differs from what the
schema generates, so the mappings can never drift from the log lines.

Contract of the generated template:

* it matches :data:`INDEX_PATTERN`, the data stream Logstash writes to
  (``logs-taskq-default``) and the Kibana data view's title;
* every schema field is mapped with its schema type (``keyword``, ``text``, ``date``,
  ``long``, ``float``, ``boolean``) under its dotted name. The mapping sets
  ``subobjects: false``: the schema has ``queue`` (keyword) *and* ``queue.depth`` (long),
  which ECS-style objects cannot hold (``queue`` would have to be a value and an object);
  flat dotted names keep exactly the names of the log lines and of Kibana;
* ``dynamic: false``: a field outside the schema stays in ``_source`` but is not indexed, so
  a stray field can never create a mapping conflict that rejects documents;
* ``index.mapping.ignore_malformed: true``: a value of the wrong type (a string where a
  ``long`` is mapped) is left unindexed, named in the document's ``_ignored`` metadata field
  and kept in ``_source``, instead of rejecting the whole line to Logstash's dead-letter
  queue. It is what the built-in ``logs@settings`` component template sets; composing that
  template would also bring its other settings, so only this one is set here;
* the ILM policy :data:`ILM_POLICY_NAME` (``elk/elasticsearch/ilm-policy.json``) rolls the
  backing indices over and deletes them after the retention period.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from taskq.logs.schema import FIELDS, FieldType

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "elk" / "elasticsearch" / "index-template.json"
TEMPLATE_NAME = "logs-taskq"
#: Logstash writes data stream ``logs-taskq-default`` (type-dataset-namespace).
DATA_STREAM = "logs-taskq-default"
INDEX_PATTERN = "logs-taskq-*"
#: Above the built-in ``logs`` template (priority 100, pattern ``logs-*-*``), which would
#: otherwise win and apply its own mappings.
PRIORITY = 200
#: Longer keyword values are kept in ``_source`` but not indexed (one huge user agent
#: must not fail the whole document).
KEYWORD_IGNORE_ABOVE = 1024

#: Lines Elasticsearch refused, re-indexed from Logstash's dead letter queue
#: (elk/logstash/pipeline/taskq-dlq.conf): data stream ``logs-taskq.dlq-default``.
DLQ_TEMPLATE_NAME = "logs-taskq.dlq"
DLQ_TEMPLATE_PATH = REPO_ROOT / "elk" / "elasticsearch" / "dlq-index-template.json"
DLQ_DATA_STREAM = "logs-taskq.dlq-default"
DLQ_INDEX_PATTERN = "logs-taskq.dlq-*"
#: Log fields indexed in the DLQ stream (keyword/text/date only: what refused a line is a
#: value of another type, which stays in ``_source``), plus what the DLQ says.
DLQ_LOG_FIELDS = (
    "@timestamp",
    "event.action",
    "service.name",
    "service.node.name",
    "message",
    "correlation_id",
    "task_id",
)
DLQ_EXTRA_PROPERTIES: dict[str, dict[str, Any]] = {
    "dead_letter.reason": {"type": "text"},
    "dead_letter.plugin_id": {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE},
    # The bulk item's error type, cut out of the reason by taskq-dlq.conf: what the panel
    # and the rule group by (the reason itself is long text, not aggregatable).
    "dead_letter.error_type": {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE},
    "dead_letter.entry_time": {
        "type": "date_nanos",
        "format": "strict_date_optional_time_nanos||epoch_millis",
    },
    "tags": {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE},
}
ILM_POLICY_NAME = "taskq-logs"
#: Fields every document has that are not log-line fields: Logstash's tags on failures.
EXTRA_PROPERTIES: dict[str, dict[str, Any]] = {
    "tags": {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE},
}


def field_mapping(field_type: FieldType) -> dict[str, Any]:
    """The Elasticsearch mapping of one schema type."""
    if field_type == "keyword":
        return {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}
    if field_type == "date":
        # date_nanos: the services write microseconds; "date" would round them to
        # milliseconds and lines of one request written in the same millisecond would tie
        # (Elasticsearch docs, "Date nanoseconds field type").
        return {"type": "date_nanos", "format": "strict_date_optional_time_nanos||epoch_millis"}
    if field_type == "float":
        # Durations in ms: double keeps sub-millisecond precision of large values.
        return {"type": "double"}
    return {"type": field_type}


def properties() -> dict[str, dict[str, Any]]:
    """Mappings of every schema field plus :data:`EXTRA_PROPERTIES`, by dotted name."""
    mapped = {field.name: field_mapping(field.type) for field in FIELDS}
    clash = sorted(set(mapped) & set(EXTRA_PROPERTIES))
    if clash:
        raise ValueError(f"schema fields clash with extra properties: {', '.join(clash)}")
    mapped.update(EXTRA_PROPERTIES)
    return dict(sorted(mapped.items()))


def build_template() -> dict[str, Any]:
    """The composable index template, as sent to ``PUT _index_template/<TEMPLATE_NAME>``."""
    return _template(INDEX_PATTERN, properties(), "taskq JSON log lines (api, worker, beat, nginx)")


def dlq_properties() -> dict[str, dict[str, Any]]:
    """Mappings of the DLQ stream: :data:`DLQ_LOG_FIELDS` as in the log schema, plus
    :data:`DLQ_EXTRA_PROPERTIES`."""
    by_name = {field.name: field for field in FIELDS}
    mapped = {name: field_mapping(by_name[name].type) for name in DLQ_LOG_FIELDS}
    mapped.update(DLQ_EXTRA_PROPERTIES)
    return dict(sorted(mapped.items()))


def build_dlq_template() -> dict[str, Any]:
    """The index template of the DLQ stream (``PUT _index_template/<DLQ_TEMPLATE_NAME>``)."""
    return _template(
        DLQ_INDEX_PATTERN, dlq_properties(), "taskq lines Elasticsearch refused (Logstash DLQ)"
    )


def _template(pattern: str, props: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "index_patterns": [pattern],
        "data_stream": {},
        "priority": PRIORITY,
        "template": {
            "settings": {
                "index.lifecycle.name": ILM_POLICY_NAME,
                # Single node: a replica could never be allocated and the health stays yellow.
                "index.number_of_replicas": 0,
                "index.number_of_shards": 1,
                # Keep a line with one malformed field: the field is skipped and listed in
                # _ignored (Elasticsearch docs, "ignore_malformed", section "Index-level
                # default": https://www.elastic.co/guide/en/elasticsearch/reference/current/
                # ignore-malformed.html); the built-in logs@settings sets the same.
                "index.mapping.ignore_malformed": True,
            },
            "mappings": {
                "subobjects": False,
                "dynamic": False,
                "date_detection": False,
                "properties": props,
            },
        },
        "_meta": {
            "description": description,
            "generated_by": "python -m taskq.logs.es_template --write",
        },
    }


def render(template: dict[str, Any] | None = None) -> str:
    """A template as committed: stable key order, two-space indent, final newline."""
    return (
        json.dumps(build_template() if template is None else template, indent=2, sort_keys=True)
        + "\n"
    )


def rendered_files() -> dict[Path, str]:
    """Every committed template file and the text the schema generates for it."""
    return {TEMPLATE_PATH: render(), DLQ_TEMPLATE_PATH: render(build_dlq_template())}


def main(argv: list[str] | None = None) -> int:
    """CLI: ``--write`` the committed file, ``--check`` it, or print the template."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help=f"write {TEMPLATE_PATH}")
    group.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    files = rendered_files()
    if args.write:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return 0
    if args.check:
        stale = [p for p, t in files.items() if not p.exists() or p.read_text("utf-8") != t]
        for path in stale:
            print(f"{path} is stale: run python -m taskq.logs.es_template --write", file=sys.stderr)
        return 1 if stale else 0
    sys.stdout.write(files[TEMPLATE_PATH])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
