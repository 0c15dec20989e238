"""Static checks of elk/: every config says what it overrides; queues and shipping are safe."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.contract.compose_model import REPO_ROOT

ELK = REPO_ROOT / "elk"
CONFIG_FILES = sorted(
    [*ELK.glob("*/config/*.yml"), *ELK.glob("*/pipeline/*.conf")],
)


def test_each_config_file_names_the_upstream_defaults_it_overrides() -> None:
    assert len(CONFIG_FILES) >= 6
    for path in CONFIG_FILES:
        assert re.search(r"(?i)upstream", path.read_text()), f"{path} names no upstream default"


def _yaml(path: Path) -> dict[str, object]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def test_logstash_has_a_persistent_queue_and_a_dead_letter_queue() -> None:
    settings = _yaml(ELK / "logstash" / "config" / "logstash.yml")
    assert settings["queue.type"] == "persisted"
    assert settings["dead_letter_queue.enable"] is True


def test_logstash_inputs_are_beats_and_tcp_json_lines() -> None:
    text = (ELK / "logstash" / "pipeline" / "taskq.conf").read_text()
    inputs = text[text.index("input {") : text.index("filter {")]
    assert re.search(r"beats\s*\{[^}]*port\s*=>\s*5044", inputs)
    assert re.search(r"tcp\s*\{[^}]*port\s*=>\s*5000[^}]*codec\s*=>\s*json_lines", inputs)
    # The app lines are JSON decoded; nginx's stock format is mapped onto the same fields.
    assert 'source => "message"' in text
    assert "[http.response.status_code]" in text


def test_filebeat_ships_labelled_containers_to_logstash_beats_input() -> None:
    config = _yaml(ELK / "filebeat" / "config" / "filebeat.yml")
    (provider,) = config["filebeat.autodiscover"]["providers"]  # type: ignore[index]
    assert provider["type"] == "docker"
    (template,) = provider["templates"]
    # Conditions see labels with their dots (tests/contract/test_filebeat_selector.py).
    assert template["condition"]["equals"] == {"docker.container.labels.taskq.logs": "true"}
    assert template["config"][0]["type"] == "container"
    assert config["output.logstash"]["hosts"] == ["logstash:5044"]  # type: ignore[index]


def test_kibana_uses_kibana_system_from_the_environment() -> None:
    config = _yaml(ELK / "kibana" / "config" / "kibana.yml")
    assert config["elasticsearch.username"] == "${ELASTICSEARCH_USERNAME}"
    assert config["status.allowAnonymous"] is True


def test_nginx_accepts_exactly_the_ids_the_api_accepts() -> None:
    """nginx's map and taskq.correlation share one expression: a client id nginx keeps is
    one the API keeps too (else the two hops would disagree on the correlation id)."""
    import re

    from taskq.correlation import ID_PATTERN
    from taskq.stack.layout import NGINX_TEMPLATE

    (expression,) = re.findall(r'"~\^(.*)\$"\s+client;', NGINX_TEMPLATE.read_text())
    assert expression == ID_PATTERN
