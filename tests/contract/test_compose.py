"""docker-compose.yml: valid against the Compose specification, and everything it names exists."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from taskq.logs.schema import PROBE_USER_AGENT
from taskq.stack.layout import NGINX_TEMPLATE
from taskq.stack.render import WORKERS, render_template
from tests.contract.compose_model import (
    COMPOSE_FILE,
    REPO_ROOT,
    SCHEMA_FILE,
    load_compose,
    load_raw_compose,
    parse_env_file,
    referenced_variables,
)
from tests.missing_tool import tool_missing

APP_SERVICES = ("api", "worker-high", "worker-general", "beat")
ELASTIC_SERVICES = ("elasticsearch", "logstash", "kibana", "filebeat")
ONE_SHOT = ("setup", "redis-secret")
SECRETS = (
    "ELASTIC_PASSWORD",
    "LOGSTASH_WRITER_PASSWORD",
    "KIBANA_SYSTEM_PASSWORD",
    "KIBANA_ENCRYPTION_KEY",
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result = compose["services"]
    assert isinstance(result, dict)
    return result


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _strings(node: Any) -> list[str]:
    """Every string value of a YAML tree (comments are not interpolated by Compose)."""
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def test_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    # The file names draft 2019-09 by a URI jsonschema does not list: choose the draft here.
    jsonschema.Draft201909Validator.check_schema(schema)
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def _require_binary(name: str, install: str) -> str:
    """Path of ``name``; skip on a laptop without it, fail under CI=true."""
    candidates = (Path("/usr/sbin") / name, Path("/usr/bin") / name)
    found = shutil.which(name) or next((str(p) for p in candidates if p.exists()), None)
    if found is None:
        tool_missing(f"{name} is not installed: {install}")
    return found


@pytest.mark.parametrize("profile", [None, "loadtest", "monitoring", "ha", "apm"])
def test_docker_compose_config_accepts_the_file(profile: str | None) -> None:
    """Debian's docker-compose validates offline, no engine: schema, merges, depends_on."""
    binary = _require_binary("docker-compose", "apt-get install -y docker-compose")
    command = [binary, "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE_FILE)]
    if profile:
        command += ["--profile", profile]
    result = subprocess.run(
        [*command, "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_the_validator_rejects_a_broken_file(compose: dict[str, Any]) -> None:
    # Guards against a schema that accepts anything (and so would prove nothing).
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    broken = {**compose, "services": {"api": {"image": "x", "restart": ["always"]}}}
    assert list(jsonschema.Draft201909Validator(schema).iter_errors(broken))


def test_every_variable_is_defined_and_commented_in_env() -> None:
    entries = parse_env_file()
    defined = {entry.key for entry in entries}
    used = set().union(*(referenced_variables(text) for text in _strings(load_raw_compose())))
    assert used - defined == set(), f"not in .env: {sorted(used - defined)}"
    uncommented = [entry.key for entry in entries if not entry.comment]
    assert not uncommented, f"variables without a comment line above: {uncommented}"
    assert len(defined) == len(entries), "a variable is defined twice in .env"


def test_secrets_in_env_are_placeholders_the_setup_refuses() -> None:
    values = {entry.key: entry.value for entry in parse_env_file()}
    for name in SECRETS:
        assert values[name].startswith("changeme"), name
    assert values["TASKQ_ENVIRONMENT"] == "development"
    assert len(values["KIBANA_ENCRYPTION_KEY"]) >= 32


def test_build_contexts_and_mounted_files_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        build = service.get("build")
        if build is not None:
            context = REPO_ROOT / (build if isinstance(build, str) else build["context"])
            assert context.is_dir(), f"{name}: build context {context}"
            dockerfile = context / (build.get("dockerfile", "Dockerfile") if build else "")
            assert dockerfile.is_file(), f"{name}: {dockerfile}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if source.startswith("."):
                assert (REPO_ROOT / source).exists(), f"{name}: mounted {source} is missing"


def test_nginx_gets_every_placeholder_of_the_shared_template(
    services: dict[str, dict[str, Any]],
) -> None:
    placeholders = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", NGINX_TEMPLATE.read_text()))
    nginx = services["nginx"]
    env = _environment(nginx)
    assert placeholders, "the template has no placeholders?"
    assert placeholders - set(env) == set(), f"nginx lacks {sorted(placeholders - set(env))}"
    assert env["NGINX_ENVSUBST_OUTPUT_DIR"] == "/etc/nginx"
    assert env["NGINX_ACCESS_LOG"] == "/dev/stdout"
    assert env["NGINX_ERROR_LOG"] == "stderr"
    mounts = [v for v in nginx["volumes"] if v.startswith("./nginx/nginx.conf.template:")]
    assert mounts == ["./nginx/nginx.conf.template:/etc/nginx/templates/nginx.conf.template:ro"]


def test_compose_nginx_config_passes_nginx_t(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The template rendered with the compose values is a valid nginx config."""
    nginx = _require_binary("nginx", "apt-get install -y nginx")
    env = _environment(services["nginx"])
    # nginx -t resolves upstream names and opens the pid/temp paths: point them here.
    env["NGINX_UPSTREAM_SERVERS"] = env["NGINX_UPSTREAM_SERVERS"].replace("api:", "127.0.0.1:")
    env["NGINX_PID_FILE"] = str(tmp_path / "nginx.pid")
    env["NGINX_TEMP_DIR"] = str(tmp_path)
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_template(NGINX_TEMPLATE.read_text(), env))
    result = subprocess.run(
        [nginx, "-t", "-q", "-c", str(conf), "-p", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_workers_consume_the_same_queues_as_the_local_stack(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, queues in WORKERS.items():
        words = shlex.split(services[name]["command"][-1])
        assert words[words.index("-Q") + 1] == queues, name
        assert f"{name}@%h" in words
    assert "replicas" in services["worker-general"]["deploy"]


def test_app_services_log_json_to_stdout_and_share_one_image(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in (*APP_SERVICES, "setup"):
        service = services[name]
        assert service["image"] == "taskq:local", name
        assert service["build"]["context"] == ".", name
        assert "TASKQ_LOG_FILE" not in _environment(service), name
    for name in (*APP_SERVICES, "nginx"):
        assert services[name]["labels"]["taskq.logs"] == "true", name
    assert services["api"]["deploy"]["replicas"] == 3
    assert services["beat"]["deploy"]["replicas"] == 1


def test_long_running_services_are_healthchecked_limited_and_restarted(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        assert service["deploy"]["resources"]["limits"]["memory"], name
        if name in ONE_SHOT:
            assert service["restart"] == "no"
            continue
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name
        for dependency, condition in (service.get("depends_on") or {}).items():
            expected = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert condition["condition"] == expected, f"{name} -> {dependency}"


def test_images_are_pinned_and_elastic_uses_one_version(
    services: dict[str, dict[str, Any]],
) -> None:
    raw = load_raw_compose()["services"]
    for service in services.values():
        image = service["image"]
        if image == "taskq:local":
            continue
        tag = image.rsplit(":", 1)[-1]
        assert ":" in image and tag != "latest" and re.match(r"^v?\d+\.\d+\.\d+", tag), image
    for name in ELASTIC_SERVICES:
        assert raw[name]["image"].endswith(":${ELASTIC_VERSION}"), name
    version = {e.key: e.value for e in parse_env_file()}["ELASTIC_VERSION"]
    assert re.fullmatch(r"8\.\d+\.\d+", version)


def test_redis_is_durable_and_password_protected(services: dict[str, dict[str, Any]]) -> None:
    command = services["redis"]["command"]
    # The config file the redis-secret job writes holds requirepass: no password in .env.
    assert command[1] == "/run/taskq-secrets/redis-auth.conf"
    pairs = dict(zip(command[2::2], command[3::2], strict=True))
    assert pairs["--appendonly"] == "yes"
    assert pairs["--maxmemory-policy"] == "noeviction"
    assert "--requirepass" not in pairs
    assert "REDIS_PASSWORD" not in {entry.key for entry in parse_env_file()}
    for name in APP_SERVICES:
        env = _environment(services[name])
        assert env["TASKQ_REDIS_URL"] == "redis://redis:6379/0", name
        assert env["TASKQ_REDIS_PASSWORD_FILE"] == "/run/taskq-secrets/redis-password", name
        assert "redis-secret:/run/taskq-secrets:ro" in services[name]["volumes"], name
        assert services[name]["depends_on"]["redis-secret"] == {
            "condition": "service_completed_successfully"
        }, name


def _secret_script(services: dict[str, dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    service = services["redis-secret"]
    assert service["command"][:2] == ["sh", "-euc"]
    return service["command"], _environment(service)


def test_the_redis_secret_job_generates_the_password_once_and_keeps_it(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The job's own script, run by a real sh: a random password at the first start, the
    same one at every later start, files readable by their owner only."""
    import os
    import stat

    command, env = _secret_script(services)
    assert env["SECRETS_DIR"] == "/run/taskq-secrets"
    assert "redis-secret:/run/taskq-secrets" in services["redis-secret"]["volumes"]
    # Compose turns $$ into $; owners are this user here (the job runs as root in compose).
    script = command[2].replace("$$", "$")
    me = str(os.getuid())
    run_env = {**os.environ, "SECRETS_DIR": str(tmp_path), "REDIS_OWNER": me, "CLIENT_OWNER": me}
    passwords = []
    for directory in (tmp_path, tmp_path, tmp_path / "other"):
        directory.mkdir(exist_ok=True)
        run_env["SECRETS_DIR"] = str(directory)
        subprocess.run(["sh", "-euc", script], env=run_env, check=True, timeout=10)
        password = (directory / "redis-password").read_text()
        conf = (directory / "redis-auth.conf").read_text()
        assert conf == f"requirepass {password}\nmasterauth {password}\n"
        for name in ("redis-password", "redis-auth.conf"):
            assert stat.S_IMODE((directory / name).stat().st_mode) == 0o400
        passwords.append(password)
    assert re.fullmatch(r"[0-9a-f]{64}", passwords[0])
    assert passwords[0] == passwords[1]  # kept across starts
    assert passwords[2] != passwords[0]  # a new volume, a new password


def test_setup_and_logstash_never_use_the_elastic_superuser(
    services: dict[str, dict[str, Any]],
) -> None:
    kibana_env = _environment(services["kibana"])
    assert kibana_env["ELASTICSEARCH_USERNAME"] == "kibana_system"
    assert "ELASTIC_PASSWORD" not in _environment(services["logstash"])
    pipeline = (REPO_ROOT / "elk/logstash/pipeline/taskq.conf").read_text()
    assert 'user => "logstash_writer"' in pipeline


def test_published_ports_bind_to_the_configured_address(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_compose_keeps_drill_tasks_off(services: dict[str, dict[str, Any]]) -> None:
    values = {entry.key: entry.value for entry in parse_env_file()}
    assert values["TASKQ_ENABLE_DRILL_TASKS"] == "false"
    for name in APP_SERVICES:
        assert _environment(services[name])["TASKQ_ENABLE_DRILL_TASKS"] == "false", name


def test_replicas_workers_and_redis_publish_no_port(services: dict[str, dict[str, Any]]) -> None:
    # The API replicas serve /docs and /metrics, the workers /metrics: inside the compose
    # network only; the public entry is nginx.
    for name in (*APP_SERVICES, "redis", "redis-secret", "redis-ha-0", "sentinel-0"):
        assert not services[name].get("ports"), name
        assert not services[name].get("network_mode"), name


def test_locust_is_behind_a_profile(services: dict[str, dict[str, Any]]) -> None:
    for name in ("locust-master", "locust-worker"):
        assert services[name]["profiles"] == ["loadtest"]
    assert "--master" in services["locust-master"]["command"]
    assert Path(REPO_ROOT / "loadtest" / "locustfile.py").is_file()


def test_dockerfile_runs_as_non_root_and_installs_the_repo() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\S+", text, re.MULTILINE)
    assert "pip wheel --constraint constraints.txt --wheel-dir /wheels ." in text
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*") :][:1] == ["*"], ".dockerignore starts from nothing"
    for needed in (
        "!pyproject.toml",
        "!README.md",
        "!constraints.txt",
        "!taskq/",
        "!api/",
        "!worker/",
    ):
        assert needed in ignored


def test_the_setup_job_is_waited_for_by_the_writer_and_not_by_kibana(
    services: dict[str, dict[str, Any]],
) -> None:
    # Something must depend on the one-shot job, or compose starts Logstash (and the `apm`
    # profile's APM Server) before their writer users and the index template exist.
    waiting = {name for name, s in services.items() if "setup" in (s.get("depends_on") or {})}
    assert waiting == {"logstash", "apm-server"}
    # setup waits for Kibana (dashboard import); Kibana waiting for setup would deadlock.
    assert "setup" not in (services["kibana"].get("depends_on") or {})


def test_filebeat_keeps_the_image_arguments(services: dict[str, dict[str, Any]]) -> None:
    # The image's CMD is ["-environment", "container"]; `command` replaces it.
    command = services["filebeat"]["command"]
    assert command[:2] == ["-environment", "container"]
    # docker-entrypoint runs `filebeat "$@"` when its first argument starts with "-".
    assert command[0].startswith("-")


def test_memlock_ulimit_comes_with_bootstrap_memory_lock(
    services: dict[str, dict[str, Any]],
) -> None:
    limits = services["elasticsearch"]["ulimits"]["memlock"]
    config = yaml.safe_load((REPO_ROOT / "elk/elasticsearch/config/elasticsearch.yml").read_text())
    assert (limits == {"soft": -1, "hard": -1}) == (config.get("bootstrap.memory_lock") is True)


def test_prometheus_is_behind_a_profile_and_scrapes_every_replica(
    services: dict[str, dict[str, Any]],
) -> None:
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    assert "./monitoring/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config = yaml.safe_load((REPO_ROOT / "monitoring/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api_sd = jobs["taskq-api"]["dns_sd_configs"][0]
    assert api_sd["names"] == ["api"] and api_sd["port"] == 8000
    assert "--port 8000" in " ".join(services["api"]["command"])
    worker_sd = jobs["taskq-workers"]["dns_sd_configs"][0]
    assert set(worker_sd["names"]) == set(WORKERS)
    for name in WORKERS:
        env = _environment(services[name])
        assert env["TASKQ_WORKER_METRICS_PORT"] == str(worker_sd["port"]), name
        assert env["TASKQ_BIND_HOST"] == "0.0.0.0", name


def test_the_nginx_healthcheck_is_marked_as_our_own_probe(
    services: dict[str, dict[str, Any]],
) -> None:
    """Its answers are not counted as clients' by ``taskq stats`` (taskq.logs.schema)."""
    command = services["nginx"]["healthcheck"]["test"]
    assert command[command.index("-U") + 1] == PROBE_USER_AGENT
