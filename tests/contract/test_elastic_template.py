"""The index template is generated from the log schema; Logstash, Kibana and setup agree on it."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import sys
from types import ModuleType

from taskq.logs import es_template as elastic_template
from taskq.logs.schema import FIELDS
from tests.contract.compose_model import REPO_ROOT

PIPELINE = REPO_ROOT / "elk" / "logstash" / "pipeline" / "taskq.conf"
DATA_VIEW = REPO_ROOT / "kibana-dashboards" / "00-data-view.ndjson"
ILM_POLICY = REPO_ROOT / "elk" / "elasticsearch" / "ilm-policy.json"
EXPECTED_TYPES = {
    "keyword": "keyword",
    "text": "text",
    # The services write microseconds; "date" keeps milliseconds ("Date nanoseconds field
    # type", Elasticsearch reference: date_nanos stores nanoseconds, sorts and ranges alike).
    "date": "date_nanos",
    "long": "long",
    "float": "double",
    "boolean": "boolean",
}


def load_setup_module() -> ModuleType:
    """elk/setup/elk_setup.py (a script mounted into the setup container, not a package)."""
    path = REPO_ROOT / "elk" / "setup" / "elk_setup.py"
    spec = importlib.util.spec_from_file_location("taskq_elk_setup", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve annotations through sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_committed_template_equals_the_generated_one() -> None:
    committed = elastic_template.TEMPLATE_PATH.read_text(encoding="utf-8")
    assert committed == elastic_template.render(), (
        "stale: run python -m taskq.logs.es_template --write"
    )
    assert elastic_template.main(["--check"]) == 0


def test_every_schema_field_is_mapped_with_its_type() -> None:
    mappings = elastic_template.build_template()["template"]["mappings"]
    properties = mappings["properties"]
    for field in FIELDS:
        assert properties[field.name]["type"] == EXPECTED_TYPES[field.type], field.name
    assert mappings["subobjects"] is False
    assert mappings["dynamic"] is False
    for name in ("correlation_id", "task_id", "task_name", "service.name", "event.action"):
        assert properties[name]["type"] == "keyword"
    assert properties["message"]["type"] == "text"
    assert properties["duration_ms"]["type"] == "double"


def _logstash_output_target() -> str:
    text = PIPELINE.read_text(encoding="utf-8")
    output = text[text.index("output {") :]
    values = dict(re.findall(r'^\s*(data_stream_\w+)\s*=>\s*"([^"]*)"', output, re.MULTILINE))
    assert re.search(r'^\s*data_stream\s*=>\s*"true"', output, re.MULTILINE)
    return "-".join(
        values[key] for key in ("data_stream_type", "data_stream_dataset", "data_stream_namespace")
    )


def test_logstash_target_matches_the_template_and_the_data_view() -> None:
    target = _logstash_output_target()
    assert target == elastic_template.DATA_STREAM
    (pattern,) = elastic_template.build_template()["index_patterns"]
    assert fnmatch.fnmatchcase(target, pattern)
    views = {view["id"]: view for view in map(json.loads, DATA_VIEW.read_text().splitlines())}
    assert set(views) == {"taskq-logs", "taskq-dlq"}
    assert all(view["type"] == "index-pattern" for view in views.values())
    assert views["taskq-logs"]["attributes"]["title"] == pattern
    assert views["taskq-logs"]["attributes"]["timeFieldName"] == "@timestamp"
    # The dead letters by when they were refused (their @timestamp is the line's own).
    (dlq_pattern,) = elastic_template.build_dlq_template()["index_patterns"]
    assert views["taskq-dlq"]["attributes"]["title"] == dlq_pattern
    assert views["taskq-dlq"]["attributes"]["timeFieldName"] == "dead_letter.entry_time"


def test_template_outranks_the_builtin_logs_template() -> None:
    template = elastic_template.build_template()
    assert template["priority"] > 100
    assert template["data_stream"] == {}


def test_setup_job_installs_the_same_names() -> None:
    setup = load_setup_module()
    assert setup.TEMPLATE_NAME == elastic_template.TEMPLATE_NAME
    assert setup.ILM_POLICY_NAME == elastic_template.ILM_POLICY_NAME
    assert setup.INDEX_PATTERN == elastic_template.INDEX_PATTERN
    settings = elastic_template.build_template()["template"]["settings"]
    assert settings["index.lifecycle.name"] == elastic_template.ILM_POLICY_NAME
    policy = json.loads(ILM_POLICY.read_text())["policy"]
    assert policy["phases"]["hot"]["actions"]["rollover"]
    assert "delete" in policy["phases"]["delete"]["actions"]


def test_one_elastic_major_everywhere() -> None:
    """The Python client's major (pyproject) is the pinned server's (.env ELASTIC_VERSION)."""
    from taskq.search.store.config import DEFAULT_ES_INDEX
    from tests.contract.compose_model import parse_env_file

    assert DEFAULT_ES_INDEX == elastic_template.INDEX_PATTERN
    version = {e.key: e.value for e in parse_env_file()}["ELASTIC_VERSION"]
    major = int(version.split(".")[0])
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    (pin,) = re.findall(r'"elasticsearch([^"]*)"', pyproject)
    assert f"<{major + 1}" in pin and f">={major}." in pin, pin


def test_the_generator_writes_the_template_that_setup_installs() -> None:
    # elk/setup reads elk/elasticsearch/index-template.json; the generator must write there.
    assert elastic_template.TEMPLATE_PATH == REPO_ROOT / "elk" / "elasticsearch" / (
        "index-template.json"
    )


def test_a_malformed_field_does_not_drop_the_line() -> None:
    """``index.mapping.ignore_malformed`` (Elasticsearch docs, "ignore_malformed", section
    "Index-level default"; the setting the built-in ``logs@settings`` component template
    sets): a field of the wrong type is skipped and listed in ``_ignored``, the document is
    indexed. Set here, or inherited by composing ``logs@settings``."""
    template = json.loads(elastic_template.TEMPLATE_PATH.read_text(encoding="utf-8"))
    settings = template["template"]["settings"]
    composed = "logs@settings" in template.get("composed_of", [])
    assert composed or settings.get("index.mapping.ignore_malformed") is True
