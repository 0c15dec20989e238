"""kibana-dashboards/*.ndjson: parse, resolve, and use only fields of the log schema."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskq.logs.es_template import dlq_properties
from taskq.logs.schema import ENDING_EVENTS, FIELDS_BY_NAME, SHED_ERROR_CODES
from tests.contract.compose_model import REPO_ROOT
from tests.kibana_panels import (
    DLQ_DATA_VIEW,
    REJECTIONS_PANEL,
    regenerate_shed_panel,
    shed_panel_query,
)

DASHBOARDS_DIR = REPO_ROOT / "kibana-dashboards"
NOT_AGGREGATABLE = frozenset({"text"})
REQUIRED = {
    ("index-pattern", "taskq-logs"),
    ("index-pattern", "taskq-dlq"),
    ("visualization", "taskq-dead-lettered"),
    ("search", "taskq-trace-explorer-search"),
    ("dashboard", "taskq-trace-explorer"),
    ("dashboard", "taskq-task-pipeline-health"),
    ("dashboard", "taskq-load-tests-and-drills"),
}
#: A KQL field name: before a colon, outside quotes (values here never contain colons).
_KQL_FIELD = re.compile(r"(?<![\w.@\"])([A-Za-z_@][\w.@]*)\s*:")

SavedObject = dict[str, Any]


def ndjson_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.ndjson"))


def load_objects() -> list[SavedObject]:
    objects = []
    for path in ndjson_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            assert line.strip(), f"{path.name}:{number} is empty"
            obj = json.loads(line)
            assert isinstance(obj, dict), f"{path.name}:{number}"
            obj["_file"] = path.name
            objects.append(obj)
    return objects


@pytest.fixture(scope="module")
def objects() -> list[SavedObject]:
    return load_objects()


def _search_source(obj: SavedObject) -> dict[str, Any]:
    raw = obj["attributes"].get("kibanaSavedObjectMeta", {}).get("searchSourceJSON", "{}")
    source = json.loads(raw)
    assert isinstance(source, dict)
    return source


def kql_fields(query: str) -> set[str]:
    """Field names a KQL query names (``a.b:(x or y) and c:1`` -> {a.b, c})."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', query)
    return set(_KQL_FIELD.findall(without_strings))


def aggregated_fields(obj: SavedObject) -> Iterator[tuple[str, str]]:
    """(aggregation type, field) of a legacy visualization's aggregations."""
    vis_state = json.loads(obj["attributes"]["visState"])
    for agg in vis_state.get("aggs", []):
        field = agg.get("params", {}).get("field")
        if field:
            yield agg["type"], field
        for item in agg.get("params", {}).get("filters", []) if agg["type"] == "filters" else []:
            for name in kql_fields(item["input"]["query"]):
                yield "filters", name


def test_files_parse_and_ids_are_unique_and_stable(objects: list[SavedObject]) -> None:
    assert ndjson_files(), "no saved objects"
    keys = [(obj["type"], obj["id"]) for obj in objects]
    assert len(keys) == len(set(keys)), "duplicate type/id"
    assert set(keys) >= REQUIRED
    for obj in objects:
        assert re.fullmatch(r"taskq-[a-z0-9-]+", obj["id"]), obj["id"]
        assert obj["attributes"]["title"]


def test_every_reference_resolves_inside_the_set(objects: list[SavedObject]) -> None:
    known = {(obj["type"], obj["id"]) for obj in objects}
    for obj in objects:
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in known, f"{obj['id']} -> {ref}"


def test_panels_and_index_refs_name_existing_references(objects: list[SavedObject]) -> None:
    for obj in objects:
        names = {ref["name"] for ref in obj["references"]}
        source = _search_source(obj)
        if "indexRefName" in source:
            assert source["indexRefName"] in names, obj["id"]
        if obj["type"] in ("visualization", "search"):
            assert "indexRefName" in source, f"{obj['id']} has no data view"
        if obj["type"] == "dashboard":
            panels = json.loads(obj["attributes"]["panelsJSON"])
            assert panels, obj["id"]
            for panel in panels:
                assert f"{panel['panelIndex']}:{panel['panelRefName']}" in names, obj["id"]


def _fields_of(obj: SavedObject) -> dict[str, str]:
    """Field -> type of the data view ``obj`` reads: the log schema for the log lines, the
    DLQ template's mappings for the dead-lettered ones."""
    views = [r["id"] for r in obj["references"] if r["type"] == "index-pattern"]
    if views == [DLQ_DATA_VIEW]:
        return {name: str(spec["type"]) for name, spec in dlq_properties().items()}
    return {name: spec.type for name, spec in FIELDS_BY_NAME.items()}


def test_fields_exist_in_the_log_schema_and_aggregations_use_aggregatable_ones(
    objects: list[SavedObject],
) -> None:
    for obj in objects:
        fields = _fields_of(obj)
        query = _search_source(obj).get("query", {}).get("query", "")
        for field in kql_fields(query):
            assert field in fields, f"{obj['id']}: query field {field}"
        if obj["type"] == "visualization":
            used = list(aggregated_fields(obj))
            assert used, obj["id"]
            for agg_type, field in used:
                spec = fields.get(field)
                assert spec is not None, f"{obj['id']}: {agg_type} on unknown field {field}"
                assert spec not in NOT_AGGREGATABLE, f"{obj['id']}: {agg_type} on text"
                if agg_type in ("percentiles", "max", "avg", "sum", "min"):
                    assert spec in ("long", "float"), f"{obj['id']}: {agg_type} on {field}"
        if obj["type"] == "search":
            for column in obj["attributes"]["columns"]:
                assert column in fields, f"{obj['id']}: column {column}"
            for field, _direction in obj["attributes"]["sort"]:
                assert fields[field] not in NOT_AGGREGATABLE


