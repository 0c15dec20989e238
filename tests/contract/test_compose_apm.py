"""The `apm` profile: Elastic APM Server takes the services' OTLP spans (checked statically)."""

from __future__ import annotations

from typing import Any

import yaml

from taskq.tracing.export import PROTOCOL
from tests.contract.compose_model import REPO_ROOT, load_compose, parse_env_file

APP_SERVICES = ("api", "worker-high", "worker-general", "beat")
OTEL_VARIABLES = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_TRACES_SAMPLER",
)


def _services() -> dict[str, dict[str, Any]]:
    services = load_compose()["services"]
    assert isinstance(services, dict)
    return services


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_apm_server_is_behind_its_profile_on_the_pinned_version() -> None:
    apm = _services()["apm-server"]
    assert apm["profiles"] == ["apm"]
    version = {e.key: e.value for e in parse_env_file()}["ELASTIC_VERSION"]
    assert apm["image"] == f"docker.elastic.co/apm/apm-server:{version}"
    assert any(str(p).endswith(":8200") for p in apm["ports"])
    assert apm["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    mount = "./elk/apm-server/config/apm-server.yml:/usr/share/apm-server/apm-server.yml:ro"
    assert mount in apm["volumes"]


def test_apm_server_writes_as_its_own_user_never_the_superuser() -> None:
    config = yaml.safe_load((REPO_ROOT / "elk/apm-server/config/apm-server.yml").read_text())
    assert config["apm-server"]["host"].endswith(":8200")
    output = config["output.elasticsearch"]
    assert output["username"] == "apm_server_writer" != "elastic"
    assert output["password"] == "${APM_SERVER_PASSWORD}"
    setup = (REPO_ROOT / "elk/setup/elk_setup.py").read_text()
    assert 'APM_USER = "apm_server_writer"' in setup
    assert "APM_SERVER_PASSWORD" in _env(_services()["setup"])


def test_every_service_exports_by_the_standard_variables_to_the_apm_server() -> None:
    env_file = {e.key: e.value for e in parse_env_file()}
    assert env_file["OTEL_TRACES_EXPORTER"] == "none"  # off by default
    assert env_file["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://apm-server:8200"
    assert env_file["OTEL_EXPORTER_OTLP_PROTOCOL"] == PROTOCOL
    services = _services()
    for name in APP_SERVICES:
        env = _env(services[name])
        for variable in OTEL_VARIABLES:
            assert env.get(variable) == env_file[variable], (name, variable)
