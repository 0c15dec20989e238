"""The setup job against a local HTTP server that answers like Elasticsearch's and Kibana's
documented APIs: waits for ``/api/status``, imports with ``overwrite=true``, ``kbn-xsrf`` and
a multipart ``file``, and fails on ``success: false``."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.contract.compose_model import REPO_ROOT
from tests.contract.test_elastic_template import load_setup_module

SECRETS = {
    "ELASTIC_PASSWORD": "es-secret-1",
    "LOGSTASH_WRITER_PASSWORD": "ls-secret-2",
    "KIBANA_SYSTEM_PASSWORD": "kb-secret-3",
    "KIBANA_ENCRYPTION_KEY": "k" * 32,
    "TASKQ_API_KEYS": "api-key-5",
    "TASKQ_VIEWER_PASSWORD": "viewer-secret-6",
}


@dataclass
class FakeElastic:
    """What the fake server answers, and what it was asked."""

    unavailable_status_calls: int = 0
    import_success: bool = True
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    imported: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    status_calls: int = 0
    elastic_status: int = 200
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)


def _multipart_file(content_type: str, body: bytes) -> tuple[str, bytes]:
    match = re.match(r"multipart/form-data; boundary=(\S+)$", content_type)
    assert match, content_type
    boundary = match.group(1).encode()
    (part,) = [p for p in body.split(b"--" + boundary) if b'name="file"' in p]
    head, _, content = part.partition(b"\r\n\r\n")
    filename = re.search(rb'filename="([^"]+)"', head)
    assert filename
    return filename.group(1).decode(), content.removesuffix(b"\r\n")


def make_handler(state: FakeElastic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            url = urlsplit(self.path)
            headers = {key.lower(): value for key, value in self.headers.items()}
            state.requests.append((self.command, url.path, headers, body))
            if url.path == "/api/status":
                state.status_calls += 1
                if state.status_calls <= state.unavailable_status_calls:
                    level = "unavailable"
                    self._answer(503, {"status": {"overall": {"level": level}}})
                else:
                    self._answer(200, {"status": {"overall": {"level": "available"}}})
            elif url.path == "/api/saved_objects/_import":
                self._import(url.query, body)
            elif url.path == "/_cluster/health":
                if state.elastic_status == 401:
                    self._answer(401, {"error": {"type": "security_exception"}, "status": 401})
                else:
                    self._answer(200, {"cluster_name": "taskq", "status": "yellow"})
            elif url.path.startswith("/api/alerting/rule/"):
                self._rule(url.path.rsplit("/", 1)[1], body)
            elif url.path.startswith(
                ("/_security/", "/_ilm/", "/_index_template/", "/api/security/role/")
            ):
                self._answer(200, {"acknowledged": True})
            else:
                self._answer(404, {"error": "not found"})

        def _rule(self, rule_id: str, body: bytes) -> None:
            """Kibana's rule API: POST creates (409 if the id exists), PUT updates (and
            refuses rule_type_id/consumer), GET reads."""
            if self.command == "GET":
                if rule_id in state.rules:
                    self._answer(200, {"id": rule_id, **state.rules[rule_id]})
                else:
                    self._answer(404, {"statusCode": 404})
            elif self.command == "POST":
                if rule_id in state.rules:
                    self._answer(409, {"statusCode": 409, "error": "Conflict"})
                else:
                    state.rules[rule_id] = json.loads(body)
                    self._answer(200, {"id": rule_id, **state.rules[rule_id]})
            else:
                update = json.loads(body)
                if rule_id not in state.rules or {"rule_type_id", "consumer"} & set(update):
                    self._answer(400, {"statusCode": 400})
                else:
                    state.rules[rule_id].update(update)
                    self._answer(200, {"id": rule_id, **state.rules[rule_id]})

        def _import(self, query: str, body: bytes) -> None:
            if "kbn-xsrf" not in {k.lower() for k in self.headers}:
                message = "Request must contain a kbn-xsrf header."
                self._answer(400, {"statusCode": 400, "error": "Bad Request", "message": message})
                return
            if parse_qs(query).get("overwrite") != ["true"]:
                self._answer(409, {"statusCode": 409, "message": "conflict: overwrite not set"})
                return
            filename, content = _multipart_file(self.headers["Content-Type"], body)
            objects = [json.loads(line) for line in content.decode().splitlines() if line]
            state.imported.append((filename, objects))
            if state.import_success:
                results = [{"type": o["type"], "id": o["id"]} for o in objects]
                self._answer(
                    200,
                    {"success": True, "successCount": len(objects), "successResults": results},
                )
            else:
                first = objects[0]
                error = {"type": "missing_references", "references": []}
                self._answer(
                    200,
                    {
                        "success": False,
                        "successCount": 0,
                        "errors": [{"id": first["id"], "type": first["type"], "error": error}],
                    },
                )

        do_GET = _handle
        do_POST = _handle
        do_PUT = _handle

    return Handler


@pytest.fixture
def fake() -> Iterator[tuple[FakeElastic, str]]:
    state = FakeElastic()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def setup() -> ModuleType:
    return load_setup_module()


def _env(url: str, **extra: str) -> dict[str, str]:
    return {
        **SECRETS,
        "TASKQ_ENVIRONMENT": "production",
        "ELASTICSEARCH_URL": url,
        "KIBANA_URL": url,
        "SETUP_ELK_DIR": str(REPO_ROOT / "elk"),
        "SETUP_DASHBOARDS_DIR": str(REPO_ROOT / "kibana-dashboards"),
        **extra,
    }


def test_waits_for_kibana_then_imports_every_file(
    setup: ModuleType, fake: tuple[FakeElastic, str]
) -> None:
    state, url = fake
    state.unavailable_status_calls = 2
    setup.run(_env(url), timeout_s=10.0, interval_s=0.01)
    assert state.status_calls == 3
    files = sorted(p.name for p in (REPO_ROOT / "kibana-dashboards").glob("*.ndjson"))
    assert [name for name, _ in state.imported] == files
    imports = [r for r in state.requests if r[1] == "/api/saved_objects/_import"]
    for method, _path, headers, _body in imports:
        assert method == "POST"
        assert headers["kbn-xsrf"] == "true"
    # Nothing is imported before Kibana said "available".
    first_import = next(i for i, r in enumerate(state.requests) if r[1].startswith("/api/saved"))
    last_status = max(i for i, r in enumerate(state.requests) if r[1] == "/api/status")
    assert last_status < first_import


def test_elasticsearch_gets_users_role_policy_and_template(
    setup: ModuleType, fake: tuple[FakeElastic, str]
) -> None:
    state, url = fake
    setup.run(_env(url), timeout_s=10.0, interval_s=0.01)
    calls = {(method, path): body for method, path, _headers, body in state.requests}
    password = json.loads(calls[("POST", "/_security/user/kibana_system/_password")])
    assert password == {"password": SECRETS["KIBANA_SYSTEM_PASSWORD"]}
    user = json.loads(calls[("PUT", "/_security/user/logstash_writer")])
    assert user["roles"] == ["taskq_logs_writer"]
    assert user["password"] == SECRETS["LOGSTASH_WRITER_PASSWORD"]
    role = json.loads(calls[("PUT", "/_security/role/taskq_logs_writer")])
    assert role["indices"][0]["names"] == ["logs-taskq-*", "logs-taskq.dlq-*"]
    assert "all" not in role["indices"][0]["privileges"]
    template = json.loads(calls[("PUT", "/_index_template/logs-taskq")])
    assert template["index_patterns"] == ["logs-taskq-*"]
    assert ("PUT", "/_ilm/policy/taskq-logs") in calls


def test_template_and_policy_exist_before_logstash_can_write(
    setup: ModuleType, fake: tuple[FakeElastic, str]
) -> None:
    # Logstash writes as soon as logstash_writer exists. A bulk write before our template
    # is in place creates logs-taskq-default from the built-in logs-*-* template, whose
    # object mapping of "queue" collides with our "queue.depth"; the data stream keeps that
    # mapping until it rolls over. So: ILM policy, then template, then the writer user.
    state, url = fake
    setup.run(_env(url), timeout_s=10.0, interval_s=0.01)
    order = [(method, path) for method, path, _headers, _body in state.requests]
    policy = order.index(("PUT", "/_ilm/policy/taskq-logs"))
    template = order.index(("PUT", "/_index_template/logs-taskq"))
    writer = order.index(("PUT", "/_security/user/logstash_writer"))
    assert policy < template < writer, order


def test_success_false_fails_the_job_with_kibanas_errors(
    setup: ModuleType, fake: tuple[FakeElastic, str]
) -> None:
    state, url = fake
    state.import_success = False
    with pytest.raises(setup.SetupError, match="missing_references"):
        setup.run(_env(url), timeout_s=10.0, interval_s=0.01)
    assert len(state.imported) == 1, "stops at the first failed file"


def test_kibana_never_available_times_out(setup: ModuleType, fake: tuple[FakeElastic, str]) -> None:
    state, url = fake
    state.unavailable_status_calls = 10**6
    with pytest.raises(setup.SetupError, match="Kibana not available"):
        setup.run(_env(url), timeout_s=0.3, interval_s=0.01)
    assert not state.imported


def test_placeholder_secrets_are_refused_outside_development(
    setup: ModuleType, fake: tuple[FakeElastic, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = fake
    env = _env(url, ELASTIC_PASSWORD="changeme-elastic-password")
    with pytest.raises(setup.SetupError, match="ELASTIC_PASSWORD"):
        setup.run(env, timeout_s=1.0, interval_s=0.01)
    assert state.requests == [], "nothing is sent with a placeholder secret"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert setup.main() == 2
    # Development accepts the placeholders of .env.
    setup.check_secrets({**env, "TASKQ_ENVIRONMENT": "development"})


def test_connection_refused_is_not_available(setup: ModuleType) -> None:
    client = setup.Http("http://127.0.0.1:9", "elastic", "x", timeout_s=0.5)
    assert setup.kibana_available(client) is False
    assert setup.elasticsearch_ready(client) is False


def test_a_read_only_viewer_role_and_user(setup: ModuleType, fake: tuple[FakeElastic, str]) -> None:
    """Kibana role API ("Create or update a role"): index privileges read-only on the taskq
    streams, Kibana features read-only; the user has that role alone."""
    state, url = fake
    setup.run(_env(url), timeout_s=10.0, interval_s=0.01)
    calls = {(method, path): body for method, path, _headers, body in state.requests}
    user = json.loads(calls[("PUT", "/_security/user/taskq_viewer")])
    assert user["roles"] == ["taskq_viewer"]
    assert user["password"] == SECRETS["TASKQ_VIEWER_PASSWORD"]
    role = json.loads(calls[("PUT", "/api/security/role/taskq_viewer")])
    (indices,) = role["elasticsearch"]["indices"]
    assert set(indices["privileges"]) <= {"read", "view_index_metadata"}
    assert role["elasticsearch"]["cluster"] == []
    (kibana,) = role["kibana"]
    assert kibana["base"] == []
    assert {grant for grants in kibana["feature"].values() for grant in grants} == {"read"}


def test_the_dlq_rule_is_created_then_updated_keeping_its_actions(
    setup: ModuleType, fake: tuple[FakeElastic, str]
) -> None:
    state, url = fake
    setup.run(_env(url), timeout_s=10.0, interval_s=0.01)
    (rule,) = state.rules.values()
    assert rule["rule_type_id"] == ".es-query"
    assert rule["params"]["index"] == ["logs-taskq.dlq-*"]
    assert (rule["params"]["thresholdComparator"], rule["params"]["threshold"]) == (">", [0])
    rule["actions"] = [{"id": "added-by-a-person", "group": "query matched", "params": {}}]
    setup.run(_env(url), timeout_s=10.0, interval_s=0.01)
    (rule,) = state.rules.values()
    assert rule["actions"][0]["id"] == "added-by-a-person"


def test_a_rotated_elastic_password_fails_at_once_with_the_way_out(
    setup: ModuleType, fake: tuple[FakeElastic, str]
) -> None:
    state, url = fake
    state.elastic_status = 401
    with pytest.raises(setup.SetupError, match="only bootstraps an empty data volume"):
        setup.run(_env(url), timeout_s=60.0, interval_s=0.01)
    assert len(state.requests) == 1
