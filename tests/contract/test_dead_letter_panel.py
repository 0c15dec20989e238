"""The dead-letter panel and rule, evaluated on the documents taskq-dlq.conf makes.

No Logstash runs here, so the documents are built the way upstream writes and reads them:
logstash-output-elasticsearch puts a refused bulk item in the DLQ with the reason
``"#{message} status: #{status}, action: #{action_params}, response: #{response}"``
(lib/logstash/plugin_mixins/elasticsearch/common.rb, ``handle_dlq_response``; ``response``
is the bulk item as a Ruby Hash, printed by JRuby 9.4 / Ruby 3.1 as ``{"k"=>"v"}``), the
``dead_letter_queue`` input exposes it as ``[@metadata][dead_letter_queue][reason]``
(Logstash docs, "Dead letter queues"), and the pipeline's grok pattern, taken from the
config and translated to a Python regex (grok's ``DATA`` is ``.*?``), cuts the error type.
The panel's KQL (tests/kql.py) then selects them and counts them by that type.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from taskq.logs.es_template import DLQ_INDEX_PATTERN, dlq_properties
from taskq.logs.schema import Event
from tests.contract.compose_model import REPO_ROOT
from tests.contract.test_elk_setup import load_setup_module
from tests.kibana_panels import DLQ_DATA_VIEW, dashboard_panels, has_type
from tests.kql import compile_query

PIPELINE = REPO_ROOT / "elk" / "logstash" / "pipeline" / "taskq-dlq.conf"
DLQ_TYPES = {name: str(spec["type"]) for name, spec in dlq_properties().items()}
PIPELINE_DASHBOARD = "taskq-task-pipeline-health"


def _ruby(value: Any) -> str:
    """``value.to_s`` of a Ruby 3.1 Hash/Array/String/Integer (what JRuby 9.4 prints)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_ruby(k)}=>{_ruby(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_ruby(v) for v in value) + "]"
    if value is None:
        return "nil"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def _reason(error_type: str, detail: str) -> str:
    """The DLQ reason of one refused line, in the upstream format."""
    index = ".ds-logs-taskq-default-2026.12.04-000001"
    response = {
        "create": {
            "_index": index,
            "_id": None,
            "status": 400,
            "error": {"type": error_type, "reason": detail},
        }
    }
    action = ["create", {"_id": None, "_index": "logs-taskq-default", "routing": None}, "event"]
    return (
        "Could not index event to Elasticsearch. "
        f"status: 400, action: {_ruby(action)}, response: {_ruby(response)}"
    )


def _grok_pattern() -> re.Pattern[str]:
    text = PIPELINE.read_text(encoding="utf-8")
    (pattern,) = re.findall(r"\"dead_letter\.reason\" => '([^']*)'", text)
    return re.compile(re.sub(r"%\{DATA:[^}]*\}", "(.*?)", pattern))


def _dead_lettered(line: dict[str, Any], reason: str) -> dict[str, Any]:
    """What taskq-dlq.conf indexes for one DLQ entry of ``line``."""
    doc = {
        **line,
        "dead_letter.reason": reason,
        "dead_letter.plugin_id": "elasticsearch_taskq",
        "dead_letter.entry_time": "2026-12-04T02:10:00.123Z",
        "tags": [line["event.action"]],
        "event.action": Event.LOG_DEAD_LETTERED,
    }
    found = _grok_pattern().search(reason)
    doc["dead_letter.error_type"] = found.group(1) if found else "unknown"
    return doc


def _documents() -> list[dict[str, Any]]:
    line = {
        "@timestamp": "2026-12-04T02:09:59.000001+00:00",
        "service.name": "worker",
        "service.node.name": "worker-high",
        "message": "task succeeded",
        "task_id": "t-1",
    }
    parse = "failed to parse field [duration_ms] of type [double] in document"
    return [
        _dead_lettered(
            {**line, "event.action": Event.TASK_SUCCEEDED},
            _reason("document_parsing_exception", parse),
        ),
        _dead_lettered(
            {**line, "event.action": Event.TASK_FAILED},
            _reason("document_parsing_exception", parse),
        ),
        _dead_lettered(
            {**line, "service.name": "api", "event.action": Event.HTTP_COMPLETED},
            _reason("illegal_argument_exception", "Limit of total fields [1000] exceeded"),
        ),
        _dead_lettered({**line, "event.action": Event.TASK_STARTED}, "no bulk response here"),
    ]


def test_the_grok_pattern_cuts_the_error_type_of_an_upstream_reason() -> None:
    reasons = [doc["dead_letter.error_type"] for doc in _documents()]
    assert reasons == [
        "document_parsing_exception",
        "document_parsing_exception",
        "illegal_argument_exception",
        "unknown",
    ]


def test_the_dead_letter_panel_counts_each_line_by_its_reason() -> None:
    (panel,) = [
        p
        for p in dashboard_panels()
        if p.data_view == DLQ_DATA_VIEW and p.object_type == "visualization"
    ]
    assert panel.dashboard_id == PIPELINE_DASHBOARD
    predicates = [compile_query(query, DLQ_TYPES) for query in panel.queries]
    documents = _documents()
    selected = [d for d in documents if all(p(d) for p in predicates)]
    assert selected == documents
    for _role, name in panel.used_fields:
        assert all(has_type(d.get(name), DLQ_TYPES[name]) for d in selected), name
    assert panel.row_fields[0] == "dead_letter.error_type"
    rows = Counter(tuple(str(d[name]) for name in panel.row_fields) for d in selected)
    assert rows == {
        ("document_parsing_exception", "worker"): 2,
        ("illegal_argument_exception", "api"): 1,
        ("unknown", "worker"): 1,
    }


def test_the_dead_letter_lines_search_shows_the_reason() -> None:
    (search,) = [
        p for p in dashboard_panels() if p.data_view == DLQ_DATA_VIEW and p.object_type == "search"
    ]
    assert "dead_letter.reason" in search.columns
    assert search.used_fields == (("sort", "dead_letter.entry_time"),)


def test_the_rule_fires_on_lines_refused_in_its_window() -> None:
    """Kibana ``.es-query`` rule (Kibana docs, "Elasticsearch query"): documents of the DLQ
    stream whose ``timeField`` is in the last ``timeWindowSize`` units, count > threshold.
    The time field is the refusal's: an old line refused now still fires it."""
    params = load_setup_module().dlq_rule()["params"]
    assert params["index"] == [DLQ_INDEX_PATTERN]
    assert params["timeField"] == "dead_letter.entry_time"
    assert DLQ_TYPES[params["timeField"]] == "date_nanos"
    assert (params["thresholdComparator"], params["threshold"]) == (">", [0])
