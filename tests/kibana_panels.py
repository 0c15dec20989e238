"""The panels of the dashboards in kibana-dashboards/*.ndjson, as what they select and use.

For each panel of each dashboard: the queries that filter its lines (the dashboard's and the
panel object's own), the fields it aggregates, splits or sorts on, the named series of a
``filters`` aggregation, and the fields of its table rows. The index template gives each
field its type. tests/kql.py evaluates the queries.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskq.logs.schema import SHED_ERROR_CODES, Event

REPO_ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS_DIR = REPO_ROOT / "kibana-dashboards"
INDEX_TEMPLATE = REPO_ROOT / "elk" / "elasticsearch" / "index-template.json"
DLQ_TEMPLATE = REPO_ROOT / "elk" / "elasticsearch" / "dlq-index-template.json"
#: The data views (kibana-dashboards/00-data-view.ndjson) and the template of their streams.
LOGS_DATA_VIEW = "taskq-logs"
DLQ_DATA_VIEW = "taskq-dlq"
TEMPLATES = {LOGS_DATA_VIEW: INDEX_TEMPLATE, DLQ_DATA_VIEW: DLQ_TEMPLATE}

SavedObject = dict[str, Any]
Query = Mapping[str, Any]


@dataclass(frozen=True)
class Panel:
    """One panel of one dashboard."""

    dashboard_id: str
    object_id: str
    object_type: str
    title: str
    queries: tuple[Query, ...]
    #: (aggregation type or "sort", field): fields whose value each selected line must have.
    used_fields: tuple[tuple[str, str], ...]
    #: (label, query) of a ``filters`` aggregation: named series inside the panel.
    series: tuple[tuple[str, Query], ...] = ()
    #: Fields of a table's row buckets, in order.
    row_fields: tuple[str, ...] = ()
    columns: tuple[str, ...] = field(default=())
    #: Id of the data view the panel reads.
    data_view: str = LOGS_DATA_VIEW

    @property
    def name(self) -> str:
        return f"{self.dashboard_id}/{self.object_id}"


def load_objects(directory: Path = DASHBOARDS_DIR) -> list[SavedObject]:
    objects = []
    for path in sorted(directory.glob("*.ndjson")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                objects.append(json.loads(line))
    return objects


def field_types(path: Path = INDEX_TEMPLATE) -> dict[str, str]:
    """Field name -> mapping type, from the index template."""
    template = json.loads(path.read_text(encoding="utf-8"))
    properties = template["template"]["mappings"]["properties"]
    return {name: str(spec["type"]) for name, spec in properties.items()}


def _search_source(obj: SavedObject) -> dict[str, Any]:
    raw = obj["attributes"].get("kibanaSavedObjectMeta", {}).get("searchSourceJSON", "{}")
    source = json.loads(raw)
    if source.get("filter"):
        raise ValueError(f"{obj['id']}: filters in searchSourceJSON are not modelled")
    return dict(source)


def _query(obj: SavedObject) -> Query:
    query = _search_source(obj).get("query") or {"query": "", "language": "kuery"}
    return dict(query)


def _data_view(obj: SavedObject) -> str:
    (ref,) = [r for r in obj["references"] if r["type"] == "index-pattern"]
    return str(ref["id"])


def _visualization_panel(dashboard: SavedObject, obj: SavedObject) -> Panel:
    vis_state = json.loads(obj["attributes"]["visState"])
    used: list[tuple[str, str]] = []
    series: list[tuple[str, Query]] = []
    rows: list[str] = []
    for agg in vis_state.get("aggs", []):
        if not agg.get("enabled", True):
            continue
        params = agg.get("params", {})
        if params.get("field"):
            used.append((agg["type"], params["field"]))
        if agg["type"] == "top_hits" and params.get("sortField"):
            used.append(("sort", params["sortField"]))
        if agg["type"] == "filters":
            for item in params["filters"]:
                series.append((item.get("label") or item["input"]["query"], item["input"]))
        if agg["type"] == "terms" and agg.get("schema") == "bucket":
            rows.append(params["field"])
    return Panel(
        dashboard_id=dashboard["id"],
        object_id=obj["id"],
        object_type="visualization",
        title=obj["attributes"]["title"],
        queries=(_query(dashboard), _query(obj)),
        used_fields=tuple(used),
        series=tuple(series),
        row_fields=tuple(rows),
        data_view=_data_view(obj),
    )


def _search_panel(dashboard: SavedObject, obj: SavedObject) -> Panel:
    attributes = obj["attributes"]
    return Panel(
        dashboard_id=dashboard["id"],
        object_id=obj["id"],
        object_type="search",
        title=attributes["title"],
        queries=(_query(dashboard), _query(obj)),
        # Only the first sort key must be on every line: the later ones break ties, and
        # Elasticsearch sorts a line missing one of them after the others for that key
        # ("missing": "_last" by default, Sort search results docs); nginx lines have no
        # event.sequence, and their millisecond times seldom tie the services' microseconds.
        used_fields=tuple(("sort", name) for name, _direction in attributes.get("sort", [])[:1]),
        columns=tuple(attributes.get("columns", [])),
        data_view=_data_view(obj),
    )


def dashboard_panels(objects: list[SavedObject] | None = None) -> Iterator[Panel]:
    """Every panel of every dashboard, resolved through the dashboard's references."""
    objects = load_objects() if objects is None else objects
    by_key = {(obj["type"], obj["id"]): obj for obj in objects}
    for dashboard in (obj for obj in objects if obj["type"] == "dashboard"):
        references = {ref["name"]: ref for ref in dashboard["references"]}
        for panel in json.loads(dashboard["attributes"]["panelsJSON"]):
            ref = references[f"{panel['panelIndex']}:{panel['panelRefName']}"]
            obj = by_key[(ref["type"], ref["id"])]
            if ref["type"] == "visualization":
                yield _visualization_panel(dashboard, obj)
            elif ref["type"] == "search":
                yield _search_panel(dashboard, obj)
            else:
                raise ValueError(f"{dashboard['id']}: panel type {ref['type']} is not modelled")


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "keyword": (str,),
    "text": (str,),
    "date": (str,),
    "date_nanos": (str,),
    "long": (int,),
    "double": (int, float),
    "float": (int, float),
    "boolean": (bool,),
}


