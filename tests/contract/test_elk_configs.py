"""Static checks of elk/: every config says what it overrides; queues and shipping are safe."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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


def _section(text: str, name: str, until: str) -> str:
    return text[text.index(f"{name} {{") : text.index(f"{until} {{")]


def test_logstash_takes_lines_from_filebeat_only() -> None:
    """No unauthenticated input: the TCP json_lines input took lines from any local
    process; the beats input is the only one, at least once (persistent queue, acks)."""
    text = (ELK / "logstash" / "pipeline" / "taskq.conf").read_text()
    inputs = _section(text, "input", "filter")
    assert re.search(r"beats\s*\{[^}]*port\s*=>\s*5044", inputs)
    plugins = re.findall(r"^  (\w+) \{", inputs, flags=re.M)
    assert plugins == ["beats"]
    # The app lines are JSON decoded; nginx's stock format is mapped onto the same fields.
    assert 'source => "message"' in text
    assert "[http.response.status_code]" in text


def _filestream() -> dict[str, Any]:
    config = _yaml(ELK / "filebeat" / "config" / "filebeat.yml")
    (provider,) = config["filebeat.autodiscover"]["providers"]  # type: ignore[index]
    (template,) = provider["templates"]
    (stream,) = template["config"]
    assert isinstance(stream, dict)
    return stream


def test_filebeat_ships_labelled_containers_to_logstash_beats_input() -> None:
    config = _yaml(ELK / "filebeat" / "config" / "filebeat.yml")
    (provider,) = config["filebeat.autodiscover"]["providers"]  # type: ignore[index]
    assert provider["type"] == "docker"
    (template,) = provider["templates"]
    # Conditions see labels with their dots (tests/contract/test_filebeat_selector.py).
    assert template["condition"]["equals"] == {"docker.container.labels.taskq.logs": "true"}
    assert config["output.logstash"]["hosts"] == ["logstash:5044"]  # type: ignore[index]


def test_filebeat_reads_containers_with_filestream_and_the_container_parser() -> None:
    """Filebeat reference, "Container input": "The container input is just a preset for the
    log input. The log input is deprecated in version 7.16 and disabled in version 9.0.
    Please use the filestream input with its container parser instead"; its example sets
    ``id``, ``parsers: [container: {stream, format}]`` and ``paths``.
    filebeat/input/filestream/config.go (8.19 and 9.x): ``Validate`` refuses an empty
    ``paths`` and ``take_over`` without an ``id``; ``ValidateInputIDs`` refuses duplicated
    ids, so the id must differ per container. libbeat/reader/readjson/docker_json_config.go:
    ``stream`` is one of all/stdout/stderr, ``format`` one of auto/cri/docker/json-file.
    TakeOverConfig.Unpack (filestream/internal/input-logfile) takes a bool or
    ``{enabled: bool, from_ids: [...]}``."""
    stream = _filestream()
    assert stream["type"] == "filestream"
    assert "${data.docker.container.id}" in stream["id"]
    (path,) = stream["paths"]
    assert path == "/var/lib/docker/containers/${data.docker.container.id}/*-json.log"
    (parser,) = stream["parsers"]
    assert parser == {"container": {"stream": "all", "format": "docker"}}
    # Registry migration from the container input: its offsets are taken over.
    assert stream["take_over"] is True
    assert not {"allow_deprecated_use", "allow_deprecated_id_duplication"} & set(stream)


def test_the_filebeat_registry_migration_is_documented() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "take_over" in readme
    assert "filestream" in readme


def test_kibana_uses_kibana_system_and_status_needs_a_login() -> None:
    config = _yaml(ELK / "kibana" / "config" / "kibana.yml")
    assert config["elasticsearch.username"] == "${ELASTICSEARCH_USERNAME}"
    # Kibana settings reference: status.allowAnonymous "enables unauthenticated users to
    # access the Kibana server status API and status page"; off.
    assert config["status.allowAnonymous"] is False


def test_the_dead_letter_queue_is_read_back_into_its_own_stream() -> None:
    """Logstash docs, "Dead letter queues": the dead_letter_queue input reads
    path.data/dead_letter_queue/<pipeline_id>; the entry's reason is
    [@metadata][dead_letter_queue][reason]."""
    pipelines = yaml.safe_load((ELK / "logstash" / "config" / "pipelines.yml").read_text())
    by_id = {p["pipeline.id"]: p for p in pipelines}
    assert set(by_id) == {"taskq", "taskq-dlq"}
    assert by_id["taskq-dlq"]["dead_letter_queue.enable"] is False
    text = (ELK / "logstash" / "pipeline" / "taskq-dlq.conf").read_text()
    inputs = _section(text, "input", "filter")
    assert re.search(r'pipeline_id\s*=>\s*"taskq"', inputs)
    assert re.search(r'path\s*=>\s*"/usr/share/logstash/data/dead_letter_queue"', inputs)
    assert '"[@metadata][dead_letter_queue][reason]" => "dead_letter.reason"' in text
    assert 'data_stream_dataset => "taskq.dlq"' in text
    from taskq.logs.es_template import DLQ_DATA_STREAM, dlq_properties
    from taskq.logs.schema import Event

    assert DLQ_DATA_STREAM == "logs-taskq.dlq-default"
    assert f'"event.action" => "{Event.LOG_DEAD_LETTERED}"' in text
    assert {"dead_letter.reason", "@timestamp", "service.name"} <= set(dlq_properties())


def test_unstructured_lines_carry_the_service_name_of_the_json_lines() -> None:
    """For every compose service Filebeat reads, the name Logstash gives its plain-text
    lines (the compose service, worker-* -> worker) is the TASKQ_SERVICE_NAME its JSON
    lines carry."""
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    text = (ELK / "logstash" / "pipeline" / "taskq.conf").read_text()
    (pattern, replacement) = re.findall(
        r'gsub => \["\[@metadata\]\[service_name\]", "([^"]+)", "([^"]+)"\]', text
    )[0]
    checked = 0
    for name, service in compose["services"].items():
        command = service.get("command")
        flat = " ".join(command) if isinstance(command, list) else str(command or "")
        match = re.search(r"TASKQ_SERVICE_NAME=(\w+)", flat)
        if not match:
            continue
        assert re.sub(pattern, replacement, name) == match.group(1), name
        checked += 1
    assert checked >= 4


def test_nginx_accepts_exactly_the_ids_the_api_accepts() -> None:
    """nginx's map and taskq.correlation share one expression: a client id nginx keeps is
    one the API keeps too (else the two hops would disagree on the correlation id)."""
    import re

    from taskq.correlation import ID_PATTERN
    from taskq.stack.layout import NGINX_TEMPLATE

    block = NGINX_TEMPLATE.read_text().split("map $http_x_request_id", 1)[1].split("\n    }", 1)[0]
    (expression,) = re.findall(r'"~\^(.*)\$"\s+client;', block)
    assert expression == ID_PATTERN
