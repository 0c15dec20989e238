"""Filebeat's autodiscover template selects exactly the containers that write taskq lines.

The condition in elk/filebeat/config/filebeat.yml is evaluated on the event the docker
provider builds for each compose service's container (tests/contract/filebeat_model.py,
transcribed from elastic/beats), not on a copy of our own config's assumptions.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.contract.compose_model import REPO_ROOT, load_compose
from tests.contract.filebeat_model import (
    COMPOSE_LABELS,
    autodiscover_event,
    check,
    get_value,
    safemapstr_put,
)

FILEBEAT_YML = REPO_ROOT / "elk" / "filebeat" / "config" / "filebeat.yml"
#: The services whose stdout is taskq JSON lines (README: "Full stack").
LOGGING_SERVICES = {"api", "worker-high", "worker-general", "beat", "nginx"}


def _labels(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("labels") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(k): str(v) for k, v in raw.items()}


def container_events() -> dict[str, dict[str, Any]]:
    """One autodiscover event per compose service (every profile), as Docker would label it."""
    events = {}
    for number, (name, service) in enumerate(sorted(load_compose()["services"].items())):
        labels = {key: "x" for key in COMPOSE_LABELS}
        labels["com.docker.compose.project"] = "taskq"
        labels["com.docker.compose.service"] = name
        labels.update(_labels(service))
        image = str(service.get("image", "taskq:local"))
        events[name] = autodiscover_event(f"c{number:063d}", f"taskq-{name}-1", image, labels)
    return events


def _template_conditions() -> list[dict[str, Any]]:
    config = yaml.safe_load(FILEBEAT_YML.read_text())
    (provider,) = config["filebeat.autodiscover"]["providers"]
    assert provider["type"] == "docker"
    return [template["condition"] for template in provider["templates"]]


def test_the_template_selects_exactly_the_services_that_write_taskq_lines() -> None:
    events = container_events()
    assert set(events) >= LOGGING_SERVICES
    (condition,) = _template_conditions()
    selected = {name for name, event in events.items() if check(condition, event)}
    assert selected == LOGGING_SERVICES


def test_a_dedotted_label_in_a_condition_selects_nothing() -> None:
    # The bug this guards against: labels.dedot applies to event metadata only.
    events = container_events()
    for key in ("docker.container.labels.taskq_logs", "container.labels.taskq_logs"):
        condition = {"equals": {key: "true"}}
        assert not any(check(condition, event) for event in events.values()), key
    # ... while the dedotted copy does exist, in the metadata added to shipped events.
    api = events["api"]
    assert get_value(api, "meta.docker.container.labels.taskq_logs") == "true"
    assert check({"equals": {"container.labels.taskq.logs": "true"}}, api)


def test_an_unquoted_boolean_never_matches_a_label() -> None:
    # YAML `true` is a bool; labels are strings; equals compares like with like.
    api = container_events()["api"]
    assert not check({"equals": {"docker.container.labels.taskq.logs": True}}, api)


def test_safemapstr_keeps_both_a_label_and_its_longer_sibling() -> None:
    # The example in safemapstr.Put's doc comment, verbatim.
    data: dict[str, Any] = {}
    safemapstr_put(data, "com.docker.swarm.task", "x")
    safemapstr_put(data, "com.docker.swarm.task.id", 1)
    safemapstr_put(data, "com.docker.swarm.task.name", "foobar")
    task = {"id": 1, "name": "foobar", "value": "x"}
    assert data == {"com": {"docker": {"swarm": {"task": task}}}}
    # Compose's own labels hit this case: project and project.config_files.
    api = container_events()["api"]
    assert get_value(api, "docker.container.labels.com.docker.compose.project.value") == "taskq"
    assert get_value(api, "docker.container.labels.com.docker.compose.service") == "api"


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"or": [{"equals": {"a.b": "1"}}, {"equals": {"a.c": "2"}}]}, True),
        ({"and": [{"equals": {"a.b": "1"}}, {"equals": {"a.c": "2"}}]}, False),
        ({"not": {"equals": {"a.b": "1"}}}, False),
        ({"equals": {"a.b.c": "1"}}, False),
        ({"equals": {"a": "1"}}, False),
    ],
)
def test_condition_combinators(condition: dict[str, Any], expected: bool) -> None:
    assert check(condition, {"a": {"b": "1"}}) is expected