def has_type(value: Any, mapping_type: str) -> bool:
    """Whether a JSON value is indexed as ``mapping_type`` without coercion."""
    if value is None:
        return False
    if isinstance(value, bool) and mapping_type != "boolean":
        return False
    return isinstance(value, _PY_TYPES[mapping_type])


#: The rejection panel of the pipeline dashboard (kibana-dashboards/20-task-pipeline-health).
REJECTIONS_PANEL = "taskq-rejections"


def shed_panel_query() -> str:
    """The rejection panel's KQL, generated from ``taskq.logs.schema.SHED_ERROR_CODES``.

    One line per shed request: the ``http.request.completed`` line of whichever hop answered.
    nginx writes ``error.type`` only on the answers it gives itself (nginx.conf.template,
    ``taskq_json_error``) and the API's access line only on its own, so no request is
    counted twice; the API's extra ``http.request.rejected`` lines are left out for that
    reason. The breaker's transitions are shown beside them.
    """

    codes = " or ".join(SHED_ERROR_CODES)
    breaker = f"{Event.BREAKER_OPENED} or {Event.BREAKER_CLOSED}"
    return (
        f"(event.action:{Event.HTTP_COMPLETED} and error.type:({codes}))"
        f" or event.action:({breaker})"
    )


def shed_panel_series() -> list[tuple[str, str]]:
    """(label, KQL) of the rejection panel's ``filters`` series: one per shed code, in
    the schema's order, then the breaker's two transitions."""

    series = [
        (f"{status} {code}", f"error.type:{code}") for code, status in SHED_ERROR_CODES.items()
    ]
    series.append(("breaker opened", f"event.action:{Event.BREAKER_OPENED}"))
    series.append(("breaker closed", f"event.action:{Event.BREAKER_CLOSED}"))
    return series


def regenerate_shed_panel(obj: SavedObject) -> SavedObject:
    """``obj`` (the rejection panel's saved object) with its query and series regenerated."""
    attributes = dict(obj["attributes"])
    meta = dict(attributes["kibanaSavedObjectMeta"])
    source = json.loads(meta["searchSourceJSON"])
    source["query"] = {"query": shed_panel_query(), "language": "kuery"}
    meta["searchSourceJSON"] = json.dumps(source, separators=(",", ":"))
    attributes["kibanaSavedObjectMeta"] = meta
    vis = json.loads(attributes["visState"])
    for agg in vis["aggs"]:
        if agg["type"] == "filters":
            agg["params"]["filters"] = [
                {"input": {"query": kql, "language": "kuery"}, "label": label}
                for label, kql in shed_panel_series()
            ]
    attributes["visState"] = json.dumps(vis, separators=(",", ":"))
    return {**obj, "attributes": attributes}