def test_trace_explorer_shows_what_on_call_needs(objects: list[SavedObject]) -> None:
    (search,) = [o for o in objects if o["id"] == "taskq-trace-explorer-search"]
    columns = set(search["attributes"]["columns"])
    assert {"service.name", "event.action", "task_id", "message", "task.state"} <= columns
    # Kibana's order equals taskq trace's (tests/contract/test_trace_order.py).
    assert search["attributes"]["sort"][0] == ["@timestamp", "asc"]
    (dashboard,) = [o for o in objects if o["id"] == "taskq-trace-explorer"]
    panel_refs = {(r["type"], r["id"]) for r in dashboard["references"]}
    assert ("search", "taskq-trace-explorer-search") in panel_refs


def test_kql_field_extraction() -> None:
    assert kql_fields('a.b:(x or y) and not c_d:1 or e:"f:g"') == {"a.b", "c_d", "e"}


def test_rejection_panel_is_generated_from_the_shed_codes(objects: list[SavedObject]) -> None:
    """The panel's KQL and series are what tests/kibana_panels.py generates from
    ``SHED_ERROR_CODES``: a code added to the schema and not to the panel fails here."""
    (panel,) = [o for o in objects if o["id"] == REJECTIONS_PANEL]
    stored = {k: v for k, v in panel.items() if k != "_file"}
    assert regenerate_shed_panel(stored) == stored, "regenerate with tests/kibana_panels.py"
    assert _search_source(panel)["query"]["query"] == shed_panel_query()


def test_every_answer_nginx_gives_itself_with_a_shed_status_is_a_shed_code() -> None:
    """nginx's named locations answer with a code and a status; those with 413/429/503 are
    in ``SHED_ERROR_CODES`` with that status (the API's codes are checked on real answers
    by tests/integration/test_dashboard_semantics.py)."""
    template = (REPO_ROOT / "nginx" / "nginx.conf.template").read_text(encoding="utf-8")
    answers = re.findall(
        r"set \$taskq_error_type (\w+);.*?return (\d{3}) '\{\"error\":\{\"code\":\"(\w+)\"",
        template,
        flags=re.S,
    )
    assert answers, "no named location found in nginx.conf.template"
    for variable, status, code in answers:
        assert variable == code, (variable, code)
        if int(status) in {413, 429, 503}:
            assert SHED_ERROR_CODES.get(code) == int(status), (code, status)


#: Tasks one trace may fan out to (a 500-task batch), each to be shown as its own row.
FAN_OUT = 500


@pytest.mark.parametrize("panel_id", ["taskq-tasks-final-status", "taskq-trace-tasks"])
def test_terminal_panels_select_every_terminal_event(
    objects: list[SavedObject], panel_id: str
) -> None:
    """'Tasks by final status' and the trace's 'tasks that ended' select ``ENDING_EVENTS``:
    a task settled by a revocation request or a rejection has its row like a success or
    failure, and a duplicate delivery of a succeeded task adds none."""
    (panel,) = [o for o in objects if o["id"] == panel_id]
    expected = "event.action:(" + " or ".join(ENDING_EVENTS) + ")"
    assert _search_source(panel)["query"]["query"] == expected


def test_trace_table_has_a_row_for_each_task_of_a_large_fan_out(
    objects: list[SavedObject],
) -> None:
    """A terms aggregation returns its ``size`` top buckets only (Elasticsearch docs,
    "Terms aggregation", section "Size"), so the task_id rows must allow the fan-out."""
    (panel,) = [o for o in objects if o["id"] == "taskq-trace-tasks"]
    aggs = json.loads(panel["attributes"]["visState"])["aggs"]
    (task_rows,) = [a for a in aggs if a["type"] == "terms" and a["params"]["field"] == "task_id"]
    assert task_rows["params"]["size"] >= FAN_OUT


@pytest.mark.parametrize(
    ("panel_id", "metric"),
    [("taskq-tasks-final-status", "cardinality"), ("taskq-trace-tasks", "count")],
)
def test_terminal_panels_group_by_the_status_not_the_event(
    objects: list[SavedObject], panel_id: str, metric: str
) -> None:
    """A revoked task has two ending lines (the API's ``task.revoke_requested`` and the
    worker's ``task.revoked`` when it discards the message): split by ``event.action`` it
    would be two REVOKED rows. Split by ``task.state`` (on every terminal line, stamped in
    taskq/logs/setup.py) and counted by unique ``task_id`` (Elasticsearch docs,
    "Cardinality aggregation"), it is one; the trace table's rows are one per task_id."""
    (panel,) = [o for o in objects if o["id"] == panel_id]
    aggs = json.loads(panel["attributes"]["visState"])["aggs"]
    (first, *buckets) = aggs
    assert first["type"] == metric
    if metric == "cardinality":
        assert first["params"]["field"] == "task_id"
        # Exact below the threshold, approximate above; 40,000 is the largest allowed
        # (Elasticsearch docs, "Cardinality aggregation", "Precision control").
        assert json.loads(first["params"]["json"]) == {"precision_threshold": 40_000}
    fields = [a["params"]["field"] for a in buckets if a["type"] == "terms"]
    assert fields[-1] == "task.state" and "event.action" not in fields, fields
