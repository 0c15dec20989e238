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
ILM_POLICY_NAME = "taskq-logs"
#: Above the built-in ``logs`` template (priority 100, pattern ``logs-*-*``), which would
#: otherwise win and apply its own mappings.
PRIORITY = 200
#: Longer keyword values are kept in ``_source`` but not indexed (one huge user agent
#: must not fail the whole document).
KEYWORD_IGNORE_ABOVE = 1024

#: Fields every document has that are not log-line fields: Logstash's tags on failures.
EXTRA_PROPERTIES: dict[str, dict[str, Any]] = {
    "tags": {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE},
}


def field_mapping(field_type: FieldType) -> dict[str, Any]:
    """The Elasticsearch mapping of one schema type."""
    if field_type == "keyword":
        return {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}
    if field_type == "date":
        return {"type": "date", "format": "strict_date_optional_time||epoch_millis"}
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
    return {
        "index_patterns": [INDEX_PATTERN],
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
                "properties": properties(),
            },
        },
        "_meta": {
            "description": "taskq JSON log lines (api, worker, beat, nginx)",
            "generated_by": "python -m taskq.logs.es_template --write",
        },
    }


def render() -> str:
    """The template as committed: stable key order, two-space indent, final newline."""
    return json.dumps(build_template(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI: ``--write`` the committed file, ``--check`` it, or print the template."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help=f"write {TEMPLATE_PATH}")
    group.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        TEMPLATE_PATH.parent.mkdir(parents=True, exist_ok=True)
        TEMPLATE_PATH.write_text(text, encoding="utf-8")
        return 0
    if args.check:
        current = TEMPLATE_PATH.read_text(encoding="utf-8") if TEMPLATE_PATH.exists() else ""
        if current != text:
            print(
                f"{TEMPLATE_PATH} is stale: run python -m taskq.logs.es_template --write",
                file=sys.stderr,
            )
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
